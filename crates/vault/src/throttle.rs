//! Slowing down repeated wrong passphrases.
//!
//! Failed passphrase attempts are counted in a small file beside the key
//! header (`fieldsync.key.attempts`); key files, which nobody guesses, are
//! not throttled. The count goes up, durably, *before* each
//! attempt is tried and back to zero after a success, so killing the
//! process during an attempt does not hide it. After
//! [`Throttle::free_attempts`] failures in a row, each further attempt first
//! waits [`Throttle::wait_before`]: `first_wait`, doubling with each failure,
//! up to `max_wait`.
//!
//! This slows guessing through the agent only. Whoever copies the files can
//! guess offline at the cost of Argon2id alone: the parameters of
//! [`KdfParams::DEFAULT`](crate::KdfParams::DEFAULT) are what protects a
//! stolen store, together with the passphrase's strength.

use std::path::Path;
use std::time::Duration;

use crate::error::VaultError;
use crate::files;

/// How failed unlock attempts are slowed down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttle {
    /// Failures in a row that cost nothing more.
    pub free_attempts: u32,
    /// The wait before the first attempt past the free ones.
    pub first_wait: Duration,
    /// The longest wait.
    pub max_wait: Duration,
}

impl Default for Throttle {
    /// Three free attempts, then 2 s, 4 s, 8 s … up to 5 minutes.
    fn default() -> Self {
        Self {
            free_attempts: 3,
            first_wait: Duration::from_secs(2),
            max_wait: Duration::from_secs(300),
        }
    }
}

impl Throttle {
    /// How long an attempt waits before it is tried, after `failures`
    /// failed attempts in a row.
    pub fn wait_before(&self, failures: u32) -> Duration {
        let Some(over) = failures.checked_sub(self.free_attempts) else {
            return Duration::ZERO;
        };
        let factor = 1u32.checked_shl(over.min(31)).unwrap_or(u32::MAX);
        self.first_wait
            .checked_mul(factor)
            .map_or(self.max_wait, |w| w.min(self.max_wait))
    }
}

/// Reads the failure count at `path` (0 when the file is absent). A file
/// that does not parse counts as `unreadable_as` failures.
pub(crate) fn read_failures(path: &Path, unreadable_as: u32) -> Result<u32, VaultError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text.trim().parse().unwrap_or(unreadable_as)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(VaultError::io("read", path)(e)),
    }
}

/// Writes the failure count durably (0 removes the file).
pub(crate) fn write_failures(path: &Path, failures: u32) -> Result<(), VaultError> {
    if failures == 0 {
        return files::remove_durably(path);
    }
    files::write_durably(path, format!("{failures}\n").as_bytes())
}

/// A duration for people: `2 s`, `4 min 16 s`.
pub(crate) fn human(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 60, s % 60) {
        (0, 0) => format!("{} ms", d.as_millis()),
        (0, s) => format!("{s} s"),
        (m, 0) => format!("{m} min"),
        (m, s) => format!("{m} min {s} s"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn waits_grow_exponentially_and_stop_at_the_cap() {
        let t = Throttle::default();
        let waits: Vec<u64> = (0..14).map(|n| t.wait_before(n).as_secs()).collect();
        assert_eq!(
            waits,
            [0, 0, 0, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]
        );
        assert_eq!(t.wait_before(u32::MAX), Duration::from_secs(300));
        let none = Throttle {
            free_attempts: 0,
            first_wait: Duration::from_millis(10),
            max_wait: Duration::from_millis(35),
        };
        assert_eq!(none.wait_before(0), Duration::from_millis(10));
        assert_eq!(none.wait_before(2), Duration::from_millis(35));
    }

    #[test]
    fn the_count_survives_in_its_file_and_zero_removes_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("attempts");
        assert_eq!(read_failures(&path, 3).unwrap(), 0);
        write_failures(&path, 4).unwrap();
        assert_eq!(read_failures(&path, 3).unwrap(), 4);
        std::fs::write(&path, "garbage").unwrap();
        assert_eq!(read_failures(&path, 3).unwrap(), 3);
        write_failures(&path, 0).unwrap();
        assert!(!path.exists());
        assert_eq!(human(Duration::from_secs(256)), "4 min 16 s");
        assert_eq!(human(Duration::from_secs(2)), "2 s");
    }
}
