//! What the sync engine relies on: reading the log for a peer, ingesting a
//! peer's batch with its cursor in one transaction, pending changes,
//! relay stores that never touch a document, acknowledgements, receipts,
//! the quarantine and repair.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};

use fieldsync_case::{
    CaseDoc, CaseKind, ChangeHash, VerifiedChange, VerifiedGenesis, decode_change, new_genesis,
    payload_for_local,
};
use fieldsync_identity::{
    CaseId, DeviceId, SecretKey, Timestamp, decode_signed, encode_signed, sign,
};
use fieldsync_store::{
    BundleError, CaseHeads, Cursor, Ingest, IngestReport, MAX_PENDING_CHANGES, NewCase, NewDevice,
    PeerRecord, QuarantineEntry, Store, StoreError, StoreKind, StoredReceipt,
};
use proptest::prelude::*;

const T0: i64 = 1_790_000_000_000;

fn now() -> Timestamp {
    Timestamp::from_millis(T0)
}

fn new_device(seed: u8, kind: StoreKind) -> NewDevice<'static> {
    NewDevice {
        seed: [seed; 32],
        name: "sync-test",
        epoch: [seed; 16],
        now: now(),
        kind,
    }
}

fn store(seed: u8, kind: StoreKind) -> Store {
    Store::create_in_memory(new_device(seed, kind)).unwrap()
}

fn case_id(n: u8) -> CaseId {
    CaseId::from_bytes([n; 16])
}

/// A foreign device writing one case.
struct Author {
    key: SecretKey,
    id: DeviceId,
}

impl Author {
    fn new(seed: u8) -> Self {
        let key = SecretKey::from_seed(&[seed; 32]);
        let id = DeviceId::from_public_key(key.public());
        Self { key, id }
    }

    fn genesis(&self, case: CaseId, compartment: &str) -> VerifiedGenesis {
        sign(
            new_genesis(
                case,
                CaseKind::CriminalInvestigation,
                "rome",
                compartment,
                self.id,
                now(),
            )
            .unwrap(),
            &self.key,
        )
        .unwrap()
    }

    fn sign(&self, case: CaseId, counter: u64, change: automerge::Change) -> VerifiedChange {
        sign(payload_for_local(case, counter, change), &self.key).unwrap()
    }

    /// A linear case of `n` changes (the first lays out the document).
    fn linear(&self, case: CaseId, n: usize) -> (VerifiedGenesis, Vec<VerifiedChange>) {
        let mut doc = CaseDoc::new(self.id.actor(0));
        doc.init("linear").unwrap();
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            if i > 0 {
                doc.add_note(self.id, now(), &format!("n{i}")).unwrap();
            }
            let c = doc.commit(now(), "e").unwrap().unwrap();
            out.push(self.sign(case, i as u64 + 1, c));
        }
        (self.genesis(case, "general"), out)
    }
}

fn batch(cases: Vec<(VerifiedGenesis, Vec<VerifiedChange>)>) -> Ingest {
    Ingest {
        cases,
        ..Ingest::default()
    }
}

fn cursor(seq: u64) -> Cursor {
    Cursor {
        epoch: [9; 16],
        seq,
    }
}

fn new_case(id: CaseId, compartment: &str) -> NewCase<'_> {
    NewCase {
        id,
        kind: CaseKind::CulturalProperty,
        office: "rome",
        compartment,
        title: "t",
    }
}

fn note(store: &Store, case: &CaseId, text: &str) {
    let me = store.device().id();
    store
        .edit_case(case, now(), "note", |d| d.add_note(me, now(), text))
        .unwrap()
        .unwrap();
}

// ---- reading the log ----

/// A device store whose log interleaves cases of compartments `a` and `b`:
/// seqs 1 a1, 2 b1, 3 b1, 4 a2, 5 a1, 6 b2, 7 b2, 8 a1, 9 b1, 10 b2.
fn interleaved() -> Store {
    let s = store(1, StoreKind::Device);
    let (a1, a2, b1, b2) = (case_id(0xa1), case_id(0xa2), case_id(0xb1), case_id(0xb2));
    s.create_case(&new_case(a1, "a"), now()).unwrap();
    s.create_case(&new_case(b1, "b"), now()).unwrap();
    note(&s, &b1, "x");
    s.create_case(&new_case(a2, "a"), now()).unwrap();
    note(&s, &a1, "x");
    s.create_case(&new_case(b2, "b"), now()).unwrap();
    note(&s, &b2, "x");
    note(&s, &a1, "y");
    note(&s, &b1, "y");
    note(&s, &b2, "y");
    assert_eq!(s.log_head().unwrap(), 10);
    s
}

#[test]
fn read_log_filters_and_reports_where_to_resume() {
    let s = interleaved();
    let only_a = |g: &fieldsync_case::Genesis| g.compartment == "a";
    let all = s.read_log(0, usize::MAX, usize::MAX, |_| true).unwrap();
    assert_eq!(all.entries.len(), 10);
    assert!(all.at_end);
    assert_eq!(all.next, 10);
    let seqs: Vec<u64> = all.entries.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
    let order: Vec<CaseId> = all.geneses.iter().map(|(c, _)| *c).collect();
    assert_eq!(
        order,
        vec![case_id(0xa1), case_id(0xb1), case_id(0xa2), case_id(0xb2)]
    );
    // Every envelope is the stored change of its case.
    for e in &all.entries {
        assert_eq!(decode_change(&e.envelope).unwrap().payload().case(), e.case);
    }

    // Only compartment a: seqs 1, 4, 5, 8; the unreadable tail still advances `next`.
    let a = s.read_log(0, 100, usize::MAX, only_a).unwrap();
    let seqs: Vec<u64> = a.entries.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![1, 4, 5, 8]);
    assert_eq!((a.next, a.at_end), (10, true));
    assert_eq!(a.geneses.len(), 2);
    for (case, g) in &a.geneses {
        let g = decode_signed::<fieldsync_case::Genesis>(g).unwrap();
        assert_eq!(g.payload().value().case, *case);
        assert_eq!(g.payload().value().compartment, "a");
    }

    // One at a time: skipped entries between readable ones are examined with the next one.
    let one = s.read_log(1, 1, usize::MAX, only_a).unwrap();
    assert_eq!(one.entries[0].seq, 4);
    assert_eq!((one.next, one.at_end), (4, false));
    let last = s.read_log(5, 1, usize::MAX, only_a).unwrap();
    assert_eq!(last.entries[0].seq, 8);
    assert_eq!((last.next, last.at_end), (8, false));
    let tail = s.read_log(8, 1, usize::MAX, only_a).unwrap();
    assert!(tail.entries.is_empty() && tail.geneses.is_empty());
    assert_eq!((tail.next, tail.at_end), (10, true));

    // At or past the end.
    for after in [10, 11, u64::MAX] {
        let b = s.read_log(after, 10, usize::MAX, |_| true).unwrap();
        assert!(b.entries.is_empty());
        assert!(b.at_end);
        assert_eq!(b.next, after);
    }
    // No entries wanted: nothing examined.
    let none = s.read_log(3, 0, usize::MAX, |_| true).unwrap();
    assert_eq!((none.entries.len(), none.next, none.at_end), (0, 3, false));
}

#[test]
fn read_log_asks_about_each_case_once_per_call() {
    let s = interleaved();
    let asked = Cell::new(0);
    let b = s
        .read_log(0, usize::MAX, usize::MAX, |g| {
            asked.set(asked.get() + 1);
            g.compartment == "b"
        })
        .unwrap();
    assert_eq!(asked.get(), 4);
    assert_eq!(b.entries.len(), 6);
}

#[test]
fn read_log_batches_cover_the_log_within_their_limits() {
    let s = interleaved();
    let all = s.read_log(0, usize::MAX, usize::MAX, |_| true).unwrap();
    let genesis_len: BTreeMap<CaseId, usize> =
        all.geneses.iter().map(|(c, g)| (*c, g.len())).collect();
    for (max_changes, max_bytes) in [(1, usize::MAX), (3, usize::MAX), (100, 1), (4, 1500)] {
        for filter in ["a", "b", "ab"] {
            let readable = |g: &fieldsync_case::Genesis| filter.contains(g.compartment.as_str());
            let mut after = 0;
            let mut got = Vec::new();
            loop {
                let b = s.read_log(after, max_changes, max_bytes, readable).unwrap();
                assert!(b.next >= after);
                assert!(b.entries.len() <= max_changes);
                // Geneses: the batch's cases, in first-appearance order.
                let mut cases = Vec::new();
                for e in &b.entries {
                    if !cases.contains(&e.case) {
                        cases.push(e.case);
                    }
                }
                let genesis_cases: Vec<CaseId> = b.geneses.iter().map(|(c, _)| *c).collect();
                assert_eq!(genesis_cases, cases);
                let bytes: usize = b.entries.iter().map(|e| e.envelope.len()).sum::<usize>()
                    + cases.iter().map(|c| genesis_len[c]).sum::<usize>();
                assert!(
                    bytes <= max_bytes || b.entries.len() == 1,
                    "{bytes} > {max_bytes}"
                );
                if let Some(last) = b.entries.last() {
                    assert!(last.seq <= b.next);
                }
                got.extend(b.entries.iter().map(|e| e.seq));
                after = b.next;
                if b.at_end {
                    break;
                }
            }
            assert_eq!(after, 10);
            let want: Vec<u64> = all
                .entries
                .iter()
                .filter(|e| {
                    let g = &all.geneses.iter().find(|(c, _)| *c == e.case).unwrap().1;
                    readable(
                        decode_signed::<fieldsync_case::Genesis>(g)
                            .unwrap()
                            .payload()
                            .value(),
                    )
                })
                .map(|e| e.seq)
                .collect();
            assert_eq!(got, want, "limits ({max_changes}, {max_bytes}), {filter}");
        }
    }
}

// ---- ingesting ----

#[test]
fn ingest_stores_batch_and_cursor_together_or_nothing() {
    for kind in [StoreKind::Device, StoreKind::Relay] {
        let s = store(2, kind);
        let peer = Author::new(50).id;
        let alice = Author::new(10);
        let (g1, c1) = alice.linear(case_id(1), 3);
        let r = s
            .ingest(
                Ingest {
                    cases: vec![(g1, c1)],
                    quarantine: vec![],
                    peer_cursor: Some((peer, cursor(7))),
                    peers: vec![],
                    releases: vec![],
                },
                now(),
            )
            .unwrap();
        assert_eq!(r.stored, 3);
        assert_eq!(s.peer_cursor(&peer).unwrap(), Some(cursor(7)));

        // A batch with a good new case and a case whose genesis conflicts with
        // the stored one: nothing is stored, the cursor does not move.
        let (g2, c2) = alice.linear(case_id(2), 2);
        let (g3, c3) = Author::new(11).linear(case_id(1), 2);
        let q = quarantined(&alice, case_id(2));
        let err = s
            .ingest(
                Ingest {
                    cases: vec![(g2.clone(), c2.clone()), (g3, c3)],
                    quarantine: vec![q],
                    peer_cursor: Some((peer, cursor(12))),
                    peers: vec![],
                    releases: vec![],
                },
                now(),
            )
            .unwrap_err();
        assert!(matches!(err, BundleError::GenesisConflict { .. }), "{err}");
        assert_eq!(s.peer_cursor(&peer).unwrap(), Some(cursor(7)));
        assert_eq!(s.log_head().unwrap(), 3);
        assert_eq!(s.list_cases().unwrap().len(), 1);
        assert!(s.quarantine().unwrap().is_empty());
        assert!(!s.is_poisoned());

        // A change filed under another case: refused whole too.
        let err = s
            .ingest(
                Ingest {
                    cases: vec![(
                        g2.clone(),
                        vec![c2[0].clone(), alice.linear(case_id(3), 1).1[0].clone()],
                    )],
                    quarantine: vec![],
                    peer_cursor: Some((peer, cursor(12))),
                    peers: vec![],
                    releases: vec![],
                },
                now(),
            )
            .unwrap_err();
        assert!(
            matches!(err, BundleError::WrongCase { index: 1, .. }),
            "{err}"
        );
        assert_eq!(s.log_head().unwrap(), 3);

        // The good part alone goes through, with the cursor.
        let r = s
            .ingest(
                Ingest {
                    cases: vec![(g2, c2)],
                    quarantine: vec![],
                    peer_cursor: Some((peer, cursor(12))),
                    peers: vec![],
                    releases: vec![],
                },
                now(),
            )
            .unwrap();
        assert_eq!(r.stored, 2);
        assert_eq!(s.peer_cursor(&peer).unwrap(), Some(cursor(12)));
        assert_eq!(s.peer_cursor(&alice.id).unwrap(), None);
    }
}

#[test]
fn duplicates_are_acknowledged_and_ignored() {
    for kind in [StoreKind::Device, StoreKind::Relay] {
        let s = store(3, kind);
        let (g, c) = Author::new(10).linear(case_id(1), 4);
        let mut twice = c.clone();
        twice.push(c[2].clone());
        let r = s.ingest(batch(vec![(g.clone(), twice)]), now()).unwrap();
        assert_eq!(
            r,
            IngestReport {
                stored: 4,
                duplicates: 1,
                ..IngestReport::default()
            }
        );
        let r = s.ingest(batch(vec![(g, c)]), now()).unwrap();
        assert_eq!((r.stored, r.duplicates), (0, 4));
        assert_eq!(s.log_head().unwrap(), 4);
    }
}

#[test]
fn changes_wait_in_pending_until_their_dependencies_arrive() {
    let mut heads = Vec::new();
    let (g, c) = Author::new(10).linear(case_id(1), 5);
    for kind in [StoreKind::Device, StoreKind::Relay] {
        let s = store(4, kind);
        // Changes 3..5 without 1 and 2.
        let r = s
            .ingest(batch(vec![(g.clone(), c[2..].to_vec())]), now())
            .unwrap();
        assert_eq!((r.stored, r.pending), (0, 3));
        assert_eq!(s.pending_len().unwrap(), 3);
        assert!(
            s.list_cases().unwrap().is_empty(),
            "a case without a stored change is listed"
        );
        assert!(!s.has_change(&case_id(1), &c[2].payload().hash()).unwrap());
        // Again: already pending, so duplicates.
        let r = s
            .ingest(batch(vec![(g.clone(), c[3..].to_vec())]), now())
            .unwrap();
        assert_eq!((r.duplicates, r.pending), (2, 0));
        // Change 2 arrives: still missing 1, so it waits too.
        let r = s
            .ingest(batch(vec![(g.clone(), vec![c[1].clone()])]), now())
            .unwrap();
        assert_eq!((r.stored, r.pending), (0, 1));
        // Change 1 arrives: everything is released, in causal order.
        let r = s
            .ingest(batch(vec![(g.clone(), vec![c[0].clone()])]), now())
            .unwrap();
        assert_eq!((r.stored, r.pending, r.released_from_pending), (5, 0, 4));
        assert_eq!(s.pending_len().unwrap(), 0);
        let stored: Vec<ChangeHash> = s
            .case_envelopes(&case_id(1))
            .unwrap()
            .iter()
            .map(|e| decode_change(e).unwrap().payload().hash())
            .collect();
        let want: Vec<ChangeHash> = c.iter().map(|c| c.payload().hash()).collect();
        assert_eq!(stored, want);
        if kind == StoreKind::Device {
            assert_eq!(s.case_record(&case_id(1)).unwrap().notes.len(), 4);
        }
        heads.push(s.case_heads().unwrap());
    }
    assert_eq!(heads[0], heads[1]);
    assert_eq!(heads[0][0].heads, vec![c[4].payload().hash()]);
}

#[test]
fn a_pending_change_under_another_genesis_is_a_conflict() {
    let s = store(5, StoreKind::Relay);
    let (g, c) = Author::new(10).linear(case_id(1), 3);
    s.ingest(batch(vec![(g, c[1..].to_vec())]), now()).unwrap();
    let (g2, c2) = Author::new(11).linear(case_id(1), 1);
    let err = s.ingest(batch(vec![(g2, c2)]), now()).unwrap_err();
    assert!(matches!(err, BundleError::GenesisConflict { .. }), "{err}");
}

#[test]
fn a_bundle_must_still_be_self_contained() {
    let s = store(6, StoreKind::Relay);
    let (g, c) = Author::new(10).linear(case_id(1), 3);
    let err = s
        .import_verified(vec![(g.clone(), c[1..].to_vec())], now())
        .unwrap_err();
    assert!(
        matches!(err, BundleError::MissingDependencies { count: 2, .. }),
        "{err}"
    );
    assert_eq!(s.pending_len().unwrap(), 0);
    // What sync holds, a bundle can release.
    s.ingest(batch(vec![(g.clone(), c[1..].to_vec())]), now())
        .unwrap();
    let r = s
        .import_verified(vec![(g, vec![c[0].clone()])], now())
        .unwrap();
    assert_eq!((r.new_cases, r.stored), (1, 3));
    assert_eq!(s.pending_len().unwrap(), 0);
}

#[test]
fn pending_is_bounded() {
    let s = store(7, StoreKind::Relay);
    let author = Author::new(10);
    let case = case_id(1);
    let g = author.genesis(case, "general");
    let mut doc = CaseDoc::new(author.id.actor(0));
    doc.init("flood").unwrap();
    let first = author.sign(case, 0, doc.commit(now(), "e").unwrap().unwrap());
    let mut rest = Vec::with_capacity(MAX_PENDING_CHANGES + 1);
    for i in 0..=MAX_PENDING_CHANGES {
        doc.set_title(&format!("t{i}")).unwrap();
        rest.push(author.sign(case, i as u64 + 1, doc.commit(now(), "e").unwrap().unwrap()));
    }
    let last = rest.pop().unwrap();
    // Exactly at the limit: accepted.
    let r = s.ingest(batch(vec![(g.clone(), rest)]), now()).unwrap();
    assert_eq!(r.pending, MAX_PENDING_CHANGES);
    // One more: refused, with nothing stored, cursor unchanged.
    let peer = Author::new(50).id;
    let err = s
        .ingest(
            Ingest {
                cases: vec![(g.clone(), vec![last.clone()])],
                quarantine: vec![],
                peer_cursor: Some((peer, cursor(1))),
                peers: vec![],
                releases: vec![],
            },
            now(),
        )
        .unwrap_err();
    assert!(matches!(err, BundleError::PendingFull { .. }), "{err}");
    assert!(err.to_string().contains("nothing of this batch was stored"));
    assert_eq!(s.pending_len().unwrap(), MAX_PENDING_CHANGES);
    assert_eq!(s.peer_cursor(&peer).unwrap(), None);
    // The missing first change releases everything; then the last one fits.
    let r = s
        .ingest(batch(vec![(g.clone(), vec![first, last])]), now())
        .unwrap();
    assert_eq!(r.stored, MAX_PENDING_CHANGES + 2);
    assert_eq!(r.released_from_pending, MAX_PENDING_CHANGES);
    assert_eq!(s.pending_len().unwrap(), 0);
}

// ---- relay stores ----

#[test]
fn a_relay_stores_what_a_document_could_not_hold() {
    // A validly signed change whose bytes make Automerge panic: a device
    // store refuses it (it would have to apply it), a relay stores and
    // forwards it, because it never loads the document.
    let author = Author::new(12);
    let case = case_id(6);
    let (first, bad) = panicking_change(&author, case);
    let g = author.genesis(case, "general");
    let device = store(8, StoreKind::Device);
    let err = device
        .ingest(
            batch(vec![(g.clone(), vec![first.clone(), bad.clone()])]),
            now(),
        )
        .unwrap_err();
    assert!(matches!(err, BundleError::Apply { .. }), "{err}");
    assert_eq!(device.log_head().unwrap(), 0);

    let relay = store(9, StoreKind::Relay);
    let r = relay
        .ingest(batch(vec![(g, vec![first, bad.clone()])]), now())
        .unwrap();
    assert_eq!(r.stored, 2);
    let heads = relay.case_heads().unwrap();
    assert_eq!(heads[0].heads, vec![bad.payload().hash()]);
    // Listing reads rows only; a relay leaves the materialized fields empty.
    let listed = relay.list_cases().unwrap();
    assert_eq!((listed[0].title.as_str(), listed[0].changes), ("", 2));
    let out = relay.read_log(0, 10, usize::MAX, |_| true).unwrap();
    assert_eq!(out.entries.len(), 2);
}

/// The first change of a case, and a second whose bytes parse and carry the
/// author's actor but make Automerge panic on apply.
fn panicking_change(author: &Author, case: CaseId) -> (VerifiedChange, VerifiedChange) {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    let mut doc = CaseDoc::new(author.id.actor(0));
    doc.init("Hostile").unwrap();
    let first = doc.commit(now(), "create").unwrap().unwrap();
    doc.splice_summary(0, 0, "hello world").unwrap();
    doc.add_note(author.id, now(), "note").unwrap();
    let second = doc.commit(now(), "edit").unwrap().unwrap();
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut state = 0x5eed_1234u64;
    let mut rng = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let bytes = second.raw_bytes().to_vec();
    let mut found = None;
    for _ in 0..200_000 {
        let mut b = bytes.clone();
        for _ in 0..1 + rng() % 3 {
            let i = 9 + (rng() as usize) % (b.len() - 9);
            b[i] = rng() as u8;
        }
        let Some(parsed) = catch_unwind(AssertUnwindSafe(|| {
            automerge::Change::from_bytes(b.clone())
        }))
        .ok()
        .and_then(Result::ok) else {
            continue;
        };
        b[4..8].copy_from_slice(&parsed.hash().0[..4]);
        let Ok(fixed) = automerge::Change::from_bytes(b) else {
            continue;
        };
        if fixed.actor_id().to_bytes() != author.id.actor(0).to_bytes().as_slice()
            || fixed.deps() != second.deps()
        {
            continue;
        }
        let mut probe = CaseDoc::new(author.id.actor(0));
        probe.apply(vec![first.clone()]).unwrap();
        if matches!(
            probe.apply(vec![fixed.clone()]),
            Err(fieldsync_case::CaseError::Panicked(_))
        ) {
            found = Some(fixed);
            break;
        }
    }
    std::panic::set_hook(hook);
    let bad = found.expect("no panicking mutant found");
    (author.sign(case, 1, first), author.sign(case, 2, bad))
}

/// Builds a random DAG of changes to one case by three devices that edit
/// concurrently and merge each other's work.
fn dag(ops: &[(u8, Option<u8>)]) -> (VerifiedGenesis, Vec<VerifiedChange>, Vec<ChangeHash>) {
    let case = case_id(0x42);
    let authors: Vec<Author> = (0..3).map(|i| Author::new(20 + i)).collect();
    let mut docs: Vec<CaseDoc> = authors
        .iter()
        .map(|a| CaseDoc::new(a.id.actor(0)))
        .collect();
    docs[0].init("dag").unwrap();
    let first = docs[0].commit(now(), "create").unwrap().unwrap();
    let mut all = vec![authors[0].sign(case, 0, first.clone())];
    let mut seen: Vec<BTreeSet<usize>> = vec![BTreeSet::from([0]); 3];
    for d in &mut docs[1..] {
        d.apply(vec![first.clone()]).unwrap();
    }
    for (i, (f, merge)) in ops.iter().enumerate() {
        let f = usize::from(*f % 3);
        match merge {
            Some(other) => {
                let o = usize::from(*other % 3);
                let missing: Vec<usize> = seen[o].difference(&seen[f]).copied().collect();
                let raw = missing
                    .iter()
                    .map(|j| all[*j].payload().change().clone())
                    .collect();
                docs[f].apply(raw).unwrap();
                let more = seen[o].clone();
                seen[f].extend(more);
            }
            None => {
                let a = &authors[f];
                docs[f].add_note(a.id, now(), &format!("n{i}")).unwrap();
                let c = docs[f].commit(now(), "note").unwrap().unwrap();
                all.push(a.sign(case, i as u64 + 1, c));
                seen[f].insert(all.len() - 1);
            }
        }
    }
    let mut truth = CaseDoc::new(authors[0].id.actor(0));
    truth
        .apply(all.iter().map(|c| c.payload().change().clone()).collect())
        .unwrap();
    let heads = truth.heads().unwrap();
    (authors[0].genesis(case, "general"), all, heads)
}

/// `changes` reordered by `keys` and cut into batches where `cuts` says so.
fn batches(changes: &[VerifiedChange], keys: &[u32], cuts: &[bool]) -> Vec<Vec<VerifiedChange>> {
    let mut idx: Vec<usize> = (0..changes.len()).collect();
    idx.sort_by_key(|i| (keys[*i % keys.len()], *i));
    let mut out = vec![Vec::new()];
    for (n, i) in idx.into_iter().enumerate() {
        if cuts[n % cuts.len()] && !out.last().unwrap().is_empty() {
            out.push(Vec::new());
        }
        out.last_mut().unwrap().push(changes[i].clone());
    }
    out
}

fn op() -> impl Strategy<Value = (u8, Option<u8>)> {
    (0u8..3, prop::option::weighted(0.3, 0u8..3))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    /// A device store (which applies changes to documents) and a relay store
    /// (which derives heads from dependency lists) agree on every case's
    /// heads after the same batches, and with Automerge after all batches in
    /// any order.
    #[test]
    fn relay_heads_match_device_heads(
        ops in prop::collection::vec(op(), 1..30),
        keys1 in prop::collection::vec(any::<u32>(), 40),
        cuts1 in prop::collection::vec(prop::bool::weighted(0.3), 40),
        keys2 in prop::collection::vec(any::<u32>(), 40),
        cuts2 in prop::collection::vec(prop::bool::weighted(0.3), 40),
    ) {
        let (g, changes, truth) = dag(&ops);
        let device = store(30, StoreKind::Device);
        let relay = store(31, StoreKind::Relay);
        let other_relay = store(32, StoreKind::Relay);
        for b in batches(&changes, &keys1, &cuts1) {
            let rd = device.ingest(batch(vec![(g.clone(), b.clone())]), now()).unwrap();
            let rr = relay.ingest(batch(vec![(g.clone(), b)]), now()).unwrap();
            prop_assert_eq!(rd, rr);
            prop_assert_eq!(device.case_heads().unwrap(), relay.case_heads().unwrap());
            prop_assert_eq!(device.pending_len().unwrap(), relay.pending_len().unwrap());
        }
        for b in batches(&changes, &keys2, &cuts2) {
            other_relay.ingest(batch(vec![(g.clone(), b)]), now()).unwrap();
        }
        let want = vec![CaseHeads {
            case: case_id(0x42),
            compartment: "general".into(),
            genesis: encode_signed(g.as_signed()),
            heads: truth,
        }];
        for s in [&device, &relay, &other_relay] {
            prop_assert_eq!(&s.case_heads().unwrap(), &want);
            prop_assert_eq!(s.pending_len().unwrap(), 0);
            prop_assert_eq!(s.log_head().unwrap(), changes.len() as u64);
        }
        let notes = ops.iter().filter(|(_, m)| m.is_none()).count();
        prop_assert_eq!(device.case_record(&case_id(0x42)).unwrap().notes.len(), notes);
    }
}

// ---- acknowledgements and receipts ----

#[test]
fn acks_and_receipts_shrink_the_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("acks.redb");
    let relay = Author::new(60).id;
    let hq = Author::new(61).id;
    {
        let s = Store::create(&path, new_device(10, StoreKind::Device)).unwrap();
        let case = s.create_case(&new_case(case_id(1), "a"), now()).unwrap();
        for i in 0..4 {
            note(&s, &case, &format!("n{i}"));
        }
        assert_eq!(s.outbox_len().unwrap(), 5);
        assert_eq!(s.peer_ack(&relay).unwrap(), 0);
        s.set_peer_ack(&relay, 3).unwrap();
        assert_eq!(
            (s.peer_ack(&relay).unwrap(), s.outbox_len().unwrap()),
            (3, 2)
        );
        // Never backwards.
        s.set_peer_ack(&relay, 1).unwrap();
        assert_eq!(
            (s.peer_ack(&relay).unwrap(), s.outbox_len().unwrap()),
            (3, 2)
        );
        // Another peer's lower ack leaves the outbox at the highest.
        s.set_peer_ack(&hq, 2).unwrap();
        assert_eq!((s.peer_ack(&hq).unwrap(), s.outbox_len().unwrap()), (2, 2));
        // Never past the end of the log.
        s.set_peer_ack(&hq, 1_000).unwrap();
        assert_eq!((s.peer_ack(&hq).unwrap(), s.outbox_len().unwrap()), (5, 0));
        note(&s, &case, "later");
        assert_eq!(s.outbox_len().unwrap(), 1);

        assert_eq!(s.latest_receipt(&relay).unwrap(), None);
        let r1 = StoredReceipt {
            relay,
            through: 4,
            at: Timestamp::from_millis(T0 + 1),
            bytes: vec![1, 2, 3],
        };
        let r2 = StoredReceipt {
            through: 6,
            at: Timestamp::from_millis(T0 + 2),
            bytes: vec![4, 5],
            ..r1.clone()
        };
        s.store_receipt(&r1).unwrap();
        assert_eq!(s.peer_ack(&relay).unwrap(), 4);
        s.store_receipt(&r2).unwrap();
        assert_eq!(s.peer_ack(&relay).unwrap(), 6);
        assert_eq!(s.outbox_len().unwrap(), 0);
        let r3 = StoredReceipt {
            relay: hq,
            through: 6,
            ..r1.clone()
        };
        s.store_receipt(&r3).unwrap();
        assert_eq!(s.latest_receipt(&relay).unwrap(), Some(r2.clone()));
        assert_eq!(s.latest_receipt(&hq).unwrap(), Some(r3.clone()));
        // One receipt per relay is kept: the one covering the most (it
        // covers everything the earlier ones did).
        let all = s.receipts().unwrap();
        assert_eq!(all.len(), 2);
        assert!(all.contains(&r2) && all.contains(&r3));
        // A receipt covering less than the one held is not kept (its
        // acknowledgement changes nothing either: acks never move back).
        s.store_receipt(&r1).unwrap();
        assert_eq!(s.latest_receipt(&relay).unwrap(), Some(r2.clone()));
        assert_eq!(s.peer_ack(&relay).unwrap(), 6);
        // A receipt another relay carried down is kept only when it covers
        // more, and moves no acknowledgement.
        let carried = StoredReceipt {
            relay: hq,
            through: 3,
            ..r1.clone()
        };
        assert!(!s.store_relayed_receipt(&carried).unwrap());
        let further = StoredReceipt {
            through: 7,
            ..carried
        };
        assert!(s.store_relayed_receipt(&further).unwrap());
        assert_eq!(s.latest_receipt(&hq).unwrap(), Some(further));
        assert_eq!(s.peer_ack(&hq).unwrap(), 6);
    }
    // Everything survives a restart.
    let s = Store::open(&path).unwrap();
    assert_eq!(s.kind(), StoreKind::Device);
    assert_eq!(s.peer_ack(&relay).unwrap(), 6);
    assert_eq!(s.outbox_len().unwrap(), 0);
    assert_eq!(s.receipts().unwrap().len(), 2);
    assert_eq!(s.latest_receipt(&relay).unwrap().unwrap().through, 6);
}

// ---- quarantine ----

fn quarantined(author: &Author, case: CaseId) -> QuarantineEntry {
    let (g, c) = author.linear(case, 1);
    QuarantineEntry {
        at: now(),
        reason: "device revoked".into(),
        case,
        signer: author.id,
        genesis: encode_signed(g.as_signed()),
        change: fieldsync_case::encode_change(c[0].as_signed()),
    }
}

#[test]
fn quarantine_entries_are_held_until_released() {
    let s = store(11, StoreKind::Relay);
    let mallory = Author::new(13);
    let (q1, q2) = (
        quarantined(&mallory, case_id(1)),
        quarantined(&mallory, case_id(2)),
    );
    let r = s
        .ingest(
            Ingest {
                quarantine: vec![q1.clone(), q2.clone()],
                ..Ingest::default()
            },
            now(),
        )
        .unwrap();
    assert_eq!((r.quarantined, r.stored), (2, 0));
    assert_eq!(s.log_head().unwrap(), 0, "a quarantined change was stored");
    // The same change sent again (its acknowledgement was lost) is held once.
    let again = s
        .ingest(
            Ingest {
                quarantine: vec![q1.clone()],
                ..Ingest::default()
            },
            now(),
        )
        .unwrap();
    assert_eq!(again.quarantined, 0);
    assert_eq!(
        s.quarantine().unwrap(),
        vec![(1, q1.clone()), (2, q2.clone())]
    );
    assert_eq!(s.quarantine_entry(2).unwrap(), q2);
    assert!(
        matches!(
            s.quarantine_entry(9).unwrap_err(),
            StoreError::UnknownQuarantine { id: 9 }
        ),
        "an unknown id is named"
    );
    // Released: the change is stored with its release, in the same commit
    // that takes it out of the quarantine.
    let g = fieldsync_case::verify_genesis(
        decode_signed::<fieldsync_case::Genesis>(&q2.genesis).unwrap(),
    )
    .unwrap();
    let c = decode_change(&q2.change).unwrap().verify().unwrap();
    let hash = c.payload().hash();
    assert_eq!(s.release_for(&case_id(2), &hash).unwrap(), None);
    assert!(!s.has_releases().unwrap());
    let r = s
        .ingest(
            Ingest {
                releases: vec![(case_id(2), hash, b"signed release".to_vec())],
                ..batch(vec![(g, vec![c])])
            },
            now(),
        )
        .unwrap();
    assert_eq!((r.stored, r.released_from_quarantine), (1, 1));
    assert_eq!(s.quarantine().unwrap(), vec![(1, q1)]);
    assert_eq!(
        s.release_for(&case_id(2), &hash).unwrap().as_deref(),
        Some(&b"signed release"[..])
    );
    assert!(s.has_releases().unwrap());
    assert!(matches!(
        s.quarantine_entry(2).unwrap_err(),
        StoreError::UnknownQuarantine { id: 2 }
    ));
    // Ids are not reused.
    s.ingest(
        Ingest {
            quarantine: vec![q2.clone()],
            ..Ingest::default()
        },
        now(),
    )
    .unwrap();
    assert_eq!(s.quarantine().unwrap()[1].0, 3);
}

// ---- repair ----

#[test]
fn case_heads_and_envelopes_rebuild_a_peer() {
    let device = store(12, StoreKind::Device);
    let a = device
        .create_case(&new_case(case_id(0xaa), "a"), now())
        .unwrap();
    let b = device
        .create_case(&new_case(case_id(0x0b), "b"), now())
        .unwrap();
    note(&device, &a, "x");
    note(&device, &b, "y");
    let heads = device.case_heads().unwrap();
    assert_eq!(heads.iter().map(|h| h.case).collect::<Vec<_>>(), vec![b, a]);
    for h in &heads {
        let doc_heads = device.with_case(&h.case, |_, d| d.heads()).unwrap();
        assert_eq!(h.heads, doc_heads);
        assert!(device.has_change(&h.case, &h.heads[0]).unwrap());
        assert!(!device.has_change(&case_id(0xee), &h.heads[0]).unwrap());
    }
    assert!(device.case_envelopes(&case_id(0xee)).unwrap().is_empty());

    // A relay rebuilt from heads, geneses and envelopes holds the same heads.
    let relay = store(13, StoreKind::Relay);
    let mut cases = Vec::new();
    for h in &heads {
        let g = fieldsync_case::verify_genesis(
            decode_signed::<fieldsync_case::Genesis>(&h.genesis).unwrap(),
        )
        .unwrap();
        let changes = device
            .case_envelopes(&h.case)
            .unwrap()
            .iter()
            .map(|e| decode_change(e).unwrap().verify().unwrap())
            .collect();
        cases.push((g, changes));
    }
    relay.ingest(batch(cases), now()).unwrap();
    assert_eq!(relay.case_heads().unwrap(), heads);
}

// ---- kinds, revocations, peers ----

#[test]
fn kind_revocations_and_peers_persist() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.redb");
    let bob = Author::new(70).id;
    let carol = Author::new(71).id;
    let rec = PeerRecord {
        certificate: vec![7; 40],
        last_contact: now(),
        carried_by: None,
    };
    {
        let s = Store::create(&path, new_device(14, StoreKind::Relay)).unwrap();
        assert_eq!(s.kind(), StoreKind::Relay);
        assert_eq!(s.revocations().unwrap(), None);
        s.set_revocations(b"list v1").unwrap();
        s.set_revocations(b"list v2").unwrap();
        s.record_peer(&bob, &rec).unwrap();
        s.record_peer(
            &carol,
            &PeerRecord {
                carried_by: Some(bob),
                ..rec.clone()
            },
        )
        .unwrap();
        s.record_peer(
            &bob,
            &PeerRecord {
                last_contact: Timestamp::from_millis(T0 + 5),
                ..rec.clone()
            },
        )
        .unwrap();
    }
    let s = Store::open(&path).unwrap();
    assert_eq!(s.kind(), StoreKind::Relay);
    assert_eq!(s.revocations().unwrap().as_deref(), Some(&b"list v2"[..]));
    let mut want = vec![
        (
            bob,
            PeerRecord {
                last_contact: Timestamp::from_millis(T0 + 5),
                ..rec.clone()
            },
        ),
        (
            carol,
            PeerRecord {
                carried_by: Some(bob),
                ..rec
            },
        ),
    ];
    want.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    assert_eq!(s.peers().unwrap(), want);
}

// ---- reading by compartment ----

/// Every entry a reader of `compartments` gets, batch after batch, and the
/// number of batches.
fn read_all(
    s: &Store,
    compartments: &[&str],
    indexed: bool,
    max_changes: usize,
    max_bytes: usize,
) -> (Vec<u64>, Vec<CaseId>, usize) {
    let mut after = 0;
    let (mut seqs, mut geneses, mut batches) = (Vec::new(), Vec::new(), 0);
    loop {
        let b = if indexed {
            s.read_log_for_reader(after, 0, None, compartments, max_changes, max_bytes)
                .unwrap()
        } else {
            s.read_log_for_peer(after, 0, None, max_changes, max_bytes, |g| {
                compartments.contains(&g.compartment.as_str())
            })
            .unwrap()
        };
        batches += 1;
        assert!(b.entries.len() <= max_changes);
        seqs.extend(b.entries.iter().map(|e| e.seq));
        geneses.extend(b.geneses.iter().map(|(c, _)| *c));
        assert!(b.next >= after, "the cursor never goes back");
        if b.at_end {
            assert_eq!(b.next, s.log_head().unwrap());
            break;
        }
        assert!(b.next > after || !b.entries.is_empty(), "no progress");
        after = b.next;
        assert!(batches < 10_000);
    }
    (seqs, geneses, batches)
}

#[test]
fn a_reader_of_some_compartments_gets_exactly_their_entries_through_the_index() {
    let s = store(21, StoreKind::Device);
    let compartments = ["general", "narcotics", "visa"];
    let mut ids = Vec::new();
    for n in 0..9u8 {
        let c = compartments[usize::from(n) % 3];
        ids.push(s.create_case(&new_case(case_id(n + 1), c), now()).unwrap());
    }
    for i in 0..120usize {
        // Uneven: "general" gets most of the edits.
        let case = ids[if i % 5 == 0 {
            i % ids.len()
        } else {
            (i % 3) * 3
        }];
        note(&s, &case, &format!("note {i}"));
    }
    let head = s.log_head().unwrap();
    for readers in [
        &["general"][..],
        &["narcotics", "visa"],
        &["visa", "general", "narcotics"],
        &["unknown"],
        &[],
    ] {
        for (max_changes, max_bytes) in [(1, 1 << 20), (7, 1 << 20), (512, 1 << 20), (512, 900)] {
            let (a, ga, _) = read_all(&s, readers, true, max_changes, max_bytes);
            let (b, gb, _) = read_all(&s, readers, false, max_changes, max_bytes);
            assert_eq!(a, b, "{readers:?} {max_changes} {max_bytes}");
            assert_eq!(
                ga, gb,
                "each genesis once, with the first entry of its case"
            );
            assert!(a.windows(2).all(|w| w[0] < w[1]), "log order");
        }
    }
    let (all, _, batches) = read_all(&s, &compartments, true, 512, 1 << 20);
    assert_eq!(all, (1..=head).collect::<Vec<_>>());
    assert_eq!(batches, 1);
    // A reader with nothing to read is told so at once, whatever the log holds.
    let (none, _, batches) = read_all(&s, &["unknown"], true, 512, 1 << 20);
    assert!(none.is_empty());
    assert_eq!(batches, 1);
    // The index keeps up with ingested changes too.
    let relay = store(22, StoreKind::Relay);
    let author = Author::new(23);
    let (g, changes) = author.linear(case_id(0x50), 5);
    relay.ingest(batch(vec![(g, changes)]), now()).unwrap();
    let (seqs, _, _) = read_all(&relay, &["general"], true, 512, 1 << 20);
    let (plain, _, _) = read_all(&relay, &["general"], false, 512, 1 << 20);
    assert_eq!(seqs, plain);
}
