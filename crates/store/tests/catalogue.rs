//! The bad-input catalogue, store half: a corrupted stored document, a
//! store file that fails its checksums, a disk that fills up during a
//! commit. Each test shows the named error and what changed (nothing, or
//! exactly what is stated). The session half is in
//! `crates/protocol/tests/catalogue.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use fieldsync_case::{CaseDoc, CaseKind, CaseRecord, Field, new_genesis, payload_for_local};
use fieldsync_identity::{CaseId, SecretKey, Timestamp, sign};
use fieldsync_store::{CaseListing, NewCase, NewDevice, Store, StoreError, StoreKind};

const T0: i64 = 1_790_000_000_000;

fn t(s: i64) -> Timestamp {
    Timestamp::from_millis(T0 + s * 1000)
}

fn device(seed: u8) -> NewDevice<'static> {
    NewDevice {
        seed: [seed; 32],
        name: "catalogue",
        epoch: [seed; 16],
        now: t(0),
        kind: StoreKind::Device,
    }
}

fn new_case(store: &Store, n: u8, title: &str) -> CaseId {
    store
        .create_case(
            &NewCase {
                id: CaseId::from_bytes([n; 16]),
                kind: CaseKind::CriminalInvestigation,
                office: "rome",
                compartment: "general",
                title,
            },
            t(1),
        )
        .unwrap()
}

fn note(store: &Store, case: &CaseId, at: i64, text: &str) -> Result<(), StoreError> {
    let me = store.device().id();
    store
        .edit_case(case, t(at), "note", |d| d.add_note(me, t(at), text))
        .map(|_| ())
}

/// What a store shows, to compare before and after.
#[derive(Debug, PartialEq)]
struct State {
    log_head: u64,
    outbox: u64,
    cases: Vec<CaseListing>,
    records: Vec<CaseRecord>,
}

fn state(store: &Store) -> State {
    let cases = store.list_cases().unwrap();
    State {
        log_head: store.log_head().unwrap(),
        outbox: store.outbox_len().unwrap(),
        records: cases
            .iter()
            .map(|c| store.case_record(&c.id).unwrap())
            .collect(),
        cases,
    }
}

// ---- 12. disk full during a commit ----

/// An in-memory disk that can fill up: while it is full, every write, every
/// growth of the file and every sync fails with `StorageFull` (ENOSPC), as
/// a file system out of blocks does; reads keep working.
#[derive(Debug, Clone, Default)]
struct FullableDisk {
    image: Arc<Mutex<(Vec<u8>, bool)>>,
}

impl FullableDisk {
    fn lock(&self) -> MutexGuard<'_, (Vec<u8>, bool)> {
        self.image.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_full(&self, full: bool) {
        self.lock().1 = full;
    }

    fn enospc() -> io::Error {
        io::Error::from(io::ErrorKind::StorageFull)
    }
}

impl redb::StorageBackend for FullableDisk {
    fn len(&self) -> Result<u64, io::Error> {
        Ok(self.lock().0.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        let image = self.lock();
        let from = usize::try_from(offset).map_err(io::Error::other)?;
        let src = image
            .0
            .get(from..from + out.len())
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        out.copy_from_slice(src);
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let mut image = self.lock();
        let len = usize::try_from(len).map_err(io::Error::other)?;
        if image.1 && len > image.0.len() {
            return Err(Self::enospc());
        }
        image.0.resize(len, 0);
        Ok(())
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        if self.lock().1 {
            return Err(Self::enospc());
        }
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let mut image = self.lock();
        if image.1 {
            return Err(Self::enospc());
        }
        let from = usize::try_from(offset).map_err(io::Error::other)?;
        let dst = image
            .0
            .get_mut(from..from + data.len())
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        dst.copy_from_slice(data);
        Ok(())
    }
}

/// The edit made while the disk is full is not acknowledged (a named error),
/// nothing of it is kept, reads keep working, the handle refuses further
/// writes; once space returns and the store is reopened, writes work again
/// and everything acknowledged before is there.
#[test]
fn disk_full_during_a_commit() {
    let disk = FullableDisk::default();
    let store = Store::create_with_backend(disk.clone(), device(1)).unwrap();
    let case = new_case(&store, 1, "Before the disk filled");
    note(&store, &case, 2, "acknowledged").unwrap();
    let before = state(&store);

    disk.set_full(true);
    let err = note(&store, &case, 3, "never acknowledged").unwrap_err();
    assert!(matches!(err, StoreError::DiskFull { .. }), "{err:?}");
    assert!(err.to_string().contains("disk is full"), "{err}");
    // Reads keep working, and show exactly what was acknowledged.
    assert_eq!(state(&store), before);
    assert_eq!(store.case_history(&case).unwrap().len(), 2);
    // The handle refuses writes (other kinds too) until it is reopened.
    assert!(store.is_poisoned());
    let err = note(&store, &case, 4, "refused").unwrap_err();
    assert!(matches!(err, StoreError::Poisoned), "{err:?}");
    let err = store
        .create_case(
            &NewCase {
                id: CaseId::from_bytes([2; 16]),
                kind: CaseKind::CulturalProperty,
                office: "rome",
                compartment: "general",
                title: "refused",
            },
            t(4),
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::Poisoned), "{err:?}");
    assert_eq!(state(&store), before);

    // Space returns; the store is reopened (a restart): writes work again.
    disk.set_full(false);
    drop(store);
    let store = Store::open_with_backend(disk.clone()).unwrap();
    assert_eq!(state(&store), before);
    note(&store, &case, 5, "after space returned").unwrap();
    store
        .edit_case(&case, t(6), "status", |d| {
            d.set_field(Field::Status, "active")
        })
        .unwrap();
    let r = store.case_record(&case).unwrap();
    let texts: Vec<&str> = r.notes.iter().map(|n| n.text.as_str()).collect();
    assert_eq!(texts, ["acknowledged", "after space returned"]);
    assert_eq!(store.log_head().unwrap(), before.log_head + 2);
    assert!(store.verify_all(t(7)).unwrap().problems.is_empty());
}

// ---- 9. a corrupted stored document ----

/// `snapshots-1` and `log-1` as the store lays them out (see `tables.rs`).
const SNAPSHOTS: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("snapshots-1");
const LOG: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("log-1");

/// A store file with two cases of 130 changes each (so each has a
/// snapshot), closed; the records and histories it shows.
fn two_snapshotted_cases(dir: &std::path::Path) -> (std::path::PathBuf, Vec<CaseRecord>) {
    let path = dir.join("store.redb");
    let store = Store::create(&path, device(3)).unwrap();
    // This device's changes, made elsewhere (a restored backup) and
    // imported in one commit: the import writes the snapshot.
    let key = SecretKey::from_seed(&[3; 32]);
    let me = store.device().id();
    for n in [1, 2] {
        let case = CaseId::from_bytes([n; 16]);
        let genesis = sign(
            new_genesis(
                case,
                CaseKind::CriminalInvestigation,
                "rome",
                "general",
                me,
                t(1),
            )
            .unwrap(),
            &key,
        )
        .unwrap();
        let mut doc = CaseDoc::new(me.actor(0));
        doc.init(&format!("case {n}")).unwrap();
        let mut changes = vec![doc.commit(t(1), "create").unwrap().unwrap()];
        for i in 0..fieldsync_store::SNAPSHOT_EVERY {
            doc.add_note(me, t(2), &format!("note {i}")).unwrap();
            changes.push(doc.commit(t(2), "note").unwrap().unwrap());
        }
        let changes = changes
            .into_iter()
            .enumerate()
            .map(|(i, c)| sign(payload_for_local(case, i as u64 + 1, c), &key).unwrap())
            .collect();
        store
            .import_verified(vec![(genesis, changes)], t(2))
            .unwrap();
        // And two more after the snapshot.
        note(&store, &case, 3, "after the snapshot").unwrap();
        note(&store, &case, 3, "and another").unwrap();
    }
    let records = [1u8, 2]
        .iter()
        .map(|n| store.case_record(&CaseId::from_bytes([*n; 16])).unwrap())
        .collect();
    (path, records)
}

/// Replaces a value of a table of a closed store file, through redb (the
/// file's own checksums stay valid: only FieldSync can tell).
fn overwrite_snapshot(path: &std::path::Path, case: u8, value: &[u8]) {
    let db = redb::Database::open(path).unwrap();
    let txn = db.begin_write().unwrap();
    txn.open_table(SNAPSHOTS)
        .unwrap()
        .insert([case; 16].as_slice(), value)
        .unwrap();
    txn.commit().unwrap();
}

fn snapshot_of(path: &std::path::Path, case: u8) -> Vec<u8> {
    use redb::ReadableDatabase;
    let db = redb::Database::open(path).unwrap();
    let txn = db.begin_read().unwrap();
    let table = txn.open_table(SNAPSHOTS).unwrap();
    table
        .get([case; 16].as_slice())
        .unwrap()
        .unwrap()
        .value()
        .to_vec()
}

/// A snapshot that does not load, or loads to another case's state, is set
/// aside: the case is rebuilt from its signed changes in the log and shows
/// exactly what it showed before; the next write replaces the snapshot.
#[test]
fn a_corrupted_stored_document() {
    let dir = tempfile::tempdir().unwrap();
    let (template, records) = two_snapshotted_cases(dir.path());
    let path = dir.path().join("damaged.redb");
    std::fs::copy(&template, &path).unwrap();
    let other = snapshot_of(&path, 2);
    let garbage = {
        // A tag byte (stored in the clear), then the snapshot row whose
        // document bytes are not an Automerge document.
        let mut v = vec![0];
        v.extend(postcard::to_stdvec(&b"not an automerge document".to_vec()).unwrap());
        v
    };
    let mut flipped = snapshot_of(&path, 1);
    let at = flipped.len() / 2;
    flipped[at] ^= 0x55;
    for (what, bad) in [
        ("a swapped snapshot (another case's document)", other),
        ("bytes that are no document", garbage),
        ("a flipped byte", flipped),
        ("a value the seal cannot open", vec![9, 1, 2, 3]),
    ] {
        overwrite_snapshot(&path, 1, &bad);
        let store = Store::open(&path).unwrap();
        let case = CaseId::from_bytes([1; 16]);
        assert_eq!(store.case_record(&case).unwrap(), records[0], "{what}");
        assert_eq!(store.case_history(&case).unwrap().len(), 131, "{what}");
        assert_eq!(
            store.case_record(&CaseId::from_bytes([2; 16])).unwrap(),
            records[1]
        );
        // The next write replaces the snapshot with a good one.
        note(&store, &case, 9, "after").unwrap();
        drop(store);
        assert_ne!(snapshot_of(&path, 1), bad, "{what}: snapshot not replaced");
        let store = Store::open(&path).unwrap();
        let r = store.case_record(&case).unwrap();
        assert_eq!(r.notes.len(), records[0].notes.len() + 1, "{what}");
        assert_eq!(r.notes.last().unwrap().text, "after");
        assert!(store.verify_all(t(10)).unwrap().problems.is_empty());
        drop(store);
        // Back to the state the next variant expects.
        std::fs::copy(&template, &path).unwrap();
    }
}

/// When the log cannot rebuild the case either, the read fails with a named
/// error: never a silently wrong case.
#[test]
fn a_corrupted_stored_document_and_log_entry_is_a_named_error() {
    let dir = tempfile::tempdir().unwrap();
    let (path, records) = two_snapshotted_cases(dir.path());
    // A log entry of case 1 that the snapshot covers: not read while the
    // snapshot is good.
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut log = txn.open_table(LOG).unwrap();
            let mut entry = redb::ReadableTable::get(&log, 5)
                .unwrap()
                .unwrap()
                .value()
                .to_vec();
            let last = entry.len() - 1;
            entry[last] ^= 0x55;
            log.insert(5, entry.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let case = CaseId::from_bytes([1; 16]);
    let store = Store::open(&path).unwrap();
    assert_eq!(store.case_record(&case).unwrap(), records[0]);
    let problems = store.verify_all(t(5)).unwrap().problems;
    assert!(
        problems.iter().any(|p| p.starts_with("log entry 5")),
        "{problems:?}"
    );
    drop(store);
    // Now the snapshot too.
    overwrite_snapshot(&path, 1, &[9, 9, 9]);
    let store = Store::open(&path).unwrap();
    let err = store.case_record(&case).unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt { what } if what.contains("log entry 5")),
        "{err:?}"
    );
    assert!(err.to_string().contains("verify"), "{err}");
    let me = store.device().id();
    let err = store
        .edit_case(&case, t(6), "note", |d| d.add_note(me, t(6), "refused"))
        .unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    // The other case is untouched.
    assert_eq!(
        store.case_record(&CaseId::from_bytes([2; 16])).unwrap(),
        records[1]
    );
}

// ---- 7. equivocation, at the store ----
// The session-level test is `crates/protocol/tests/catalogue.rs`: `equivocation`.

/// A device of another node: its key and the case it writes.
struct Author {
    key: SecretKey,
    id: fieldsync_identity::DeviceId,
}

impl Author {
    fn new(seed: u8) -> Self {
        let key = SecretKey::from_seed(&[seed; 32]);
        let id = fieldsync_identity::DeviceId::from_public_key(key.public());
        Self { key, id }
    }

    fn genesis(&self, case: CaseId) -> fieldsync_case::VerifiedGenesis {
        sign(
            new_genesis(
                case,
                CaseKind::CulturalProperty,
                "rome",
                "general",
                self.id,
                t(1),
            )
            .unwrap(),
            &self.key,
        )
        .unwrap()
    }

    fn sign(&self, case: CaseId, change: automerge::Change) -> fieldsync_case::VerifiedChange {
        sign(payload_for_local(case, change.seq(), change), &self.key).unwrap()
    }
}

/// An author's first change to a case, and two different second changes
/// on it (both its change number 2).
fn two_stories(
    author: &Author,
    case: CaseId,
) -> (
    fieldsync_case::VerifiedChange,
    fieldsync_case::VerifiedChange,
    fieldsync_case::VerifiedChange,
) {
    let mut doc = CaseDoc::new(author.id.actor(0));
    doc.init("Two stories").unwrap();
    let first = doc.commit(t(1), "create").unwrap().unwrap();
    let mut other = CaseDoc::new(author.id.actor(0));
    other.apply(vec![first.clone()]).unwrap();
    doc.add_note(author.id, t(2), "version one").unwrap();
    let one = doc.commit(t(2), "note").unwrap().unwrap();
    other.add_note(author.id, t(2), "version two").unwrap();
    let two = other.commit(t(2), "note").unwrap().unwrap();
    assert_eq!((one.seq(), two.seq()), (2, 2));
    assert_ne!(one.hash(), two.hash());
    (
        author.sign(case, first),
        author.sign(case, one),
        author.sign(case, two),
    )
}

fn ingest(
    store: &Store,
    cases: Vec<(
        fieldsync_case::VerifiedGenesis,
        Vec<fieldsync_case::VerifiedChange>,
    )>,
) -> fieldsync_store::IngestReport {
    store
        .ingest(
            fieldsync_store::Ingest {
                cases,
                ..fieldsync_store::Ingest::default()
            },
            t(3),
        )
        .unwrap()
}

/// Both stories in one batch, on a device store (which would otherwise
/// hand both to Automerge): both held, the first change stored, the device
/// flagged.
#[test]
fn equivocation_in_one_batch() {
    let store = Store::create_in_memory(device(4)).unwrap();
    let author = Author::new(40);
    let case = CaseId::from_bytes([4; 16]);
    let (first, one, two) = two_stories(&author, case);
    let r = ingest(
        &store,
        vec![(author.genesis(case), vec![first.clone(), one, two])],
    );
    assert_eq!((r.stored, r.quarantined), (1, 2));
    assert_eq!(store.log_head().unwrap(), 1);
    let q = store.quarantine().unwrap();
    assert_eq!(q.len(), 2);
    assert!(q.iter().all(|(_, e)| e.reason.starts_with("equivocation:")));
    let flagged = store.equivocations().unwrap();
    assert_eq!(flagged.len(), 1);
    assert_eq!((flagged[0].device, flagged[0].seq), (author.id, 2));
    assert_eq!(store.case_record(&case).unwrap().title, "Two stories");
    assert!(
        store
            .audit_log()
            .unwrap()
            .iter()
            .any(|e| e.kind == fieldsync_store::AuditKind::Equivocation)
    );
}

/// A node never withdraws its own work: a device that built on the first
/// story keeps it (and its own change); the second story is held and the
/// author flagged.
#[test]
fn equivocation_against_a_change_this_device_built_on() {
    let store = Store::create_in_memory(device(5)).unwrap();
    let author = Author::new(50);
    let case = CaseId::from_bytes([5; 16]);
    let (first, one, two) = two_stories(&author, case);
    ingest(&store, vec![(author.genesis(case), vec![first, one])]);
    note(&store, &case, 4, "mine, on version one").unwrap();
    let head = store.log_head().unwrap();
    let r = ingest(&store, vec![(author.genesis(case), vec![two])]);
    assert_eq!((r.stored, r.quarantined), (0, 1));
    assert_eq!(store.log_head().unwrap(), head);
    let notes: Vec<String> = store
        .case_record(&case)
        .unwrap()
        .notes
        .into_iter()
        .map(|n| n.text)
        .collect();
    assert_eq!(notes, ["version one", "mine, on version one"]);
    assert_eq!(store.equivocations().unwrap().len(), 1);
}

/// A supervisor's release lets one story stand (a released change is
/// stored whatever its number).
#[test]
fn equivocation_a_released_story_stands() {
    let store = Store::create_in_memory(device(6)).unwrap();
    let author = Author::new(60);
    let case = CaseId::from_bytes([6; 16]);
    let (first, one, two) = two_stories(&author, case);
    ingest(
        &store,
        vec![(author.genesis(case), vec![first.clone(), one, two.clone()])],
    );
    assert_eq!(store.log_head().unwrap(), 1);
    let r = store
        .ingest(
            fieldsync_store::Ingest {
                cases: vec![(author.genesis(case), vec![two.clone()])],
                releases: vec![(case, two.payload().hash(), b"release bytes".to_vec())],
                ..fieldsync_store::Ingest::default()
            },
            t(5),
        )
        .unwrap();
    assert_eq!((r.stored, r.released_from_quarantine), (1, 1));
    let notes: Vec<String> = store
        .case_record(&case)
        .unwrap()
        .notes
        .into_iter()
        .map(|n| n.text)
        .collect();
    assert_eq!(notes, ["version two"]);
    assert_eq!(store.quarantine().unwrap().len(), 1);
}

/// A store from before the index (schema 4) gets it filled from its log
/// when it is opened, and then catches an equivocation against a change
/// stored back then.
#[test]
fn equivocation_index_filled_on_upgrade() {
    const META: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta-1");
    const SEQS: redb::TableDefinition<(&[u8], u64), &[u8]> = redb::TableDefinition::new("seqs-1");
    const EQUIVOCATIONS: redb::TableDefinition<(&[u8], &[u8]), &[u8]> =
        redb::TableDefinition::new("equivocations-1");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.redb");
    let author = Author::new(70);
    let case = CaseId::from_bytes([7; 16]);
    let (first, one, two) = two_stories(&author, case);
    {
        let store = Store::create(&path, device(7)).unwrap();
        ingest(&store, vec![(author.genesis(case), vec![first, one])]);
    }
    // Back to schema 4: no index tables.
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        assert!(txn.delete_table(SEQS).unwrap());
        assert!(txn.delete_table(EQUIVOCATIONS).unwrap());
        let mut schema = vec![0];
        schema.extend_from_slice(&4u32.to_le_bytes());
        txn.open_table(META)
            .unwrap()
            .insert("schema", schema.as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    let store = Store::open(&path).unwrap();
    let r = ingest(&store, vec![(author.genesis(case), vec![two])]);
    assert_eq!((r.stored, r.quarantined), (0, 2));
    assert_eq!(store.equivocations().unwrap().len(), 1);
    assert!(store.case_record(&case).unwrap().notes.is_empty());
}

// ---- 11. a store whose file fails its checksums ----

/// A device store file with one case of 40 notes (`needle-00` … `needle-39`),
/// closed; and a relay store that holds the same changes (what a peer
/// would send back).
fn notes_store(dir: &std::path::Path) -> (std::path::PathBuf, Store, CaseId, CaseRecord) {
    let path = dir.join("device.redb");
    let store = Store::create(&path, device(8)).unwrap();
    let case = new_case(&store, 8, "Forty notes");
    for i in 0..40 {
        note(&store, &case, 2 + i, &format!("needle-{i:02}")).unwrap();
    }
    let record = store.case_record(&case).unwrap();
    let relay = Store::create_in_memory(NewDevice {
        kind: StoreKind::Relay,
        ..device(9)
    })
    .unwrap();
    let bundle = store.export_bundle(&[case], t(50)).unwrap();
    relay.import_bundle(&bundle, t(50)).unwrap();
    (path, relay, case, record)
}

fn repair_options(epoch: u8) -> fieldsync_store::RepairOptions {
    fieldsync_store::RepairOptions {
        epoch: [epoch; 16],
        now: t(60),
        device: None,
        kind: None,
    }
}

/// Flips a bit of every copy of `needle` in the file (redb's freed pages may
/// hold stale copies; the live one is among them).
fn flip_in_file(path: &std::path::Path, needle: &[u8]) -> usize {
    let mut bytes = std::fs::read(path).unwrap();
    let at: Vec<usize> = bytes
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect();
    for i in &at {
        bytes[i + needle.len() - 1] ^= 0x01;
    }
    std::fs::write(path, &bytes).unwrap();
    at.len()
}

/// A bit flipped on disk: the store refuses to open with a named error that
/// says the file is damaged and offers `repair`, and changes nothing.
/// `repair` keeps the damaged file aside, byte for byte, salvages every
/// change that still verifies into a new store in its place, and reports
/// what was lost; the lost change comes back from a peer.
#[test]
fn a_store_whose_file_fails_its_checksums() {
    let dir = tempfile::tempdir().unwrap();
    let (path, relay, case, record) = notes_store(dir.path());
    let me = {
        let s = Store::open(&path).unwrap();
        (
            s.device().id(),
            s.epoch().unwrap(),
            s.device().incarnation(),
        )
    };
    assert!(flip_in_file(&path, b"needle-02") >= 1);
    let damaged = std::fs::read(&path).unwrap();

    let err = Store::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::Damaged { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("damaged") && message.contains("repair"),
        "{message}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        damaged,
        "opening changed the file"
    );

    let report = Store::repair(&path, &repair_options(0x5e)).unwrap();
    assert!(report.check.is_some(), "{report:?}");
    assert!(!report.raw_scan);
    assert_eq!(report.damaged, dir.path().join("device.redb.damaged"));
    assert_eq!(
        std::fs::read(&report.damaged).unwrap(),
        damaged,
        "the damaged file is kept as it was"
    );
    // The change with the flipped byte fails verification; the 38 after it
    // depend on it and wait for it; the rest is stored.
    assert_eq!(report.lost, 1, "{:?}", report.problems);
    assert!(
        report.problems[0].starts_with("log entry 4"),
        "{:?}",
        report.problems
    );
    assert_eq!(report.cases, 1);
    assert_eq!((report.changes, report.pending), (40, 37));
    assert_eq!(report.incarnation, me.2 + 1);

    // The new store: the same device, a new epoch and incarnation.
    let store = Store::open(&path).unwrap();
    assert_eq!(store.device().id(), me.0);
    assert_ne!(store.epoch().unwrap(), me.1);
    assert_eq!(store.device().incarnation(), me.2 + 1);
    assert_eq!(store.case_record(&case).unwrap().notes.len(), 2);
    assert!(store.verify_all(t(61)).unwrap().problems.is_empty());
    assert!(
        store
            .audit_log()
            .unwrap()
            .iter()
            .any(|e| e.kind == fieldsync_store::AuditKind::Repaired)
    );
    // A peer sends the case again: the lost change comes back, and with it
    // everything that waited.
    let envelopes = relay.case_envelopes(&case).unwrap();
    let signed: Vec<_> = envelopes
        .iter()
        .map(|e| fieldsync_case::decode_change(e).unwrap())
        .collect();
    let genesis = fieldsync_identity::decode_signed::<fieldsync_case::Genesis>(
        &relay.case_genesis(&case).unwrap().unwrap(),
    )
    .unwrap();
    store
        .ingest(
            fieldsync_store::Ingest {
                cases: vec![(
                    fieldsync_case::verify_genesis(genesis).unwrap(),
                    fieldsync_identity::verify_batch(signed).unwrap(),
                )],
                ..fieldsync_store::Ingest::default()
            },
            t(62),
        )
        .unwrap();
    assert_eq!(store.pending_len().unwrap(), 0);
    let mut back = store.case_record(&case).unwrap();
    back.heads.sort();
    let mut want = record.clone();
    want.heads.sort();
    assert_eq!(back, want);
    // New edits work, under the new incarnation.
    note(&store, &case, 70, "after the repair").unwrap();
    let history = store.case_history(&case).unwrap();
    let last = history.last().unwrap();
    assert_eq!(
        (last.device, last.incarnation),
        (Some(me.0), Some(me.2 + 1))
    );
}

/// A file whose header is gone (redb cannot open it at all): `repair` finds
/// the signed changes, the geneses and the device identity in its raw
/// bytes, keeps what verifies, and rebuilds the store.
#[test]
fn a_store_whose_file_fails_its_checksums_even_its_header() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _relay, case, record) = notes_store(dir.path());
    let id = Store::open(&path).unwrap().device().id();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[..512].fill(0);
    std::fs::write(&path, &bytes).unwrap();

    let err = Store::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::Damaged { .. }), "{err:?}");
    let report = Store::repair(&path, &repair_options(0x6e)).unwrap();
    assert!(report.raw_scan, "{report:?}");
    assert_eq!((report.cases, report.changes, report.pending), (1, 41, 0));
    assert_eq!(std::fs::read(&report.damaged).unwrap(), bytes);
    let store = Store::open(&path).unwrap();
    assert_eq!(store.device().id(), id);
    let mut back = store.case_record(&case).unwrap();
    back.heads.sort();
    let mut want = record;
    want.heads.sort();
    assert_eq!(back, want);
    assert!(store.verify_all(t(61)).unwrap().problems.is_empty());
}

/// Damage only the newest commit's pages hold: the file was closed cleanly,
/// so it is damage (not a write torn by a crash, which redb would roll
/// back): refused, unchanged; `repair` keeps all but the bad change.
/// And a store another process holds is busy, not damaged.
#[test]
fn a_store_whose_file_fails_its_checksums_in_its_newest_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _relay, case, _) = notes_store(dir.path());
    {
        let held = Store::open(&path).unwrap();
        let err = Store::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::Busy { .. }), "{err:?}");
        drop(held);
    }
    assert_eq!(flip_in_file(&path, b"needle-39"), 1);
    let damaged = std::fs::read(&path).unwrap();
    let err = Store::open(&path).unwrap_err();
    // (redb names it either way: the newest commit fails its checksums.)
    assert!(matches!(&err, StoreError::Damaged { .. }), "{err:?}");
    assert_eq!(std::fs::read(&path).unwrap(), damaged);
    let report = Store::repair(&path, &repair_options(0x7e)).unwrap();
    assert_eq!((report.changes, report.pending, report.lost), (40, 0, 1));
    let store = Store::open(&path).unwrap();
    let notes = store.case_record(&case).unwrap().notes;
    assert_eq!(notes.len(), 39);
    assert_eq!(notes.last().unwrap().text, "needle-38");
}
