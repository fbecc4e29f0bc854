//! What a run reports: counters, violated invariants, and the trace hash.

use std::fmt;

use crate::net::Millis;

/// Which invariant (or part of the run) a violation concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Check {
    /// The world could not be set up.
    Setup,
    /// A session failed where nothing justified it.
    Session,
    /// A store operation failed where nothing justified it.
    Store,
    /// An acknowledged local change, or a store, did not survive a crash.
    Durability,
    /// After healing, nodes disagree on what they hold.
    Convergence,
    /// A change covered by a relay's receipt is not at headquarters.
    Receipts,
    /// An unauthorized change was applied, or an authorized one quarantined.
    Authorization,
    /// A node holds a case it may not read.
    Compartments,
    /// The run did not settle (event budget or heal rounds exhausted).
    Liveness,
}

/// One violated invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Virtual time when it was seen.
    pub at: Millis,
    /// Which invariant.
    pub check: Check,
    /// What happened, for a person.
    pub detail: String,
}

/// Counters of one run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Nodes (headquarters, offices, devices).
    pub nodes: usize,
    /// Office relays.
    pub offices: usize,
    /// Devices (field and liaison).
    pub devices: usize,
    /// Liaison devices.
    pub liaisons: usize,
    /// Cases created.
    pub cases: usize,
    /// Changes authored and acknowledged by their device's store.
    pub changes: usize,
    /// Local edits that failed because power was cut during them.
    pub edits_lost_to_power: usize,
    /// Frames delivered.
    pub frames: u64,
    /// Bytes delivered.
    pub bytes: u64,
    /// Sessions opened (two per connection).
    pub sessions: u64,
    /// Connections dropped mid-stream.
    pub link_drops: u64,
    /// Partitions (a node's link down for a while).
    pub partitions: u64,
    /// Node crashes (store reopened from its durable image).
    pub crashes: u64,
    /// Crashes that kept a torn subset of unsynced writes.
    pub torn_crashes: u64,
    /// Power cuts armed at a future sync.
    pub power_cuts_armed: u64,
    /// Power cuts that struck during an operation.
    pub power_cuts: u64,
    /// Extra (duplicated) connections opened by a device already connected.
    pub duplicate_sessions: u64,
    /// Connection attempts of the revoked device that were refused.
    pub refused: u64,
    /// Changes stored from peers.
    pub received: u64,
    /// Changes received that were already held.
    pub duplicates: u64,
    /// Changes quarantined (at any node).
    pub quarantined: u64,
    /// Quarantined changes headquarters released.
    pub released: u64,
    /// Headquarters receipts an office carried down to a device.
    pub relayed: u64,
    /// Times a field device moved to another relay.
    pub moves: u64,
    /// Whether a device was revoked.
    pub revoked: bool,
    /// Heal rounds run.
    pub heal_rounds: usize,
    /// Virtual time at the end of the run.
    pub virtual_ms: Millis,
    /// Events processed.
    pub events: u64,
}

impl Stats {
    /// Adds another run's counters to these.
    pub fn add(&mut self, o: &Stats) {
        self.nodes += o.nodes;
        self.offices += o.offices;
        self.devices += o.devices;
        self.liaisons += o.liaisons;
        self.cases += o.cases;
        self.changes += o.changes;
        self.edits_lost_to_power += o.edits_lost_to_power;
        self.frames += o.frames;
        self.bytes += o.bytes;
        self.sessions += o.sessions;
        self.link_drops += o.link_drops;
        self.partitions += o.partitions;
        self.crashes += o.crashes;
        self.torn_crashes += o.torn_crashes;
        self.power_cuts_armed += o.power_cuts_armed;
        self.power_cuts += o.power_cuts;
        self.duplicate_sessions += o.duplicate_sessions;
        self.refused += o.refused;
        self.received += o.received;
        self.duplicates += o.duplicates;
        self.quarantined += o.quarantined;
        self.released += o.released;
        self.relayed += o.relayed;
        self.moves += o.moves;
        self.revoked |= o.revoked;
        self.heal_rounds += o.heal_rounds;
        self.virtual_ms += o.virtual_ms;
        self.events += o.events;
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "nodes {} (offices {}, devices {}, liaisons {}), cases {}, changes {}, frames {}, bytes {}, \
             sessions {}, link drops {}, partitions {}, crashes {} (torn {}), power cuts {}/{} armed, \
             duplicate sessions {}, refused {}, received {} (+{} duplicates), quarantined {} (released {}), \
             relayed receipts {}, moves {}, heal rounds {}, virtual {:.1} s, events {}",
            self.nodes,
            self.offices,
            self.devices,
            self.liaisons,
            self.cases,
            self.changes,
            self.frames,
            self.bytes,
            self.sessions,
            self.link_drops,
            self.partitions,
            self.crashes,
            self.torn_crashes,
            self.power_cuts,
            self.power_cuts_armed,
            self.duplicate_sessions,
            self.refused,
            self.received,
            self.duplicates,
            self.quarantined,
            self.released,
            self.relayed,
            self.moves,
            self.heal_rounds,
            self.virtual_ms as f64 / 1000.0,
            self.events,
        )
    }
}

/// The outcome of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Counters.
    pub stats: Stats,
    /// Violated invariants, in the order seen.
    pub violations: Vec<Violation>,
    /// BLAKE3 over every delivered frame and every session event, in order.
    pub trace_hash: [u8; 32],
}

impl Report {
    /// Whether every invariant held.
    pub fn is_ok(&self) -> bool {
        self.violations.is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hash: String = self.trace_hash[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        writeln!(f, "SIM_SEED={} trace {hash}…", self.seed)?;
        writeln!(f, "  {}", self.stats)?;
        const SHOWN: usize = 25;
        for v in self.violations.iter().take(SHOWN) {
            writeln!(f, "  at {:>9} ms {:?}: {}", v.at, v.check, v.detail)?;
        }
        if self.violations.len() > SHOWN {
            writeln!(f, "  … and {} more", self.violations.len() - SHOWN)?;
        }
        Ok(())
    }
}
