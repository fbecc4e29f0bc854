//! Every mutator, and the errors each one names.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Device, base, genesis, t};
use fieldsync_case::{
    AttachmentRef, CaseDoc, CaseError, CustodyInput, Field, ItemId, Priority, Status, SubjectInput,
    TITLE_MAX_CHARS,
};
use fieldsync_identity::CaseId;

fn ready() -> (Device, CaseDoc) {
    let a = Device::new(1);
    let (doc, _) = base(&a, "Original title");
    (a, doc)
}

fn commit(doc: &mut CaseDoc) {
    doc.commit(t(10), "edit").unwrap().unwrap();
}

const HASH: &str = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262";

#[test]
fn init_sets_defaults_once() {
    let (a, mut doc) = ready();
    let r = doc.record(&genesis(&a)).unwrap();
    assert_eq!(r.schema, 1);
    assert_eq!(r.title, "Original title");
    assert_eq!(r.status, Status::Open);
    assert_eq!(r.priority, Priority::Normal);
    assert_eq!(r.summary, "");
    assert!(r.subjects.is_empty() && r.evidence.is_empty() && r.tasks.is_empty());
    assert!(r.notes.is_empty() && r.links.is_empty() && r.attachments.is_empty());
    assert!(r.conflicts.is_empty() && r.problems.is_empty(), "{r:?}");
    assert_eq!(r.heads.len(), 1);
    assert!(matches!(
        doc.init("again"),
        Err(CaseError::AlreadyInitialized)
    ));
    let mut empty = CaseDoc::new(a.actor());
    assert!(matches!(
        empty.init(""),
        Err(CaseError::InvalidValue { field: "title", .. })
    ));
    assert!(matches!(
        empty.set_title("x"),
        Err(CaseError::NotACase { .. })
    ));
    assert!(matches!(
        empty.add_note(a.id, t(0), "x"),
        Err(CaseError::NotACase { .. })
    ));
}

#[test]
fn top_level_fields() {
    let (a, mut doc) = ready();
    doc.set_field(Field::Title, "New title").unwrap();
    doc.set_field(Field::Status, "active").unwrap();
    doc.set_field(Field::Priority, "urgent").unwrap();
    doc.set_field(Field::Summary, "Two crates of icons.")
        .unwrap();
    commit(&mut doc);
    let r = doc.record(&genesis(&a)).unwrap();
    assert_eq!(
        (r.title.as_str(), r.status, r.priority),
        ("New title", Status::Active, Priority::Urgent)
    );
    assert_eq!(r.summary, "Two crates of icons.");
    doc.set_status(Status::Closed).unwrap();
    doc.set_priority(Priority::Low).unwrap();
    doc.splice_summary(4, 6, "boxes").unwrap();
    doc.splice_summary(0, 0, "¡").unwrap();
    commit(&mut doc);
    let s = doc.summary().unwrap();
    assert_eq!((s.status, s.priority), (Status::Closed, Priority::Low));
    assert_eq!(
        doc.record(&genesis(&a)).unwrap().summary,
        "¡Two boxes of icons."
    );
    doc.set_summary("Two boxes of icons, one seized.").unwrap();
    commit(&mut doc);
    assert_eq!(
        doc.record(&genesis(&a)).unwrap().summary,
        "Two boxes of icons, one seized."
    );
}

#[test]
fn top_level_validation() {
    let (_, mut doc) = ready();
    let err = doc.set_field(Field::Status, "finished").unwrap_err();
    assert!(
        err.to_string()
            .contains("open, active, suspended, referred, closed"),
        "{err}"
    );
    let err = doc.set_field(Field::Priority, "asap").unwrap_err();
    assert!(matches!(
        err,
        CaseError::UnknownName {
            what: "priority",
            ..
        }
    ));
    assert!(matches!(
        doc.set_title("  "),
        Err(CaseError::InvalidValue { field: "title", .. })
    ));
    assert!(doc.set_title("two\nlines").is_err());
    assert!(doc.set_title(&"t".repeat(TITLE_MAX_CHARS)).is_ok());
    assert!(doc.set_title(&"t".repeat(TITLE_MAX_CHARS + 1)).is_err());
    assert!(matches!(
        doc.splice_summary(1, 0, "x"),
        Err(CaseError::InvalidValue {
            field: "summary splice",
            ..
        })
    ));
    assert!(doc.splice_summary(0, 1, "").is_err());
    assert!(doc.splice_summary(usize::MAX, usize::MAX, "").is_err());
    assert!(doc.set_summary("bell \u{7}").is_err());
    assert!(doc.set_summary("").is_ok());
}

#[test]
fn subjects() {
    let (a, mut doc) = ready();
    let id = ItemId::from_u64(0x00ab_1200_0000_0001);
    let other = ItemId::from_u64(7);
    doc.add_subject(
        id,
        &SubjectInput {
            name: "Ivan Petrov".into(),
            role: Some("suspect".into()),
            nationality: None,
            identifiers: vec![("passport".into(), "X123".into())],
        },
    )
    .unwrap();
    doc.add_subject(
        other,
        &SubjectInput {
            name: "Ana".into(),
            ..Default::default()
        },
    )
    .unwrap();
    commit(&mut doc);
    doc.set_subject_field(id, "nationality", "RU").unwrap();
    doc.set_subject_field(id, "role", "").unwrap();
    doc.set_subject_field(id, "name", "Ivan P. Petrov").unwrap();
    doc.add_subject_identifier(id, "phone", "+7 900").unwrap();
    commit(&mut doc);
    let r = doc.record(&genesis(&a)).unwrap();
    assert_eq!(r.subjects.len(), 2);
    assert_eq!(r.subjects[0].id, other, "sorted by id");
    let s = &r.subjects[1];
    assert_eq!(s.name, "Ivan P. Petrov");
    assert_eq!(s.role, None);
    assert_eq!(s.nationality.as_deref(), Some("RU"));
    assert_eq!(s.identifiers.len(), 2);
    assert_eq!(
        (
            s.identifiers[1].kind.as_str(),
            s.identifiers[1].value.as_str()
        ),
        ("phone", "+7 900")
    );
    doc.remove_subject(other).unwrap();
    commit(&mut doc);
    assert_eq!(doc.record(&genesis(&a)).unwrap().subjects.len(), 1);

    let missing = ItemId::from_u64(99);
    assert!(matches!(
        doc.set_subject_field(missing, "name", "x"),
        Err(CaseError::UnknownItem {
            kind: "subject",
            ..
        })
    ));
    assert!(matches!(
        doc.remove_subject(missing),
        Err(CaseError::UnknownItem { .. })
    ));
    assert!(matches!(
        doc.add_subject_identifier(missing, "a", "b"),
        Err(CaseError::UnknownItem { .. })
    ));
    let err = doc.set_subject_field(id, "age", "40").unwrap_err();
    assert!(err.to_string().contains("name, role, nationality"), "{err}");
    assert!(doc.set_subject_field(id, "name", "").is_err());
    assert!(matches!(
        doc.add_subject(
            id,
            &SubjectInput {
                name: "dup".into(),
                ..Default::default()
            }
        ),
        Err(CaseError::DuplicateItem {
            kind: "subject",
            ..
        })
    ));
    assert!(doc.add_subject(missing, &SubjectInput::default()).is_err());
    assert!(
        doc.add_subject(
            missing,
            &SubjectInput {
                name: "x".into(),
                identifiers: vec![("".into(), "v".into())],
                ..Default::default()
            }
        )
        .is_err()
    );
    assert_eq!(doc.pending_edits(), 0, "failed mutators write nothing");
}

#[test]
fn evidence_and_custody() {
    let (a, mut doc) = ready();
    let id = ItemId::from_u64(3);
    doc.add_evidence(id, "Icon, tempera on wood", Some("Bari, warehouse 4"))
        .unwrap();
    doc.add_custody(
        id,
        &CustodyInput {
            at: t(5),
            by: a.id,
            action: "seized".into(),
            holder: Some("Carabinieri TPC".into()),
            location: None,
        },
    )
    .unwrap();
    doc.add_custody(
        id,
        &CustodyInput {
            at: t(6),
            by: a.id,
            action: "sealed".into(),
            holder: None,
            location: Some("Rome".into()),
        },
    )
    .unwrap();
    commit(&mut doc);
    let r = doc.record(&genesis(&a)).unwrap();
    let e = &r.evidence[0];
    assert_eq!(e.found_at.as_deref(), Some("Bari, warehouse 4"));
    assert_eq!(e.custody.len(), 2);
    assert_eq!(
        (
            e.custody[0].action.as_str(),
            e.custody[0].by,
            e.custody[0].at
        ),
        ("seized", a.id, t(5))
    );
    assert_eq!(e.custody[1].location.as_deref(), Some("Rome"));
    let entry = CustodyInput {
        at: t(7),
        by: a.id,
        action: "x".into(),
        holder: None,
        location: None,
    };
    assert!(matches!(
        doc.add_custody(ItemId::from_u64(4), &entry),
        Err(CaseError::UnknownItem {
            kind: "evidence",
            ..
        })
    ));
    assert!(
        doc.add_custody(
            id,
            &CustodyInput {
                action: "".into(),
                ..entry
            }
        )
        .is_err()
    );
    assert!(matches!(
        doc.add_evidence(id, "again", None),
        Err(CaseError::DuplicateItem { .. })
    ));
    assert!(doc.add_evidence(ItemId::from_u64(9), "", None).is_err());
}

#[test]
fn tasks() {
    let (a, mut doc) = ready();
    let id = ItemId::from_u64(0x11);
    doc.add_task(id, "Interview the dealer", None).unwrap();
    commit(&mut doc);
    doc.assign_task(id, Some("agent b")).unwrap();
    doc.set_task_done(id, true).unwrap();
    commit(&mut doc);
    let r = doc.record(&genesis(&a)).unwrap();
    assert_eq!(r.tasks[0].assignee.as_deref(), Some("agent b"));
    assert!(r.tasks[0].done);
    doc.assign_task(id, None).unwrap();
    doc.set_task_done(id, false).unwrap();
    commit(&mut doc);
    let r = doc.record(&genesis(&a)).unwrap();
    assert_eq!(r.tasks[0].assignee, None);
    assert!(!r.tasks[0].done);
    let missing = ItemId::from_u64(0x12);
    assert!(matches!(
        doc.set_task_done(missing, true),
        Err(CaseError::UnknownItem { kind: "task", .. })
    ));
    assert!(doc.assign_task(missing, None).is_err());
    assert!(doc.assign_task(id, Some("")).is_err());
    assert!(doc.add_task(missing, " ", None).is_err());
    assert!(matches!(
        doc.add_task(id, "dup", None),
        Err(CaseError::DuplicateItem { .. })
    ));
}

#[test]
fn notes_links_attachments() {
    let (a, mut doc) = ready();
    let b = Device::new(2);
    doc.add_note(a.id, t(3), "First note").unwrap();
    doc.add_note(b.id, t(4), "Second note\nwith two lines")
        .unwrap();
    let other = CaseId::from_bytes([9; 16]);
    doc.add_link(other, "related").unwrap();
    let att = AttachmentRef {
        hash: HASH.into(),
        name: "photo.jpg".into(),
        size: 123_456,
        media_type: "image/jpeg".into(),
    };
    doc.add_attachment(&att).unwrap();
    commit(&mut doc);
    let r = doc.record(&genesis(&a)).unwrap();
    assert_eq!(r.notes.len(), 2);
    // A wrote the second note: naming B does not make it B's.
    assert_eq!(
        (r.notes[1].author, r.notes[1].claimed_author, r.notes[1].at),
        (a.id, Some(b.id), t(4))
    );
    assert_eq!(r.notes[0].text, "First note");
    assert_eq!(
        (r.links[0].case, r.links[0].relation.as_str()),
        (other, "related")
    );
    assert_eq!(r.attachments, vec![att.clone()]);
    doc.add_link(other, "same ring").unwrap();
    commit(&mut doc);
    assert_eq!(
        doc.record(&genesis(&a)).unwrap().links[0].relation,
        "same ring"
    );
    doc.remove_link(other).unwrap();
    doc.remove_attachment(HASH).unwrap();
    commit(&mut doc);
    let r = doc.record(&genesis(&a)).unwrap();
    assert!(r.links.is_empty() && r.attachments.is_empty());
    assert!(matches!(
        doc.remove_link(other),
        Err(CaseError::UnknownItem { kind: "link", .. })
    ));
    assert!(matches!(
        doc.remove_attachment(HASH),
        Err(CaseError::UnknownItem {
            kind: "attachment",
            ..
        })
    ));
    assert!(doc.add_note(a.id, t(5), "").is_err());
    assert!(doc.add_link(other, "").is_err());
    for bad in [
        AttachmentRef {
            hash: HASH.to_uppercase(),
            ..att.clone()
        },
        AttachmentRef {
            hash: "abc".into(),
            ..att.clone()
        },
        AttachmentRef {
            name: "".into(),
            ..att.clone()
        },
        AttachmentRef {
            media_type: "jpeg".into(),
            ..att.clone()
        },
    ] {
        assert!(
            matches!(
                doc.add_attachment(&bad),
                Err(CaseError::InvalidValue { .. })
            ),
            "{bad:?}"
        );
    }
    doc.add_attachment(&att).unwrap();
    assert!(matches!(
        doc.add_attachment(&att),
        Err(CaseError::DuplicateItem { .. })
    ));
}

#[test]
fn pending_edits_block_sealing_operations() {
    let (_, mut doc) = ready();
    assert_eq!(doc.commit(t(3), "nothing").unwrap(), None);
    doc.set_title("pending").unwrap();
    assert_eq!(doc.pending_edits(), 1);
    assert!(matches!(doc.heads(), Err(CaseError::UncommittedEdits)));
    assert!(matches!(doc.save(), Err(CaseError::UncommittedEdits)));
    assert!(matches!(
        doc.apply(Vec::new()),
        Err(CaseError::UncommittedEdits)
    ));
    assert!(matches!(doc.history(), Err(CaseError::UncommittedEdits)));
    assert_eq!(
        doc.summary().unwrap().title,
        "pending",
        "cheap reads see pending edits"
    );
    assert_eq!(doc.rollback().unwrap(), 1);
    assert_eq!(doc.summary().unwrap().title, "Original title");
    doc.set_title("committed").unwrap();
    let change = doc.commit(t(4), "retitle").unwrap().unwrap();
    assert_eq!(change.message(), Some("retitle"));
    assert_eq!(change.timestamp(), t(4).as_millis() / 1000);
    assert_eq!(doc.heads().unwrap(), vec![change.hash().into()]);
    assert!(doc.has_change(&change.hash().into()).unwrap());
    assert_eq!(doc.change_count().unwrap(), 2);
}

#[test]
fn save_load_round_trip() {
    let (a, mut doc) = ready();
    doc.add_note(a.id, t(2), "kept").unwrap();
    commit(&mut doc);
    let snapshot = doc.save().unwrap();
    let b = Device::new(2);
    let mut loaded = CaseDoc::load(&snapshot, b.actor()).unwrap();
    assert_eq!(loaded.heads().unwrap(), doc.heads().unwrap());
    assert_eq!(
        loaded.record(&genesis(&a)).unwrap(),
        doc.record(&genesis(&a)).unwrap()
    );
    loaded.set_title("by b").unwrap();
    let change = loaded.commit(t(3), "b edits").unwrap().unwrap();
    assert_eq!(fieldsync_case::change_device(&change), Some(b.id));
    assert!(CaseDoc::load(b"not a document", b.actor()).is_err());
}

#[test]
fn record_json_is_the_documented_format() {
    let (a, mut doc) = ready();
    let task = ItemId::from_u64(0x42);
    doc.add_task(task, "Call the port", Some("ana")).unwrap();
    doc.add_note(a.id, t(2), "hello").unwrap();
    commit(&mut doc);
    let json = serde_json::to_value(doc.record(&genesis(&a)).unwrap()).unwrap();
    let keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut expected = vec![
        "schema",
        "id",
        "kind",
        "office",
        "compartment",
        "creator",
        "created_at",
        "title",
        "status",
        "priority",
        "summary",
        "subjects",
        "evidence",
        "tasks",
        "notes",
        "links",
        "attachments",
        "heads",
        "conflicts",
        "problems",
    ];
    expected.sort_unstable();
    let mut keys_sorted = keys.clone();
    keys_sorted.sort_unstable();
    assert_eq!(keys_sorted, expected);
    assert_eq!(json["schema"], 1);
    assert_eq!(json["kind"], "criminal-investigation");
    assert_eq!(json["status"], "open");
    assert_eq!(json["creator"], a.id.to_string());
    assert_eq!(json["created_at"], "2025-11-24T16:00:00.000Z");
    assert_eq!(json["tasks"][0]["id"], "0000000000000042");
    assert_eq!(json["tasks"][0]["assignee"], "ana");
    assert_eq!(json["tasks"][0]["done"], false);
    assert_eq!(json["notes"][0]["at"], "2025-11-24T16:00:02.000Z");
    assert_eq!(json["heads"][0].as_str().unwrap().len(), 64);
    let back: fieldsync_case::CaseRecord = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(serde_json::to_value(back).unwrap(), json);
}

#[test]
fn schema_violations_are_shown_not_hidden() {
    use automerge::transaction::Transactable;
    // A buggy or hostile (but enrolled) device writes raw Automerge.
    let (a, mut doc) = ready();
    let b = Device::new(2);
    let mut raw =
        automerge::AutoCommit::new().with_actor(automerge::ActorId::from(b.actor().to_bytes()));
    raw.apply_changes(doc.changes_since(&[]).unwrap()).unwrap();
    raw.put(automerge::ROOT, "status", "on fire").unwrap();
    raw.put(automerge::ROOT, "title", 42_i64).unwrap();
    raw.put_object(automerge::ROOT, "tasks", automerge::ObjType::List)
        .unwrap();
    raw.commit();
    doc.apply(vec![raw.get_last_local_change().unwrap()])
        .unwrap();
    let r = doc.record(&genesis(&a)).unwrap();
    assert_eq!(r.status, Status::Open);
    assert_eq!(r.title, "");
    assert!(r.tasks.is_empty());
    let problems = r.problems.join("\n");
    assert!(
        problems.contains("status: \"on fire\" is not a status; shown as open"),
        "{problems}"
    );
    assert!(problems.contains("title: is not text"), "{problems}");
    assert!(
        problems.contains("tasks: is not a list") || problems.contains("tasks: is not a map"),
        "{problems}"
    );
    let history = doc.history().unwrap();
    assert_eq!(history.last().unwrap().device, Some(b.id));
    assert!(
        history
            .last()
            .unwrap()
            .description
            .contains(&"set status = \"on fire\"".to_owned())
    );
    assert!(matches!(
        doc.add_task(ItemId::from_u64(1), "x", None),
        Err(CaseError::NotACase { .. })
    ));
}
