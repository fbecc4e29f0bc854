//! Office relays with the real binaries over QUIC on 127.0.0.1: headquarters
//! and two offices with devices at each; one office serves its devices
//! through an uplink outage while the other keeps its uplink, and forwards
//! everything, verified, to headquarters when the uplink returns;
//! headquarters' receipts come back down; everyone converges.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use fieldsync_tests::{Agent, Server};
use serde_json::Value;
use tempfile::TempDir;

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn id_of(agent: &Agent) -> String {
    json(&agent.run(&["id", "--json"]).ok().stdout)["device"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A device enrolled at `hq` as a field device of "general", syncing with `relay`.
fn device(dir: &TempDir, hq: &Server, name: &str, relay: &str) -> Agent {
    let agent = Agent::new(&dir.path().join(name));
    agent
        .run(&["init", "--name", name, "--office", "rome"])
        .ok();
    let cert = dir.path().join(format!("{name}.cert"));
    hq.run(&[
        "enroll",
        "--device",
        &id_of(&agent),
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
    ])
    .ok();
    agent
        .run(&["enroll", "--cert", cert.to_str().unwrap(), "--relay", relay])
        .ok();
    agent
}

fn notes(record: &Value) -> Vec<String> {
    record["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["text"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Polls `f` every 200 ms for up to `within`.
fn eventually(within: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < within {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{what}: not within {within:?}");
}

/// An office relay `name`: its own key (`init --office`), enrolled at `hq`
/// for the relay role over "general". Returns it, its certificate file and
/// its relay id.
fn office_relay(dir: &TempDir, hq: &Server, name: &str) -> (Server, std::path::PathBuf, String) {
    let office = Server::new(&dir.path().join(name));
    let out = office.run(&["init", "--name", name, "--office"]).ok();
    let relay_id = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("relay  "))
        .unwrap()
        .trim()
        .to_owned();
    let shown = json(&office.run(&["id", "--json"]).ok().stdout);
    assert_eq!(shown["relay"], relay_id.as_str());
    let cert = dir.path().join(format!("{name}.cert"));
    hq.run(&[
        "enroll",
        "--device",
        &relay_id,
        "--name",
        name,
        "--office",
        "rome",
        "--role",
        "relay",
        "--read",
        "general",
        "--out",
        cert.to_str().unwrap(),
    ])
    .ok();
    (office, cert, relay_id)
}

#[test]
fn an_office_starts_and_serves_while_headquarters_name_does_not_resolve() {
    let dir = tempfile::tempdir().unwrap();
    let hq = Server::new(&dir.path().join("hq"));
    hq.run(&["init", "--name", "hq-relay"]).ok();
    let (office, cert, _) = office_relay(&dir, &hq, "office-lagos");
    // A malformed upstream is refused at once, with the reason.
    let r = office.run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        "hq.invalid",
        "--cert",
        cert.to_str().unwrap(),
    ]);
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("HOST:PORT"), "{}", r.stderr);
    // `.invalid` never resolves (RFC 2606): the uplink is down from the start.
    let serving = office.serve_with(
        "127.0.0.1:0",
        &[
            "--upstream",
            "hq.invalid:4433",
            "--cert",
            cert.to_str().unwrap(),
        ],
    );
    let a = device(&dir, &hq, "lagos-1", &serving.addr.to_string());
    a.run(&[
        "case",
        "new",
        "--kind",
        "criminal-investigation",
        "--title",
        "Port",
    ])
    .ok();
    let out = a.run(&["sync"]).ok();
    assert!(out.stdout.contains("held by the relay"), "{}", out.stdout);
    assert!(serving.stop());
}

#[test]
fn an_office_rides_out_an_uplink_outage_and_headquarters_verifies_everything() {
    let dir = tempfile::tempdir().unwrap();
    let hq = Server::new(&dir.path().join("hq"));
    hq.run(&["init", "--name", "hq-relay"]).ok();
    let hq_serving = hq.serve("127.0.0.1:0");
    let hq_addr = hq_serving.addr.to_string();

    // The office relay: its own key, enrolled at headquarters for the relay role.
    let (office, office_cert, relay_id) = office_relay(&dir, &hq, "office-rome");
    let serving = office.serve_with(
        "127.0.0.1:0",
        &[
            "--upstream",
            &hq_addr,
            "--cert",
            office_cert.to_str().unwrap(),
        ],
    );
    let office_addr = serving.addr.to_string();

    let a1 = device(&dir, &hq, "rome-1", &office_addr);
    let a2 = device(&dir, &hq, "rome-2", &office_addr);
    let b = device(&dir, &hq, "washington", &hq_addr);
    // A second office, whose uplink stays up throughout, with its own device.
    let (lagos, lagos_cert, _) = office_relay(&dir, &hq, "office-lagos");
    let lagos_serving = lagos.serve_with(
        "127.0.0.1:0",
        &[
            "--upstream",
            &hq_addr,
            "--cert",
            lagos_cert.to_str().unwrap(),
        ],
    );
    let c1 = device(&dir, &hq, "lagos-1", &lagos_serving.addr.to_string());

    // Through the office to headquarters and on to a device served directly.
    let case = a1
        .run(&[
            "case",
            "new",
            "--kind",
            "cultural-property",
            "--title",
            "Stele",
        ])
        .ok()
        .out()
        .to_owned();
    a1.run(&["sync"]).ok();
    eventually(
        Duration::from_secs(30),
        "the case reaches headquarters",
        || hq.run(&["case", "show", &case, "--json"]).code == Some(0),
    );
    b.run(&["sync"]).ok();
    assert_eq!(
        json(&b.run(&["case", "show", &case, "--json"]).ok().stdout)["title"],
        "Stele"
    );
    a2.run(&["sync"]).ok();
    let devices = json(&hq.run(&["devices", "--json"]).ok().stdout);
    let carried = devices
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["device"] == id_of(&a1).as_str())
        .unwrap()["carried_by"]
        .clone();
    assert_eq!(
        carried.as_str(),
        Some(relay_id.as_str()),
        "headquarters names the office relay that carried rome-1's changes"
    );

    // The uplink fails: the office keeps serving its devices.
    assert!(serving.stop());
    let serving = office.serve(&office_addr);
    a1.run(&["case", "note", &case, "seen at the border"]).ok();
    let noted = json(&a1.run(&["status", "--json"]).ok().stdout)["log_head"]
        .as_u64()
        .unwrap();
    a1.run(&["sync"]).ok();
    // rome-1 can tell: safe at the office, not yet at headquarters.
    let status = json(&a1.run(&["status", "--json"]).ok().stdout);
    assert!(
        status["safe_at_office"]["through"].as_u64().unwrap() >= noted,
        "{status}"
    );
    assert_eq!(status["safe_at_office"]["relay"], "office-rome", "{status}");
    assert!(
        status["safe_at_headquarters"]["through"]
            .as_u64()
            .is_none_or(|t| t < noted),
        "{status}"
    );
    a2.run(&["sync"]).ok();
    assert!(
        notes(&json(
            &a2.run(&["case", "show", &case, "--json"]).ok().stdout
        ))
        .contains(&"seen at the border".to_owned())
    );
    // Headquarters revokes rome-2 meanwhile; the office cannot know yet.
    hq.run(&["revoke", &id_of(&a2)[..12], "--reason", "stolen from a car"])
        .ok();
    a2.run(&["case", "note", &case, "written after the revocation"])
        .ok();
    a2.run(&["sync"]).ok();
    // Meanwhile the case reaches Lagos through its office, and Lagos adds
    // to it; headquarters has that at once, Rome's office cannot.
    eventually(Duration::from_secs(30), "the case reaches lagos-1", || {
        c1.run(&["sync"]).ok();
        c1.run(&["case", "show", &case, "--json"]).code == Some(0)
    });
    c1.run(&["case", "note", &case, "container cleared in Lagos"])
        .ok();
    c1.run(&["sync"]).ok();
    eventually(
        Duration::from_secs(30),
        "lagos' note reaches headquarters",
        || {
            let r = json(&hq.run(&["case", "show", &case, "--json"]).ok().stdout);
            notes(&r).contains(&"container cleared in Lagos".to_owned())
        },
    );

    // The uplink returns: everything goes up, verified at headquarters.
    assert!(serving.stop());
    let serving = office.serve_with(&office_addr, &["--upstream", &hq_addr]);
    eventually(
        Duration::from_secs(30),
        "the outage's changes reach headquarters",
        || {
            let q = json(&hq.run(&["quarantine", "--json"]).ok().stdout);
            let r = json(&hq.run(&["case", "show", &case, "--json"]).ok().stdout);
            !q.as_array().unwrap().is_empty()
                && notes(&r).contains(&"seen at the border".to_owned())
        },
    );
    let q = json(&hq.run(&["quarantine", "--json"]).ok().stdout);
    let q = q.as_array().unwrap();
    assert_eq!(q.len(), 1, "{q:?}");
    assert!(
        q[0]["reason"].as_str().unwrap().contains("revoked"),
        "{q:?}"
    );
    let at_hq = json(&hq.run(&["case", "show", &case, "--json"]).ok().stdout);
    assert!(!notes(&at_hq).contains(&"written after the revocation".to_owned()));
    // Headquarters' receipt travels back down through the office: rome-1
    // now knows its note is safe at headquarters, on headquarters' signature.
    eventually(
        Duration::from_secs(30),
        "headquarters' receipt reaches rome-1 through the office",
        || {
            a1.run(&["sync"]).ok();
            let status = json(&a1.run(&["status", "--json"]).ok().stdout);
            status["safe_at_headquarters"]["through"]
                .as_u64()
                .is_some_and(|t| t >= noted)
        },
    );
    let status = json(&a1.run(&["status", "--json"]).ok().stdout);
    assert_eq!(
        status["safe_at_headquarters"]["via"], "office-rome",
        "{status}"
    );
    assert_eq!(
        status["safe_at_headquarters"]["relay"], "hq-relay",
        "{status}"
    );
    let text = a1.run(&["status"]).ok().stdout;
    assert!(text.contains("safe at headquarters"), "{text}");
    assert!(text.contains("carried by office-rome"), "{text}");
    b.run(&["sync"]).ok();
    let at_b = json(&b.run(&["case", "show", &case, "--json"]).ok().stdout);
    assert!(notes(&at_b).contains(&"seen at the border".to_owned()));
    assert!(!notes(&at_b).contains(&"written after the revocation".to_owned()));

    // Headquarters and every device in service converge, through both offices.
    eventually(Duration::from_secs(30), "everyone converges", || {
        for d in [&a1, &b, &c1] {
            d.run(&["sync"]).ok();
        }
        let sorted = |r: &Value| {
            let mut n = notes(r);
            n.sort();
            n
        };
        let at_hq = sorted(&json(
            &hq.run(&["case", "show", &case, "--json"]).ok().stdout,
        ));
        at_hq.len() == 2
            && [&a1, &b, &c1].iter().all(|d| {
                sorted(&json(
                    &d.run(&["case", "show", &case, "--json"]).ok().stdout,
                )) == at_hq
            })
    });

    // The office learned the revocation from headquarters: rome-2 is refused there too.
    eventually(Duration::from_secs(30), "the office refuses rome-2", || {
        let r = a2.run(&["sync"]);
        r.code == Some(1) && r.stderr.contains("revoked")
    });
    assert!(serving.stop());
    assert!(lagos_serving.stop());
    drop(hq_serving);
}
