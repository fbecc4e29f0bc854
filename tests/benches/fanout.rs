//! Live subscribers: N devices stay connected to a real `fieldsync-server`
//! (a child process, so its memory is its own); the relay's resident memory
//! per idle connection, and the time for one change to reach all of them.
//!
//! `cargo bench -p fieldsync-tests --bench fanout` (1,000 devices);
//! `BENCH_QUICK=1` runs 100; `FANOUT_DEVICES=n` sets another number.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use fieldsync_case::{CaseKind, Field};
use fieldsync_identity::{
    CERTIFICATE_VERSION, CaseId, CertificateBody, Compartment, HqRoot, Role, SecretKey, Timestamp,
};
use fieldsync_node::{Mode, Node, NodeConfig, NodeEventKind, now};
use fieldsync_protocol::{Event, NodeRole};
use fieldsync_store::{NewCase, NewDevice, Store, StoreKind};
use fieldsync_tests::Server;
use fieldsync_transport::{Connector, Identity, PeerPolicy, TransportSettings};

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct Device {
    node: Node,
    connector: Connector,
}

fn device(hq: &HqRoot, n: usize) -> Device {
    let mut seed = [7u8; 32];
    seed[..8].copy_from_slice(&(n as u64).to_le_bytes());
    let store = Store::create_in_memory(NewDevice {
        seed,
        name: &format!("device-{n}"),
        epoch: [n as u8; 16],
        now: now(),
        kind: StoreKind::Device,
    })
    .unwrap();
    let general = vec![Compartment::new("general").unwrap()];
    let cert = hq
        .issue(CertificateBody {
            version: CERTIFICATE_VERSION,
            serial: 1000 + n as u64,
            issuer: hq.public(),
            device: store.device().id(),
            name: format!("device-{n}"),
            office: "rome".into(),
            role: Role::Field,
            read: general.clone(),
            write: general,
            not_before: Timestamp::from_millis(now().as_millis() - 3_600_000),
            not_after: Timestamp::from_millis(now().as_millis() + 86_400_000),
        })
        .unwrap();
    let identity = Identity::new(store.device().secret_key()).unwrap();
    let connector = Connector::new(
        &identity,
        TransportSettings::default(),
        PeerPolicy::accept_any(),
    )
    .unwrap();
    let node = Node::start(store, NodeConfig::new(NodeRole::Device, cert, hq.public())).unwrap();
    Device { node, connector }
}

fn main() {
    let quick = std::env::var_os("BENCH_QUICK").is_some();
    let n: usize = std::env::var("FANOUT_DEVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 100 } else { 1_000 });
    let dir = tempfile::tempdir().unwrap();
    let server = Server::new(&dir.path().join("hq"));
    server.run(&["init", "--name", "hq-relay"]).ok();
    let seed = hex::decode(
        std::fs::read_to_string(server.data().join("hq-root.key"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    let hq = HqRoot::from_secret(SecretKey::from_seed(&seed.try_into().unwrap()));
    let serving = server.serve("127.0.0.1:0");
    let addr = serving.addr;
    std::thread::sleep(Duration::from_millis(500));
    let rss_idle = rss_kib(serving.pid());

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let devices: Vec<Device> = {
        let _in_runtime = rt.enter(); // endpoints bind their sockets on the runtime
        (0..n).map(|i| device(&hq, i)).collect()
    };
    let pid = serving.pid();
    let (connected, rss_connected, latencies) = rt.block_on(async move {
        let mut subs = Vec::new();
        let mut tasks = Vec::new();
        let mut nodes = Vec::new();
        for d in &devices {
            subs.push(d.node.subscribe());
        }
        for Device { node, connector } in devices {
            nodes.push(node.clone());
            tasks.push(tokio::spawn(async move {
                let mut wait = Duration::from_millis(20);
                let conn = loop {
                    match connector.connect(addr).await {
                        Ok(c) => break c,
                        Err(e) if wait < Duration::from_secs(20) => {
                            eprintln!("retrying: {e}");
                            tokio::time::sleep(wait).await;
                            wait *= 2;
                        }
                        Err(e) => panic!("{e}"),
                    }
                };
                node.run_connection(conn, Mode::Live).await
            }));
        }
        // Every device synced (connected, Hellos exchanged, caught up).
        let started = Instant::now();
        let mut synced = 0;
        for rx in &mut subs {
            loop {
                match tokio::time::timeout(Duration::from_secs(120), rx.recv()).await {
                    Ok(Ok(ev)) if matches!(ev.kind, NodeEventKind::Synced) => break,
                    Ok(Ok(_)) => continue,
                    other => panic!("a device did not sync: {other:?}"),
                }
            }
            synced += 1;
        }
        println!(
            "{synced} devices connected and synced in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss_connected = rss_kib(pid);
        // One change on device 0; the time until each other device stores it.
        let t0 = Instant::now();
        nodes[0]
            .with_engine(|e| {
                let case = e
                    .store()
                    .create_case(
                        &NewCase {
                            id: CaseId::from_bytes([0xfa; 16]),
                            kind: CaseKind::CriminalInvestigation,
                            office: "rome",
                            compartment: "general",
                            title: "Broadcast",
                        },
                        now(),
                    )
                    .unwrap();
                e.store()
                    .edit_case(&case, now(), "t", |d| d.set_field(Field::Title, "Live"))
                    .unwrap();
                e.log_grew();
            })
            .await
            .unwrap();
        let mut latencies = Vec::new();
        for rx in subs.iter_mut().skip(1) {
            loop {
                match tokio::time::timeout(Duration::from_secs(60), rx.recv()).await {
                    Ok(Ok(ev)) => {
                        if let NodeEventKind::Session(Event::Stored { report, .. }) = &ev.kind
                            && report.stored > 0
                        {
                            latencies.push(t0.elapsed());
                            break;
                        }
                    }
                    other => panic!("the change did not reach a device: {other:?}"),
                }
            }
        }
        for node in &nodes {
            node.shutdown().await;
        }
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        (synced, rss_connected, latencies)
    });
    let mut latencies = latencies;
    latencies.sort();
    let per_conn = (rss_connected.saturating_sub(rss_idle)) as f64 / connected as f64;
    println!("| relay RSS idle | with {connected} live connections | per connection |");
    println!("|---|---|---|");
    println!(
        "| {:.1} MiB | {:.1} MiB | {per_conn:.1} KiB |",
        rss_idle as f64 / 1024.0,
        rss_connected as f64 / 1024.0
    );
    println!();
    println!(
        "| fan-out of one change to {} live subscribers | p50 | p99 | max |",
        latencies.len()
    );
    println!("|---|---|---|---|");
    println!(
        "| relay → devices over QUIC on loopback | {:.0} ms | {:.0} ms | {:.0} ms |",
        percentile(&latencies, 0.5).as_secs_f64() * 1000.0,
        percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1000.0
    );
    assert!(serving.stop(), "the relay stops cleanly");
}
