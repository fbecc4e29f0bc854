//! Storing verified changes that come from outside: sync batches from peers
//! ([`Store::ingest`]) and bundles ([`Store::import_verified`]) share one path.
//!
//! Per case: a genesis that differs from the stored (or held) one is refused;
//! changes already stored are duplicates; the rest are placed so that every
//! change follows its dependencies. A change whose dependencies are neither
//! stored nor in the batch is held in `pending-1` (sync) or refuses the whole
//! batch (bundles must be self-contained). Held changes of the case whose
//! dependencies are now present are placed too. On a device store the
//! placed changes are applied to the case's document in one Automerge call;
//! a relay store touches no document and derives the heads from the
//! changes' dependency lists. Before that, a change that shares its actor
//! and sequence number with another (an equivocation) is held in the
//! quarantine with the other and everything depending on either (see
//! `equivocation.rs`), and so is a change that waits on one.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use fieldsync_case::{
    CaseDoc, ChangeHash, SignedChange, VerifiedChange, VerifiedGenesis, decode_change,
    encode_change,
};
use fieldsync_identity::{CaseId, DeviceId, Timestamp, encode_signed};
use redb::{ReadableTable, ReadableTableMetadata, Table, TableHandle, WriteTransaction};
use serde::Serialize;

use crate::audit::QuarantineEntry;
use crate::cases::{SNAPSHOT_EVERY, WriteTables};
use crate::equivocation::Found;
use crate::error::{BundleError, StoreError};
use crate::load::Loaded;
use crate::peers::PeerRecord;
use crate::rows::{CaseRow, PendingRow, decode, encode};
use crate::store::{Store, StoreKind, read_meta, write_meta};
use crate::sync::Cursor;
use crate::tables::{META, PENDING, RELEASES};

/// Most changes held in `pending-1`, waiting for their dependencies.
pub const MAX_PENDING_CHANGES: usize = 10_000;

/// Most bytes (as stored) held in `pending-1`: 64 MiB.
pub const MAX_PENDING_BYTES: usize = 64 << 20;

/// `meta-1` key of the pending limits in force (postcard [`PendingLimits`];
/// absent: the defaults).
const PENDING_LIMITS: &str = "pending-limits";

/// How much `pending-1` may hold: changes whose dependencies have not
/// arrived (a peer that never sends them must not fill the disk).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct PendingLimits {
    /// Changes held at most.
    pub changes: u64,
    /// Bytes held at most (as stored).
    pub bytes: u64,
}

impl Default for PendingLimits {
    /// [`MAX_PENDING_CHANGES`] and [`MAX_PENDING_BYTES`].
    fn default() -> Self {
        Self {
            changes: MAX_PENDING_CHANGES as u64,
            bytes: MAX_PENDING_BYTES as u64,
        }
    }
}

/// One batch from a peer, stored in one durable transaction with the peer's
/// cursor, so that an interrupted sync resumes where it stopped.
///
/// The caller has verified every signature and authorized every change
/// (certificate, revocation, compartment, role): the store checks only
/// genesis consistency, case membership and dependencies. Changes that fail
/// authorization go in `quarantine`, not in `cases`.
#[derive(Debug, Clone, Default)]
pub struct Ingest {
    /// Verified cases and their verified changes (in any order).
    pub cases: Vec<(VerifiedGenesis, Vec<VerifiedChange>)>,
    /// Validly signed changes that failed authorization: held, never applied or forwarded.
    pub quarantine: Vec<QuarantineEntry>,
    /// The peer's log position this batch reaches, written with the batch.
    pub peer_cursor: Option<(DeviceId, Cursor)>,
    /// Certificates of authors the batch carried, recorded with the batch (a
    /// stored change is never without its author's certificate).
    pub peers: Vec<(DeviceId, PeerRecord)>,
    /// Signed releases (verified by the caller) of changes in `cases` that
    /// failed authorization and were let through: stored beside them, and
    /// their quarantine entries here removed.
    pub releases: Vec<(CaseId, ChangeHash, Vec<u8>)>,
}

/// What an ingest did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct IngestReport {
    /// Changes stored in the log (including those released from pending).
    pub stored: usize,
    /// Changes already held (stored or pending, or repeated in the batch): acknowledged and ignored.
    pub duplicates: usize,
    /// Entries added to the quarantine.
    pub quarantined: usize,
    /// Changes of this batch held in pending, waiting for their dependencies.
    pub pending: usize,
    /// Changes held earlier whose dependencies arrived, now stored.
    pub released_from_pending: usize,
    /// Quarantine entries removed because a release for their change came.
    pub released_from_quarantine: usize,
}

/// What to do with a change whose dependencies are neither stored nor in the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unplaced {
    /// Refuse the whole batch ([`BundleError::MissingDependencies`]).
    Refuse,
    /// Hold it in `pending-1` until its dependencies arrive.
    Hold,
}

/// Counts kept while storing a batch.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// Cases that got their first stored change.
    pub(crate) new_cases: usize,
    /// Changes stored (batch and released).
    pub(crate) stored: usize,
    /// Changes already held.
    pub(crate) duplicates: usize,
    /// Changes of the batch put in pending.
    pub(crate) pending: usize,
    /// Pending changes stored.
    pub(crate) released: usize,
    /// Changes held in the quarantine as equivocations or their dependents.
    pub(crate) quarantined: usize,
}

/// The tables [`Store::store_cases`] works on, besides the change tables.
struct Tables<'a, 't> {
    t: &'a mut WriteTables<'t>,
    pending: &'a mut Table<'t, (&'static [u8], &'static [u8]), &'static [u8]>,
    released: &'a Table<'t, (&'static [u8], &'static [u8]), &'static [u8]>,
}

/// Documents materialized by a write, returned to the cache once it commits.
pub(crate) type Materialized = Vec<(CaseId, CaseDoc, u64)>;

/// Number and stored bytes of the rows in `pending-1`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
struct PendingTotals {
    count: u64,
    bytes: u64,
}

/// A held change of the case being stored, known by its dependencies only
/// (its envelope is read again if it is released).
struct Held {
    deps: Vec<ChangeHash>,
}

/// The key bytes a `pending-1` value is sealed under.
fn pending_seal_key(key: &[u8; 16], hash: &ChangeHash) -> [u8; 48] {
    let mut k = [0u8; 48];
    k[..16].copy_from_slice(key);
    k[16..].copy_from_slice(&hash.0);
    k
}

fn dbe(op: &'static str) -> impl Fn(redb::StorageError) -> StoreError {
    move |e| StoreError::db(op)(e.into())
}

impl Store {
    /// Stores a batch from a peer in one durable transaction: its cases and
    /// changes (see the module docs for the rules), its quarantine entries,
    /// and the peer's cursor. All or nothing: on any error the store, the
    /// pending changes and the cursor are as they were.
    ///
    /// Fails with [`BundleError::PendingFull`] when the changes it would hold
    /// in pending exceed the store's [`PendingLimits`] (by default
    /// [`MAX_PENDING_CHANGES`] and [`MAX_PENDING_BYTES`]).
    pub fn ingest(&self, batch: Ingest, now: Timestamp) -> Result<IngestReport, BundleError> {
        self.ingest_with(batch, now, true)
    }

    /// Like [`Store::ingest`], committed without waiting for the disk: the
    /// batch is visible at once and durable at the next [`Store::flush`] (or
    /// any durable commit); a crash before that rolls it back whole, cursor
    /// included. For group commit: a driver ingests several peers' batches
    /// this way and flushes once, and acknowledges none of them before the
    /// flush returns.
    pub fn ingest_deferred(
        &self,
        batch: Ingest,
        now: Timestamp,
    ) -> Result<IngestReport, BundleError> {
        self.ingest_with(batch, now, false)
    }

    fn ingest_with(
        &self,
        batch: Ingest,
        now: Timestamp,
        durable: bool,
    ) -> Result<IngestReport, BundleError> {
        let Ingest {
            cases,
            quarantine,
            peer_cursor,
            peers,
            releases,
        } = batch;
        let mut tally = Tally::default();
        let mut quarantined = 0;
        let mut unquarantined = 0;
        let touched = crate::withdraw::touched_cases(&cases, &quarantine);
        let durability = if durable {
            redb::Durability::Immediate
        } else {
            redb::Durability::None
        };
        let docs = self.write_with("ingest", durability, |txn| -> Result<_, BundleError> {
            let before = self.log_head_in(txn)?;
            for (device, rec) in &peers {
                self.record_peer_in(txn, device, rec)?;
            }
            // Releases first: a released change is stored whatever its
            // sequence number (see `equivocation.rs`).
            unquarantined = self.releases_in(txn, releases)?;
            let docs = self.store_cases(txn, cases, Unplaced::Hold, now, &mut tally)?;
            quarantined = tally.quarantined + self.quarantine_in(txn, quarantine)?;
            // Held changes that now wait on a change beyond a revocation point.
            quarantined += self.divert_after_ingest_in(txn, &touched, now)?;
            if let Some((peer, cursor)) = peer_cursor {
                let previous = self.write_cursor_in(txn, &peer, &cursor)?;
                let after = self.log_head_in(txn)?;
                if after > before {
                    self.write_origin_in(txn, before + 1, after, &peer, cursor.epoch)?;
                }
                let from = previous
                    .filter(|c| c.epoch == cursor.epoch)
                    .map_or(0, |c| c.seq);
                self.write_custody_in(
                    txn,
                    &peer,
                    cursor.epoch,
                    from..=cursor.seq,
                    after,
                    quarantined > 0,
                )?;
            }
            Ok(docs)
        })?;
        self.cache_all(docs);
        let report = IngestReport {
            stored: tally.stored,
            duplicates: tally.duplicates,
            quarantined,
            pending: tally.pending,
            released_from_pending: tally.released,
            released_from_quarantine: unquarantined,
        };
        tracing::debug!(?report, "ingested a batch");
        Ok(report)
    }

    /// Returns materialized documents to the cache (after their commit).
    pub(crate) fn cache_all(&self, docs: Materialized) {
        for (case, doc, count) in docs {
            self.put_cached(case, doc, count);
        }
    }

    /// Stores verified cases and changes inside `txn` (see the module docs).
    pub(crate) fn store_cases(
        &self,
        txn: &WriteTransaction,
        batch: Vec<(VerifiedGenesis, Vec<VerifiedChange>)>,
        unplaced: Unplaced,
        now: Timestamp,
        tally: &mut Tally,
    ) -> Result<Materialized, BundleError> {
        let mut t = WriteTables::open(txn)?;
        let e = |e: redb::TableError| StoreError::db("ingest")(e.into());
        let mut pending = txn.open_table(PENDING).map_err(e)?;
        let mut meta = txn.open_table(META).map_err(e)?;
        let released = txn.open_table(RELEASES).map_err(e)?;
        let before: PendingTotals = read_meta(&meta, self.seal.as_ref(), "pending")?
            .map(|v| decode(&v, "pending totals"))
            .transpose()?
            .unwrap_or_default();
        let mut totals = before;
        let mut docs = Vec::new();
        let mut found = Found::default();
        for (genesis, changes) in batch {
            let doc = self.store_case(
                &mut Tables {
                    t: &mut t,
                    pending: &mut pending,
                    released: &released,
                },
                &mut totals,
                genesis,
                changes,
                unplaced,
                now,
                tally,
                &mut found,
            )?;
            docs.extend(doc);
        }
        if totals != before {
            let limits: PendingLimits = read_meta(&meta, self.seal.as_ref(), PENDING_LIMITS)?
                .map(|v| decode(&v, "pending limits"))
                .transpose()?
                .unwrap_or_default();
            if totals.count > limits.changes || totals.bytes > limits.bytes {
                return Err(BundleError::PendingFull {
                    changes: limits.changes,
                    bytes: limits.bytes,
                });
            }
            write_meta(&mut meta, self.seal.as_ref(), "pending", &encode(&totals)?)?;
        }
        drop((t, pending, meta, released));
        tally.quarantined += self.record_equivocations_in(txn, found)?;
        Ok(docs)
    }

    /// Stores one case's changes; returns its document on a device store
    /// when changes were applied.
    #[allow(clippy::too_many_arguments)]
    fn store_case(
        &self,
        tables: &mut Tables<'_, '_>,
        totals: &mut PendingTotals,
        genesis: VerifiedGenesis,
        changes: Vec<VerifiedChange>,
        unplaced: Unplaced,
        now: Timestamp,
        tally: &mut Tally,
        found: &mut Found,
    ) -> Result<Option<(CaseId, CaseDoc, u64)>, BundleError> {
        let Tables {
            t,
            pending,
            released,
        } = tables;
        let case = genesis.payload().value().case;
        let key = self.seal.case_key(&case);
        let genesis_bytes = encode_signed(genesis.as_signed());
        let conflict = || BundleError::GenesisConflict {
            case: case.to_string(),
        };
        let existing = match self.read_row(&t.cases, &key)? {
            Some(row) if row.genesis == genesis_bytes => Some(row),
            Some(_) => return Err(conflict()),
            None => None,
        };
        let held = self.held_of(pending, &key, &genesis_bytes, conflict)?;

        // The batch's changes that are new here.
        let mut fresh: BTreeMap<ChangeHash, SignedChange> = BTreeMap::new();
        for (index, change) in changes.into_iter().enumerate() {
            let signed_for = change.payload().case();
            if signed_for != case {
                return Err(BundleError::WrongCase {
                    case: case.to_string(),
                    index,
                    signed_for: signed_for.to_string(),
                });
            }
            let hash = change.payload().hash();
            if fresh.contains_key(&hash)
                || held.contains_key(&hash)
                || self.is_stored(&t.changes, &key, &hash)?
            {
                tally.duplicates += 1;
            } else {
                fresh.insert(hash, change.into_signed());
            }
        }
        if fresh.is_empty() {
            // Nothing new: no held change can have become ready either.
            return Ok(None);
        }

        let order = self.place(t, &key, &fresh, &held)?;
        let placed: BTreeSet<ChangeHash> = order.iter().copied().collect();

        // Changes that cannot be placed yet.
        let waiting: Vec<ChangeHash> = fresh
            .keys()
            .filter(|h| !placed.contains(h))
            .copied()
            .collect();
        if !waiting.is_empty() && unplaced == Unplaced::Refuse {
            return Err(BundleError::MissingDependencies {
                case: case.to_string(),
                count: waiting.len(),
            });
        }
        // What waits on an equivocating change would wait forever: hold it
        // in the quarantine instead, with the changes held in pending that
        // do too.
        let unplaced_deps: BTreeMap<ChangeHash, Vec<ChangeHash>> = waiting
            .iter()
            .filter_map(|h| fresh.get(h).map(|c| (*h, c.payload().deps())))
            .chain(
                held.iter()
                    .filter(|(h, _)| !placed.contains(h))
                    .map(|(h, held)| (*h, held.deps.clone())),
            )
            .collect();
        let doomed = if unplaced_deps.is_empty() {
            BTreeMap::new()
        } else {
            self.doomed_by_equivocation(t, &key, &unplaced_deps)?
        };
        for (hash, root) in &doomed {
            let change = match fresh.remove(hash) {
                Some(change) => change,
                None => self.release(pending, totals, &key, hash)?,
            };
            let signer = DeviceId::from_public_key(*change.signer());
            let root_signer = self
                .equivocation_row(t, &key, root)?
                .map_or(signer, |r| r.device);
            found.rows.push(crate::equivocation::dependent_row(
                &key,
                &case,
                hash,
                signer,
                crate::equivocation::actor_seq(&change),
                root,
                now,
            ));
            found.quarantine.push(QuarantineEntry {
                at: now,
                reason: crate::equivocation::equivocation_dependent_reason(root, &root_signer),
                case,
                signer,
                genesis: genesis_bytes.clone(),
                change: encode_change(&change),
            });
        }
        for hash in waiting {
            if let Some(change) = fresh.remove(&hash) {
                self.hold(pending, totals, &key, &hash, &genesis_bytes, &change)?;
                tally.pending += 1;
            }
        }

        // The placed changes, in causal order.
        let mut ordered: Vec<SignedChange> = Vec::with_capacity(order.len());
        for hash in &order {
            match fresh.remove(hash) {
                Some(change) => ordered.push(change),
                None => {
                    ordered.push(self.release(pending, totals, &key, hash)?);
                    tally.released += 1;
                }
            }
        }
        let (ordered, withdrew) = self.sort_equivocations(
            t,
            *released,
            &key,
            &case,
            &genesis_bytes,
            ordered,
            now,
            found,
        )?;
        let existing = if withdrew {
            self.read_row(&t.cases, &key)?
        } else {
            existing
        };
        if ordered.is_empty() {
            return Ok(None);
        }

        let is_new = existing.is_none();
        tally.new_cases += usize::from(is_new);
        let mut row = existing.unwrap_or_else(|| CaseRow::new(genesis_bytes, now));
        let doc = match self.kind() {
            StoreKind::Device => {
                let mut doc = if is_new {
                    CaseDoc::new(self.actor())
                } else {
                    let (doc, loaded) =
                        self.load_doc_checked(&case, &row, &t.snapshots, &t.changes, &t.log)?;
                    if loaded == Loaded::Rebuilt {
                        // Replace the unusable snapshot with this commit.
                        row.since_snapshot = row.since_snapshot.max(SNAPSHOT_EVERY);
                    }
                    doc
                };
                let raw: Vec<_> = ordered
                    .iter()
                    .map(|c| c.payload().change().clone())
                    .collect();
                doc.apply(raw).map_err(|error| BundleError::Apply {
                    case: case.to_string(),
                    error,
                })?;
                for change in &ordered {
                    let seq = self.next_seq(t)?;
                    self.append_change(t, &key, seq, change, &mut row)?;
                }
                self.finish_case(t, &key, &mut row, &mut doc, now)?;
                Some((case, doc, row.change_count))
            }
            StoreKind::Relay => {
                let mut heads: BTreeSet<[u8; 32]> = row.heads.iter().copied().collect();
                for change in &ordered {
                    let seq = self.next_seq(t)?;
                    self.append_change(t, &key, seq, change, &mut row)?;
                    // Every dependency is stored: it stops being a head, the change becomes one.
                    for dep in change.payload().deps() {
                        heads.remove(&dep.0);
                    }
                    heads.insert(change.payload().hash().0);
                }
                row.heads = heads.into_iter().collect();
                row.updated_at = now;
                self.write_row(t, &key, &row)?;
                None
            }
        };
        tally.stored += ordered.len();
        Ok(doc)
    }

    /// The held changes of the case stored under `key`, by hash. A held
    /// change filed under another genesis is a conflict.
    fn held_of(
        &self,
        pending: &Table<'_, (&'static [u8], &'static [u8]), &'static [u8]>,
        key: &[u8; 16],
        genesis: &[u8],
        conflict: impl Fn() -> BundleError,
    ) -> Result<BTreeMap<ChangeHash, Held>, BundleError> {
        let lo: &[u8] = &[0u8; 32];
        let hi: &[u8] = &[0xffu8; 32];
        let mut out = BTreeMap::new();
        for entry in pending
            .range((key.as_slice(), lo)..=(key.as_slice(), hi))
            .map_err(dbe("read pending"))?
        {
            let (k, v) = entry.map_err(dbe("read pending"))?;
            let hash = ChangeHash(crate::store::fixed(k.value().1, "pending change hash")?);
            let plain = self
                .seal
                .open(PENDING.name(), &pending_seal_key(key, &hash), v.value())
                .map_err(StoreError::from)?;
            let row: PendingRow = decode(&plain, "pending change")?;
            if row.genesis != genesis {
                return Err(conflict());
            }
            out.insert(
                hash,
                Held {
                    deps: row.deps.into_iter().map(ChangeHash).collect(),
                },
            );
        }
        Ok(out)
    }

    /// Orders the fresh and held changes that can be stored now so that
    /// every change follows its dependencies (Kahn's algorithm, in hash order
    /// among equals, so the result is deterministic). Changes with a
    /// dependency that is neither stored nor placeable are left out.
    fn place(
        &self,
        t: &WriteTables<'_>,
        key: &[u8; 16],
        fresh: &BTreeMap<ChangeHash, SignedChange>,
        held: &BTreeMap<ChangeHash, Held>,
    ) -> Result<Vec<ChangeHash>, StoreError> {
        let mut deps_of: BTreeMap<ChangeHash, Vec<ChangeHash>> = BTreeMap::new();
        for (hash, change) in fresh {
            deps_of.insert(*hash, change.payload().deps());
        }
        for (hash, h) in held {
            deps_of.insert(*hash, h.deps.clone());
        }
        let mut unresolved: BTreeMap<ChangeHash, usize> = BTreeMap::new();
        let mut dependents: BTreeMap<ChangeHash, Vec<ChangeHash>> = BTreeMap::new();
        let mut blocked: BTreeSet<ChangeHash> = BTreeSet::new();
        for (hash, deps) in &deps_of {
            let mut n = 0;
            for dep in deps {
                if deps_of.contains_key(dep) {
                    n += 1;
                    dependents.entry(*dep).or_default().push(*hash);
                } else if !self.is_stored(&t.changes, key, dep)? {
                    blocked.insert(*hash);
                }
            }
            unresolved.insert(*hash, n);
        }
        let mut queue: VecDeque<ChangeHash> = unresolved
            .iter()
            .filter(|(h, n)| **n == 0 && !blocked.contains(h))
            .map(|(h, _)| *h)
            .collect();
        let mut order = Vec::with_capacity(deps_of.len());
        while let Some(hash) = queue.pop_front() {
            order.push(hash);
            for next in dependents.get(&hash).into_iter().flatten() {
                if let Some(n) = unresolved.get_mut(next) {
                    *n = n.saturating_sub(1);
                    if *n == 0 && !blocked.contains(next) {
                        queue.push_back(*next);
                    }
                }
            }
        }
        Ok(order)
    }

    /// Puts one change in `pending-1`.
    fn hold(
        &self,
        pending: &mut Table<'_, (&'static [u8], &'static [u8]), &'static [u8]>,
        totals: &mut PendingTotals,
        key: &[u8; 16],
        hash: &ChangeHash,
        genesis: &[u8],
        change: &SignedChange,
    ) -> Result<(), StoreError> {
        let row = PendingRow {
            genesis: genesis.to_vec(),
            deps: change.payload().deps().into_iter().map(|h| h.0).collect(),
            change: encode_change(change),
        };
        let sealed = self
            .seal
            .seal(PENDING.name(), &pending_seal_key(key, hash), &encode(&row)?);
        totals.count += 1;
        totals.bytes += sealed.len() as u64;
        pending
            .insert((key.as_slice(), hash.0.as_slice()), sealed.as_slice())
            .map_err(dbe("hold a change"))?;
        Ok(())
    }

    /// Takes one change out of `pending-1`.
    fn release(
        &self,
        pending: &mut Table<'_, (&'static [u8], &'static [u8]), &'static [u8]>,
        totals: &mut PendingTotals,
        key: &[u8; 16],
        hash: &ChangeHash,
    ) -> Result<SignedChange, StoreError> {
        let sealed = pending
            .remove((key.as_slice(), hash.0.as_slice()))
            .map_err(dbe("release a change"))?
            .ok_or_else(|| StoreError::corrupt(format!("pending change {hash} vanished")))?
            .value()
            .to_vec();
        totals.count = totals.count.saturating_sub(1);
        totals.bytes = totals.bytes.saturating_sub(sealed.len() as u64);
        let plain = self
            .seal
            .open(PENDING.name(), &pending_seal_key(key, hash), &sealed)?;
        let row: PendingRow = decode(&plain, "pending change")?;
        decode_change(&row.change)
            .map_err(|e| StoreError::corrupt(format!("pending change {hash}: {e}")))
    }

    /// The pending limits in force ([`PendingLimits::default`] unless set).
    pub fn pending_limits(&self) -> Result<PendingLimits, StoreError> {
        let txn = self.read()?;
        let meta = txn
            .open_table(META)
            .map_err(|e| StoreError::db("read pending limits")(e.into()))?;
        Ok(read_meta(&meta, self.seal.as_ref(), PENDING_LIMITS)?
            .map(|v| decode(&v, "pending limits"))
            .transpose()?
            .unwrap_or_default())
    }

    /// Sets the pending limits, durably. Lower limits than what is held
    /// refuse every batch that would hold more, until dependencies arrive.
    pub fn set_pending_limits(&self, limits: PendingLimits) -> Result<(), StoreError> {
        self.write("write pending limits", |txn| {
            let mut meta = txn
                .open_table(META)
                .map_err(|e| StoreError::db("write pending limits")(e.into()))?;
            write_meta(
                &mut meta,
                self.seal.as_ref(),
                PENDING_LIMITS,
                &encode(&limits)?,
            )
        })
    }

    /// Number of changes held in pending, waiting for their dependencies.
    pub fn pending_len(&self) -> Result<usize, StoreError> {
        let txn = self.read()?;
        let pending = txn
            .open_table(PENDING)
            .map_err(|e| StoreError::db("read pending")(e.into()))?;
        let n = pending.len().map_err(dbe("read pending"))?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }
}
