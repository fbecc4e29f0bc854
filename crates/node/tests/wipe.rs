//! Wipe orders over real QUIC on loopback, with real redb files: a device
//! gets its order at the start of a session, or live while it is connected
//! (headquarters issues it; the office relay passes it down at once), and a
//! revoked device still gets its order before it is refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Grant, Peer, connector, peer_with, serve};

use std::net::SocketAddr;
use std::time::Duration;

use fieldsync_identity::{HQ_OFFICE, HqRoot, Revocation, Role, SecretKey, WipeOrder};
use fieldsync_node::{ConnOutcome, Mode, NodeEvent, NodeEventKind, now};
use fieldsync_protocol::Event;
use tempfile::TempDir;
use tokio::sync::broadcast;

const WAIT: Duration = Duration::from_secs(20);

fn peer(dir: &TempDir, hq: &HqRoot, seed: u8, role: Role, office: &str) -> Peer {
    let grant = Grant {
        role,
        office,
        read: &["general"],
        write: &["general"],
    };
    peer_with(dir, hq, seed, grant, |c| c)
}

/// Opens a session from `p` to `addr` in the background.
async fn connect(p: &Peer, addr: SocketAddr, mode: Mode) -> tokio::task::JoinHandle<ConnOutcome> {
    let conn = connector(p).connect(addr).await.unwrap();
    let node = p.node.clone();
    tokio::spawn(async move { node.run_connection(conn, mode).await })
}

/// Headquarters issues `order` while it runs, as `fieldsync-server wipe` does.
async fn issue(hq: &Peer, order: &WipeOrder) {
    let order = order.clone();
    hq.node
        .with_engine(move |e| {
            e.store().issue_wipe_order(&order, now()).unwrap();
            e.wipe_orders_changed();
        })
        .await
        .unwrap();
}

async fn wait_for(
    events: &mut broadcast::Receiver<NodeEvent>,
    what: &str,
    mut found: impl FnMut(&NodeEventKind) -> bool,
) {
    tokio::time::timeout(WAIT, async {
        while !found(&events.recv().await.unwrap().kind) {}
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

fn is_ordered(kind: &NodeEventKind, nonce: [u8; 16]) -> bool {
    matches!(kind, NodeEventKind::Session(Event::WipeOrdered { order }) if order.nonce() == nonce)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connected_device_gets_its_order_live_through_its_office() {
    let dir = tempfile::tempdir().unwrap();
    let root = HqRoot::from_secret(SecretKey::from_seed(&[203; 32]));
    let hq = peer(&dir, &root, 1, Role::Relay, HQ_OFFICE);
    let office = peer(&dir, &root, 2, Role::Relay, "rome");
    let lost = peer(&dir, &root, 3, Role::Field, "rome");
    let hq_addr = serve(&hq).await;
    let office_addr = serve(&office).await;
    let mut office_events = office.node.subscribe();
    let uplink = connect(&office, hq_addr, Mode::Live).await;
    wait_for(&mut office_events, "the uplink to sync", |k| {
        matches!(k, NodeEventKind::Synced)
    })
    .await;
    let mut events = lost.node.subscribe();
    let session = connect(&lost, office_addr, Mode::Live).await;
    wait_for(&mut events, "the device to sync", |k| {
        matches!(k, NodeEventKind::Synced)
    })
    .await;

    // Both sessions are live when headquarters issues the order.
    let order = root
        .order_wipe(lost.cert.device(), [42; 16], now(), 7, "stolen from a car")
        .unwrap();
    issue(&hq, &order).await;
    wait_for(&mut events, "the order to arrive live", |k| {
        is_ordered(k, [42; 16])
    })
    .await;
    let outcome = tokio::time::timeout(WAIT, session).await.unwrap().unwrap();
    assert_eq!(outcome.error, None, "the device ends its session itself");
    let pending = lost
        .node
        .with_engine(|e| e.store().pending_wipe().unwrap())
        .await
        .unwrap()
        .expect("pending until the keys are destroyed");
    assert_eq!(pending.order, order.to_bytes());
    let device = lost.cert.device();
    let (held, delivered) = office
        .node
        .with_engine(move |e| {
            (
                e.store().held_wipe_order(&device).unwrap(),
                e.store().wipe_delivery(&device).unwrap(),
            )
        })
        .await
        .unwrap();
    assert_eq!(held, Some(order.to_bytes()));
    assert_eq!(delivered.unwrap().nonce, [42; 16]);
    for n in [&lost.node, &office.node, &hq.node] {
        n.shutdown().await;
    }
    let _ = uplink.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_gets_its_order_at_the_start_of_a_session_even_when_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let root = HqRoot::from_secret(SecretKey::from_seed(&[204; 32]));
    let hq = peer(&dir, &root, 1, Role::Relay, HQ_OFFICE);
    let quiet = peer(&dir, &root, 2, Role::Field, "rome");
    let lost = peer(&dir, &root, 3, Role::Field, "rome");
    let addr = serve(&hq).await;

    // Not revoked: the order arrives at the start of a one-shot sync.
    let order = root
        .order_wipe(quiet.cert.device(), [1; 16], now(), 7, "left in a taxi")
        .unwrap();
    issue(&hq, &order).await;
    let mut events = quiet.node.subscribe();
    let out = tokio::time::timeout(WAIT, connect(&quiet, addr, Mode::UntilSynced).await)
        .await
        .unwrap()
        .unwrap();
    assert!(!out.synced);
    let mut got = false;
    while let Ok(ev) = events.try_recv() {
        got |= is_ordered(&ev.kind, [1; 16]);
    }
    assert!(got, "the order arrived at session start");

    // Ordered wiped, then revoked: the order still reaches it, then the refusal.
    let order = root
        .order_wipe(lost.cert.device(), [2; 16], now(), 7, "seized")
        .unwrap();
    issue(&hq, &order).await;
    let list = root
        .revoke(
            None,
            Revocation::new(lost.cert.device(), now(), "seized at the border"),
            now(),
        )
        .unwrap();
    hq.node
        .with_engine(move |e| e.adopt_revocations(list).unwrap())
        .await
        .unwrap();
    let mut events = lost.node.subscribe();
    let out = tokio::time::timeout(WAIT, connect(&lost, addr, Mode::UntilSynced).await)
        .await
        .unwrap()
        .unwrap();
    assert!(!out.synced);
    let mut got = false;
    while let Ok(ev) = events.try_recv() {
        got |= is_ordered(&ev.kind, [2; 16]);
    }
    assert!(got, "the revoked device got its order");
    let pending = lost
        .node
        .with_engine(|e| {
            (
                e.store().pending_wipe().unwrap(),
                e.store().last_relay_contact().unwrap(),
            )
        })
        .await
        .unwrap();
    assert_eq!(pending.0.unwrap().order, order.to_bytes());
    assert_eq!(pending.1, None, "a refused session is no contact");
    for n in [&lost.node, &quiet.node, &hq.node] {
        n.shutdown().await;
    }
}
