//! The performance suite behind `fieldsync-bench`: every scenario runs
//! beside its baseline in the same run and returns a [`Section`] of the
//! report (a table, the figures by name, and the goals with whether they
//! were met). The report is printed, and written as JSON and markdown.
//!
//! Scenarios return errors rather than panicking: a scenario that fails is
//! reported as failed and the others still run.

pub mod footprint;
pub mod hostile;
pub mod impair;
pub mod ingest;
pub mod perdoc;
pub mod reconnect;
pub mod relay_memory;
pub mod report;
pub mod subscribers;
pub mod world;

pub use report::{Goal, Report, Section};

/// How much of each scenario to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// The reduced set (CI, under two minutes): smaller D, fewer devices,
    /// shorter transfers. Quick figures are for "it still works", not for
    /// the goals.
    pub quick: bool,
}

impl Options {
    /// `full` when not quick, else `quick`.
    pub fn pick<T>(&self, full: T, quick: T) -> T {
        if self.quick { quick } else { full }
    }
}

/// Resident memory of a process (`/proc/<pid>/status`, `VmRSS`), in KiB;
/// `None` where `/proc` is not there.
pub fn rss_kib(pid: u32) -> Option<u64> {
    proc_status_kib(pid, "VmRSS:")
}

/// Peak resident memory of a process (`VmHWM`), in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    proc_status_kib(pid, "VmHWM:")
}

fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// The value at quantile `q` (0..=1) of `sorted`, nearest rank.
pub fn percentile<T: Copy + Default>(sorted: &[T], q: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}
