//! Real nodes over real QUIC on loopback, with real redb files: a relay and
//! devices converge, live changes flow, a revoked device is told why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Grant, Peer, connector, peer_with, serve};

use std::net::SocketAddr;
use std::time::Duration;

use fieldsync_case::{CaseKind, Field};
use fieldsync_identity::{CaseId, HQ_OFFICE, HqRoot, Revocation, Role, SecretKey};
use fieldsync_node::{Mode, NodeEventKind, now};
use fieldsync_protocol::Event;
use fieldsync_store::NewCase;
use tempfile::TempDir;

fn peer(dir: &TempDir, hq: &HqRoot, seed: u8, role: Role) -> Peer {
    peer_at(dir, hq, seed, role, "rome")
}

/// A peer that reads and writes `general` (a liaison only reads).
fn peer_at(dir: &TempDir, hq: &HqRoot, seed: u8, role: Role, office: &str) -> Peer {
    let write: &[&str] = if role == Role::Liaison {
        &[]
    } else {
        &["general"]
    };
    let grant = Grant {
        role,
        office,
        read: &["general"],
        write,
    };
    peer_with(dir, hq, seed, grant, |c| c)
}

async fn new_case(p: &Peer, id: u8, title: &'static str) -> CaseId {
    p.node
        .with_engine(move |e| {
            let case = e
                .store()
                .create_case(
                    &NewCase {
                        id: CaseId::from_bytes([id; 16]),
                        kind: CaseKind::CriminalInvestigation,
                        office: "rome",
                        compartment: "general",
                        title,
                    },
                    now(),
                )
                .unwrap();
            e.log_grew();
            case
        })
        .await
        .unwrap()
}

async fn title(p: &Peer, case: CaseId) -> Option<String> {
    p.node
        .with_engine(move |e| e.store().case_record(&case).ok().map(|r| r.title))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_sync_through_a_relay_over_quic_and_live_changes_flow() {
    let dir = tempfile::tempdir().unwrap();
    let hq = HqRoot::from_secret(SecretKey::from_seed(&[200; 32]));
    let relay = peer(&dir, &hq, 1, Role::Relay);
    let a = peer(&dir, &hq, 2, Role::Field);
    let b = peer(&dir, &hq, 3, Role::Field);
    let addr = serve(&relay).await;

    let ca = new_case(&a, 1, "Stele").await;
    let cb = new_case(&b, 2, "Tunnel").await;
    // One-shot syncs: each ends once both logs are exchanged and acknowledged.
    for p in [&a, &b, &a] {
        let conn = connector(p).connect(addr).await.unwrap();
        let out = tokio::time::timeout(
            Duration::from_secs(20),
            p.node.run_connection(conn, Mode::UntilSynced),
        )
        .await
        .unwrap();
        assert!(out.synced, "{out:?}");
        assert_eq!(out.error, None);
        assert_eq!(out.peer, relay.cert.device());
    }
    assert_eq!(title(&a, cb).await.as_deref(), Some("Tunnel"));
    assert_eq!(title(&b, ca).await.as_deref(), Some("Stele"));
    let receipts = a
        .node
        .with_engine(|e| e.store().receipts().unwrap().len())
        .await
        .unwrap();
    assert!(receipts > 0, "the relay's receipts are kept");

    // Live: both stay connected; an edit on `a` reaches `b` without a new sync.
    let mut b_events = b.node.subscribe();
    let live_a = {
        let conn = connector(&a).connect(addr).await.unwrap();
        let node = a.node.clone();
        tokio::spawn(async move { node.run_connection(conn, Mode::Live).await })
    };
    let live_b = {
        let conn = connector(&b).connect(addr).await.unwrap();
        let node = b.node.clone();
        tokio::spawn(async move { node.run_connection(conn, Mode::Live).await })
    };
    // Wait until b is synced, then edit on a.
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Ok(ev) = b_events.recv().await
                && matches!(ev.kind, NodeEventKind::Synced)
            {
                break;
            }
        }
    })
    .await
    .unwrap();
    a.node
        .with_engine(move |e| {
            e.store()
                .edit_case(&ca, now(), "title", |d| {
                    d.set_field(Field::Title, "Stele (live)")
                })
                .unwrap();
            e.log_grew();
        })
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Ok(ev) = b_events.recv().await
                && matches!(ev.kind, NodeEventKind::Session(Event::Stored { .. }))
                && title(&b, ca).await.as_deref() == Some("Stele (live)")
            {
                break;
            }
        }
    })
    .await
    .expect("the live change reached b");
    for n in [&a.node, &b.node, &relay.node] {
        n.shutdown().await;
    }
    let (oa, ob) = (live_a.await.unwrap(), live_b.await.unwrap());
    assert!(oa.synced && ob.synced);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_device_is_told_it_is_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let hq = HqRoot::from_secret(SecretKey::from_seed(&[201; 32]));
    let relay = peer(&dir, &hq, 1, Role::Relay);
    let lost = peer(&dir, &hq, 2, Role::Field);
    let addr = serve(&relay).await;
    let list = hq
        .revoke(
            None,
            Revocation::new(lost.cert.device(), now(), "lost at the airport").accepting(0, 0),
            now(),
        )
        .unwrap();
    relay
        .node
        .with_engine(move |e| e.adopt_revocations(list).unwrap())
        .await
        .unwrap();
    let conn = connector(&lost).connect(addr).await.unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        lost.node.run_connection(conn, Mode::UntilSynced),
    )
    .await
    .unwrap();
    assert!(!out.synced);
    let error = out.error.unwrap();
    assert!(
        error.contains("revoked") && error.contains("lost at the airport"),
        "{error}"
    );
}

/// Opens a live session from `p` to `addr` in the background.
async fn live(p: &Peer, addr: SocketAddr) -> tokio::task::JoinHandle<fieldsync_node::ConnOutcome> {
    let conn = connector(p).connect(addr).await.unwrap();
    let node = p.node.clone();
    tokio::spawn(async move { node.run_connection(conn, Mode::Live).await })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headquarters_receipt_reaches_a_live_device_through_its_office() {
    let dir = tempfile::tempdir().unwrap();
    let root = HqRoot::from_secret(SecretKey::from_seed(&[202; 32]));
    let hq = peer_at(&dir, &root, 1, Role::Relay, HQ_OFFICE);
    let office = peer(&dir, &root, 2, Role::Relay);
    let a = peer(&dir, &root, 3, Role::Field);
    let hq_addr = serve(&hq).await;
    let office_addr = serve(&office).await;
    let uplink = live(&office, hq_addr).await;
    let mut events = a.node.subscribe();
    let session = live(&a, office_addr).await;
    tokio::time::timeout(Duration::from_secs(20), async {
        while !matches!(events.recv().await.unwrap().kind, NodeEventKind::Synced) {}
    })
    .await
    .expect("a synced with its office");

    // An edit while everything is connected: it travels up, and
    // headquarters' receipt comes back down through the office, live.
    let case = new_case(&a, 1, "Ledger").await;
    let head = a
        .node
        .with_engine(|e| e.store().log_head().unwrap())
        .await
        .unwrap();
    assert!(head > 0);
    let (upstream, by) = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let ev = events.recv().await.unwrap();
            if let NodeEventKind::Session(Event::RelayedReceipt { upstream, through }) = ev.kind
                && through >= head
            {
                return (upstream, ev.peer);
            }
        }
    })
    .await
    .expect("headquarters' receipt reached the device through the office");
    assert_eq!(upstream, hq.cert.device());
    assert_eq!(by, office.cert.device());
    let kept = a
        .node
        .with_engine(move |e| e.store().latest_receipt(&upstream).unwrap())
        .await
        .unwrap()
        .expect("kept");
    assert!(kept.through >= head);
    assert_eq!(title(&hq, case).await.as_deref(), Some("Ledger"));
    for n in [&a.node, &office.node, &hq.node] {
        n.shutdown().await;
    }
    let _ = (session.await, uplink.await);
}
