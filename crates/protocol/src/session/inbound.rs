//! What arrives from the peer, prepared before the session sees it.
//!
//! Decoding a frame and checking a batch's signatures (its authors'
//! certificates against the headquarters key, its geneses, its changes in
//! one batch verification, its releases) needs no session state and no
//! store: a driver may do it on another thread, beside the thread that owns
//! the store, and hand the result to [`Session::handle_inbound`]. What
//! needs the session and the store (the order of the peer's log, geneses
//! already held, authorization, storing) is done there, exactly as
//! [`Session::handle_input`] does it, and with the same errors.

use std::collections::BTreeMap;

use fieldsync_case::{
    ChangeHash, Genesis, SignedChange, VerifiedChange, VerifiedGenesis, decode_change,
    verify_genesis,
};
use fieldsync_identity::{
    CaseId, DeviceCertificate, PublicKey, Timestamp, decode_signed, verify_batch,
};
use fieldsync_store::Store;

use super::{CarriedReleases, Session, State};
use crate::error::SessionError;
use crate::release::verify_release;
use crate::wire::{Batch, Message, WireError};

/// One frame from the peer, decoded, and for a batch checked as far as
/// that needs neither the session nor the store. Make it anywhere with
/// [`Inbound::decode`]; hand it to [`Session::handle_inbound`], in the
/// order the frames arrived.
#[derive(Debug)]
pub struct Inbound(Result<Prepared, SessionError>);

#[derive(Debug)]
enum Prepared {
    /// A message that needs no preparing.
    Message(Message),
    /// A batch, its signatures checked.
    Batch(Box<PreparedBatch>),
}

impl Inbound {
    /// Decodes a frame (its bytes without the length prefix) and, when it
    /// is a batch, checks its certificates (issued by `hq`), geneses,
    /// change signatures and releases. The costly part of receiving a
    /// batch; a failure is kept and reported by
    /// [`Session::handle_inbound`], which then closes the session.
    pub fn decode(frame: &[u8], hq: &PublicKey) -> Self {
        match Message::decode(frame) {
            Ok(Message::Batch(b)) => {
                Inbound(Ok(Prepared::Batch(Box::new(PreparedBatch::new(b, hq)))))
            }
            Ok(m) => Inbound(Ok(Prepared::Message(m))),
            Err(e) => Inbound(Err(e.into())),
        }
    }
}

impl From<WireError> for Inbound {
    /// The byte stream itself was bad (a frame too large, an empty frame):
    /// the session is closed with this error when it gets it.
    fn from(e: WireError) -> Self {
        Inbound(Err(e.into()))
    }
}

/// A batch whose signatures were checked; each step's failure is kept
/// and reported in the order [`Session::handle_input`] meets them.
#[derive(Debug)]
pub(super) struct PreparedBatch {
    through: u64,
    /// Whether it carries nothing but a position.
    empty: bool,
    /// Authors' certificates, issued by headquarters (validity and
    /// revocation are judged per change).
    certificates: Result<Vec<DeviceCertificate>, SessionError>,
    /// The geneses it carries, verified.
    geneses: Result<BTreeMap<CaseId, VerifiedGenesis>, SessionError>,
    /// The case of each change, in order, as far as the changes decoded.
    cases: Vec<CaseId>,
    /// The first change that did not decode.
    undecodable: Option<SessionError>,
    /// The changes, their signatures verified (when all decoded).
    changes: Result<Vec<VerifiedChange>, SessionError>,
    /// The releases it carries, verified, by the change they release.
    releases: Result<CarriedReleases, SessionError>,
}

impl PreparedBatch {
    pub(super) fn new(b: Batch, hq: &PublicKey) -> Self {
        let empty = b.is_empty();
        let certificates = b
            .certificates
            .iter()
            .map(|bytes| {
                DeviceCertificate::from_bytes(bytes, hq)
                    .map_err(|e| SessionError::Forgery(format!("author certificate: {e}")))
            })
            .collect();
        let geneses = b
            .geneses
            .iter()
            .map(|bytes| {
                let signed = decode_signed::<Genesis>(bytes)
                    .map_err(|e| SessionError::Forgery(format!("case genesis: {e}")))?;
                let g = verify_genesis(signed)
                    .map_err(|e| SessionError::Forgery(format!("case genesis: {e}")))?;
                Ok((g.payload().value().case, g))
            })
            .collect();
        let mut cases = Vec::with_capacity(b.changes.len());
        let mut signed: Vec<SignedChange> = Vec::with_capacity(b.changes.len());
        let mut undecodable = None;
        for (i, env) in b.changes.iter().enumerate() {
            match decode_change(env) {
                Ok(c) => {
                    cases.push(c.payload().case());
                    signed.push(c);
                }
                Err(e) => {
                    undecodable = Some(match e {
                        fieldsync_case::ChangeError::TooLarge { .. } => {
                            SessionError::Limit(format!("change {i} of the batch: {e}"))
                        }
                        e => SessionError::Forgery(format!("change {i} of the batch: {e}")),
                    });
                    break;
                }
            }
        }
        let changes = if undecodable.is_some() {
            Ok(Vec::new())
        } else {
            verify_batch(signed).map_err(|e| {
                SessionError::Forgery(format!("change {} of the batch: {}", e.index, e.error))
            })
        };
        let releases = b
            .releases
            .into_iter()
            .map(|bytes| {
                let release = verify_release(&bytes)?;
                let body = release.payload().value().clone();
                Ok(((body.case, ChangeHash(body.change)), (body, bytes)))
            })
            .collect();
        Self {
            through: b.through,
            empty,
            certificates,
            geneses,
            cases,
            undecodable,
            changes,
            releases,
        }
    }

    pub(super) fn through(&self) -> u64 {
        self.through
    }

    pub(super) fn is_empty(&self) -> bool {
        self.empty
    }
}

/// A prepared batch, checked against the session and the store: what
/// [`Session::on_prepared_batch`] authorizes and stores.
pub(super) struct CheckedBatch {
    /// Devices whose certificates the batch carried.
    pub(super) carried: Vec<fieldsync_identity::DeviceId>,
    /// The genesis of every case with a change in the batch.
    pub(super) geneses: BTreeMap<CaseId, VerifiedGenesis>,
    pub(super) changes: Vec<VerifiedChange>,
    pub(super) releases: CarriedReleases,
}

impl Session {
    /// Handles one frame prepared by [`Inbound::decode`] (frames in the
    /// order they arrived). The same as [`Session::handle_input`] with
    /// that frame's bytes: on error the session is closed (a `Close` frame
    /// is queued for the peer) and the error returned.
    pub fn handle_inbound(
        &mut self,
        store: &Store,
        inbound: Inbound,
        now: Timestamp,
    ) -> Result<(), SessionError> {
        if self.state == State::Closed {
            return Err(SessionError::Closed);
        }
        let result = match inbound.0 {
            Err(e) => Err(e),
            Ok(Prepared::Message(m)) => self.handle_message(store, m, now),
            Ok(Prepared::Batch(b)) if self.state == State::Open => self
                .note_contact(store, now)
                .and_then(|()| self.on_prepared_batch(store, *b, now)),
            Ok(Prepared::Batch(_)) => Err(SessionError::Protocol(format!(
                "unexpected batch while {:?}",
                self.state
            ))),
        };
        result.map_err(|e| self.fail(e))
    }

    /// The checks of a prepared batch that need the session and the store,
    /// in the order [`Session::handle_input`] makes them all: the batch
    /// follows the peer's log; its authors' certificates are kept; the
    /// genesis of each case it does not carry is one this node holds.
    pub(super) fn check_batch(
        &mut self,
        store: &Store,
        b: PreparedBatch,
    ) -> Result<CheckedBatch, SessionError> {
        let Some(peer) = self.peer.as_ref() else {
            return Err(SessionError::Protocol("batch before hello".into()));
        };
        if b.through < peer.last_through {
            return Err(SessionError::Protocol(format!(
                "batch goes back in the peer's log ({} after {})",
                b.through, peer.last_through
            )));
        }
        let mut carried = Vec::new();
        for cert in b.certificates? {
            carried.push(cert.device());
            self.certs.insert(cert.device(), cert);
        }
        let mut geneses = b.geneses?;
        for (i, case) in b.cases.iter().enumerate() {
            if let std::collections::btree_map::Entry::Vacant(slot) = geneses.entry(*case) {
                // A case we already hold travels without its genesis.
                let bytes = store.case_genesis(case)?.ok_or_else(|| {
                    SessionError::Protocol(format!(
                        "change {i} of the batch is for case {} but its genesis was not sent",
                        case.short()
                    ))
                })?;
                let g = decode_signed::<Genesis>(&bytes)
                    .map_err(|e| SessionError::Protocol(format!("stored genesis: {e}")))
                    .and_then(|s| {
                        verify_genesis(s)
                            .map_err(|e| SessionError::Protocol(format!("stored genesis: {e}")))
                    })?;
                slot.insert(g);
            }
        }
        if let Some(e) = b.undecodable {
            return Err(e);
        }
        Ok(CheckedBatch {
            carried,
            geneses,
            changes: b.changes?,
            releases: b.releases?,
        })
    }
}
