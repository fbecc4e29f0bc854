//! Lost-device protection in the store, on real redb files: the offline
//! lease (version-1 and version-2 certificates, its boundaries, a clock set
//! back, persistence across a restart) and wipe orders (a device accepts an
//! order once and keeps it pending across a restart; a relay holds the
//! latest order per device and records its delivery).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fieldsync_identity::{
    CERTIFICATE_VERSION, CertificateBody, Compartment, DeviceCertificate, HqRoot,
    MIN_CERTIFICATE_VERSION, Role, SecretKey, Timestamp, WipeOrder,
};
use fieldsync_store::{
    AuditKind, CLOCK_TOLERANCE_MS, LeaseError, LeaseState, NewDevice, Store, StoreKind,
    WipeAcceptance,
};

const T0: i64 = 1_790_000_000_000;
const DAY: i64 = 86_400_000;

fn at(ms: i64) -> Timestamp {
    Timestamp::from_millis(T0 + ms)
}

fn hq() -> HqRoot {
    HqRoot::from_secret(SecretKey::from_seed(&[200; 32]))
}

fn create(path: &std::path::Path, seed: u8, kind: StoreKind) -> Store {
    Store::create(
        path,
        NewDevice {
            seed: [seed; 32],
            name: "lost-device-test",
            epoch: [seed; 16],
            now: at(0),
            kind,
        },
    )
    .unwrap()
}

fn cert(hq: &HqRoot, store: &Store, version: u8, lease: Option<u16>) -> DeviceCertificate {
    let general: Compartment = "general".parse().unwrap();
    hq.issue_with_lease(
        CertificateBody {
            version,
            serial: 1,
            issuer: hq.public(),
            device: store.device().id(),
            name: "R. Alvarez".into(),
            office: "rome".into(),
            role: Role::Field,
            read: vec![general.clone()],
            write: vec![general],
            not_before: at(0),
            not_after: at(365 * DAY),
        },
        lease,
    )
    .unwrap()
}

fn kinds(store: &Store) -> Vec<AuditKind> {
    store.audit_log().unwrap().iter().map(|e| e.kind).collect()
}

#[test]
fn a_version_1_certificate_has_no_lease() {
    let dir = tempfile::tempdir().unwrap();
    let store = create(&dir.path().join("s.redb"), 1, StoreKind::Device);
    let c = cert(&hq(), &store, MIN_CERTIFICATE_VERSION, None);
    let reread = DeviceCertificate::from_bytes(&c.to_bytes(), &hq().public()).unwrap();
    assert_eq!(reread.offline_lease_days(), None);
    let years_later = at(3000 * DAY);
    assert_eq!(
        store.check_lease(&reread, years_later).unwrap(),
        LeaseState::Unleased
    );
    // Without a lease nothing is recorded.
    assert_eq!(store.latest_time_seen().unwrap(), None);
    // Version 2 without a lease is the same.
    let c2 = cert(&hq(), &store, CERTIFICATE_VERSION, None);
    assert_eq!(
        store.check_lease(&c2, years_later).unwrap(),
        LeaseState::Unleased
    );
}

#[test]
fn the_lease_runs_from_the_last_contact_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let store = create(&path, 1, StoreKind::Device);
    let c = cert(&hq(), &store, CERTIFICATE_VERSION, Some(7));
    assert_eq!(c.offline_lease_days(), Some(7));
    // Never in contact: the lease runs from the certificate's start.
    assert!(matches!(
        store.check_lease(&c, at(7 * DAY)).unwrap(),
        LeaseState::Ok {
            remaining_ms: 0,
            ..
        }
    ));
    let err = store.check_lease(&c, at(7 * DAY + 1)).unwrap_err();
    assert!(matches!(err, LeaseError::Expired { lease_days: 7, .. }));
    // A contact reopens it for another seven days.
    store.record_relay_contact(at(9 * DAY)).unwrap();
    assert_eq!(store.last_relay_contact().unwrap(), Some(at(9 * DAY)));
    let state = store.check_lease(&c, at(10 * DAY)).unwrap();
    assert_eq!(
        state,
        LeaseState::Ok {
            lease_days: 7,
            last_contact: at(9 * DAY),
            expires_at: at(16 * DAY),
            remaining_ms: 6 * DAY
        }
    );
    drop(store);
    let store = Store::open(&path).unwrap();
    assert_eq!(store.last_relay_contact().unwrap(), Some(at(9 * DAY)));
    assert_eq!(store.latest_time_seen().unwrap(), Some(at(10 * DAY)));
    assert!(store.check_lease(&c, at(16 * DAY)).is_ok());
    let err = store.check_lease(&c, at(16 * DAY + 1)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no contact with a relay for 7 days (lease: 7 days): case data stays closed until the next sync"
    );
    let err = store.check_lease(&c, at(40 * DAY)).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("no contact with a relay for 31 days")
    );
    // lease_state reads without recording.
    let before = store.latest_time_seen().unwrap();
    assert!(!store.lease_state(&c, at(50 * DAY)).unwrap().is_open());
    assert_eq!(store.latest_time_seen().unwrap(), before);
}

#[test]
fn a_clock_set_back_is_noticed_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let store = create(&path, 1, StoreKind::Device);
    let c = cert(&hq(), &store, CERTIFICATE_VERSION, Some(5));
    store.record_relay_contact(at(DAY)).unwrap();
    // Used on day 4, within the lease; then the process is gone.
    assert!(store.check_lease(&c, at(4 * DAY)).is_ok());
    drop(store);
    let store = Store::open(&path).unwrap();
    // Day 8 in truth (the lease ran out on day 6): the clock set back to
    // day 2 is caught.
    let err = store.check_lease(&c, at(2 * DAY)).unwrap_err();
    assert!(
        matches!(err, LeaseError::ClockSetBack { lease_days: 5, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("behind the latest time"), "{err}");
    // Set back just under the latest time seen: elapsed counts up to it.
    assert!(
        store
            .check_lease(&c, at(4 * DAY - CLOCK_TOLERANCE_MS))
            .is_ok()
    );
    assert!(
        store
            .check_lease(&c, at(4 * DAY - CLOCK_TOLERANCE_MS - 1))
            .is_err()
    );
    // Moving forward again works; contact re-anchors the clock.
    assert!(store.check_lease(&c, at(5 * DAY)).is_ok());
    store.record_relay_contact(at(3 * DAY)).unwrap();
    assert!(store.check_lease(&c, at(3 * DAY)).is_ok());
}

fn order(hq: &HqRoot, store: &Store, nonce: u8, issued: Timestamp) -> WipeOrder {
    hq.order_wipe(
        store.device().id(),
        [nonce; 16],
        issued,
        30,
        "stolen at Fiumicino",
    )
    .unwrap()
}

#[test]
fn a_device_accepts_an_order_once_and_keeps_it_pending() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let store = create(&path, 1, StoreKind::Device);
    let hq = hq();
    let o = order(&hq, &store, 1, at(DAY));
    assert_eq!(store.pending_wipe().unwrap(), None);
    assert!(!store.wipe_nonce_spent(&o.nonce()).unwrap());
    assert_eq!(
        store.accept_wipe_order(&o, at(2 * DAY)).unwrap(),
        WipeAcceptance::Accepted
    );
    drop(store);
    // The device stopped before it could obey: the order is still pending.
    let store = Store::open(&path).unwrap();
    let pending = store.pending_wipe().unwrap().unwrap();
    assert_eq!(pending.order, o.to_bytes());
    assert_eq!(pending.accepted_at, at(2 * DAY));
    assert!(store.wipe_nonce_spent(&o.nonce()).unwrap());
    // The same order again: still pending, obey it; nothing written.
    let audit = store.audit_log().unwrap().len();
    assert_eq!(
        store.accept_wipe_order(&o, at(3 * DAY)).unwrap(),
        WipeAcceptance::StillPending
    );
    // Another order bearing a handled nonce: a replay.
    let replay = hq
        .order_wipe(store.device().id(), [1; 16], at(2 * DAY), 10, "again")
        .unwrap();
    assert_eq!(
        store.accept_wipe_order(&replay, at(3 * DAY)).unwrap(),
        WipeAcceptance::Replayed
    );
    assert_eq!(store.audit_log().unwrap().len(), audit);
    assert_eq!(store.pending_wipe().unwrap().unwrap().order, o.to_bytes());
    store
        .record_ignored_wipe_order(
            "wipe order 01010101 was handled already: a replay",
            at(3 * DAY),
        )
        .unwrap();
    let log = store.audit_log().unwrap();
    let last = log.last().unwrap();
    assert_eq!(last.kind, AuditKind::WipeIgnored);
    assert!(last.detail.contains("replay"), "{}", last.detail);
    assert!(kinds(&store).contains(&AuditKind::WipeOrdered));
}

#[test]
fn a_relay_holds_the_latest_order_per_device_and_records_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.redb");
    let relay = create(&path, 9, StoreKind::Relay);
    let hq = hq();
    let dir2 = tempfile::tempdir().unwrap();
    let device_a = create(&dir2.path().join("a.redb"), 1, StoreKind::Device);
    let device_b = create(&dir2.path().join("b.redb"), 2, StoreKind::Device);
    let upstream = hq.public();
    let from = fieldsync_identity::DeviceId::from_public_key(upstream);
    let first = order(&hq, &device_a, 1, at(DAY));
    let newer = order(&hq, &device_a, 2, at(2 * DAY));
    assert!(relay.hold_wipe_order(&newer, &from, at(3 * DAY)).unwrap());
    // The same order again, or an older one, changes nothing.
    assert!(!relay.hold_wipe_order(&newer, &from, at(3 * DAY)).unwrap());
    assert!(!relay.hold_wipe_order(&first, &from, at(3 * DAY)).unwrap());
    let other = order(&hq, &device_b, 3, at(DAY));
    relay.issue_wipe_order(&other, at(DAY)).unwrap();
    assert!(relay.holds_wipe_order(&device_a.device().id()).unwrap());
    assert_eq!(
        relay.held_wipe_order(&device_a.device().id()).unwrap(),
        Some(newer.to_bytes())
    );
    let mut all = relay.held_wipe_orders().unwrap();
    all.sort();
    let mut expected = vec![
        (device_a.device().id(), newer.to_bytes()),
        (device_b.device().id(), other.to_bytes()),
    ];
    expected.sort();
    assert_eq!(all, expected);
    // Settings with a similar prefix are not orders.
    relay.set_setting("wipe-order-note", "x").unwrap();
    assert_eq!(relay.held_wipe_orders().unwrap().len(), 2);
    // Deliveries: the first is audited, later ones only counted.
    assert_eq!(relay.wipe_delivery(&device_a.device().id()).unwrap(), None);
    relay.record_wipe_delivery(&newer, at(4 * DAY)).unwrap();
    relay.record_wipe_delivery(&newer, at(5 * DAY)).unwrap();
    relay.flush().unwrap();
    drop(relay);
    let relay = Store::open(&path).unwrap();
    let d = relay
        .wipe_delivery(&device_a.device().id())
        .unwrap()
        .unwrap();
    assert_eq!(
        (d.nonce, d.first_at, d.last_at, d.sessions),
        ([2; 16], at(4 * DAY), at(5 * DAY), 2)
    );
    assert_eq!(relay.wipe_deliveries().unwrap().len(), 1);
    let k = kinds(&relay);
    for kind in [
        AuditKind::WipeHeld,
        AuditKind::WipeIssued,
        AuditKind::WipeDelivered,
    ] {
        assert_eq!(
            k.iter().filter(|x| **x == kind).count(),
            1,
            "{kind:?} in {k:?}"
        );
    }
}
