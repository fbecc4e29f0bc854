//! Inputs the fuzz targets found, replayed as plain tests (see `fuzz/`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use automerge::marks::{ExpandMark, Mark};
use automerge::transaction::Transactable;
use automerge::{ActorId, AutoCommit, Change, ObjType, ROOT};
use common::{Device, base, case_id, t};
use fieldsync_case::{
    CaseDoc, CaseError, ChangeError, decode_change, encode_change, parse_change, payload_for_local,
};
use fieldsync_identity::sign;
use sha2::Digest;

/// The `guard` target's input format: `[mode][len: u16 BE][part]…`. The
/// same reader as `fuzz/src/lib.rs`, which lives outside the workspace.
fn split_parts(mut data: &[u8]) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    while data.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([data[0], data[1]]));
        let rest = &data[2..];
        let (part, next) = rest.split_at(len.min(rest.len()));
        parts.push(part);
        data = next;
    }
    parts
}

/// The parts of a `guard` input (after its mode byte) that Automerge parses
/// as changes once their checksum is fixed, as the target fixes it.
fn chunks(input: &[u8]) -> Vec<Vec<u8>> {
    split_parts(&input[1..])
        .into_iter()
        .filter(|p| p.len() > 8)
        .map(|part| {
            let mut chunk = part.to_vec();
            let hash = sha2::Sha256::digest(&chunk[8..]);
            chunk[4..8].copy_from_slice(&hash[..4]);
            chunk
        })
        .filter(|c| Change::from_bytes(c.clone()).is_ok())
        .collect()
}

fn refused_for_marks<T: std::fmt::Debug>(r: Result<T, CaseError>) {
    match r {
        Err(CaseError::Refused {
            source: ChangeError::UnsupportedOperation { what },
            ..
        }) => assert_eq!(what, "rich-text marks"),
        other => panic!("expected a refusal for marks, got {other:?}"),
    }
}

/// `guard`, mode 1: one change whose first operations are mark ends on the
/// root map. Automerge 0.12.0 fails an assertion splicing its mark index
/// (`End(OpId(0, 0))` encodes as `Start(OpId(0, 0))`), fails it again in a
/// destructor while unwinding, and aborts the process: before the fix this
/// test killed its test binary. Now the change is refused on parsing and on
/// applying, and the document stays usable and unchanged.
#[test]
fn guard_mark_end_at_an_actors_first_op_is_refused_not_an_abort() {
    let input = include_bytes!("data/guard-mark-end-abort.bin");
    assert_eq!(input[0] % 3, 1, "mode 1: applied to an empty document");
    // Of its parts, one is a change chunk once its checksum is fixed.
    let mut chunks = chunks(input);
    assert_eq!(chunks.len(), 1);
    let chunk = chunks.remove(0);

    assert_eq!(
        parse_change(&chunk).unwrap_err(),
        ChangeError::UnsupportedOperation {
            what: "rich-text marks"
        }
    );

    // Automerge itself parses it; the apply must refuse it all the same.
    let change = Change::from_bytes(chunk).unwrap();
    let me = Device::new(3).actor();
    for atomic in [false, true] {
        let mut doc = CaseDoc::new(me);
        let r = if atomic {
            doc.apply_atomic(vec![change.clone()])
        } else {
            doc.apply(vec![change.clone()])
        };
        refused_for_marks(r);
        assert!(!doc.is_poisoned());
        assert_eq!(doc.heads().unwrap(), vec![]);
        doc.init("Still a usable document").unwrap();
        assert!(doc.commit(t(1), "open").unwrap().is_some());
    }
}

/// A mark made with Automerge's own API, signed by an enrolled device, is
/// refused by every way in: the envelope decoder, `parse_change`, `apply`
/// (also inside a batch of good changes, which is refused whole).
#[test]
fn marks_made_by_automerge_are_refused_everywhere() {
    let a = Device::new(1);
    let (mut doc, first) = base(&a, "Marked");
    let mut am = AutoCommit::new().with_actor(ActorId::from(a.actor().to_bytes()));
    am.apply_changes(vec![first.clone()]).unwrap();
    let text = am.put_object(ROOT, "scratch", ObjType::Text).unwrap();
    am.splice_text(&text, 0, 0, "urgent lead").unwrap();
    am.commit();
    am.mark(
        &text,
        Mark::new("bold".into(), true, 0, 6),
        ExpandMark::After,
    )
    .unwrap();
    am.commit();
    let changes = am.get_changes(&[first.hash()]);
    assert_eq!(changes.len(), 2);
    let (plain, marked) = (changes[0].clone(), changes[1].clone());
    let want = ChangeError::UnsupportedOperation {
        what: "rich-text marks",
    };

    assert!(parse_change(plain.raw_bytes()).is_ok());
    assert_eq!(parse_change(marked.raw_bytes()).unwrap_err(), want);

    let signed = sign(payload_for_local(case_id(), 2, marked.clone()), &a.key).unwrap();
    let envelope = encode_change(signed.as_signed());
    assert_eq!(decode_change(&envelope).unwrap_err(), want);

    let before = doc.heads().unwrap();
    refused_for_marks(doc.apply(vec![plain.clone(), marked.clone()]));
    refused_for_marks(doc.apply_atomic(vec![marked]));
    assert!(!doc.is_poisoned());
    assert_eq!(doc.heads().unwrap(), before, "nothing of the batch applied");
    doc.apply(vec![plain.clone()]).unwrap();
    assert_eq!(doc.heads().unwrap(), vec![plain.hash().into()]);
}

/// `guard`, mode 1: a change whose list object is created inside itself
/// (operation 15 makes a list in object 15). Automerge applies it; walking
/// up from that object to the root never ended, so `history` (describing
/// where each operation sits) hung. Now the walk stops after a depth no case
/// document reaches, and the line says the object cannot be placed.
#[test]
fn guard_object_inside_itself_does_not_hang_history() {
    let input = include_bytes!("data/guard-parent-cycle-hang.bin");
    assert_eq!(input[0] % 3, 1, "mode 1: applied to an empty document");
    let changes: Vec<Change> = chunks(input)
        .iter()
        .map(|c| parse_change(c).unwrap())
        .collect();
    assert_eq!(changes.len(), 1);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut doc = CaseDoc::new(Device::new(3).actor());
        doc.apply(changes).unwrap();
        let _ = tx.send(doc.history());
    });
    let history = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("history did not finish within 60 s")
        .unwrap();
    assert_eq!(history.len(), 1);
    let lines = &history[0].description;
    assert!(lines.contains(&"created subjects".to_owned()), "{lines:?}");
    assert_eq!(
        lines.last().map(String::as_str),
        Some("changed an object this document cannot place"),
        "{lines:?}"
    );
}
