//! Local store benchmarks, each beside its baseline measured in the same run.
//!
//! 1. Local edit latency (load, edit, sign, durable commit) against a bare
//!    redb durable commit of a row of the same size: p50 and p99, and their ratio.
//! 2. Opening a store of 1,000 cases × 50 changes and listing it.
//! 3. Showing one case of 10,000 changes (snapshot + tail), from a fresh open.
//! 4. Store bytes per change against the raw change bytes plus signature.
//!
//! `cargo bench -p fieldsync-tests --bench local` (set `BENCH_QUICK=1` for a short run).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::Criterion;
use fieldsync_case::{
    CaseDoc, CaseKind, VerifiedChange, VerifiedGenesis, new_genesis, payload_for_local,
};
use fieldsync_identity::{CaseId, DeviceId, SecretKey, Timestamp, sign};
use fieldsync_store::{NewCase, NewDevice, Store, StoreKind};
use redb::{Database, Durability, TableDefinition};

const T0: i64 = 1_790_000_000_000;

fn quick() -> bool {
    std::env::var_os("BENCH_QUICK").is_some()
}

fn new_store(path: &Path) -> Store {
    Store::create(
        path,
        NewDevice {
            seed: [3; 32],
            name: "bench",
            epoch: [4; 16],
            now: Timestamp::from_millis(T0),
            kind: StoreKind::Device,
        },
    )
    .unwrap()
}

/// A case of `n` changes made by `key`, as verified genesis and changes.
fn synthetic_case(
    key: &SecretKey,
    id: CaseId,
    n: usize,
) -> (VerifiedGenesis, Vec<VerifiedChange>, usize) {
    let device = DeviceId::from_public_key(key.public());
    let now = Timestamp::from_millis(T0);
    let g = new_genesis(
        id,
        CaseKind::CriminalInvestigation,
        "rome",
        "general",
        device,
        now,
    )
    .unwrap();
    let genesis = sign(g, key).unwrap();
    let mut doc = CaseDoc::new(device.actor(0));
    doc.init("Synthetic case").unwrap();
    let mut changes = Vec::with_capacity(n);
    let mut raw = 0;
    let first = doc.commit(now, "create").unwrap().unwrap();
    let mut push = |c: automerge::Change, i: usize| {
        let v = sign(payload_for_local(id, i as u64, c), key).unwrap();
        raw += v.payload().raw_bytes().len() + 64;
        changes.push(v);
    };
    push(first, 0);
    for i in 1..n {
        let t = Timestamp::from_millis(T0 + i as i64 * 1000);
        if i % 3 == 0 {
            doc.set_field(
                fieldsync_case::Field::Title,
                &format!("Synthetic case, revision {i}"),
            )
            .unwrap();
        } else {
            doc.add_note(
                device,
                t,
                &format!("observation {i}: vehicle seen at the north gate"),
            )
            .unwrap();
        }
        let c = doc.commit(t, "edit").unwrap().unwrap();
        push(c, i);
    }
    (genesis, changes, raw)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Local edit vs bare redb durable commit of the same size, interleaved.
fn edit_latency() {
    let dir = tempfile::tempdir().unwrap();
    let store = new_store(&dir.path().join("store.redb"));
    let case = store
        .create_case(
            &NewCase {
                id: CaseId::from_bytes([1; 16]),
                kind: CaseKind::VisaSecurity,
                office: "rome",
                compartment: "general",
                title: "Bench",
            },
            Timestamp::from_millis(T0),
        )
        .unwrap();
    let me = store.device().id();
    let bare = Database::create(dir.path().join("bare.redb")).unwrap();
    let floor = Database::create(dir.path().join("floor.redb")).unwrap();
    const BARE: TableDefinition<u64, &[u8]> = TableDefinition::new("bare");
    const F_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
    const F_INDEX: TableDefinition<(&[u8], &[u8]), u64> = TableDefinition::new("index");
    const F_ROW: TableDefinition<&[u8], &[u8]> = TableDefinition::new("row");
    let n = if quick() { 100 } else { 1000 };
    let (mut edits, mut bares, mut floors) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    // The size of what one edit stores: its signed change envelope.
    let row_len = 540;
    let row = vec![0x5a_u8; row_len];
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    for i in 0..n {
        let now = Timestamp::from_millis(T0 + i as i64);
        let text = format!("note {i}: checked the manifest against the container seal");
        let t = Instant::now();
        store
            .edit_case(&case, now, "add note", |d| d.add_note(me, now, &text))
            .unwrap();
        edits.push(t.elapsed());

        let t = Instant::now();
        let mut txn = bare.begin_write().unwrap();
        txn.set_durability(Durability::Immediate).unwrap();
        txn.open_table(BARE)
            .unwrap()
            .insert(i as u64, row.as_slice())
            .unwrap();
        txn.commit().unwrap();
        bares.push(t.elapsed());

        // The same rows an edit must write durably (log entry, (case, hash) index, case row), bare.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let hash = [x.to_le_bytes(); 4].concat();
        let t = Instant::now();
        let mut txn = floor.begin_write().unwrap();
        txn.set_durability(Durability::Immediate).unwrap();
        txn.open_table(F_LOG)
            .unwrap()
            .insert(i as u64, row.as_slice())
            .unwrap();
        txn.open_table(F_INDEX)
            .unwrap()
            .insert(([1u8; 16].as_slice(), hash.as_slice()), i as u64)
            .unwrap();
        txn.open_table(F_ROW)
            .unwrap()
            .insert([1u8; 16].as_slice(), &row[..400])
            .unwrap();
        txn.commit().unwrap();
        floors.push(t.elapsed());
    }
    floors.sort();
    let (f50, f99) = (percentile(&floors, 0.5), percentile(&floors, 0.99));
    edits.sort();
    bares.sort();
    let (e50, e99, b50, b99) = (
        percentile(&edits, 0.5),
        percentile(&edits, 0.99),
        percentile(&bares, 0.5),
        percentile(&bares, 0.99),
    );
    println!("local edit (load+edit+sign+durable commit), {n} edits: p50 {e50:?}  p99 {e99:?}");
    println!("bare redb durable commit, one {row_len}-byte row: p50 {b50:?}  p99 {b99:?}");
    println!("bare redb durable commit, the same 3 rows:   p50 {f50:?}  p99 {f99:?}");
    let r = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!(
        "ratio edit/bare-1-row: p50 {:.2}x  p99 {:.2}x  (goal: p50 within 1.5x)",
        r(e50, b50),
        r(e99, b99)
    );
    println!(
        "ratio edit/bare-same-rows: p50 {:.2}x  p99 {:.2}x",
        r(e50, f50),
        r(e99, f99)
    );
}

fn build_big_stores(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, CaseId) {
    let key = SecretKey::from_seed(&[9; 32]);
    let cases = if quick() { 200 } else { 1000 };
    let many = dir.join("many.redb");
    let store = new_store(&many);
    let mut raw_total = 0usize;
    let mut changes_total = 0usize;
    let mut batch = Vec::new();
    for i in 0..cases {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&(i as u64 + 1).to_be_bytes());
        let (g, c, raw) = synthetic_case(&key, CaseId::from_bytes(id), 50);
        raw_total += raw;
        changes_total += c.len();
        batch.push((g, c));
        if batch.len() == 50 {
            store
                .import_verified(std::mem::take(&mut batch), Timestamp::from_millis(T0))
                .unwrap();
        }
    }
    if !batch.is_empty() {
        store
            .import_verified(batch, Timestamp::from_millis(T0))
            .unwrap();
    }
    drop(store);
    let size = std::fs::metadata(&many).unwrap().len() as usize;
    let mut store = Store::open(&many).unwrap();
    store.compact().unwrap();
    drop(store);
    let compacted = std::fs::metadata(&many).unwrap().len() as usize;
    println!(
        "store bytes per change ({cases} cases x 50): {:.0} B on disk, {:.0} B after compaction; raw change + signature {:.0} B; ratio {:.2}x (compacted)",
        size as f64 / changes_total as f64,
        compacted as f64 / changes_total as f64,
        raw_total as f64 / changes_total as f64,
        compacted as f64 / raw_total as f64
    );
    let big = dir.join("big.redb");
    let store = new_store(&big);
    let big_case = CaseId::from_bytes([0xbb; 16]);
    let n = if quick() { 2000 } else { 10_000 };
    let (g, c, _) = synthetic_case(&key, big_case, n);
    store
        .import_verified(vec![(g, c)], Timestamp::from_millis(T0))
        .unwrap();
    // A few more local edits after the snapshot, as on a real device.
    let me = store.device().id();
    for i in 0..10 {
        let now = Timestamp::from_millis(T0 + 1_000_000 + i);
        store
            .edit_case(&big_case, now, "note", |d| d.add_note(me, now, "tail"))
            .unwrap();
    }
    (many, big, big_case)
}

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let (many, big, big_case) = build_big_stores(dir.path());
    let mut g = c.benchmark_group("store");
    g.sample_size(20)
        .measurement_time(Duration::from_secs(if quick() { 2 } else { 8 }));
    g.bench_function("open + list 1000 cases x 50 changes", |b| {
        b.iter(|| {
            let s = Store::open(&many).unwrap();
            s.list_cases().unwrap().len()
        })
    });
    g.bench_function("open + show one case of 10,000 changes", |b| {
        b.iter(|| {
            let s = Store::open(&big).unwrap();
            s.case_record(&big_case).unwrap().notes.len()
        })
    });
    // Baseline in the same run: opening the store and doing nothing.
    g.bench_function("baseline: open only", |b| {
        b.iter(|| Store::open(&big).unwrap().device().id())
    });
    g.finish();
}

fn main() {
    edit_latency();
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    c.final_summary();
}
