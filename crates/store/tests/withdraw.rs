//! Withdrawal: a newly adopted revocation list takes out of the log what it
//! puts beyond a revoked device's revocation point, and what depends on it,
//! into the quarantine; the cases are rebuilt from what remains.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fieldsync_case::{
    CaseDoc, CaseKind, ChangeHash, Field, VerifiedChange, VerifiedGenesis, new_genesis,
    payload_for_local,
};
use fieldsync_identity::{
    CaseId, DeviceId, HqRoot, Revocation, RevocationList, SecretKey, Timestamp, sign,
};
use fieldsync_store::{
    Cursor, Ingest, NewDevice, QuarantineEntry, SNAPSHOT_EVERY, Store, StoreKind, dependent_reason,
};

const T0: i64 = 1_790_000_000_000;

fn now() -> Timestamp {
    Timestamp::from_millis(T0)
}

fn store(seed: u8, kind: StoreKind) -> Store {
    Store::create_in_memory(NewDevice {
        seed: [seed; 32],
        name: "withdraw-test",
        epoch: [seed; 16],
        now: now(),
        kind,
    })
    .unwrap()
}

fn hq() -> HqRoot {
    HqRoot::from_secret(SecretKey::from_seed(&[200; 32]))
}

/// A device writing cases, with its own copy of each document.
struct Author {
    key: SecretKey,
    id: DeviceId,
    doc: CaseDoc,
}

impl Author {
    fn new(seed: u8) -> Self {
        let key = SecretKey::from_seed(&[seed; 32]);
        let id = DeviceId::from_public_key(key.public());
        Self {
            doc: CaseDoc::new(id.actor(0)),
            key,
            id,
        }
    }

    fn genesis(&self, case: CaseId) -> VerifiedGenesis {
        let g = new_genesis(
            case,
            CaseKind::CriminalInvestigation,
            "rome",
            "general",
            self.id,
            now(),
        )
        .unwrap();
        sign(g, &self.key).unwrap()
    }

    /// Commits what `edit` did as a change signed with counter `counter`.
    fn change(
        &mut self,
        case: CaseId,
        counter: u64,
        edit: impl FnOnce(&mut CaseDoc, DeviceId),
    ) -> VerifiedChange {
        edit(&mut self.doc, self.id);
        let c = self.doc.commit(now(), "edit").unwrap().unwrap();
        sign(payload_for_local(case, counter, c), &self.key).unwrap()
    }

    fn note(&mut self, case: CaseId, counter: u64, text: &str) -> VerifiedChange {
        self.change(case, counter, |d, me| d.add_note(me, now(), text).unwrap())
    }

    /// Learns changes made elsewhere.
    fn learn(&mut self, changes: &[&VerifiedChange]) {
        self.doc
            .apply(
                changes
                    .iter()
                    .map(|c| c.payload().change().clone())
                    .collect(),
            )
            .unwrap();
    }
}

fn ingest(s: &Store, genesis: &VerifiedGenesis, changes: &[&VerifiedChange]) {
    s.ingest(
        Ingest {
            cases: vec![(
                genesis.clone(),
                changes.iter().map(|c| (*c).clone()).collect(),
            )],
            peer_cursor: Some((
                DeviceId::from_public_key(SecretKey::from_seed(&[99; 32]).public()),
                Cursor {
                    epoch: [9; 16],
                    seq: 1,
                },
            )),
            ..Ingest::default()
        },
        now(),
    )
    .unwrap();
}

fn hash(c: &VerifiedChange) -> ChangeHash {
    c.payload().hash()
}

fn revoke(a: &Author, through: u64) -> RevocationList {
    hq().revoke(
        None,
        Revocation::new(a.id, now(), "laptop stolen").accepting(0, through),
        now(),
    )
    .unwrap()
}

/// The case of these tests: `b` creates it (b1), `a` edits it at counter 2
/// (a1, accepted) and at counter 7 (a2: beyond a point of 5, it retitles
/// the case), `b` builds on a2 (b2), `c` edits concurrently, knowing only
/// b1 and a1 (c1).
struct Scene {
    case: CaseId,
    genesis: VerifiedGenesis,
    a: Author,
    b: Author,
    b1: VerifiedChange,
    a1: VerifiedChange,
    a2: VerifiedChange,
    b2: VerifiedChange,
    c1: VerifiedChange,
}

fn scene() -> Scene {
    let case = CaseId::from_bytes([7; 16]);
    let mut a = Author::new(11);
    let mut b = Author::new(12);
    let mut c = Author::new(13);
    let genesis = b.genesis(case);
    let b1 = b.change(case, 1, |d, _| d.init("Stele").unwrap());
    a.learn(&[&b1]);
    let a1 = a.note(case, 2, "seen at the port");
    let a2 = a.change(case, 7, |d, _| d.set_field(Field::Title, "Forged").unwrap());
    b.learn(&[&a1, &a2]);
    let b2 = b.note(case, 3, "on top of the forged title");
    c.learn(&[&b1, &a1]);
    let c1 = c.note(case, 4, "concurrent");
    Scene {
        case,
        genesis,
        a,
        b,
        b1,
        a1,
        a2,
        b2,
        c1,
    }
}

/// A store holding `changes` only, to compare with.
fn reference(kind: StoreKind, s: &Scene, changes: &[&VerifiedChange]) -> Store {
    let r = store(50, kind);
    ingest(&r, &s.genesis, changes);
    r
}

fn heads(s: &Store) -> Vec<(CaseId, Vec<ChangeHash>)> {
    s.case_heads()
        .unwrap()
        .into_iter()
        .map(|h| (h.case, h.heads))
        .collect()
}

fn quarantined(s: &Store) -> Vec<(ChangeHash, String)> {
    s.quarantine()
        .unwrap()
        .into_iter()
        .map(|(_, e)| (fieldsync_case::envelope_hash(&e.change).unwrap(), e.reason))
        .collect()
}

fn withdraws_the_change_and_its_dependent(kind: StoreKind) {
    let s = scene();
    let node = store(1, kind);
    ingest(&node, &s.genesis, &[&s.b1, &s.a1, &s.a2, &s.b2, &s.c1]);
    let head = node.log_head().unwrap();
    assert_eq!(head, 5);
    // Where each change sits (one batch is placed in causal order, not as sent).
    let seq_of = |c: &VerifiedChange| {
        node.read_log(0, usize::MAX, usize::MAX, |_| true)
            .unwrap()
            .entries
            .iter()
            .find(|e| fieldsync_case::envelope_hash(&e.envelope) == Some(hash(c)))
            .unwrap()
            .seq
    };
    let mut kept = vec![seq_of(&s.b1), seq_of(&s.a1), seq_of(&s.c1)];
    kept.sort_unstable();
    let list = revoke(&s.a, 5);

    let report = node.adopt_revocations(&list, now()).unwrap();
    assert!(report.stored);
    assert_eq!(report.newly_revoked, vec![s.a.id]);
    assert_eq!(
        (report.withdrawn, report.dependents, report.from_pending),
        (1, 1, 0)
    );
    assert_eq!(report.cases, vec![s.case]);

    // Both are in the quarantine, with their reasons.
    let q = quarantined(&node);
    assert_eq!(q.len(), 2, "{q:?}");
    let root_reason = list
        .change_status(&s.a.id, 0, 7)
        .quarantine_reason(&s.a.id)
        .unwrap();
    assert!(q.contains(&(hash(&s.a2), root_reason)), "{q:?}");
    assert!(
        q.contains(&(hash(&s.b2), dependent_reason(&hash(&s.a2), &s.a.id))),
        "{q:?}"
    );
    assert!(q[1].1.contains("depends on change") && q[1].1.contains(&s.a.id.short()));
    let entry: QuarantineEntry = node.quarantine().unwrap()[0].1.clone();
    assert_eq!(entry.signer, s.a.id);

    // The case is what it would be without them.
    let refr = reference(kind, &s, &[&s.b1, &s.a1, &s.c1]);
    assert_eq!(heads(&node), heads(&refr));
    let listing = node.list_cases_with_summaries().unwrap();
    assert_eq!(listing.len(), 1);
    assert_eq!(listing[0].changes, 3);
    assert_eq!(listing[0].title, "Stele");
    assert_eq!(
        node.case_record(&s.case).unwrap(),
        refr.case_record(&s.case).unwrap()
    );
    assert!(!node.has_change(&s.case, &hash(&s.a2)).unwrap());
    assert!(!node.has_change(&s.case, &hash(&s.b2)).unwrap());
    assert!(node.has_change(&s.case, &hash(&s.c1)).unwrap());

    // Every log reader skips them; the head stays where it was.
    assert_eq!(node.log_head().unwrap(), head);
    let all = node.read_log(0, usize::MAX, usize::MAX, |_| true).unwrap();
    assert_eq!(all.entries.iter().map(|e| e.seq).collect::<Vec<_>>(), kept);
    assert!(all.at_end);
    assert_eq!(all.next, head);
    let mut after = 0;
    let mut seen = Vec::new();
    loop {
        let b = node.read_log(after, 1, usize::MAX, |_| true).unwrap();
        seen.extend(b.entries.iter().map(|e| e.seq));
        if b.at_end {
            break;
        }
        after = b.next;
    }
    assert_eq!(seen, kept);
    let indexed = node
        .read_log_for_reader(0, 0, None, &["general"], usize::MAX, usize::MAX)
        .unwrap();
    assert_eq!(
        indexed.entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
        kept
    );
    assert!(indexed.at_end && indexed.next == head);
    assert_eq!(node.case_envelopes(&s.case).unwrap().len(), 3);
    let verify = node.verify_all(now()).unwrap();
    assert_eq!((verify.changes, verify.problems.len()), (3, 0));
    let bundle = node.export_bundle(&[], now()).unwrap();
    let copy = store(60, kind);
    copy.import_bundle(&bundle, now()).unwrap();
    assert_eq!(heads(&copy), heads(&refr));
    assert!(
        node.audit_log()
            .unwrap()
            .iter()
            .any(|e| e.detail.contains("withdrew 1 changes"))
    );

    // Adopting the same list again does nothing.
    let again = node.adopt_revocations(&list, now()).unwrap();
    assert!(!again.stored && again.quarantined() == 0);
    assert_eq!(quarantined(&node).len(), 2);
    // A newer list that revokes someone else does not scan for `a` again.
    let other = Author::new(14);
    let next = hq()
        .revoke(
            Some(&list),
            Revocation::new(other.id, now(), "lost").accepting(0, 1),
            now(),
        )
        .unwrap();
    let r = node.adopt_revocations(&next, now()).unwrap();
    assert!(r.stored);
    assert_eq!(r.newly_revoked, vec![other.id]);
    assert_eq!(r.quarantined(), 0);
    // An older list is not stored over a newer one.
    assert!(!node.adopt_revocations(&list, now()).unwrap().stored);
    assert_eq!(node.revocations().unwrap(), Some(next.to_bytes()));

    // The same changes sent again go nowhere but the quarantine they are
    // in already (the caller quarantines a2; b2 waits on it).
    node.ingest(
        Ingest {
            cases: vec![(s.genesis.clone(), vec![s.b2.clone()])],
            quarantine: vec![QuarantineEntry {
                change: fieldsync_case::encode_change(s.a2.as_signed()),
                ..entry.clone()
            }],
            ..Ingest::default()
        },
        now(),
    )
    .unwrap();
    assert_eq!(node.pending_len().unwrap(), 0);
    assert_eq!(quarantined(&node).len(), 2);
    assert_eq!(heads(&node), heads(&refr));
    assert_eq!(node.log_head().unwrap(), head);
}

#[test]
fn a_relay_withdraws_the_change_and_its_dependent() {
    withdraws_the_change_and_its_dependent(StoreKind::Relay);
}

#[test]
fn a_device_withdraws_the_change_and_its_dependent() {
    withdraws_the_change_and_its_dependent(StoreKind::Device);
}

#[test]
fn the_log_head_does_not_move_back_and_positions_are_not_reused() {
    let s = scene();
    let node = store(1, StoreKind::Device);
    ingest(&node, &s.genesis, &[&s.b1, &s.a1, &s.c1]);
    ingest(&node, &s.genesis, &[&s.a2, &s.b2]);
    node.adopt_revocations(&revoke(&s.a, 5), now()).unwrap();
    // Positions 4 and 5, the head among them, are tombstones now.
    assert_eq!(node.log_head().unwrap(), 5);
    let b = node.read_log(3, usize::MAX, usize::MAX, |_| true).unwrap();
    assert!(b.entries.is_empty() && b.at_end && b.next == 5);
    // A local edit signs with the next position, never a withdrawn one.
    let me = node.device().id();
    let h = node
        .edit_case(&s.case, now(), "note", |d| d.add_note(me, now(), "after"))
        .unwrap()
        .unwrap();
    assert_eq!(node.log_head().unwrap(), 6);
    let b = node.read_log(5, usize::MAX, usize::MAX, |_| true).unwrap();
    assert_eq!(b.entries.len(), 1);
    assert_eq!(b.entries[0].seq, 6);
    let counter = fieldsync_case::decode_change(&b.entries[0].envelope)
        .unwrap()
        .payload()
        .counter();
    assert_eq!(counter, 6);
    assert!(node.has_change(&s.case, &h).unwrap());
    assert_eq!(node.case_record(&s.case).unwrap().notes.len(), 3);
}

#[test]
fn a_node_keeps_its_own_changes_and_what_they_depend_on() {
    // `b` itself adopts the list: its own b2 stays, and so does a2, which
    // b2 depends on. A third device's change on top of a2 is withdrawn.
    let s = scene();
    let node = Store::create_in_memory(NewDevice {
        seed: [12; 32],
        name: "b",
        epoch: [12; 16],
        now: now(),
        kind: StoreKind::Device,
    })
    .unwrap();
    assert_eq!(node.device().id(), s.b.id);
    let mut d = Author::new(15);
    d.learn(&[&s.b1, &s.a1, &s.a2]);
    let d1 = d.note(s.case, 1, "also on the forged title");
    ingest(&node, &s.genesis, &[&s.b1, &s.a1, &s.a2, &s.b2, &d1]);
    let r = node.adopt_revocations(&revoke(&s.a, 5), now()).unwrap();
    assert_eq!((r.withdrawn, r.dependents), (0, 1));
    assert!(node.has_change(&s.case, &hash(&s.a2)).unwrap());
    assert!(node.has_change(&s.case, &hash(&s.b2)).unwrap());
    assert!(!node.has_change(&s.case, &hash(&d1)).unwrap());
    assert_eq!(
        quarantined(&node),
        vec![(hash(&d1), dependent_reason(&hash(&s.a2), &s.a.id))]
    );
    assert_eq!(node.case_record(&s.case).unwrap().title, "Forged");
}

#[test]
fn a_snapshot_that_holds_a_withdrawn_change_is_rebuilt() {
    let s = scene();
    let node = store(1, StoreKind::Device);
    // a2 first, then more changes than a snapshot holds, on a branch that
    // does not know a2: the snapshot written on the way holds a2.
    let mut c = Author::new(16);
    c.learn(&[&s.b1, &s.a1]);
    let many: Vec<VerifiedChange> = (0..SNAPSHOT_EVERY + 10)
        .map(|i| c.note(s.case, i + 1, &format!("n{i}")))
        .collect();
    ingest(&node, &s.genesis, &[&s.b1, &s.a1, &s.a2]);
    for chunk in many.chunks(50) {
        ingest(&node, &s.genesis, &chunk.iter().collect::<Vec<_>>());
    }
    assert_eq!(node.case_record(&s.case).unwrap().title, "Forged");
    let r = node.adopt_revocations(&revoke(&s.a, 5), now()).unwrap();
    assert_eq!((r.withdrawn, r.dependents), (1, 0));
    let mut kept: Vec<&VerifiedChange> = vec![&s.b1, &s.a1];
    kept.extend(many.iter());
    let refr = reference(StoreKind::Device, &s, &kept);
    assert_eq!(
        node.case_record(&s.case).unwrap(),
        refr.case_record(&s.case).unwrap()
    );
    assert_eq!(node.list_cases().unwrap()[0].title, "Stele");
    assert_eq!(heads(&node), heads(&refr));
    // Reopened from its rows alone (no cached document), the same.
    let listing = node.list_cases().unwrap();
    assert_eq!(listing[0].changes, kept.len() as u64);
}

#[test]
fn a_case_with_nothing_left_has_no_row() {
    // A case `a` created beyond its point: nothing of it stands.
    let mut a = Author::new(11);
    let case = CaseId::from_bytes([8; 16]);
    let genesis = a.genesis(case);
    let first = a.change(case, 9, |d, _| d.init("Forged case").unwrap());
    let second = a.note(case, 10, "more");
    let node = store(1, StoreKind::Relay);
    ingest(&node, &genesis, &[&first, &second]);
    let r = node.adopt_revocations(&revoke(&a, 5), now()).unwrap();
    assert_eq!((r.withdrawn, r.dependents), (2, 0));
    assert!(node.list_cases().unwrap().is_empty());
    assert!(node.case_heads().unwrap().is_empty());
    // Its genesis is still found, with its quarantined changes.
    assert!(node.case_genesis(&case).unwrap().is_some());
    assert_eq!(node.log_head().unwrap(), 2);
}

#[test]
fn pending_changes_beyond_the_point_or_waiting_on_one_go_to_quarantine() {
    let s = scene();
    let mut a = s.a;
    let node = store(1, StoreKind::Relay);
    ingest(&node, &s.genesis, &[&s.b1, &s.a1]);
    // a3 (beyond the point) is never delivered; a4 (beyond it too) and d1
    // (by another device) wait on it in pending.
    let a3 = a.note(s.case, 8, "a3");
    let a4 = a.note(s.case, 9, "a4");
    let mut d = Author::new(15);
    d.learn(&[&s.b1, &s.a1, &s.a2, &a3]);
    let d1 = d.note(s.case, 1, "d1 on a3");
    ingest(&node, &s.genesis, &[&a4, &d1]);
    assert_eq!(node.pending_len().unwrap(), 2);
    let list = revoke(&a, 5);
    let r = node.adopt_revocations(&list, now()).unwrap();
    // a4 is beyond the point itself; d1 waits on a3, which is not here.
    assert_eq!(r.from_pending, 1);
    assert_eq!(node.pending_len().unwrap(), 1);
    // a3 arrives and is quarantined (by the caller's authorization): d1,
    // which waits on it, follows it there.
    let reason = list
        .change_status(&a.id, 0, 8)
        .quarantine_reason(&a.id)
        .unwrap();
    let report = node
        .ingest(
            Ingest {
                quarantine: vec![QuarantineEntry {
                    at: now(),
                    reason: reason.clone(),
                    case: s.case,
                    signer: a.id,
                    genesis: fieldsync_identity::encode_signed(s.genesis.as_signed()),
                    change: fieldsync_case::encode_change(a3.as_signed()),
                }],
                ..Ingest::default()
            },
            now(),
        )
        .unwrap();
    assert_eq!(report.quarantined, 2);
    assert_eq!(node.pending_len().unwrap(), 0);
    let q = quarantined(&node);
    assert!(
        q.contains(&(
            hash(&a4),
            list.change_status(&a.id, 0, 9)
                .quarantine_reason(&a.id)
                .unwrap()
        ))
    );
    assert!(q.contains(&(hash(&a3), reason)));
    assert!(q.contains(&(hash(&d1), dependent_reason(&hash(&a3), &a.id))));
    // A change that waits on a quarantined one, and comes later, goes
    // straight there too.
    let d2 = d.note(s.case, 2, "d2");
    ingest(&node, &s.genesis, &[&d2]);
    assert_eq!(node.pending_len().unwrap(), 0);
    assert!(quarantined(&node).contains(&(hash(&d2), dependent_reason(&hash(&a3), &a.id))));
}

#[test]
fn a_withdrawn_change_and_then_its_dependent_can_be_released() {
    let s = scene();
    let node = store(1, StoreKind::Relay);
    ingest(&node, &s.genesis, &[&s.b1, &s.a1, &s.a2, &s.b2, &s.c1]);
    let before = heads(&node);
    node.adopt_revocations(&revoke(&s.a, 5), now()).unwrap();
    assert_ne!(heads(&node), before);
    let release = |c: &VerifiedChange| Ingest {
        cases: vec![(s.genesis.clone(), vec![c.clone()])],
        releases: vec![(s.case, hash(c), b"signed release".to_vec())],
        ..Ingest::default()
    };
    // The dependent first: it waits for a2 in pending, out of the quarantine.
    let r = node.ingest(release(&s.b2), now()).unwrap();
    assert_eq!((r.pending, r.released_from_quarantine), (1, 1));
    assert_eq!(node.pending_len().unwrap(), 1);
    // Then a2: both are stored, at new positions.
    let r = node.ingest(release(&s.a2), now()).unwrap();
    assert_eq!((r.stored, r.released_from_quarantine), (2, 1));
    assert!(node.quarantine().unwrap().is_empty());
    assert_eq!(heads(&node), before);
    assert_eq!(node.log_head().unwrap(), 7);
    assert!(node.release_for(&s.case, &hash(&s.a2)).unwrap().is_some());
}

#[test]
fn signed_counters_are_the_highest_per_incarnation_in_the_log() {
    let s = scene();
    let node = store(1, StoreKind::Relay);
    ingest(&node, &s.genesis, &[&s.b1, &s.a1, &s.a2, &s.b2]);
    let counters = node.signed_counters(&s.a.id).unwrap();
    assert_eq!(counters.into_iter().collect::<Vec<_>>(), vec![(0, 7)]);
    assert!(
        node.signed_counters(&Author::new(40).id)
            .unwrap()
            .is_empty()
    );
    // At the counter it holds, nothing is withdrawn.
    let r = node.adopt_revocations(&revoke(&s.a, 7), now()).unwrap();
    assert_eq!(r.quarantined(), 0);
    assert_eq!(node.case_envelopes(&s.case).unwrap().len(), 4);
}
