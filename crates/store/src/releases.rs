//! Quarantine releases: the signed permission under which a change that
//! failed authorization was stored anyway. The store keeps each release
//! beside its change, to send with it; checking who may release is the
//! protocol's business (the caller verified it).

use std::collections::BTreeSet;

use fieldsync_case::{ChangeHash, decode_change};
use fieldsync_identity::CaseId;
use redb::{ReadableTable, TableHandle, WriteTransaction};

use crate::audit::QuarantineEntry;
use crate::error::StoreError;
use crate::rows::decode;
use crate::store::Store;
use crate::tables::{QUARANTINE, RELEASES};

fn dbe<E: Into<redb::Error>>(op: &'static str) -> impl Fn(E) -> StoreError {
    move |e| StoreError::db(op)(e.into())
}

/// The key bytes a `releases-1` value is sealed under.
fn seal_key(key: &[u8; 16], hash: &ChangeHash) -> [u8; 48] {
    let mut k = [0u8; 48];
    k[..16].copy_from_slice(key);
    k[16..].copy_from_slice(&hash.0);
    k
}

impl Store {
    /// The signed release under which the change `hash` of `case` was
    /// stored, if it was released from a quarantine (here or elsewhere).
    pub fn release_for(
        &self,
        case: &CaseId,
        hash: &ChangeHash,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let key = self.seal.case_key(case);
        let txn = self.read()?;
        let table = txn.open_table(RELEASES).map_err(dbe("read releases"))?;
        let Some(sealed) = table
            .get((key.as_slice(), hash.0.as_slice()))
            .map_err(dbe("read releases"))?
        else {
            return Ok(None);
        };
        Ok(Some(self.seal.open(
            RELEASES.name(),
            &seal_key(&key, hash),
            sealed.value(),
        )?))
    }

    /// Whether this store holds any release (most never do, and then no
    /// change needs a lookup before it is sent).
    pub fn has_releases(&self) -> Result<bool, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(RELEASES).map_err(dbe("read releases"))?;
        Ok(table.first().map_err(dbe("read releases"))?.is_some())
    }

    /// Stores `releases` inside `txn` and removes the quarantine entries of
    /// the changes they release; returns how many entries left the quarantine.
    pub(crate) fn releases_in(
        &self,
        txn: &WriteTransaction,
        releases: Vec<(CaseId, ChangeHash, Vec<u8>)>,
    ) -> Result<usize, StoreError> {
        if releases.is_empty() {
            return Ok(0);
        }
        let mut released = BTreeSet::new();
        {
            let mut table = txn.open_table(RELEASES).map_err(dbe("store a release"))?;
            for (case, hash, bytes) in releases {
                let key = self.seal.case_key(&case);
                let sealed = self
                    .seal
                    .seal(RELEASES.name(), &seal_key(&key, &hash), &bytes);
                table
                    .insert((key.as_slice(), hash.0.as_slice()), sealed.as_slice())
                    .map_err(dbe("store a release"))?;
                released.insert((case, hash));
            }
        }
        let mut quarantine = txn
            .open_table(QUARANTINE)
            .map_err(dbe("release quarantine"))?;
        let mut gone = Vec::new();
        for row in quarantine.iter().map_err(dbe("release quarantine"))? {
            let (id, sealed) = row.map_err(dbe("release quarantine"))?;
            let id = id.value();
            let plain = self
                .seal
                .open(QUARANTINE.name(), &id.to_be_bytes(), sealed.value())?;
            let entry: QuarantineEntry = decode(&plain, "quarantine entry")?;
            // An entry that no longer decodes as a change was never stored
            // as one; it stays for a person to look at.
            if let Ok(change) = decode_change(&entry.change)
                && released.contains(&(entry.case, change.payload().hash()))
            {
                gone.push(id);
            }
        }
        for id in &gone {
            quarantine.remove(*id).map_err(dbe("release quarantine"))?;
        }
        Ok(gone.len())
    }
}
