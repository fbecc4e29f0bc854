//! `fieldsync-server repair` with the real binary: a relay store whose file
//! fails its checksums is refused with a named error that offers `repair`;
//! `repair` keeps the damaged file aside byte for byte, reports what it
//! lost (here the revocation list, whose signature no longer verifies), and
//! leaves a store the relay starts with.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

fn server(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fieldsync-server"))
        .arg("--data")
        .arg(data)
        .args(args)
        .env_remove("FIELDSYNC_SERVER_DATA")
        .env_remove("RUST_LOG")
        .output()
        .expect("cannot start fieldsync-server")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

#[test]
fn a_damaged_relay_store_is_refused_and_repair_keeps_it_aside() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("hq");
    ok(server(&data, &["init", "--name", "hq-relay"]));
    let id = "7".repeat(64);
    let cert = dir.path().join("d.cert");
    ok(server(
        &data,
        &[
            "enroll",
            "--device",
            &id,
            "--name",
            "x",
            "--office",
            "rome",
            "--role",
            "field",
            "--out",
            cert.to_str().unwrap(),
        ],
    ));
    ok(server(
        &data,
        &["revoke", &id[..10], "--reason", "needlework-reason"],
    ));

    // One bit flipped on disk, inside the stored revocation list.
    let store = data.join("relay.redb");
    let mut bytes = std::fs::read(&store).unwrap();
    let needle = b"needlework-reason";
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the reason is in the store file");
    bytes[at] ^= 0x01;
    std::fs::write(&store, &bytes).unwrap();

    let refused = server(&data, &["devices"]);
    assert_eq!(refused.status.code(), Some(1));
    let err = text(&refused.stderr);
    assert!(
        err.starts_with("error: ") && err.contains("damaged") && err.contains("repair"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&store).unwrap(),
        bytes,
        "refusing changed the file"
    );

    let out = ok(server(&data, &["repair"]));
    assert!(
        out.contains("kept aside") && out.contains("new store"),
        "{out}"
    );
    assert!(
        out.contains("lost        1") && out.contains("revocation list"),
        "{out}"
    );
    assert_eq!(
        std::fs::read(data.join("relay.redb.damaged")).unwrap(),
        bytes,
        "the damaged file is kept as it was"
    );
    // The relay works again, and knows its enrolled device.
    let devices = ok(server(&data, &["devices"]));
    assert!(devices.contains("77777777"), "{devices}");
}
