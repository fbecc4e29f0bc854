//! The audit trail and the quarantine: what happened on this node, and what it holds back.

use fieldsync_identity::Timestamp;
use redb::{ReadableTable, TableHandle};
use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::rows::decode;
use crate::store::Store;
use crate::tables::{AUDIT, QUARANTINE};

/// What an audit event records.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum AuditKind {
    /// The store and device identity were created.
    StoreCreated,
    /// A case was created on this device.
    CaseCreated,
    /// A bundle was exported.
    BundleExported,
    /// A bundle was imported.
    BundleImported,
    /// A bundle was refused.
    BundleRejected,
    /// Every stored signature was re-verified.
    Verified,
}

/// One audit event.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// When it happened.
    pub at: Timestamp,
    /// What happened.
    pub kind: AuditKind,
    /// Details, readable by a person.
    pub detail: String,
}

/// A validly signed change held back: never applied, never forwarded.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct QuarantineEntry {
    /// When it was quarantined.
    pub at: Timestamp,
    /// Why.
    pub reason: String,
    /// The signed change envelope, exactly as received.
    pub change: Vec<u8>,
}

impl Store {
    /// The audit trail, oldest first.
    pub fn audit_log(&self) -> Result<Vec<AuditEvent>, StoreError> {
        let txn = self.read()?;
        let table = txn
            .open_table(AUDIT)
            .map_err(|e| StoreError::db("read audit")(e.into()))?;
        let mut out = Vec::new();
        for row in table
            .iter()
            .map_err(|e| StoreError::db("read audit")(e.into()))?
        {
            let (k, v) = row.map_err(|e| StoreError::db("read audit")(e.into()))?;
            let plain = self
                .seal
                .open(AUDIT.name(), &k.value().to_be_bytes(), v.value())?;
            out.push(decode(&plain, "audit event")?);
        }
        Ok(out)
    }

    /// The quarantine, by id.
    pub fn quarantine(&self) -> Result<Vec<(u64, QuarantineEntry)>, StoreError> {
        let txn = self.read()?;
        let table = txn
            .open_table(QUARANTINE)
            .map_err(|e| StoreError::db("read quarantine")(e.into()))?;
        let mut out = Vec::new();
        for row in table
            .iter()
            .map_err(|e| StoreError::db("read quarantine")(e.into()))?
        {
            let (k, v) = row.map_err(|e| StoreError::db("read quarantine")(e.into()))?;
            let plain = self
                .seal
                .open(QUARANTINE.name(), &k.value().to_be_bytes(), v.value())?;
            out.push((k.value(), decode(&plain, "quarantine entry")?));
        }
        Ok(out)
    }
}
