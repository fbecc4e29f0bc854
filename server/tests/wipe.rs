//! Lost devices at headquarters, with the `fieldsync-server` binary run as
//! a child process against a real data directory: `enroll --lease-days`
//! issues a certificate with an offline lease; `wipe` signs and stores an
//! order that a session then delivers to the device, which accepts it;
//! `devices` shows the order and its delivery.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use fieldsync_identity::{
    DeviceCertificate, DeviceId, PublicKey, Role, SecretKey, Timestamp, WipeOrder,
};
use fieldsync_protocol::{
    Authority, DEFAULT_MAX_IN_FLIGHT, Event, NodeRole, Session, SessionConfig,
};
use fieldsync_server::keys::DataDir;
use fieldsync_store::{AuditKind, NewDevice, Store, StoreKind};

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(self) -> Self {
        assert_eq!(self.code, Some(0), "failed: {}{}", self.stdout, self.stderr);
        self
    }

    fn fails(self) -> String {
        assert_eq!(self.code, Some(1), "expected failure: {}", self.stdout);
        assert!(self.stderr.starts_with("error: "), "{}", self.stderr);
        assert_eq!(self.stderr.lines().count(), 1, "{}", self.stderr);
        self.stderr
    }
}

fn server(data: &Path, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_fieldsync-server"))
        .arg("--data")
        .arg(data)
        .args(args)
        .env_remove("FIELDSYNC_SERVER_DATA")
        .env_remove("RUST_LOG")
        .output()
        .expect("cannot start fieldsync-server");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn now() -> Timestamp {
    fieldsync_server::now()
}

fn init(data: &Path) -> PublicKey {
    let run = server(data, &["init", "--name", "hq-relay-1"]).ok();
    run.stdout.lines().next().unwrap()["hq     ".len()..]
        .parse()
        .unwrap()
}

fn device_store(dir: &Path, seed: u8) -> Store {
    Store::create(
        &dir.join(format!("device-{seed}.redb")),
        NewDevice {
            seed: [seed; 32],
            name: "rome-1",
            epoch: [seed; 16],
            now: now(),
            kind: StoreKind::Device,
        },
    )
    .unwrap()
}

fn enroll(data: &Path, device: &DeviceId, out: &Path, extra: &[&str]) -> Run {
    let id = device.to_string();
    let mut args = vec![
        "enroll",
        "--device",
        &id,
        "--name",
        "R. Alvarez",
        "--office",
        "Rome",
        "--role",
        "field",
        "--out",
    ];
    args.push(out.to_str().unwrap());
    args.extend_from_slice(extra);
    server(data, &args)
}

#[test]
fn enroll_with_a_lease_issues_a_version_2_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("hq");
    let hq = init(&data);
    let leased = device_store(tmp.path(), 7).device().id();
    let plain = device_store(tmp.path(), 8).device().id();
    let out = tmp.path().join("leased.cert");
    let run = enroll(&data, &leased, &out, &["--lease-days", "14"]).ok();
    assert!(
        run.stdout.contains("offline lease 14 days"),
        "{}",
        run.stdout
    );
    let cert =
        DeviceCertificate::from_pem_like(&std::fs::read_to_string(&out).unwrap(), &hq).unwrap();
    assert_eq!(
        (cert.body().version, cert.offline_lease_days()),
        (2, Some(14))
    );
    // Without a lease: version 1, which builds before the lease read too.
    let out = tmp.path().join("plain.cert");
    let run = enroll(&data, &plain, &out, &[]).ok();
    assert!(!run.stdout.contains("lease"), "{}", run.stdout);
    let cert =
        DeviceCertificate::from_pem_like(&std::fs::read_to_string(&out).unwrap(), &hq).unwrap();
    assert_eq!((cert.body().version, cert.offline_lease_days()), (1, None));
    let devices = server(&data, &["devices", "--json"]).ok().stdout;
    let rows: serde_json::Value = serde_json::from_str(&devices).unwrap();
    let lease_of = |id: &DeviceId| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["device"] == id.to_string())
            .unwrap()["offline_lease_days"]
            .clone()
    };
    assert_eq!(lease_of(&leased), 14);
    assert!(lease_of(&plain).is_null());
    // Bad leases are refused and write nothing.
    let third = device_store(tmp.path(), 9).device().id();
    let out = tmp.path().join("third.cert");
    for bad in ["0", "4000", "-1", "many"] {
        let run = enroll(&data, &third, &out, &["--lease-days", bad]);
        // Not a number: the argument parser refuses it (exit 2).
        let code = if bad.parse::<u16>().is_ok() { 1 } else { 2 };
        assert_eq!(run.code, Some(code), "{bad}: {}", run.stderr);
        assert!(!out.exists());
    }
    let relay = SecretKey::from_seed(&[10; 32]).public();
    let id = DeviceId::from_public_key(relay).to_string();
    let err = server(
        &data,
        &[
            "enroll",
            "--device",
            &id,
            "--name",
            "office",
            "--office",
            "Rome",
            "--role",
            "relay",
            "--lease-days",
            "3",
            "--out",
        ]
        .into_iter()
        .chain([out.to_str().unwrap()])
        .collect::<Vec<_>>(),
    )
    .fails();
    assert!(err.contains("no offline lease"), "{err}");
    assert!(!out.exists());
}

/// One session between `device` and the relay store `relay`, to its end.
fn session(
    device: &Store,
    cert: &DeviceCertificate,
    relay: &Store,
    relay_cert: &DeviceCertificate,
    hq: PublicKey,
) -> Vec<Event> {
    let cfg = |role, certificate: &DeviceCertificate| SessionConfig {
        role,
        certificate: certificate.clone(),
        authority: Authority::new(hq, None),
        max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        deferred_commits: false,
    };
    let t = now();
    let mut sd = Session::new(cfg(NodeRole::Device, cert), device, relay.device().id(), t).unwrap();
    let mut sr = Session::new(
        cfg(NodeRole::Relay, relay_cert),
        relay,
        device.device().id(),
        t,
    )
    .unwrap();
    for _ in 0..100 {
        let fd: Vec<Vec<u8>> = std::iter::from_fn(|| sd.poll_transmit()).collect();
        let fr: Vec<Vec<u8>> = std::iter::from_fn(|| sr.poll_transmit()).collect();
        if fd.is_empty() && fr.is_empty() {
            return std::iter::from_fn(|| sd.poll_event()).collect();
        }
        for f in fd {
            if !sr.is_closed() {
                let _ = sr.handle_input(relay, &f, t);
            }
        }
        for f in fr {
            if !sd.is_closed() {
                let _ = sd.handle_input(device, &f, t);
            }
        }
    }
    panic!("the session does not settle");
}

#[test]
fn wipe_issues_and_stores_an_order_that_reaches_the_device() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("hq");
    let hq = init(&data);
    let device = device_store(tmp.path(), 7);
    let id = device.device().id();
    let out = tmp.path().join("rome.cert");
    enroll(&data, &id, &out, &["--lease-days", "30"]).ok();
    let cert =
        DeviceCertificate::from_pem_like(&std::fs::read_to_string(&out).unwrap(), &hq).unwrap();

    // Bad input: one line, nothing stored.
    let err = server(&data, &["wipe", "--device", "ffff"]).fails();
    assert!(err.contains("no enrolled or known device matches"), "{err}");
    let prefix = &id.to_string()[..10];
    for days in ["0", "3651"] {
        let err = server(&data, &["wipe", "--device", prefix, "--valid-days", days]).fails();
        assert!(err.contains("1 to 3650 days"), "{err}");
    }
    let err = server(&data, &["wipe", "--device", prefix, "--reason", "a\u{7}b"]).fails();
    assert!(err.contains("control characters"), "{err}");
    {
        let store = Store::open(&DataDir::new(&data).store()).unwrap();
        assert!(store.held_wipe_orders().unwrap().is_empty());
    }
    // An office relay is enrolled, but is no device to wipe.
    let office = DeviceId::from_public_key(SecretKey::from_seed(&[10; 32]).public()).to_string();
    let office_cert = tmp.path().join("office.cert");
    server(
        &data,
        &[
            "enroll",
            "--device",
            &office,
            "--name",
            "rome-office",
            "--office",
            "Rome",
            "--role",
            "relay",
            "--out",
            office_cert.to_str().unwrap(),
        ],
    )
    .ok();
    let err = server(&data, &["wipe", "--device", &office]).fails();
    assert!(err.contains("is a relay"), "{err}");

    let run = server(
        &data,
        &[
            "wipe",
            "--device",
            prefix,
            "--valid-days",
            "10",
            "--reason",
            "stolen in Naples",
        ],
    )
    .ok();
    assert!(run.stdout.starts_with("wipe order "), "{}", run.stdout);
    assert!(run.stdout.contains("revoke it too"), "{}", run.stdout);
    let text = server(&data, &["devices"]).ok().stdout;
    assert!(text.contains("wipe ordered, not delivered here"), "{text}");
    let again = server(
        &data,
        &["wipe", "--device", prefix, "--reason", "stolen in Naples"],
    )
    .ok();
    assert!(again.stdout.contains("replaces order"), "{}", again.stdout);

    // What headquarters stored: one order, signed by its root key, for the device.
    let dir = DataDir::new(&data);
    let relay = Store::open(&dir.store()).unwrap();
    let held = relay.held_wipe_orders().unwrap();
    assert_eq!(held.len(), 1);
    let order = WipeOrder::from_bytes(&held[0].1, &hq).unwrap();
    assert_eq!(order.device(), id);
    assert_eq!(order.reason(), "stolen in Naples");
    let span = order.expires_at().as_millis() - order.issued_at().as_millis();
    assert_eq!(span, 90 * 86_400_000, "the default validity is 90 days");
    let issued: Vec<_> = relay
        .audit_log()
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == AuditKind::WipeIssued)
        .collect();
    assert_eq!(issued.len(), 2);
    assert!(
        issued[1].detail.contains(&order.nonce_hex()[..8]),
        "{}",
        issued[1].detail
    );

    // The device's next session delivers it; the device accepts it.
    let relay_cert =
        fieldsync_server::keys::read_certificate(&dir.relay_certificate(), &hq).unwrap();
    assert_eq!(relay_cert.role(), Role::Relay);
    let events = session(&device, &cert, &relay, &relay_cert, hq);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::WipeOrdered { order: o } if *o == order)),
        "{events:?}"
    );
    assert_eq!(
        device.pending_wipe().unwrap().unwrap().order,
        order.to_bytes()
    );
    drop(relay);
    let text = server(&data, &["devices"]).ok().stdout;
    assert!(text.contains("wipe ordered, delivered "), "{text}");
    let rows: serde_json::Value =
        serde_json::from_str(&server(&data, &["devices", "--json"]).ok().stdout).unwrap();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["device"] == id.to_string())
        .unwrap();
    assert_eq!(row["wipe"]["nonce"], order.nonce_hex());
    assert_eq!(row["wipe"]["delivered"]["sessions"], 1);

    // Revoked afterwards: the hint changes.
    server(&data, &["revoke", prefix, "--reason", "stolen"]).ok();
    let run = server(&data, &["wipe", "--device", prefix]).ok();
    assert!(
        run.stdout.contains("the device is revoked"),
        "{}",
        run.stdout
    );
}
