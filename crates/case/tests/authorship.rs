//! Who wrote what: a note's author is the device whose signed change created
//! it, not what the note says; and a change too large to send is never made.
#![allow(clippy::unwrap_used)]

mod common;

use automerge::ReadDoc;
use common::{Device, base, genesis, replica, t};
use fieldsync_case::{CaseError, MAX_CHANGE_LEN, TEXT_MAX_CHARS};

#[test]
fn an_honest_note_names_its_writer_and_nothing_else() {
    let a = Device::new(1);
    let (mut doc, _) = base(&a, "Honest");
    doc.add_note(a.id, t(2), "seen at the port").unwrap();
    doc.commit(t(2), "note").unwrap().unwrap();
    let r = doc.record(&genesis(&a)).unwrap();
    assert_eq!(r.notes.len(), 1);
    assert_eq!(r.notes[0].author, a.id);
    assert_eq!(r.notes[0].claimed_author, None);
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    let json = serde_json::to_value(&r).unwrap();
    assert!(
        json["notes"][0].get("claimed_author").is_none(),
        "absent from the JSON when it agrees: {json}"
    );
}

#[test]
fn a_note_claiming_another_author_is_shown_as_its_writer_and_flagged() {
    let a = Device::new(1);
    let b = Device::new(2);
    let (_, first) = base(&a, "Forged attribution");
    // B writes a note that names A as its author.
    let mut bdoc = replica(&b, std::slice::from_ref(&first));
    bdoc.add_note(a.id, t(3), "A said so").unwrap();
    let forged = bdoc.commit(t(3), "note").unwrap().unwrap();
    // Headquarters merges it.
    let mut hq = replica(&Device::new(9), &[first, forged]);
    let r = hq.record(&genesis(&a)).unwrap();
    assert_eq!(
        r.notes[0].author, b.id,
        "the writer, bound to B's signature"
    );
    assert_eq!(r.notes[0].claimed_author, Some(a.id));
    assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
    assert!(
        r.problems[0].starts_with("notes/0/author")
            && r.problems[0].contains(&a.id.to_string())
            && r.problems[0].contains(&b.id.to_string()),
        "{}",
        r.problems[0]
    );
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["notes"][0]["author"], b.id.to_string());
    assert_eq!(json["notes"][0]["claimed_author"], a.id.to_string());
}

#[test]
fn rewriting_the_author_of_someone_elses_note_changes_nothing_but_a_flag() {
    let a = Device::new(1);
    let b = Device::new(2);
    let (mut adoc, first) = base(&a, "Rewrite");
    adoc.add_note(a.id, t(2), "mine").unwrap();
    let note = adoc.commit(t(2), "note").unwrap().unwrap();
    // B overwrites the author field of A's note with its own id (with
    // Automerge directly: the case API never rewrites a note).
    let mut raw = automerge::AutoCommit::new()
        .with_actor(automerge::ActorId::from(b.actor().to_bytes().as_slice()));
    raw.apply_changes(vec![first.clone(), note.clone()])
        .unwrap();
    let (_, notes) = raw.get(automerge::ROOT, "notes").unwrap().unwrap();
    let (_, n0) = raw.get(&notes, 0).unwrap().unwrap();
    automerge::transaction::Transactable::put(&mut raw, &n0, "author", b.id.to_string()).unwrap();
    raw.commit();
    let rewrite = raw.get_last_local_change().unwrap();
    let mut hq = replica(&Device::new(9), &[first, note, rewrite]);
    let r = hq.record(&genesis(&a)).unwrap();
    assert_eq!(r.notes[0].author, a.id, "still the device that wrote it");
    assert_eq!(r.notes[0].claimed_author, Some(b.id));
    assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
}

#[test]
fn a_change_too_large_to_send_is_refused_and_nothing_is_left_to_sign() {
    let a = Device::new(1);
    let (mut doc, _) = base(&a, "Large");
    let heads = doc.heads().unwrap();
    // Notes of TEXT_MAX_CHARS four-byte characters: each is about 64 KiB.
    let text: String = (0..TEXT_MAX_CHARS)
        .map(|i| char::from_u32(0x1_0000 + (i as u32 * 7919) % 0xF000).unwrap())
        .collect();
    let notes = MAX_CHANGE_LEN / (4 * TEXT_MAX_CHARS) + 1;
    for i in 0..notes {
        doc.add_note(a.id, t(2 + i as i64), &text).unwrap();
    }
    let err = doc.commit(t(20), "too much").unwrap_err();
    assert!(
        matches!(err, CaseError::ChangeTooLarge { len, limit } if len > limit && limit == MAX_CHANGE_LEN),
        "{err}"
    );
    assert!(err.to_string().contains("smaller edits"), "{err}");
    // The document refuses further work: the store reloads the case, which
    // never saw the change.
    assert!(doc.is_poisoned());
    assert!(matches!(doc.heads(), Err(CaseError::Poisoned)));
    assert!(!heads.is_empty());
    // Under the limit is fine.
    let (mut ok, _) = base(&a, "Large");
    for i in 0..notes - 2 {
        ok.add_note(a.id, t(2 + i as i64), &text).unwrap();
    }
    let change = ok.commit(t(20), "fits").unwrap().unwrap();
    assert!(change.raw_bytes().len() <= MAX_CHANGE_LEN);
}
