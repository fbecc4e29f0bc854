//! The offline lease: how long a device may keep case data open without
//! contact with a relay.
//!
//! A device certificate may carry a lease of N days
//! ([`DeviceCertificate::offline_lease_days`]). The store keeps two times in
//! `meta-1`: `last-contact`, when a relay last accepted this device in a
//! session ([`Store::record_relay_contact`]), and `latest-time`, the latest
//! time this device has seen (every lease check moves it forward). The lease
//! runs from the last contact (or from the certificate's start, if that is
//! later: a new enrollment starts a new lease) and ends N days after it.
//!
//! Setting the clock back does not extend a lease: elapsed time is counted
//! up to the latest time seen, and a clock more than
//! [`CLOCK_TOLERANCE_MS`] behind it closes case data like an expired lease
//! until the clock is right again or the device syncs. What this cannot
//! catch is a clock that is stopped from the start (kept at the latest time
//! seen at every use): time is the device's own.

use fieldsync_identity::{DeviceCertificate, Timestamp};
use redb::ReadableTable;
use serde::Serialize;
use thiserror::Error;

use crate::error::StoreError;
use crate::store::{Store, fixed, read_meta, write_meta};
use crate::tables::META;

/// How far the clock may be behind the latest time seen (NTP steps, a
/// second device session's clock) before it counts as set back.
pub const CLOCK_TOLERANCE_MS: i64 = 5 * 60 * 1000;

const DAY_MS: i64 = 86_400_000;
const LAST_CONTACT: &str = "last-contact";
const LATEST_TIME: &str = "latest-time";

/// Where a device stands with its offline lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum LeaseState {
    /// The certificate carries no lease: case data is always open.
    Unleased,
    /// Within the lease.
    Ok {
        /// The lease, in days.
        lease_days: u16,
        /// The contact the lease runs from.
        last_contact: Timestamp,
        /// When case data closes unless the device syncs before.
        expires_at: Timestamp,
        /// Milliseconds left.
        remaining_ms: i64,
    },
    /// The lease has run out: case data stays closed until the next sync.
    Expired {
        /// The lease, in days.
        lease_days: u16,
        /// The contact the lease ran from.
        last_contact: Timestamp,
        /// When it ran out.
        since: Timestamp,
        /// Whole days since the last contact.
        days_without_contact: u32,
    },
    /// The clock is behind the latest time this device has seen by more
    /// than [`CLOCK_TOLERANCE_MS`]: it was set back. Case data stays closed
    /// until the clock is right or the device syncs.
    ClockSetBack {
        /// The lease, in days.
        lease_days: u16,
        /// The latest time seen.
        latest_seen: Timestamp,
        /// The clock now.
        now: Timestamp,
    },
}

impl LeaseState {
    /// Computes the state of a lease of `lease_days` (none: unleased) for
    /// a certificate valid from `cert_start`, given the last contact, the
    /// latest time seen and the clock.
    pub fn evaluate(
        lease_days: Option<u16>,
        cert_start: Timestamp,
        last_contact: Option<Timestamp>,
        latest_seen: Option<Timestamp>,
        now: Timestamp,
    ) -> Self {
        let Some(lease_days) = lease_days else {
            return LeaseState::Unleased;
        };
        if let Some(seen) = latest_seen
            && now.as_millis() < seen.as_millis().saturating_sub(CLOCK_TOLERANCE_MS)
        {
            return LeaseState::ClockSetBack {
                lease_days,
                latest_seen: seen,
                now,
            };
        }
        let last_contact = last_contact.map_or(cert_start, |c| c.max(cert_start));
        let effective = latest_seen.map_or(now, |seen| seen.max(now));
        let expires_at = last_contact.plus_days(u32::from(lease_days));
        let remaining_ms = expires_at.as_millis().saturating_sub(effective.as_millis());
        if remaining_ms >= 0 {
            return LeaseState::Ok {
                lease_days,
                last_contact,
                expires_at,
                remaining_ms,
            };
        }
        let elapsed = effective
            .as_millis()
            .saturating_sub(last_contact.as_millis());
        LeaseState::Expired {
            lease_days,
            last_contact,
            since: expires_at,
            days_without_contact: u32::try_from(elapsed / DAY_MS).unwrap_or(u32::MAX),
        }
    }

    /// Whether case data may be opened.
    pub fn is_open(&self) -> bool {
        matches!(self, LeaseState::Unleased | LeaseState::Ok { .. })
    }
}

/// Case data may not be opened: the offline lease says so.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// No contact with a relay for longer than the lease.
    #[error(
        "no contact with a relay for {days_without_contact} days (lease: {lease_days} days): case data stays closed until the next sync"
    )]
    Expired {
        /// Whole days since the last contact.
        days_without_contact: u32,
        /// The lease, in days.
        lease_days: u16,
        /// The last contact.
        last_contact: Timestamp,
    },
    /// The clock was set back behind the latest time this device has seen.
    #[error(
        "this machine's clock ({now}) is behind the latest time this device has seen ({latest_seen}): with an offline lease of {lease_days} days, case data stays closed until the clock is right or the next sync"
    )]
    ClockSetBack {
        /// The clock now.
        now: Timestamp,
        /// The latest time seen.
        latest_seen: Timestamp,
        /// The lease, in days.
        lease_days: u16,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn read_time(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    store: &Store,
    key: &str,
) -> Result<Option<Timestamp>, StoreError> {
    read_meta(meta, store.seal.as_ref(), key)?
        .map(|v| fixed::<8>(&v, key).map(|b| Timestamp::from_millis(i64::from_le_bytes(b))))
        .transpose()
}

impl Store {
    /// When a relay last accepted this device in a session (`None`: never).
    pub fn last_relay_contact(&self) -> Result<Option<Timestamp>, StoreError> {
        let txn = self.read()?;
        let meta = txn
            .open_table(META)
            .map_err(|e| StoreError::db("read last contact")(e.into()))?;
        read_time(&meta, self, LAST_CONTACT)
    }

    /// The latest time this device has seen (`None`: no lease check or
    /// contact recorded one yet).
    pub fn latest_time_seen(&self) -> Result<Option<Timestamp>, StoreError> {
        let txn = self.read()?;
        let meta = txn
            .open_table(META)
            .map_err(|e| StoreError::db("read latest time")(e.into()))?;
        read_time(&meta, self, LATEST_TIME)
    }

    /// Records contact with a relay at `now`: the lease runs from here, and
    /// the latest time seen is set to `now` (contact re-anchors the clock
    /// check). The sync session calls this once a relay has accepted this
    /// device (once per session, durably: a one-shot sync may have nothing
    /// else to commit before the process ends).
    pub fn record_relay_contact(&self, now: Timestamp) -> Result<(), StoreError> {
        self.write("record relay contact", |txn| {
            let mut meta = txn
                .open_table(META)
                .map_err(|e| StoreError::db("record relay contact")(e.into()))?;
            let bytes = now.as_millis().to_le_bytes();
            write_meta(&mut meta, self.seal.as_ref(), LAST_CONTACT, &bytes)?;
            write_meta(&mut meta, self.seal.as_ref(), LATEST_TIME, &bytes)
        })
    }

    /// The lease of `cert` (this device's certificate) at `now`, without
    /// recording anything.
    pub fn lease_state(
        &self,
        cert: &DeviceCertificate,
        now: Timestamp,
    ) -> Result<LeaseState, StoreError> {
        let txn = self.read()?;
        let meta = txn
            .open_table(META)
            .map_err(|e| StoreError::db("read lease")(e.into()))?;
        Ok(LeaseState::evaluate(
            cert.offline_lease_days(),
            cert.body().not_before,
            read_time(&meta, self, LAST_CONTACT)?,
            read_time(&meta, self, LATEST_TIME)?,
            now,
        ))
    }

    /// Checks the lease of `cert` before case data is opened: `Ok` with the
    /// state when it may be ([`LeaseState::Unleased`] or
    /// [`LeaseState::Ok`]), otherwise [`LeaseError::Expired`] or
    /// [`LeaseError::ClockSetBack`]. With a lease, records `now` as the
    /// latest time seen when it is later (durably, so that a clock set back
    /// afterwards is noticed even if the process is killed).
    pub fn check_lease(
        &self,
        cert: &DeviceCertificate,
        now: Timestamp,
    ) -> Result<LeaseState, LeaseError> {
        let state = self.lease_state(cert, now)?;
        if cert.offline_lease_days().is_some()
            && self.latest_time_seen()?.is_none_or(|seen| now > seen)
        {
            self.write("record latest time", |txn| {
                let mut meta = txn
                    .open_table(META)
                    .map_err(|e| StoreError::db("record latest time")(e.into()))?;
                write_meta(
                    &mut meta,
                    self.seal.as_ref(),
                    LATEST_TIME,
                    &now.as_millis().to_le_bytes(),
                )
            })?;
        }
        match state {
            LeaseState::Unleased | LeaseState::Ok { .. } => Ok(state),
            LeaseState::Expired {
                lease_days,
                last_contact,
                days_without_contact,
                ..
            } => Err(LeaseError::Expired {
                days_without_contact,
                lease_days,
                last_contact,
            }),
            LeaseState::ClockSetBack {
                lease_days,
                latest_seen,
                now,
            } => Err(LeaseError::ClockSetBack {
                now,
                latest_seen,
                lease_days,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp::from_millis(1_795_500_000_000);

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_millis(T0.as_millis() + ms)
    }

    #[test]
    fn no_lease_is_always_open() {
        let s = LeaseState::evaluate(None, T0, None, Some(at(DAY_MS * 900)), T0);
        assert_eq!(s, LeaseState::Unleased);
        assert!(s.is_open());
    }

    #[test]
    fn boundaries() {
        let lease = Some(7);
        let contact = Some(at(DAY_MS));
        let end = at(8 * DAY_MS);
        let ok = LeaseState::evaluate(lease, T0, contact, None, end);
        assert_eq!(
            ok,
            LeaseState::Ok {
                lease_days: 7,
                last_contact: at(DAY_MS),
                expires_at: end,
                remaining_ms: 0
            }
        );
        let past = LeaseState::evaluate(lease, T0, contact, None, at(8 * DAY_MS + 1));
        assert_eq!(
            past,
            LeaseState::Expired {
                lease_days: 7,
                last_contact: at(DAY_MS),
                since: end,
                days_without_contact: 7
            }
        );
        assert!(!past.is_open());
        // Never in contact: the lease runs from the certificate's start.
        assert!(LeaseState::evaluate(lease, T0, None, None, at(7 * DAY_MS)).is_open());
        assert!(!LeaseState::evaluate(lease, T0, None, None, at(7 * DAY_MS + 1)).is_open());
        // A contact before a newer certificate counts from the certificate.
        let fresh = LeaseState::evaluate(lease, at(30 * DAY_MS), Some(T0), None, at(36 * DAY_MS));
        assert!(fresh.is_open(), "{fresh:?}");
    }

    #[test]
    fn a_clock_set_back_does_not_extend_the_lease() {
        let lease = Some(3);
        let contact = Some(T0);
        // Seen 10 days after contact; the clock now says day 1 (within
        // tolerance of nothing): set back.
        let s = LeaseState::evaluate(lease, T0, contact, Some(at(10 * DAY_MS)), at(DAY_MS));
        assert!(matches!(s, LeaseState::ClockSetBack { .. }), "{s:?}");
        // A few minutes back is tolerated, but elapsed time counts up to
        // the latest time seen.
        let seen = at(3 * DAY_MS + 60_000);
        let s = LeaseState::evaluate(lease, T0, contact, Some(seen), at(3 * DAY_MS));
        assert!(
            matches!(s, LeaseState::Expired { since, .. } if since == at(3 * DAY_MS)),
            "{s:?}"
        );
        let s = LeaseState::evaluate(
            lease,
            T0,
            contact,
            Some(at(DAY_MS)),
            at(DAY_MS - CLOCK_TOLERANCE_MS),
        );
        assert!(
            matches!(s, LeaseState::Ok { remaining_ms, .. } if remaining_ms == 2 * DAY_MS),
            "{s:?}"
        );
        let s = LeaseState::evaluate(
            lease,
            T0,
            contact,
            Some(at(DAY_MS)),
            at(DAY_MS - CLOCK_TOLERANCE_MS - 1),
        );
        assert!(matches!(s, LeaseState::ClockSetBack { .. }), "{s:?}");
    }
}
