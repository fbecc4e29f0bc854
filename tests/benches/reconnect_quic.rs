//! Reconnection after offline over real QUIC on loopback: one device holding
//! D cases reconnects to a relay (a real redb file, durable commits) after
//! k = 10 cases changed on the device while it was offline (none on the
//! relay). FieldSync's cursor sync (the device and relay `Node`s) against
//! Automerge's per-document sync protocol (`automerge::sync`, a fresh sync
//! state per document, as automerge-repo and samod start on every new
//! connection), pipelined over one QUIC connection in the same run, beside
//! the floor (the k new changes' bytes plus their signatures).
//!
//! Bytes are the session stream's bytes each way (frames with their 4-byte
//! length prefixes; QUIC and TLS overhead not counted, on both paths). Wall
//! time runs from the QUIC connect to the end of the session, on both
//! paths. The relay commits durably; the per-document baseline's server
//! applies messages to documents in memory and stores nothing.
//!
//! `cargo bench -p fieldsync-tests --bench reconnect_quic` (D = 10,000);
//! `BENCH_QUICK=1`: D = 1,000; `BENCH_D=n` sets D; `BENCH_HISTORY=n` the
//! notes of history per case before the offline period (3).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use automerge::AutoCommit;
use automerge::sync::{Message, State as AmState, SyncDoc};
use fieldsync_case::{CaseKind, Field, decode_change};
use fieldsync_identity::{CaseId, DeviceCertificate, HqRoot, Role, SecretKey};
use fieldsync_node::{Mode, Node, NodeConfig, now};
use fieldsync_protocol::NodeRole;
use fieldsync_store::{NewCase, NewDevice, Store, StoreKind};
use fieldsync_tests::net::{env_usize, issue, serve_relay};
use fieldsync_transport::{Connector, Identity, Listener, PeerPolicy, TransportSettings};

/// Cases changed on the device while offline.
const K: usize = 10;

/// A certificate for `store`'s device reading and writing "general".
fn cert(hq: &HqRoot, store: &Store, serial: u64, role: Role) -> DeviceCertificate {
    issue(hq, store.device().id(), serial, role, &["general"]).unwrap()
}

/// One Automerge document per case, from the store's signed envelopes.
fn docs_of(store: &Store, cases: &[CaseId]) -> Vec<AutoCommit> {
    cases
        .iter()
        .map(|c| {
            let changes: Vec<automerge::Change> = store
                .case_envelopes(c)
                .unwrap()
                .iter()
                .map(|e| decode_change(e).unwrap().payload().change().clone())
                .collect();
            let mut d = AutoCommit::new();
            d.apply_changes(changes).unwrap();
            d
        })
        .collect()
}

/// The D cases, each with a triage edit and `history` notes.
fn make_cases(store: &Store, d: usize, history: usize) -> Vec<CaseId> {
    let me = store.device().id();
    let mut cases = Vec::with_capacity(d);
    for i in 0..d {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&(i as u64 * 0x9e37_79b9_7f4a_7c15).to_be_bytes());
        let id = store
            .create_case(
                &NewCase {
                    id: CaseId::from_bytes(id),
                    kind: CaseKind::CriminalInvestigation,
                    office: "rome",
                    compartment: "general",
                    title: &format!("case {i}"),
                },
                now(),
            )
            .unwrap();
        store
            .edit_case(&id, now(), "triage", |doc| {
                doc.set_field(Field::Status, "active")?;
                doc.set_field(Field::Priority, "high")?;
                doc.set_field(
                    Field::Summary,
                    "Container flagged at the port; manifest under review.",
                )
            })
            .unwrap();
        for n in 0..history {
            store
                .edit_case(&id, now(), "note", |doc| {
                    doc.add_note(me, now(), &format!("observation {n}"))
                })
                .unwrap();
        }
        cases.push(id);
    }
    cases
}

#[derive(Debug, Default, Clone, Copy)]
struct Cost {
    up: u64,
    down: u64,
    /// Client → server → client exchanges (per-document path only).
    rounds: usize,
    wall: Duration,
}

/// A per-document sync frame: the document's index, then the encoded message.
fn doc_frame(i: usize, m: Message) -> Vec<u8> {
    let mut f = u32::try_from(i).unwrap().to_be_bytes().to_vec();
    f.extend_from_slice(&m.encode());
    f
}

fn parse_doc_frame(f: &[u8]) -> (usize, Message) {
    let (idx, msg) = f.split_at(4);
    let i = u32::from_be_bytes(idx.try_into().unwrap()) as usize;
    (i, Message::decode(msg).unwrap())
}

/// The per-document server: each round, applies the client's messages up
/// to the end-of-round marker (an empty frame), then replies with its own
/// message for every document that has one, then the marker. Returns its
/// documents once the client finishes the stream.
async fn per_document_server(listener: Listener, mut docs: Vec<AutoCommit>) -> Vec<AutoCommit> {
    let mut conn = listener.accept().await.unwrap();
    let mut states: Vec<AmState> = (0..docs.len()).map(|_| AmState::new()).collect();
    loop {
        loop {
            let Some(f) = conn.read_frame().await.unwrap() else {
                conn.close(0, "done").await;
                return docs;
            };
            if f.is_empty() {
                break;
            }
            let (i, m) = parse_doc_frame(&f);
            docs[i]
                .sync()
                .receive_sync_message(&mut states[i], m)
                .unwrap();
        }
        for (i, (doc, state)) in docs.iter_mut().zip(states.iter_mut()).enumerate() {
            if let Some(m) = doc.sync().generate_sync_message(state) {
                conn.write_frame(&doc_frame(i, m)).await.unwrap();
            }
        }
        conn.write_frame(&[]).await.unwrap();
    }
}

/// The per-document client (the device), pipelined: each round sends every
/// document's message, then the marker, then applies the server's replies;
/// done when a whole round produces no message on either side.
async fn per_document(
    server_identity: &Identity,
    client_identity: &Identity,
    server_docs: Vec<AutoCommit>,
    mut docs: Vec<AutoCommit>,
) -> (Cost, Vec<AutoCommit>, Vec<AutoCommit>) {
    let listener = Listener::bind(
        "127.0.0.1:0".parse().unwrap(),
        server_identity,
        &TransportSettings::default(),
        PeerPolicy::accept_any(),
    )
    .await
    .unwrap();
    let addr = listener.local_addr();
    let server = tokio::spawn(per_document_server(listener, server_docs));
    let connector = Connector::new(
        client_identity,
        TransportSettings::default(),
        PeerPolicy::accept_any(),
    )
    .unwrap();
    let mut c = Cost::default();
    let started = Instant::now();
    let mut conn = connector.connect(addr).await.unwrap();
    let mut states: Vec<AmState> = (0..docs.len()).map(|_| AmState::new()).collect();
    loop {
        c.rounds += 1;
        let mut sent = 0;
        for (i, (doc, state)) in docs.iter_mut().zip(states.iter_mut()).enumerate() {
            if let Some(m) = doc.sync().generate_sync_message(state) {
                let f = doc_frame(i, m);
                c.up += f.len() as u64 + 4;
                conn.write_frame(&f).await.unwrap();
                sent += 1;
            }
        }
        conn.write_frame(&[]).await.unwrap();
        c.up += 4;
        let mut got = 0;
        loop {
            let f = conn
                .read_frame()
                .await
                .unwrap()
                .expect("the server replies");
            c.down += f.len() as u64 + 4;
            if f.is_empty() {
                break;
            }
            let (i, m) = parse_doc_frame(&f);
            docs[i]
                .sync()
                .receive_sync_message(&mut states[i], m)
                .unwrap();
            got += 1;
        }
        if sent == 0 && got == 0 {
            break;
        }
    }
    conn.finish().await.unwrap();
    c.wall = started.elapsed();
    let server_docs = server.await.unwrap();
    conn.close(0, "done").await;
    (c, server_docs, docs)
}

fn kb(b: u64) -> String {
    format!("{:.1} KB", b as f64 / 1e3)
}

async fn run(d: usize, history: usize) {
    let dir = tempfile::tempdir().unwrap();
    let hq = HqRoot::from_secret(SecretKey::from_seed(&[201; 32]));

    // The relay: a real redb file, serving over QUIC on loopback.
    let relay_store = Store::create(
        &dir.path().join("relay.redb"),
        NewDevice {
            seed: [250; 32],
            name: "hq",
            epoch: [250; 16],
            now: now(),
            kind: StoreKind::Relay,
        },
    )
    .unwrap();
    let relay_cert = cert(&hq, &relay_store, 1, Role::Relay);
    let relay_identity = Identity::new(relay_store.device().secret_key()).unwrap();
    let relay = Node::start(
        relay_store,
        NodeConfig::new(NodeRole::Relay, relay_cert, hq.public()),
    )
    .unwrap();
    let addr: SocketAddr = serve_relay(&relay, &relay_identity).await.unwrap();

    // The device: D cases (in memory: its medium is not what is measured).
    let made = Instant::now();
    let dev_store = Store::create_in_memory(NewDevice {
        seed: [7; 32],
        name: "field",
        epoch: [7; 16],
        now: now(),
        kind: StoreKind::Device,
    })
    .unwrap();
    let cases = make_cases(&dev_store, d, history);
    let made = made.elapsed();
    let dev_cert = cert(&hq, &dev_store, 2, Role::Field);
    let dev_identity = Identity::new(dev_store.device().secret_key()).unwrap();
    let connector = Connector::new(
        &dev_identity,
        TransportSettings::default(),
        PeerPolicy::accept_any(),
    )
    .unwrap();
    let device = Node::start(
        dev_store,
        NodeConfig::new(NodeRole::Device, dev_cert, hq.public()),
    )
    .unwrap();

    // Initial sync, device → relay.
    let started = Instant::now();
    let conn = connector.connect(addr).await.unwrap();
    let first = device.run_connection(conn, Mode::UntilSynced).await;
    assert!(first.synced, "{first:?}");
    let first_took = started.elapsed();
    let changes = d * (2 + history);
    println!(
        "Reconnection over QUIC on loopback: D = {d} cases ({} notes of history each, {changes} changes, made in {:.1} s), k = {K} changed on the device offline, none on the relay",
        history,
        made.as_secs_f64()
    );
    println!(
        "(initial upload of every change to the relay: {:.2} s, {} up / {} down)",
        first_took.as_secs_f64(),
        kb(first.bytes_sent),
        kb(first.bytes_received)
    );

    // The relay's documents before the reconnection (the baseline's server side).
    let relay_cases = cases.clone();
    let (relay_docs, relay_head) = relay
        .with_engine(move |e| {
            (
                docs_of(e.store(), &relay_cases),
                e.store().log_head().unwrap(),
            )
        })
        .await
        .unwrap();
    assert_eq!(relay_head as usize, changes, "the relay holds every change");

    // Offline: k edits on the device; the floor; the device's documents.
    let dev_cases = cases.clone();
    let (floor, envelopes, new_envelopes, device_docs) = device
        .with_engine(move |e| {
            let store = e.store();
            let me = store.device().id();
            let before = store.log_head().unwrap();
            for c in dev_cases.iter().take(K) {
                store
                    .edit_case(c, now(), "note", |doc| {
                        doc.add_note(me, now(), "vehicle seen at the north gate")
                    })
                    .unwrap();
            }
            let entries = store
                .read_log(before, usize::MAX, usize::MAX, |_| true)
                .unwrap()
                .entries;
            assert_eq!(entries.len(), K);
            let floor: usize = entries
                .iter()
                .map(|e| {
                    decode_change(&e.envelope)
                        .unwrap()
                        .payload()
                        .raw_bytes()
                        .len()
                        + 64
                })
                .sum();
            let envelopes: usize = entries.iter().map(|e| e.envelope.len()).sum();
            let new: Vec<(CaseId, Vec<u8>)> =
                entries.into_iter().map(|e| (e.case, e.envelope)).collect();
            (floor, envelopes, new, docs_of(store, &dev_cases))
        })
        .await
        .unwrap();

    // FieldSync reconnection (timed).
    let started = Instant::now();
    let conn = connector.connect(addr).await.unwrap();
    let out = device.run_connection(conn, Mode::UntilSynced).await;
    let fs_wall = started.elapsed();
    assert!(out.synced && out.error.is_none(), "{out:?}");
    let fs = Cost {
        up: out.bytes_sent,
        down: out.bytes_received,
        rounds: 0,
        wall: fs_wall,
    };
    let held = relay
        .with_engine(move |e| {
            let store = e.store();
            let head = store.log_head().unwrap();
            let all_there = new_envelopes
                .iter()
                .all(|(c, env)| store.case_envelopes(c).unwrap().contains(env));
            (head, all_there)
        })
        .await
        .unwrap();
    assert_eq!(
        held.0 as usize,
        changes + K,
        "the relay stored the k changes"
    );
    assert!(held.1, "the relay holds the device's new envelopes");

    // Automerge per-document sync over QUIC (timed).
    let (am, server_docs, mut client_docs) =
        per_document(&relay_identity, &dev_identity, relay_docs, device_docs).await;
    let mut server_docs = server_docs;
    for (i, (s, c)) in server_docs
        .iter_mut()
        .zip(client_docs.iter_mut())
        .enumerate()
    {
        assert_eq!(s.get_heads(), c.get_heads(), "document {i} in sync");
    }

    relay.shutdown().await;
    device.shutdown().await;

    let total = |c: &Cost| c.up + c.down;
    println!();
    println!("| D = {d} | up B | down B | total B | rounds | wall ms | of floor |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| floor: {K} signed changes (change + signature; envelopes {envelopes} B) | {floor} | 0 | {floor} | | | 1.0x |"
    );
    println!(
        "| FieldSync (device and relay Nodes, durable relay) | {} | {} | {} | | {:.1} | {:.1}x |",
        fs.up,
        fs.down,
        total(&fs),
        fs.wall.as_secs_f64() * 1e3,
        total(&fs) as f64 / floor as f64
    );
    println!(
        "| Automerge per-document sync, fresh state, pipelined | {} | {} | {} | {} | {:.1} | {:.0}x |",
        am.up,
        am.down,
        total(&am),
        am.rounds,
        am.wall.as_secs_f64() * 1e3,
        total(&am) as f64 / floor as f64
    );
    println!(
        "| per-document / FieldSync | {:.0}x | {:.0}x | {:.0}x | | {:.1}x | |",
        am.up as f64 / fs.up as f64,
        am.down as f64 / fs.down as f64,
        total(&am) as f64 / total(&fs) as f64,
        am.wall.as_secs_f64() / fs.wall.as_secs_f64()
    );
}

fn main() {
    let quick = std::env::var_os("BENCH_QUICK").is_some();
    let d = env_usize("BENCH_D", if quick { 1_000 } else { 10_000 }).max(K);
    let history = env_usize("BENCH_HISTORY", 3);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(d, history));
}
