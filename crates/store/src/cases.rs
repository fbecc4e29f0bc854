//! Cases: creating them, local edits, and reading them back.

use fieldsync_case::{
    CaseDoc, CaseKind, CaseRecord, ChangeHash, Conflict, Genesis, HistoryEntry, VerifiedChange,
    decode_change, encode_change, new_genesis, payload_for_local,
};
use fieldsync_identity::{
    ActorBinding, CaseId, Encoded, Timestamp, decode_signed, encode_signed, sign,
};
use redb::{ReadableTable, ReadableTableMetadata, Table, TableHandle, WriteTransaction};
use serde::Serialize;

use crate::audit::{AuditEvent, AuditKind};
use crate::error::StoreError;
use crate::rows::{CaseRow, Snapshot, decode, encode};
use crate::store::Store;
use crate::tables::{CASE_LOG, CASES, CHANGES, HEADS, LOG, OUTBOX, SNAPSHOTS};

/// A new snapshot is written once this many changes have accumulated after the last one.
pub const SNAPSHOT_EVERY: u64 = 128;

/// What `create_case` needs.
#[derive(Debug, Clone)]
pub struct NewCase<'a> {
    /// The new case id (128 random bits from the caller).
    pub id: CaseId,
    /// The kind of case.
    pub kind: CaseKind,
    /// The office that owns it.
    pub office: &'a str,
    /// The compartment it belongs to.
    pub compartment: &'a str,
    /// Its first title.
    pub title: &'a str,
}

/// One line of `case list`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CaseListing {
    /// The case id.
    pub id: CaseId,
    /// Its kind.
    pub kind: CaseKind,
    /// Owning office.
    pub office: String,
    /// Compartment.
    pub compartment: String,
    /// Current title.
    pub title: String,
    /// Current status.
    pub status: String,
    /// Current priority.
    pub priority: String,
    /// Number of signed changes stored.
    pub changes: u64,
    /// When this node last stored a change of it.
    pub updated_at: Timestamp,
}

/// The tables a change write touches, opened once per transaction.
pub(crate) struct WriteTables<'t> {
    pub(crate) cases: Table<'t, &'static [u8], &'static [u8]>,
    pub(crate) log: Table<'t, u64, &'static [u8]>,
    pub(crate) changes: Table<'t, (&'static [u8], &'static [u8]), u64>,
    pub(crate) case_log: Table<'t, (&'static [u8], u64), u64>,
    pub(crate) heads: Table<'t, &'static [u8], &'static [u8]>,
    pub(crate) snapshots: Table<'t, &'static [u8], &'static [u8]>,
    pub(crate) outbox: Table<'t, u64, ()>,
}

impl<'t> WriteTables<'t> {
    pub(crate) fn open(txn: &'t WriteTransaction) -> Result<Self, StoreError> {
        let e = |e: redb::TableError| StoreError::db("open tables")(e.into());
        Ok(Self {
            cases: txn.open_table(CASES).map_err(e)?,
            log: txn.open_table(LOG).map_err(e)?,
            changes: txn.open_table(CHANGES).map_err(e)?,
            case_log: txn.open_table(CASE_LOG).map_err(e)?,
            heads: txn.open_table(HEADS).map_err(e)?,
            snapshots: txn.open_table(SNAPSHOTS).map_err(e)?,
            outbox: txn.open_table(OUTBOX).map_err(e)?,
        })
    }
}

fn dbe(op: &'static str) -> impl Fn(redb::StorageError) -> StoreError {
    move |e| StoreError::db(op)(e.into())
}

impl Store {
    pub(crate) fn actor(&self) -> ActorBinding {
        self.device.id().actor(self.device.incarnation())
    }

    pub(crate) fn read_row(
        &self,
        cases: &impl ReadableTable<&'static [u8], &'static [u8]>,
        key: &[u8; 16],
    ) -> Result<Option<CaseRow>, StoreError> {
        match cases.get(key.as_slice()).map_err(dbe("read case"))? {
            Some(v) => {
                let plain = self.seal.open(CASES.name(), key, v.value())?;
                Ok(Some(decode(&plain, "case row")?))
            }
            None => Ok(None),
        }
    }

    /// Loads a case's document: its snapshot plus every change stored after
    /// it, applied in one Automerge call.
    pub(crate) fn load_doc(
        &self,
        case: &CaseId,
        row: &CaseRow,
        snapshots: &impl ReadableTable<&'static [u8], &'static [u8]>,
        case_log: &impl ReadableTable<(&'static [u8], u64), u64>,
        log: &impl ReadableTable<u64, &'static [u8]>,
    ) -> Result<CaseDoc, StoreError> {
        if let Some(doc) = self.take_cached(case, row.change_count) {
            return Ok(doc);
        }
        let key = self.seal.case_key(case);
        let (mut doc, upto) = match snapshots
            .get(key.as_slice())
            .map_err(dbe("read snapshot"))?
        {
            Some(v) => {
                let plain = self.seal.open(SNAPSHOTS.name(), &key, v.value())?;
                let snap: Snapshot = decode(&plain, "snapshot")?;
                (CaseDoc::load(&snap.doc, self.actor())?, snap.upto)
            }
            None => (CaseDoc::new(self.actor()), 0),
        };
        let mut changes = Vec::new();
        let range = case_log
            .range((key.as_slice(), upto)..(key.as_slice(), u64::MAX))
            .map_err(dbe("read case log"))?;
        for entry in range {
            let (_, seq) = entry.map_err(dbe("read case log"))?;
            let seq = seq.value();
            let env = log
                .get(seq)
                .map_err(dbe("read log"))?
                .ok_or_else(|| StoreError::corrupt(format!("log entry {seq} is missing")))?;
            let plain = self
                .seal
                .open(LOG.name(), &seq.to_be_bytes(), env.value())?;
            let signed = decode_change(&plain)
                .map_err(|e| StoreError::corrupt(format!("log entry {seq}: {e}")))?;
            changes.push(signed.payload().change().clone());
        }
        if !changes.is_empty() {
            doc.apply(changes)?;
        }
        Ok(doc)
    }

    /// Stores one verified change: log, index, per-case log, outbox. The
    /// caller has already applied it to `doc` (or made it there).
    pub(crate) fn append_change(
        &self,
        t: &mut WriteTables<'_>,
        key: &[u8; 16],
        change: &VerifiedChange,
        row: &mut CaseRow,
    ) -> Result<u64, StoreError> {
        let seq = t
            .log
            .last()
            .map_err(dbe("append"))?
            .map(|(k, _)| k.value() + 1)
            .unwrap_or(1);
        let env = encode_change(change.as_signed());
        t.log
            .insert(
                seq,
                self.seal
                    .seal(LOG.name(), &seq.to_be_bytes(), &env)
                    .as_slice(),
            )
            .map_err(dbe("append"))?;
        let hash = change.payload().hash();
        t.changes
            .insert((key.as_slice(), hash.0.as_slice()), seq)
            .map_err(dbe("append"))?;
        t.case_log
            .insert((key.as_slice(), row.change_count), seq)
            .map_err(dbe("append"))?;
        t.outbox.insert(seq, ()).map_err(dbe("append"))?;
        row.change_count += 1;
        Ok(seq)
    }

    /// Writes a case's row, heads and (when due) snapshot after changes were stored.
    pub(crate) fn finish_case(
        &self,
        t: &mut WriteTables<'_>,
        key: &[u8; 16],
        row: &mut CaseRow,
        doc: &mut CaseDoc,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let summary = doc.summary()?;
        row.title = summary.title;
        row.status = summary.status.to_string();
        row.priority = summary.priority.to_string();
        row.updated_at = now;
        let heads: Vec<u8> = doc.heads()?.iter().flat_map(|h| h.0).collect();
        t.heads
            .insert(
                key.as_slice(),
                self.seal.seal(HEADS.name(), key, &heads).as_slice(),
            )
            .map_err(dbe("write heads"))?;
        let upto = match t
            .snapshots
            .get(key.as_slice())
            .map_err(dbe("read snapshot"))?
        {
            Some(v) => {
                let plain = self.seal.open(SNAPSHOTS.name(), key, v.value())?;
                decode::<Snapshot>(&plain, "snapshot")?.upto
            }
            None => 0,
        };
        if row.change_count - upto >= SNAPSHOT_EVERY {
            let snap = Snapshot {
                upto: row.change_count,
                doc: doc.save()?,
            };
            t.snapshots
                .insert(
                    key.as_slice(),
                    self.seal
                        .seal(SNAPSHOTS.name(), key, &encode(&snap)?)
                        .as_slice(),
                )
                .map_err(dbe("write snapshot"))?;
        }
        t.cases
            .insert(
                key.as_slice(),
                self.seal.seal(CASES.name(), key, &encode(row)?).as_slice(),
            )
            .map_err(dbe("write case"))?;
        Ok(())
    }

    /// Creates a case: its signed genesis and a first signed change that lays
    /// out the document, in one durable commit.
    pub fn create_case(&self, new: &NewCase<'_>, now: Timestamp) -> Result<CaseId, StoreError> {
        let genesis = new_genesis(
            new.id,
            new.kind,
            new.office,
            new.compartment,
            self.device.id(),
            now,
        )?;
        let genesis = sign(genesis, self.device.key())?;
        let genesis_bytes = encode_signed(genesis.as_signed());
        let key = self.seal.case_key(&new.id);
        let (doc, count) = self.write("create case", |txn| -> Result<_, StoreError> {
            let mut t = WriteTables::open(txn)?;
            if self.read_row(&t.cases, &key)?.is_some() {
                return Err(StoreError::CaseExists {
                    case: new.id.to_string(),
                });
            }
            let mut doc = CaseDoc::new(self.actor());
            doc.init(new.title)?;
            let change = doc
                .commit(now, &format!("create {} case", new.kind))?
                .ok_or_else(|| StoreError::corrupt("a new case produced no change"))?;
            let counter = self.next_counter(txn)?;
            let signed = sign(
                payload_for_local(new.id, counter, change),
                self.device.key(),
            )?;
            let mut row = CaseRow {
                genesis: genesis_bytes.clone(),
                title: String::new(),
                status: String::new(),
                priority: String::new(),
                change_count: 0,
                updated_at: now,
            };
            self.append_change(&mut t, &key, &signed, &mut row)?;
            self.finish_case(&mut t, &key, &mut row, &mut doc, now)?;
            drop(t);
            self.audit_in(
                txn,
                &AuditEvent {
                    at: now,
                    kind: AuditKind::CaseCreated,
                    detail: format!("case {} ({}) created", new.id, new.kind),
                },
            )?;
            Ok((doc, row.change_count))
        })?;
        self.put_cached(new.id, doc, count);
        Ok(new.id)
    }

    /// Makes a local edit: loads the case, runs `edit` on its document,
    /// commits the resulting Automerge change, signs it and stores it in one
    /// durable transaction. Returns the new change's hash, or `None` when
    /// `edit` changed nothing. When this returns `Ok`, the edit is durable.
    pub fn edit_case(
        &self,
        case: &CaseId,
        now: Timestamp,
        message: &str,
        edit: impl FnOnce(&mut CaseDoc) -> Result<(), fieldsync_case::CaseError>,
    ) -> Result<Option<ChangeHash>, StoreError> {
        let key = self.seal.case_key(case);
        let outcome = self.write("edit case", |txn| -> Result<_, StoreError> {
            let mut t = WriteTables::open(txn)?;
            let mut row =
                self.read_row(&t.cases, &key)?
                    .ok_or_else(|| StoreError::UnknownCase {
                        query: case.to_string(),
                    })?;
            let mut doc = self.load_doc(case, &row, &t.snapshots, &t.case_log, &t.log)?;
            edit(&mut doc)?;
            let Some(change) = doc.commit(now, message)? else {
                return Ok(None);
            };
            let counter = self.next_counter(txn)?;
            let signed = sign(payload_for_local(*case, counter, change), self.device.key())?;
            let hash = signed.payload().hash();
            self.append_change(&mut t, &key, &signed, &mut row)?;
            self.finish_case(&mut t, &key, &mut row, &mut doc, now)?;
            Ok(Some((hash, doc, row.change_count)))
        })?;
        Ok(outcome.map(|(hash, doc, count)| {
            self.put_cached(*case, doc, count);
            hash
        }))
    }

    /// Every case on this node, from the case rows alone (no document is loaded).
    pub fn list_cases(&self) -> Result<Vec<CaseListing>, StoreError> {
        let txn = self.read()?;
        let cases = txn
            .open_table(CASES)
            .map_err(|e| StoreError::db("list")(e.into()))?;
        let mut out = Vec::new();
        for entry in cases.iter().map_err(dbe("list"))? {
            let (k, v) = entry.map_err(dbe("list"))?;
            let plain = self.seal.open(CASES.name(), k.value(), v.value())?;
            let row: CaseRow = decode(&plain, "case row")?;
            let g = genesis_of(&row)?;
            let g = g.value();
            out.push(CaseListing {
                id: g.case,
                kind: g.kind,
                office: g.office.clone(),
                compartment: g.compartment.clone(),
                title: row.title,
                status: row.status,
                priority: row.priority,
                changes: row.change_count,
                updated_at: row.updated_at,
            });
        }
        out.sort_by(|a, b| b.updated_at.cmp(&a.updated_at).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Resolves a full case id or a unique prefix of one (as git resolves hashes).
    pub fn resolve_case(&self, query: &str) -> Result<CaseId, StoreError> {
        let q = query.trim().to_ascii_lowercase();
        if q.is_empty() || !q.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StoreError::UnknownCase {
                query: query.to_owned(),
            });
        }
        let mut matches: Vec<CaseId> = self
            .list_cases()?
            .into_iter()
            .map(|c| c.id)
            .filter(|id| id.to_string().starts_with(&q))
            .collect();
        match matches.len() {
            0 => Err(StoreError::UnknownCase {
                query: query.to_owned(),
            }),
            1 => Ok(matches.remove(0)),
            _ => {
                matches.sort();
                Err(StoreError::AmbiguousCase {
                    query: query.to_owned(),
                    candidates: matches
                        .iter()
                        .map(|c| c.to_string()[..12].to_owned())
                        .collect(),
                })
            }
        }
    }

    /// Runs `f` on a case's genesis and loaded document.
    pub fn with_case<R>(
        &self,
        case: &CaseId,
        f: impl FnOnce(&Genesis, &mut CaseDoc) -> Result<R, fieldsync_case::CaseError>,
    ) -> Result<R, StoreError> {
        let key = self.seal.case_key(case);
        let txn = self.read()?;
        let e = |e: redb::TableError| StoreError::db("read case")(e.into());
        let cases = txn.open_table(CASES).map_err(e)?;
        let row = self
            .read_row(&cases, &key)?
            .ok_or_else(|| StoreError::UnknownCase {
                query: case.to_string(),
            })?;
        let snapshots = txn.open_table(SNAPSHOTS).map_err(e)?;
        let case_log = txn.open_table(CASE_LOG).map_err(e)?;
        let log = txn.open_table(LOG).map_err(e)?;
        let mut doc = self.load_doc(case, &row, &snapshots, &case_log, &log)?;
        let genesis = genesis_of(&row)?;
        let out = f(genesis.value(), &mut doc)?;
        self.put_cached(*case, doc, row.change_count);
        Ok(out)
    }

    /// The merged record of a case.
    pub fn case_record(&self, case: &CaseId) -> Result<CaseRecord, StoreError> {
        self.with_case(case, |g, doc| doc.record(g))
    }

    /// The fields of a case that hold concurrent values.
    pub fn case_conflicts(&self, case: &CaseId) -> Result<Vec<Conflict>, StoreError> {
        self.with_case(case, |_, doc| doc.conflicts())
    }

    /// Every change of a case, with its device and what it changed.
    pub fn case_history(&self, case: &CaseId) -> Result<Vec<HistoryEntry>, StoreError> {
        self.with_case(case, |_, doc| doc.history())
    }

    /// Number of stored changes not yet acknowledged by a relay.
    pub fn outbox_len(&self) -> Result<u64, StoreError> {
        let txn = self.read()?;
        let outbox = txn
            .open_table(OUTBOX)
            .map_err(|e| StoreError::db("outbox")(e.into()))?;
        outbox.len().map_err(dbe("outbox"))
    }
}

/// Decodes a row's genesis (verified when it was stored).
pub(crate) fn genesis_of(row: &CaseRow) -> Result<Encoded<Genesis>, StoreError> {
    let signed = decode_signed::<Genesis>(&row.genesis)
        .map_err(|e| StoreError::corrupt(format!("case genesis: {e}")))?;
    Ok(signed.payload().clone())
}
