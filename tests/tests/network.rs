//! End to end over real QUIC (and TLS over TCP) on 127.0.0.1, with the real
//! `fieldsync-server` and `fieldsync-agent` binaries as child processes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use fieldsync_identity::{
    CERTIFICATE_VERSION, CertificateBody, Compartment, HqRoot, Role, SecretKey, Timestamp,
};
use fieldsync_tests::{Agent, Server};
use serde_json::Value;
use tempfile::TempDir;

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Headquarters, initialized.
fn headquarters(dir: &TempDir) -> Server {
    let hq = Server::new(&dir.path().join("hq"));
    hq.run(&[
        "init",
        "--name",
        "hq-relay",
        "--compartments",
        "general,narcotics",
    ])
    .ok();
    hq
}

/// A device, initialized, enrolled at `hq` with `role`, pointed at `relay`.
fn device(dir: &TempDir, hq: &Server, name: &str, role: &str, relay: &str) -> Agent {
    let agent = Agent::new(&dir.path().join(name));
    agent
        .run(&["init", "--name", name, "--office", "rome"])
        .ok();
    let id = json(&agent.run(&["id", "--json"]).ok().stdout)["device"]
        .as_str()
        .unwrap()
        .to_owned();
    let cert = dir.path().join(format!("{name}.cert"));
    hq.run(&[
        "enroll",
        "--device",
        &id,
        "--name",
        name,
        "--office",
        "rome",
        "--role",
        role,
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

fn record(agent: &Agent, case: &str) -> Value {
    let mut r = json(&agent.run(&["case", "show", case, "--json"]).ok().stdout);
    strip_local(&mut r);
    r
}

fn hq_record(hq: &Server, case: &str) -> Value {
    let mut r = json(&hq.run(&["case", "show", case, "--json"]).ok().stdout);
    strip_local(&mut r);
    r
}

/// Device names are shown where known; the record itself is what must agree.
fn strip_local(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.remove("device_name");
            for x in m.values_mut() {
                strip_local(x);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(strip_local),
        _ => {}
    }
}

#[test]
fn concurrent_offline_edits_merge_identically_on_headquarters_and_both_devices() {
    let dir = tempfile::tempdir().unwrap();
    let hq = headquarters(&dir);
    let serving = hq.serve("127.0.0.1:0");
    let relay = serving.addr.to_string();
    let rome = device(&dir, &hq, "rome-laptop", "field", &relay);
    let mexico = device(&dir, &hq, "mexico-handheld", "field", &relay);

    let case = new_case(&rome, "Stele trafficking");
    let synced = rome.run(&["sync"]).ok();
    assert!(
        synced.stdout.contains("sent 1 change,"),
        "{}",
        synced.stdout
    );
    mexico.run(&["sync"]).ok();
    assert_eq!(record(&mexico, &case)["title"], "Stele trafficking");

    // Offline: both edit the same field and the summary.
    rome.run(&["case", "set", &case, "priority", "high"]).ok();
    rome.run(&["case", "summary", "append", &case, "Buyer seen in Rome."])
        .ok();
    mexico
        .run(&["case", "set", &case, "priority", "urgent"])
        .ok();
    mexico
        .run(&[
            "case",
            "summary",
            "append",
            &case,
            "Container leaves Friday.",
        ])
        .ok();
    let status = json(&rome.run(&["status", "--json"]).ok().stdout);
    assert_eq!(status["pending"], 2);

    for a in [&rome, &mexico, &rome] {
        a.run(&["sync"]).ok();
    }
    let at_hq = hq_record(&hq, &case);
    assert_eq!(record(&rome, &case), at_hq);
    assert_eq!(record(&mexico, &case), at_hq);
    // Headquarters lists the case with its merged title, status and priority.
    let cases = json(&hq.run(&["cases", "--json"]).ok().stdout);
    let listed = &cases.as_array().unwrap()[0];
    assert_eq!(listed["title"], "Stele trafficking");
    assert_eq!(listed["priority"], at_hq["priority"]);
    let summary = at_hq["summary"].as_str().unwrap();
    assert!(
        summary.contains("Buyer seen in Rome.") && summary.contains("Container leaves Friday.")
    );
    let conflicts = json(&hq.run(&["case", "conflicts", &case, "--json"]).ok().stdout);
    let text = conflicts.to_string();
    assert!(text.contains("urgent") && text.contains("high"), "{text}");
    assert!(
        text.contains("rome-laptop") && text.contains("mexico-handheld"),
        "the conflict names both devices: {text}"
    );

    // Receipts: "synced with headquarters up to T".
    let status = json(&rome.run(&["status", "--json"]).ok().stdout);
    assert_eq!(status["pending"], 0);
    assert!(status["synced_up_to"].is_string(), "{status}");
    assert!(serving.stop(), "the server stops cleanly on SIGTERM");
}

/// A relay tuned for a slow, long link in its config file (handshake
/// timeout, idle timeout, initial round trip, congestion controller, initial
/// window) serves devices as usual; a link setting that cannot work is
/// refused when `serve` starts, with its name, before anything is bound.
#[test]
fn link_settings_from_the_config_file_serve_and_bad_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let hq = headquarters(&dir);
    let config = dir.path().join("hf-relay.toml");
    std::fs::write(
        &config,
        "handshake_timeout_secs = 60\nidle_timeout_secs = 180\ninitial_rtt_ms = 1500\n\
         congestion = \"newreno\"\ninitial_window = 12000\n",
    )
    .unwrap();
    let serving = hq.serve_with("127.0.0.1:0", &["--config", config.to_str().unwrap()]);
    let relay = serving.addr.to_string();
    let rome = device(&dir, &hq, "rome-laptop", "field", &relay);
    let case = new_case(&rome, "Over the radio");
    rome.run(&["sync"]).ok();
    assert_eq!(hq_record(&hq, &case)["title"], "Over the radio");
    drop(serving);

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "idle_timeout_secs = 8\n").unwrap();
    let refused = hq
        .run(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--config",
            bad.to_str().unwrap(),
        ])
        .fails();
    assert!(
        refused.stderr.contains("link settings") && refused.stderr.contains("idle_timeout"),
        "{}",
        refused.stderr
    );
}

#[test]
fn a_liaison_reads_but_its_writes_are_quarantined_at_headquarters() {
    let dir = tempfile::tempdir().unwrap();
    let hq = headquarters(&dir);
    let serving = hq.serve("127.0.0.1:0");
    let relay = serving.addr.to_string();
    let field = device(&dir, &hq, "field-1", "field", &relay);
    let liaison = device(&dir, &hq, "embassy-liaison", "liaison", &relay);
    let case = new_case(&field, "Visa fraud ring");
    field.run(&["sync"]).ok();
    liaison.run(&["sync"]).ok();
    assert_eq!(
        record(&liaison, &case)["title"],
        "Visa fraud ring",
        "a liaison reads"
    );

    liaison
        .run(&["case", "set", &case, "title", "Changed by the liaison"])
        .ok();
    let out = liaison.run(&["sync"]).ok();
    assert!(out.stdout.contains("synced"), "{}", out.stdout);
    let q = json(&hq.run(&["quarantine", "--json"]).ok().stdout);
    let q = q.as_array().unwrap();
    assert_eq!(q.len(), 1, "{q:?}");
    assert!(q[0]["reason"].as_str().unwrap().contains("liaison"));
    field.run(&["sync"]).ok();
    assert_eq!(record(&field, &case)["title"], "Visa fraud ring");
    assert_eq!(hq_record(&hq, &case)["title"], "Visa fraud ring");
}

#[test]
fn devices_without_a_valid_certificate_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let hq = headquarters(&dir);
    let serving = hq.serve("127.0.0.1:0");
    let relay = serving.addr.to_string();

    // Not enrolled at all.
    let stray = Agent::new(&dir.path().join("stray"));
    stray.run(&["init", "--name", "stray"]).ok();
    let err = stray.run(&["sync"]).fails().stderr;
    assert!(err.contains("not enrolled"), "{err}");

    // Enrolled by another headquarters.
    let other = Server::new(&dir.path().join("other-hq"));
    other.run(&["init", "--name", "other"]).ok();
    let foreign = device(&dir, &other, "foreign", "field", &relay);
    let err = foreign.run(&["sync"]).fails().stderr;
    assert!(err.contains("certificate refused"), "{err}");

    // Expired: a certificate that ends two seconds after it is issued.
    let expiring = Agent::new(&dir.path().join("expiring"));
    expiring.run(&["init", "--name", "expiring"]).ok();
    let id = json(&expiring.run(&["id", "--json"]).ok().stdout)["device"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let seed = hex::decode(
        std::fs::read_to_string(hq.data().join("hq-root.key"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    let root = HqRoot::from_secret(SecretKey::from_seed(&seed.try_into().unwrap()));
    let now = Timestamp::from_millis(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64,
    );
    let cert = root
        .issue(CertificateBody {
            version: CERTIFICATE_VERSION,
            serial: 900,
            issuer: root.public(),
            device: id,
            name: "expiring".into(),
            office: "rome".into(),
            role: Role::Field,
            read: vec![Compartment::new("general").unwrap()],
            write: vec![Compartment::new("general").unwrap()],
            not_before: Timestamp::from_millis(now.as_millis() - 60_000),
            not_after: Timestamp::from_millis(now.as_millis() + 2_000),
        })
        .unwrap();
    let path = dir.path().join("expiring.cert");
    std::fs::write(&path, cert.to_pem_like()).unwrap();
    expiring
        .run(&[
            "enroll",
            "--cert",
            path.to_str().unwrap(),
            "--relay",
            &relay,
        ])
        .ok();
    std::thread::sleep(Duration::from_millis(2_500));
    let err = expiring.run(&["sync"]).fails().stderr;
    assert!(err.contains("expired"), "{err}");

    // Revoked.
    let lost = device(&dir, &hq, "lost-handheld", "field", &relay);
    lost.run(&["sync"]).ok();
    let id = json(&lost.run(&["id", "--json"]).ok().stdout)["device"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = hq
        .run(&["revoke", &id[..10], "--reason", "lost at the airport"])
        .ok();
    assert!(out.stdout.contains("revoked"), "{}", out.stdout);
    let err = lost.run(&["sync"]).fails().stderr;
    assert!(
        err.contains("revoked") && err.contains("lost at the airport"),
        "{err}"
    );
}

/// Writes `n` edits into an agent's store directly (the agent is not running).
fn bulk_edits(agent: &Agent, case: &str, n: usize) {
    let store = agent.open_store();
    let id = store.resolve_case(case).unwrap();
    let me = store.device().id();
    let now = Timestamp::from_millis(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64,
    );
    for i in 0..n {
        store
            .edit_case(&id, now, "note", |d| {
                d.add_note(
                    me,
                    now,
                    &format!("observation {i}: container manifest line checked"),
                )
            })
            .unwrap();
    }
}

fn held_at(hq: &Server, agent: &Agent) -> u64 {
    let id = json(&agent.run(&["id", "--json"]).ok().stdout)["device"]
        .as_str()
        .unwrap()
        .to_owned();
    let devices = json(&hq.run(&["devices", "--json"]).ok().stdout);
    devices
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["device"] == id.as_str())
        .and_then(|d| d["held_through"].as_u64())
        .unwrap_or(0)
}

#[test]
fn a_sync_killed_half_way_resumes_and_completes() {
    let dir = tempfile::tempdir().unwrap();
    let hq = headquarters(&dir);
    let serving = hq.serve("127.0.0.1:0");
    // 30 KB/s: the log (~200 KB as deflated batches) takes several seconds.
    let slow = throttled_tcp_proxy(serving.addr, Some(30_000)).to_string();
    let rome = device(&dir, &hq, "rome", "field", &slow);
    let case = new_case(&rome, "Ledger");
    bulk_edits(&rome, &case, 1_500);
    let total = json(&rome.run(&["status", "--json"]).ok().stdout)["log_head"]
        .as_u64()
        .unwrap();
    // Kill the agent (SIGKILL, by the PID of the child we started) as soon
    // as headquarters holds part of its log, watching through the running
    // server's control socket.
    let id = json(&rome.run(&["id", "--json"]).ok().stdout)["device"]
        .as_str()
        .unwrap()
        .to_owned();
    let socket = hq.data().join("control.sock");
    // (last contact, held through) of the device, as headquarters sees it.
    let seen = || -> (String, u64) {
        let out = fieldsync_server::control::request(
            &socket,
            &fieldsync_server::admin::AdminRequest::Devices { json: true },
        )
        .unwrap()
        .output;
        let devices = json(&out);
        let d = devices
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["device"] == id.as_str())
            .cloned()
            .unwrap_or(Value::Null);
        (
            d["last_contact"].to_string(),
            d["held_through"].as_u64().unwrap_or(0),
        )
    };
    // Cut the link once headquarters holds part of the log: the link
    // carries 30 KB/s, so the rest is still on its way.
    let mut child = rome.command(&["sync"]).spawn().unwrap();
    let started = Instant::now();
    while seen().1 == 0 && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
    let held = held_at(&hq, &rome);
    println!("killed mid-sync with headquarters holding {held} of {total}");
    let partial = held > 0 && held < total;
    assert!(partial, "no kill landed half-way through a sync");
    let out = rome.run(&["sync"]).ok();
    assert!(
        out.stdout.contains("every change on this device is held"),
        "{}",
        out.stdout
    );
    assert_eq!(held_at(&hq, &rome), total);
    let r = hq_record(&hq, &case);
    assert_eq!(
        r["notes"].as_array().unwrap().len() as u64,
        total - 1,
        "every note arrived once"
    );
    let q = json(&hq.run(&["quarantine", "--json"]).ok().stdout);
    assert_eq!(q.as_array().unwrap().len(), 0, "{q}");
}

#[test]
fn a_server_killed_mid_run_loses_nothing_it_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let hq = headquarters(&dir);
    let serving = hq.serve("127.0.0.1:0");
    let relay = serving.addr.to_string();
    let rome = device(&dir, &hq, "rome", "field", &relay);
    let case = new_case(&rome, "Courier network");
    for i in 0..5 {
        rome.run(&["case", "note", &case, &format!("sighting {i}")])
            .ok();
    }
    rome.run(&["sync"]).ok();
    let acknowledged = json(&rome.run(&["status", "--json"]).ok().stdout);
    assert_eq!(acknowledged["pending"], 0);
    let addr = serving.addr;
    serving.kill(); // SIGKILL: no clean shutdown
    let again = hq.serve(&addr.to_string());
    let r = hq_record(&hq, &case);
    assert_eq!(
        r["notes"].as_array().unwrap().len(),
        5,
        "every acknowledged change survived"
    );
    // And the device carries on against the restarted server.
    rome.run(&["case", "note", &case, "after the restart"]).ok();
    rome.run(&["sync"]).ok();
    assert_eq!(hq_record(&hq, &case)["notes"].as_array().unwrap().len(), 6);
    drop(again);
}

/// Forwards TCP connections on a new port to `to`. Nothing listens on that
/// port's UDP side, so QUIC to it gets no answer: the agent must fall back
/// to TLS over TCP.
fn tcp_only_proxy(to: SocketAddr) -> SocketAddr {
    throttled_tcp_proxy(to, None)
}

/// Like [`tcp_only_proxy`], carrying at most `rate` bytes per second each way.
fn throttled_tcp_proxy(to: SocketAddr, rate: Option<usize>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for inbound in listener.incoming().flatten() {
            let Ok(outbound) = TcpStream::connect(to) else {
                continue;
            };
            let pipe = move |mut a: TcpStream, mut b: TcpStream| {
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4 * 1024];
                    loop {
                        match a.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if b.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                                if let Some(rate) = rate {
                                    let secs = n as f64 / rate as f64;
                                    std::thread::sleep(Duration::from_secs_f64(secs));
                                }
                            }
                        }
                    }
                    let _ = b.shutdown(std::net::Shutdown::Write);
                });
            };
            pipe(inbound.try_clone().unwrap(), outbound.try_clone().unwrap());
            pipe(outbound, inbound);
        }
    });
    addr
}

#[test]
fn sessions_fall_back_to_tls_over_tcp_when_udp_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let hq = headquarters(&dir);
    let serving = hq.serve("127.0.0.1:0");
    let proxy = tcp_only_proxy(serving.addr);
    let rome = device(&dir, &hq, "rome", "field", &proxy.to_string());
    let case = new_case(&rome, "Hotel network");
    let started = Instant::now();
    let out = rome.run(&["sync"]).ok();
    assert!(out.stdout.contains("over TLS/TCP"), "{}", out.stdout);
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(hq_record(&hq, &case)["title"], "Hotel network");
}

#[test]
fn sync_watch_reconnects_when_the_relay_appears_and_receives_live_changes() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let hq = headquarters(&dir);
    // A port with nothing on it yet.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let relay = format!("127.0.0.1:{port}");
    let watcher = device(&dir, &hq, "watcher", "field", &relay);
    let writer = device(&dir, &hq, "writer", "field", &relay);
    let mut watch = watcher
        .command(&["sync", "--watch"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let wait_for = |what: &str, within: Duration| -> Vec<String> {
        let mut seen = Vec::new();
        let until = Instant::now() + within;
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let hit = line.contains(what);
                    seen.push(line);
                    if hit {
                        return seen;
                    }
                }
                Err(_) => break,
            }
        }
        panic!("no line with {what:?} within {within:?}; saw {seen:?}");
    };
    wait_for("no relay reachable", Duration::from_secs(30));
    let serving = hq.serve(&relay);
    wait_for("synced with relay", Duration::from_secs(60));
    // A change made elsewhere arrives without a new sync.
    let case = new_case(&writer, "Live case");
    writer.run(&["sync"]).ok();
    wait_for("received", Duration::from_secs(30));
    let pid = watch.id().to_string();
    let _ = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status();
    wait_for("stopped", Duration::from_secs(30));
    assert!(watch.wait().unwrap().success());
    assert_eq!(record(&watcher, &case)["title"], "Live case");
    drop(serving);
}
