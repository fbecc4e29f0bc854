//! A document of 10,000 small changes: snapshot size and the cost of load,
//! record, history and apply. Prints figures; asserts nothing about time.
//!
//! `cargo test -p fieldsync-case --release --test scale -- --nocapture`
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::time::Instant;

use automerge::{AutoCommit, LoadOptions, VerificationMode};
use common::{Device, base, genesis, t};
use fieldsync_case::{CaseDoc, ItemId, Priority, Status, SubjectInput};

const CHANGES: usize = 10_000;

#[test]
fn ten_thousand_changes() {
    let a = Device::new(1);
    let b = Device::new(2);
    let (mut doc, first) = base(&a, "Scale case");
    let mut changes = vec![first];
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 1..CHANGES {
        match i % 8 {
            0 => doc
                .set_status(Status::ALL[i / 8 % Status::ALL.len()])
                .unwrap(),
            1 => doc
                .set_priority(Priority::ALL[i / 8 % Priority::ALL.len()])
                .unwrap(),
            2 => doc.splice_summary(0, 0, &format!("line {i}. ")).unwrap(),
            3 => doc
                .add_note(a.id, t(i as i64), &format!("note number {i}: all quiet"))
                .unwrap(),
            4 => {
                let id = ItemId::from_u64(i as u64);
                doc.add_task(id, &format!("task {i}"), Some("agent"))
                    .unwrap();
                tasks.push(id);
            }
            5 => doc.set_task_done(tasks[tasks.len() - 1], true).unwrap(),
            6 => doc
                .add_subject(
                    ItemId::from_u64(1 << 40 | i as u64),
                    &SubjectInput {
                        name: format!("Subject {i}"),
                        role: Some("witness".into()),
                        nationality: None,
                        identifiers: vec![("phone".into(), format!("+34 600 {i:06}"))],
                    },
                )
                .unwrap(),
            _ => doc.set_title(&format!("Scale case, revision {i}")).unwrap(),
        }
        changes.push(doc.commit(t(i as i64), "edit").unwrap().unwrap());
    }
    let build = started.elapsed();
    let change_bytes: usize = changes.iter().map(|c| c.raw_bytes().len()).sum();

    let started = Instant::now();
    let snapshot = doc.save().unwrap();
    let save = started.elapsed();

    let started = Instant::now();
    let mut loaded = CaseDoc::load(&snapshot, b.actor()).unwrap();
    let load = started.elapsed();

    let mut raw = AutoCommit::load(&snapshot).unwrap();
    let started = Instant::now();
    let forked = raw.fork();
    let fork = started.elapsed();
    drop(forked);
    println!("fork of the loaded doc: {fork:.2?}");

    let started = Instant::now();
    AutoCommit::load_with_options(
        &snapshot,
        LoadOptions::new().verification_mode(VerificationMode::DontCheck),
    )
    .unwrap();
    let load_unchecked = started.elapsed();

    let started = Instant::now();
    let record = loaded.record(&genesis(&a)).unwrap();
    let record_time = started.elapsed();
    let json = serde_json::to_vec(&record).unwrap();

    let started = Instant::now();
    let summary = loaded.summary().unwrap();
    let summary_time = started.elapsed();

    let started = Instant::now();
    let history = loaded.history().unwrap();
    let history_time = started.elapsed();

    // One more change from another device, applied to the big document.
    let mut other = CaseDoc::load(&snapshot, b.actor()).unwrap();
    other.add_note(b.id, t(0), "late note").unwrap();
    let late = other.commit(t(CHANGES as i64), "late").unwrap().unwrap();
    let started = Instant::now();
    loaded.apply(vec![late]).unwrap();
    let apply_one = started.elapsed();

    let started = Instant::now();
    let replayed = {
        let mut fresh = CaseDoc::new(b.actor());
        fresh.apply(changes.clone()).unwrap();
        fresh
    };
    let apply_all = started.elapsed();
    drop(replayed);

    assert_eq!(history.len(), CHANGES);
    assert_eq!(record.notes.len(), CHANGES / 8);
    assert_eq!(summary.title, record.title);
    println!("--- {CHANGES} small changes (build {build:.2?}) ---");
    println!(
        "changes: {change_bytes} bytes total, {} bytes average",
        change_bytes / CHANGES
    );
    println!(
        "save(): {} bytes ({:.1}x smaller than the changes), {save:.2?}",
        snapshot.len(),
        change_bytes as f64 / snapshot.len() as f64
    );
    println!("load(): {load:.2?} (heads checked); unchecked: {load_unchecked:.2?}");
    println!("record(): {record_time:.2?}, JSON {} bytes", json.len());
    println!("summary(): {summary_time:.2?}");
    println!("history(): {history_time:.2?}");
    println!("apply() of 1 change to the loaded doc: {apply_one:.2?}");
    println!("apply() of all {CHANGES} changes to an empty doc, one call: {apply_all:.2?}");
}
