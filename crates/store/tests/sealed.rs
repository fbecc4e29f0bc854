//! Stores encrypted at rest, on real redb files: the raw file reveals no
//! case content, a store opens only with its own kind of seal and key, and
//! a value moved to another row fails to open.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use fieldsync_case::{CaseKind, ItemId, SubjectInput};
use fieldsync_identity::{CaseId, Timestamp};
use fieldsync_store::{
    AeadSeal, NewCase, NewDevice, PeerRecord, SNAPSHOT_EVERY, SealError, Store, StoreError,
    StoreKind,
};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

const TITLE: &str = "Zanzibar obelisk 7731";
const NOTE: &str = "Met the courier at Kestrel dock, berth 0419";
const SUBJECT: &str = "Ottoline Vexworth";
const COMPARTMENT: &str = "ravenwing";
const CASE_BYTES: [u8; 16] = *b"\x9f\x13case-bytes-\x51\xe7\x02";

const KEY: [u8; 32] = [0x42; 32];

fn case() -> CaseId {
    CaseId::from_bytes(CASE_BYTES)
}

fn now() -> Timestamp {
    Timestamp::from_millis(1_790_000_000_000)
}

fn device(seed: u8) -> NewDevice<'static> {
    NewDevice {
        seed: [seed; 32],
        name: "nairobi-handheld",
        epoch: [seed; 16],
        now: now(),
        kind: StoreKind::Device,
    }
}

fn seal(key: [u8; 32], seed: u8) -> AeadSeal {
    AeadSeal::new(&key, [seed; 32])
}

/// A case with a distinctive title, note and subject, and enough changes
/// for a snapshot.
fn fill(store: &Store) {
    let case = store
        .create_case(
            &NewCase {
                id: case(),
                kind: CaseKind::CulturalProperty,
                office: "nairobi",
                compartment: COMPARTMENT,
                title: TITLE,
            },
            now(),
        )
        .unwrap();
    assert_eq!(case, self::case());
    let me = store.device().id();
    store
        .edit_case(&case, now(), "note", |d| d.add_note(me, now(), NOTE))
        .unwrap();
    let subject = SubjectInput {
        name: SUBJECT.into(),
        role: Some("suspect".into()),
        nationality: None,
        identifiers: vec![("passport".into(), "QX0042917".into())],
    };
    store
        .edit_case(&case, now(), "subject", |d| {
            d.add_subject(ItemId::from_u64(7), &subject)
        })
        .unwrap();
    for i in 0..SNAPSHOT_EVERY {
        store
            .edit_case(&case, now(), "filler", |d| {
                d.add_note(me, now(), &format!("filler {i}"))
            })
            .unwrap();
    }
    store.set_setting("office", "nairobi").unwrap();
}

fn secrets() -> Vec<Vec<u8>> {
    vec![
        TITLE.as_bytes().to_vec(),
        NOTE.as_bytes().to_vec(),
        SUBJECT.as_bytes().to_vec(),
        b"QX0042917".to_vec(),
        COMPARTMENT.as_bytes().to_vec(),
        CASE_BYTES.to_vec(),
        case().to_string().into_bytes(),
        b"Zanzibar".to_vec(),
        b"Vexworth".to_vec(),
    ]
}

/// Which of `needles` occur in the raw bytes of `path`.
fn found_in(path: &Path, needles: &[Vec<u8>]) -> Vec<String> {
    let hay = std::fs::read(path).unwrap();
    needles
        .iter()
        .filter(|n| hay.windows(n.len()).any(|w| w == n.as_slice()))
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect()
}

#[test]
fn a_sealed_store_file_reveals_no_case_content_and_a_plain_one_does() {
    let dir = tempfile::tempdir().unwrap();
    let sealed_path = dir.path().join("sealed.redb");
    let plain_path = dir.path().join("plain.redb");
    {
        let sealed = Store::create_sealed(&sealed_path, device(1), seal(KEY, 1)).unwrap();
        fill(&sealed);
        let plain = Store::create(&plain_path, device(2)).unwrap();
        fill(&plain);
    }
    // The same scan finds every string in the plain store: it can fail.
    let in_plain = found_in(&plain_path, &secrets());
    for s in [TITLE, NOTE, SUBJECT, COMPARTMENT] {
        assert!(
            in_plain.contains(&s.to_owned()),
            "{s} not in the plain file"
        );
    }
    assert!(in_plain.len() >= 7, "{in_plain:?}");
    assert_eq!(found_in(&sealed_path, &secrets()), Vec::<String>::new());
    // Nor the device's name or secret seed.
    assert!(found_in(&sealed_path, &[b"nairobi".to_vec(), vec![1u8; 32]]).is_empty());

    // Reopened with its key (a new nonce seed), everything reads back.
    let store = Store::open_sealed(&sealed_path, seal(KEY, 9)).unwrap();
    let record = store.case_record(&case()).unwrap();
    assert_eq!(record.title, TITLE);
    assert_eq!(record.compartment, COMPARTMENT);
    assert_eq!(record.notes[0].text, NOTE);
    assert_eq!(record.subjects[0].name, SUBJECT);
    assert_eq!(record.notes.len() as u64, SNAPSHOT_EVERY + 1);
    assert_eq!(store.list_cases().unwrap().len(), 1);
    assert_eq!(
        store.resolve_case(&case().to_string()[..8]).unwrap(),
        case()
    );
    assert_eq!(store.setting("office").unwrap().as_deref(), Some("nairobi"));
    assert_eq!(store.device().name(), "nairobi-handheld");
    assert!(store.verify_all(now()).unwrap().problems.is_empty());
    assert!(store.audit_log().unwrap().len() >= 2);
    let batch = store
        .read_log_for_reader(0, 0, None, &[COMPARTMENT], 10_000, 1 << 24)
        .unwrap();
    assert_eq!(batch.entries.len() as u64, SNAPSHOT_EVERY + 3);
    let none = store
        .read_log_for_reader(0, 0, None, &["general"], 10_000, 1 << 24)
        .unwrap();
    assert!(none.entries.is_empty());
}

#[test]
fn a_sealed_store_refuses_the_plain_seal_another_key_and_the_reverse() {
    let dir = tempfile::tempdir().unwrap();
    let sealed_path = dir.path().join("sealed.redb");
    let plain_path = dir.path().join("plain.redb");
    {
        fill(&Store::create_sealed(&sealed_path, device(1), seal(KEY, 1)).unwrap());
        fill(&Store::create(&plain_path, device(2)).unwrap());
    }
    let audit_len = Store::open(&plain_path).unwrap().audit_log().unwrap().len();
    let err = Store::open(&sealed_path).unwrap_err();
    assert!(
        matches!(err, StoreError::Seal(SealError::StoreEncrypted)),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "this store is encrypted; it needs its key");
    let err = Store::open_sealed(&sealed_path, seal([0x43; 32], 1)).unwrap_err();
    assert!(
        matches!(err, StoreError::Seal(SealError::WrongKey)),
        "{err:?}"
    );
    let err = Store::open_sealed(&plain_path, seal(KEY, 1)).unwrap_err();
    assert!(
        matches!(err, StoreError::Seal(SealError::StoreNotEncrypted)),
        "{err:?}"
    );
    // Refusing wrote nothing: each store still holds exactly what it did,
    // and its audit trail has no trace of the refused opens.
    for store in [
        Store::open_sealed(&sealed_path, seal(KEY, 2)).unwrap(),
        Store::open(&plain_path).unwrap(),
    ] {
        assert_eq!(store.case_record(&case()).unwrap().title, TITLE);
        assert_eq!(store.audit_log().unwrap().len(), audit_len);
        assert!(store.verify_all(now()).unwrap().problems.is_empty());
    }
}

type Bytes = TableDefinition<'static, &'static [u8], &'static [u8]>;
const CASES: Bytes = TableDefinition::new("cases-1");
const LOG: TableDefinition<'static, u64, &'static [u8]> = TableDefinition::new("log-1");

#[test]
fn values_moved_between_rows_fail_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sealed.redb");
    let second = CaseId::from_bytes([5; 16]);
    {
        let store = Store::create_sealed(&path, device(1), seal(KEY, 1)).unwrap();
        fill(&store);
        store
            .create_case(
                &NewCase {
                    id: second,
                    kind: CaseKind::CriminalInvestigation,
                    office: "nairobi",
                    compartment: "general",
                    title: "second",
                },
                now(),
            )
            .unwrap();
        assert_eq!(store.list_cases().unwrap().len(), 2);
    }
    let original = std::fs::read(&path).unwrap();

    // Two case rows swapped: each row's value is bound to its own key.
    let keys: Vec<Vec<u8>> = {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_read().unwrap();
        let t = txn.open_table(CASES).unwrap();
        t.iter()
            .unwrap()
            .map(|r| r.unwrap().0.value().to_vec())
            .collect()
    };
    assert_eq!(keys.len(), 2);
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(CASES).unwrap();
            let va = t.get(keys[0].as_slice()).unwrap().unwrap().value().to_vec();
            let vb = t.get(keys[1].as_slice()).unwrap().unwrap().value().to_vec();
            t.insert(keys[0].as_slice(), vb.as_slice()).unwrap();
            t.insert(keys[1].as_slice(), va.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    {
        let store = Store::open_sealed(&path, seal(KEY, 3)).unwrap();
        let err = store.list_cases().unwrap_err();
        assert!(
            matches!(&err, StoreError::Seal(SealError::Tampered { table }) if table == "cases-1"),
            "{err:?}"
        );
        assert!(store.case_record(&case()).is_err());
    }

    // Two log entries swapped.
    std::fs::write(&path, &original).unwrap();
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(LOG).unwrap();
            let va = t.get(1).unwrap().unwrap().value().to_vec();
            let vb = t.get(2).unwrap().unwrap().value().to_vec();
            t.insert(1, vb.as_slice()).unwrap();
            t.insert(2, va.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let store = Store::open_sealed(&path, seal(KEY, 4)).unwrap();
    assert!(matches!(
        store.case_envelopes(&case()),
        Err(StoreError::Seal(SealError::Tampered { .. }))
    ));
    let problems = store.verify_all(now()).unwrap().problems;
    assert_eq!(problems.len(), 2, "{problems:?}");
    for (p, seq) in problems.iter().zip(1..) {
        assert!(
            p.starts_with(&format!(
                "log entry {seq}: a value in log-1 fails its authentication"
            )),
            "{p}"
        );
    }
    drop(store);

    // Put back, the store is whole again.
    std::fs::write(&path, &original).unwrap();
    let store = Store::open_sealed(&path, seal(KEY, 5)).unwrap();
    assert_eq!(store.list_cases().unwrap().len(), 2);
    assert!(store.verify_all(now()).unwrap().problems.is_empty());
}

#[test]
fn sealed_stores_exchange_bundles_peers_and_acknowledgements() {
    let dir = tempfile::tempdir().unwrap();
    let a_path = dir.path().join("a.redb");
    let b_path = dir.path().join("b.redb");
    let bundle = {
        let a = Store::create_sealed(&a_path, device(1), seal(KEY, 1)).unwrap();
        fill(&a);
        a.export_bundle(&[], now()).unwrap()
    };
    let other_key = [0x77; 32];
    {
        let b = Store::create_sealed(&b_path, device(2), seal(other_key, 1)).unwrap();
        let report = b.import_bundle(&bundle, now()).unwrap();
        assert_eq!(report.new_cases, 1);
        let again = b.import_bundle(&bundle, now()).unwrap();
        assert_eq!(again.stored, 0);
        let peer = fieldsync_identity::DeviceId::from_public_key(
            fieldsync_identity::SecretKey::from_seed(&[8; 32]).public(),
        );
        b.record_peer(
            &peer,
            &PeerRecord {
                certificate: b"certificate bytes".to_vec(),
                last_contact: now(),
                carried_by: None,
            },
        )
        .unwrap();
        b.set_peer_ack(&peer, 3).unwrap();
        b.flush().unwrap();
    }
    assert!(found_in(&b_path, &secrets()).is_empty());
    let b = Store::open_sealed(&b_path, seal(other_key, 2)).unwrap();
    assert_eq!(b.case_record(&case()).unwrap().subjects[0].name, SUBJECT);
    assert_eq!(b.peers().unwrap().len(), 1);
    assert_eq!(
        b.peer_ack(&fieldsync_identity::DeviceId::from_public_key(
            fieldsync_identity::SecretKey::from_seed(&[8; 32]).public()
        ))
        .unwrap(),
        3
    );
    assert_eq!(b.case_heads().unwrap().len(), 1);
    assert!(b.verify_all(now()).unwrap().problems.is_empty());
}
