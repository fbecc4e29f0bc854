//! A store file damaged outside FieldSync: refused when opened, and
//! salvaged into a new store by [`Store::repair`].
//!
//! redb keeps a checksum of every page of its trees, but checks them only
//! when it recovers from a crash or is asked to. [`open_checked`] asks, on
//! every open of a store file: a file that fails (a flipped bit, a torn or
//! truncated copy, a page overwritten) is refused with
//! [`StoreError::Damaged`], which names the `repair` command; nothing in it
//! is changed or deleted. (After a crash, redb rolls back a newest commit
//! whose pages fail while the one before is intact, as it must for a write
//! torn by the power cut; in a file that was closed cleanly the same is
//! damage, and refused.)
//!
//! [`Store::repair`] never deletes anything either. It reads the damaged
//! file through a backend that keeps redb's own writes in memory (so the
//! file stays exactly as it was), reading every row it can, one at a time,
//! so that a bad page costs the rows on it and no more. Every change and
//! genesis it salvages is verified again (signature, actor binding) before
//! it is kept. It writes a new store next to the old one, then keeps the
//! damaged file aside under a new name (`store.redb.damaged`,
//! `store.redb.damaged-2`, …) and puts the new store in its place. The new
//! store has a new log epoch (its log positions are new: peers repair
//! against it as against a restored relay) and, on a device, a new
//! incarnation (so that its next changes never reuse a sequence number of a
//! change that was lost here but reached a relay). Cursors, receipts and
//! custody checkpoints are not carried over: the next sync rebuilds them.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, Read as _, Seek as _, SeekFrom};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use fieldsync_case::{
    ChangeHash, Genesis, SignedChange, VerifiedChange, VerifiedGenesis, decode_change,
    verify_genesis,
};
use fieldsync_identity::{CaseId, DeviceId, PublicKey, Timestamp, decode_signed, verify_batch};
use redb::{
    Database, ReadableDatabase, ReadableTable, StorageBackend, TableDefinition, TableHandle,
};
use serde::Serialize;

use crate::audit::{AuditEvent, AuditKind, QuarantineEntry};
use crate::error::StoreError;
use crate::ingest::{Ingest, PendingLimits};
use crate::peers::PeerRecord;
use crate::rows::{CaseRow, DeviceRecord, PendingRow, decode, encode};
use crate::seal::{PlainSeal, Seal};
use crate::store::{NewDevice, Store, StoreKind, StoreOptions, write_meta};
use crate::tables::{AUDIT, CASES, DEVICES, LOG, META, PENDING, QUARANTINE, RELEASES};

/// Opens a store file, checking every page checksum first (see the module
/// docs). A damaged file gives [`StoreError::Damaged`] and is not written
/// to; one that another process holds, [`StoreError::Busy`].
///
/// A file closed cleanly is checked through [`ReadOnlyFile`] (what redb
/// writes while checking stays in memory): one read of the file, no write.
/// A file left open by a crash (or held by another process) is not: the
/// file itself is then opened as usual, and redb's crash recovery checks
/// every page of the newest commits before it writes anything.
pub(crate) fn open_checked(path: &Path, options: &StoreOptions) -> Result<Database, StoreError> {
    if let Err(detail) = check_file(path, options) {
        // Another process may hold it, in the middle of a commit: then it is
        // busy, not damaged. Asking costs no write.
        let held = catch_unwind(|| redb::ReadOnlyDatabase::open(path))
            .is_ok_and(|r| matches!(r, Err(redb::DatabaseError::DatabaseAlreadyOpen)));
        if held {
            return Err(StoreError::Busy {
                path: path.to_owned(),
            });
        }
        return Err(StoreError::Damaged {
            path: path.to_owned(),
            detail,
        });
    }
    match catch_unwind(|| options.builder().open(path)) {
        Ok(result) => result.map_err(|e| crate::store::open_error(path, e)),
        Err(panic) => Err(StoreError::Damaged {
            path: path.to_owned(),
            detail: format!("reading it made redb panic: {}", panic_text(panic.as_ref())),
        }),
    }
}

/// The page cache of the integrity check that precedes every open. The
/// check reads each page once, so a cache buys it nothing; with redb's
/// default the check alone would fill up to 1 GiB of memory, freed when it
/// ends but kept by the allocator for the rest of the process's life.
const CHECK_CACHE_SIZE: usize = 1024 * 1024;

/// Checks every page checksum of a store file closed cleanly, without
/// writing to it: what is wrong, if anything (see [`open_checked`]).
fn check_file(path: &Path, options: &StoreOptions) -> Result<(), String> {
    let backend = ReadOnlyFile::open(path).map_err(|e| format!("cannot read it: {e}"))?;
    let options = options.with_cache_size(options.cache_size.min(CHECK_CACHE_SIZE));
    // A file that needs crash recovery is left to the open's recovery: the
    // callback stops this copy's before it starts.
    let opened = catch_unwind(AssertUnwindSafe(|| {
        options
            .builder()
            .set_repair_callback(|session| session.abort())
            .create_with_backend(backend)
    }));
    let mut db = match opened {
        Ok(Ok(db)) => db,
        Ok(Err(redb::DatabaseError::RepairAborted)) => return Ok(()),
        Ok(Err(e)) => return Err(e.to_string()),
        Err(panic) => {
            return Err(format!(
                "reading it made redb panic: {}",
                panic_text(panic.as_ref())
            ));
        }
    };
    match catch_unwind(AssertUnwindSafe(|| db.check_integrity())) {
        Ok(Ok(true)) => Ok(()),
        // A file closed cleanly whose newest commit fails while the one
        // before is intact.
        Ok(Ok(false)) => Err("its newest commit fails its checksums".into()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(panic) => Err(format!(
            "checking it made redb panic: {}",
            panic_text(panic.as_ref())
        )),
    }
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_owned())
}

/// What [`Store::repair`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RepairReport {
    /// The new store (where the damaged one was).
    pub path: PathBuf,
    /// Where the damaged file was kept, unchanged.
    pub damaged: PathBuf,
    /// What the integrity check found (`None`: the file passed it, and was
    /// salvaged for values that fail to decode or verify).
    pub check: Option<String>,
    /// Whether the file had to be read byte by byte (redb could not open it).
    pub raw_scan: bool,
    /// The new store's device incarnation.
    pub incarnation: u32,
    /// Cases recovered (with at least one change).
    pub cases: usize,
    /// Signed changes recovered, each verified again.
    pub changes: usize,
    /// Of those, changes whose dependencies were lost: held in pending
    /// until a peer sends them again.
    pub pending: usize,
    /// Quarantine entries recovered.
    pub quarantined: usize,
    /// Peer records (certificates) recovered.
    pub peers: usize,
    /// Audit events recovered (a new one records the repair).
    pub audit: usize,
    /// Log positions, rows and values that could not be read or failed
    /// verification.
    pub lost: usize,
    /// One line per loss, for a person (the first 100).
    pub problems: Vec<String>,
}

impl RepairReport {
    fn lose(&mut self, what: String) {
        self.lost += 1;
        if self.problems.len() < 100 {
            self.problems.push(what);
        }
    }
}

/// What [`Store::repair`] needs besides the path.
#[derive(Debug, Clone, Copy)]
pub struct RepairOptions {
    /// The new store's log epoch: 16 random bytes.
    pub epoch: [u8; 16],
    /// The time.
    pub now: Timestamp,
    /// The device this store belongs to, when it is known elsewhere (a
    /// relay's certificate file): lets a repair that must read raw bytes
    /// recognize the identity of a store that signed no change itself.
    pub device: Option<DeviceId>,
    /// What the store is, when known elsewhere (the binary that runs the
    /// repair), for the same case.
    pub kind: Option<StoreKind>,
}

/// Everything salvaged from a damaged file, verified.
#[derive(Default)]
struct Salvaged {
    device: Option<DeviceRecord>,
    kind: Option<StoreKind>,
    /// Meta values to carry over, opened.
    meta: Vec<(String, Vec<u8>)>,
    /// Cases in the order of their first change in the log.
    order: Vec<CaseId>,
    geneses: BTreeMap<CaseId, VerifiedGenesis>,
    changes: BTreeMap<CaseId, Vec<VerifiedChange>>,
    pending: Vec<(CaseId, VerifiedChange)>,
    quarantine: Vec<QuarantineEntry>,
    releases: Vec<(CaseId, ChangeHash, Vec<u8>)>,
    peers: Vec<(DeviceId, PeerRecord)>,
    audit: Vec<crate::audit::AuditEvent>,
}

/// Meta keys a repaired store writes itself rather than carrying over.
const REBUILT_META: [&str; 8] = [
    "schema",
    "device",
    "epoch",
    "kind",
    "outbox-acked",
    "pending",
    "quarantine-last",
    "revocations-applied",
];

impl Store {
    /// Salvages a damaged store file in the clear (see the module docs).
    /// Refuses with [`StoreError::Busy`] while another process holds the
    /// store, and with [`StoreError::Damaged`] when not even the device
    /// identity can be read (there is then nothing to repair into; the file
    /// is left as it was).
    pub fn repair(path: &Path, how: &RepairOptions) -> Result<RepairReport, StoreError> {
        Self::repair_sealed(path, &PlainSeal, PlainSeal, how)
    }

    /// [`Store::repair`] for a store whose values pass through a seal: the
    /// damaged file is read with `damaged`, and the new store is written
    /// with `new` (the same kind and key, in practice).
    pub fn repair_sealed(
        path: &Path,
        damaged: &dyn Seal,
        new: impl Seal + 'static,
        how: &RepairOptions,
    ) -> Result<RepairReport, StoreError> {
        let RepairOptions { epoch, now, .. } = *how;
        if !path.is_file() {
            return Err(StoreError::NotInitialized {
                path: path.to_owned(),
            });
        }
        let mut report = RepairReport {
            path: path.to_owned(),
            ..RepairReport::default()
        };
        match open_checked(path, &StoreOptions::default()) {
            Ok(db) => drop(db),
            Err(StoreError::Damaged { detail, .. }) => report.check = Some(detail),
            Err(e) => return Err(e),
        }
        let salvaged = match salvage_with_redb(path, damaged, &mut report)? {
            Some(s) => s,
            None => {
                report.raw_scan = true;
                salvage_raw(path, damaged, how, &mut report)?
            }
        };
        let (Some(device), Some(kind)) = (salvaged.device.as_ref(), salvaged.kind) else {
            return Err(StoreError::Damaged {
                path: path.to_owned(),
                detail: "this store's device identity cannot be read, so there is nothing to repair into; the file was left as it was".into(),
            });
        };
        let building = unique(path, "repairing");
        let incarnation = device.incarnation.saturating_add(1);
        report.incarnation = incarnation;
        {
            let store = Store::create_sealed(
                &building,
                NewDevice {
                    seed: device.seed,
                    name: &device.name,
                    epoch,
                    now,
                    kind,
                },
                new,
            )?;
            store.fill(&salvaged, device, incarnation, now, &mut report)?;
        }
        let aside = unique(path, "damaged");
        std::fs::rename(path, &aside).map_err(|e| StoreError::Damaged {
            path: path.to_owned(),
            detail: format!(
                "the repaired store is at {}, but the damaged file could not be moved aside: {e}",
                building.display()
            ),
        })?;
        std::fs::rename(&building, path).map_err(|e| StoreError::Damaged {
            path: path.to_owned(),
            detail: format!(
                "the damaged file is at {} and the repaired store at {}, which could not be moved into place: {e}",
                aside.display(),
                building.display()
            ),
        })?;
        report.damaged = aside;
        tracing::warn!(
            path = %path.display(),
            cases = report.cases,
            changes = report.changes,
            lost = report.lost,
            "damaged store repaired"
        );
        Ok(report)
    }

    /// Writes what was salvaged into this (new) store.
    fn fill(
        &self,
        s: &Salvaged,
        device: &DeviceRecord,
        incarnation: u32,
        now: Timestamp,
        report: &mut RepairReport,
    ) -> Result<(), StoreError> {
        // Everything salvaged may wait for lost dependencies.
        let limits = self.pending_limits()?;
        self.set_pending_limits(PendingLimits {
            changes: u64::MAX,
            bytes: u64::MAX,
        })?;
        for (peer, rec) in &s.peers {
            self.write("repair", |txn| self.record_peer_in(txn, peer, rec))?;
        }
        report.peers = s.peers.len();
        let mut pending: BTreeMap<CaseId, Vec<VerifiedChange>> = BTreeMap::new();
        for (case, change) in &s.pending {
            pending.entry(*case).or_default().push(change.clone());
        }
        let cases: Vec<CaseId> = s
            .order
            .iter()
            .copied()
            .chain(
                pending
                    .keys()
                    .filter(|c| !s.changes.contains_key(c))
                    .copied(),
            )
            .collect();
        for case in cases {
            let Some(genesis) = s.geneses.get(&case) else {
                continue;
            };
            let mut changes = s.changes.get(&case).cloned().unwrap_or_default();
            changes.extend(pending.remove(&case).unwrap_or_default());
            let releases = s
                .releases
                .iter()
                .filter(|(c, _, _)| *c == case)
                .cloned()
                .collect();
            let n = changes.len();
            match self.ingest(
                Ingest {
                    cases: vec![(genesis.clone(), changes)],
                    releases,
                    ..Ingest::default()
                },
                now,
            ) {
                Ok(r) => {
                    report.cases += usize::from(r.stored > 0);
                    report.changes += r.stored + r.pending;
                    report.pending += r.pending;
                }
                Err(e) => report.lose(format!(
                    "case {case}: its {n} changes cannot be stored: {e}"
                )),
            }
        }
        report.quarantined = self.write("repair", |txn| {
            self.quarantine_in(txn, s.quarantine.clone())
        })?;
        report.audit = s.audit.len();
        let detail = format!(
            "store repaired from a damaged file: {} cases, {} changes, {} quarantine entries, {} peers recovered; {} losses",
            report.cases, report.changes, report.quarantined, report.peers, report.lost
        );
        self.write("repair", |txn| {
            let mut meta = txn
                .open_table(META)
                .map_err(|e| StoreError::db("repair")(e.into()))?;
            for (k, v) in &s.meta {
                write_meta(&mut meta, self.seal.as_ref(), k, v)?;
            }
            let record = DeviceRecord {
                seed: device.seed,
                name: device.name.clone(),
                incarnation,
                created_at: device.created_at,
            };
            write_meta(&mut meta, self.seal.as_ref(), "device", &encode(&record)?)?;
            drop(meta);
            for ev in &s.audit {
                self.audit_in(txn, ev)?;
            }
            self.audit_in(
                txn,
                &AuditEvent {
                    at: now,
                    kind: AuditKind::Repaired,
                    detail: detail.clone(),
                },
            )
        })?;
        // The limits the damaged store had, or the defaults.
        let carried = s.meta.iter().any(|(k, _)| k == "pending-limits");
        if !carried {
            self.set_pending_limits(limits)?;
        }
        Ok(())
    }
}

/// `path` with `.{what}` appended, or `.{what}-2`, `-3`, … so that nothing
/// existing is overwritten.
fn unique(path: &Path, what: &str) -> PathBuf {
    let base = path.as_os_str().to_owned();
    for n in 1u32.. {
        let mut name = base.clone();
        if n == 1 {
            name.push(format!(".{what}"));
        } else {
            name.push(format!(".{what}-{n}"));
        }
        let candidate = PathBuf::from(name);
        if !candidate.exists() {
            return candidate;
        }
    }
    unreachable!("some name is free")
}

// ---- reading a damaged file without changing it ----

/// A redb backend over a file opened for reading: redb's writes (its
/// recovery, its header flags) go to memory, so the file is never changed.
#[derive(Debug)]
struct ReadOnlyFile {
    file: Mutex<File>,
    len: Mutex<u64>,
    /// Writes, in order: (offset, bytes).
    written: Mutex<Vec<(u64, Vec<u8>)>>,
}

impl ReadOnlyFile {
    fn open(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        Ok(Self {
            file: Mutex::new(file),
            len: Mutex::new(len),
            written: Mutex::new(Vec::new()),
        })
    }
}

impl StorageBackend for ReadOnlyFile {
    fn len(&self) -> Result<u64, io::Error> {
        Ok(*self.len.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        let len = self.len()?;
        let end = offset
            .checked_add(out.len() as u64)
            .filter(|end| *end <= len)
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        out.fill(0);
        {
            let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
            let on_disk = file.metadata()?.len();
            if offset < on_disk {
                let n = usize::try_from(on_disk.min(end) - offset).map_err(io::Error::other)?;
                file.seek(SeekFrom::Start(offset))?;
                file.read_exact(&mut out[..n])?;
            }
        }
        for (at, bytes) in self
            .written
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            let (from, to) = (*at.max(&offset), (at + bytes.len() as u64).min(end));
            if from < to {
                let (src, dst) = ((from - at) as usize, (from - offset) as usize);
                let n = (to - from) as usize;
                out[dst..dst + n].copy_from_slice(&bytes[src..src + n]);
            }
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        *self.len.lock().unwrap_or_else(PoisonError::into_inner) = len;
        Ok(())
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.written
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((offset, data.to_vec()));
        Ok(())
    }
}

/// Runs a read that may fail or make redb panic on a damaged page.
fn tolerant<T>(f: impl FnOnce() -> Result<T, redb::Error>) -> Option<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Some(v),
        _ => None,
    }
}

/// One value of a table, read tolerantly.
fn get<K: redb::Key + 'static>(
    db: &Database,
    table: TableDefinition<K, &'static [u8]>,
    key: K::SelfType<'_>,
) -> Option<Vec<u8>> {
    tolerant(|| {
        let txn = db.begin_read()?;
        let t = txn.open_table(table)?;
        Ok(t.get(key)?.map(|v| v.value().to_vec()))
    })
    .flatten()
}

/// Every entry of a table that iteration reaches, read tolerantly: it stops
/// at the first damaged page (keyed lookups get past it where keys are known).
fn entries<K: redb::Key + 'static>(
    db: &Database,
    table: TableDefinition<K, &'static [u8]>,
    mut each: impl FnMut(K::SelfType<'_>, &[u8]),
) {
    let _ = catch_unwind(AssertUnwindSafe(|| -> Result<(), redb::Error> {
        let txn = db.begin_read()?;
        let t = txn.open_table(table)?;
        for entry in t.iter()? {
            let (k, v) = entry?;
            each(k.value(), v.value());
        }
        Ok(())
    }));
}

/// The highest key of a u64-keyed table, if it can be read.
fn last_key(db: &Database, table: TableDefinition<u64, &'static [u8]>) -> Option<u64> {
    tolerant(|| {
        let txn = db.begin_read()?;
        let t = txn.open_table(table)?;
        Ok(t.last()?.map(|(k, _)| k.value()))
    })
    .flatten()
}

/// Reads every u64 key of a table from 1: up to the last key when it can be
/// read, else until a long run of missing keys.
fn probe_u64(
    db: &Database,
    table: TableDefinition<u64, &'static [u8]>,
) -> Vec<(u64, Option<Vec<u8>>)> {
    let last = last_key(db, table);
    let mut out = Vec::new();
    let mut misses = 0;
    let mut k = 1u64;
    loop {
        if let Some(last) = last {
            if k > last {
                break;
            }
        } else if misses > 10_000 {
            break;
        }
        let v = get(db, table, k);
        misses = if v.is_some() { 0 } else { misses + 1 };
        if last.is_some() || v.is_some() {
            out.push((k, v));
        }
        k += 1;
    }
    out
}

/// Verifies salvaged changes: in one batch, and one by one when the batch fails.
fn verify_salvaged(
    signed: Vec<(u64, SignedChange)>,
    report: &mut RepairReport,
) -> Vec<(u64, VerifiedChange)> {
    let (seqs, changes): (Vec<u64>, Vec<SignedChange>) = signed.into_iter().unzip();
    if let Ok(v) = verify_batch(changes.clone()) {
        return seqs.into_iter().zip(v).collect();
    }
    let mut out = Vec::new();
    for (seq, c) in seqs.into_iter().zip(changes) {
        match c.verify() {
            Ok(v) => out.push((seq, v)),
            Err(e) => report.lose(format!("log entry {seq}: {e}")),
        }
    }
    out
}

fn verified_genesis(bytes: &[u8]) -> Option<VerifiedGenesis> {
    decode_signed::<Genesis>(bytes)
        .ok()
        .and_then(|g| verify_genesis(g).ok())
}

/// Salvages with redb reading the file (through [`ReadOnlyFile`]); `None`
/// when redb cannot open it at all.
fn salvage_with_redb(
    path: &Path,
    seal: &dyn Seal,
    report: &mut RepairReport,
) -> Result<Option<Salvaged>, StoreError> {
    let backend = ReadOnlyFile::open(path).map_err(|e| StoreError::Damaged {
        path: path.to_owned(),
        detail: format!("cannot read it: {e}"),
    })?;
    let opened = catch_unwind(AssertUnwindSafe(|| {
        Database::builder().create_with_backend(backend)
    }));
    let Ok(Ok(db)) = opened else {
        return Ok(None);
    };
    let mut s = Salvaged::default();

    // Meta.
    let meta = |key: &str| {
        get(&db, META, key).and_then(|v| seal.open(META.name(), key.as_bytes(), &v).ok())
    };
    s.device = meta("device").and_then(|v| decode(&v, "device identity").ok());
    s.kind = meta("kind").and_then(|v| match v.as_slice() {
        [0] => Some(StoreKind::Device),
        [1] => Some(StoreKind::Relay),
        _ => None,
    });
    entries(&db, META, |k, v| {
        if REBUILT_META.contains(&k) {
            return;
        }
        match seal.open(META.name(), k.as_bytes(), v) {
            // A revocation list is kept only if its signature still holds:
            // a damaged one would stop the node at its next start.
            Ok(plain)
                if k == "revocations"
                    && fieldsync_identity::decode_signed::<
                        fieldsync_identity::RevocationListBody,
                    >(&plain)
                    .map_err(|_| ())
                    .and_then(|signed| signed.verify().map_err(|_| ()))
                    .is_err() =>
            {
                report.lose(
                    "the revocation list: its signature no longer verifies (at headquarters, revoke the devices again; elsewhere it comes back at the next sync)"
                        .to_owned(),
                );
            }
            Ok(plain) => s.meta.push((k.to_owned(), plain)),
            Err(e) => report.lose(format!("setting {k}: {e}")),
        }
    });

    // The log, position by position.
    let mut signed = Vec::new();
    for (seq, value) in probe_u64(&db, LOG) {
        let Some(value) = value else {
            report.lose(format!("log entry {seq}: unreadable"));
            continue;
        };
        let plain = match seal.open(LOG.name(), &seq.to_be_bytes(), &value) {
            Ok(p) => p,
            Err(e) => {
                report.lose(format!("log entry {seq}: {e}"));
                continue;
            }
        };
        if crate::withdraw::is_tombstone(&plain) {
            continue;
        }
        match decode_change(&plain) {
            Ok(c) => signed.push((seq, c)),
            Err(e) => report.lose(format!("log entry {seq}: {e}")),
        }
    }
    for (_, change) in verify_salvaged(signed, report) {
        let case = change.payload().case();
        if !s.changes.contains_key(&case) {
            s.order.push(case);
        }
        s.changes.entry(case).or_default().push(change);
    }

    // Pending changes (verified when they arrived; verified again).
    entries(&db, PENDING_DEF, |(ck, h), v| {
        let mut sk = ck.to_vec();
        sk.extend_from_slice(h);
        let row: Option<PendingRow> = seal
            .open(PENDING.name(), &sk, v)
            .ok()
            .and_then(|p| decode(&p, "pending change").ok());
        let change = row.as_ref().and_then(|r| {
            decode_change(&r.change)
                .ok()
                .and_then(|c| c.verify().ok())
                .map(|c| (c, r.genesis.clone()))
        });
        match change {
            Some((c, genesis)) => {
                let case = c.payload().case();
                if let Some(g) = verified_genesis(&genesis) {
                    s.geneses.entry(case).or_insert(g);
                }
                s.pending.push((case, c));
            }
            None => report.lose("a pending change: unreadable or fails verification".into()),
        }
    });

    // Geneses, from the case rows.
    let cases: BTreeSet<CaseId> = s
        .order
        .iter()
        .copied()
        .chain(s.pending.iter().map(|(c, _)| *c))
        .collect();
    for case in &cases {
        if s.geneses.contains_key(case) {
            continue;
        }
        let key = seal.case_key(case);
        let row: Option<CaseRow> = get(&db, CASES, key.as_slice())
            .and_then(|v| seal.open(CASES.name(), &key, &v).ok())
            .and_then(|p| decode(&p, "case row").ok());
        match row.and_then(|r| verified_genesis(&r.genesis)) {
            Some(g) if g.payload().value().case == *case => {
                s.geneses.insert(*case, g);
            }
            _ => {}
        }
    }

    // The quarantine and the audit trail.
    for (id, value) in probe_u64(&db, QUARANTINE) {
        let entry: Option<QuarantineEntry> = value
            .and_then(|v| seal.open(QUARANTINE.name(), &id.to_be_bytes(), &v).ok())
            .and_then(|p| decode(&p, "quarantine entry").ok());
        let verified = entry.filter(|e| {
            decode_change(&e.change).is_ok_and(|c| c.verify().is_ok())
                && verified_genesis(&e.genesis).is_some()
        });
        match verified {
            Some(e) => {
                if let Some(g) = verified_genesis(&e.genesis) {
                    s.geneses.entry(e.case).or_insert(g);
                }
                s.quarantine.push(e);
            }
            None => report.lose(format!(
                "quarantine entry {id}: unreadable or fails verification"
            )),
        }
    }
    for (id, value) in probe_u64(&db, AUDIT) {
        match value
            .and_then(|v| seal.open(AUDIT.name(), &id.to_be_bytes(), &v).ok())
            .and_then(|p| decode::<crate::audit::AuditEvent>(&p, "audit event").ok())
        {
            Some(ev) => s.audit.push(ev),
            None => report.lose(format!("audit event {id}: unreadable")),
        }
    }

    // Peers and releases.
    entries(&db, DEVICES, |k, v| {
        let rec: Option<PeerRecord> = seal
            .open(DEVICES.name(), k, v)
            .ok()
            .and_then(|p| decode(&p, "peer record").ok());
        let id = PublicKey::from_slice(k).ok().map(DeviceId::from_public_key);
        match (id, rec) {
            (Some(id), Some(rec)) => s.peers.push((id, rec)),
            _ => report.lose("a peer record: unreadable".into()),
        }
    });
    entries(&db, RELEASES_DEF, |(ck, h), v| {
        let mut sk = ck.to_vec();
        sk.extend_from_slice(h);
        let Ok(hash) = <[u8; 32]>::try_from(h) else {
            return;
        };
        let case = cases
            .iter()
            .find(|c| seal.case_key(c).as_slice() == ck)
            .copied();
        match (case, seal.open(RELEASES.name(), &sk, v)) {
            (Some(case), Ok(bytes)) => s.releases.push((case, ChangeHash(hash), bytes)),
            (None, _) => {}
            (_, Err(e)) => report.lose(format!("a release: {e}")),
        }
    });

    for case in &cases {
        if !s.geneses.contains_key(case) {
            let n = s.changes.get(case).map_or(0, Vec::len);
            report.lose(format!(
                "case {case}: its genesis is unreadable, so its {n} changes cannot be kept"
            ));
        }
    }
    Ok(Some(s))
}

const PENDING_DEF: TableDefinition<(&[u8], &[u8]), &[u8]> = PENDING;
const RELEASES_DEF: TableDefinition<(&[u8], &[u8]), &[u8]> = RELEASES;

/// Salvages from the raw bytes of a file redb cannot open: change
/// envelopes and geneses are found where they lie (values are stored
/// whole, in the clear behind a one-byte tag with the plain seal), and kept
/// only if they verify. The device identity is found by its record's shape
/// only with the plain seal too. An encrypted file yields nothing this way.
fn salvage_raw(
    path: &Path,
    seal: &dyn Seal,
    how: &RepairOptions,
    report: &mut RepairReport,
) -> Result<Salvaged, StoreError> {
    let _ = seal;
    let bytes = std::fs::read(path).map_err(|e| StoreError::Damaged {
        path: path.to_owned(),
        detail: format!("cannot read it: {e}"),
    })?;
    let mut s = Salvaged::default();
    let found = crate::repair_scan::scan(&bytes, how.device);
    s.device = found.device;
    s.kind = how.kind.or(found.kind);
    let mut seen = BTreeSet::new();
    let mut signed = Vec::new();
    for (at, env) in found.changes {
        if let Ok(c) = decode_change(&env)
            && seen.insert(c.payload().hash())
        {
            signed.push((at, c));
        }
    }
    for (_, change) in verify_salvaged(signed, report) {
        let case = change.payload().case();
        if !s.changes.contains_key(&case) {
            s.order.push(case);
        }
        s.changes.entry(case).or_default().push(change);
    }
    for g in found.geneses {
        if let Some(g) = verified_genesis(&g) {
            s.geneses.entry(g.payload().value().case).or_insert(g);
        }
    }
    for case in &s.order {
        if !s.geneses.contains_key(case) {
            report.lose(format!(
                "case {case}: no genesis found, so its changes cannot be kept"
            ));
        }
    }
    report.lose("the file's structure is unreadable: only changes and geneses found by their shape were kept (no quarantine, peers, settings or audit trail)".into());
    Ok(s)
}
