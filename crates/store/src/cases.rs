//! Cases: creating them, local edits, and reading them back.

use fieldsync_case::{
    CaseDoc, CaseKind, CaseRecord, ChangeHash, Conflict, Genesis, HistoryEntry, SignedChange,
    decode_change, encode_change, new_genesis, payload_for_local,
};
use fieldsync_identity::{
    ActorBinding, CaseId, Encoded, Timestamp, decode_signed, encode_signed, sign,
};
use redb::{ReadableTable, Table, TableHandle, WriteTransaction};
use serde::Serialize;

use crate::audit::{AuditEvent, AuditKind};
use crate::error::StoreError;
use crate::rows::{CaseRow, Snapshot, decode, encode};
use crate::store::Store;
use crate::tables::{CASES, CHANGES, EQUIVOCATIONS, LOG, META, READS, SEQS, SNAPSHOTS};

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
    pub(crate) snapshots: Table<'t, &'static [u8], &'static [u8]>,
    pub(crate) reads: Table<'t, (&'static [u8], u64), ()>,
    pub(crate) seqs: Table<'t, (&'static [u8], u64), &'static [u8]>,
    pub(crate) equivocations: Table<'t, (&'static [u8], &'static [u8]), &'static [u8]>,
    /// Compartment keys of the cases written in this transaction.
    compartments: std::collections::HashMap<[u8; 16], [u8; 16]>,
}

impl<'t> WriteTables<'t> {
    pub(crate) fn open(txn: &'t WriteTransaction) -> Result<Self, StoreError> {
        let e = |e: redb::TableError| StoreError::db("open tables")(e.into());
        Ok(Self {
            cases: txn.open_table(CASES).map_err(e)?,
            log: txn.open_table(LOG).map_err(e)?,
            changes: txn.open_table(CHANGES).map_err(e)?,
            snapshots: txn.open_table(SNAPSHOTS).map_err(e)?,
            reads: txn.open_table(READS).map_err(e)?,
            seqs: txn.open_table(SEQS).map_err(e)?,
            equivocations: txn.open_table(EQUIVOCATIONS).map_err(e)?,
            compartments: std::collections::HashMap::new(),
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

    /// Reads and decodes one log entry.
    pub(crate) fn read_log_change(
        &self,
        log: &impl ReadableTable<u64, &'static [u8]>,
        seq: u64,
    ) -> Result<SignedChange, StoreError> {
        let plain = self.read_log_bytes(log, seq)?;
        decode_change(&plain).map_err(|e| StoreError::corrupt(format!("log entry {seq}: {e}")))
    }

    /// Reads one log entry's envelope bytes.
    pub(crate) fn read_log_bytes(
        &self,
        log: &impl ReadableTable<u64, &'static [u8]>,
        seq: u64,
    ) -> Result<Vec<u8>, StoreError> {
        let env = log
            .get(seq)
            .map_err(dbe("read log"))?
            .ok_or_else(|| StoreError::corrupt(format!("log entry {seq} is missing")))?;
        Ok(self
            .seal
            .open(LOG.name(), &seq.to_be_bytes(), env.value())?)
    }

    /// The next log sequence number.
    pub(crate) fn next_seq(&self, t: &WriteTables<'_>) -> Result<u64, StoreError> {
        Ok(t.log
            .last()
            .map_err(dbe("append"))?
            .map(|(k, _)| k.value() + 1)
            .unwrap_or(1))
    }

    /// Stores one change at log position `seq` (from [`Store::next_seq`])
    /// and indexes it by (case, hash). The change was verified before it
    /// reached the store (a held change was verified when it was held). On a
    /// device store the caller has already applied it to the case's document
    /// (or made it there).
    pub(crate) fn append_change(
        &self,
        t: &mut WriteTables<'_>,
        key: &[u8; 16],
        seq: u64,
        change: &SignedChange,
        row: &mut CaseRow,
    ) -> Result<(), StoreError> {
        let env = encode_change(change);
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
        crate::equivocation::index_seq(&mut t.seqs, key, change)?;
        let compartment = match t.compartments.get(key) {
            Some(c) => *c,
            None => {
                let c = self
                    .seal
                    .compartment_key(&crate::migrations::compartment_of(&row.genesis)?);
                t.compartments.insert(*key, c);
                c
            }
        };
        t.reads
            .insert((compartment.as_slice(), seq), ())
            .map_err(dbe("append"))?;
        if row.change_count == 0 {
            row.first_seq = seq;
        }
        row.change_count += 1;
        row.since_snapshot += 1;
        row.last_seq = seq;
        Ok(())
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
        row.heads = doc.heads()?.iter().map(|h| h.0).collect();
        if row.since_snapshot >= SNAPSHOT_EVERY {
            let snap = Snapshot { doc: doc.save()? };
            t.snapshots
                .insert(
                    key.as_slice(),
                    self.seal
                        .seal(SNAPSHOTS.name(), key, &encode(&snap)?)
                        .as_slice(),
                )
                .map_err(dbe("write snapshot"))?;
            row.snapshot_seq = row.last_seq;
            row.since_snapshot = 0;
        }
        self.write_row(t, key, row)
    }

    /// Writes a case's row.
    pub(crate) fn write_row(
        &self,
        t: &mut WriteTables<'_>,
        key: &[u8; 16],
        row: &CaseRow,
    ) -> Result<(), StoreError> {
        t.cases
            .insert(
                key.as_slice(),
                self.seal.seal(CASES.name(), key, &encode(row)?).as_slice(),
            )
            .map_err(dbe("write case"))?;
        Ok(())
    }

    /// Whether the change `hash` of the case stored under `key` is in the log.
    pub(crate) fn is_stored(
        &self,
        changes: &impl ReadableTable<(&'static [u8], &'static [u8]), u64>,
        key: &[u8; 16],
        hash: &ChangeHash,
    ) -> Result<bool, StoreError> {
        Ok(changes
            .get((key.as_slice(), hash.0.as_slice()))
            .map_err(dbe("look up a change"))?
            .is_some())
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
            let seq = self.next_seq(&t)?;
            let signed = sign(payload_for_local(new.id, seq, change), self.device.key())?;
            let mut row = CaseRow::new(genesis_bytes.clone(), now);
            self.append_change(&mut t, &key, seq, signed.as_signed(), &mut row)?;
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
            let (mut doc, loaded) =
                self.load_doc_checked(case, &row, &t.snapshots, &t.changes, &t.log)?;
            if loaded == crate::load::Loaded::Rebuilt {
                // Replace the unusable snapshot with this commit.
                row.since_snapshot = row.since_snapshot.max(SNAPSHOT_EVERY);
            }
            edit(&mut doc)?;
            let Some(change) = doc.commit(now, message)? else {
                return Ok(None);
            };
            // The signing counter is the change's position in this device's
            // log: unique and increasing for this device, at no extra write.
            let seq = self.next_seq(&t)?;
            let signed = sign(payload_for_local(*case, seq, change), self.device.key())?;
            let hash = signed.payload().hash();
            self.append_change(&mut t, &key, seq, signed.as_signed(), &mut row)?;
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

    /// Like [`Store::list_cases`], with title, status and priority on a relay
    /// store too. A relay stores changes by their headers and keeps no
    /// document, so this materializes each case whose summary it has not
    /// read since its last change (through the bounded document cache),
    /// and remembers the summary: headquarters' views pay for documents
    /// when someone looks, never on the ingest path.
    pub fn list_cases_with_summaries(&self) -> Result<Vec<CaseListing>, StoreError> {
        let mut list = self.list_cases()?;
        if self.kind() != crate::StoreKind::Relay {
            return Ok(list);
        }
        for item in &mut list {
            let cached = self
                .summaries
                .lock()
                .ok()
                .and_then(|m| m.get(&item.id).cloned())
                .filter(|(count, _)| *count == item.changes);
            let summary = match cached {
                Some((_, s)) => s,
                None => {
                    let s = self.with_case(&item.id, |_, doc| doc.summary())?;
                    if let Ok(mut m) = self.summaries.lock() {
                        m.insert(item.id, (item.changes, s.clone()));
                    }
                    s
                }
            };
            item.title = summary.title;
            item.status = summary.status.to_string();
            item.priority = summary.priority.to_string();
        }
        Ok(list)
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
        let changes = txn.open_table(CHANGES).map_err(e)?;
        let log = txn.open_table(LOG).map_err(e)?;
        let (mut doc, loaded) = self.load_doc_checked(case, &row, &snapshots, &changes, &log)?;
        let genesis = genesis_of(&row)?;
        let out = f(genesis.value(), &mut doc)?;
        // A document rebuilt past an unusable snapshot is not cached, so
        // that the next write of the case notices and replaces the snapshot.
        if loaded == crate::load::Loaded::AsStored {
            self.put_cached(*case, doc, row.change_count);
        }
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

    /// Number of stored changes not yet acknowledged by a peer: the outbox
    /// is the log after the highest position any peer acknowledged
    /// ([`Store::set_peer_ack`], [`Store::store_receipt`]).
    pub fn outbox_len(&self) -> Result<u64, StoreError> {
        let txn = self.read()?;
        let e = |e: redb::TableError| StoreError::db("outbox")(e.into());
        let log = txn.open_table(LOG).map_err(e)?;
        let meta = txn.open_table(META).map_err(e)?;
        let acked = crate::store::read_meta_u64(&meta, self.seal.as_ref(), "outbox-acked")?;
        let last = log
            .last()
            .map_err(dbe("outbox"))?
            .map(|(k, _)| k.value())
            .unwrap_or(0);
        Ok(last.saturating_sub(acked))
    }
}

/// Log positions of a case's changes stored after `after`, in log order.
pub(crate) fn case_seqs(
    changes: &impl ReadableTable<(&'static [u8], &'static [u8]), u64>,
    key: &[u8; 16],
    after: u64,
) -> Result<Vec<u64>, StoreError> {
    let lo: &[u8] = &[0u8; 32];
    let hi: &[u8] = &[0xffu8; 32];
    let mut seqs = Vec::new();
    for entry in changes
        .range((key.as_slice(), lo)..=(key.as_slice(), hi))
        .map_err(dbe("read case changes"))?
    {
        let (_, seq) = entry.map_err(dbe("read case changes"))?;
        if seq.value() > after {
            seqs.push(seq.value());
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

/// Decodes a row's genesis (verified when it was stored).
pub(crate) fn genesis_of(row: &CaseRow) -> Result<Encoded<Genesis>, StoreError> {
    let signed = decode_signed::<Genesis>(&row.genesis)
        .map_err(|e| StoreError::corrupt(format!("case genesis: {e}")))?;
    Ok(signed.payload().clone())
}
