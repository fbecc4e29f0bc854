//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use fieldsync_case::{CaseDoc, CaseKind, Genesis, new_genesis};
use fieldsync_identity::{ActorBinding, CaseId, DeviceId, SecretKey, Timestamp};

/// A device: its key and id.
pub(crate) struct Device {
    pub(crate) key: SecretKey,
    pub(crate) id: DeviceId,
}

impl Device {
    pub(crate) fn new(n: u8) -> Self {
        let key = SecretKey::from_seed(&[n; 32]);
        let id = DeviceId::from_public_key(key.public());
        Self { key, id }
    }

    pub(crate) fn actor(&self) -> ActorBinding {
        self.id.actor(0)
    }
}

pub(crate) fn case_id() -> CaseId {
    CaseId::from_bytes([0xca; 16])
}

pub(crate) fn t(secs: i64) -> Timestamp {
    Timestamp::from_millis(1_764_000_000_000 + secs * 1000)
}

pub(crate) fn genesis(creator: &Device) -> Genesis {
    new_genesis(
        case_id(),
        CaseKind::CriminalInvestigation,
        "Madrid attaché",
        "eu.crim",
        creator.id,
        t(0),
    )
    .unwrap()
    .value()
    .clone()
}

/// A freshly initialized case made by `creator`, committed; returns the doc
/// and its first change.
pub(crate) fn base(creator: &Device, title: &str) -> (CaseDoc, automerge::Change) {
    let mut doc = CaseDoc::new(creator.actor());
    doc.init(title).unwrap();
    let change = doc.commit(t(1), "open case").unwrap().unwrap();
    (doc, change)
}

/// A fresh doc for `device` holding `changes`.
pub(crate) fn replica(device: &Device, changes: &[automerge::Change]) -> CaseDoc {
    let mut doc = CaseDoc::new(device.actor());
    doc.apply(changes.to_vec()).unwrap();
    doc
}
