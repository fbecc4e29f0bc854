//! The cost of the guard: applying already-verified changes through
//! [`CaseDoc::apply`] (the project's path: the poison check, the pending-edit
//! check and `catch_unwind` around one `apply_changes` call) against a bare
//! Automerge `apply_changes` of the same changes, in the same run.
//!
//! Three shapes, each measured both ways:
//! 1. a whole case of N changes from three devices (with concurrent edits)
//!    applied to an empty document in one call;
//! 2. a batch of 100 new changes onto that case, loaded from its snapshot
//!    (what a device does with a sync batch);
//! 3. the same 100 changes one call each (live updates).
//!
//! Criterion reports each; then a paired run of `parse_change` (checksum,
//! canonical form, the action scan that refuses marks) against a bare
//! `Change::from_bytes`, for the cost of the checks every change from
//! outside passes; then a paired run (the two ways alternating,
//! medians of each) prints the ratio guarded / unguarded, the figure to
//! hold under 1.10.
//!
//! `cargo bench -p fieldsync-case --bench guard` (N = 2,000);
//! `BENCH_QUICK=1` runs N = 500 with short measurements.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use automerge::{ActorId, AutoCommit, Change, LoadOptions, TextEncoding, VerificationMode};
use criterion::{BatchSize, Criterion, Throughput};
use fieldsync_case::{CaseDoc, ItemId, SubjectInput, parse_change};
use fieldsync_identity::{ActorBinding, DeviceId, SecretKey, Timestamp};

/// Batch applied onto the existing case in shapes 2 and 3.
const BATCH: usize = 100;

fn quick() -> bool {
    std::env::var_os("BENCH_QUICK").is_some()
}

fn actor(n: u8) -> ActorBinding {
    DeviceId::from_public_key(SecretKey::from_seed(&[n; 32]).public()).actor(0)
}

fn t(i: usize) -> Timestamp {
    Timestamp::from_millis(1_790_000_000_000 + i as i64 * 1000)
}

/// `n` changes from three devices that edit one case and exchange their
/// changes every few edits (so many changes are concurrent), in causal order.
fn changes(n: usize) -> Vec<Change> {
    let devices: Vec<DeviceId> = (1..=3)
        .map(|k| DeviceId::from_public_key(SecretKey::from_seed(&[k; 32]).public()))
        .collect();
    let mut docs: Vec<CaseDoc> = (1..=3).map(|k| CaseDoc::new(actor(k))).collect();
    let mut all = Vec::with_capacity(n);
    docs[0].init("Shipment of antiquities").unwrap();
    all.push(docs[0].commit(t(0), "open").unwrap().unwrap());
    let mut seen = [1usize, 0, 0];
    for i in 1..n {
        let d = i % 3;
        // Every fourth edit, the device first takes in all it has not seen
        // (its own changes among them are ignored as already present).
        if i % 4 == 0 || seen[d] == 0 {
            docs[d].apply(all[seen[d]..].to_vec()).unwrap();
            seen[d] = all.len();
        }
        let doc = &mut docs[d];
        match i % 5 {
            0 => doc.set_title(&format!("Shipment {i}")).unwrap(),
            1 => doc
                .add_note(devices[d], t(i), &format!("note {i}: crate inspected"))
                .unwrap(),
            2 => {
                let len = doc.summary_text().unwrap().chars().count();
                doc.splice_summary(len, 0, &format!("Seen at dock {i}. "))
                    .unwrap();
            }
            3 => doc
                .add_subject(
                    ItemId::from_u64(i as u64),
                    &SubjectInput {
                        name: format!("Subject {i}"),
                        role: Some("courier".into()),
                        ..SubjectInput::default()
                    },
                )
                .unwrap(),
            _ => doc
                .add_task(ItemId::from_u64(i as u64), &format!("Follow up {i}"), None)
                .unwrap(),
        }
        all.push(doc.commit(t(i), "edit").unwrap().unwrap());
    }
    all
}

fn bare_doc() -> AutoCommit {
    AutoCommit::new_with_encoding(TextEncoding::UnicodeCodePoint)
        .with_actor(ActorId::from(actor(9).to_bytes()))
}

/// Loads as `CaseDoc::load` does (heads checked), so that both ways start
/// from the same state: an unchecked load leaves work for the first apply.
fn bare_load(snapshot: &[u8]) -> AutoCommit {
    AutoCommit::load_with_options(
        snapshot,
        LoadOptions::new()
            .text_encoding(TextEncoding::UnicodeCodePoint)
            .verification_mode(VerificationMode::Check),
    )
    .unwrap()
    .with_actor(ActorId::from(actor(9).to_bytes()))
}

/// The work of one shape, both ways: the setup (untimed) and the apply (timed).
struct Shape<'a> {
    name: &'static str,
    base: Option<&'a [u8]>,
    changes: &'a [Change],
    one_call: bool,
}

impl Shape<'_> {
    fn guarded_setup(&self) -> (CaseDoc, Vec<Change>) {
        let doc = match self.base {
            Some(s) => CaseDoc::load(s, actor(9)).unwrap(),
            None => CaseDoc::new(actor(9)),
        };
        (doc, self.changes.to_vec())
    }

    fn bare_setup(&self) -> (AutoCommit, Vec<Change>) {
        let doc = match self.base {
            Some(s) => bare_load(s),
            None => bare_doc(),
        };
        (doc, self.changes.to_vec())
    }

    fn guarded(&self, (mut doc, changes): (CaseDoc, Vec<Change>)) -> CaseDoc {
        if self.one_call {
            doc.apply(changes).unwrap();
        } else {
            for c in changes {
                doc.apply(vec![c]).unwrap();
            }
        }
        doc
    }

    fn bare(&self, (mut doc, changes): (AutoCommit, Vec<Change>)) -> AutoCommit {
        if self.one_call {
            doc.apply_changes(changes).unwrap();
        } else {
            for c in changes {
                doc.apply_changes(vec![c]).unwrap();
            }
        }
        doc
    }

    /// Alternates the two ways `reps` times; returns their median times.
    fn paired(&self, reps: usize) -> (Duration, Duration) {
        let mut guarded = Vec::with_capacity(reps);
        let mut bare = Vec::with_capacity(reps);
        for r in 0..reps {
            // Alternate which goes first, so drift in the machine's speed cancels.
            for first in [r % 2 == 0, r % 2 != 0] {
                if first {
                    let input = self.guarded_setup();
                    let start = Instant::now();
                    let doc = self.guarded(input);
                    guarded.push(start.elapsed());
                    drop(doc);
                } else {
                    let input = self.bare_setup();
                    let start = Instant::now();
                    let doc = self.bare(input);
                    bare.push(start.elapsed());
                    drop(doc);
                }
            }
        }
        (median(guarded), median(bare))
    }
}

/// `parse_change` (the path of every change from outside) against a bare
/// `Change::from_bytes` of the same bytes, alternating; their median times.
fn paired_parse(changes: &[Change], reps: usize) -> (Duration, Duration) {
    let bytes: Vec<Vec<u8>> = changes.iter().map(|c| c.raw_bytes().to_vec()).collect();
    let mut checked = Vec::with_capacity(reps);
    let mut bare = Vec::with_capacity(reps);
    for r in 0..reps {
        for first in [r % 2 == 0, r % 2 != 0] {
            let start = Instant::now();
            if first {
                for b in &bytes {
                    std::hint::black_box(parse_change(b).unwrap());
                }
                checked.push(start.elapsed());
            } else {
                for b in &bytes {
                    std::hint::black_box(Change::from_bytes(b.clone()).unwrap());
                }
                bare.push(start.elapsed());
            }
        }
    }
    (median(checked), median(bare))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn main() {
    let n = if quick() { 500 } else { 2000 };
    let started = Instant::now();
    let case = changes(n + BATCH);
    let (history, batch) = case.split_at(n);
    let mut whole = bare_doc();
    whole.apply_changes(history.to_vec()).unwrap();
    let snapshot = whole.save();
    println!(
        "guard bench: {n} changes from 3 devices ({} bytes), snapshot {} bytes, built in {:.1} s",
        history.iter().map(|c| c.raw_bytes().len()).sum::<usize>(),
        snapshot.len(),
        started.elapsed().as_secs_f64()
    );

    let shapes = [
        Shape {
            name: "whole case, one call",
            base: None,
            changes: history,
            one_call: true,
        },
        Shape {
            name: "100 onto the case, one call",
            base: Some(&snapshot),
            changes: batch,
            one_call: true,
        },
        Shape {
            name: "100 onto the case, one call each",
            base: Some(&snapshot),
            changes: batch,
            one_call: false,
        },
    ];

    let mut c = Criterion::default().configure_from_args();
    {
        let mut g = c.benchmark_group("apply");
        g.sample_size(10)
            .warm_up_time(Duration::from_millis(if quick() { 300 } else { 1000 }))
            .measurement_time(Duration::from_secs(if quick() { 2 } else { 6 }));
        for s in &shapes {
            g.throughput(Throughput::Elements(s.changes.len() as u64));
            g.bench_function(format!("{}: guarded CaseDoc::apply", s.name), |b| {
                b.iter_batched(
                    || s.guarded_setup(),
                    |i| s.guarded(i),
                    BatchSize::LargeInput,
                )
            });
            g.bench_function(format!("{}: bare apply_changes", s.name), |b| {
                b.iter_batched(|| s.bare_setup(), |i| s.bare(i), BatchSize::LargeInput)
            });
        }
        g.finish();
    }
    c.final_summary();

    let reps = if quick() { 7 } else { 31 };
    let (checked, bare) = paired_parse(history, reps);
    println!(
        "parsing {n} changes ({reps} each way, alternating; medians): parse_change {:.3} ms (checksum, canonical form, action scan), bare Change::from_bytes {:.3} ms: ratio {:.3}",
        checked.as_secs_f64() * 1e3,
        bare.as_secs_f64() * 1e3,
        checked.as_secs_f64() / bare.as_secs_f64()
    );
    println!("paired runs ({reps} each way, alternating; medians):");
    for s in &shapes {
        let (guarded, bare) = s.paired(reps);
        let per_s = |d: Duration| s.changes.len() as f64 / d.as_secs_f64();
        println!(
            "  {:<34} guarded {:>9.3} ms ({:>8.0} changes/s), bare {:>9.3} ms ({:>8.0} changes/s): ratio {:.3} (goal < 1.10)",
            s.name,
            guarded.as_secs_f64() * 1e3,
            per_s(guarded),
            bare.as_secs_f64() * 1e3,
            per_s(bare),
            guarded.as_secs_f64() / bare.as_secs_f64()
        );
    }
}
