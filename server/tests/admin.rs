//! The `fieldsync-server` binary's administrative commands, run as a child
//! process against a real data directory: init, enroll, revoke, devices,
//! the case views, the quarantine, and the same commands through the
//! control socket of a running server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use fieldsync_case::{
    CaseDoc, CaseKind, Genesis, VerifiedChange, VerifiedGenesis, decode_change, encode_change,
    new_genesis, payload_for_local, verify_genesis,
};
use fieldsync_identity::{
    CaseId, DeviceCertificate, DeviceId, PublicKey, RevocationList, Role, SecretKey, Timestamp,
    decode_signed, encode_signed, sign,
};
use fieldsync_server::keys::DataDir;
use fieldsync_store::{
    Cursor, Ingest, NewCase, NewDevice, PeerRecord, QuarantineEntry, Store, StoreKind,
};
use fieldsync_view::{DeviceNames, Format};

/// A finished server command.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(self) -> Self {
        assert_eq!(
            self.code,
            Some(0),
            "command failed:\nstdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// Exit code 1 and exactly one line on stderr, starting `error: `.
    fn fails(self) -> Self {
        assert_eq!(
            self.code,
            Some(1),
            "expected failure:\nstdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        assert!(
            self.stderr.starts_with("error: "),
            "stderr: {}",
            self.stderr
        );
        assert_eq!(self.stderr.lines().count(), 1, "stderr: {}", self.stderr);
        self
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {}", self.stdout))
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

/// Runs `init` in `data`; returns headquarters' public key.
fn init(data: &Path) -> PublicKey {
    let run = server(data, &["init", "--name", "hq-relay-1"]).ok();
    let line = run.stdout.lines().next().unwrap();
    line.strip_prefix("hq     ")
        .unwrap_or_else(|| panic!("first line: {line}"))
        .parse()
        .unwrap()
}

/// A device store in `dir` (its id is what `fieldsync-agent id` shows).
fn device_store(dir: &Path, seed: u8, name: &str) -> Store {
    Store::create(
        &dir.join(format!("{name}.redb")),
        NewDevice {
            seed: [seed; 32],
            name,
            epoch: [seed; 16],
            now: now(),
            kind: StoreKind::Device,
        },
    )
    .unwrap()
}

fn new_case(store: &Store, n: u8, title: &str) -> CaseId {
    store
        .create_case(
            &NewCase {
                id: CaseId::from_bytes([n; 16]),
                kind: CaseKind::CulturalProperty,
                office: "rome",
                compartment: "general",
                title,
            },
            now(),
        )
        .unwrap()
}

fn note(store: &Store, case: &CaseId, text: &str) {
    let me = store.device().id();
    let t = now();
    store
        .edit_case(case, t, "add note", |d| d.add_note(me, t, text))
        .unwrap()
        .unwrap();
}

/// What a sync session from `device` to `relay` stores: the device's whole
/// log with its cursor, and the device's certificate as a peer record.
fn sync_into(relay: &Store, device: &Store, cert: Option<&DeviceCertificate>) {
    let batch = device.read_log(0, 10_000, 64 << 20, |_| true).unwrap();
    assert!(batch.at_end);
    let mut cases: BTreeMap<CaseId, (VerifiedGenesis, Vec<VerifiedChange>)> = BTreeMap::new();
    for (case, g) in &batch.geneses {
        let g = verify_genesis(decode_signed::<Genesis>(g).unwrap()).unwrap();
        cases.insert(*case, (g, Vec::new()));
    }
    for e in &batch.entries {
        let c = decode_change(&e.envelope).unwrap().verify().unwrap();
        cases.get_mut(&e.case).unwrap().1.push(c);
    }
    let id = device.device().id();
    relay
        .ingest(
            Ingest {
                cases: cases.into_values().collect(),
                peer_cursor: Some((
                    id,
                    Cursor {
                        epoch: device.epoch().unwrap(),
                        seq: batch.next,
                    },
                )),
                peers: cert
                    .map(|c| {
                        vec![(
                            id,
                            PeerRecord {
                                certificate: c.to_bytes(),
                                last_contact: now(),
                                carried_by: None,
                            },
                        )]
                    })
                    .unwrap_or_default(),
                ..Ingest::default()
            },
            now(),
        )
        .unwrap();
}

fn enroll(data: &Path, device: &DeviceId, name: &str, role: &str, out: &Path) -> Run {
    server(
        data,
        &[
            "enroll",
            "--device",
            &device.to_string(),
            "--name",
            name,
            "--office",
            "Rome",
            "--role",
            role,
            "--out",
            out.to_str().unwrap(),
        ],
    )
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn init_prints_the_hq_key_and_refuses_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("hq");
    let hq = init(&data);
    let dir = DataDir::new(&data);
    let cert = fieldsync_server::keys::read_certificate(&dir.relay_certificate(), &hq).unwrap();
    assert_eq!(cert.role(), Role::Relay);
    assert_eq!(cert.office(), "headquarters");
    assert_eq!(cert.body().read, ["general".parse().unwrap()]);
    assert_eq!(cert.body().write, cert.body().read);
    cert.check_valid_at(now()).unwrap();
    #[cfg(unix)]
    {
        assert_eq!(mode(&dir.hq_key()), 0o600);
        assert_eq!(mode(&data), 0o700);
    }
    let key = std::fs::read(dir.hq_key()).unwrap();

    let id = server(&data, &["id", "--json"]).ok().json();
    assert_eq!(id["hq"], hq.to_string());
    assert_eq!(id["relay"], cert.device().to_string());
    assert_eq!(id["name"], "hq-relay-1");
    assert_eq!(id["headquarters"], true);
    let text = server(&data, &["id"]).ok().stdout;
    assert!(text.contains(&cert.device().to_string()), "{text}");

    {
        // The store holds headquarters' empty signed revocation list, and not its key.
        let store = Store::open(&dir.store()).unwrap();
        let list = RevocationList::from_bytes(&store.revocations().unwrap().unwrap(), &hq).unwrap();
        assert_eq!((list.sequence(), list.entries().len()), (0, 0));
        assert_eq!(store.device().id(), cert.device());
        assert_eq!(store.kind(), StoreKind::Relay);
        let raw = std::fs::read(dir.store()).unwrap();
        let seed = hex::decode(String::from_utf8(key.clone()).unwrap().trim()).unwrap();
        assert!(
            !raw.windows(32).any(|w| w == seed.as_slice()),
            "the HQ root key is in the store"
        );
    }

    let err = server(&data, &["init", "--name", "again"]).fails().stderr;
    assert!(err.contains("already holds a FieldSync server"), "{err}");
    assert_eq!(std::fs::read(dir.hq_key()).unwrap(), key, "the key changed");
    server(
        &data,
        &["init", "--name", "x", "--compartments", "Bad Name"],
    )
    .fails();

    let empty = tmp.path().join("empty");
    let err = server(&empty, &["cases"]).fails().stderr;
    assert!(err.contains("fieldsync-server init"), "{err}");
}

#[test]
fn enroll_writes_a_certificate_and_bad_input_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("hq");
    let hq = init(&data);
    let device = device_store(tmp.path(), 7, "rome-1").device().id();
    let out = tmp.path().join("rome-1.cert");
    let run = server(
        &data,
        &[
            "enroll",
            "--device",
            &device.to_string(),
            "--name",
            "R. Alvarez",
            "--office",
            "Rome",
            "--role",
            "field",
            "--read",
            "general,visa-screening",
            "--write",
            "general",
            "--days",
            "30",
            "--out",
            out.to_str().unwrap(),
        ],
    )
    .ok();
    assert!(
        run.stdout
            .starts_with(&format!("enrolled {}", device.short())),
        "{}",
        run.stdout
    );
    let cert =
        DeviceCertificate::from_pem_like(&std::fs::read_to_string(&out).unwrap(), &hq).unwrap();
    assert_eq!(cert.device(), device);
    assert_eq!(
        (cert.name(), cert.office(), cert.role()),
        ("R. Alvarez", "Rome", Role::Field)
    );
    let c = |s: &str| s.parse().unwrap();
    assert_eq!(cert.body().read, [c("general"), c("visa-screening")]);
    assert_eq!(cert.body().write, [c("general")]);
    assert_eq!(cert.serial(), 2, "the relay's own certificate is serial 1");
    let b = cert.body();
    let hour = 3_600_000;
    assert_eq!(
        b.not_after.as_millis() - b.not_before.as_millis(),
        30 * 24 * hour + hour
    );
    cert.check_valid_at(now()).unwrap();

    let devices = || server(&data, &["devices", "--json"]).ok().json();
    let before = devices();
    assert_eq!(before.as_array().unwrap().len(), 1);
    assert_eq!(before[0]["device"], device.to_string());
    assert_eq!(before[0]["name"], "R. Alvarez");
    assert_eq!(before[0]["enrolled"], true);
    assert_eq!(before[0]["last_contact"], serde_json::Value::Null);
    let text = server(&data, &["devices"]).ok().stdout;
    let row = text.lines().nth(1).unwrap();
    assert!(
        row.starts_with(&device.short()) && row.contains("R. Alvarez"),
        "{text}"
    );
    assert!(row.contains("never") && row.contains("active"), "{text}");

    // Refusals: one line, exit 1, no file, no enrollment, no serial spent.
    let other = device_store(tmp.path(), 8, "rome-2").device().id();
    let bad = tmp.path().join("bad.cert");
    let base = |role: &str| {
        vec![
            "enroll".to_owned(),
            "--device".into(),
            other.to_string(),
            "--name".into(),
            "B".into(),
            "--office".into(),
            "Rome".into(),
            "--role".into(),
            role.into(),
            "--out".into(),
            bad.to_str().unwrap().into(),
        ]
    };
    let refuse = |extra: &[&str], role: &str, expect: &str| {
        let mut args = base(role);
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let err = server(&data, &args).fails().stderr;
        assert!(err.contains(expect), "{args:?}: {err}");
        assert!(!bad.exists());
    };
    refuse(&[], "boss", "unknown role \"boss\"");
    refuse(
        &["--read", "general", "--write", "visa"],
        "field",
        "without read access",
    );
    refuse(&["--write", "general"], "liaison", "liaison reads only");
    refuse(
        &["--read", "Visa Screening"],
        "field",
        "invalid compartment name",
    );
    refuse(&["--days", "0"], "field", "--days");
    let mut args = base("field");
    args[2] = "abc".into();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert!(server(&data, &args).fails().stderr.contains("device id"));
    let err = enroll(&data, &other, "B", "field", &out).fails().stderr;
    assert!(err.contains("exists already"), "{err}");
    assert_eq!(
        devices(),
        before,
        "a refused enrollment changed the devices"
    );
    assert_eq!(
        DeviceCertificate::from_pem_like(&std::fs::read_to_string(&out).unwrap(), &hq).unwrap(),
        cert,
        "the existing file was overwritten"
    );

    // A liaison reads only: its write set defaults to nothing.
    enroll(&data, &other, "Embassy", "liaison", &bad).ok();
    let liaison =
        DeviceCertificate::from_pem_like(&std::fs::read_to_string(&bad).unwrap(), &hq).unwrap();
    assert_eq!(liaison.serial(), 3);
    assert!(liaison.body().write.is_empty());
    assert_eq!(liaison.body().read, [c("general")]);
    assert_eq!(devices().as_array().unwrap().len(), 2);
}

#[test]
fn revoke_records_what_headquarters_holds() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("hq");
    let hq = init(&data);
    let dir = DataDir::new(&data);
    let rome = device_store(tmp.path(), 7, "rome-1");
    let id = rome.device().id();
    let cert_path = tmp.path().join("rome.cert");
    enroll(&data, &id, "R. Alvarez", "field", &cert_path).ok();
    let cert = fieldsync_server::keys::read_certificate(&cert_path, &hq).unwrap();
    let case = new_case(&rome, 1, "Looted stele");
    note(&rome, &case, "seen at the port");
    note(&rome, &case, "crate opened");
    {
        let relay = Store::open(&dir.store()).unwrap();
        sync_into(&relay, &rome, Some(&cert));
    }
    let held = rome.log_head().unwrap();
    assert_eq!(held, 3);
    // Written after the sync: beyond what headquarters holds.
    note(&rome, &case, "offline note");

    let row = &server(&data, &["devices", "--json"]).ok().json()[0];
    assert_eq!(row["held_through"], held);
    assert_ne!(row["last_contact"], serde_json::Value::Null);

    let err = server(&data, &["revoke", "ffff"]).fails().stderr;
    assert!(
        err.contains("no enrolled or known device matches 'ffff'"),
        "{err}"
    );
    let run = server(
        &data,
        &[
            "revoke",
            &id.short()[..5],
            "--reason",
            "laptop stolen in Rome",
        ],
    )
    .ok();
    assert!(
        run.stdout.contains("counter 3 of incarnation 0"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("R. Alvarez"), "{}", run.stdout);

    let store = Store::open(&dir.store()).unwrap();
    let list = RevocationList::from_bytes(&store.revocations().unwrap().unwrap(), &hq).unwrap();
    assert_eq!(list.sequence(), 1);
    let entry = list.is_revoked(&id).unwrap();
    assert_eq!(entry.reason, "laptop stolen in Rome");
    assert_eq!(entry.accepted_through(0), Some(held));
    assert_eq!(entry.accepted_through(1), None);
    drop(store);

    let err = server(&data, &["revoke", &id.to_string()]).fails().stderr;
    assert!(err.contains("already revoked"), "{err}");
    let text = server(&data, &["devices"]).ok().stdout;
    assert!(text.contains("revoked 20"), "{text}");
    let json = server(&data, &["devices", "--json"]).ok().json();
    assert_eq!(json[0]["revoked"]["reason"], "laptop stolen in Rome");
    // A revoked key gets no new certificate.
    let err = enroll(
        &data,
        &id,
        "R. Alvarez",
        "field",
        &tmp.path().join("again.cert"),
    )
    .fails()
    .stderr;
    assert!(err.contains("revoked for good"), "{err}");
}

#[test]
fn revoke_accepts_what_reached_headquarters_through_an_office() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("hq");
    let hq = init(&data);
    let dir = DataDir::new(&data);
    let rome = device_store(tmp.path(), 7, "rome-1");
    let id = rome.device().id();
    let cert_path = tmp.path().join("rome.cert");
    enroll(&data, &id, "R. Alvarez", "field", &cert_path).ok();
    let cert = fieldsync_server::keys::read_certificate(&cert_path, &hq).unwrap();
    let case = new_case(&rome, 1, "Looted stele");
    note(&rome, &case, "seen at the port");
    {
        let relay = Store::open(&dir.store()).unwrap();
        sync_into(&relay, &rome, Some(&cert));
    }
    // Two more notes reach headquarters through an office (whose cursor
    // into the device's log headquarters never sees), a third does not.
    note(&rome, &case, "crate opened");
    note(&rome, &case, "crate resealed");
    {
        let relay = Store::open(&dir.store()).unwrap();
        let batch = rome.read_log(2, 10_000, 64 << 20, |_| true).unwrap();
        let genesis = verify_genesis(
            decode_signed::<Genesis>(&rome.case_genesis(&case).unwrap().unwrap()).unwrap(),
        )
        .unwrap();
        let changes = batch
            .entries
            .iter()
            .map(|e| decode_change(&e.envelope).unwrap().verify().unwrap())
            .collect();
        let office = DeviceId::from_public_key(SecretKey::from_seed(&[90; 32]).public());
        relay
            .ingest(
                Ingest {
                    cases: vec![(genesis, changes)],
                    peer_cursor: Some((
                        office,
                        Cursor {
                            epoch: [90; 16],
                            seq: 2,
                        },
                    )),
                    ..Ingest::default()
                },
                now(),
            )
            .unwrap();
        assert_eq!(relay.peer_cursor(&id).unwrap().unwrap().seq, 2);
    }
    note(&rome, &case, "offline note");

    let run = server(&data, &["revoke", &id.to_string()]).ok();
    assert!(
        run.stdout.contains("counter 4 of incarnation 0")
            && run.stdout.contains("holds its log through 2"),
        "{}",
        run.stdout
    );
    let store = Store::open(&dir.store()).unwrap();
    let list = RevocationList::from_bytes(&store.revocations().unwrap().unwrap(), &hq).unwrap();
    assert_eq!(list.is_revoked(&id).unwrap().accepted_through(0), Some(4));
    // Headquarters withdrew nothing it held when it revoked.
    assert!(store.quarantine().unwrap().is_empty());
    assert_eq!(store.case_envelopes(&case).unwrap().len(), 4);
}

#[test]
fn case_views_show_what_the_agent_shows() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("hq");
    init(&data);
    let dir = DataDir::new(&data);
    let a = device_store(tmp.path(), 7, "rome-1");
    let b = device_store(tmp.path(), 9, "rome-2");
    let case = new_case(&a, 1, "Looted stele");
    note(&a, &case, "seen at the port");
    b.import_bundle(&a.export_bundle(&[], now()).unwrap(), now())
        .unwrap();
    let set_title = |s: &Store, t: &str| {
        s.edit_case(&case, now(), "set title", |d| {
            d.set_field(fieldsync_case::Field::Title, t)
        })
        .unwrap();
    };
    set_title(&a, "Stele, seen in Rome");
    set_title(&b, "Stele, seen in Ostia");
    a.import_bundle(&b.export_bundle(&[], now()).unwrap(), now())
        .unwrap();
    b.import_bundle(&a.export_bundle(&[], now()).unwrap(), now())
        .unwrap();
    assert!(!a.case_conflicts(&case).unwrap().is_empty());
    assert_eq!(
        server(&data, &["cases"]).ok().stdout,
        "no cases yet; cases arrive when devices sync with this relay\n"
    );
    {
        let relay = Store::open(&dir.store()).unwrap();
        relay
            .import_bundle(&a.export_bundle(&[], now()).unwrap(), now())
            .unwrap();
    }
    let prefix = &case.to_string()[..6];
    let none = DeviceNames::new();
    let record = a.case_record(&case).unwrap();
    for (json, format) in [(false, Format::Text), (true, Format::Json)] {
        let flag = |args: &[&str]| {
            let mut v: Vec<&str> = args.to_vec();
            if json {
                v.push("--json");
            }
            server(&data, &v).ok().stdout
        };
        // Unenrolled devices have no names: the agent's views exactly.
        assert_eq!(
            flag(&["case", "show", prefix]),
            fieldsync_view::record(&record, &none, format).unwrap()
        );
        assert_eq!(
            flag(&["case", "history", prefix]),
            fieldsync_view::history(&a.case_history(&case).unwrap(), &none, format).unwrap()
        );
        assert_eq!(
            flag(&["case", "conflicts", prefix]),
            fieldsync_view::conflicts(&a.case_conflicts(&case).unwrap(), &none, format).unwrap()
        );
    }
    let cases = server(&data, &["cases", "--json"]).ok().json();
    assert_eq!(cases.as_array().unwrap().len(), 1);
    assert_eq!(cases[0]["id"], case.to_string());
    let listing = server(&data, &["cases"]).ok().stdout;
    assert!(listing.starts_with(&case.short()), "{listing}");

    // Enrolled devices are named where their changes are shown.
    enroll(
        &data,
        &a.device().id(),
        "R. Alvarez",
        "field",
        &tmp.path().join("a.cert"),
    )
    .ok();
    let history = server(&data, &["case", "history", prefix]).ok().stdout;
    assert!(
        history.contains(&format!("{} (R. Alvarez)", a.device().id().short())),
        "{history}"
    );
    let conflicts = server(&data, &["case", "conflicts", prefix, "--json"])
        .ok()
        .json();
    let values = conflicts[0]["values"].as_array().unwrap();
    assert!(
        values.iter().any(|v| v["device_name"] == "R. Alvarez"),
        "{conflicts}"
    );
    assert!(
        values.iter().any(|v| v.get("device_name").is_none()),
        "{conflicts}"
    );

    let err = server(&data, &["case", "show", "zzzz"]).fails().stderr;
    assert!(err.contains("no case matches 'zzzz'"), "{err}");
}

/// A liaison (read-only device) who wrote a case anyway: its change, as a
/// relay quarantines it.
fn liaison_change(seed: u8, case: CaseId) -> QuarantineEntry {
    let key = SecretKey::from_seed(&[seed; 32]);
    let id = DeviceId::from_public_key(key.public());
    let t = now();
    let genesis = sign(
        new_genesis(case, CaseKind::VisaSecurity, "rome", "general", id, t).unwrap(),
        &key,
    )
    .unwrap();
    let mut doc = CaseDoc::new(id.actor(0));
    doc.init("Visa refusal").unwrap();
    let change = doc.commit(t, "init").unwrap().unwrap();
    let change = sign(payload_for_local(case, 1, change), &key).unwrap();
    QuarantineEntry {
        at: t,
        reason: format!(
            "device {} has role liaison, which may not write",
            id.short()
        ),
        case,
        signer: id,
        genesis: encode_signed(genesis.as_signed()),
        change: encode_change(change.as_signed()),
    }
}

#[test]
fn quarantine_lists_and_releases() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("hq");
    let hq = init(&data);
    let dir = DataDir::new(&data);
    assert_eq!(
        server(&data, &["quarantine"]).ok().stdout,
        "the quarantine is empty\n"
    );
    let case = CaseId::from_bytes([5; 16]);
    let entry = liaison_change(11, case);
    {
        let relay = Store::open(&dir.store()).unwrap();
        let r = relay
            .ingest(
                Ingest {
                    quarantine: vec![entry.clone()],
                    ..Ingest::default()
                },
                now(),
            )
            .unwrap();
        assert_eq!(r.quarantined, 1);
    }
    let text = server(&data, &["quarantine"]).ok().stdout;
    assert!(text.starts_with("1    "), "{text}");
    assert!(text.contains("has role liaison"), "{text}");
    assert!(text.contains(&format!("case {}", case.short())), "{text}");
    let json = server(&data, &["quarantine", "--json"]).ok().json();
    assert_eq!(json[0]["id"], 1);
    assert_eq!(json[0]["signer"], entry.signer.to_string());

    let err = server(&data, &["quarantine", "release", "9"])
        .fails()
        .stderr;
    assert!(err.contains("no quarantine entry 9"), "{err}");
    let run = server(
        &data,
        &[
            "quarantine",
            "release",
            "1",
            "--reason",
            "liaison wrote at HQ's request",
        ],
    )
    .ok();
    assert!(
        run.stdout.starts_with("released quarantine entry 1"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("1 stored"), "{}", run.stdout);
    assert_eq!(
        server(&data, &["quarantine"]).ok().stdout,
        "the quarantine is empty\n"
    );
    let err = server(&data, &["quarantine", "release", "1"])
        .fails()
        .stderr;
    assert!(err.contains("no quarantine entry 1"), "{err}");

    // The change is stored with headquarters' signed release beside it.
    let store = Store::open(&dir.store()).unwrap();
    assert_eq!(store.list_cases().unwrap().len(), 1);
    let hash = decode_change(&entry.change).unwrap().payload().hash();
    let bytes = store.release_for(&case, &hash).unwrap().unwrap();
    let release = fieldsync_protocol::verify_release(&bytes).unwrap();
    let body = release.payload().value();
    assert_eq!(body.released_by, hq);
    assert_eq!(body.reason, "liaison wrote at HQ's request");
    assert_eq!(body.author, entry.signer);
}

#[test]
fn an_office_relay_without_the_hq_key_refuses_hq_acts() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("hq");
    init(&data);
    let dir = DataDir::new(&data);
    std::fs::rename(dir.hq_key(), tmp.path().join("offline.key")).unwrap();
    let id = server(&data, &["id", "--json"]).ok().json();
    assert_eq!(id["headquarters"], false);
    let device = device_store(tmp.path(), 7, "rome-1").device().id();
    let err = enroll(&data, &device, "R", "field", &tmp.path().join("x.cert"))
        .fails()
        .stderr;
    assert!(err.contains("holds no headquarters key"), "{err}");
    server(&data, &["devices"]).ok();
    // Another key in its place is refused by name.
    fieldsync_server::keys::write_hq_key(&dir.hq_key(), &[1; 32]).unwrap();
    let err = server(&data, &["devices"]).fails().stderr;
    assert!(err.contains("restore the right key file"), "{err}");
}

#[cfg(unix)]
#[test]
fn a_running_server_answers_through_the_control_socket() {
    use std::path::PathBuf;
    use std::sync::Arc;

    use fieldsync_server::admin::{AdminContext, AdminRequest, execute, handler};
    use fieldsync_server::control::ControlServer;

    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("hq");
    let hq = init(&data);
    let dir = DataDir::new(&data);
    let rome = device_store(tmp.path(), 7, "rome-1");
    let case = new_case(&rome, 1, "Looted stele");
    note(&rome, &case, "seen at the port");

    // What the command line prints when it opens the store itself.
    let direct = {
        let store = Store::open(&dir.store()).unwrap();
        store
            .import_bundle(&rome.export_bundle(&[], now()).unwrap(), now())
            .unwrap();
        let ctx = AdminContext::load(&store, &dir).unwrap();
        let show = AdminRequest::CaseShow {
            case: case.short(),
            json: false,
        };
        execute(&ctx, &show).unwrap().output
    };
    assert_eq!(
        server(&data, &["case", "show", &case.short()]).ok().stdout,
        direct
    );

    // The "server": holds the store (so the binary cannot open it) and
    // answers on DIR/control.sock.
    let store = Arc::new(Store::open(&dir.store()).unwrap());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let serving = {
        let _inside = runtime.enter();
        let control = ControlServer::bind(&dir.control_socket()).unwrap();
        runtime.spawn(control.serve(handler(store.clone(), dir.clone())))
    };
    assert_eq!(
        server(&data, &["case", "show", &case.short()]).ok().stdout,
        direct
    );
    let cases = server(&data, &["cases", "--json"]).ok().json();
    assert_eq!(cases[0]["id"], case.to_string());
    // Writes go through the server too, and relative paths are the caller's.
    let out = PathBuf::from("rome.cert");
    let run = Command::new(env!("CARGO_BIN_EXE_fieldsync-server"))
        .current_dir(tmp.path())
        .arg("--data")
        .arg(&data)
        .args(["enroll", "--device", &rome.device().id().to_string()])
        .args([
            "--name",
            "R. Alvarez",
            "--office",
            "Rome",
            "--role",
            "field",
            "--out",
        ])
        .arg(&out)
        .env_remove("FIELDSYNC_SERVER_DATA")
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    DeviceCertificate::from_pem_like(
        &std::fs::read_to_string(tmp.path().join(&out)).unwrap(),
        &hq,
    )
    .unwrap();
    let devices = server(&data, &["devices", "--json"]).ok().json();
    assert_eq!(devices[0]["name"], "R. Alvarez");
    let history = server(&data, &["case", "history", &case.short()])
        .ok()
        .stdout;
    assert!(history.contains("(R. Alvarez)"), "{history}");
    // Errors come back as the same single line.
    let err = server(&data, &["case", "show", "zzzz"]).fails().stderr;
    assert!(err.contains("no case matches 'zzzz'"), "{err}");
    let err = server(&data, &["quarantine", "release", "4"])
        .fails()
        .stderr;
    assert!(err.contains("no quarantine entry 4"), "{err}");

    // The server stops: its socket goes; the store is still held.
    serving.abort();
    runtime.block_on(async {
        let _ = serving.await;
    });
    drop(runtime);
    assert!(!dir.control_socket().exists());
    let err = server(&data, &["cases"]).fails().stderr;
    assert!(err.contains("in use by another process"), "{err}");
    drop(store);
    server(&data, &["cases"]).ok();
}

#[test]
fn serve_takes_its_store_cache_from_the_flag_or_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("relay");
    std::fs::create_dir(&data).unwrap();
    let err = server(&data, &["serve", "--cache-size-mib", "0"])
        .fails()
        .stderr;
    assert!(err.contains("cache_size_mib must be at least 1"), "{err}");
    std::fs::write(data.join("server.toml"), "cache_size_mib = 0\n").unwrap();
    let err = server(&data, &["serve"]).fails().stderr;
    assert!(err.contains("cache_size_mib must be at least 1"), "{err}");
    // The flag wins over the file: the options pass, and serving stops
    // only at the missing store.
    let err = server(&data, &["serve", "--cache-size-mib", "4"])
        .fails()
        .stderr;
    assert!(err.contains("fieldsync-server init"), "{err}");
}

#[test]
fn serve_help_states_the_default_store_cache() {
    let dir = tempfile::tempdir().unwrap();
    let help = server(dir.path(), &["serve", "--help"]).ok().stdout;
    let default = format!(
        "[default: {}]",
        fieldsync_server::serve::DEFAULT_CACHE_SIZE_MIB
    );
    // The option's own text: from its name to the next option's.
    let flag = help
        .split_once("--cache-size-mib")
        .and_then(|(_, rest)| rest.split_once("--config"))
        .map(|(text, _)| text);
    assert!(flag.is_some_and(|text| text.contains(&default)), "{help}");
}
