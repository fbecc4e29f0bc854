//! The case schema: names of its enumerations and fields, item ids, limits,
//! and the keys under which everything lives in the Automerge document.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use crate::error::CaseError;

/// Version of the document layout, stored under the root key `schema`.
pub const DOC_SCHEMA: u64 = 1;
/// Longest title, in characters.
pub const TITLE_MAX_CHARS: usize = 512;
/// Longest short text (a name, role, identifier, assignee, relation…), in characters.
pub const NAME_MAX_CHARS: usize = 256;
/// Longest free text of an item (evidence description, task text, note), in characters.
pub const TEXT_MAX_CHARS: usize = 16_384;
/// Longest summary, in characters.
pub const SUMMARY_MAX_CHARS: usize = 100_000;

/// A text that is not one of a fixed set of names.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown {what} {name:?}; valid: {valid}")]
pub struct NameError {
    /// What was being parsed ("case kind").
    pub what: &'static str,
    /// The text given.
    pub name: String,
    /// The valid names, comma separated.
    pub valid: String,
}

impl From<NameError> for CaseError {
    fn from(e: NameError) -> Self {
        CaseError::UnknownName {
            what: e.what,
            name: e.name,
            valid: e.valid,
        }
    }
}

/// Declares an enum of named values: `ALL`, `name()`, `Display`, `FromStr`
/// and serde, all with the same kebab-case names.
macro_rules! named_enum {
    (
        $(#[$meta:meta])*
        $name:ident, $what:literal {
            $( $(#[$vmeta:meta])* $variant:ident => $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stable text name.
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            fn valid_names() -> String {
                Self::ALL.iter().map(|v| v.name()).collect::<Vec<_>>().join(", ")
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let t = s.trim();
                Self::ALL
                    .iter()
                    .copied()
                    .find(|v| v.name() == t)
                    .ok_or_else(|| NameError {
                        what: $what,
                        name: s.to_owned(),
                        valid: Self::valid_names(),
                    })
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.name())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

named_enum! {
    /// The kind of a case, fixed at genesis.
    CaseKind, "case kind" {
        /// A criminal investigation.
        CriminalInvestigation => "criminal-investigation",
        /// Cultural property trafficking and repatriation.
        CulturalProperty => "cultural-property",
        /// Visa security screening (recommend refusal or revocation).
        VisaSecurity => "visa-security",
        /// A biometric encounter (BITMAP).
        BiometricEncounter => "biometric-encounter",
        /// Personnel recovery.
        PersonnelRecovery => "personnel-recovery",
        /// International visitor vetting.
        VisitorVetting => "visitor-vetting",
    }
}

named_enum! {
    /// Where a case stands.
    Status, "status" {
        /// Opened, no work started.
        Open => "open",
        /// Being worked.
        Active => "active",
        /// On hold.
        Suspended => "suspended",
        /// Handed to another office or agency.
        Referred => "referred",
        /// Done.
        Closed => "closed",
    }
}

named_enum! {
    /// How urgent a case is.
    Priority, "priority" {
        /// Low.
        Low => "low",
        /// Normal (the default).
        Normal => "normal",
        /// High.
        High => "high",
        /// Urgent.
        Urgent => "urgent",
    }
}

named_enum! {
    /// A top-level field that `case set CASE FIELD VALUE` can set.
    Field, "field" {
        /// The title (one line).
        Title => "title",
        /// The status ([`Status`] name).
        Status => "status",
        /// The priority ([`Priority`] name).
        Priority => "priority",
        /// The summary (collaborative text; setting it replaces the whole text,
        /// merged by character with concurrent edits).
        Summary => "summary",
    }
}

/// The id of a subject, evidence item or task: 64 random bits supplied by
/// the caller. Its text form (and its key in the document) is 16 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ItemId(u64);

impl ItemId {
    /// Wraps a number (the caller supplies randomness).
    pub const fn from_u64(n: u64) -> Self {
        Self(n)
    }

    /// The number.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// The short human form: the first 8 hex digits.
    pub fn short(self) -> String {
        let mut s = self.to_string();
        s.truncate(8);
        s
    }
}

impl fmt::Display for ItemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for ItemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ItemId({self})")
    }
}

/// An item id text that is not 16 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("not a valid item id {0:?}: expected 16 hex digits")]
pub struct ItemIdError(pub String);

impl FromStr for ItemId {
    type Err = ItemIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.len() != 16 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ItemIdError(s.to_owned()));
        }
        u64::from_str_radix(t, 16)
            .map(Self)
            .map_err(|_| ItemIdError(s.to_owned()))
    }
}

impl Serialize for ItemId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ItemId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Keys of the Automerge document. The layout (schema 1):
///
/// ```text
/// ROOT { schema: uint 1, title: str, status: str, priority: str, summary: text,
///        subjects:    map ItemId -> { name, role?, nationality?, identifiers: list [{kind, value}] },
///        evidence:    map ItemId -> { description, found_at?, custody: list [{at, by, action, holder?, location?}] },
///        tasks:       map ItemId -> { text, assignee?, done: bool },
///        notes:       list [{author, at, text}],
///        links:       map CaseId -> relation (str),
///        attachments: map hash -> { name, size: uint, media_type } }
/// ```
/// Times are Automerge timestamps (milliseconds); devices are 64 hex digits.
pub(crate) mod key {
    pub(crate) const SCHEMA: &str = "schema";
    pub(crate) const TITLE: &str = "title";
    pub(crate) const STATUS: &str = "status";
    pub(crate) const PRIORITY: &str = "priority";
    pub(crate) const SUMMARY: &str = "summary";
    pub(crate) const SUBJECTS: &str = "subjects";
    pub(crate) const EVIDENCE: &str = "evidence";
    pub(crate) const TASKS: &str = "tasks";
    pub(crate) const NOTES: &str = "notes";
    pub(crate) const LINKS: &str = "links";
    pub(crate) const ATTACHMENTS: &str = "attachments";

    pub(crate) const NAME: &str = "name";
    pub(crate) const ROLE: &str = "role";
    pub(crate) const NATIONALITY: &str = "nationality";
    pub(crate) const IDENTIFIERS: &str = "identifiers";
    pub(crate) const KIND: &str = "kind";
    pub(crate) const VALUE: &str = "value";

    pub(crate) const DESCRIPTION: &str = "description";
    pub(crate) const FOUND_AT: &str = "found_at";
    pub(crate) const CUSTODY: &str = "custody";
    pub(crate) const AT: &str = "at";
    pub(crate) const BY: &str = "by";
    pub(crate) const ACTION: &str = "action";
    pub(crate) const HOLDER: &str = "holder";
    pub(crate) const LOCATION: &str = "location";

    pub(crate) const TEXT: &str = "text";
    pub(crate) const ASSIGNEE: &str = "assignee";
    pub(crate) const DONE: &str = "done";

    pub(crate) const AUTHOR: &str = "author";

    pub(crate) const SIZE: &str = "size";
    pub(crate) const MEDIA_TYPE: &str = "media_type";
}

/// Subject fields that [`CaseDoc::set_subject_field`](crate::CaseDoc::set_subject_field) may set.
pub const SUBJECT_FIELDS: &[&str] = &[key::NAME, key::ROLE, key::NATIONALITY];

/// Checks a one-line text: at most `max` characters, no control characters,
/// and (unless `allow_empty`) not blank.
pub(crate) fn check_line(
    field: &'static str,
    value: &str,
    max: usize,
    allow_empty: bool,
) -> Result<(), CaseError> {
    check_len(field, value, max, allow_empty)?;
    if value.chars().any(char::is_control) {
        return Err(CaseError::InvalidValue {
            field,
            reason: "must be one line without control characters".into(),
        });
    }
    Ok(())
}

/// Checks a free text: at most `max` characters, no control characters other
/// than newline and tab, and (unless `allow_empty`) not blank.
pub(crate) fn check_text(
    field: &'static str,
    value: &str,
    max: usize,
    allow_empty: bool,
) -> Result<(), CaseError> {
    check_len(field, value, max, allow_empty)?;
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(CaseError::InvalidValue {
            field,
            reason: "must not contain control characters other than newline and tab".into(),
        });
    }
    Ok(())
}

fn check_len(
    field: &'static str,
    value: &str,
    max: usize,
    allow_empty: bool,
) -> Result<(), CaseError> {
    if !allow_empty && value.trim().is_empty() {
        return Err(CaseError::InvalidValue {
            field,
            reason: "must not be empty".into(),
        });
    }
    let n = value.chars().count();
    if n > max {
        return Err(CaseError::InvalidValue {
            field,
            reason: format!("{n} characters is longer than the limit of {max}"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in CaseKind::ALL {
            assert_eq!(k.to_string().parse::<CaseKind>().unwrap(), *k);
            let json = serde_json::to_string(k).unwrap();
            assert_eq!(json, format!("\"{k}\""));
            assert_eq!(serde_json::from_str::<CaseKind>(&json).unwrap(), *k);
            let bin = postcard::to_stdvec(k).unwrap();
            assert_eq!(postcard::from_bytes::<CaseKind>(&bin).unwrap(), *k);
        }
        for s in Status::ALL {
            assert_eq!(s.to_string().parse::<Status>().unwrap(), *s);
        }
        for p in Priority::ALL {
            assert_eq!(p.to_string().parse::<Priority>().unwrap(), *p);
        }
        for f in Field::ALL {
            assert_eq!(f.to_string().parse::<Field>().unwrap(), *f);
        }
        assert_eq!(
            "criminal-investigation".parse::<CaseKind>().unwrap(),
            CaseKind::CriminalInvestigation
        );
        assert_eq!(
            "visitor-vetting".parse::<CaseKind>().unwrap(),
            CaseKind::VisitorVetting
        );
        assert_eq!(" urgent ".parse::<Priority>().unwrap(), Priority::Urgent);
    }

    #[test]
    fn unknown_names_list_the_valid_ones() {
        let e = "smuggling".parse::<CaseKind>().unwrap_err();
        assert!(
            e.to_string()
                .contains("criminal-investigation, cultural-property"),
            "{e}"
        );
        let e = "done".parse::<Status>().unwrap_err();
        assert!(
            e.to_string()
                .contains("open, active, suspended, referred, closed"),
            "{e}"
        );
        let e = "owner".parse::<Field>().unwrap_err();
        assert!(
            e.to_string().contains("title, status, priority, summary"),
            "{e}"
        );
        assert!(serde_json::from_str::<Priority>("\"meh\"").is_err());
    }

    #[test]
    fn item_ids() {
        let id = ItemId::from_u64(0xab);
        assert_eq!(id.to_string(), "00000000000000ab");
        assert_eq!(id.short(), "00000000");
        assert_eq!("00000000000000AB".parse::<ItemId>().unwrap(), id);
        assert!("ab".parse::<ItemId>().is_err());
        assert!("+000000000000000".parse::<ItemId>().is_err());
        assert!("00000000000000zz".parse::<ItemId>().is_err());
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"00000000000000ab\"");
        assert_eq!(
            serde_json::from_str::<ItemId>("\"00000000000000ab\"").unwrap(),
            id
        );
    }

    #[test]
    fn text_checks() {
        assert!(check_line("title", "ok", 10, false).is_ok());
        assert!(check_line("title", "  ", 10, false).is_err());
        assert!(check_line("title", "", 10, true).is_ok());
        assert!(check_line("title", "a\nb", 10, false).is_err());
        assert!(check_line("title", "ééééé", 5, false).is_ok());
        assert!(check_line("title", "éééééé", 5, false).is_err());
        assert!(check_text("note", "a\nb\tc", 10, false).is_ok());
        assert!(check_text("note", "a\u{7}", 10, false).is_err());
    }
}
