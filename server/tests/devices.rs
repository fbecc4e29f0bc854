//! `devices` shows the devices found signing two different changes as one
//! (equivocation), even when this relay knows them by nothing else, and
//! says what to do about them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fieldsync_case::{CaseDoc, CaseKind, new_genesis, payload_for_local};
use fieldsync_identity::{CaseId, DeviceId, SecretKey, Timestamp, sign};
use fieldsync_server::admin::{AdminContext, AdminRequest, execute};
use fieldsync_server::keys::DataDir;
use fieldsync_store::{Ingest, NewDevice, Store, StoreKind};

fn t(s: i64) -> Timestamp {
    Timestamp::from_millis(1_790_000_000_000 + s * 1000)
}

fn empty_relay() -> Store {
    Store::create_in_memory(NewDevice {
        seed: [9; 32],
        name: "relay",
        epoch: [9; 16],
        now: t(0),
        kind: StoreKind::Relay,
    })
    .unwrap()
}

/// A relay store holding the first change of a case and, from its author,
/// two different changes both numbered 2.
fn relay_with_an_equivocation(author: &SecretKey, case: CaseId) -> Store {
    let relay = empty_relay();
    let id = DeviceId::from_public_key(author.public());
    let genesis = new_genesis(
        case,
        CaseKind::CriminalInvestigation,
        "Madrid attaché",
        "general",
        id,
        t(1),
    )
    .unwrap();
    let mut doc = CaseDoc::new(id.actor(0));
    doc.init("Two stories").unwrap();
    let first = doc.commit(t(1), "create").unwrap().unwrap();
    let mut other = CaseDoc::new(id.actor(0));
    other.apply(vec![first.clone()]).unwrap();
    doc.add_note(id, t(2), "version one").unwrap();
    let one = doc.commit(t(2), "note").unwrap().unwrap();
    other.add_note(id, t(2), "version two").unwrap();
    let two = other.commit(t(2), "note").unwrap().unwrap();
    let changes = [first, one, two]
        .into_iter()
        .map(|c| sign(payload_for_local(case, c.seq(), c), author).unwrap())
        .collect();
    let report = relay
        .ingest(
            Ingest {
                cases: vec![(sign(genesis, author).unwrap(), changes)],
                ..Ingest::default()
            },
            t(3),
        )
        .unwrap();
    assert_eq!((report.stored, report.quarantined), (1, 2));
    relay
}

#[test]
fn devices_show_an_equivocating_device_and_what_to_do() {
    let author = SecretKey::from_seed(&[4; 32]);
    let device = DeviceId::from_public_key(author.public());
    let case = CaseId::from_bytes([0x5e; 16]);
    let relay = relay_with_an_equivocation(&author, case);
    let dir = tempfile::tempdir().unwrap();
    let hq = SecretKey::from_seed(&[1; 32]).public();
    let ctx = AdminContext::new(&relay, DataDir::new(dir.path()), hq, None);

    let json = execute(&ctx, &AdminRequest::Devices { json: true })
        .unwrap()
        .output;
    let rows: serde_json::Value = serde_json::from_str(&json).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{json}");
    assert_eq!(rows[0]["device"], device.to_string());
    assert_eq!(rows[0]["enrolled"], false);
    let e = &rows[0]["equivocations"];
    assert_eq!(e.as_array().unwrap().len(), 1, "{json}");
    assert_eq!(e[0]["case"], case.to_string());
    assert_eq!(e[0]["seq"], 2);
    assert_eq!(e[0]["changes"].as_array().unwrap().len(), 2);

    let text = execute(&ctx, &AdminRequest::Devices { json: false })
        .unwrap()
        .output;
    let line = text
        .lines()
        .find(|l| l.starts_with(&device.short()))
        .unwrap_or_else(|| panic!("no row for the device:\n{text}"));
    assert!(line.contains("EQUIVOCATED ×1"), "{text}");
    assert!(
        text.contains(&format!(
            "{} signed 2 different changes as its change 2 to case {}",
            device.short(),
            &case.to_string()[..8]
        )),
        "{text}"
    );
    assert!(text.contains("fieldsync-server revoke DEVICE"), "{text}");
}

#[test]
fn devices_without_equivocations_say_nothing_of_them() {
    let relay = empty_relay();
    let dir = tempfile::tempdir().unwrap();
    let hq = SecretKey::from_seed(&[1; 32]).public();
    let ctx = AdminContext::new(&relay, DataDir::new(dir.path()), hq, None);
    let text = execute(&ctx, &AdminRequest::Devices { json: false })
        .unwrap()
        .output;
    assert!(text.starts_with("no devices yet"), "{text}");
    assert!(
        !text.contains("EQUIVOCATED") && !text.contains("revoke"),
        "{text}"
    );
}
