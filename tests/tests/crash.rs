//! Crash tests: a child process making durable edits is killed with SIGKILL
//! at random moments; every edit it reported done must be there afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::BTreeSet;
use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fieldsync_case::CaseKind;
use fieldsync_identity::{CaseId, Timestamp};
use fieldsync_store::{NewCase, NewDevice, Store, StoreKind};
use fieldsync_tests::Agent;

/// A small deterministic generator (xorshift64*), seeded and printed so a failure replays.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn seed() -> u64 {
    std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        })
}

fn notes_in(store: &Store, case: &CaseId) -> BTreeSet<u64> {
    store
        .case_record(case)
        .unwrap()
        .notes
        .iter()
        .filter_map(|n| n.text.strip_prefix("burst ").and_then(|i| i.parse().ok()))
        .collect()
}

/// Runs one child until it is killed `delay` after start; returns what it acknowledged.
fn burst(path: &Path, case: &CaseId, first: u64, delay: Duration) -> Vec<u64> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_store-burst"))
        .arg(path)
        .arg(case.to_string())
        .arg(first.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Ok(i) = line.trim().parse::<u64>() {
                let _ = tx.send(i);
            }
        }
    });
    std::thread::sleep(delay);
    // SIGKILL: no destructor, no flush, no clean shutdown of redb.
    let _ = child.kill();
    let status = child.wait().unwrap();
    reader.join().unwrap();
    let acked: Vec<u64> = rx.try_iter().collect();
    if status.success() {
        panic!("the writer exited on its own");
    }
    if acked.is_empty() {
        // Either killed before its first commit, or it failed: show stderr if it said anything.
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        assert!(
            err.is_empty() || err.contains("in use"),
            "writer failed: {err}"
        );
    }
    acked
}

#[test]
fn kill_9_during_edit_bursts_loses_nothing_acknowledged() {
    let cycles: u64 = std::env::var("CRASH_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let seed = seed();
    eprintln!("crash test: CRASH_SEED={seed} CRASH_CYCLES={cycles}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fieldsync.redb");
    let now = Timestamp::from_millis(1_790_000_000_000);
    let case = {
        let store = Store::create(
            &path,
            NewDevice {
                seed: [7; 32],
                name: "crash",
                epoch: [1; 16],
                now,
                kind: StoreKind::Device,
            },
        )
        .unwrap();
        store
            .create_case(
                &NewCase {
                    id: CaseId::from_bytes([5; 16]),
                    kind: CaseKind::CriminalInvestigation,
                    office: "rome",
                    compartment: "general",
                    title: "crash test",
                },
                now,
            )
            .unwrap()
    };
    let mut acknowledged: BTreeSet<u64> = BTreeSet::new();
    let mut next = 0u64;
    let started = Instant::now();
    for cycle in 0..cycles {
        // The child opens the store first (checking every page of it: a few
        // ms in a debug build), then edits until it is killed.
        let delay = Duration::from_micros(15_000 + rng.next() % 60_000);
        let acked = burst(&path, &case, next, delay);
        next += acked.len() as u64 + 1_000; // fresh numbers each cycle, even for unacknowledged edits
        acknowledged.extend(acked);
        let store = Store::open(&path)
            .unwrap_or_else(|e| panic!("seed {seed} cycle {cycle}: reopen failed: {e}"));
        let present = notes_in(&store, &case);
        let lost: Vec<_> = acknowledged.difference(&present).collect();
        assert!(
            lost.is_empty(),
            "seed {seed} cycle {cycle}: acknowledged edits lost: {lost:?}"
        );
        if cycle % 50 == 49 {
            let report = store.verify_all(now).unwrap();
            assert!(
                report.problems.is_empty(),
                "seed {seed}: {:?}",
                report.problems
            );
        }
    }
    eprintln!(
        "crash test: {cycles} kills, {} acknowledged edits all present, {:?}",
        acknowledged.len(),
        started.elapsed()
    );
    assert!(
        acknowledged.len() as u64 > cycles / 4,
        "too few edits were acknowledged to prove anything"
    );
}

#[test]
fn kill_9_of_the_agent_binary_loses_nothing_acknowledged() {
    let seed = seed();
    eprintln!("agent crash test: CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    // A key file: unlocking takes a millisecond, so the kills land in the edits.
    let agent = Agent::with_key_file(&dir.path().join("data"), &dir.path().join("crash.key"));
    agent
        .run(&["init", "--name", "crash-agent", "--office", "mexico-city"])
        .ok();
    let case = agent
        .run(&[
            "case",
            "new",
            "--kind",
            "personnel-recovery",
            "--title",
            "t",
        ])
        .ok();
    let case = case.out().to_owned();
    let mut acknowledged = Vec::new();
    for i in 0..30u64 {
        let text = format!("burst {i}");
        let mut child = agent
            .command(&["case", "note", &case, &text])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(rng.next() % 30_000));
        let _ = child.kill();
        let status = child.wait().unwrap();
        if status.success() {
            acknowledged.push(i);
        }
    }
    let store = agent.open_store();
    let present = notes_in(&store, &case.parse().unwrap());
    for i in &acknowledged {
        assert!(
            present.contains(i),
            "seed {seed}: note {i} was acknowledged (exit 0) but is gone"
        );
    }
    eprintln!(
        "agent crash test: {} of 30 acknowledged, all present",
        acknowledged.len()
    );
}
