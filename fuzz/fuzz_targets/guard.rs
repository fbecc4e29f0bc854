//! The guarded Automerge apply and load of `CaseDoc`.
//!
//! Input: `[mode][bytes]`. Mode 0: the bytes are a snapshot for
//! `CaseDoc::load`. Modes 1 and 2: the bytes are parts (see
//! `split_parts`), each an Automerge change chunk whose checksum is fixed
//! and which `parse_change` must accept (Automerge's decoding of an
//! accepted change must hold no mark operation, which it refuses), applied in one call to an empty
//! document (1) or to the sample case (2), once with `apply` and once with
//! `apply_atomic`.
//!
//! An Automerge panic caught by the guard is fine; any other panic is a
//! crash. After a caught panic `apply` must leave the document poisoned
//! (every call refused) and `apply_atomic` must leave it exactly as it was.
//! A document that loads or applies cleanly is read every way a user can
//! read it, saved and loaded again.
#![no_main]

use fieldsync_case::{CaseDoc, CaseError, guarded, parse_change};
use fieldsync_fuzz::{at, check, device_key, fix_checksum, sample, sample_genesis, split_parts};
use fieldsync_identity::{ActorBinding, DeviceId};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| check(|| run(data)));

/// The local actor: fixture device 3.
fn me() -> ActorBinding {
    DeviceId::from_public_key(device_key(3).public()).actor(0)
}

fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => load(rest),
        m => apply(rest, m == 2),
    }
}

fn load(snapshot: &[u8]) {
    match CaseDoc::load(snapshot, me()) {
        Ok(mut doc) => exercise(&mut doc),
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

fn start(on_sample: bool) -> CaseDoc {
    if on_sample {
        CaseDoc::load(&sample().snapshot, me())
            .unwrap_or_else(|e| panic!("the sample snapshot does not load: {e}"))
    } else {
        CaseDoc::new(me())
    }
}

fn apply(parts: &[u8], on_sample: bool) {
    let changes: Vec<automerge::Change> = split_parts(parts)
        .into_iter()
        .filter_map(|p| {
            let mut chunk = p.to_vec();
            fix_checksum(&mut chunk);
            let change = parse_change(&chunk).ok()?;
            assert_no_marks(&change);
            Some(change)
        })
        .collect();
    if changes.is_empty() {
        return;
    }

    let mut atomic = start(on_sample);
    let before = heads(&mut atomic);
    let atomic_result = atomic.apply_atomic(changes.clone());
    match &atomic_result {
        Ok(()) => assert!(!atomic.is_poisoned()),
        Err(e) => {
            assert!(
                !atomic.is_poisoned(),
                "apply_atomic poisoned the document: {e}"
            );
            assert_eq!(
                heads(&mut atomic),
                before,
                "apply_atomic failed ({e}) but changed the document"
            );
        }
    }

    let mut doc = start(on_sample);
    match doc.apply(changes) {
        Ok(()) => {
            assert!(!doc.is_poisoned());
            assert!(
                atomic_result.is_ok(),
                "apply succeeded where apply_atomic failed"
            );
            assert_eq!(heads(&mut doc), heads(&mut atomic));
            exercise(&mut doc);
        }
        Err(CaseError::Panicked(_)) => {
            assert!(
                doc.is_poisoned(),
                "a caught panic did not poison the document"
            );
            assert!(matches!(doc.heads(), Err(CaseError::Poisoned)));
            assert!(matches!(doc.save(), Err(CaseError::Poisoned)));
            assert!(matches!(
                doc.record(sample_genesis()),
                Err(CaseError::Poisoned)
            ));
            assert!(matches!(doc.set_title("after"), Err(CaseError::Poisoned)));
            assert!(
                atomic_result.is_err(),
                "apply panicked where apply_atomic did not"
            );
        }
        Err(e) => {
            assert!(!doc.is_poisoned(), "an error poisoned the document: {e}");
        }
    }
}

/// `parse_change` refuses every change with a mark operation (reading the
/// action column itself, see `crates/case/src/actions.rs`): Automerge's own
/// decoding of a change it let through must agree.
fn assert_no_marks(change: &automerge::Change) {
    if let Ok(expanded) = guarded("decoding a change", || change.decode()) {
        assert!(
            !expanded.operations.iter().any(|op| matches!(
                op.action,
                automerge::legacy::OpType::MarkBegin(..) | automerge::legacy::OpType::MarkEnd(..)
            )),
            "parse_change let a mark operation through"
        );
    }
}

fn heads(doc: &mut CaseDoc) -> Vec<fieldsync_case::ChangeHash> {
    doc.heads()
        .unwrap_or_else(|e| panic!("heads of a healthy document: {e}"))
}

/// Reads the document every way the crate offers, saves and reloads it,
/// then makes a local edit. Errors are fine (a document made of foreign
/// changes need not be a case); a caught panic must poison it.
fn exercise(doc: &mut CaseDoc) {
    let results = [
        doc.heads().map(drop),
        doc.record(sample_genesis()).map(drop),
        doc.conflicts().map(drop),
        doc.history().map(drop),
        doc.summary().map(drop),
        doc.summary_text().map(drop),
        doc.missing_deps().map(drop),
        doc.change_count().map(drop),
        doc.changes_since(&[]).map(drop),
    ];
    let panicked = results
        .iter()
        .any(|r| matches!(r, Err(CaseError::Panicked(_))));
    assert_eq!(panicked, doc.is_poisoned());
    if doc.is_poisoned() {
        return;
    }
    if let Ok(saved) = doc.save() {
        let before = heads(doc);
        match CaseDoc::load(&saved, me()) {
            Ok(mut again) => {
                if let Ok(h) = again.heads() {
                    assert_eq!(h, before, "a saved document reloads with other heads");
                }
            }
            // Automerge may refuse what it saved when the document holds
            // changes that wait for missing dependencies; anything else is odd
            // but still only an error.
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
    if doc.set_title("Checked by the fuzzer").is_ok()
        && let Ok(Some(change)) = doc.commit(at(9), "fuzz edit")
        && let Err(e) = parse_change(change.raw_bytes())
    {
        // A local change is always a valid, canonical change chunk.
        panic!("a local change does not parse: {e}");
    }
}
