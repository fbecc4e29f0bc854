//! The simulator's seed runner.
//!
//! - `SIM_SEED=n`: replay seed `n` (twice: the trace hashes must agree) and
//!   print its report; `RUST_LOG=fieldsync_sim=debug` (or `trace`) narrates it.
//! - `SIM_SEEDS=n`: run `n` small worlds (default [`DEFAULT_SEEDS`]) from
//!   `SIM_SEED_BASE` (default 0), on as many threads as there are cores
//!   (each world is single-threaded and deterministic).
//! - `SIM_LARGE_SEED=n`: the seed of the large world (default 1).
//! - `SIM_NO_POWER_CUTS=1`: no power cuts (crashes between operations still happen).
//!
//! Run with `-- --nocapture` to see the summary lines of passing runs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use fieldsync_sim::{SimConfig, Stats, run};

/// Small worlds run when `SIM_SEEDS` is not set: 500 in a release build
/// (`cargo test --release -p fieldsync-sim`, about a minute on 2 cores); a
/// debug build (the workspace's `cargo test`) runs ten times slower, so it
/// runs a sample.
const DEFAULT_SEEDS: u64 = if cfg!(debug_assertions) { 25 } else { 500 };

/// Every this many seeds, the run is repeated and the trace hashes compared.
const DETERMINISM_EVERY: u64 = 25;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn tweak(mut cfg: SimConfig) -> SimConfig {
    if std::env::var("SIM_NO_POWER_CUTS").is_ok_and(|v| v != "0") {
        cfg.power_cuts = false;
    }
    cfg
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// The outcome of one seed: its counters (unless it panicked) and, if it
/// failed, why (naming the seed).
struct Outcome {
    stats: Option<Stats>,
    failure: Option<String>,
}

/// Runs `seed` (under `catch_unwind`) and, when `twice`, again to compare
/// the trace hashes.
fn one(seed: u64, cfg: &SimConfig, twice: bool) -> Outcome {
    let caught = |cfg: &SimConfig| {
        catch_unwind(AssertUnwindSafe(|| run(seed, cfg))).map_err(|p| {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "non-string panic".into());
            format!("SIM_SEED={seed} panicked: {msg}")
        })
    };
    let report = match caught(cfg) {
        Ok(r) => r,
        Err(e) => {
            return Outcome {
                stats: None,
                failure: Some(e),
            };
        }
    };
    let mut failure = (!report.is_ok()).then(|| format!("{report}"));
    if twice && failure.is_none() {
        match caught(cfg) {
            Ok(again) if again.trace_hash == report.trace_hash && again.stats == report.stats => {}
            Ok(again) => {
                failure = Some(format!(
                    "SIM_SEED={seed} is not deterministic: two runs differ\n{report}{again}"
                ));
            }
            Err(e) => failure = Some(e),
        }
    }
    Outcome {
        stats: Some(report.stats),
        failure,
    }
}

fn summary(what: &str, seeds: u64, stats: &Stats, wall: f64) -> String {
    format!(
        "{what}: {seeds} seeds, {} nodes, {} changes, {} frames, {:.1} MB, virtual {:.0} s, wall {wall:.1} s\n  totals: {stats}",
        stats.nodes,
        stats.changes,
        stats.frames,
        stats.bytes as f64 / 1e6,
        stats.virtual_ms as f64 / 1000.0,
    )
}

#[test]
fn small_worlds() {
    if let Some(seed) = env_u64("SIM_SEED") {
        init_tracing();
        let cfg = tweak(SimConfig::small(seed));
        println!("{cfg:?}");
        let out = one(seed, &cfg, true);
        if let Some(e) = out.failure {
            panic!("{e}");
        }
        println!("SIM_SEED={seed} passed: {}", out.stats.unwrap_or_default());
        return;
    }
    let n = env_u64("SIM_SEEDS").unwrap_or(DEFAULT_SEEDS);
    let base = env_u64("SIM_SEED_BASE").unwrap_or(0);
    let workers = std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1)
        .clamp(1, 8) as u64;
    let started = Instant::now();
    // Worlds are independent: worker `w` runs every seed `s` with
    // `s % workers == w`.
    let results: Vec<(Stats, Vec<(u64, String)>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                scope.spawn(move || {
                    let mut total = Stats::default();
                    let mut failures = Vec::new();
                    for seed in (base..base + n).filter(|s| s % workers == w) {
                        let cfg = tweak(SimConfig::small(seed));
                        let out = one(seed, &cfg, seed % DETERMINISM_EVERY == 0);
                        if let Some(s) = &out.stats {
                            total.add(s);
                        }
                        if let Some(f) = out.failure {
                            failures.push((seed, f));
                        }
                    }
                    (total, failures)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut total = Stats::default();
    let mut failures = Vec::new();
    for (t, f) in results {
        total.add(&t);
        failures.extend(f);
    }
    failures.sort_by_key(|(s, _)| *s);
    let wall = started.elapsed().as_secs_f64();
    println!("{}", summary("small worlds", n, &total, wall));
    for (_, e) in &failures {
        println!("{e}");
    }
    let seeds: Vec<String> = failures.iter().map(|(s, _)| s.to_string()).collect();
    assert!(
        failures.is_empty(),
        "{} of {n} seeds failed (replay one with SIM_SEED=n): {}",
        failures.len(),
        seeds.join(" ")
    );
}

#[test]
fn one_large_world() {
    if std::env::var("SIM_SEED").is_ok()
        || (cfg!(debug_assertions) && env_u64("SIM_LARGE_SEED").is_none())
    {
        // Release builds only (unless asked for): it takes minutes in debug.
        return;
    }
    init_tracing();
    let seed = env_u64("SIM_LARGE_SEED").unwrap_or(1);
    let started = Instant::now();
    let out = one(seed, &tweak(SimConfig::large()), false);
    let wall = started.elapsed().as_secs_f64();
    let stats = out.stats.unwrap_or_default();
    println!("{}", summary("large world", 1, &stats, wall));
    if let Some(e) = out.failure {
        panic!("large world (SIM_LARGE_SEED={seed}):\n{e}");
    }
}

#[test]
fn a_seed_replays_exactly() {
    let mut cfg = SimConfig::small(42);
    cfg.fault_phase_ms = 60_000;
    let a = run(42, &cfg);
    let b = run(42, &cfg);
    assert_eq!(a.trace_hash, b.trace_hash);
    assert_eq!(a.stats, b.stats);
    assert_eq!(a.violations, b.violations);
    let c = run(43, &cfg);
    assert_ne!(a.trace_hash, c.trace_hash, "another seed, another run");
}

#[test]
fn a_quiet_world_converges() {
    // No faults and no revocation: plain convergence of the real engine.
    let mut cfg = SimConfig::small(5);
    cfg.faults = false;
    cfg.revoke = false;
    cfg.offices = 1;
    let report = run(5, &cfg);
    assert!(report.is_ok(), "{report}");
    assert!(report.stats.changes > 0 && report.stats.received > 0);
}

/// Seeds [`revoked_device_behind_an_office`] runs: 40 in a release build
/// (`cargo test --release -p fieldsync-sim`, some 20 s); a debug build (the
/// workspace's `cargo test`) runs about fifty times slower, so it runs a
/// sample.
const BEHIND_OFFICE_SEEDS: u64 = if cfg!(debug_assertions) { 3 } else { 40 };

/// The revoked device is served by an office relay, which learns the
/// revocation only when it next syncs with headquarters: until then it
/// accepts the device's changes beyond the revocation point and passes them
/// to its devices, which may build on them. Once it learns, it withdraws
/// them (and what depends on them) to its quarantine, as does every device
/// it tells, except what a device's own changes depend on; headquarters
/// quarantines them when they reach it. Every invariant holds.
#[test]
fn revoked_device_behind_an_office() {
    init_tracing();
    let workers = std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1)
        .clamp(1, 8) as u64;
    let mut failed: Vec<u64> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                scope.spawn(move || {
                    let mut failed = Vec::new();
                    for seed in (0..BEHIND_OFFICE_SEEDS).filter(|s| s % workers == w) {
                        let mut cfg = SimConfig::small(seed);
                        cfg.offices = 2;
                        cfg.revoke = true;
                        cfg.revoke_behind_office = true;
                        cfg.power_cuts = false;
                        let r = run(seed, &cfg);
                        if !r.is_ok() {
                            println!("{r}");
                            failed.push(seed);
                        }
                    }
                    failed
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    failed.sort_unstable();
    assert!(failed.is_empty(), "seeds {failed:?}");
}
