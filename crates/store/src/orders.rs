//! Wipe orders in the store: those a relay holds to carry (to their device,
//! and to other relays), when it delivered them, and, on a device, the
//! nonces it has handled and the order it accepted and must obey.
//!
//! Everything lives in `meta-1`, under prefixed keys (sealed like every value):
//!
//! | key | value |
//! |---|---|
//! | `wipe-order/<device hex>` | the signed order bytes a relay holds for that device (the latest issued) |
//! | `wipe-delivered/<device hex>` | postcard [`WipeDelivery`]: when this relay gave that device its order |
//! | `wipe-spent/<nonce hex>` | i64 LE: when this device handled the order with that nonce |
//! | `wipe-pending` | postcard [`PendingWipe`]: the order this device accepted and must obey |
//!
//! The store checks no signature: callers pass [`WipeOrder`]s (verified) in,
//! and verify the bytes they read back against their headquarters key.

use fieldsync_identity::{DeviceId, Timestamp, WipeOrder};
use redb::{TableHandle, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::audit::{AuditEvent, AuditKind};
use crate::error::StoreError;
use crate::rows::{decode, encode};
use crate::store::{Store, read_meta, write_meta};
use crate::tables::META;

const ORDER_PREFIX: &str = "wipe-order/";
const DELIVERED_PREFIX: &str = "wipe-delivered/";
const SPENT_PREFIX: &str = "wipe-spent/";
const PENDING: &str = "wipe-pending";

/// When a relay delivered a wipe order to its device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WipeDelivery {
    /// The nonce of the order delivered.
    pub nonce: [u8; 16],
    /// The first delivery, to a session with the device.
    pub first_at: Timestamp,
    /// The latest delivery.
    pub last_at: Timestamp,
    /// Sessions it was delivered in.
    pub sessions: u64,
}

/// The order this device accepted: it must destroy its keys, now or, if it
/// stopped before it could, at its next start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingWipe {
    /// The signed order bytes.
    pub order: Vec<u8>,
    /// When it was accepted.
    pub accepted_at: Timestamp,
}

/// What [`Store::accept_wipe_order`] made of an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WipeAcceptance {
    /// New: its nonce is spent and it is pending; obey it.
    Accepted,
    /// This very order was accepted before and is still pending (the wipe
    /// did not happen yet): obey it.
    StillPending,
    /// Its nonce was handled before: a replay; ignore it.
    Replayed,
}

fn tbe(op: &'static str) -> impl Fn(redb::TableError) -> StoreError {
    move |e| StoreError::db(op)(e.into())
}

fn sbe(op: &'static str) -> impl Fn(redb::StorageError) -> StoreError {
    move |e| StoreError::db(op)(e.into())
}

fn order_key(device: &DeviceId) -> String {
    format!("{ORDER_PREFIX}{device}")
}

fn delivered_key(device: &DeviceId) -> String {
    format!("{DELIVERED_PREFIX}{device}")
}

/// What an audit entry says of an order.
fn describe(order: &WipeOrder) -> String {
    format!(
        "wipe order {} for device {} (issued {}, expires {}: {})",
        &order.nonce_hex()[..8],
        order.device().short(),
        order.issued_at(),
        order.expires_at(),
        order.reason()
    )
}

impl Store {
    /// Headquarters: stores an order it just issued, to carry to its device
    /// and to other relays, and records it in the audit log. It replaces
    /// any order held for the same device.
    pub fn issue_wipe_order(&self, order: &WipeOrder, now: Timestamp) -> Result<(), StoreError> {
        self.write("issue wipe order", |txn| {
            self.put_order(txn, order)?;
            self.audit_in(
                txn,
                &AuditEvent {
                    at: now,
                    kind: AuditKind::WipeIssued,
                    detail: format!("issued {}", describe(order)),
                },
            )
        })
    }

    /// A relay: holds an order a peer relay (`from`) carried, verified by
    /// the caller, to pass on. Returns whether it is new here: an order is
    /// held unless one issued later (or this one) is held for its device.
    pub fn hold_wipe_order(
        &self,
        order: &WipeOrder,
        from: &DeviceId,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        self.write("hold wipe order", |txn| {
            let held = {
                let meta = txn.open_table(META).map_err(tbe("hold wipe order"))?;
                read_meta(&meta, self.seal.as_ref(), &order_key(&order.device()))?
            };
            let hq = order.body().issuer;
            if let Some(held) = held
                && let Ok(held) = WipeOrder::from_bytes(&held, &hq)
                && (held.nonce() == order.nonce() || held.issued_at() > order.issued_at())
            {
                return Ok(false);
            }
            self.put_order(txn, order)?;
            self.audit_in(
                txn,
                &AuditEvent {
                    at: now,
                    kind: AuditKind::WipeHeld,
                    detail: format!(
                        "holding {}, carried by relay {}",
                        describe(order),
                        from.short()
                    ),
                },
            )?;
            Ok(true)
        })
    }

    fn put_order(&self, txn: &WriteTransaction, order: &WipeOrder) -> Result<(), StoreError> {
        let mut meta = txn.open_table(META).map_err(tbe("store wipe order"))?;
        write_meta(
            &mut meta,
            self.seal.as_ref(),
            &order_key(&order.device()),
            &order.to_bytes(),
        )
    }

    /// The order held for `device`, if any (signed bytes: verify them).
    pub fn held_wipe_order(&self, device: &DeviceId) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.read()?;
        let meta = txn.open_table(META).map_err(tbe("read wipe order"))?;
        read_meta(&meta, self.seal.as_ref(), &order_key(device))
    }

    /// Every order held, by device (signed bytes: verify them).
    pub fn held_wipe_orders(&self) -> Result<Vec<(DeviceId, Vec<u8>)>, StoreError> {
        self.by_device(ORDER_PREFIX, "read wipe orders")
    }

    /// Whether an order is held for `device` (a relay lets a revoked device
    /// with a pending order finish its handshake only to receive it).
    pub fn holds_wipe_order(&self, device: &DeviceId) -> Result<bool, StoreError> {
        Ok(self.held_wipe_order(device)?.is_some())
    }

    /// Values of `meta-1` keys `<prefix><device id>`, by device.
    fn by_device(
        &self,
        prefix: &str,
        op: &'static str,
    ) -> Result<Vec<(DeviceId, Vec<u8>)>, StoreError> {
        let txn = self.read()?;
        let meta = txn.open_table(META).map_err(tbe(op))?;
        // '0' follows '/': the range covers exactly the keys with the prefix.
        let end = format!("{}0", prefix.trim_end_matches('/'));
        let mut out = Vec::new();
        for row in meta.range(prefix..end.as_str()).map_err(sbe(op))? {
            let (k, v) = row.map_err(sbe(op))?;
            let key = k.value();
            let device: DeviceId = key[prefix.len()..]
                .parse()
                .map_err(|_| StoreError::corrupt(format!("{op}: bad key {key}")))?;
            out.push((
                device,
                self.seal.open(META.name(), key.as_bytes(), v.value())?,
            ));
        }
        Ok(out)
    }

    /// A relay delivered `order` to a session with its device at `now`. The
    /// first delivery of an order is durable and audited; later ones only
    /// count (committed without waiting for the disk).
    pub fn record_wipe_delivery(
        &self,
        order: &WipeOrder,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let key = delivered_key(&order.device());
        let previous = self.wipe_delivery(&order.device())?;
        match previous {
            Some(mut d) if d.nonce == order.nonce() => {
                d.last_at = now;
                d.sessions = d.sessions.saturating_add(1);
                let bytes = encode(&d)?;
                self.write_lazy("record wipe delivery", |txn| {
                    let mut meta = txn.open_table(META).map_err(tbe("record wipe delivery"))?;
                    write_meta(&mut meta, self.seal.as_ref(), &key, &bytes)
                })
            }
            _ => {
                let bytes = encode(&WipeDelivery {
                    nonce: order.nonce(),
                    first_at: now,
                    last_at: now,
                    sessions: 1,
                })?;
                self.write("record wipe delivery", |txn| {
                    {
                        let mut meta = txn.open_table(META).map_err(tbe("record wipe delivery"))?;
                        write_meta(&mut meta, self.seal.as_ref(), &key, &bytes)?;
                    }
                    self.audit_in(
                        txn,
                        &AuditEvent {
                            at: now,
                            kind: AuditKind::WipeDelivered,
                            detail: format!("delivered {}", describe(order)),
                        },
                    )
                })
            }
        }
    }

    /// When this relay delivered its order to `device`, if it did.
    pub fn wipe_delivery(&self, device: &DeviceId) -> Result<Option<WipeDelivery>, StoreError> {
        let txn = self.read()?;
        let meta = txn.open_table(META).map_err(tbe("read wipe delivery"))?;
        read_meta(&meta, self.seal.as_ref(), &delivered_key(device))?
            .map(|v| decode(&v, "wipe delivery"))
            .transpose()
    }

    /// Every delivery this relay recorded, by device.
    pub fn wipe_deliveries(&self) -> Result<Vec<(DeviceId, WipeDelivery)>, StoreError> {
        self.by_device(DELIVERED_PREFIX, "read wipe deliveries")?
            .into_iter()
            .map(|(d, v)| Ok((d, decode(&v, "wipe delivery")?)))
            .collect()
    }

    /// A device: records an order it must obey (the caller checked it with
    /// [`WipeOrder::check_for`]). In one durable transaction, its nonce is
    /// spent, it becomes the pending wipe ([`Store::pending_wipe`]) and the
    /// audit log says so; the device then destroys its keys. An order whose
    /// nonce was handled before is a replay, and nothing is written (the
    /// caller records why it ignored it: [`Store::record_ignored_wipe_order`]).
    pub fn accept_wipe_order(
        &self,
        order: &WipeOrder,
        now: Timestamp,
    ) -> Result<WipeAcceptance, StoreError> {
        let spent_key = format!("{SPENT_PREFIX}{}", order.nonce_hex());
        {
            let txn = self.read()?;
            let meta = txn.open_table(META).map_err(tbe("read wipe orders"))?;
            if read_meta(&meta, self.seal.as_ref(), &spent_key)?.is_some() {
                let pending = read_meta(&meta, self.seal.as_ref(), PENDING)?
                    .map(|v| decode::<PendingWipe>(&v, "pending wipe"))
                    .transpose()?;
                return Ok(match pending {
                    Some(p) if p.order == order.to_bytes() => WipeAcceptance::StillPending,
                    _ => WipeAcceptance::Replayed,
                });
            }
        }
        let pending = encode(&PendingWipe {
            order: order.to_bytes(),
            accepted_at: now,
        })?;
        self.write("accept wipe order", |txn| {
            {
                let mut meta = txn.open_table(META).map_err(tbe("accept wipe order"))?;
                let seal = self.seal.as_ref();
                write_meta(&mut meta, seal, &spent_key, &now.as_millis().to_le_bytes())?;
                write_meta(&mut meta, seal, PENDING, &pending)?;
            }
            self.audit_in(
                txn,
                &AuditEvent {
                    at: now,
                    kind: AuditKind::WipeOrdered,
                    detail: format!("obeying {}: this device destroys its keys", describe(order)),
                },
            )
        })?;
        Ok(WipeAcceptance::Accepted)
    }

    /// Whether this device handled an order with `nonce` already.
    pub fn wipe_nonce_spent(&self, nonce: &[u8; 16]) -> Result<bool, StoreError> {
        let txn = self.read()?;
        let meta = txn.open_table(META).map_err(tbe("read wipe orders"))?;
        Ok(read_meta(
            &meta,
            self.seal.as_ref(),
            &format!("{SPENT_PREFIX}{}", hex::encode(nonce)),
        )?
        .is_some())
    }

    /// The order this device accepted and has not obeyed yet, if any. A
    /// device checks this at every start, before it opens case data, and
    /// destroys its keys when there is one (it may have stopped between
    /// accepting the order and obeying it).
    pub fn pending_wipe(&self) -> Result<Option<PendingWipe>, StoreError> {
        let txn = self.read()?;
        let meta = txn.open_table(META).map_err(tbe("read pending wipe"))?;
        read_meta(&meta, self.seal.as_ref(), PENDING)?
            .map(|v| decode(&v, "pending wipe"))
            .transpose()
    }

    /// Records in the audit log that a wipe order was ignored, and why
    /// (forged, expired, replayed, for another device...). Nothing else
    /// changes.
    pub fn record_ignored_wipe_order(
        &self,
        reason: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.audit(&AuditEvent {
            at: now,
            kind: AuditKind::WipeIgnored,
            detail: format!("wipe order ignored: {reason}"),
        })
    }
}
