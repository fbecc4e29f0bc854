//! One simulated node: its real store on a crashable backend, its
//! certificate, and what the simulator remembers about it (the changes it
//! authored and had acknowledged by its own store).

use fieldsync_case::{ChangeHash, decode_change};
use fieldsync_identity::{
    CaseId, Compartment, DeviceCertificate, DeviceId, PublicKey, RevocationList, Role,
};
use fieldsync_protocol::{Authority, DEFAULT_MAX_IN_FLIGHT, NodeRole, SessionConfig};
use fieldsync_store::{Store, StoreError};

use crate::crash_backend::{CrashBackend, CrashKind};
use crate::net::{Millis, NodeIx};
use crate::rng::SimRng;

/// What a node is in the topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NodeKind {
    /// The headquarters relay.
    Hq,
    /// An office relay with an upstream to headquarters.
    Office,
    /// A field device (field or liaison role).
    Device,
}

/// A change a device authored, reported durable by its store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Authored {
    /// Its case.
    pub(crate) case: CaseId,
    /// Its hash.
    pub(crate) hash: ChangeHash,
    /// Its signing counter (its position in the author's log).
    pub(crate) counter: u64,
    /// When it was made.
    pub(crate) at: Millis,
}

/// One node of the world.
#[derive(Debug)]
pub(crate) struct Node {
    /// Its name.
    pub(crate) name: String,
    /// Its place in the topology.
    pub(crate) kind: NodeKind,
    /// Its certificate.
    pub(crate) cert: DeviceCertificate,
    /// Its store (`None` only after it failed to reopen: the node is dead).
    pub(crate) store: Option<Store>,
    /// The backend under the store (replaced at each crash).
    pub(crate) backend: CrashBackend,
    /// The relay it dials, if any.
    pub(crate) upstream: Option<NodeIx>,
    /// Whether its link is up (not partitioned).
    pub(crate) link_up: bool,
    /// A relay that crashed refuses connections until then.
    pub(crate) down_until: Millis,
    /// Whether a dial is scheduled.
    pub(crate) dial_scheduled: bool,
    /// Changes it authored that its store acknowledged.
    pub(crate) authored: Vec<Authored>,
}

impl Node {
    /// Its device id.
    pub(crate) fn id(&self) -> DeviceId {
        self.cert.device()
    }

    /// Its certified role.
    pub(crate) fn role(&self) -> Role {
        self.cert.role()
    }

    /// Whether it is a relay (headquarters or office).
    pub(crate) fn is_relay(&self) -> bool {
        self.kind != NodeKind::Device
    }

    /// Whether its certificate lets it read `compartment`.
    pub(crate) fn can_read(&self, compartment: &str) -> bool {
        Compartment::new(compartment).is_ok_and(|c| self.cert.can_read(&c))
    }

    /// Whether its certificate lets it write `compartment`.
    pub(crate) fn can_write(&self, compartment: &str) -> bool {
        Compartment::new(compartment).is_ok_and(|c| self.cert.can_write(&c))
    }

    /// The session configuration a driver builds for a new session: the
    /// certificate, and the revocation list as the node's store holds it.
    pub(crate) fn session_config(&self, hq: PublicKey) -> Result<SessionConfig, String> {
        let store = self.store.as_ref().ok_or("the node is dead")?;
        let list = match store.revocations() {
            Ok(Some(bytes)) => Some(
                RevocationList::from_bytes(&bytes, &hq)
                    .map_err(|e| format!("stored revocation list: {e}"))?,
            ),
            Ok(None) => None,
            Err(e) => return Err(format!("reading the revocation list: {e}")),
        };
        Ok(SessionConfig {
            role: if self.is_relay() {
                NodeRole::Relay
            } else {
                NodeRole::Device
            },
            certificate: self.cert.clone(),
            authority: Authority::new(hq, list),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            deferred_commits: false,
        })
    }

    /// Its log head (0 when it cannot be read).
    pub(crate) fn head(&self) -> u64 {
        self.store
            .as_ref()
            .and_then(|s| s.log_head().ok())
            .unwrap_or(0)
    }

    /// Power is lost: the store is dropped and reopened on what survived.
    pub(crate) fn crash(&mut self, kind: CrashKind, rng: &mut SimRng) -> Result<(), StoreError> {
        self.backend.cut_power();
        self.store = None;
        let survived = self.backend.crash(kind, rng);
        self.backend = survived.clone();
        self.store = Some(Store::open_with_backend(survived)?);
        Ok(())
    }
}

/// The last entry of a store's log: its case, change hash and position.
pub(crate) fn last_change(store: &Store) -> Result<Option<(CaseId, ChangeHash, u64)>, String> {
    let head = store.log_head().map_err(|e| e.to_string())?;
    if head == 0 {
        return Ok(None);
    }
    let batch = store
        .read_log(head - 1, 1, usize::MAX, |_| true)
        .map_err(|e| e.to_string())?;
    let Some(entry) = batch.entries.into_iter().next() else {
        return Ok(None);
    };
    let change = decode_change(&entry.envelope).map_err(|e| e.to_string())?;
    Ok(Some((entry.case, change.payload().hash(), entry.seq)))
}

/// Every entry of a store's log: position, case, change hash.
pub(crate) fn whole_log(store: &Store) -> Result<Vec<(u64, CaseId, ChangeHash)>, String> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let batch = store
            .read_log(after, 4096, usize::MAX, |_| true)
            .map_err(|e| e.to_string())?;
        for entry in &batch.entries {
            let change = decode_change(&entry.envelope).map_err(|e| e.to_string())?;
            out.push((entry.seq, entry.case, change.payload().hash()));
        }
        if batch.at_end || batch.next == after {
            return Ok(out);
        }
        after = batch.next;
    }
}
