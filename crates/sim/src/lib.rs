//! FieldSync's deterministic simulator: the real sync engine
//! (`fieldsync-protocol`'s [`Session`](fieldsync_protocol::Session)) and the
//! real store (`fieldsync-store` on redb) for many nodes at once, driven from
//! one seed through partitions, link drops, crashes, power cuts and a
//! revocation, then healed and checked.
//!
//! What it is: a test bench in the manner of quinn-proto's. One seeded RNG
//! ([`SimRng`]) decides everything; time is virtual (milliseconds); every
//! collection iterated is a `BTreeMap` or a `Vec`. Each node's store sits on
//! a [`CrashBackend`] that keeps a live and a durable image, so a crash
//! reopens the store on what a disk would have kept. A run never panics on
//! purpose: whatever goes wrong ends up in the [`Report`]'s violations.
//!
//! What it is not: it runs no tokio, opens no socket, reads no OS clock or
//! OS RNG, and spawns no thread. It does not model packet loss inside a
//! stream (QUIC retransmits; a lost connection is modelled as a drop), nor
//! attachments, nor the TLS handshake.
//!
//! ```
//! use fieldsync_sim::{SimConfig, run};
//! let mut cfg = SimConfig::small(7);
//! cfg.devices = 3;
//! cfg.faults = false; // edits and a revocation only
//! cfg.edits = (3, 5);
//! cfg.fault_phase_ms = 30_000;
//! let report = run(7, &cfg);
//! assert!(report.is_ok(), "{report}");
//! assert_eq!(report.trace_hash, run(7, &cfg).trace_hash); // a seed replays exactly
//! ```
#![forbid(unsafe_code)]

mod actions;
mod check;
mod config;
pub mod crash_backend;
mod heal;
mod net;
mod node;
mod report;
pub mod rng;
mod world;

pub use config::SimConfig;
pub use crash_backend::{CrashBackend, CrashKind};
pub use report::{Check, Report, Stats, Violation};
pub use rng::SimRng;

use world::World;

/// Runs the world of `seed` shaped by `cfg`: the fault phase, healing, and
/// the invariant checks.
pub fn run(seed: u64, cfg: &SimConfig) -> Report {
    let mut world = match World::new(seed, cfg.clone()) {
        Ok(w) => w,
        Err(e) => {
            return Report {
                seed,
                stats: Stats::default(),
                violations: vec![Violation {
                    at: 0,
                    check: Check::Setup,
                    detail: e,
                }],
                trace_hash: [0; 32],
            };
        }
    };
    let end = cfg.fault_phase_ms;
    if world.run_until(Some(end)) {
        // Check even when healing did not converge: the checks say where.
        world.heal();
        world.check();
    }
    world.stats.virtual_ms = world.now;
    Report {
        seed,
        stats: world.stats.clone(),
        violations: world.violations.clone(),
        trace_hash: world.trace_hash(),
    }
}
