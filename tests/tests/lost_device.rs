//! Lost devices, end to end with the real binaries on 127.0.0.1: the
//! offline lease keeps case data closed (edits made before stay and sync),
//! and a headquarters-signed wipe order reaches a revoked device, which
//! destroys its keys.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{SystemTime, UNIX_EPOCH};

use fieldsync_identity::Timestamp;
use fieldsync_tests::{Agent, Server};
use serde_json::Value;
use tempfile::TempDir;

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn now() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    Timestamp::from_millis(i64::try_from(ms).unwrap())
}

/// Headquarters, initialized.
fn headquarters(dir: &TempDir) -> Server {
    let hq = Server::new(&dir.path().join("hq"));
    hq.run(&["init", "--name", "hq-relay", "--compartments", "general"])
        .ok();
    hq
}

/// A device enrolled at `hq` (with `extra` enroll arguments), pointed at `relay`.
fn device(dir: &TempDir, hq: &Server, name: &str, extra: &[&str], relay: &str) -> (Agent, String) {
    let agent = Agent::new(&dir.path().join(name));
    agent
        .run(&["init", "--name", name, "--office", "rome"])
        .ok();
    let id = json(&agent.run(&["id", "--json"]).ok().stdout)["device"]
        .as_str()
        .unwrap()
        .to_owned();
    let cert = dir.path().join(format!("{name}.cert"));
    let mut args = vec![
        "enroll",
        "--device",
        &id,
        "--name",
        name,
        "--office",
        "rome",
        "--role",
        "field",
        "--read",
        "general",
        "--out",
        cert.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    hq.run(&args).ok();
    agent
        .run(&["enroll", "--cert", cert.to_str().unwrap(), "--relay", relay])
        .ok();
    (agent, id)
}

fn new_case(agent: &Agent, title: &str) -> String {
    agent
        .run(&[
            "case",
            "new",
            "--kind",
            "cultural-property",
            "--title",
            title,
        ])
        .ok()
        .out()
        .to_owned()
}

#[test]
fn a_closed_lease_keeps_case_data_shut_until_the_next_sync_and_loses_no_edit() {
    let dir = tempfile::tempdir().unwrap();
    let hq = headquarters(&dir);
    let serving = hq.serve("127.0.0.1:0");
    let relay = serving.addr.to_string();
    let (agent, _) = device(&dir, &hq, "rome-1", &["--lease-days", "7"], &relay);

    let case = new_case(&agent, "Stele seen at the port");
    agent.run(&["sync"]).ok();
    let status = agent.run(&["status"]).ok();
    assert!(
        status.stdout.contains("lease     7 days offline"),
        "{}",
        status.stdout
    );
    let lease = json(&agent.run(&["status", "--json"]).ok().stdout)["lease"].clone();
    assert_eq!(lease["state"], "ok", "{lease}");
    assert_eq!(lease["lease_days"], 7, "{lease}");

    // An edit made while the lease is open, not yet synced.
    agent
        .run(&["case", "note", &case, "Second crate on the quay"])
        .ok();

    // The device has seen a time 30 days ahead of this machine's clock
    // (its clock was set back): case data closes.
    agent
        .open_store()
        .record_relay_contact(now().plus_days(30))
        .unwrap();
    for args in [
        vec!["case", "list"],
        vec!["case", "show", case.as_str()],
        vec!["case", "note", case.as_str(), "Should not be written"],
    ] {
        let run = agent.run(&args).fails();
        assert!(
            run.stderr.contains("clock") && run.stderr.contains("case data stays closed"),
            "{args:?}: {}",
            run.stderr
        );
    }
    let export = dir.path().join("out.bundle");
    agent
        .run(&["export", "--out", export.to_str().unwrap()])
        .fails();
    assert!(!export.exists());
    let status = agent.run(&["status"]).ok();
    assert!(
        status.stdout.contains("case data is closed"),
        "{}",
        status.stdout
    );

    // Sync still works: the note made before goes up, and contact reopens
    // case data.
    agent.run(&["sync"]).ok();
    let at_hq = json(&hq.run(&["case", "show", &case, "--json"]).ok().stdout);
    let notes = at_hq["notes"].to_string();
    assert!(notes.contains("Second crate on the quay"), "{at_hq}");
    assert!(!notes.contains("Should not be written"), "{at_hq}");
    let list = agent.run(&["case", "list"]).ok();
    assert!(
        list.stdout.contains("Stele seen at the port"),
        "{}",
        list.stdout
    );
    assert!(serving.stop());
}

#[test]
fn a_wipe_order_reaches_a_revoked_device_which_destroys_its_keys() {
    let dir = tempfile::tempdir().unwrap();
    let hq = headquarters(&dir);
    let serving = hq.serve("127.0.0.1:0");
    let relay = serving.addr.to_string();
    let (lost, lost_id) = device(&dir, &hq, "rome-lost", &[], &relay);
    let (other, _) = device(&dir, &hq, "rome-2", &[], &relay);
    let case = new_case(&lost, "Ledger of the courier");
    lost.run(&["sync"]).ok();
    other.run(&["sync"]).ok();

    // Headquarters orders the wipe (through the running relay's control
    // socket), then revokes the device.
    let order = hq
        .run(&[
            "wipe",
            "--device",
            &lost_id[..12],
            "--reason",
            "lost at the airport",
        ])
        .ok();
    assert!(order.stdout.contains("wipe order"), "{}", order.stdout);
    hq.run(&["revoke", &lost_id[..12], "--reason", "lost at the airport"])
        .ok();

    // The other device is told nothing of it.
    other.run(&["sync"]).ok();
    assert!(other.data().join("fieldsync.redb").exists());

    // The lost device's next contact: it gets the order, destroys its keys.
    let run = lost.run(&["sync"]);
    assert_eq!(run.code, Some(1), "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("wipe order") && run.stderr.contains("lost at the airport"),
        "{}",
        run.stderr
    );
    assert!(!lost.data().join("fieldsync.redb").exists());
    for args in [vec!["case", "list"], vec!["status"], vec!["sync"]] {
        let run = lost.run(&args).fails();
        assert!(run.stderr.contains("wiped"), "{args:?}: {}", run.stderr);
    }
    // Whatever the device still holds on disk names none of its cases.
    for entry in std::fs::read_dir(lost.data()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("Ledger of the courier"));
        assert!(!text.contains(&case));
    }

    // Headquarters saw the order delivered.
    let devices = json(&hq.run(&["devices", "--json"]).ok().stdout);
    let entry = devices
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["device"].as_str() == Some(lost_id.as_str()))
        .unwrap_or_else(|| panic!("{devices}"));
    assert!(!entry["wipe"]["delivered"].is_null(), "{entry}");
    assert!(serving.stop());
}
