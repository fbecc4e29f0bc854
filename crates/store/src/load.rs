//! Loading a case's document, checked against its case row.
//!
//! A document loads from the case's snapshot plus the changes stored after
//! it. A snapshot is a copy, never the evidence: the signed changes in the
//! log are. So a snapshot that cannot be opened, decoded or loaded, or that
//! loads to other heads than the case row records (written by a faulty
//! build, swapped, or damaged where no checksum noticed), is set aside and
//! the document is rebuilt from every change of the case in the log. If the
//! log itself does not give the recorded heads, the load fails with
//! [`StoreError::Corrupt`]: a case is never shown silently wrong.

use fieldsync_case::{CaseDoc, ChangeHash};
use fieldsync_identity::CaseId;
use redb::{ReadableTable, TableHandle};

use crate::cases::case_seqs;
use crate::error::StoreError;
use crate::rows::{CaseRow, Snapshot, decode};
use crate::store::Store;
use crate::tables::SNAPSHOTS;

/// How a document was loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Loaded {
    /// From the cache, or from the snapshot and the changes after it.
    AsStored,
    /// The snapshot was unusable: rebuilt from the log (the caller should
    /// write a new snapshot when it writes the case).
    Rebuilt,
}

impl Store {
    /// Loads a case's document (see the module docs), saying whether its
    /// snapshot had to be set aside.
    pub(crate) fn load_doc_checked(
        &self,
        case: &CaseId,
        row: &CaseRow,
        snapshots: &impl ReadableTable<&'static [u8], &'static [u8]>,
        changes: &impl ReadableTable<(&'static [u8], &'static [u8]), u64>,
        log: &impl ReadableTable<u64, &'static [u8]>,
    ) -> Result<(CaseDoc, Loaded), StoreError> {
        if let Some(doc) = self.take_cached(case, row.change_count) {
            return Ok((doc, Loaded::AsStored));
        }
        let key = self.seal.case_key(case);
        if row.snapshot_seq > 0 {
            let from_snapshot = self
                .snapshot_doc(&key, snapshots)
                .and_then(|doc| self.apply_log(doc, &key, row.snapshot_seq, changes, log))
                .and_then(|mut doc| {
                    let heads = doc.heads()?;
                    if same_heads(&heads, &row.heads) {
                        Ok(doc)
                    } else {
                        Err(StoreError::corrupt(format!(
                            "its snapshot gives {} heads that the case row does not record",
                            heads.len()
                        )))
                    }
                });
            match from_snapshot {
                Ok(doc) => return Ok((doc, Loaded::AsStored)),
                Err(e) => {
                    tracing::warn!(
                        case = %case.short(),
                        error = %e,
                        "case snapshot unusable; rebuilding the case from its signed changes"
                    );
                }
            }
        }
        let rebuilt = row.snapshot_seq > 0;
        let mut doc = self.apply_log(CaseDoc::new(self.actor()), &key, 0, changes, log)?;
        let heads = doc.heads()?;
        if !same_heads(&heads, &row.heads) {
            return Err(StoreError::corrupt(format!(
                "case {case}: its {} changes in the log give other heads than its case row records",
                row.change_count
            )));
        }
        let how = if rebuilt {
            Loaded::Rebuilt
        } else {
            Loaded::AsStored
        };
        Ok((doc, how))
    }

    /// The document in a case's snapshot.
    fn snapshot_doc(
        &self,
        key: &[u8; 16],
        snapshots: &impl ReadableTable<&'static [u8], &'static [u8]>,
    ) -> Result<CaseDoc, StoreError> {
        let sealed = snapshots
            .get(key.as_slice())
            .map_err(|e| StoreError::db("read snapshot")(e.into()))?
            .ok_or_else(|| StoreError::corrupt("the case row names a snapshot that is missing"))?;
        let plain = self.seal.open(SNAPSHOTS.name(), key, sealed.value())?;
        let snap: Snapshot = decode(&plain, "snapshot")?;
        Ok(CaseDoc::load(&snap.doc, self.actor())?)
    }

    /// Applies, in one Automerge call, the case's changes stored after log
    /// position `after`.
    fn apply_log(
        &self,
        mut doc: CaseDoc,
        key: &[u8; 16],
        after: u64,
        changes: &impl ReadableTable<(&'static [u8], &'static [u8]), u64>,
        log: &impl ReadableTable<u64, &'static [u8]>,
    ) -> Result<CaseDoc, StoreError> {
        let tail = case_seqs(changes, key, after)?;
        let mut batch = Vec::with_capacity(tail.len());
        for seq in tail {
            let signed = self.read_log_change(log, seq)?;
            batch.push(signed.payload().change().clone());
        }
        if !batch.is_empty() {
            doc.apply(batch)?;
        }
        Ok(doc)
    }
}

/// Whether a document's (sorted) heads are the heads a case row records.
fn same_heads(doc: &[ChangeHash], row: &[[u8; 32]]) -> bool {
    let mut row: Vec<[u8; 32]> = row.to_vec();
    row.sort_unstable();
    doc.len() == row.len() && doc.iter().zip(&row).all(|(a, b)| a.0 == *b)
}
