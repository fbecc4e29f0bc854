//! Identifiers: [`DeviceId`], [`CaseId`], [`ActorBinding`] and [`Timestamp`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::KeyError;
use crate::keys::{PUBLIC_KEY_LEN, PublicKey};

/// Number of hex digits in the short, human form of an id (like a git short hash).
pub const SHORT_LEN: usize = 8;

/// A device is known by its public key. Its full text form is the 64 hex
/// digits of the key; [`DeviceId::short`] gives the first 8.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeviceId(PublicKey);

impl DeviceId {
    /// The device whose key this is.
    pub fn from_public_key(key: PublicKey) -> Self {
        Self(key)
    }

    /// The device's public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.0
    }

    /// The 32 key bytes.
    pub fn as_bytes(&self) -> &[u8; PUBLIC_KEY_LEN] {
        self.0.as_bytes()
    }

    /// The short human form: the first 8 hex digits.
    pub fn short(&self) -> String {
        let mut s = self.0.to_string();
        s.truncate(SHORT_LEN);
        s
    }

    /// The Automerge actor id bytes of this device at `incarnation`.
    pub fn actor(&self, incarnation: u32) -> ActorBinding {
        ActorBinding {
            device: *self,
            incarnation,
        }
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceId({})", self.short())
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl FromStr for DeviceId {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(Self).map_err(|e| match e {
            KeyError::BadText { .. } => KeyError::BadText {
                what: "device id",
                expected: "64 hex digits",
            },
            other => other,
        })
    }
}

/// Length of an actor id: the device key followed by a big-endian incarnation.
pub const ACTOR_LEN: usize = PUBLIC_KEY_LEN + 4;

/// The binding between an Automerge actor id and a device.
///
/// The actor id of a device is its 32-byte public key followed by its
/// incarnation number (4 bytes, big-endian). The incarnation is bumped when
/// a device is restored from a backup, so that Automerge sequence numbers
/// never collide. Because the key is inside the actor id, every change is
/// attributable by construction: [`ActorBinding::parse`] recovers the device
/// from any change's actor.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ActorBinding {
    /// The device.
    pub device: DeviceId,
    /// The device's incarnation.
    pub incarnation: u32,
}

impl ActorBinding {
    /// The actor id bytes.
    pub fn to_bytes(&self) -> [u8; ACTOR_LEN] {
        let mut out = [0u8; ACTOR_LEN];
        out[..PUBLIC_KEY_LEN].copy_from_slice(self.device.as_bytes());
        out[PUBLIC_KEY_LEN..].copy_from_slice(&self.incarnation.to_be_bytes());
        out
    }

    /// Recovers the device and incarnation from actor id bytes; `None` when
    /// the bytes are not a FieldSync actor id (wrong length, or not a valid key).
    pub fn parse(actor: &[u8]) -> Option<Self> {
        if actor.len() != ACTOR_LEN {
            return None;
        }
        let key = PublicKey::from_slice(&actor[..PUBLIC_KEY_LEN]).ok()?;
        let mut inc = [0u8; 4];
        inc.copy_from_slice(&actor[PUBLIC_KEY_LEN..]);
        Some(Self {
            device: DeviceId::from_public_key(key),
            incarnation: u32::from_be_bytes(inc),
        })
    }
}

/// A case id: 128 random bits, chosen by the device that creates the case.
/// Its text form is 32 hex digits; [`CaseId::short`] gives the first 8.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CaseId([u8; 16]);

impl CaseId {
    /// Wraps 16 bytes (the caller supplies randomness).
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// The 16 id bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// The short human form: the first 8 hex digits.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..SHORT_LEN / 2])
    }
}

impl fmt::Debug for CaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CaseId({})", self.short())
    }
}

impl fmt::Display for CaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl FromStr for CaseId {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0u8; 16];
        hex::decode_to_slice(s.trim(), &mut bytes).map_err(|_| KeyError::BadText {
            what: "case id",
            expected: "32 hex digits",
        })?;
        Ok(Self(bytes))
    }
}

impl Serialize for CaseId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for CaseId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            <[u8; 16]>::deserialize(d).map(Self)
        }
    }
}

/// A point in time: milliseconds since the Unix epoch, UTC.
///
/// Time is always an argument in FieldSync's libraries, never read from the
/// OS clock. The text form is RFC 3339 (`2026-11-28T15:12:11.000Z`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Timestamp(i64);

impl Timestamp {
    /// From milliseconds since the Unix epoch.
    pub const fn from_millis(ms: i64) -> Self {
        Self(ms)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(&self) -> i64 {
        self.0
    }

    /// This time plus `days` whole days (saturating).
    pub fn plus_days(&self, days: u32) -> Self {
        Self(self.0.saturating_add(i64::from(days) * 86_400_000))
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) to days since 1970-01-01.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.rem_euclid(1000);
        let secs = self.0.div_euclid(1000);
        let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
        let sod = secs.rem_euclid(86_400);
        write!(
            f,
            "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
            sod / 3600,
            (sod / 60) % 60,
            sod % 60
        )
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({self})")
    }
}

impl FromStr for Timestamp {
    type Err = KeyError;
    /// Parses `YYYY-MM-DDTHH:MM:SS[.mmm]Z`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const BAD: KeyError = KeyError::BadText {
            what: "timestamp",
            expected: "YYYY-MM-DDTHH:MM:SS[.mmm]Z",
        };
        let s = s.trim();
        let body = s.strip_suffix('Z').ok_or(BAD)?;
        let (date, time) = body.split_once('T').ok_or(BAD)?;
        let num = |t: &str, len: usize| -> Result<i64, KeyError> {
            if t.len() != len || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(BAD);
            }
            t.parse::<i64>().map_err(|_| BAD)
        };
        let mut dp = date.split('-');
        let (y, mo, d) = match (dp.next(), dp.next(), dp.next(), dp.next()) {
            (Some(y), Some(mo), Some(d), None) => (num(y, 4)?, num(mo, 2)?, num(d, 2)?),
            _ => return Err(BAD),
        };
        let (hms, frac) = match time.split_once('.') {
            Some((hms, frac)) => (hms, num(frac, 3)?),
            None => (time, 0),
        };
        let mut tp = hms.split(':');
        let (h, mi, se) = match (tp.next(), tp.next(), tp.next(), tp.next()) {
            (Some(h), Some(mi), Some(se), None) => (num(h, 2)?, num(mi, 2)?, num(se, 2)?),
            _ => return Err(BAD),
        };
        if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 59 {
            return Err(BAD);
        }
        let days = days_from_civil(y, mo as u32, d as u32);
        if civil_from_days(days) != (y, mo as u32, d as u32) {
            return Err(BAD);
        }
        Ok(Self(
            ((days * 86_400 + h * 3600 + mi * 60 + se) * 1000) + frac,
        ))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            i64::deserialize(d).map(Self)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SecretKey;
    use proptest::prelude::*;

    #[test]
    fn timestamp_text() {
        assert_eq!(
            Timestamp::from_millis(0).to_string(),
            "1970-01-01T00:00:00.000Z"
        );
        let t: Timestamp = "2026-11-28T15:12:11.250Z".parse().unwrap();
        assert_eq!(t.to_string(), "2026-11-28T15:12:11.250Z");
        assert_eq!(
            "2026-11-28T15:12:11Z"
                .parse::<Timestamp>()
                .unwrap()
                .as_millis()
                % 1000,
            0
        );
        assert!("2026-02-30T00:00:00Z".parse::<Timestamp>().is_err());
        assert!("yesterday".parse::<Timestamp>().is_err());
    }

    proptest! {
        #[test]
        fn timestamp_round_trip(ms in -62_000_000_000_000i64..250_000_000_000_000i64) {
            let t = Timestamp::from_millis(ms);
            prop_assert_eq!(t.to_string().parse::<Timestamp>().unwrap(), t);
        }
    }

    #[test]
    fn actor_binding_round_trip() {
        let device = DeviceId::from_public_key(SecretKey::from_seed(&[9; 32]).public());
        let actor = device.actor(3);
        let bytes = actor.to_bytes();
        assert_eq!(ActorBinding::parse(&bytes), Some(actor));
        assert_eq!(ActorBinding::parse(&bytes[..35]), None);
        assert_ne!(device.actor(4).to_bytes(), bytes);
    }

    #[test]
    fn ids_text() {
        let device = DeviceId::from_public_key(SecretKey::from_seed(&[9; 32]).public());
        assert_eq!(device.short().len(), 8);
        assert!(device.to_string().starts_with(&device.short()));
        assert_eq!(device.to_string().parse::<DeviceId>().unwrap(), device);
        let case = CaseId::from_bytes([0xab; 16]);
        assert_eq!(case.to_string().len(), 32);
        assert_eq!(case.short(), "abababab");
        assert_eq!(case.to_string().parse::<CaseId>().unwrap(), case);
        assert!("abc".parse::<CaseId>().is_err());
    }
}
