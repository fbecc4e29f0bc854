//! The store against a plain in-memory model, with restarts; a store whose
//! commit fails refuses writes; imports that must be refused change nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use fieldsync_case::{CaseDoc, CaseKind, Field, new_genesis, payload_for_local};
use fieldsync_identity::{CaseId, DeviceId, SecretKey, Timestamp, sign};
use fieldsync_store::{BundleError, NewCase, NewDevice, Store, StoreError, StoreKind};
use proptest::prelude::*;

const T0: i64 = 1_790_000_000_000;

fn device(seed: u8) -> NewDevice<'static> {
    NewDevice {
        seed: [seed; 32],
        name: "model",
        epoch: [seed; 16],
        now: Timestamp::from_millis(T0),
        kind: StoreKind::Device,
    }
}

fn new_case(id: CaseId, title: &str) -> NewCase<'_> {
    NewCase {
        id,
        kind: CaseKind::CriminalInvestigation,
        office: "rome",
        compartment: "general",
        title,
    }
}

#[derive(Debug, Clone)]
enum Op {
    Create(u8),
    SetTitle(u8, String),
    Note(u8, String),
    Restart,
    Compact,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0u8..6).prop_map(Op::Create),
        3 => (0u8..6, "[a-z]{1,12}").prop_map(|(c, t)| Op::SetTitle(c, t)),
        4 => (0u8..6, "[a-z][a-z ]{0,19}").prop_map(|(c, t)| Op::Note(c, t)),
        1 => Just(Op::Restart),
        1 => Just(Op::Compact),
    ]
}

#[derive(Debug, Default, Clone, PartialEq)]
struct ModelCase {
    title: String,
    notes: Vec<String>,
}

fn case_id(n: u8) -> CaseId {
    CaseId::from_bytes([n + 1; 16])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn store_matches_model_across_restarts(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.redb");
        let mut store = Some(Store::create(&path, device(1)).unwrap());
        let mut model: BTreeMap<u8, ModelCase> = BTreeMap::new();
        for (i, op) in ops.iter().enumerate() {
            let now = Timestamp::from_millis(T0 + i as i64);
            let s = store.as_ref().unwrap();
            let me = s.device().id();
            match op {
                Op::Create(c) => {
                    let r = s.create_case(&new_case(case_id(*c), "new"), now);
                    if model.contains_key(c) {
                        prop_assert!(matches!(r, Err(StoreError::CaseExists { .. })), "expected CaseExists");
                    } else {
                        r.unwrap();
                        model.insert(*c, ModelCase { title: "new".into(), notes: vec![] });
                    }
                }
                Op::SetTitle(c, t) => {
                    let r = s.edit_case(&case_id(*c), now, "title", |d| d.set_field(Field::Title, t));
                    match model.get_mut(c) {
                        Some(m) => { r.unwrap(); m.title = t.clone(); }
                        None => prop_assert!(matches!(r, Err(StoreError::UnknownCase { .. })), "expected UnknownCase"),
                    }
                }
                Op::Note(c, t) => {
                    let r = s.edit_case(&case_id(*c), now, "note", |d| d.add_note(me, now, t));
                    match model.get_mut(c) {
                        Some(m) => { r.unwrap(); m.notes.push(t.clone()); }
                        None => prop_assert!(r.is_err()),
                    }
                }
                Op::Restart => {
                    // Close the store before reopening it (redb allows one handle per file).
                    drop(store.take());
                    store = Some(Store::open(&path).unwrap());
                }
                Op::Compact => {
                    store.as_mut().unwrap().compact().unwrap();
                }
            }
            let s = store.as_ref().unwrap();
            let listed: BTreeMap<CaseId, String> = s.list_cases().unwrap().into_iter().map(|c| (c.id, c.title)).collect();
            let expected: BTreeMap<CaseId, String> = model.iter().map(|(c, m)| (case_id(*c), m.title.clone())).collect();
            prop_assert_eq!(listed, expected);
        }
        let s = store.as_ref().unwrap();
        for (c, m) in &model {
            let r = s.case_record(&case_id(*c)).unwrap();
            prop_assert_eq!(&r.title, &m.title);
            let notes: Vec<String> = r.notes.iter().map(|n| n.text.clone()).collect();
            prop_assert_eq!(&notes, &m.notes);
        }
        prop_assert!(s.verify_all(Timestamp::from_millis(T0)).unwrap().problems.is_empty());
    }
}

/// An in-memory backend whose syncs (the durability point of a commit) fail while `fail` is set.
#[derive(Debug)]
struct FailingBackend {
    inner: redb::backends::InMemoryBackend,
    fail: Arc<AtomicBool>,
}

impl redb::StorageBackend for FailingBackend {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.check()?;
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.inner.write(offset, data)
    }
}

impl FailingBackend {
    fn check(&self) -> Result<(), std::io::Error> {
        if self.fail.load(Ordering::SeqCst) {
            Err(std::io::Error::other("injected disk failure"))
        } else {
            Ok(())
        }
    }
}

#[test]
fn a_failed_commit_poisons_the_store() {
    let fail = Arc::new(AtomicBool::new(false));
    let backend = FailingBackend {
        inner: redb::backends::InMemoryBackend::new(),
        fail: fail.clone(),
    };
    let store = Store::create_with_backend(backend, device(2)).unwrap();
    let now = Timestamp::from_millis(T0);
    let case = store
        .create_case(&new_case(case_id(0), "before"), now)
        .unwrap();
    let me = store.device().id();
    fail.store(true, Ordering::SeqCst);
    let err = store
        .edit_case(&case, now, "note", |d| d.add_note(me, now, "lost"))
        .unwrap_err();
    assert!(matches!(err, StoreError::Db { .. }), "{err}");
    assert!(store.is_poisoned(), "not poisoned after: {err:?}");
    fail.store(false, Ordering::SeqCst);
    let err = store
        .edit_case(&case, now, "note", |d| d.add_note(me, now, "refused"))
        .unwrap_err();
    assert!(matches!(err, StoreError::Poisoned), "{err}");
    assert!(err.to_string().contains("reopened"));
}

fn foreign_case(
    key: &SecretKey,
    id: CaseId,
    n: usize,
) -> (
    fieldsync_case::VerifiedGenesis,
    Vec<fieldsync_case::VerifiedChange>,
) {
    let dev = DeviceId::from_public_key(key.public());
    let now = Timestamp::from_millis(T0);
    let genesis = sign(
        new_genesis(
            id,
            CaseKind::VisaSecurity,
            "mexico-city",
            "general",
            dev,
            now,
        )
        .unwrap(),
        key,
    )
    .unwrap();
    let mut doc = CaseDoc::new(dev.actor(0));
    doc.init("foreign").unwrap();
    let mut changes = vec![];
    for i in 0..n {
        if i > 0 {
            doc.add_note(dev, now, &format!("n{i}")).unwrap();
        }
        let c = doc.commit(now, "e").unwrap().unwrap();
        changes.push(sign(payload_for_local(id, i as u64, c), key).unwrap());
    }
    (genesis, changes)
}

#[test]
fn imports_are_idempotent_ordered_and_all_or_nothing() {
    let store = Store::create_in_memory(device(3)).unwrap();
    let key = SecretKey::from_seed(&[40; 32]);
    let now = Timestamp::from_millis(T0);
    let (g, mut changes) = foreign_case(&key, case_id(9), 6);
    // Out of order in the batch: the store places dependencies first.
    changes.reverse();
    let r = store
        .import_verified(vec![(g.clone(), changes.clone())], now)
        .unwrap();
    assert_eq!((r.new_cases, r.stored, r.duplicates), (1, 6, 0));
    let r = store
        .import_verified(vec![(g.clone(), changes.clone())], now)
        .unwrap();
    assert_eq!((r.stored, r.duplicates), (0, 6));
    assert_eq!(store.case_record(&case_id(9)).unwrap().notes.len(), 5);

    // Missing dependencies: a later change without its parent is refused whole,
    // together with a valid case in the same batch.
    let (g2, c2) = foreign_case(&key, case_id(10), 4);
    let (g3, c3) = foreign_case(&key, case_id(11), 2);
    let err = store
        .import_verified(
            vec![(g3, c3), (g2, vec![c2[0].clone(), c2[3].clone()])],
            now,
        )
        .unwrap_err();
    assert!(
        matches!(err, BundleError::MissingDependencies { count: 1, .. }),
        "{err}"
    );
    assert_eq!(
        store.list_cases().unwrap().len(),
        1,
        "a refused import stored something"
    );

    // Another genesis for a known case id is refused.
    let other = SecretKey::from_seed(&[41; 32]);
    let (g4, c4) = foreign_case(&other, case_id(9), 1);
    let err = store.import_verified(vec![(g4, c4)], now).unwrap_err();
    assert!(matches!(err, BundleError::GenesisConflict { .. }), "{err}");
    let _ = g;
}
