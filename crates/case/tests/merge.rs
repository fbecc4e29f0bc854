//! Merges commute: three devices edit forks of one case concurrently; every
//! order of applying all their changes gives the same record and heads.
#![allow(clippy::unwrap_used)]

mod common;

use automerge::Change;
use common::{Device, base, genesis, replica, t};
use fieldsync_case::{CaseDoc, Field, ItemId, Priority, Status, SubjectInput};
use fieldsync_identity::CaseId;
use proptest::prelude::*;

/// One random local edit. Item choices index into a small id space so that
/// devices touch the same items (and sometimes add the same id concurrently).
#[derive(Clone, Debug)]
enum Edit {
    Title(u8),
    Status(usize),
    Priority(usize),
    Splice { at: u16, del: u8, text: String },
    Summary(String),
    AddSubject(u64),
    SubjectField(u64, u8, String),
    RemoveSubject(u64),
    AddTask(u64),
    Done(u64, bool),
    Assign(u64, Option<u8>),
    Note(String),
    Link(u8, u8),
    Commit,
}

fn edit() -> impl Strategy<Value = Edit> {
    let word = "[a-zé ]{0,6}";
    prop_oneof![
        (0u8..4).prop_map(Edit::Title),
        (0..Status::ALL.len()).prop_map(Edit::Status),
        (0..Priority::ALL.len()).prop_map(Edit::Priority),
        (any::<u16>(), 0u8..4, word).prop_map(|(at, del, text)| Edit::Splice { at, del, text }),
        word.prop_map(Edit::Summary),
        (0u64..6).prop_map(Edit::AddSubject),
        (0u64..6, 0u8..3, "[a-z]{1,5}").prop_map(|(i, f, v)| Edit::SubjectField(i, f, v)),
        (0u64..6).prop_map(Edit::RemoveSubject),
        (0u64..6).prop_map(Edit::AddTask),
        (0u64..6, any::<bool>()).prop_map(|(i, d)| Edit::Done(i, d)),
        (0u64..6, proptest::option::of(0u8..3)).prop_map(|(i, a)| Edit::Assign(i, a)),
        "[a-z ]{1,8}".prop_map(Edit::Note),
        (0u8..3, 0u8..3).prop_map(|(c, r)| Edit::Link(c, r)),
        Just(Edit::Commit),
    ]
}

/// Applies `e` to `doc`. Refusals (an unknown or duplicate item, a splice
/// past the end) are part of the game: the edit is skipped.
fn perform(doc: &mut CaseDoc, who: &Device, e: &Edit) {
    let titles = [
        "Smuggled icons",
        "Stolen icons",
        "Icons, Bari",
        "Operation Tesserae",
    ];
    let _ = match e {
        Edit::Title(i) => doc.set_field(Field::Title, titles[usize::from(*i)]),
        Edit::Status(i) => doc.set_status(Status::ALL[*i]),
        Edit::Priority(i) => doc.set_priority(Priority::ALL[*i]),
        Edit::Splice { at, del, text } => {
            let len = doc.summary_text().unwrap().chars().count();
            let at = usize::from(*at) % (len + 1);
            let del = usize::from(*del).min(len - at);
            doc.splice_summary(at, del, text)
        }
        Edit::Summary(text) => doc.set_summary(text),
        Edit::AddSubject(i) => doc.add_subject(
            ItemId::from_u64(*i),
            &SubjectInput {
                name: format!("subject {i}"),
                ..Default::default()
            },
        ),
        Edit::SubjectField(i, f, v) => doc.set_subject_field(
            ItemId::from_u64(*i),
            ["name", "role", "nationality"][usize::from(*f)],
            v,
        ),
        Edit::RemoveSubject(i) => doc.remove_subject(ItemId::from_u64(*i)),
        Edit::AddTask(i) => doc.add_task(ItemId::from_u64(*i), &format!("task {i}"), None),
        Edit::Done(i, d) => doc.set_task_done(ItemId::from_u64(*i), *d),
        Edit::Assign(i, a) => {
            let who = a.map(|a| ["ana", "ben", "eva"][usize::from(a)]);
            doc.assign_task(ItemId::from_u64(*i), who)
        }
        Edit::Note(text) => doc.add_note(who.id, t(5), text),
        Edit::Link(c, r) => doc.add_link(
            CaseId::from_bytes([*c; 16]),
            ["related", "parent", "same ring"][usize::from(*r)],
        ),
        Edit::Commit => Ok(()),
    };
}

/// Runs a device's edits on a fork of the base, committing at `Commit`
/// edits and at the end; returns its changes.
fn session(base: &[Change], who: &Device, edits: &[Edit]) -> Vec<Change> {
    let mut doc = replica(who, base);
    let mut out = Vec::new();
    for (i, e) in edits.iter().enumerate() {
        perform(&mut doc, who, e);
        if matches!(e, Edit::Commit) || i + 1 == edits.len() {
            out.extend(doc.commit(t(6 + i as i64), "session").unwrap());
        }
    }
    out
}

fn shuffled<T: Clone>(items: &[T], mut seed: u64) -> Vec<T> {
    let mut v = items.to_vec();
    for i in (1..v.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        v.swap(i, (seed % (i as u64 + 1)) as usize);
    }
    v
}

/// The base every device forks: a case with a subject, a task and a summary.
fn base_changes(a: &Device) -> Vec<Change> {
    let (mut doc, first) = base(a, "Icons");
    doc.add_subject(
        ItemId::from_u64(0),
        &SubjectInput {
            name: "Dealer".into(),
            ..Default::default()
        },
    )
    .unwrap();
    doc.add_task(ItemId::from_u64(0), "Find the van", None)
        .unwrap();
    doc.set_summary("Two crates.").unwrap();
    vec![first, doc.commit(t(2), "base").unwrap().unwrap()]
}

fn merged(
    me: &Device,
    changes: &[Change],
    one_by_one: bool,
) -> (String, Vec<fieldsync_case::ChangeHash>) {
    let mut doc = CaseDoc::new(me.actor());
    if one_by_one {
        for c in changes {
            doc.apply(vec![c.clone()]).unwrap();
        }
    } else {
        doc.apply(changes.to_vec()).unwrap();
    }
    assert!(doc.missing_deps().unwrap().is_empty());
    let record = doc.record(&genesis(&Device::new(1))).unwrap();
    (
        serde_json::to_string(&record).unwrap(),
        doc.heads().unwrap(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn merges_commute(
        ea in proptest::collection::vec(edit(), 1..10),
        eb in proptest::collection::vec(edit(), 1..10),
        ec in proptest::collection::vec(edit(), 1..10),
        seeds in proptest::collection::vec(1u64.., 3),
    ) {
        let (a, b, c) = (Device::new(1), Device::new(2), Device::new(3));
        let base = base_changes(&a);
        let mut all = base.clone();
        for (who, edits) in [(&a, &ea), (&b, &eb), (&c, &ec)] {
            all.extend(session(&base, who, edits));
        }
        let hq = Device::new(9);
        let reference = merged(&hq, &all, false);
        // Every device order, in one call each.
        let per_device: Vec<Vec<Change>> = [&a, &b, &c]
            .iter()
            .map(|d| all.iter().filter(|c| fieldsync_case::change_device(c) == Some(d.id)).cloned().collect())
            .collect();
        for order in [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]] {
            let changes: Vec<Change> = order.iter().flat_map(|&i| per_device[i].clone()).collect();
            prop_assert_eq!(&merged(&hq, &changes, false), &reference);
        }
        // Random interleavings, even with changes arriving before their
        // dependencies, in one call and one change at a time.
        for &seed in &seeds {
            let changes = shuffled(&all, seed);
            prop_assert_eq!(&merged(&hq, &changes, false), &reference);
            prop_assert_eq!(&merged(&c, &changes, true), &reference);
        }
    }
}

#[test]
fn concurrent_summary_inserts_at_one_place_both_survive() {
    let (a, b) = (Device::new(1), Device::new(2));
    let base = base_changes(&a);
    let mut da = replica(&a, &base);
    let mut db = replica(&b, &base);
    da.splice_summary(4, 0, "large ").unwrap();
    db.splice_summary(4, 0, "wooden ").unwrap();
    let ca = da.commit(t(3), "a").unwrap().unwrap();
    let cb = db.commit(t(3), "b").unwrap().unwrap();
    da.apply(vec![cb]).unwrap();
    db.apply(vec![ca]).unwrap();
    let ra = da.record(&genesis(&a)).unwrap();
    let rb = db.record(&genesis(&a)).unwrap();
    assert_eq!(ra, rb);
    assert!(
        ra.summary.contains("large ") && ra.summary.contains("wooden "),
        "{}",
        ra.summary
    );
    assert!(
        ra.summary.starts_with("Two ") && ra.summary.ends_with("crates."),
        "{}",
        ra.summary
    );
    assert!(
        ra.conflicts.is_empty(),
        "text merges by character; no conflict"
    );
}

#[test]
fn concurrent_whole_summary_replacements_merge_by_character() {
    let (a, b) = (Device::new(1), Device::new(2));
    let base = base_changes(&a);
    let mut da = replica(&a, &base);
    let mut db = replica(&b, &base);
    da.set_field(Field::Summary, "Two crates. Driver fled.")
        .unwrap();
    db.set_field(Field::Summary, "Three crates.").unwrap();
    let ca = da.commit(t(3), "a").unwrap().unwrap();
    let cb = db.commit(t(3), "b").unwrap().unwrap();
    da.apply(vec![cb]).unwrap();
    let summary = da.record(&genesis(&a)).unwrap().summary;
    assert!(
        summary.contains("Three") && summary.contains("Driver fled."),
        "{summary}"
    );
    db.apply(vec![ca]).unwrap();
    assert_eq!(db.record(&genesis(&a)).unwrap().summary, summary);
}

#[test]
fn concurrent_titles_are_a_conflict_with_both_devices() {
    let (a, b) = (Device::new(1), Device::new(2));
    let base = base_changes(&a);
    let mut da = replica(&a, &base);
    let mut db = replica(&b, &base);
    da.set_field(Field::Title, "Title by A").unwrap();
    db.set_field(Field::Title, "Title by B").unwrap();
    db.assign_task(ItemId::from_u64(0), Some("ben")).unwrap();
    da.assign_task(ItemId::from_u64(0), Some("ana")).unwrap();
    let ca = da.commit(t(3), "a").unwrap().unwrap();
    let cb = db.commit(t(3), "b").unwrap().unwrap();
    da.apply(vec![cb]).unwrap();
    db.apply(vec![ca]).unwrap();
    let conflicts = da.conflicts().unwrap();
    assert_eq!(conflicts, db.conflicts().unwrap());
    let paths: Vec<&str> = conflicts.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(paths, ["tasks/0000000000000000/assignee", "title"]);
    let title = &conflicts[1];
    let mut devices: Vec<_> = title.values.iter().map(|v| v.device.unwrap()).collect();
    devices.sort();
    let mut expected = vec![a.id, b.id];
    expected.sort();
    assert_eq!(devices, expected);
    let values: Vec<&str> = title
        .values
        .iter()
        .map(|v| v.value.as_str().unwrap())
        .collect();
    assert!(values.contains(&"Title by A") && values.contains(&"Title by B"));
    // The record shows the deterministic winner (the last value) and the conflict.
    let r = da.record(&genesis(&a)).unwrap();
    assert_eq!(
        r.title,
        title.values.last().unwrap().value.as_str().unwrap()
    );
    assert_eq!(r.conflicts, conflicts);
    // A supervisor resolves it with a new write.
    da.set_title("Resolved").unwrap();
    da.commit(t(4), "resolve").unwrap();
    assert_eq!(da.conflicts().unwrap().len(), 1);
}
