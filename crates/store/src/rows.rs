//! Row types stored (postcard-encoded, then sealed) in the tables.

use fieldsync_identity::Timestamp;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::StoreError;

/// `meta-1/device`: this device's identity.
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub(crate) struct DeviceRecord {
    /// The ed25519 secret seed.
    pub(crate) seed: [u8; 32],
    /// The device name given at `init`.
    pub(crate) name: String,
    /// Bumped on restore from a backup.
    pub(crate) incarnation: u32,
    /// When the store was created (ms since epoch).
    pub(crate) created_at: i64,
}

/// `cases-1` value.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct CaseRow {
    /// The signed genesis envelope, exactly as received or created.
    pub(crate) genesis: Vec<u8>,
    /// Title for listings.
    pub(crate) title: String,
    /// Status name for listings.
    pub(crate) status: String,
    /// Priority name for listings.
    pub(crate) priority: String,
    /// The case's current heads (change hashes), sorted.
    pub(crate) heads: Vec<[u8; 32]>,
    /// Number of changes stored for this case.
    pub(crate) change_count: u64,
    /// Log position of the case's first change on this node.
    pub(crate) first_seq: u64,
    /// Log position of the case's latest change.
    pub(crate) last_seq: u64,
    /// The snapshot holds every change of the case at log positions up to
    /// this one (0: no snapshot).
    pub(crate) snapshot_seq: u64,
    /// Changes stored since the snapshot.
    pub(crate) since_snapshot: u64,
    /// When this node last stored a change of the case.
    pub(crate) updated_at: Timestamp,
}

impl CaseRow {
    /// A row for a case with no changes yet.
    pub(crate) fn new(genesis: Vec<u8>, now: Timestamp) -> Self {
        Self {
            genesis,
            title: String::new(),
            status: String::new(),
            priority: String::new(),
            heads: Vec::new(),
            change_count: 0,
            first_seq: 0,
            last_seq: 0,
            snapshot_seq: 0,
            since_snapshot: 0,
            updated_at: now,
        }
    }
}

/// `pending-1` value: a verified change waiting for its dependencies.
#[derive(Serialize, Deserialize)]
pub(crate) struct PendingRow {
    /// The signed genesis envelope of the change's case (the case may not be stored yet).
    pub(crate) genesis: Vec<u8>,
    /// The hashes the change depends on (so readiness is known without parsing the change).
    pub(crate) deps: Vec<[u8; 32]>,
    /// The signed change envelope, exactly as received.
    pub(crate) change: Vec<u8>,
}

/// `snapshots-1` value.
#[derive(Serialize, Deserialize)]
pub(crate) struct Snapshot {
    /// `CaseDoc::save()` bytes, covering the changes up to the row's `snapshot_seq`.
    pub(crate) doc: Vec<u8>,
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_stdvec(value).map_err(|e| StoreError::corrupt(format!("encoding a row: {e}")))
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::corrupt(format!("{what}: {e}")))
}
