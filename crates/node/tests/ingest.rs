//! Many devices pushing to one relay at once over real QUIC on loopback,
//! with real redb files: their batches are checked on the connection tasks
//! and stored by the engine; the live sessions are told the log grew once
//! for many batches, yet a live reader gets every change and a live
//! device that may read none of them still ends with its cursor at the
//! relay's head. And with a tiny room for frames waiting for a stalled
//! engine, readers wait their turn, the room is never overrun, and nothing
//! is lost.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Grant, Peer, connector, peer_with, serve};

use std::net::SocketAddr;
use std::time::Duration;

use fieldsync_case::{CaseKind, Field};
use fieldsync_identity::{CaseId, HqRoot, Role, SecretKey};
use fieldsync_node::{Mode, NodeConfig, now};
use fieldsync_store::NewCase;
use tempfile::TempDir;

const PUSHERS: u8 = 6;
const EDITS: usize = 12;

fn peer(dir: &TempDir, hq: &HqRoot, seed: u8, role: Role, units: &[&str]) -> Peer {
    peer_with_config(dir, hq, seed, role, units, |c| c)
}

/// A peer of `units` (a relay reads them and writes none).
fn peer_with_config(
    dir: &TempDir,
    hq: &HqRoot,
    seed: u8,
    role: Role,
    units: &[&str],
    config: impl FnOnce(NodeConfig) -> NodeConfig,
) -> Peer {
    let grant = Grant {
        role,
        office: "rome",
        read: units,
        write: if role == Role::Relay { &[] } else { units },
    };
    peer_with(dir, hq, seed, grant, config)
}

/// Three cases of `unit` on `p` (ids from `seed`), with `EDITS` edits between them.
async fn write(p: &Peer, seed: u8, unit: &'static str) {
    p.node
        .with_engine(move |e| {
            let cases: Vec<CaseId> = (0..3u8)
                .map(|k| {
                    let mut id = [k; 16];
                    id[0] = seed;
                    e.store()
                        .create_case(
                            &NewCase {
                                id: CaseId::from_bytes(id),
                                kind: CaseKind::CriminalInvestigation,
                                office: "rome",
                                compartment: unit,
                                title: "Shipment",
                            },
                            now(),
                        )
                        .unwrap()
                })
                .collect();
            for i in 0..EDITS {
                e.store()
                    .edit_case(&cases[i % 3], now(), "note", |d| {
                        d.set_field(Field::Title, &format!("Shipment {i}"))
                    })
                    .unwrap();
            }
        })
        .await
        .unwrap();
}

/// Each of `pushers` connects to `addr` and syncs until both logs are exchanged.
fn push_all(
    pushers: &[Peer],
    addr: SocketAddr,
) -> Vec<tokio::task::JoinHandle<fieldsync_node::ConnOutcome>> {
    pushers
        .iter()
        .map(|p| {
            let c = connector(p);
            let node = p.node.clone();
            tokio::spawn(async move {
                let conn = c.connect(addr).await.unwrap();
                node.run_connection(conn, Mode::UntilSynced).await
            })
        })
        .collect()
}

async fn all_synced(pushes: Vec<tokio::task::JoinHandle<fieldsync_node::ConnOutcome>>) {
    for push in pushes {
        let out = tokio::time::timeout(Duration::from_secs(60), push)
            .await
            .expect("a push finished in time")
            .unwrap();
        assert!(out.synced, "{out:?}");
    }
}

async fn log_head(p: &Peer) -> u64 {
    p.node
        .with_engine(|e| e.store().log_head().unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pushes_reach_live_readers_and_move_everyone_s_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let hq = HqRoot::from_secret(SecretKey::from_seed(&[202; 32]));
    let relay = peer(&dir, &hq, 1, Role::Relay, &["general", "other"]);
    let reader = peer(&dir, &hq, 2, Role::Field, &["general"]);
    let bystander = peer(&dir, &hq, 3, Role::Field, &["other"]);
    let addr = serve(&relay).await;
    let live: Vec<_> = [&reader, &bystander]
        .into_iter()
        .map(|p| {
            let c = connector(p);
            let node = p.node.clone();
            tokio::spawn(async move {
                let conn = c.connect(addr).await.unwrap();
                node.run_connection(conn, Mode::Live).await
            })
        })
        .collect();

    let mut pushers = Vec::new();
    for seed in 10..10 + PUSHERS {
        let p = peer(&dir, &hq, seed, Role::Field, &["general"]);
        write(&p, seed, "general").await;
        pushers.push(p);
    }
    let pushes = push_all(&pushers, addr);
    all_synced(pushes).await;
    let total = u64::from(PUSHERS) * (3 + EDITS as u64);
    assert_eq!(log_head(&relay).await, total);

    // Every change reaches the live reader; the bystander, which may read
    // none of them, holds the relay's log through its head all the same.
    let relay_id = relay.node.device();
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let cursor = bystander
                .node
                .with_engine(move |e| e.store().peer_cursor(&relay_id).unwrap())
                .await
                .unwrap();
            if log_head(&reader).await == total && cursor.is_some_and(|c| c.seq == total) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the live sessions caught up with every push");
    assert_eq!(log_head(&bystander).await, 0);

    for p in pushers.iter().chain([&reader, &bystander, &relay]) {
        p.node.shutdown().await;
    }
    for l in live {
        let out = l.await.unwrap();
        assert!(out.synced, "{out:?}");
    }
}

/// The room for frames waiting for the engine (`queued_limit_kib`, 32 MiB
/// by default) set to 4 KiB, smaller than the batches: while the engine is
/// held up, the readers fill the room and wait (never past it), and once it
/// runs again every push completes and the room empties.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_queue_holds_readers_back_and_loses_nothing() {
    const ROOM: u32 = 4;
    let dir = tempfile::tempdir().unwrap();
    let hq = HqRoot::from_secret(SecretKey::from_seed(&[203; 32]));
    let relay = peer_with_config(&dir, &hq, 1, Role::Relay, &["general"], |c| NodeConfig {
        queued_limit_kib: ROOM,
        ..c
    });
    let addr = serve(&relay).await;
    let mut pushers = Vec::new();
    for seed in 20..20 + PUSHERS {
        let p = peer(&dir, &hq, seed, Role::Field, &["general"]);
        write(&p, seed, "general").await;
        pushers.push(p);
    }

    // Hold the engine up; the connections' readers keep reading meanwhile.
    let stall = relay.node.clone();
    let stalled = tokio::spawn(async move {
        stall
            .with_engine(|_| std::thread::sleep(Duration::from_millis(1500)))
            .await
            .unwrap();
    });
    let pushes = push_all(&pushers, addr);
    let mut most = 0;
    while !stalled.is_finished() {
        most = most.max(relay.node.queued_kib());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(most, ROOM, "the readers filled the room, and no more");

    all_synced(pushes).await;
    let total = u64::from(PUSHERS) * (3 + EDITS as u64);
    assert_eq!(log_head(&relay).await, total);
    assert_eq!(relay.node.queued_kib(), 0);
    assert_eq!(fieldsync_node::DEFAULT_QUEUED_KIB, 32 * 1024);
    for p in pushers.iter().chain([&relay]) {
        p.node.shutdown().await;
    }
}
