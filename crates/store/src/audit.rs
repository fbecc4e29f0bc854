//! The audit trail and the quarantine: what happened on this node, and what it holds back.

use fieldsync_identity::{CaseId, DeviceId, Timestamp};
use redb::{ReadableTable, TableHandle, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::rows::{decode, encode};
use crate::store::{Store, read_meta_u64, write_meta};
use crate::tables::{AUDIT, META, QUARANTINE};

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
    /// A newly adopted revocation list withdrew changes from the log to the
    /// quarantine ([`Store::adopt_revocations`](crate::Store::adopt_revocations)).
    Withdrawn,
    /// Headquarters issued a wipe order ([`Store::issue_wipe_order`](crate::Store::issue_wipe_order)).
    WipeIssued,
    /// A relay took a wipe order from another relay, to carry it on.
    WipeHeld,
    /// A relay delivered a wipe order to its device.
    WipeDelivered,
    /// This device accepted a wipe order and destroys its keys.
    WipeOrdered,
    /// A wipe order was ignored (forged, expired, replayed, for another
    /// device); the detail says why.
    WipeIgnored,
    /// A device signed two different changes as the same change of a case;
    /// both are held ([`Store::equivocations`](crate::Store::equivocations)).
    Equivocation,
    /// This store was rebuilt from a damaged file ([`Store::repair`](crate::Store::repair)).
    Repaired,
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

/// A validly signed change held back: never applied, never forwarded,
/// unless a supervisor releases it: a signed release stored with the change
/// ([`Ingest::releases`](crate::Ingest::releases)) takes it out of the quarantine.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct QuarantineEntry {
    /// When it was quarantined.
    pub at: Timestamp,
    /// Why.
    pub reason: String,
    /// The case it belongs to.
    pub case: CaseId,
    /// The device that signed it.
    pub signer: DeviceId,
    /// The signed genesis bytes of its case (so that it can be ingested on release).
    pub genesis: Vec<u8>,
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

    /// Quarantine entry `id`. Fails with [`StoreError::UnknownQuarantine`]
    /// when there is none (released already, or never there).
    pub fn quarantine_entry(&self, id: u64) -> Result<QuarantineEntry, StoreError> {
        let txn = self.read()?;
        let table = txn
            .open_table(QUARANTINE)
            .map_err(|e| StoreError::db("read quarantine")(e.into()))?;
        let sealed = table
            .get(id)
            .map_err(|e| StoreError::db("read quarantine")(e.into()))?
            .ok_or(StoreError::UnknownQuarantine { id })?;
        let plain = self
            .seal
            .open(QUARANTINE.name(), &id.to_be_bytes(), sealed.value())?;
        decode(&plain, "quarantine entry")
    }

    /// Appends entries to the quarantine inside `txn`; returns how many.
    /// A change already held (the same envelope, sent again after a lost
    /// acknowledgement) is not added twice. Ids are never reused, even
    /// after a release.
    pub(crate) fn quarantine_in(
        &self,
        txn: &WriteTransaction,
        entries: Vec<QuarantineEntry>,
    ) -> Result<usize, StoreError> {
        if entries.is_empty() {
            return Ok(0);
        }
        let e = |e: redb::TableError| StoreError::db("quarantine")(e.into());
        let mut table = txn.open_table(QUARANTINE).map_err(e)?;
        let mut meta = txn.open_table(META).map_err(e)?;
        let mut held = std::collections::BTreeSet::new();
        for row in table
            .iter()
            .map_err(|e| StoreError::db("quarantine")(e.into()))?
        {
            let (k, v) = row.map_err(|e| StoreError::db("quarantine")(e.into()))?;
            let plain = self
                .seal
                .open(QUARANTINE.name(), &k.value().to_be_bytes(), v.value())?;
            let entry: QuarantineEntry = decode(&plain, "quarantine entry")?;
            held.insert(entry.change);
        }
        let mut last = read_meta_u64(&meta, self.seal.as_ref(), "quarantine-last")?;
        let mut n = 0;
        for entry in entries {
            if held.contains(&entry.change) {
                continue;
            }
            held.insert(entry.change.clone());
            last += 1;
            n += 1;
            let sealed = self
                .seal
                .seal(QUARANTINE.name(), &last.to_be_bytes(), &encode(&entry)?);
            table
                .insert(last, sealed.as_slice())
                .map_err(|e| StoreError::db("quarantine")(e.into()))?;
        }
        write_meta(
            &mut meta,
            self.seal.as_ref(),
            "quarantine-last",
            &last.to_le_bytes(),
        )?;
        Ok(n)
    }
}
