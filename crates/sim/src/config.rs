//! The shape of a simulated world.

use crate::net::Millis;
use crate::rng::SimRng;

/// How big a world is, what happens in it, and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimConfig {
    /// Field and liaison devices.
    pub devices: usize,
    /// How many of the devices are liaisons (read, never write).
    pub liaisons: usize,
    /// Office relays, each with an upstream to headquarters.
    pub offices: usize,
    /// Compartments in use (1 to 4).
    pub compartments: usize,
    /// Edits per device, at least and at most.
    pub edits: (u64, u64),
    /// Length of the phase with edits and faults.
    pub fault_phase_ms: Millis,
    /// Whether faults strike (link drops, partitions, crashes, power cuts,
    /// duplicated sessions). Without them every device stays connected.
    pub faults: bool,
    /// Mean time between faults, roughly.
    pub fault_every_ms: Millis,
    /// Whether power is cut at a future sync now and then (the operation
    /// under way fails, and the node crashes).
    pub power_cuts: bool,
    /// Whether crashes keep a torn subset of unsynced writes.
    pub torn_writes: bool,
    /// Whether headquarters revokes a device midway.
    pub revoke: bool,
    /// Whether the revoked device may be one served by an office relay
    /// (otherwise it is one headquarters serves directly). An office learns
    /// the revocation only when it next syncs with headquarters.
    pub revoke_behind_office: bool,
    /// Whether a liaison tries to edit now and then (it must be quarantined).
    pub liaison_edits: bool,
    /// Whether headquarters releases some quarantined liaison changes
    /// midway (they must then reach every node that may read the case).
    pub releases: bool,
    /// Heal rounds at most before the run is declared not converging.
    pub max_heal_rounds: usize,
    /// Events at most before the run is declared livelocked.
    pub max_events: u64,
}

impl SimConfig {
    /// A small world whose size and settings are drawn from `seed`:
    /// 4–8 devices (0–2 liaisons), 0–2 office relays, 2–4 compartments,
    /// 10–40 edits each over 80–200 virtual seconds, every fault enabled.
    pub fn small(seed: u64) -> Self {
        let mut r = SimRng::new(seed ^ 0x5151_5eed_c0f1_9000);
        let devices = usize::try_from(r.range(4, 8)).unwrap_or(4);
        Self {
            devices,
            liaisons: r.index(3),
            offices: if r.chance(1, 3) { r.index(2) + 1 } else { 0 },
            compartments: usize::try_from(r.range(2, 4)).unwrap_or(2),
            edits: (10, 40),
            fault_phase_ms: r.range(80, 200) * 1000,
            faults: true,
            fault_every_ms: r.range(3, 15) * 1000,
            power_cuts: true,
            torn_writes: true,
            revoke: r.chance(3, 4),
            revoke_behind_office: false,
            liaison_edits: true,
            releases: true,
            max_heal_rounds: 8,
            max_events: 2_000_000,
        }
    }

    /// A larger world: 50 devices (3 liaisons), headquarters only, 3
    /// compartments, 5–15 edits each over 300 virtual seconds, every fault.
    pub fn large() -> Self {
        Self {
            devices: 50,
            liaisons: 3,
            offices: 0,
            compartments: 3,
            edits: (5, 15),
            fault_phase_ms: 300_000,
            faults: true,
            fault_every_ms: 2_000,
            power_cuts: true,
            torn_writes: true,
            revoke: true,
            revoke_behind_office: false,
            liaison_edits: true,
            releases: true,
            max_heal_rounds: 8,
            max_events: 20_000_000,
        }
    }
}
