//! The sync engine: one [`Session`] per connection, a state machine that
//! does no IO.
//!
//! The driver feeds it what arrives ([`Session::handle_input`]), tells it when
//! the local log has grown ([`Session::handle_log_grew`]), and drains what it
//! wants sent ([`Session::poll_transmit`]) and what happened
//! ([`Session::poll_event`]), in that order, after each input. Time is an
//! argument; the store is the caller's, passed into each call.
//!
//! Each side streams its log to the other from the position the other
//! named in its `Hello` (its cursor), in bounded batches, several in flight.
//! The receiver verifies every batch (signatures in one batch call, then
//! certificates, revocation points, roles and compartments), stores it with
//! the sender's cursor in one transaction, and acknowledges it; a relay's
//! acknowledgement is a signed receipt. When a side has sent its whole log it
//! says `CaughtUp`, and from then on forwards new changes as they are stored.

mod inbound;
mod orders;

pub use inbound::Inbound;
pub use orders::MAX_IGNORED_ORDERS;

use inbound::{CheckedBatch, PreparedBatch};

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use fieldsync_case::{
    CHANGE_HEADER_LEN, ChangeHash, Genesis, VerifiedChange, VerifiedGenesis, envelope_hash,
};
use fieldsync_identity::{
    CaseId, DeviceCertificate, DeviceId, Encoded, PUBLIC_KEY_LEN, PublicKey, RevocationList, Role,
    Timestamp, WipeOrder, decode_signed,
};
use fieldsync_store::{
    BundleError, Cursor, Ingest, IngestReport, PeerRecord, QuarantineEntry, Store, StoreKind,
    StoredReceipt,
};

use crate::authority::Authority;
use crate::error::SessionError;
use crate::receipt::{
    RECEIPT_VERSION, RELAYED_RECEIPT_VERSION, ReceiptBody, ReceiptError, RelayedReceiptBody,
    encode_receipt, encode_relayed_receipt, verify_receipt, verify_relayed_receipt,
};
use crate::release::ReleaseBody;
use crate::repair;
use crate::wire::{
    Ack, Batch, CloseCode, DEFLATED_BATCHES_SINCE, FrameDecoder, Hello, MAX_BATCH_BYTES,
    MAX_BATCH_CHANGES, MIN_PROTOCOL_VERSION, Message, NodeRole, PROTOCOL_VERSION, RELAYED_SINCE,
    REPAIR_BUCKETS, RepairDigest, RepairHeads, WireCursor, encode_batch_deflated,
};

/// Batches sent and not yet acknowledged, at most.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 8;

/// How a session is set up.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// What this node is.
    pub role: NodeRole,
    /// This node's certificate.
    pub certificate: DeviceCertificate,
    /// Trust anchor and revocations.
    pub authority: Authority,
    /// Batches in flight at most.
    pub max_in_flight: usize,
    /// Group commit: store the peer's batches with
    /// [`Store::ingest_deferred`] instead of a durable commit each. The
    /// driver must then make them durable ([`Store::flush`]) before it sends
    /// the frames this session queued after storing (acknowledgements and
    /// receipts say "durably stored"); each such batch shows as an
    /// [`Event::Stored`].
    pub deferred_commits: bool,
}

/// Something the driver may want to know or show.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The peer's `Hello` and certificate were accepted.
    PeerVerified {
        /// The peer.
        device: DeviceId,
        /// Its certified role.
        role: Role,
        /// Its certified name.
        name: String,
    },
    /// A batch from the peer was verified and stored.
    Stored {
        /// What was stored.
        report: IngestReport,
        /// The peer's log position now held.
        through: u64,
    },
    /// The peer acknowledged our log through `through`.
    Acknowledged {
        /// Our log position acknowledged.
        through: u64,
        /// Whether a signed receipt came with it (always, from a relay).
        receipt: bool,
    },
    /// The peer carried down a receipt of a relay above it.
    RelayedReceipt {
        /// The relay that holds our changes (headquarters, usually).
        upstream: DeviceId,
        /// Our log position it holds through (the session's peer carried it).
        through: u64,
    },
    /// The peer has sent us its whole log (as far as we may read it).
    PeerCaughtUp {
        /// The peer's log head at that moment.
        head: u64,
    },
    /// A newer revocation list was adopted and stored.
    RevocationsUpdated {
        /// Its sequence number.
        sequence: u64,
    },
    /// Devices: headquarters ordered this device wiped, and the order
    /// checked out (signed by headquarters, for this device, not expired,
    /// not handled before, issued under the current certificate). It is
    /// stored as pending ([`Store::pending_wipe`]); the driver must destroy
    /// the device's keys now. The session is closed.
    WipeOrdered {
        /// The order.
        order: WipeOrder,
    },
    /// Relays: a wipe order carried by the peer relay is new here and is
    /// held to pass on (the driver tells the other sessions:
    /// [`Session::handle_wipe_orders`]).
    WipeOrderHeld {
        /// The device it orders wiped.
        device: DeviceId,
    },
    /// Relays: the device's wipe order was sent to it.
    WipeOrderDelivered {
        /// The device.
        device: DeviceId,
        /// Whether the device is refused otherwise (revoked or expired):
        /// it got the order and nothing else.
        refused: bool,
    },
    /// The session ended.
    Closed {
        /// Why.
        code: CloseCode,
        /// Details.
        reason: String,
        /// Whether the peer closed it.
        by_peer: bool,
    },
}

/// What the session waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Our `Hello` is queued; the peer's has not arrived.
    ExpectHello,
    /// Both `Hello`s exchanged: logs flow both ways.
    Open,
    /// Closed, by us or by the peer.
    Closed,
}

/// What the peer's `Hello` established.
#[derive(Debug, Clone)]
struct Peer {
    cert: DeviceCertificate,
    epoch: [u8; 16],
    last_through: u64,
    /// The protocol version the peer speaks.
    version: u16,
}

/// One sync session with one peer.
#[derive(Debug)]
pub struct Session {
    cfg: SessionConfig,
    expected_peer: DeviceId,
    state: State,
    decoder: FrameDecoder,
    out: VecDeque<Vec<u8>>,
    events: VecDeque<Event>,
    peer: Option<Peer>,
    my_epoch: [u8; 16],
    send_next: u64,
    /// Batches sent and not acknowledged: the position each brings the peer
    /// to, and whether it carried anything (a batch that only moves the
    /// peer's cursor past what it may not read or sent us needs no receipt).
    in_flight: VecDeque<(u64, bool)>,
    /// The position the one position-only batch in flight brings the peer
    /// to, if one is: a log that grows with entries the peer may not read
    /// moves its cursor by at most one such batch at a time, not one per
    /// growth (the acknowledgement sends the next, covering all since).
    position_in_flight: Option<u64>,
    sent_certs: BTreeSet<DeviceId>,
    certs: BTreeMap<DeviceId, DeviceCertificate>,
    sent_caught_up: bool,
    peer_caught_up: bool,
    /// Repair under way: the digest we sent, awaiting the peer's heads.
    repair: Option<RepairDigest>,
    /// Repair under way: we offered our heads of some cases; the log
    /// position the repair started at, sent once the peer said what it holds.
    repair_offered: Option<u64>,
    /// Our log position the peer held when the session opened: it holds the
    /// genesis of every case whose first change here is at or before it.
    peer_holds: u64,
    /// Cases whose genesis this session has sent.
    sent_geneses: BTreeSet<CaseId>,
    /// Whether the peer acknowledged, at the start, what its Hello said it holds.
    resume_acked: bool,
    /// The cursor into the peer's log our Hello announced.
    announced: Option<WireCursor>,
    /// Per upstream relay, the position of the peer's log through which
    /// this session has told the peer that relay holds it.
    relayed_sent: BTreeMap<DeviceId, u64>,
    /// Nonces of the wipe orders sent to (or received from) the peer.
    orders_sent: BTreeSet<[u8; 16]>,
    /// Wipe orders from the peer ignored in this session.
    orders_ignored: usize,
    /// Devices: whether this session recorded contact with the relay.
    contact_recorded: bool,
}

/// The signing counter of a change envelope, read from its header.
fn envelope_counter(env: &[u8]) -> Option<u64> {
    let at = 1 + 16 + PUBLIC_KEY_LEN + fieldsync_identity::SIGNATURE_LEN;
    let bytes: [u8; 8] = env.get(at..at + 8)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// The signer of a change envelope, read from its header without parsing the change.
fn envelope_signer(env: &[u8]) -> Option<DeviceId> {
    let key = env.get(17..17 + PUBLIC_KEY_LEN)?;
    if env.len() < CHANGE_HEADER_LEN {
        return None;
    }
    PublicKey::from_slice(key)
        .ok()
        .map(DeviceId::from_public_key)
}

/// Adds to `out` the release under which the change `env` of `case` was
/// stored, if it was released from a quarantine; returns the releasing
/// device, whose certificate must travel too.
fn attach_release(
    store: &Store,
    out: &mut Batch,
    case: &CaseId,
    env: &[u8],
) -> Result<Option<DeviceId>, SessionError> {
    let Some(hash) = envelope_hash(env) else {
        return Ok(None);
    };
    let Some(release) = store.release_for(case, &hash)? else {
        return Ok(None);
    };
    let by = decode_signed::<ReleaseBody>(&release)
        .ok()
        .map(|r| DeviceId::from_public_key(r.payload().value().released_by));
    out.releases.push(release);
    Ok(by)
}

/// Releases a batch carried, by the change they release.
type CarriedReleases = BTreeMap<(CaseId, ChangeHash), (ReleaseBody, Vec<u8>)>;

/// Stores a verified, authorized batch. A validly signed change that
/// Automerge cannot apply (it panics on some malformed changes) must not
/// block the peer's log forever: the changes of that case in this batch go
/// to quarantine with the reason, and the rest is stored. The case stays
/// as it was. The second value is then the error to close the session
/// with (once the batch is acknowledged): the peer sent what no honest
/// device makes.
fn ingest_or_quarantine(
    store: &Store,
    mut ingest: Ingest,
    now: Timestamp,
    deferred: bool,
) -> Result<(IngestReport, Option<SessionError>), SessionError> {
    let store_once = |ingest: Ingest| {
        if deferred {
            store.ingest_deferred(ingest, now)
        } else {
            store.ingest(ingest, now)
        }
    };
    // A relay stores changes by their headers and never applies them, so
    // no Automerge refusal can call for a second try: no copy to keep.
    if store.kind() == StoreKind::Relay {
        return Ok((store_once(ingest)?, None));
    }
    let mut refused = None;
    for _ in 0..=ingest.cases.len() {
        match store_once(ingest.clone()) {
            Err(BundleError::Apply { case, error }) => {
                let Some(at) = ingest
                    .cases
                    .iter()
                    .position(|(g, _)| g.payload().value().case.to_string() == case)
                else {
                    return Err(BundleError::Apply { case, error }.into());
                };
                let (genesis, changes) = ingest.cases.remove(at);
                let gone = changes[..].first().map(|c| c.payload().case());
                ingest.releases.retain(|(c, _, _)| Some(*c) != gone);
                tracing::warn!(%case, %error, "Automerge refused a change; quarantining the case's batch");
                refused = Some(SessionError::Forgery(format!(
                    "case {case}: Automerge could not apply the changes sent ({error}); they are quarantined"
                )));
                for change in changes {
                    ingest.quarantine.push(QuarantineEntry {
                        at: now,
                        reason: format!("Automerge could not apply this case's changes: {error}"),
                        change: fieldsync_case::encode_change(change.as_signed()),
                        case: change.payload().case(),
                        signer: change.device(),
                        genesis: fieldsync_identity::encode_signed(genesis.as_signed()),
                    });
                }
            }
            other => return Ok((other?, refused)),
        }
    }
    Err(SessionError::Protocol("could not store the batch".into()))
}

impl Session {
    /// Opens a session with `peer` (the identity the transport authenticated)
    /// and queues our `Hello`.
    pub fn new(
        cfg: SessionConfig,
        store: &Store,
        peer: DeviceId,
        now: Timestamp,
    ) -> Result<Self, SessionError> {
        let _ = now;
        let my_epoch = store.epoch()?;
        let want = store.peer_cursor(&peer)?.map(|c| WireCursor {
            epoch: c.epoch,
            seq: c.seq,
        });
        // Certificates of other devices are loaded from the store when a
        // change of theirs arrives or leaves (`load_certs`), not all at once.
        let mut certs = BTreeMap::new();
        certs.insert(cfg.certificate.device(), cfg.certificate.clone());
        let hello = Hello {
            version: PROTOCOL_VERSION,
            min_version: MIN_PROTOCOL_VERSION,
            role: cfg.role,
            certificate: cfg.certificate.to_bytes(),
            epoch: my_epoch,
            head: store.log_head()?,
            want,
            revocations: cfg.authority.revocations_seq(),
        };
        let mut s = Self {
            cfg,
            expected_peer: peer,
            state: State::ExpectHello,
            decoder: FrameDecoder::new(),
            out: VecDeque::new(),
            events: VecDeque::new(),
            peer: None,
            my_epoch,
            send_next: 0,
            in_flight: VecDeque::new(),
            position_in_flight: None,
            sent_certs: BTreeSet::new(),
            certs,
            sent_caught_up: false,
            peer_caught_up: false,
            repair: None,
            repair_offered: None,
            peer_holds: 0,
            sent_geneses: BTreeSet::new(),
            resume_acked: false,
            announced: want,
            relayed_sent: BTreeMap::new(),
            orders_sent: BTreeSet::new(),
            orders_ignored: 0,
            contact_recorded: false,
        };
        s.send(&Message::Hello(hello));
        Ok(s)
    }

    /// The next frame to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.out.pop_front()
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Whether the session has ended.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Whether both logs have been exchanged and acknowledged: the peer has
    /// sent us everything and acknowledged everything we sent.
    pub fn is_synced(&self) -> bool {
        self.state == State::Open
            && self.peer_caught_up
            && self.sent_caught_up
            && self.in_flight.is_empty()
    }

    /// The authenticated peer.
    pub fn peer(&self) -> DeviceId {
        self.expected_peer
    }

    /// The current trust anchor and revocations (updated by the peer).
    pub fn authority(&self) -> &Authority {
        &self.cfg.authority
    }

    fn send(&mut self, msg: &Message) {
        self.out.push_back(msg.to_frame());
    }

    /// Closes the session, telling the peer why.
    pub fn close(&mut self, code: CloseCode, reason: &str) {
        if self.state == State::Closed {
            return;
        }
        self.send(&Message::Close {
            code,
            reason: reason.to_owned(),
        });
        self.state = State::Closed;
        self.events.push_back(Event::Closed {
            code,
            reason: reason.to_owned(),
            by_peer: false,
        });
    }

    /// Feeds bytes received from the peer. On error the session is closed
    /// (a `Close` frame is queued for the peer) and the error returned.
    pub fn handle_input(
        &mut self,
        store: &Store,
        bytes: &[u8],
        now: Timestamp,
    ) -> Result<(), SessionError> {
        if self.state == State::Closed {
            return Err(SessionError::Closed);
        }
        self.decoder.push(bytes);
        loop {
            let frame = match self.decoder.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(()),
                Err(e) => return Err(self.fail(e.into())),
            };
            let result = Message::decode(&frame)
                .map_err(SessionError::from)
                .and_then(|msg| self.handle_message(store, msg, now));
            if let Err(e) = result {
                return Err(self.fail(e));
            }
            if self.state == State::Closed {
                return Ok(());
            }
        }
    }

    /// This node adopted a newer revocation list (from headquarters, or from
    /// another session): use it from now on, pass it to the peer, and end
    /// the session if the peer itself is now revoked.
    pub fn handle_revocations(
        &mut self,
        list: RevocationList,
        now: Timestamp,
    ) -> Result<(), SessionError> {
        if self.state == State::Closed || !self.cfg.authority.adopt(list.clone()) {
            return Ok(());
        }
        if self.state == State::Open {
            self.send(&Message::Revocations(list.to_bytes()));
            if let Some(peer) = &self.peer {
                let standing = self.cfg.authority.check_standing(&peer.cert, now);
                if let Err(e) = standing {
                    return Err(self.fail(e));
                }
            }
        }
        Ok(())
    }

    /// A relay above this one acknowledged more of our log (`receipts`: the
    /// receipt held from each relay, [`Store::receipts`]): tell the peer how
    /// much of *its* log that now covers, if more than it was told.
    pub fn handle_upstream_receipts(
        &mut self,
        store: &Store,
        receipts: &[StoredReceipt],
    ) -> Result<(), SessionError> {
        if self.state != State::Open {
            return Ok(());
        }
        self.relay_receipts(store, receipts)
            .map_err(|e| self.fail(e))
    }

    /// The wipe orders this relay holds changed (headquarters issued one,
    /// or another session brought one): send the peer those it should get
    /// and was not sent yet.
    pub fn handle_wipe_orders(
        &mut self,
        store: &Store,
        now: Timestamp,
    ) -> Result<(), SessionError> {
        if self.state != State::Open {
            return Ok(());
        }
        self.send_wipe_orders(store, now).map_err(|e| self.fail(e))
    }

    /// New changes were stored locally: forward them if the peer is caught up.
    pub fn handle_log_grew(&mut self, store: &Store, now: Timestamp) -> Result<(), SessionError> {
        if self.state != State::Open {
            return Ok(());
        }
        self.pump(store, now).map_err(|e| self.fail(e))
    }

    fn fail(&mut self, e: SessionError) -> SessionError {
        match &e {
            SessionError::PeerClosed { .. } | SessionError::Closed => return e,
            // Expected in the field: old builds, expired or revoked devices.
            SessionError::Version { .. }
            | SessionError::Certificate(_)
            | SessionError::NotAllowed(_) => {
                tracing::info!(peer = %self.expected_peer.short(), error = %e, "refusing session");
            }
            _ => tracing::warn!(peer = %self.expected_peer.short(), error = %e, "closing session"),
        }
        self.close(e.close_code(), &e.to_string());
        e
    }

    fn handle_message(
        &mut self,
        store: &Store,
        msg: Message,
        now: Timestamp,
    ) -> Result<(), SessionError> {
        match (self.state, msg) {
            (State::ExpectHello, Message::Hello(h)) => self.on_hello(store, h, now),
            (_, Message::Close { code, reason }) => {
                self.state = State::Closed;
                self.events.push_back(Event::Closed {
                    code,
                    reason: reason.clone(),
                    by_peer: true,
                });
                if code == CloseCode::Done {
                    Ok(())
                } else {
                    Err(SessionError::PeerClosed { code, reason })
                }
            }
            (State::Open, Message::Batch(b)) => {
                self.note_contact(store, now)?;
                self.on_batch(store, b, now)
            }
            (State::Open, Message::Ack(a)) => {
                self.note_contact(store, now)?;
                self.on_ack(store, a, now)
            }
            (State::Open, Message::CaughtUp { head }) => {
                self.note_contact(store, now)?;
                self.peer_caught_up = true;
                self.events.push_back(Event::PeerCaughtUp { head });
                Ok(())
            }
            (State::Open, Message::Revocations(bytes)) => self.on_revocations(store, &bytes, now),
            (State::Open, Message::RepairDigest(d)) => {
                self.note_contact(store, now)?;
                self.on_repair_digest(store, d)
            }
            (State::Open, Message::RepairHeads(h)) => self.on_repair_heads(store, h, now),
            (State::Open, Message::RepairOffer(h)) => self.on_repair_offer(store, h),
            (State::Open, Message::RepairNeed(h)) => self.on_repair_need(store, h, now),
            (State::Open, Message::Relayed(bytes)) => self.on_relayed(store, &bytes, now),
            (State::Open, Message::WipeOrder(bytes)) => self.on_wipe_order(store, &bytes, now),
            (state, msg) => Err(SessionError::Protocol(format!(
                "unexpected {} while {state:?}",
                match msg {
                    Message::Hello(_) => "hello",
                    Message::Batch(_) => "batch",
                    Message::Ack(_) => "ack",
                    Message::CaughtUp { .. } => "caught-up",
                    Message::Revocations(_) => "revocations",
                    Message::RepairDigest(_) => "repair digest",
                    Message::RepairHeads(_) => "repair heads",
                    Message::RepairOffer(_) => "repair offer",
                    Message::RepairNeed(_) => "repair need",
                    Message::Relayed(_) => "relayed receipt",
                    Message::WipeOrder(_) => "wipe order",
                    Message::Close { .. } => "close",
                }
            ))),
        }
    }

    fn on_hello(&mut self, store: &Store, h: Hello, now: Timestamp) -> Result<(), SessionError> {
        if h.version < MIN_PROTOCOL_VERSION || h.min_version > PROTOCOL_VERSION {
            return Err(SessionError::Version {
                version: h.version,
                min: h.min_version,
                ours: PROTOCOL_VERSION,
                our_min: MIN_PROTOCOL_VERSION,
            });
        }
        let cert = match self.cfg.authority.check_certificate(&h.certificate, now) {
            Ok(cert) => cert,
            Err(refused) => return Err(self.refuse_with_wipe_order(store, &h, refused, now)),
        };
        if cert.device() != self.expected_peer {
            return Err(SessionError::NotAllowed(format!(
                "the certificate is for device {}, but the connection is from {}",
                cert.device().short(),
                self.expected_peer.short()
            )));
        }
        let certified_relay = cert.role() == Role::Relay;
        if certified_relay != (h.role == NodeRole::Relay) {
            return Err(SessionError::NotAllowed(format!(
                "peer says it is a {:?} but is certified as {}",
                h.role,
                cert.role()
            )));
        }
        if h.role == NodeRole::Device && self.cfg.role == NodeRole::Device {
            return Err(SessionError::NotAllowed(
                "devices sync through relays, not with each other".into(),
            ));
        }
        let head = store.log_head()?;
        // Where to start sending our log: at the peer's cursor when it is one
        // into this log; from the start to a peer with nothing; otherwise the
        // peer holds an unknown part of what we have: repair.
        let repair = match h.want {
            Some(c) if c.epoch == self.my_epoch => {
                self.send_next = c.seq.min(head);
                self.peer_holds = self.send_next;
                false
            }
            Some(_) => head > 0,
            None => head > 0 && h.head > 0,
        };
        store.record_peer(
            &cert.device(),
            &PeerRecord {
                certificate: cert.to_bytes(),
                last_contact: now,
                carried_by: None,
            },
        )?;
        self.events.push_back(Event::PeerVerified {
            device: cert.device(),
            role: cert.role(),
            name: cert.name().to_owned(),
        });
        self.certs.insert(cert.device(), cert.clone());
        // Both certificates travelled in the hellos.
        self.sent_certs.insert(cert.device());
        self.sent_certs.insert(self.cfg.certificate.device());
        self.peer = Some(Peer {
            cert,
            epoch: h.epoch,
            last_through: 0,
            version: h.version,
        });
        self.state = State::Open;
        // Wipe orders go first: a device that must wipe itself stores
        // nothing more from this relay once it has its order.
        self.send_wipe_orders(store, now)?;
        // A relay that already holds part of the peer's log says so at once,
        // with a receipt: a device whose last sync was cut after the relay
        // stored its changes but before the acknowledgement arrived learns
        // that they are safe, though nothing needs sending again.
        // It acknowledges what its own Hello announced (the cursor may have
        // moved since, through another session with the same device).
        if self.cfg.role == NodeRole::Relay
            && let Some(c) = self.announced
            && c.epoch == h.epoch
            && c.seq > 0
            && let Some(peer) = self.peer.clone()
        {
            let receipt = self.receipt(store, &peer, c.seq, now)?;
            self.send(&Message::Ack(Ack {
                through: c.seq,
                receipt: Some(receipt),
            }));
        }
        if h.revocations < self.cfg.authority.revocations_seq()
            && let Some(list) = self.cfg.authority.revocations()
        {
            let bytes = list.to_bytes();
            self.send(&Message::Revocations(bytes));
        }
        if self.cfg.role == NodeRole::Relay && h.role == NodeRole::Device {
            let upstream = store.receipts()?;
            self.relay_receipts(store, &upstream)?;
        }
        if repair {
            let peer_cert = self.certs.get(&self.expected_peer).cloned();
            let mine = match &peer_cert {
                Some(c) => repair::readable_heads(store, c)?,
                None => Vec::new(),
            };
            let d = repair::digest(&mine, head);
            self.send(&Message::RepairDigest(d.clone()));
            self.repair = Some(d);
            return Ok(());
        }
        self.pump(store, now)
    }

    /// Repair, receiving side: answer with our heads of the differing buckets.
    fn on_repair_digest(&mut self, store: &Store, d: RepairDigest) -> Result<(), SessionError> {
        let Some(peer) = self.peer.clone() else {
            return Err(SessionError::Protocol("repair before hello".into()));
        };
        let mine = repair::readable_heads(store, &peer.cert)?;
        self.send(&Message::RepairHeads(repair::answer(&mine, &d)));
        Ok(())
    }

    /// Repair, sending side: send what the peer lacks, then carry on from
    /// the log position the repair started at.
    fn on_repair_heads(
        &mut self,
        store: &Store,
        theirs: RepairHeads,
        now: Timestamp,
    ) -> Result<(), SessionError> {
        let Some(sent) = self.repair.take() else {
            return Err(SessionError::Protocol(
                "repair heads without a repair".into(),
            ));
        };
        let Some(peer) = self.peer.clone() else {
            return Err(SessionError::Protocol("repair before hello".into()));
        };
        if theirs
            .differing
            .iter()
            .any(|&b| usize::from(b) >= REPAIR_BUCKETS)
        {
            return Err(SessionError::Protocol("repair bucket out of range".into()));
        }
        let mine = repair::readable_heads(store, &peer.cert)?;
        let plan = repair::plan(store, &mine, &theirs)?;
        let mut out = Batch::default();
        for (case, genesis, envs) in plan.send {
            self.add_to_repair(store, &mut out, case, &genesis, envs)?;
        }
        if plan.offer.cases.is_empty() {
            return self.finish_repair(store, out, sent.head, now);
        }
        if !out.changes.is_empty() {
            self.send_batch(out);
        }
        self.send(&Message::RepairOffer(plan.offer));
        self.repair_offered = Some(sent.head);
        Ok(())
    }

    /// Repair, receiving side: for each offered case, what we hold of it.
    fn on_repair_offer(&mut self, store: &Store, offer: RepairHeads) -> Result<(), SessionError> {
        let Some(peer) = self.peer.clone() else {
            return Err(SessionError::Protocol("repair before hello".into()));
        };
        // A case the peer may not read is answered as a case this node does
        // not hold (nothing of it held), never revealed.
        let mut answer = RepairHeads::default();
        for (case, heads) in offer.cases {
            let known = store.case_genesis(&CaseId::from_bytes(case))?;
            let may = known.as_deref().is_none_or(|g| {
                decode_signed::<Genesis>(g)
                    .is_ok_and(|s| Authority::may_read(&peer.cert, s.payload().value()))
            });
            if may {
                let one = RepairHeads {
                    differing: Vec::new(),
                    cases: vec![(case, heads)],
                };
                answer.cases.extend(repair::holdings(store, &one)?.cases);
            } else {
                answer.cases.push((case, Vec::new()));
            }
        }
        self.send(&Message::RepairNeed(answer));
        Ok(())
    }

    /// Repair, sending side: the peer said what it holds of the offered
    /// cases; send the rest and carry on from where the repair started.
    fn on_repair_need(
        &mut self,
        store: &Store,
        need: RepairHeads,
        now: Timestamp,
    ) -> Result<(), SessionError> {
        let Some(head) = self.repair_offered.take() else {
            return Err(SessionError::Protocol(
                "repair need without an offer".into(),
            ));
        };
        let Some(peer) = self.peer.clone() else {
            return Err(SessionError::Protocol("repair before hello".into()));
        };
        let mut out = Batch::default();
        for (case, held) in need.cases {
            let case = CaseId::from_bytes(case);
            let Some(genesis) = store.case_genesis(&case)? else {
                continue;
            };
            let readable = decode_signed::<Genesis>(&genesis)
                .is_ok_and(|s| Authority::may_read(&peer.cert, s.payload().value()));
            if !readable {
                continue;
            }
            let envs = repair::complement(store, &case, &held)?;
            self.add_to_repair(store, &mut out, case, &genesis, envs)?;
        }
        self.finish_repair(store, out, head, now)
    }

    /// Adds a case's envelopes to repair batches, sending full ones.
    fn add_to_repair(
        &mut self,
        store: &Store,
        out: &mut Batch,
        case: CaseId,
        genesis: &[u8],
        envs: Vec<Vec<u8>>,
    ) -> Result<(), SessionError> {
        let releases = store.has_releases()?;
        for env in envs {
            if out.changes.len() >= MAX_BATCH_CHANGES
                || out.payload_len() + env.len() + genesis.len() > MAX_BATCH_BYTES / 2
            {
                self.send_batch(std::mem::take(out));
            }
            if !out.geneses.iter().any(|g| g == genesis) && self.sent_geneses.insert(case) {
                out.geneses.push(genesis.to_vec());
                if let Ok(g) = decode_signed::<Genesis>(genesis) {
                    self.add_certificate(store, out, g.payload().value().creator)?;
                }
            }
            if let Some(a) = envelope_signer(&env) {
                self.add_certificate(store, out, a)?;
            }
            if releases && let Some(by) = attach_release(store, out, &case, &env)? {
                self.add_certificate(store, out, by)?;
            }
            out.changes.push(env);
        }
        Ok(())
    }

    /// Ends a repair: the last batch brings the peer's cursor to `head`.
    fn finish_repair(
        &mut self,
        store: &Store,
        mut out: Batch,
        head: u64,
        now: Timestamp,
    ) -> Result<(), SessionError> {
        out.through = head;
        self.send_batch(out);
        self.send_next = head;
        self.pump(store, now)
    }

    /// Loads from the store the certificates of `devices` this session
    /// does not hold yet (each verified against the headquarters key).
    fn load_certs(
        &mut self,
        store: &Store,
        devices: impl IntoIterator<Item = DeviceId>,
    ) -> Result<(), SessionError> {
        for device in devices {
            if self.certs.contains_key(&device) {
                continue;
            }
            if let Some(rec) = store.peer(&device)?
                && let Ok(cert) =
                    DeviceCertificate::from_bytes(&rec.certificate, self.cfg.authority.hq())
            {
                self.certs.insert(device, cert);
            }
        }
        Ok(())
    }

    fn add_certificate(
        &mut self,
        store: &Store,
        out: &mut Batch,
        author: DeviceId,
    ) -> Result<(), SessionError> {
        if self.sent_certs.contains(&author) {
            return Ok(());
        }
        self.load_certs(store, [author])?;
        if let Some(c) = self.certs.get(&author) {
            out.certificates.push(c.to_bytes());
            self.sent_certs.insert(author);
        }
        Ok(())
    }

    /// Sends batches of our log while the window allows.
    fn pump(&mut self, store: &Store, now: Timestamp) -> Result<(), SessionError> {
        let _ = now;
        let Some(peer) = self.peer.clone() else {
            return Ok(());
        };
        if self.repair.is_some() || self.repair_offered.is_some() {
            return Ok(());
        }
        // A device's own changes carry its log position as their counter:
        // those we hold from its current log, it holds too. Do not echo them.
        let peer_device = peer.cert.device();
        let echo_through = match store.peer_cursor(&peer_device)? {
            Some(c) if c.epoch == peer.epoch && peer.cert.role() != Role::Relay => c.seq,
            _ => 0,
        };
        // Only the entries of cases the peer may read are read at all.
        let readable: Vec<&str> = peer.cert.body().read.iter().map(|c| c.as_str()).collect();
        while self.in_flight.len() < self.cfg.max_in_flight.max(1) {
            let mut batch = store.read_log_for_reader(
                self.send_next,
                self.peer_holds,
                Some((&peer_device, peer.epoch)),
                &readable,
                MAX_BATCH_CHANGES,
                MAX_BATCH_BYTES / 2,
            )?;
            if echo_through > 0 {
                batch.entries.retain(|e| {
                    !(envelope_signer(&e.envelope) == Some(peer_device)
                        && envelope_counter(&e.envelope).is_some_and(|c| c <= echo_through))
                });
                let cases: BTreeSet<CaseId> = batch.entries.iter().map(|e| e.case).collect();
                batch.geneses.retain(|(c, _)| cases.contains(c));
            }
            if batch.entries.is_empty() {
                let progressed = batch.next > self.send_next;
                if progressed {
                    if self.position_in_flight.is_some() {
                        // Its acknowledgement pumps again, from here.
                        break;
                    }
                    // Nothing here the peer may read or lacks: move its cursor past it.
                    self.send_batch(Batch {
                        through: batch.next,
                        ..Batch::default()
                    });
                    self.position_in_flight = Some(batch.next);
                    self.send_next = batch.next;
                }
                if batch.at_end {
                    self.send_caught_up();
                    break;
                }
                if !progressed {
                    break;
                }
                continue;
            }
            let mut out = Batch {
                through: batch.next,
                ..Batch::default()
            };
            let mut authors = Vec::new();
            for (case, g) in &batch.geneses {
                if !self.sent_geneses.insert(*case) {
                    continue;
                }
                if let Ok(s) = decode_signed::<Genesis>(g) {
                    authors.push(s.payload().value().creator);
                }
                out.geneses.push(g.clone());
            }
            let releases = store.has_releases()?;
            for e in batch.entries {
                if let Some(a) = envelope_signer(&e.envelope) {
                    authors.push(a);
                }
                if releases {
                    authors.extend(attach_release(store, &mut out, &e.case, &e.envelope)?);
                }
                out.changes.push(e.envelope);
            }
            for a in authors {
                self.add_certificate(store, &mut out, a)?;
            }
            self.send_next = batch.next;
            self.send_batch(out);
            if batch.at_end {
                self.send_caught_up();
                break;
            }
        }
        Ok(())
    }

    /// Tells the peer, once, that it has our whole log; live changes follow.
    fn send_caught_up(&mut self) {
        if !self.sent_caught_up {
            self.sent_caught_up = true;
            self.send(&Message::CaughtUp {
                head: self.send_next,
            });
        }
    }

    fn send_batch(&mut self, b: Batch) {
        // A device needs a receipt for every batch (see `on_batch`).
        let vouched = !b.is_empty() || self.cfg.role == NodeRole::Device;
        self.in_flight.push_back((b.through, vouched));
        let deflate = self
            .peer
            .as_ref()
            .is_some_and(|p| p.version >= DEFLATED_BATCHES_SINCE);
        if deflate && !b.is_empty() {
            let body = encode_batch_deflated(&b);
            let mut frame = Vec::with_capacity(body.len() + 4);
            frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
            frame.extend_from_slice(&body);
            self.out.push_back(frame);
        } else {
            self.send(&Message::Batch(b));
        }
    }

    fn on_batch(&mut self, store: &Store, b: Batch, now: Timestamp) -> Result<(), SessionError> {
        let prepared = PreparedBatch::new(b, self.cfg.authority.hq());
        self.on_prepared_batch(store, prepared, now)
    }

    /// Stores a batch from the peer (its signatures checked by
    /// [`PreparedBatch::new`], here or on the driver's other thread) and
    /// acknowledges it.
    fn on_prepared_batch(
        &mut self,
        store: &Store,
        b: PreparedBatch,
        now: Timestamp,
    ) -> Result<(), SessionError> {
        let through = b.through();
        let empty = b.is_empty();
        let CheckedBatch {
            carried,
            geneses,
            changes: verified,
            releases: carried_releases,
        } = self.check_batch(store, b)?;
        let Some(peer) = self.peer.clone() else {
            return Err(SessionError::Protocol("batch before hello".into()));
        };
        let needed: Vec<DeviceId> = verified
            .iter()
            .map(VerifiedChange::device)
            .chain(geneses.values().map(|g| g.payload().value().creator))
            .chain(
                carried_releases
                    .values()
                    .map(|(r, _)| DeviceId::from_public_key(r.released_by)),
            )
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        self.load_certs(store, needed)?;
        let (cases, quarantine, releases) =
            self.authorize(store, &geneses, verified, &carried_releases, now)?;
        // The certificates the batch carried are recorded with it: a stored
        // change is never without its author's certificate.
        let peers = carried
            .into_iter()
            .filter(|d| *d != peer.cert.device())
            .filter_map(|d| {
                self.certs.get(&d).map(|cert| {
                    (
                        d,
                        PeerRecord {
                            certificate: cert.to_bytes(),
                            last_contact: now,
                            carried_by: Some(peer.cert.device()),
                        },
                    )
                })
            })
            .collect();
        let ingest = Ingest {
            cases,
            quarantine,
            peer_cursor: Some((
                peer.cert.device(),
                Cursor {
                    epoch: peer.epoch,
                    seq: through,
                },
            )),
            peers,
            releases,
        };
        let (report, refused) =
            ingest_or_quarantine(store, ingest, now, self.cfg.deferred_commits)?;
        if let Some(p) = self.peer.as_mut() {
            p.last_through = through;
        }
        // A batch that only moved our cursor in a relay's log holds nothing
        // to vouch for: a relay that speaks version 2 takes its
        // acknowledgement without a receipt (headquarters sends an office
        // one after each change the office forwards, so this saves the
        // office a signed receipt per change on its uplink). A device always
        // gets one: its receipts say how far its whole log is held.
        let vouch = !empty || peer.cert.role() != Role::Relay || peer.version < RELAYED_SINCE;
        let receipt = match self.cfg.role {
            NodeRole::Relay if vouch => Some(self.receipt(store, &peer, through, now)?),
            _ => None,
        };
        self.send(&Message::Ack(Ack { through, receipt }));
        self.events.push_back(Event::Stored { report, through });
        if let Some(e) = refused {
            return Err(e);
        }
        // What we just stored is in our log now: forward what the peer lacks
        // (nothing of its own), which also moves its cursor past it.
        if self.sent_caught_up {
            self.pump(store, now)?;
        }
        Ok(())
    }

    /// Sorts verified changes into those to store (grouped by case, in
    /// order) and those to quarantine, with the reason. A change that fails
    /// authorization but comes with a valid release is stored, with its
    /// release (the third list).
    #[allow(clippy::type_complexity)]
    fn authorize(
        &self,
        store: &Store,
        geneses: &BTreeMap<CaseId, VerifiedGenesis>,
        changes: Vec<VerifiedChange>,
        carried: &CarriedReleases,
        now: Timestamp,
    ) -> Result<
        (
            Vec<(VerifiedGenesis, Vec<VerifiedChange>)>,
            Vec<QuarantineEntry>,
            Vec<(CaseId, ChangeHash, Vec<u8>)>,
        ),
        SessionError,
    > {
        let auth = &self.cfg.authority;
        let mut accepted: BTreeMap<CaseId, Vec<VerifiedChange>> = BTreeMap::new();
        let mut order: Vec<CaseId> = Vec::new();
        let mut quarantine = Vec::new();
        let mut releases = Vec::new();
        for change in changes {
            let case = change.payload().case();
            let Some(genesis) = geneses.get(&case) else {
                continue;
            };
            let g = genesis.payload().value();
            let creator_ok = self.certs.get(&g.creator).is_some_and(|c| {
                fieldsync_identity::Compartment::new(&g.compartment).is_ok_and(|k| c.can_write(&k))
            });
            let mut verdict = if creator_ok {
                auth.authorize(g, &change, &self.certs)
            } else {
                Err(format!(
                    "case {} was created by device {}, which is not certified to write its compartment",
                    case.short(),
                    g.creator.short()
                ))
            };
            // Released here before (its author may send it again, without
            // the release): it stands, and storing it again does nothing.
            if verdict.is_err()
                && store
                    .release_for(&case, &change.payload().hash())?
                    .is_some()
            {
                verdict = Ok(());
            }
            // A valid release is kept with its change even where the change
            // needed none: it takes the change out of this node's quarantine
            // (one withdrawn here as depending on a change since released)
            // and travels on with it.
            if let Some((release, bytes)) = carried.get(&(case, change.payload().hash())) {
                let checked = auth.check_release(release, g, &change, &self.certs);
                verdict = match (verdict, checked) {
                    (_, Ok(())) => {
                        releases.push((case, change.payload().hash(), bytes.clone()));
                        Ok(())
                    }
                    (Err(reason), Err(why)) => {
                        Err(format!("{reason}; its release was refused: {why}"))
                    }
                    (Ok(()), Err(_)) => Ok(()),
                };
            }
            match verdict {
                Ok(()) => {
                    if !accepted.contains_key(&case) {
                        order.push(case);
                    }
                    accepted.entry(case).or_default().push(change);
                }
                Err(reason) => {
                    tracing::info!(case = %case.short(), %reason, "change quarantined");
                    quarantine.push(QuarantineEntry {
                        at: now,
                        reason,
                        change: fieldsync_case::encode_change(change.as_signed()),
                        case,
                        signer: change.device(),
                        genesis: fieldsync_identity::encode_signed(genesis.as_signed()),
                    });
                }
            }
        }
        let cases = order
            .into_iter()
            .filter_map(|case| {
                let g = geneses.get(&case)?.clone();
                Some((g, accepted.remove(&case).unwrap_or_default()))
            })
            .collect();
        Ok((cases, quarantine, releases))
    }

    fn receipt(
        &self,
        store: &Store,
        peer: &Peer,
        through: u64,
        now: Timestamp,
    ) -> Result<Vec<u8>, SessionError> {
        let body = Encoded::new(ReceiptBody {
            version: RECEIPT_VERSION,
            relay: *self.cfg.certificate.device().public_key(),
            device: peer.cert.device(),
            epoch: peer.epoch,
            through,
            at: now,
        })
        .map_err(|e| SessionError::Protocol(format!("receipt: {e}")))?;
        let signed = store.sign(body)?;
        Ok(encode_receipt(signed.as_signed()))
    }

    /// Sends the peer, for each relay above this one that holds part of our
    /// log, a relayed receipt saying how far that covers the peer's log,
    /// when it covers more than this session said before. Relays only, to
    /// device peers that speak [`RELAYED_SINCE`].
    fn relay_receipts(
        &mut self,
        store: &Store,
        receipts: &[StoredReceipt],
    ) -> Result<(), SessionError> {
        let Some(peer) = self.peer.clone() else {
            return Ok(());
        };
        // Devices only: a relay's receipts are all first-hand, so what it
        // carries down is always a receipt the relay above signed for it.
        if self.cfg.role != NodeRole::Relay
            || peer.cert.role() == Role::Relay
            || peer.version < RELAYED_SINCE
        {
            return Ok(());
        }
        let peer_device = peer.cert.device();
        for r in receipts {
            if r.relay == peer_device {
                continue;
            }
            let Some(through) = store.custody_through(&peer_device, peer.epoch, r.through)? else {
                continue;
            };
            let sent = self.relayed_sent.get(&r.relay).copied();
            if through <= sent.unwrap_or(0) {
                continue;
            }
            // The certificate travels with the first one of the session.
            let upstream_certificate = match sent {
                Some(_) => Vec::new(),
                None => match store.peer(&r.relay)? {
                    Some(upstream) => upstream.certificate,
                    None => continue,
                },
            };
            let body = Encoded::new(RelayedReceiptBody {
                version: RELAYED_RECEIPT_VERSION,
                relay: *self.cfg.certificate.device().public_key(),
                device: peer_device,
                epoch: peer.epoch,
                through,
                upstream_certificate,
                upstream_receipt: r.bytes.clone(),
            })
            .map_err(|e| SessionError::Protocol(format!("relayed receipt: {e}")))?;
            let signed = store.sign(body)?;
            self.send(&Message::Relayed(encode_relayed_receipt(
                signed.as_signed(),
            )));
            self.relayed_sent.insert(r.relay, through);
        }
        Ok(())
    }

    /// A relay carried down the receipt of a relay above it: keep it (it
    /// is how this node knows its changes are safe at headquarters).
    fn on_relayed(
        &mut self,
        store: &Store,
        bytes: &[u8],
        now: Timestamp,
    ) -> Result<(), SessionError> {
        let Some(peer) = self.peer.clone() else {
            return Err(SessionError::Protocol(
                "relayed receipt before hello".into(),
            ));
        };
        if peer.cert.role() != Role::Relay || self.cfg.role != NodeRole::Device {
            return Err(SessionError::Protocol(
                "only a relay carries receipts down, and only to a device".into(),
            ));
        }
        let me = self.cfg.certificate.device();
        let known = |relay: &DeviceId| store.peer(relay).ok().flatten().map(|p| p.certificate);
        let r = verify_relayed_receipt(
            bytes,
            &self.cfg.authority,
            &peer.cert,
            me,
            self.my_epoch,
            now,
            known,
        )?;
        let head = store.log_head()?;
        if r.through > head {
            return Err(ReceiptError::Mismatch(format!(
                "relayed receipt through {} beyond this log's head {head}",
                r.through
            ))
            .into());
        }
        let upstream = r.upstream.device();
        if store.peer(&upstream)?.is_none() {
            store.record_peer(
                &upstream,
                &PeerRecord {
                    certificate: r.upstream.to_bytes(),
                    last_contact: r.at,
                    carried_by: Some(peer.cert.device()),
                },
            )?;
        }
        store.store_relayed_receipt(&StoredReceipt {
            relay: upstream,
            through: r.through,
            at: r.at,
            bytes: bytes.to_vec(),
        })?;
        self.events.push_back(Event::RelayedReceipt {
            upstream,
            through: r.through,
        });
        Ok(())
    }

    fn on_ack(&mut self, store: &Store, a: Ack, now: Timestamp) -> Result<(), SessionError> {
        let Some(peer) = self.peer.clone() else {
            return Err(SessionError::Protocol("ack before hello".into()));
        };
        // Besides acknowledgements of batches in flight, a relay may
        // acknowledge once, at the start, the position its Hello said it holds.
        let resumed = !self.resume_acked && a.through > 0 && a.through == self.peer_holds;
        if !self.in_flight.iter().any(|&(t, _)| t == a.through) && !resumed {
            return Err(SessionError::Protocol(format!(
                "ack for position {} that was not sent",
                a.through
            )));
        }
        if resumed {
            self.resume_acked = true;
        }
        // Whether the acknowledgement covers anything that needs a receipt.
        // Acknowledgements come in the order batches were sent, one per
        // batch or one for several: settle every batch before `through`
        // and ONE at it. Log batches have strictly increasing positions,
        // but repair batches all carry position 0, each with its own
        // acknowledgement.
        let mut vouches = resumed;
        while let Some(&(t, carried)) = self.in_flight.front()
            && t <= a.through
        {
            vouches |= carried;
            self.in_flight.pop_front();
            if t == a.through {
                break;
            }
        }
        if self.position_in_flight.is_some_and(|p| p <= a.through) {
            self.position_in_flight = None;
        }
        let has_receipt = a.receipt.is_some();
        match (&a.receipt, peer.cert.role()) {
            (Some(bytes), Role::Relay) => {
                let r = verify_receipt(bytes)?;
                let body = r.payload().value();
                if body.relay != *peer.cert.device().public_key()
                    || body.device != self.cfg.certificate.device()
                    || body.epoch != self.my_epoch
                    || body.through != a.through
                {
                    return Err(ReceiptError::Mismatch(format!(
                        "receipt for {} through {} from {}",
                        body.device.short(),
                        body.through,
                        DeviceId::from_public_key(body.relay).short()
                    ))
                    .into());
                }
                store.store_receipt(&StoredReceipt {
                    relay: peer.cert.device(),
                    through: a.through,
                    at: body.at,
                    bytes: bytes.clone(),
                })?;
            }
            (None, Role::Relay) if vouches => {
                return Err(SessionError::Protocol(
                    "a relay acknowledged changes without a signed receipt".into(),
                ));
            }
            _ => store.set_peer_ack(&peer.cert.device(), a.through)?,
        }
        self.events.push_back(Event::Acknowledged {
            through: a.through,
            receipt: has_receipt,
        });
        self.pump(store, now)
    }

    fn on_revocations(
        &mut self,
        store: &Store,
        bytes: &[u8],
        now: Timestamp,
    ) -> Result<(), SessionError> {
        let list = RevocationList::from_bytes(bytes, self.cfg.authority.hq())
            .map_err(|e| SessionError::Forgery(format!("revocation list: {e}")))?;
        let sequence = list.sequence();
        if self.cfg.authority.adopt(list.clone()) {
            // Stored together with the withdrawal of what this node holds
            // beyond a newly revoked device's revocation point.
            store.adopt_revocations(&list, now)?;
            self.events
                .push_back(Event::RevocationsUpdated { sequence });
            if let Some(peer) = &self.peer {
                self.cfg.authority.check_standing(&peer.cert, now)?;
            }
        }
        Ok(())
    }
}
