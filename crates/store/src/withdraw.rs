//! Withdrawal: taking back changes a newly adopted revocation list puts
//! beyond their author's revocation point.
//!
//! A relay (or a device behind it) may store a revoked device's changes
//! before it hears of the revocation: an office keeps serving its devices
//! while its uplink is down. Headquarters quarantines those changes when they
//! reach it; everyone who applied them earlier must take them back, or the
//! nodes diverge. [`Store::adopt_revocations`] stores a list and, in the same
//! durable transaction, withdraws every change of the log that the list puts
//! beyond a *newly* revoked device's revocation point ("roots"), and every
//! change of the log that depends on one, transitively within its case
//! ("dependents"). Withdrawn changes go to the quarantine (roots with the
//! reason headquarters gives, dependents with [`dependent_reason`]), where a
//! supervisor or headquarters can release them as any other (a root first,
//! then its dependents). Their cases are rebuilt from the changes that
//! remain: heads, change count, listing summary, snapshot, cached document.
//!
//! The log stays append-only: a withdrawn change's log position keeps its
//! key, with a *tombstone* as its value (see `tables.rs`), so that no
//! position is reused and the log head never moves back. The tombstone
//! leaves the `changes-1` and `reads-1` indexes, so that no reader that goes
//! through them meets it; the readers that walk the log itself skip it.
//!
//! Rules:
//! - a node never withdraws a change it signed itself, nor the changes its
//!   own changes depend on (they stay applied with them: a device that built
//!   on a withdrawn change keeps it, and its own change is quarantined
//!   elsewhere as a dependent);
//! - a change stored under a signed release stands (it was released);
//! - changes held in `pending-1` that a list puts beyond the point, or that
//!   depend on a withdrawn or quarantined such change, go to the quarantine
//!   too: they would otherwise be stored, unchecked, once their
//!   dependencies arrive, or wait forever. The same holds after each ingest
//!   ([`Store::ingest`]): a change whose missing dependency sits in the
//!   quarantine beyond a revocation point (or depends on one) is quarantined
//!   as a dependent, not held pending.
//!
//! Cost: the log is scanned (envelope headers; only the changes of newly
//! revoked devices are parsed) only when the list revokes a device this
//! node has not yet withdrawn for (compared with the list of the last
//! adoption), and then only the affected cases are read in full. Memory is
//! bounded by the positions of the roots and the withdrawn changes.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use fieldsync_case::{
    CHANGE_HEADER_LEN, CaseDoc, ChangeHash, SignedChange, decode_change, encode_change,
};
use fieldsync_identity::{
    ActorBinding, CaseId, ChangeStanding, DeviceId, PUBLIC_KEY_LEN, RevocationList,
    RevocationListBody, Timestamp, decode_signed,
};
use redb::{ReadableTable, Table, TableHandle, WriteTransaction};
use serde::Serialize;

use crate::audit::{AuditEvent, AuditKind, QuarantineEntry};
use crate::cases::{WriteTables, case_seqs};
use crate::error::StoreError;
use crate::rows::{CaseRow, PendingRow, decode, encode};
use crate::store::{Store, StoreKind, read_meta, write_meta};
use crate::tables::{LOG, META, PENDING, QUARANTINE, RELEASES};

/// The first byte of a tombstone: a withdrawn log position. Change
/// envelopes start with their version ([`fieldsync_case::CHANGE_ENVELOPE_V1`], 1).
pub(crate) const TOMBSTONE_TAG: u8 = 0;

/// Length of a tombstone: tag, case id (16), change hash (32).
const TOMBSTONE_LEN: usize = 1 + 16 + 32;

/// `meta-1` key: the sequence number (u64 LE) of the revocation list whose
/// withdrawals were applied with [`Store::adopt_revocations`]. Absent when
/// the stored list was written without withdrawal (a fresh relay's empty
/// list, a store from before withdrawal existed): the next adoption then
/// withdraws for every device its list revokes.
const APPLIED: &str = "revocations-applied";

/// The quarantine reason of a change that depends on `root`, a change of
/// `device` beyond that device's revocation point.
pub fn dependent_reason(root: &ChangeHash, device: &DeviceId) -> String {
    format!(
        "depends on change {}, which is beyond the revocation point of device {}",
        root.short(),
        device.short()
    )
}

/// What [`Store::adopt_revocations`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WithdrawReport {
    /// Whether the list was stored (false when the stored list is the same
    /// one or a newer one of the same issuer).
    pub stored: bool,
    /// Devices the list revokes that this node had not withdrawn for yet
    /// (the log was scanned for their changes).
    pub newly_revoked: Vec<DeviceId>,
    /// Changes taken out of the log because they are beyond their author's
    /// revocation point.
    pub withdrawn: usize,
    /// Changes taken out of the log because they depend on such a change.
    pub dependents: usize,
    /// Changes that waited in pending, moved to the quarantine.
    pub from_pending: usize,
    /// The cases rebuilt from their remaining changes.
    pub cases: Vec<CaseId>,
}

impl WithdrawReport {
    /// Changes that went to the quarantine, from the log and from pending.
    pub fn quarantined(&self) -> usize {
        self.withdrawn + self.dependents + self.from_pending
    }
}

/// The tombstone of the change `hash` of `case`.
pub(crate) fn tombstone(case: &CaseId, hash: &ChangeHash) -> Vec<u8> {
    let mut t = Vec::with_capacity(TOMBSTONE_LEN);
    t.push(TOMBSTONE_TAG);
    t.extend_from_slice(case.as_bytes());
    t.extend_from_slice(&hash.0);
    t
}

/// Whether an (opened) log value is a tombstone.
pub(crate) fn is_tombstone(plain: &[u8]) -> bool {
    plain.first() == Some(&TOMBSTONE_TAG)
}

/// The signer's key bytes of a change envelope, from its header.
fn envelope_signer(env: &[u8]) -> Option<&[u8]> {
    if env.len() < CHANGE_HEADER_LEN {
        return None;
    }
    env.get(17..17 + PUBLIC_KEY_LEN)
}

/// The author, incarnation and signing counter of a signed change, as
/// [`RevocationList::change_status`] takes them (a change whose actor is not
/// a FieldSync actor counts as incarnation 0, as authorization does).
fn standing_of(body: &RevocationListBody, change: &SignedChange) -> (DeviceId, ChangeStanding) {
    let author = DeviceId::from_public_key(*change.signer());
    let p = change.payload();
    let incarnation = p.actor().map_or(0, |a: ActorBinding| a.incarnation);
    (
        author,
        body.change_status(&author, incarnation, p.counter()),
    )
}

fn dbe<E: Into<redb::Error>>(op: &'static str) -> impl Fn(E) -> StoreError {
    move |e| StoreError::db(op)(e.into())
}

/// A change withdrawn from a case, while the case is worked on.
struct Out {
    seq: u64,
    signer: DeviceId,
    /// Its dependencies that are withdrawn too (to find what an own change
    /// needs kept).
    deps_out: Vec<ChangeHash>,
    /// The change beyond the revocation point it is (`Some` reason) or
    /// depends on.
    root: (ChangeHash, DeviceId),
    /// The quarantine reason of a root.
    reason: Option<String>,
    envelope: Vec<u8>,
}

/// A quarantined or pending change, by its dependencies, while pending
/// changes are checked.
struct Known {
    deps: Vec<ChangeHash>,
    /// Its own quarantine reason when it is beyond its author's point.
    beyond: Option<(DeviceId, String)>,
}

impl Store {
    /// Adopts a revocation list: stores it (the caller verified it and
    /// checked that it supersedes the list in force) and, in the same
    /// durable transaction, withdraws what it puts beyond the revocation
    /// point of a device this node had not withdrawn for yet (see the
    /// module docs). Adopting the same list again does nothing; a list older
    /// than the stored one of the same issuer is not stored.
    ///
    /// Withdrawn changes are never sent to peers again: they leave the log
    /// readers and the repair listings, and the quarantine is never forwarded.
    pub fn adopt_revocations(
        &self,
        list: &RevocationList,
        now: Timestamp,
    ) -> Result<WithdrawReport, StoreError> {
        let bytes = list.to_bytes();
        let body = list.body();
        let (report, docs) = self.write("adopt revocations", |txn| {
            let mut report = WithdrawReport::default();
            let previous = {
                let mut meta = txn.open_table(META).map_err(dbe("adopt revocations"))?;
                let stored = read_meta(&meta, self.seal.as_ref(), "revocations")?;
                let applied = read_meta(&meta, self.seal.as_ref(), APPLIED)?
                    .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
                    .map(u64::from_le_bytes);
                let previous = stored
                    .as_deref()
                    .and_then(|b| decode_signed::<RevocationListBody>(b).ok())
                    .map(|s| s.payload().value().clone());
                if let Some(p) = &previous
                    && p.issuer == body.issuer
                    && (p.sequence > body.sequence
                        || (p.sequence == body.sequence && applied == Some(body.sequence)))
                {
                    return Ok((report, Vec::new()));
                }
                write_meta(&mut meta, self.seal.as_ref(), "revocations", &bytes)?;
                write_meta(
                    &mut meta,
                    self.seal.as_ref(),
                    APPLIED,
                    &body.sequence.to_le_bytes(),
                )?;
                report.stored = true;
                // Entries whose withdrawals were applied already.
                previous.filter(|p| applied == Some(p.sequence) && p.issuer == body.issuer)
            };
            let me = self.device.id();
            report.newly_revoked = body
                .entries
                .iter()
                .filter(|e| e.device != me)
                .filter(|e| {
                    previous
                        .as_ref()
                        .and_then(|p| p.is_revoked(&e.device))
                        .is_none_or(|p| p.accepted != e.accepted)
                })
                .map(|e| e.device)
                .collect();
            if report.newly_revoked.is_empty() {
                return Ok((report, Vec::new()));
            }
            let newly: BTreeSet<DeviceId> = report.newly_revoked.iter().copied().collect();
            let docs = self.withdraw_in(txn, body, &newly, now, &mut report)?;
            report.from_pending = self.divert_pending_in(txn, body, None, now)?;
            if report.quarantined() > 0 {
                self.audit_in(
                    txn,
                    &AuditEvent {
                        at: now,
                        kind: AuditKind::Withdrawn,
                        detail: format!(
                            "revocation list {} withdrew {} changes beyond a revocation point and {} that depend on them ({} cases rebuilt); {} pending changes quarantined",
                            body.sequence,
                            report.withdrawn,
                            report.dependents,
                            report.cases.len(),
                            report.from_pending
                        ),
                    },
                )?;
            }
            Ok::<_, StoreError>((report, docs))
        })?;
        for case in &report.cases {
            self.forget_cached(case);
        }
        self.cache_all(docs);
        if report.quarantined() > 0 {
            tracing::info!(
                sequence = body.sequence,
                withdrawn = report.withdrawn,
                dependents = report.dependents,
                from_pending = report.from_pending,
                cases = report.cases.len(),
                "changes beyond a revocation point withdrawn"
            );
        }
        Ok(report)
    }

    /// The highest signing counter, per incarnation, of the changes in this
    /// node's log that `device` signed (withdrawn ones are no longer in it).
    ///
    /// Reads the whole log (envelope headers; only `device`'s changes are
    /// parsed): for rare administrative actions such as revoking a device,
    /// never for the sync path.
    pub fn signed_counters(&self, device: &DeviceId) -> Result<BTreeMap<u32, u64>, StoreError> {
        let txn = self.read()?;
        let log = txn.open_table(LOG).map_err(dbe("read log"))?;
        let mut out: BTreeMap<u32, u64> = BTreeMap::new();
        for entry in log.iter().map_err(dbe("read log"))? {
            let (k, v) = entry.map_err(dbe("read log"))?;
            let seq = k.value();
            let plain = self.seal.open(LOG.name(), &seq.to_be_bytes(), v.value())?;
            if is_tombstone(&plain) || envelope_signer(&plain) != Some(device.as_bytes()) {
                continue;
            }
            let change = decode_change(&plain)
                .map_err(|e| StoreError::corrupt(format!("log entry {seq}: {e}")))?;
            let p = change.payload();
            let incarnation = p.actor().map_or(0, |a| a.incarnation);
            let top = out.entry(incarnation).or_default();
            *top = (*top).max(p.counter());
        }
        Ok(out)
    }

    /// Withdraws, inside `txn`, the log's changes beyond the revocation
    /// point of the `newly` revoked devices and their dependents; returns
    /// the rebuilt documents (device stores) for the cache.
    fn withdraw_in(
        &self,
        txn: &WriteTransaction,
        body: &RevocationListBody,
        newly: &BTreeSet<DeviceId>,
        now: Timestamp,
        report: &mut WithdrawReport,
    ) -> Result<crate::ingest::Materialized, StoreError> {
        // Pass 1: the roots, by case key, from the envelope headers.
        let keys: HashSet<[u8; 32]> = newly.iter().map(|d| *d.as_bytes()).collect();
        let mut roots: BTreeMap<[u8; 16], BTreeSet<u64>> = BTreeMap::new();
        {
            let log = txn.open_table(LOG).map_err(dbe("withdraw"))?;
            for entry in log.iter().map_err(dbe("withdraw"))? {
                let (k, v) = entry.map_err(dbe("withdraw"))?;
                let seq = k.value();
                let plain = self.seal.open(LOG.name(), &seq.to_be_bytes(), v.value())?;
                if is_tombstone(&plain)
                    || !envelope_signer(&plain)
                        .and_then(|s| <[u8; 32]>::try_from(s).ok())
                        .is_some_and(|s| keys.contains(&s))
                {
                    continue;
                }
                let change = decode_change(&plain)
                    .map_err(|e| StoreError::corrupt(format!("log entry {seq}: {e}")))?;
                if let (_, ChangeStanding::BeyondRevocationPoint { .. }) =
                    standing_of(body, &change)
                {
                    let key = self.seal.case_key(&change.payload().case());
                    roots.entry(key).or_default().insert(seq);
                }
            }
        }
        if roots.is_empty() {
            return Ok(Vec::new());
        }
        // Pass 2: each affected case.
        let mut entries = Vec::new();
        let mut docs = Vec::new();
        {
            let releases = txn.open_table(RELEASES).map_err(dbe("withdraw"))?;
            let mut t = WriteTables::open(txn)?;
            for (key, root_seqs) in roots {
                let Some(mut row) = self.read_row(&t.cases, &key)? else {
                    return Err(StoreError::corrupt(
                        "a change in the log belongs to a case with no row",
                    ));
                };
                let (case, _) = self.case_meta(&key, &row)?;
                let out = self.case_out(&t, &releases, &key, body, &root_seqs)?;
                if out.is_empty() {
                    continue;
                }
                let compartment = self
                    .seal
                    .compartment_key(&crate::migrations::compartment_of(&row.genesis)?);
                let mut gone: Vec<(&ChangeHash, &Out)> = out.iter().collect();
                gone.sort_by_key(|(_, o)| o.seq);
                for (hash, o) in gone {
                    let sealed =
                        self.seal
                            .seal(LOG.name(), &o.seq.to_be_bytes(), &tombstone(&case, hash));
                    t.log
                        .insert(o.seq, sealed.as_slice())
                        .map_err(dbe("withdraw"))?;
                    t.changes
                        .remove((key.as_slice(), hash.0.as_slice()))
                        .map_err(dbe("withdraw"))?;
                    t.reads
                        .remove((compartment.as_slice(), o.seq))
                        .map_err(dbe("withdraw"))?;
                    let reason = match &o.reason {
                        Some(r) => {
                            report.withdrawn += 1;
                            r.clone()
                        }
                        None => {
                            report.dependents += 1;
                            dependent_reason(&o.root.0, &o.root.1)
                        }
                    };
                    entries.push(QuarantineEntry {
                        at: now,
                        reason,
                        case,
                        signer: o.signer,
                        genesis: row.genesis.clone(),
                        change: o.envelope.clone(),
                    });
                }
                report.cases.push(case);
                docs.extend(self.rebuild_case(&mut t, &key, &case, &mut row, now)?);
            }
        }
        self.quarantine_in(txn, entries)?;
        Ok(docs)
    }

    /// The changes of one case to withdraw: the roots among `root_seqs`
    /// (not released) and every stored change that depends on one, less
    /// this node's own changes and what they depend on.
    fn case_out(
        &self,
        t: &WriteTables<'_>,
        releases: &Table<'_, (&'static [u8], &'static [u8]), &'static [u8]>,
        key: &[u8; 16],
        body: &RevocationListBody,
        root_seqs: &BTreeSet<u64>,
    ) -> Result<HashMap<ChangeHash, Out>, StoreError> {
        let first = root_seqs.first().copied().unwrap_or(0);
        let mut out: HashMap<ChangeHash, Out> = HashMap::new();
        // Log order is causal: a dependent comes after what it depends on,
        // so nothing before the first root can be one.
        for seq in case_seqs(&t.changes, key, first.saturating_sub(1))? {
            let plain = self.read_log_bytes(&t.log, seq)?;
            let change = decode_change(&plain)
                .map_err(|e| StoreError::corrupt(format!("log entry {seq}: {e}")))?;
            let p = change.payload();
            let hash = p.hash();
            let deps_out: Vec<ChangeHash> = p
                .deps()
                .into_iter()
                .filter(|d| out.contains_key(d))
                .collect();
            let (signer, standing) = standing_of(body, &change);
            let released = || -> Result<bool, StoreError> {
                Ok(releases
                    .get((key.as_slice(), hash.0.as_slice()))
                    .map_err(dbe("withdraw"))?
                    .is_some())
            };
            let root_reason = if root_seqs.contains(&seq) && !released()? {
                standing.quarantine_reason(&signer)
            } else {
                None
            };
            let root = match (&root_reason, deps_out.first()) {
                (Some(_), _) => (hash, signer),
                (None, Some(dep)) => match out.get(dep) {
                    Some(o) => o.root,
                    None => continue,
                },
                (None, None) => continue,
            };
            out.insert(
                hash,
                Out {
                    seq,
                    signer,
                    deps_out,
                    root,
                    reason: root_reason,
                    envelope: plain,
                },
            );
        }
        // This node's own changes stay, and so does everything they depend on.
        let me = self.device.id();
        let mut keep: Vec<ChangeHash> = out
            .iter()
            .filter(|(_, o)| o.signer == me)
            .map(|(h, _)| *h)
            .collect();
        while let Some(h) = keep.pop() {
            if let Some(o) = out.remove(&h) {
                keep.extend(o.deps_out);
            }
        }
        Ok(out)
    }

    /// Rebuilds a case from the changes left in the log after a withdrawal:
    /// its row (heads, count, positions, listing summary), its snapshot,
    /// and on a device store its document (returned for the cache). A case
    /// with no change left loses its row, as a case whose changes are all
    /// quarantined has none.
    pub(crate) fn rebuild_case(
        &self,
        t: &mut WriteTables<'_>,
        key: &[u8; 16],
        case: &CaseId,
        row: &mut CaseRow,
        now: Timestamp,
    ) -> Result<Option<(CaseId, CaseDoc, u64)>, StoreError> {
        let remaining = case_seqs(&t.changes, key, 0)?;
        t.snapshots
            .remove(key.as_slice())
            .map_err(dbe("withdraw"))?;
        let (Some(&first), Some(&last)) = (remaining.first(), remaining.last()) else {
            t.cases.remove(key.as_slice()).map_err(dbe("withdraw"))?;
            return Ok(None);
        };
        row.change_count = remaining.len() as u64;
        row.first_seq = first;
        row.last_seq = last;
        row.snapshot_seq = 0;
        row.since_snapshot = row.change_count;
        let mut changes = Vec::with_capacity(remaining.len());
        for seq in remaining {
            changes.push(self.read_log_change(&t.log, seq)?);
        }
        match self.kind() {
            StoreKind::Device => {
                let mut doc = CaseDoc::new(self.actor());
                doc.apply(
                    changes
                        .into_iter()
                        .map(|c| c.payload().change().clone())
                        .collect(),
                )?;
                self.finish_case(t, key, row, &mut doc, now)?;
                Ok(Some((*case, doc, row.change_count)))
            }
            StoreKind::Relay => {
                let mut heads: BTreeSet<[u8; 32]> = BTreeSet::new();
                let mut deps: HashSet<[u8; 32]> = HashSet::new();
                for c in &changes {
                    heads.insert(c.payload().hash().0);
                    deps.extend(c.payload().deps().iter().map(|d| d.0));
                }
                row.heads = heads.into_iter().filter(|h| !deps.contains(h)).collect();
                row.updated_at = now;
                self.write_row(t, key, row)?;
                Ok(None)
            }
        }
    }

    /// After an ingest: changes of the cases `touched` that wait in pending
    /// for a dependency quarantined beyond a revocation point (or depending
    /// on one) go to the quarantine as dependents; returns how many. Cheap
    /// when nothing is pending or no list revokes anyone.
    pub(crate) fn divert_after_ingest_in(
        &self,
        txn: &WriteTransaction,
        touched: &BTreeSet<CaseId>,
        now: Timestamp,
    ) -> Result<usize, StoreError> {
        if touched.is_empty() {
            return Ok(0);
        }
        let body = {
            let meta = txn.open_table(META).map_err(dbe("ingest"))?;
            let count = read_meta(&meta, self.seal.as_ref(), "pending")?
                .map(|v| decode::<(u64, u64)>(&v, "pending totals"))
                .transpose()?
                .map_or(0, |t| t.0);
            if count == 0 {
                return Ok(0);
            }
            let Some(bytes) = read_meta(&meta, self.seal.as_ref(), "revocations")? else {
                return Ok(0);
            };
            // The stored list was verified before it was stored.
            match decode_signed::<RevocationListBody>(&bytes) {
                Ok(s) if !s.payload().value().entries.is_empty() => s.payload().value().clone(),
                _ => return Ok(0),
            }
        };
        let keys: BTreeSet<[u8; 16]> = touched.iter().map(|c| self.seal.case_key(c)).collect();
        self.divert_pending_in(txn, &body, Some(&keys), now)
    }

    /// Moves to the quarantine the pending changes (of the cases `only`, or
    /// all) that `body` puts beyond their author's revocation point, or that
    /// depend (through other pending or quarantined changes) on a
    /// quarantined change beyond one. A change with a stored release waits
    /// on. Returns how many entries the quarantine gained.
    pub(crate) fn divert_pending_in(
        &self,
        txn: &WriteTransaction,
        body: &RevocationListBody,
        only: Option<&BTreeSet<[u8; 16]>>,
        now: Timestamp,
    ) -> Result<usize, StoreError> {
        let mut pending = txn.open_table(PENDING).map_err(dbe("divert pending"))?;
        // The pending changes, by case key.
        let mut held: BTreeMap<[u8; 16], BTreeMap<ChangeHash, PendingRow>> = BTreeMap::new();
        {
            let mut add = |k: redb::AccessGuard<'_, (&'static [u8], &'static [u8])>,
                           v: redb::AccessGuard<'_, &'static [u8]>|
             -> Result<(), StoreError> {
                let (ck, h) = k.value();
                let key: [u8; 16] = crate::store::fixed(ck, "pending case key")?;
                let hash = ChangeHash(crate::store::fixed(h, "pending change hash")?);
                let plain =
                    self.seal
                        .open(PENDING.name(), &pending_seal_key(&key, &hash), v.value())?;
                held.entry(key)
                    .or_default()
                    .insert(hash, decode(&plain, "pending change")?);
                Ok(())
            };
            match only {
                None => {
                    for entry in pending.iter().map_err(dbe("divert pending"))? {
                        let (k, v) = entry.map_err(dbe("divert pending"))?;
                        add(k, v)?;
                    }
                }
                Some(keys) => {
                    let lo: &[u8] = &[0u8; 32];
                    let hi: &[u8] = &[0xffu8; 32];
                    for key in keys {
                        for entry in pending
                            .range((key.as_slice(), lo)..=(key.as_slice(), hi))
                            .map_err(dbe("divert pending"))?
                        {
                            let (k, v) = entry.map_err(dbe("divert pending"))?;
                            add(k, v)?;
                        }
                    }
                }
            }
        }
        if held.is_empty() {
            return Ok(0);
        }
        // The quarantined changes of those cases.
        let mut quarantined: BTreeMap<[u8; 16], BTreeMap<ChangeHash, Known>> = BTreeMap::new();
        {
            let table = txn.open_table(QUARANTINE).map_err(dbe("divert pending"))?;
            for entry in table.iter().map_err(dbe("divert pending"))? {
                let (k, v) = entry.map_err(dbe("divert pending"))?;
                let plain =
                    self.seal
                        .open(QUARANTINE.name(), &k.value().to_be_bytes(), v.value())?;
                let q: QuarantineEntry = decode(&plain, "quarantine entry")?;
                let key = self.seal.case_key(&q.case);
                if !held.contains_key(&key) {
                    continue;
                }
                // An entry that does not decode as a change was never one.
                let Ok(change) = decode_change(&q.change) else {
                    continue;
                };
                let (author, standing) = standing_of(body, &change);
                quarantined.entry(key).or_default().insert(
                    change.payload().hash(),
                    Known {
                        deps: change.payload().deps(),
                        beyond: standing.quarantine_reason(&author).map(|r| (author, r)),
                    },
                );
            }
        }
        let releases = txn.open_table(RELEASES).map_err(dbe("divert pending"))?;
        let mut moved: Vec<([u8; 16], ChangeHash, QuarantineEntry)> = Vec::new();
        for (key, rows) in &held {
            let mut known: BTreeMap<ChangeHash, Known> =
                quarantined.remove(key).unwrap_or_default();
            for (hash, row) in rows {
                let change = decode_change(&row.change)
                    .map_err(|e| StoreError::corrupt(format!("pending change {hash}: {e}")))?;
                let (author, standing) = standing_of(body, &change);
                known.insert(
                    *hash,
                    Known {
                        deps: row.deps.iter().copied().map(ChangeHash).collect(),
                        beyond: standing.quarantine_reason(&author).map(|r| (author, r)),
                    },
                );
            }
            let bad = doomed(&known);
            for (hash, row) in rows {
                let Some(root) = bad.get(hash) else {
                    continue;
                };
                if releases
                    .get((key.as_slice(), hash.0.as_slice()))
                    .map_err(dbe("divert pending"))?
                    .is_some()
                {
                    continue;
                }
                let change = decode_change(&row.change)
                    .map_err(|e| StoreError::corrupt(format!("pending change {hash}: {e}")))?;
                let reason = match known.get(hash).and_then(|k| k.beyond.as_ref()) {
                    Some((_, reason)) => reason.clone(),
                    None => dependent_reason(&root.0, &root.1),
                };
                let case = change.payload().case();
                moved.push((
                    *key,
                    *hash,
                    QuarantineEntry {
                        at: now,
                        reason,
                        case,
                        signer: DeviceId::from_public_key(*change.signer()),
                        genesis: row.genesis.clone(),
                        change: encode_change(&change),
                    },
                ));
            }
        }
        drop(releases);
        if moved.is_empty() {
            return Ok(0);
        }
        let mut freed = (0u64, 0u64);
        for (key, hash, _) in &moved {
            if let Some(v) = pending
                .remove((key.as_slice(), hash.0.as_slice()))
                .map_err(dbe("divert pending"))?
            {
                freed.0 += 1;
                freed.1 += v.value().len() as u64;
            }
        }
        drop(pending);
        {
            let mut meta = txn.open_table(META).map_err(dbe("divert pending"))?;
            let (count, bytes) = read_meta(&meta, self.seal.as_ref(), "pending")?
                .map(|v| decode::<(u64, u64)>(&v, "pending totals"))
                .transpose()?
                .unwrap_or_default();
            let totals = (count.saturating_sub(freed.0), bytes.saturating_sub(freed.1));
            write_meta(&mut meta, self.seal.as_ref(), "pending", &encode(&totals)?)?;
        }
        tracing::info!(
            changes = moved.len(),
            "pending changes beyond a revocation point, or depending on one, quarantined"
        );
        self.quarantine_in(txn, moved.into_iter().map(|(_, _, e)| e).collect())
    }
}

/// The key bytes a `pending-1` value is sealed under.
fn pending_seal_key(key: &[u8; 16], hash: &ChangeHash) -> [u8; 48] {
    let mut k = [0u8; 48];
    k[..16].copy_from_slice(key);
    k[16..].copy_from_slice(&hash.0);
    k
}

/// Of the changes `known` (one case's quarantined and pending changes), those
/// beyond a revocation point and those that depend on one through others
/// of `known`, each with the change beyond the point it comes down to.
fn doomed(known: &BTreeMap<ChangeHash, Known>) -> BTreeMap<ChangeHash, (ChangeHash, DeviceId)> {
    let mut bad: BTreeMap<ChangeHash, (ChangeHash, DeviceId)> = known
        .iter()
        .filter_map(|(h, k)| k.beyond.as_ref().map(|(d, _)| (*h, (*h, *d))))
        .collect();
    loop {
        let mut grew = false;
        for (h, k) in known {
            if bad.contains_key(h) {
                continue;
            }
            if let Some(root) = k.deps.iter().find_map(|d| bad.get(d).copied()) {
                bad.insert(*h, root);
                grew = true;
            }
        }
        if !grew {
            return bad;
        }
    }
}

/// The cases of a batch and of its quarantine entries, whose pending changes
/// an ingest checks ([`Store::divert_after_ingest_in`]).
pub(crate) fn touched_cases(
    cases: &[(
        fieldsync_case::VerifiedGenesis,
        Vec<fieldsync_case::VerifiedChange>,
    )],
    quarantine: &[QuarantineEntry],
) -> BTreeSet<CaseId> {
    cases
        .iter()
        .map(|(g, _)| g.payload().value().case)
        .chain(quarantine.iter().map(|q| q.case))
        .collect()
}
