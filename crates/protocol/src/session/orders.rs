//! Lost devices in a session: wipe orders travel from relay to relay and
//! from a relay to their device; a device records each contact with a relay
//! (its offline lease runs from the last one).
//!
//! A relay sends, right after the hellos, every wipe order it holds to a
//! peer relay, and to a device only that device's order (peers of protocol
//! version [`WIPE_ORDERS_SINCE`] and later). A device whose certificate the
//! relay refuses (revoked or expired) but whose order the relay holds gets
//! the order, then the refusal, and nothing else. Whatever receives an
//! order checks it first; one that fails a check is ignored, with the
//! reason in the audit log, and changes nothing else.

use fieldsync_identity::{DeviceCertificate, DeviceId, Role, Timestamp, WipeOrder, WipeOrderError};
use fieldsync_store::{Store, WipeAcceptance};

use super::{Event, Hello, Session};
use crate::error::SessionError;
use crate::wire::{CloseCode, Message, NodeRole, WIPE_ORDERS_SINCE};

/// Why a device closes its session once it has accepted a wipe order.
const WIPED: &str = "headquarters ordered this device wiped";

/// Wipe orders a peer may send that are ignored (each is an audit entry,
/// one durable write) before its session is closed: headquarters signs
/// few orders, so a peer sending many that fail their checks is broken or
/// hostile.
pub const MAX_IGNORED_ORDERS: usize = 8;

impl Session {
    /// The relay refuses the peer's certificate (`refused`). If the peer is
    /// a device whose certificate headquarters did sign, that speaks wipe
    /// orders, and whose order this relay holds, it gets its order before
    /// the refusal. Returns the refusal.
    pub(super) fn refuse_with_wipe_order(
        &mut self,
        store: &Store,
        h: &Hello,
        refused: SessionError,
        now: Timestamp,
    ) -> SessionError {
        if self.cfg.role != NodeRole::Relay
            || h.role != NodeRole::Device
            || h.version < WIPE_ORDERS_SINCE
        {
            return refused;
        }
        // Signed by headquarters for the key this connection proved; only
        // its standing (revoked, expired) is wrong.
        let Ok(cert) = DeviceCertificate::from_bytes(&h.certificate, self.cfg.authority.hq())
        else {
            return refused;
        };
        if cert.device() != self.expected_peer || cert.role() == Role::Relay {
            return refused;
        }
        match self.order_for(store, &cert.device(), now) {
            Ok(Some(order)) => {
                if let Err(e) = self.deliver(store, order, true, now) {
                    tracing::warn!(device = %cert.device().short(), error = %e, "delivering a wipe order");
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(device = %cert.device().short(), error = %e, "reading wipe orders");
            }
        }
        refused
    }

    /// The order this relay holds for `device`, if it is valid now.
    fn order_for(
        &self,
        store: &Store,
        device: &DeviceId,
        now: Timestamp,
    ) -> Result<Option<WipeOrder>, SessionError> {
        let Some(bytes) = store.held_wipe_order(device)? else {
            return Ok(None);
        };
        Ok(self.usable(&bytes, now).filter(|o| o.device() == *device))
    }

    /// A held order, verified again, unless it has expired.
    fn usable(&self, bytes: &[u8], now: Timestamp) -> Option<WipeOrder> {
        match WipeOrder::from_bytes(bytes, self.cfg.authority.hq()) {
            Ok(order) if order.check_time(now).is_ok() => Some(order),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(error = %e, "a held wipe order does not verify; not sent");
                None
            }
        }
    }

    /// Sends a device its order, records the delivery, and says so.
    fn deliver(
        &mut self,
        store: &Store,
        order: WipeOrder,
        refused: bool,
        now: Timestamp,
    ) -> Result<(), SessionError> {
        if !self.orders_sent.insert(order.nonce()) {
            return Ok(());
        }
        tracing::info!(device = %order.device().short(), nonce = %order.nonce_hex(), refused, "delivering a wipe order");
        self.send(&Message::WipeOrder(order.to_bytes()));
        store.record_wipe_delivery(&order, now)?;
        self.events.push_back(Event::WipeOrderDelivered {
            device: order.device(),
            refused,
        });
        Ok(())
    }

    /// Relays: sends the peer the orders it should get that this session
    /// has not sent: to a relay every order held, to a device its own.
    pub(super) fn send_wipe_orders(
        &mut self,
        store: &Store,
        now: Timestamp,
    ) -> Result<(), SessionError> {
        let Some(peer) = &self.peer else {
            return Ok(());
        };
        if self.cfg.role != NodeRole::Relay || peer.version < WIPE_ORDERS_SINCE {
            return Ok(());
        }
        let device = peer.cert.device();
        if peer.cert.role() != Role::Relay {
            if let Some(order) = self.order_for(store, &device, now)? {
                self.deliver(store, order, false, now)?;
            }
            return Ok(());
        }
        for (_, bytes) in store.held_wipe_orders()? {
            if let Some(order) = self.usable(&bytes, now)
                && self.orders_sent.insert(order.nonce())
            {
                self.send(&Message::WipeOrder(bytes));
            }
        }
        Ok(())
    }

    /// Devices: the first batch, acknowledgement, caught-up or repair from
    /// a relay means it accepted this device: record the contact (the
    /// offline lease runs from it). A relay that refuses a device sends it
    /// nothing of the kind, so a revoked device renews nothing.
    pub(super) fn note_contact(
        &mut self,
        store: &Store,
        now: Timestamp,
    ) -> Result<(), SessionError> {
        if self.contact_recorded || self.cfg.role != NodeRole::Device {
            return Ok(());
        }
        self.contact_recorded = true;
        store.record_relay_contact(now)?;
        Ok(())
    }

    /// A wipe order arrived. Only relays carry orders.
    pub(super) fn on_wipe_order(
        &mut self,
        store: &Store,
        bytes: &[u8],
        now: Timestamp,
    ) -> Result<(), SessionError> {
        let Some(peer) = self.peer.clone() else {
            return Err(SessionError::Protocol("wipe order before hello".into()));
        };
        if peer.cert.role() != Role::Relay {
            return Err(SessionError::Protocol(
                "only relays carry wipe orders".into(),
            ));
        }
        let from = peer.cert.device();
        match self.cfg.role {
            NodeRole::Relay => self.hold(store, bytes, from, now),
            NodeRole::Device => self.obey(store, bytes, from, now),
        }
    }

    /// Relays: an order from a peer relay, held to carry on if it checks out.
    fn hold(
        &mut self,
        store: &Store,
        bytes: &[u8],
        from: DeviceId,
        now: Timestamp,
    ) -> Result<(), SessionError> {
        let checked = WipeOrder::from_bytes(bytes, self.cfg.authority.hq())
            .and_then(|o| o.check_time(now).map(|()| o));
        let order = match checked {
            Ok(order) => order,
            Err(e) => return self.ignore(store, &e, from, now),
        };
        // Never sent back to the relay it came from.
        self.orders_sent.insert(order.nonce());
        if store.hold_wipe_order(&order, &from, now)? {
            self.events.push_back(Event::WipeOrderHeld {
                device: order.device(),
            });
        }
        Ok(())
    }

    /// Devices: an order from the relay, obeyed if it checks out.
    fn obey(
        &mut self,
        store: &Store,
        bytes: &[u8],
        from: DeviceId,
        now: Timestamp,
    ) -> Result<(), SessionError> {
        let checked = WipeOrder::from_bytes(bytes, self.cfg.authority.hq())
            .and_then(|o| o.check_for(&self.cfg.certificate, now).map(|()| o));
        let order = match checked {
            Ok(order) => order,
            Err(e) => return self.ignore(store, &e, from, now),
        };
        match store.accept_wipe_order(&order, now)? {
            WipeAcceptance::Accepted | WipeAcceptance::StillPending => {
                tracing::warn!(nonce = %order.nonce_hex(), reason = %order.reason(), "headquarters ordered this device wiped");
                self.events.push_back(Event::WipeOrdered { order });
                self.close(CloseCode::Done, WIPED);
                Ok(())
            }
            WipeAcceptance::Replayed => {
                let e = WipeOrderError::Replayed {
                    nonce: order.nonce_hex(),
                };
                self.ignore(store, &e, from, now)
            }
        }
    }

    /// Records an ignored order in the audit log; the session goes on,
    /// unless the peer sent too many such orders.
    fn ignore(
        &mut self,
        store: &Store,
        e: &WipeOrderError,
        from: DeviceId,
        now: Timestamp,
    ) -> Result<(), SessionError> {
        self.orders_ignored += 1;
        if self.orders_ignored > MAX_IGNORED_ORDERS {
            return Err(SessionError::Limit(format!(
                "more than {MAX_IGNORED_ORDERS} wipe orders failed their checks in one session"
            )));
        }
        tracing::warn!(relay = %from.short(), error = %e, "wipe order ignored");
        store
            .record_ignored_wipe_order(&format!("{e} (carried by relay {})", from.short()), now)?;
        Ok(())
    }
}
