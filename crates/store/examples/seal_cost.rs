//! What encryption at rest costs: the same work on a store in the clear
//! ([`PlainSeal`]) and on an encrypted one ([`AeadSeal`]), in one run,
//! alternating, medians of 5.
//!
//! `cargo run --release -p fieldsync-store --example seal_cost`
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Instant;

use fieldsync_case::CaseKind;
use fieldsync_identity::{CaseId, Timestamp};
use fieldsync_store::{AeadSeal, NewCase, NewDevice, PlainSeal, Seal, Store, StoreKind};

fn now() -> Timestamp {
    Timestamp::from_millis(1_790_000_000_000)
}

fn device(seed: u8) -> NewDevice<'static> {
    NewDevice {
        seed: [seed; 32],
        name: "bench",
        epoch: [seed; 16],
        now: now(),
        kind: StoreKind::Device,
    }
}

fn create(path: &Path, sealed: bool, seed: u8) -> Store {
    if sealed {
        Store::create_sealed(path, device(seed), AeadSeal::new(&[7; 32], [seed; 32])).unwrap()
    } else {
        Store::create(path, device(seed)).unwrap()
    }
}

fn open(path: &Path, sealed: bool) -> Store {
    if sealed {
        Store::open_sealed(path, AeadSeal::new(&[7; 32], [9; 32])).unwrap()
    } else {
        Store::open(path).unwrap()
    }
}

fn new_case(store: &Store, n: u8) -> CaseId {
    store
        .create_case(
            &NewCase {
                id: CaseId::from_bytes([n; 16]),
                kind: CaseKind::CriminalInvestigation,
                office: "rome",
                compartment: "general",
                title: "bench",
            },
            now(),
        )
        .unwrap()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs `f(sealed)` 5 times each way, alternating; returns (plain, sealed) medians in ms.
fn compare(mut f: impl FnMut(bool, u8) -> f64) -> (f64, f64) {
    let (mut plain, mut sealed) = (Vec::new(), Vec::new());
    for i in 0..5u8 {
        plain.push(f(false, 2 * i + 10));
        sealed.push(f(true, 2 * i + 11));
    }
    (median(plain), median(sealed))
}

fn report(what: &str, (plain, sealed): (f64, f64)) {
    println!(
        "{what:<58} plain {plain:>9.1} ms   sealed {sealed:>9.1} ms   ratio {:.2}",
        sealed / plain
    );
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    // A bundle of 1,000 changes (one case, one note each) from another device.
    let bundle = {
        let author = Store::create_in_memory(device(1)).unwrap();
        let case = new_case(&author, 1);
        let me = author.device().id();
        for i in 0..999 {
            author
                .edit_case(&case, now(), "note", |d| {
                    d.add_note(me, now(), &format!("note {i}: seen at the port, crate {i}"))
                })
                .unwrap();
        }
        author.export_bundle(&[], now()).unwrap()
    };

    report(
        "import a bundle of 1,000 changes (one durable commit)",
        compare(|sealed, seed| {
            let path = dir.path().join(format!("import-{seed}.redb"));
            let store = create(&path, sealed, seed);
            let t = Instant::now();
            store.import_bundle(&bundle, now()).unwrap();
            t.elapsed().as_secs_f64() * 1e3
        }),
    );

    report(
        "100 local edits, each signed and durably committed",
        compare(|sealed, seed| {
            let path = dir.path().join(format!("edits-{seed}.redb"));
            let store = create(&path, sealed, seed);
            let case = new_case(&store, seed);
            let me = store.device().id();
            let t = Instant::now();
            for i in 0..100 {
                store
                    .edit_case(&case, now(), "note", |d| {
                        d.add_note(me, now(), &format!("edit {i}"))
                    })
                    .unwrap();
            }
            t.elapsed().as_secs_f64() * 1e3
        }),
    );

    report(
        "open the store and read the 1,000-change case (cold)",
        compare(|sealed, seed| {
            let path = dir.path().join(format!("import-{seed}.redb"));
            let t = Instant::now();
            let store = open(&path, sealed);
            let record = store.case_record(&CaseId::from_bytes([1; 16])).unwrap();
            assert_eq!(record.notes.len(), 999);
            t.elapsed().as_secs_f64() * 1e3
        }),
    );

    report(
        "verify every signature of the 1,000 changes",
        compare(|sealed, seed| {
            let path = dir.path().join(format!("import-{seed}.redb"));
            let store = open(&path, sealed);
            let t = Instant::now();
            assert_eq!(store.verify_all(now()).unwrap().changes, 1_000);
            t.elapsed().as_secs_f64() * 1e3
        }),
    );

    // The seal alone: 100,000 values of 300 bytes sealed and opened.
    let value = vec![0x5a; 300];
    report(
        "seal + open 100,000 values of 300 B (no store)",
        compare(|sealed, _| {
            let seal: Box<dyn Seal> = if sealed {
                Box::new(AeadSeal::new(&[7; 32], [1; 32]))
            } else {
                Box::new(PlainSeal)
            };
            let t = Instant::now();
            for i in 0u64..100_000 {
                let key = i.to_be_bytes();
                let s = seal.seal("log-1", &key, &value);
                assert_eq!(seal.open("log-1", &key, &s).unwrap().len(), 300);
            }
            t.elapsed().as_secs_f64() * 1e3
        }),
    );
}
