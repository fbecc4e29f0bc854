//! Relay ingest over real QUIC on loopback: D devices push their logs
//! concurrently to one relay (a real redb file, durable commits), beside the
//! in-process ceiling measured in the same run on the same changes: batch
//! signature verification, change parsing and batched durable redb commits,
//! with no network and no session.
//!
//! `cargo bench -p fieldsync-tests --bench ingest` (100 devices × 200
//! changes); `BENCH_QUICK=1` runs 20 devices × 50 changes;
//! `INGEST_DEVICES` and `INGEST_CHANGES` set other sizes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use fieldsync_case::{
    CaseKind, Field, Genesis, VerifiedChange, VerifiedGenesis, decode_change, verify_genesis,
};
use fieldsync_identity::{
    CaseId, DeviceCertificate, HqRoot, Role, SecretKey, decode_signed, verify_batch,
};
use fieldsync_node::{Mode, Node, NodeConfig, now};
use fieldsync_protocol::NodeRole;
use fieldsync_store::{Ingest, NewCase, NewDevice, Store, StoreKind};
use fieldsync_tests::net::{env_usize, issue, serve_relay};
use fieldsync_transport::{Connector, Identity, PeerPolicy, TransportSettings};

/// A certificate for `store`'s device reading and writing `compartments`.
fn cert(
    hq: &HqRoot,
    store: &Store,
    serial: u64,
    role: Role,
    compartments: &[String],
) -> DeviceCertificate {
    let names: Vec<&str> = compartments.iter().map(String::as_str).collect();
    issue(hq, store.device().id(), serial, role, &names).unwrap()
}

/// Device `n`'s compartment: each device pushes cases no other device
/// reads, so the relay has nothing to send back and the run measures ingest.
fn compartment(n: usize) -> String {
    format!("unit-{n}")
}

/// A device store with `changes` signed changes spread over 10 cases.
fn device(hq: &HqRoot, n: usize, changes: usize) -> (Store, DeviceCertificate) {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&(n as u64 + 1).to_le_bytes());
    let store = Store::create_in_memory(NewDevice {
        seed,
        name: &format!("device-{n}"),
        epoch: [n as u8; 16],
        now: now(),
        kind: StoreKind::Device,
    })
    .unwrap();
    let c = cert(hq, &store, n as u64 + 10, Role::Field, &[compartment(n)]);
    let mut cases = Vec::new();
    for k in 0..10u8 {
        let mut id = [k; 16];
        id[..8].copy_from_slice(&(n as u64).to_le_bytes());
        cases.push(
            store
                .create_case(
                    &NewCase {
                        id: CaseId::from_bytes(id),
                        kind: CaseKind::CriminalInvestigation,
                        office: "rome",
                        compartment: &compartment(n),
                        title: "Shipment",
                    },
                    now(),
                )
                .unwrap(),
        );
    }
    for i in 10..changes {
        let case = cases[i % cases.len()];
        store
            .edit_case(&case, now(), "note", |d| {
                d.set_field(Field::Title, &format!("Shipment {i}: manifest checked"))
            })
            .unwrap();
    }
    (store, c)
}

fn relay_store(dir: &std::path::Path, name: &str) -> Store {
    Store::create(
        &dir.join(name),
        NewDevice {
            seed: [250; 32],
            name: "hq",
            epoch: [250; 16],
            now: now(),
            kind: StoreKind::Relay,
        },
    )
    .unwrap()
}

/// Over QUIC: every device connects at once and pushes its log.
async fn over_quic(
    hq: &HqRoot,
    dir: &std::path::Path,
    devices: Vec<(Store, DeviceCertificate)>,
) -> (Duration, usize) {
    let store = relay_store(dir, "quic.redb");
    let all: Vec<String> = (0..devices.len()).map(compartment).collect();
    let relay_cert = cert(hq, &store, 1, Role::Relay, &all);
    let identity = Identity::new(store.device().secret_key()).unwrap();
    let relay = Node::start(
        store,
        NodeConfig::new(NodeRole::Relay, relay_cert, hq.public()),
    )
    .unwrap();
    let addr: SocketAddr = serve_relay(&relay, &identity).await.unwrap();
    let mut pushers = Vec::new();
    let mut nodes = Vec::new();
    for (store, c) in devices {
        let identity = Identity::new(store.device().secret_key()).unwrap();
        let connector = Connector::new(
            &identity,
            TransportSettings::default(),
            PeerPolicy::accept_any(),
        )
        .unwrap();
        let node = Node::start(store, NodeConfig::new(NodeRole::Device, c, hq.public())).unwrap();
        nodes.push(node.clone());
        pushers.push((node, connector));
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (node, connector) in pushers {
        tasks.push(tokio::spawn(async move {
            let mut wait = Duration::from_millis(50);
            let conn = loop {
                // A relay refuses handshakes beyond its limit; clients back off.
                match connector.connect(addr).await {
                    Ok(c) => break c,
                    Err(e) if wait < Duration::from_secs(10) => {
                        eprintln!("retrying after: {e}");
                        tokio::time::sleep(wait).await;
                        wait *= 2;
                    }
                    Err(e) => panic!("{e}"),
                }
            };
            let out = node.run_connection(conn, Mode::UntilSynced).await;
            assert!(out.synced, "{out:?}");
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(600), t)
            .await
            .expect("ingest finished in time")
            .unwrap();
    }
    let took = started.elapsed();
    let held = relay
        .with_engine(|e| e.store().log_head().unwrap())
        .await
        .unwrap();
    relay.shutdown().await;
    for n in nodes {
        n.shutdown().await;
    }
    (took, held as usize)
}

/// In process: the same envelopes parsed, batch-verified and committed in
/// batches of 512 (the protocol's batch size), durably, with no network.
fn ceiling(dir: &std::path::Path, devices: &[(Store, DeviceCertificate)]) -> (Duration, usize) {
    let mut input: Vec<(Vec<u8>, Vec<Vec<u8>>)> = Vec::new();
    for (store, _) in devices {
        let mut after = 0;
        loop {
            let b = store.read_log(after, 512, 1 << 20, |_| true).unwrap();
            let geneses = b.geneses.iter().map(|(_, g)| g.clone()).collect::<Vec<_>>();
            for g in geneses {
                input.push((g, Vec::new()));
            }
            for e in b.entries {
                input.push((Vec::new(), vec![e.envelope]));
            }
            if b.at_end {
                break;
            }
            after = b.next;
        }
    }
    let store = relay_store(dir, "ceiling.redb");
    let started = Instant::now();
    let mut geneses: BTreeMap<CaseId, VerifiedGenesis> = BTreeMap::new();
    let mut pending: Vec<Vec<u8>> = Vec::new();
    let mut stored = 0;
    let flush = |pending: &mut Vec<Vec<u8>>, geneses: &BTreeMap<CaseId, VerifiedGenesis>| {
        let signed: Vec<_> = pending.iter().map(|e| decode_change(e).unwrap()).collect();
        let verified: Vec<VerifiedChange> = verify_batch(signed).unwrap();
        let mut by_case: BTreeMap<CaseId, Vec<VerifiedChange>> = BTreeMap::new();
        for c in verified {
            by_case.entry(c.payload().case()).or_default().push(c);
        }
        let cases = by_case
            .into_iter()
            .map(|(case, changes)| (geneses[&case].clone(), changes))
            .collect();
        let r = store
            .ingest(
                Ingest {
                    cases,
                    ..Ingest::default()
                },
                now(),
            )
            .unwrap();
        pending.clear();
        r.stored
    };
    for (g, envs) in input {
        if !g.is_empty() {
            let v = verify_genesis(decode_signed::<Genesis>(&g).unwrap()).unwrap();
            geneses.insert(v.payload().value().case, v);
        }
        pending.extend(envs);
        if pending.len() >= 512 {
            stored += flush(&mut pending, &geneses);
        }
    }
    if !pending.is_empty() {
        stored += flush(&mut pending, &geneses);
    }
    (started.elapsed(), stored)
}

fn main() {
    let quick = std::env::var_os("BENCH_QUICK").is_some();
    let n_devices = env_usize("INGEST_DEVICES", if quick { 20 } else { 100 });
    let per_device = env_usize("INGEST_CHANGES", if quick { 50 } else { 200 }).max(10);
    let dir = tempfile::tempdir().unwrap();
    let hq = HqRoot::from_secret(SecretKey::from_seed(&[200; 32]));
    let made = Instant::now();
    let devices: Vec<_> = (0..n_devices).map(|n| device(&hq, n, per_device)).collect();
    let total = n_devices * per_device;
    println!(
        "Relay ingest: {n_devices} devices × {per_device} changes = {total} signed changes (made in {:.1} s)",
        made.elapsed().as_secs_f64()
    );
    let (ceiling_took, ceiling_stored) = ceiling(dir.path(), &devices);
    assert_eq!(ceiling_stored, total);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (quic_took, held) = rt.block_on(over_quic(&hq, dir.path(), devices));
    assert_eq!(held, total, "the relay holds every change");
    let rate = |d: Duration| total as f64 / d.as_secs_f64();
    println!("| path | time | changes/s | of ceiling |");
    println!("|---|---|---|---|");
    println!(
        "| in-process ceiling (parse + batch verify + batched durable commits) | {:.2} s | {:.0} | 100% |",
        ceiling_took.as_secs_f64(),
        rate(ceiling_took)
    );
    println!(
        "| {n_devices} devices over QUIC on loopback, concurrently | {:.2} s | {:.0} | {:.0}% |",
        quic_took.as_secs_f64(),
        rate(quic_took),
        100.0 * rate(quic_took) / rate(ceiling_took)
    );
}
