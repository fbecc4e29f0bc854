//! The vocabulary of access: [`Compartment`] names a set of cases and
//! [`Role`] says what a device is for. Certificates grant access in these terms.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{NameError, excerpt};

/// Longest compartment name, in characters.
const COMPARTMENT_MAX: usize = 64;

/// A compartment: a named set of cases (`visa-screening`, `io-east.rome`).
/// Certificates grant reading and writing per compartment.
///
/// Valid names are 1 to 64 characters of `a-z`, `0-9`, `.`, `_` and `-`,
/// starting with a letter or digit; they are checked on construction and on
/// deserialization.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Compartment(String);

impl Compartment {
    /// Checks and wraps a compartment name.
    pub fn new(name: &str) -> Result<Self, NameError> {
        let bad = |reason| NameError::BadCompartment {
            got: excerpt(name),
            reason,
        };
        let Some(first) = name.bytes().next() else {
            return Err(bad("it is empty"));
        };
        if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
            return Err(bad("it does not start with a-z or 0-9"));
        }
        let allowed = |b: u8| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-');
        if !name.bytes().all(allowed) {
            return Err(bad("it contains a character that is not allowed"));
        }
        if name.len() > COMPARTMENT_MAX {
            return Err(bad("it is longer than 64 characters"));
        }
        Ok(Self(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Compartment {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for Compartment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Compartment {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Compartment {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::new(&s).map_err(serde::de::Error::custom)
    }
}

/// What a device is for. The role bounds what its write set means: only
/// roles that [author changes](Role::can_author_changes) may write.
///
/// The binary encoding of a certificate stores the variant's position, so
/// new roles go at the end.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A field investigator's laptop or handheld.
    Field,
    /// A supervisor's device: edits cases and releases quarantined changes.
    Supervisor,
    /// A liaison (for example the ambassador's office): reads, never writes.
    Liaison,
    /// A relay (headquarters or an attaché office): stores and forwards
    /// others' signed changes, authors none.
    Relay,
}

impl Role {
    /// Every role, in order.
    pub const ALL: [Role; 4] = [Role::Field, Role::Supervisor, Role::Liaison, Role::Relay];

    /// The role's name, as in text and JSON (`"field"`, `"supervisor"`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Field => "field",
            Role::Supervisor => "supervisor",
            Role::Liaison => "liaison",
            Role::Relay => "relay",
        }
    }

    /// Whether a device of this role may sign changes of its own (field and supervisor).
    pub const fn can_author_changes(self) -> bool {
        matches!(self, Role::Field | Role::Supervisor)
    }

    /// Whether a device of this role may release quarantined changes (supervisor only).
    pub const fn can_release_quarantine(self) -> bool {
        matches!(self, Role::Supervisor)
    }
}

impl FromStr for Role {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| NameError::UnknownRole { got: excerpt(s) })
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::IntoDeserializer;
    use serde::de::value::{Error as ValueError, StrDeserializer};

    #[test]
    fn compartment_names() {
        for good in [
            "visa-screening",
            "io-east.rome",
            "a",
            "9_x",
            &"z".repeat(64),
        ] {
            assert_eq!(good.parse::<Compartment>().unwrap().as_str(), good);
        }
        let reason = |s: &str| match Compartment::new(s) {
            Err(NameError::BadCompartment { reason, .. }) => reason,
            other => panic!("{s:?} was accepted: {other:?}"),
        };
        assert_eq!(reason(""), "it is empty");
        assert!(reason("-lead").contains("start"));
        assert!(reason(".hidden").contains("start"));
        assert!(reason("Visa").contains("start"));
        assert!(reason("visa screening").contains("not allowed"));
        assert!(reason("visa/rome").contains("not allowed"));
        assert!(reason("vísa").contains("not allowed"));
        assert!(reason(&"z".repeat(65)).contains("64"));
        let msg = Compartment::new("Bad Name").unwrap_err().to_string();
        assert!(
            msg.contains("\"Bad Name\"") && msg.contains("a-z, 0-9"),
            "{msg}"
        );
        // Untrusted input is shortened in messages.
        assert!(
            Compartment::new(&"X".repeat(10_000))
                .unwrap_err()
                .to_string()
                .len()
                < 300
        );
    }

    #[test]
    fn compartment_serde_validates() {
        let c = Compartment::new("io-west.mexico").unwrap();
        let bytes = postcard::to_stdvec(&c).unwrap();
        assert_eq!(postcard::from_bytes::<Compartment>(&bytes).unwrap(), c);
        let bad = postcard::to_stdvec("IO West").unwrap();
        assert!(postcard::from_bytes::<Compartment>(&bad).is_err());
        let de: StrDeserializer<'_, ValueError> = "io west".into_deserializer();
        assert!(Compartment::deserialize(de).is_err());
        assert!(Compartment::new("a").unwrap() < Compartment::new("b").unwrap());
    }

    #[test]
    fn role_names_and_rights() {
        for role in Role::ALL {
            assert_eq!(role.to_string().parse::<Role>().unwrap(), role);
            let de: StrDeserializer<'_, ValueError> = role.as_str().into_deserializer();
            assert_eq!(Role::deserialize(de).unwrap(), role);
        }
        assert_eq!(Role::Liaison.to_string(), "liaison");
        let msg = "Admin".parse::<Role>().unwrap_err().to_string();
        assert!(msg.contains("field, supervisor, liaison, relay"), "{msg}");
        let authors: Vec<Role> = Role::ALL
            .into_iter()
            .filter(|r| r.can_author_changes())
            .collect();
        assert_eq!(authors, [Role::Field, Role::Supervisor]);
        let releasers: Vec<Role> = Role::ALL
            .into_iter()
            .filter(|r| r.can_release_quarantine())
            .collect();
        assert_eq!(releasers, [Role::Supervisor]);
    }
}
