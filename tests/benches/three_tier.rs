//! Three-tier propagation (issue 5): what an office relay between the field
//! and headquarters (HQ) costs, against the same changes sent to HQ
//! directly, in the same run. The goal: the office tier adds under 20 % to
//! the bytes on HQ's links and under one extra WAN round trip.
//!
//! Everything runs in this process over real QUIC on loopback. HQ and the
//! offices are relay `Node`s with relay certificates, real redb files in a
//! temporary directory and durable (group) commits; an office keeps a live
//! session upstream over a `Connector`, exactly as a device would. Every
//! measured link goes through a UDP delay proxy (`fieldsync_tests::delay`)
//! that holds each datagram for a fixed one-way delay each way and counts
//! what crosses: *wire* bytes are whole QUIC packets (UDP payloads: QUIC
//! headers, encryption, handshakes and ACKs included, IP/UDP headers not);
//! *session* bytes are FieldSync frames (`ConnOutcome::bytes_sent` and
//! `bytes_received`).
//!
//! **Part 1, one change from the field to HQ**, R times (after 2 warm-up
//! changes; the two paths interleaved), live sessions on every link:
//! - *direct*: a field device → HQ over the WAN;
//! - *via office*: a field device → its office over the LAN, the office → HQ
//!   over the WAN.
//!
//! Time runs from the edit (the device's own durable commit included) until
//! HQ holds the change durably (HQ's `Stored` event, then its store flushed
//! and the change found in it). Wire bytes per change are counted on each
//! link from the edit until the link is quiet again after the
//! acknowledgements; session bytes per change are the live sessions' totals
//! less the cheapest of three sessions that had nothing to exchange, over
//! the changes. The breakdown per link and direction, the sizes of an
//! envelope and of a receipt, and the acknowledgements HQ got on each path
//! say where the bytes go. Each path
//! has an HQ of its own (two identical relays), so that neither HQ tells the
//! other path's peers that its log moved. Geometry: device–office 1 ms one
//! way (LAN), office–HQ and device–HQ 50 ms (the same WAN); then again with
//! no added delay (through the same counting proxy, which then forwards at
//! once).
//!
//! **Part 2, HQ ingest**: 5 offices × 100 devices, each device pushing C
//! changes (of a compartment of its own, so HQ sends nothing back and the
//! run measures ingest). The devices first sync with their offices while
//! the offices have no uplink; then the offices connect to a fresh HQ, and
//! the time runs from their first connect until HQ holds every change
//! durably. Then the same devices push the same changes directly to another
//! fresh HQ, 100 connections at a time. Once with no added delay, once with
//! the WAN delay on HQ's links. The devices keep their stores in memory
//! (their medium is not measured). Besides time and bytes, the table gives
//! the datagrams the proxy's socket and HQ's socket dropped for a full
//! receive buffer (losses QUIC then recovers from, in time and bytes), and
//! with the WAN delay the bytes sent toward HQ in each round trip.
//!
//! `cargo bench -p fieldsync-tests --bench three_tier`; `BENCH_QUICK=1`
//! for a reduced run (R = 10, 2 offices × 20 devices) under a minute.
//! Knobs: `BENCH_WAN_MS` (50), `BENCH_LAN_MS` (1), `BENCH_REPS` (R, 20),
//! `BENCH_OFFICES` (5), `BENCH_DEVICES` (per office, 100), `BENCH_CHANGES`
//! (C, 20).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fieldsync_case::{CaseKind, ChangeHash};
use fieldsync_identity::{CaseId, DeviceId, HqRoot, Role, SecretKey};
use fieldsync_node::{ConnOutcome, Mode, Node, NodeConfig, NodeEvent, NodeEventKind, now};
use fieldsync_protocol::{Event, NodeRole};
use fieldsync_store::{NewCase, NewDevice, Store, StoreKind};
use fieldsync_tests::delay::{DelayProxy, LinkBytes, udp_socket_drops};
use fieldsync_tests::net::{env_usize, issue, serve_relay};
use fieldsync_transport::{Connection, Connector, Identity, PeerPolicy, TransportSettings};
use tokio::sync::{Semaphore, broadcast, mpsc};
use tokio::task::JoinHandle;

/// Unmeasured changes per path before the R measured ones.
const WARMUP: usize = 2;
/// Longest wait for one node event (part 1).
const EVENT_WAIT: Duration = Duration::from_secs(30);
/// Longest wait for a one-shot session, or for a live one to end.
const SESSION_WAIT: Duration = Duration::from_secs(120);
/// Longest wait for links to fall quiet.
const QUIET_WAIT: Duration = Duration::from_secs(30);
/// Longest wait for HQ to hold every change (part 2).
const INGEST_WAIT: Duration = Duration::from_secs(600);
/// Connections open at once while devices push (part 2).
const CONCURRENCY: usize = 100;

// ---------------------------------------------------------------- plumbing

/// A store, as a redb file at `path` or in memory, whose key and log epoch
/// derive from `n` (distinct `n`, distinct nodes).
fn store(path: Option<&Path>, n: u64, name: &str, kind: StoreKind) -> Store {
    let mut seed = [0x5a; 32];
    seed[..8].copy_from_slice(&n.to_le_bytes());
    let mut epoch = [0xa5; 16];
    epoch[..8].copy_from_slice(&n.to_le_bytes());
    let new = NewDevice {
        seed,
        name,
        epoch,
        now: now(),
        kind,
    };
    match path {
        Some(p) => Store::create(p, new).unwrap(),
        None => Store::create_in_memory(new).unwrap(),
    }
}

/// Starts a node on `store` with a certificate for `role` reading (and,
/// for a field device, writing) `compartments`.
fn start(
    hq: &HqRoot,
    store: Store,
    serial: u64,
    role: Role,
    compartments: &[String],
) -> (Node, Identity) {
    let names: Vec<&str> = compartments.iter().map(String::as_str).collect();
    let cert = issue(hq, store.device().id(), serial, role, &names).unwrap();
    let identity = Identity::new(store.device().secret_key()).unwrap();
    let node_role = if role == Role::Relay {
        NodeRole::Relay
    } else {
        NodeRole::Device
    };
    let node = Node::start(store, NodeConfig::new(node_role, cert, hq.public())).unwrap();
    (node, identity)
}

/// A relay (HQ or an office): a redb file in `dir`, served on loopback.
async fn relay(
    hq: &HqRoot,
    dir: &Path,
    name: &str,
    n: u64,
    compartments: &[String],
) -> (Node, Identity, SocketAddr) {
    let s = store(
        Some(&dir.join(format!("{name}.redb"))),
        n,
        name,
        StoreKind::Relay,
    );
    let (node, identity) = start(hq, s, n, Role::Relay, compartments);
    let addr = serve_relay(&node, &identity).await.unwrap();
    (node, identity, addr)
}

/// A connector (one UDP socket) for `identity`, default settings.
fn connector(identity: &Identity) -> Connector {
    Connector::new(
        identity,
        TransportSettings::default(),
        PeerPolicy::accept_any(),
    )
    .unwrap()
}

/// Connection attempts that failed and were retried, so far.
static RETRIES: AtomicUsize = AtomicUsize::new(0);

/// Connects, retrying with backoff (a relay turns handshakes away beyond
/// its limit) for about ten seconds before giving up.
async fn connect(connector: &Connector, addr: SocketAddr) -> Connection {
    let mut wait = Duration::from_millis(50);
    loop {
        match connector.connect(addr).await {
            Ok(c) => return c,
            Err(e) if wait < Duration::from_secs(10) => {
                RETRIES.fetch_add(1, Ordering::Relaxed);
                eprintln!("retrying after: {e}");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            Err(e) => panic!("cannot connect to {addr}: {e}"),
        }
    }
}

/// A one-shot session from `node` to `addr`; panics unless it synced.
async fn sync_once(node: &Node, connector: &Connector, addr: SocketAddr) -> ConnOutcome {
    let conn = connect(connector, addr).await;
    let out = tokio::time::timeout(SESSION_WAIT, node.run_connection(conn, Mode::UntilSynced))
        .await
        .unwrap_or_else(|_| panic!("a one-shot sync to {addr} took over {SESSION_WAIT:?}"));
    assert!(out.synced && out.error.is_none(), "one-shot sync: {out:?}");
    out
}

/// Session bytes both ways.
fn session_bytes(out: &ConnOutcome) -> u64 {
    out.bytes_sent + out.bytes_received
}

/// The outcome of a live session's task, once its node has shut down.
async fn ended(task: JoinHandle<ConnOutcome>, what: &str) -> ConnOutcome {
    tokio::time::timeout(SESSION_WAIT, task)
        .await
        .unwrap_or_else(|_| panic!("{what}: the live session did not end within {SESSION_WAIT:?}"))
        .unwrap()
}

/// A node's events, each stamped with the moment it was published.
struct Watch {
    rx: mpsc::UnboundedReceiver<(Instant, NodeEvent)>,
}

impl Watch {
    /// Starts recording `node`'s events.
    fn new(node: &Node) -> Self {
        let mut sub = node.subscribe();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                match sub.recv().await {
                    Ok(ev) => {
                        if tx.send((Instant::now(), ev)).is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        eprintln!("warning: {n} node events missed");
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Self { rx }
    }

    /// Waits (at most [`EVENT_WAIT`]) for the next event `pick` accepts;
    /// returns when it was published.
    async fn until(&mut self, what: &str, mut pick: impl FnMut(&NodeEvent) -> bool) -> Instant {
        let deadline = tokio::time::Instant::now() + EVENT_WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some((at, ev))) if pick(&ev) => return at,
                Ok(Some(_)) => {}
                Ok(None) => panic!("{what}: the node stopped"),
                Err(_) => panic!("{what}: not within {EVENT_WAIT:?}"),
            }
        }
    }
}

/// A batch from `peer` stored at least one change.
fn stored_from(peer: DeviceId) -> impl FnMut(&NodeEvent) -> bool {
    move |ev| {
        ev.peer == peer
            && matches!(&ev.kind, NodeEventKind::Session(Event::Stored { report, .. }) if report.stored > 0)
    }
}

/// `peer` acknowledged this node's log through `seq` or further.
fn acked_by(peer: DeviceId, seq: u64) -> impl FnMut(&NodeEvent) -> bool {
    move |ev| {
        ev.peer == peer
            && matches!(&ev.kind, NodeEventKind::Session(Event::Acknowledged { through, .. }) if *through >= seq)
    }
}

/// The session with `peer` is synced.
fn synced_with(peer: DeviceId) -> impl FnMut(&NodeEvent) -> bool {
    move |ev| ev.peer == peer && matches!(ev.kind, NodeEventKind::Synced)
}

/// Counts the acknowledgements `node` gets from `peer` from now on.
struct AckCount {
    with_receipt: Arc<AtomicUsize>,
    all: Arc<AtomicUsize>,
}

impl AckCount {
    /// (with a signed receipt, all) so far.
    fn get(&self) -> (usize, usize) {
        (
            self.with_receipt.load(Ordering::Relaxed),
            self.all.load(Ordering::Relaxed),
        )
    }
}

/// Starts counting the acknowledgements `node` gets from `peer`.
fn count_acks(node: &Node, peer: DeviceId) -> AckCount {
    let count = AckCount {
        with_receipt: Arc::new(AtomicUsize::new(0)),
        all: Arc::new(AtomicUsize::new(0)),
    };
    let (with_receipt, all) = (Arc::clone(&count.with_receipt), Arc::clone(&count.all));
    let mut sub = node.subscribe();
    tokio::spawn(async move {
        loop {
            match sub.recv().await {
                Ok(ev) if ev.peer == peer => {
                    if let NodeEventKind::Session(Event::Acknowledged { receipt, .. }) = ev.kind {
                        all.fetch_add(1, Ordering::Relaxed);
                        if receipt {
                            with_receipt.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    eprintln!("warning: {n} node events missed");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    count
}

/// Opens a live session from `node` to `addr` in a task of its own and
/// waits until it is synced with `relay`. Returns the task; it ends (with
/// the session's byte counts) when the node shuts down.
async fn live(
    node: &Node,
    events: &mut Watch,
    connector: &Connector,
    addr: SocketAddr,
    relay: DeviceId,
) -> JoinHandle<ConnOutcome> {
    let conn = connect(connector, addr).await;
    let n = node.clone();
    let task = tokio::spawn(async move { n.run_connection(conn, Mode::Live).await });
    events
        .until("a live session syncs", synced_with(relay))
        .await;
    task
}

/// Waits until nothing crossed `links` for `quiet`.
async fn wait_quiet(links: &[&DelayProxy], quiet: Duration) {
    let started = Instant::now();
    let snapshot = || links.iter().map(|l| l.bytes()).collect::<Vec<_>>();
    let mut last = snapshot();
    let mut since = Instant::now();
    while since.elapsed() < quiet {
        assert!(
            started.elapsed() < QUIET_WAIT,
            "the links were not quiet for {quiet:?} within {QUIET_WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
        let now = snapshot();
        if now != last {
            last = now;
            since = Instant::now();
        }
    }
}

/// The `p` quantile (0..=1) of `values`, by nearest rank.
fn quantile(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = (p * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// The median (lower, by nearest rank).
fn median(values: &[f64]) -> f64 {
    quantile(values, 0.5)
}

/// `d` in milliseconds.
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The link geometry: one-way delays.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    /// Office–HQ and device–HQ.
    wan: Duration,
    /// Device–office.
    lan: Duration,
}

impl Geometry {
    fn label(&self) -> String {
        if self.wan.is_zero() && self.lan.is_zero() {
            "loopback, no added delay".into()
        } else {
            format!(
                "WAN {} ms / LAN {} ms one way",
                self.wan.as_millis(),
                self.lan.as_millis()
            )
        }
    }
}

// ------------------------------------------------------- part 1: one change

/// Creates a case of "general" on `device`.
async fn new_case(device: &Node, n: u64) -> CaseId {
    device
        .with_engine(move |e| {
            let mut id = [0x11; 16];
            id[..8].copy_from_slice(&n.to_be_bytes());
            e.store()
                .create_case(
                    &NewCase {
                        id: CaseId::from_bytes(id),
                        kind: CaseKind::CriminalInvestigation,
                        office: "rome",
                        compartment: "general",
                        title: "Container flagged at the port",
                    },
                    now(),
                )
                .unwrap()
        })
        .await
        .unwrap()
}

/// Adds a note to `case` on `device` (a durable commit) and tells its
/// sessions; returns the change and its position in the device's log.
async fn note(device: &Node, case: CaseId, text: String) -> (ChangeHash, u64) {
    device
        .with_engine(move |e| {
            let me = e.store().device().id();
            let hash = e
                .store()
                .edit_case(&case, now(), "note", |d| d.add_note(me, now(), &text))
                .unwrap()
                .expect("a note is a change");
            let seq = e.store().log_head().unwrap();
            e.log_grew();
            (hash, seq)
        })
        .await
        .unwrap()
}

/// Waits until `hq` holds `hash` of `case` durably, stored by the session
/// with `from`; returns when it stored it (its `Stored` event) and when it
/// was durable.
async fn hq_holds(
    hq: &Node,
    events: &mut Watch,
    from: DeviceId,
    case: CaseId,
    hash: ChangeHash,
) -> (Instant, Instant) {
    loop {
        let stored = events
            .until("HQ stores the change", stored_from(from))
            .await;
        // The engine flushes what it stored right after; a flush here is
        // that same fsync, and the change is then durable.
        let held = hq
            .with_engine(move |e| {
                e.flush();
                e.store().has_change(&case, &hash).unwrap()
            })
            .await
            .unwrap();
        if held {
            return (stored, Instant::now());
        }
    }
}

/// One change's journey.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// The device's edit (its durable commit).
    edit: Duration,
    /// Until the office stored it (its `Stored` event; via office only).
    office: Option<Duration>,
    /// Until HQ stored it (its `Stored` event).
    hq_stored: Duration,
    /// Until HQ held it durably.
    hq: Duration,
    /// Wire bytes on HQ's link.
    hq_link: LinkBytes,
    /// Wire bytes on the device–office link (via office only).
    lan_link: LinkBytes,
}

/// Session bytes per change on one link, each way (up = toward HQ).
#[derive(Debug, Clone, Copy, Default)]
struct SessionCost {
    up: f64,
    down: f64,
}

impl SessionCost {
    /// The live session's bytes less the fixed cost of a session, over
    /// `changes`; `live` and `base` are the outcomes on the device side.
    fn per_change(live: &ConnOutcome, base: &ConnOutcome, changes: usize) -> Self {
        let per = |a: u64, b: u64| a.saturating_sub(b) as f64 / changes as f64;
        Self {
            up: per(live.bytes_sent, base.bytes_sent),
            down: per(live.bytes_received, base.bytes_received),
        }
    }

    fn total(&self) -> f64 {
        self.up + self.down
    }
}

/// What part 1 measured in one geometry.
struct Propagation {
    geometry: Geometry,
    direct: Vec<Sample>,
    via: Vec<Sample>,
    /// Session bytes per change: device–HQ (direct), device–office, office–HQ.
    session_direct: SessionCost,
    session_lan: SessionCost,
    session_wan: SessionCost,
    /// Mean one-way delays the proxies applied: WAN, LAN.
    applied: (Duration, Duration),
    /// Sizes of what one change carries: its signed envelope, HQ's signed
    /// receipt, and the receipt of HQ's the office carries down (if any).
    envelope: usize,
    receipt: usize,
    relayed: Option<usize>,
    /// Acknowledgements HQ got during the changes (with a signed receipt,
    /// of all): from the direct device, from the office; and the changes
    /// sent on each path (warm-up included).
    acks_direct: (usize, usize),
    acks_office: (usize, usize),
    changes: usize,
    /// A session with nothing to exchange, device → HQ: wire, session bytes.
    idle_wire: LinkBytes,
    idle_session: u64,
}

/// The size of the last change in `device`'s log, and of the last receipt
/// it holds from `relay`.
async fn sizes(device: &Node, relay: DeviceId) -> (usize, Option<usize>) {
    device
        .with_engine(move |e| {
            let s = e.store();
            let head = s.log_head().unwrap();
            let last = s.read_log(head - 1, 1, usize::MAX, |_| true).unwrap();
            let receipt = s.latest_receipt(&relay).unwrap().map(|r| r.bytes.len());
            (last.entries[0].envelope.len(), receipt)
        })
        .await
        .unwrap()
}

/// Part 1 in one geometry: two identical HQs, one for each path, so that
/// neither HQ tells the other path's peers about changes that are not
/// theirs; R changes on each path, interleaved.
async fn propagation(hq_root: &HqRoot, geometry: Geometry, reps: usize) -> Propagation {
    let dir = tempfile::tempdir().unwrap();
    let general = vec!["general".to_owned()];
    let (hq_d, _, hq_d_addr) = relay(hq_root, dir.path(), "hq-direct", 1, &general).await;
    let (hq_o, _, hq_o_addr) = relay(hq_root, dir.path(), "hq-office", 2, &general).await;
    let (office, office_identity, office_addr) =
        relay(hq_root, dir.path(), "office", 3, &general).await;
    let device = |n: u64, name: &str| {
        let s = store(
            Some(&dir.path().join(format!("{name}.redb"))),
            n,
            name,
            StoreKind::Device,
        );
        start(hq_root, s, n, Role::Field, &general)
    };
    let (d1, d1_identity) = device(4, "direct-device");
    let (d2, d2_identity) = device(5, "office-device");
    let wan_direct = DelayProxy::start(hq_d_addr, geometry.wan).await.unwrap();
    let wan_office = DelayProxy::start(hq_o_addr, geometry.wan).await.unwrap();
    let lan = DelayProxy::start(office_addr, geometry.lan).await.unwrap();
    let (c1, c2, co) = (
        connector(&d1_identity),
        connector(&d2_identity),
        connector(&office_identity),
    );
    let case1 = new_case(&d1, 1).await;
    let case2 = new_case(&d2, 2).await;

    // Everything there is goes up once; then sessions with nothing to
    // exchange give each link's fixed session cost (hellos and close).
    sync_once(&d1, &c1, wan_direct.addr()).await;
    sync_once(&d2, &c2, lan.addr()).await;
    sync_once(&office, &co, wan_office.addr()).await;
    // After the last acknowledgement a QUIC ACK may still follow (up to
    // 25 ms later) and cross the link: quiet means nothing for this long.
    let quiet = 2 * geometry.wan.max(geometry.lan) + Duration::from_millis(50);
    let (base_direct, idle_wire) = idle(&d1, &c1, &wan_direct, quiet).await;
    let (base_lan, _) = idle(&d2, &c2, &lan, quiet).await;
    let (base_wan, _) = idle(&office, &co, &wan_office, quiet).await;
    let idle_session = session_bytes(&base_direct);

    let mut hq_d_ev = Watch::new(&hq_d);
    let mut hq_o_ev = Watch::new(&hq_o);
    let mut office_ev = Watch::new(&office);
    let mut d1_ev = Watch::new(&d1);
    let mut d2_ev = Watch::new(&d2);
    let live_d1 = live(&d1, &mut d1_ev, &c1, wan_direct.addr(), hq_d.device()).await;
    let live_d2 = live(&d2, &mut d2_ev, &c2, lan.addr(), office.device()).await;
    let live_office = live(
        &office,
        &mut office_ev,
        &co,
        wan_office.addr(),
        hq_o.device(),
    )
    .await;

    let acks_d = count_acks(&hq_d, d1.device());
    let acks_o = count_acks(&hq_o, office.device());
    wait_quiet(&[&wan_direct, &wan_office, &lan], quiet).await;
    let (mut direct, mut via) = (Vec::new(), Vec::new());
    for i in 0..WARMUP + reps {
        let text = format!("Sighting {i}: the grey van left the north gate at dawn");

        // Direct: device → HQ.
        let before = wan_direct.bytes();
        let t0 = Instant::now();
        let (hash, seq) = note(&d1, case1, text.clone()).await;
        let edit = t0.elapsed();
        let (stored, at_hq) = hq_holds(&hq_d, &mut hq_d_ev, d1.device(), case1, hash).await;
        d1_ev
            .until(
                "HQ acknowledges the direct change",
                acked_by(hq_d.device(), seq),
            )
            .await;
        wait_quiet(&[&wan_direct], quiet).await;
        let d = Sample {
            edit,
            office: None,
            hq_stored: stored - t0,
            hq: at_hq - t0,
            hq_link: wan_direct.bytes().since(&before),
            lan_link: LinkBytes::default(),
        };

        // Via the office: device → office → HQ.
        let (before_lan, before_wan) = (lan.bytes(), wan_office.bytes());
        let t0 = Instant::now();
        let (hash, seq) = note(&d2, case2, text).await;
        let edit = t0.elapsed();
        let (stored, at_hq) = hq_holds(&hq_o, &mut hq_o_ev, office.device(), case2, hash).await;
        let at_office = office_ev
            .until("the office stores the change", stored_from(d2.device()))
            .await;
        d2_ev
            .until(
                "the office acknowledges the change",
                acked_by(office.device(), seq),
            )
            .await;
        let office_seq = office
            .with_engine(|e| e.store().log_head().unwrap())
            .await
            .unwrap();
        office_ev
            .until(
                "HQ acknowledges the office's change",
                acked_by(hq_o.device(), office_seq),
            )
            .await;
        wait_quiet(&[&lan, &wan_office], quiet).await;
        let v = Sample {
            edit,
            office: Some(at_office - t0),
            hq_stored: stored - t0,
            hq: at_hq - t0,
            hq_link: wan_office.bytes().since(&before_wan),
            lan_link: lan.bytes().since(&before_lan),
        };
        if i >= WARMUP {
            direct.push(d);
            via.push(v);
        }
    }

    let applied = (wan_direct.bytes().mean_delay(), lan.bytes().mean_delay());
    let (envelope, receipt) = sizes(&d1, hq_d.device()).await;
    let (_, relayed) = sizes(&d2, hq_o.device()).await;
    let acks_direct = acks_d.get();
    let acks_office = acks_o.get();
    d1.shutdown().await;
    d2.shutdown().await;
    let out_d1 = ended(live_d1, "device → HQ").await;
    let out_d2 = ended(live_d2, "device → office").await;
    office.shutdown().await;
    let out_office = ended(live_office, "office → HQ").await;
    hq_d.shutdown().await;
    hq_o.shutdown().await;
    let changes = WARMUP + reps;
    Propagation {
        geometry,
        direct,
        via,
        session_direct: SessionCost::per_change(&out_d1, &base_direct, changes),
        session_lan: SessionCost::per_change(&out_d2, &base_lan, changes),
        session_wan: SessionCost::per_change(&out_office, &base_wan, changes),
        applied,
        envelope,
        receipt: receipt.expect("the direct device holds HQ's receipt"),
        relayed,
        acks_direct,
        acks_office,
        changes,
        idle_wire,
        idle_session,
    }
}

/// One-shot sessions with nothing to exchange from `node` over `link`:
/// the outcome of the cheapest of three, and the wire bytes it took from
/// its connect until the link was quiet after its close. (Some such
/// sessions cost more: when the device holds no cursor into HQ's log, HQ
/// opens with a repair digest; the live sessions measured do not.)
async fn idle(
    node: &Node,
    c: &Connector,
    link: &DelayProxy,
    quiet: Duration,
) -> (ConnOutcome, LinkBytes) {
    let mut cheapest: Option<(ConnOutcome, LinkBytes)> = None;
    for _ in 0..3 {
        wait_quiet(&[link], quiet).await;
        let before = link.bytes();
        let out = sync_once(node, c, link.addr()).await;
        wait_quiet(&[link], quiet).await;
        let wire = link.bytes().since(&before);
        if cheapest
            .as_ref()
            .is_none_or(|(o, _)| session_bytes(&out) < session_bytes(o))
        {
            cheapest = Some((out, wire));
        }
    }
    cheapest.expect("three sessions ran")
}

/// The median of `f` over `samples`.
fn med(samples: &[Sample], f: impl Fn(&Sample) -> f64) -> f64 {
    median(&samples.iter().map(f).collect::<Vec<_>>())
}

/// The 90th percentile of `f` over `samples`.
fn p90(samples: &[Sample], f: impl Fn(&Sample) -> f64) -> f64 {
    quantile(&samples.iter().map(f).collect::<Vec<_>>(), 0.9)
}

/// Edit to HQ durable, ms.
fn hq_ms(s: &Sample) -> f64 {
    ms(s.hq)
}

/// Edit committed to HQ durable, ms.
fn after_edit(s: &Sample) -> f64 {
    ms(s.hq.saturating_sub(s.edit))
}

/// Wire bytes on HQ's link.
fn hq_bytes(s: &Sample) -> f64 {
    s.hq_link.total() as f64
}

/// Wire bytes on both hops.
fn both_bytes(s: &Sample) -> f64 {
    (s.hq_link.total() + s.lan_link.total()) as f64
}

/// Part 1's tables and verdicts.
fn print_propagation(results: &[Propagation], reps: usize) {
    println!(
        "Part 1: one change from the field to HQ, R = {reps} per path (after {WARMUP} warm-up, the paths interleaved), live sessions on every link"
    );
    println!();
    println!(
        "Time from the edit (ms; medians unless p90): the device's durable commit, the office's `Stored` event, HQ's `Stored` event, HQ holding it durably"
    );
    println!();
    println!(
        "| geometry (delay applied: WAN / LAN) | path | edit | → office stored | → HQ stored | → HQ durable | → HQ durable p90 | after the edit → HQ durable |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in results {
        let label = format!(
            "{} ({:.2} / {:.2} ms)",
            r.geometry.label(),
            ms(r.applied.0),
            ms(r.applied.1)
        );
        let row = |name: &str, s: &[Sample]| {
            format!(
                "{name} | {:.1} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
                med(s, |s| ms(s.edit)),
                if s.iter().all(|s| s.office.is_some()) {
                    format!("{:.1}", med(s, |s| s.office.map_or(f64::NAN, ms)))
                } else {
                    String::new()
                },
                med(s, |s| ms(s.hq_stored)),
                med(s, hq_ms),
                p90(s, hq_ms),
                med(s, after_edit),
            )
        };
        println!("| {label} | {}", row("direct", &r.direct));
        println!("| | {}", row("via office", &r.via));
        let extra = med(&r.via, hq_ms) - med(&r.direct, hq_ms);
        let rtt = 2.0 * ms(r.geometry.wan);
        let in_rtt = if rtt > 0.0 {
            format!(" ({:.2} WAN RTT)", extra / rtt)
        } else {
            String::new()
        };
        println!(
            "| | via office − direct | | | {:+.1} | {extra:+.1}{in_rtt} | {:+.1} | {:+.1} |",
            med(&r.via, |s| ms(s.hq_stored)) - med(&r.direct, |s| ms(s.hq_stored)),
            p90(&r.via, hq_ms) - p90(&r.direct, hq_ms),
            med(&r.via, after_edit) - med(&r.direct, after_edit),
        );
    }

    println!();
    println!(
        "Bytes per change (wire = QUIC packets as UDP payloads, medians; session = FieldSync frames, means)"
    );
    println!();
    println!(
        "| geometry | path | HQ link wire | device–office wire | both hops wire | HQ link session | both hops session |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in results {
        let (sd, sw) = (r.session_direct.total(), r.session_wan.total());
        let sv = sw + r.session_lan.total();
        let (wd, wv) = (med(&r.direct, hq_bytes), med(&r.via, hq_bytes));
        let (bd, bv) = (med(&r.direct, both_bytes), med(&r.via, both_bytes));
        println!(
            "| {} | direct | {wd:.0} | | {bd:.0} | {sd:.0} | {sd:.0} |",
            r.geometry.label()
        );
        println!(
            "| | via office | {wv:.0} | {:.0} | {bv:.0} | {sw:.0} | {sv:.0} |",
            med(&r.via, |s| s.lan_link.total() as f64),
        );
        println!(
            "| | via office / direct | {:.2}x | | {:.2}x | {:.2}x | {:.2}x |",
            wv / wd,
            bv / bd,
            sw / sd,
            sv / sd
        );
    }
    println!();
    println!(
        "Where one change's bytes go, per link (up = toward HQ; wire: medians, session: means):"
    );
    println!();
    println!(
        "| geometry | link | wire up B | wire down B | datagrams up | datagrams down | session up B | session down B |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in results {
        let links = |samples: &[Sample], pick: fn(&Sample) -> LinkBytes| {
            samples.iter().map(pick).collect::<Vec<_>>()
        };
        let rows = [
            (
                "device → HQ (direct)",
                links(&r.direct, |s| s.hq_link),
                r.session_direct,
            ),
            (
                "device → office",
                links(&r.via, |s| s.lan_link),
                r.session_lan,
            ),
            ("office → HQ", links(&r.via, |s| s.hq_link), r.session_wan),
        ];
        for (k, (link, wire, session)) in rows.into_iter().enumerate() {
            let m = |f: fn(&LinkBytes) -> u64| {
                median(&wire.iter().map(|b| f(b) as f64).collect::<Vec<_>>())
            };
            println!(
                "| {} | {link} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
                if k == 0 {
                    r.geometry.label()
                } else {
                    String::new()
                },
                m(|b| b.up),
                m(|b| b.down),
                m(|b| b.up_datagrams),
                m(|b| b.down_datagrams),
                session.up,
                session.down,
            );
        }
    }
    println!();
    for r in results {
        println!(
            "({}: one change's signed envelope {} B; HQ's signed receipt {} B; HQ's receipt as the office carries it down to the device {}; over {} changes a path, HQ got {} acknowledgements from the direct device ({} with a signed receipt) and {} from the office ({} with a signed receipt); a session with nothing to exchange, device → HQ: {} wire B in {} datagrams, {} session B)",
            r.geometry.label(),
            r.envelope,
            r.receipt,
            r.relayed.map_or("none".to_owned(), |b| format!("{b} B")),
            r.changes,
            r.acks_direct.1,
            r.acks_direct.0,
            r.acks_office.1,
            r.acks_office.0,
            r.idle_wire.total(),
            r.idle_wire.datagrams(),
            r.idle_session,
        );
    }

    println!();
    for r in results {
        let extra = med(&r.via, hq_ms) - med(&r.direct, hq_ms);
        let wire = med(&r.via, hq_bytes) / med(&r.direct, hq_bytes) - 1.0;
        let session = r.session_wan.total() / r.session_direct.total() - 1.0;
        let rtt = 2.0 * ms(r.geometry.wan);
        let time_goal = if rtt > 0.0 {
            format!(
                "{extra:+.1} ms = {:.2} WAN RTT (goal < 1: {})",
                extra / rtt,
                if extra < rtt { "met" } else { "NOT met" }
            )
        } else {
            format!("{extra:+.1} ms (no WAN delay, no round trip to compare with)")
        };
        println!(
            "{}: the office tier adds {time_goal}; on HQ's link {:+.0} % wire bytes, {:+.0} % session bytes (goal < +20 %: {})",
            r.geometry.label(),
            100.0 * wire,
            100.0 * session,
            if wire < 0.2 && session < 0.2 {
                "met"
            } else {
                "NOT met"
            }
        );
    }
}

// ------------------------------------------------------------ part 2: ingest

/// One device of the fleet.
struct FleetDevice {
    node: Node,
    connector: Arc<Connector>,
    compartment: String,
}

/// Device `n`'s store, in memory (its medium is not what is measured):
/// `changes` changes of its own compartment, one case per ten changes.
fn fleet_store(n: usize, changes: usize) -> Store {
    let s = store(
        None,
        1_000 + n as u64,
        &format!("device-{n}"),
        StoreKind::Device,
    );
    let me = s.device().id();
    let compartment = format!("unit-{n}");
    let cases: Vec<CaseId> = (0..changes.div_ceil(10).max(1))
        .map(|k| {
            let mut id = [0x22; 16];
            id[..8].copy_from_slice(&(n as u64).to_be_bytes());
            id[8] = k as u8;
            s.create_case(
                &NewCase {
                    id: CaseId::from_bytes(id),
                    kind: CaseKind::CriminalInvestigation,
                    office: "rome",
                    compartment: &compartment,
                    title: "Container flagged at the port",
                },
                now(),
            )
            .unwrap()
        })
        .collect();
    for i in cases.len()..changes {
        s.edit_case(&cases[i % cases.len()], now(), "note", |d| {
            d.add_note(
                me,
                now(),
                &format!("Sighting {i}: the grey van left the north gate at dawn"),
            )
        })
        .unwrap();
    }
    s
}

/// The fleet's stores, made on every core.
fn fleet_stores(devices: usize, changes: usize) -> Vec<Store> {
    let threads = std::thread::available_parallelism().map_or(2, usize::from);
    let mut stores: Vec<Option<Store>> = (0..devices).map(|_| None).collect();
    std::thread::scope(|scope| {
        let chunk = devices.div_ceil(threads).max(1);
        for (c, slots) in stores.chunks_mut(chunk).enumerate() {
            scope.spawn(move || {
                for (i, slot) in slots.iter_mut().enumerate() {
                    *slot = Some(fleet_store(c * chunk + i, changes));
                }
            });
        }
    });
    stores.into_iter().map(Option::unwrap).collect()
}

/// What one ingest arm measured.
struct IngestRun {
    /// Connections to HQ.
    connections: usize,
    took: Duration,
    /// Wire bytes on HQ's links (handshakes included).
    wire: LinkBytes,
    /// Session bytes on HQ's links.
    session: u64,
    /// UDP datagrams dropped for a full receive buffer by the proxy's
    /// socket and by HQ's (`None` where the OS does not say).
    drops: (Option<u64>, Option<u64>),
    /// Connection attempts to HQ that failed and were retried.
    retries: usize,
    /// Bytes toward HQ in each WAN round trip from the first connect until
    /// HQ held everything (empty with no added delay).
    ramp: Vec<u64>,
}

/// Samples, every 5 ms, the bytes `link` carried toward its target since
/// `from`, until told to stop.
struct Sampler {
    stop: tokio::sync::oneshot::Sender<()>,
    task: JoinHandle<Vec<(Duration, u64)>>,
}

impl Sampler {
    fn start(link: Arc<DelayProxy>, from: Instant) -> Self {
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let base = link.bytes().up;
        let task = tokio::spawn(async move {
            let mut samples = vec![(Duration::ZERO, 0)];
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            loop {
                tokio::select! {
                    _ = tick.tick() => samples.push((from.elapsed(), link.bytes().up - base)),
                    _ = &mut stopped => return samples,
                }
            }
        });
        Self { stop, task }
    }

    /// Stops; the bytes carried in each `window` since `from`.
    async fn per_window(self, window: Duration) -> Vec<u64> {
        let _ = self.stop.send(());
        let samples = self.task.await.unwrap();
        if window.is_zero() {
            return Vec::new();
        }
        let at = |t: Duration| {
            samples
                .iter()
                .take_while(|s| s.0 <= t)
                .last()
                .map_or(0, |s| s.1)
        };
        let end = samples.last().map_or(Duration::ZERO, |s| s.0);
        let windows = (end.as_secs_f64() / window.as_secs_f64()).ceil() as u32;
        (0..windows)
            .map(|k| at(window * (k + 1)) - at(window * k))
            .collect()
    }
}

/// Polls `hq` until it holds `total` changes, then makes them durable;
/// returns when they were.
async fn hq_holds_all(hq: &Node, total: u64, what: &str) -> Instant {
    let started = Instant::now();
    loop {
        let head = hq
            .with_engine(|e| e.store().log_head().unwrap())
            .await
            .unwrap();
        if head >= total {
            assert_eq!(head, total, "{what}: HQ holds more than was sent");
            hq.with_engine(|e| e.flush()).await.unwrap();
            return Instant::now();
        }
        assert!(
            started.elapsed() < INGEST_WAIT,
            "{what}: HQ holds {head} of {total} changes after {INGEST_WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Every device of `fleet` pushes its log in a one-shot session to
/// `addr_of(its index)`, [`CONCURRENCY`] sessions at a time; the tasks
/// return the outcomes.
fn push_all(
    fleet: &[FleetDevice],
    addr_of: impl Fn(usize) -> SocketAddr,
) -> Vec<JoinHandle<ConnOutcome>> {
    let limit = Arc::new(Semaphore::new(CONCURRENCY));
    fleet
        .iter()
        .enumerate()
        .map(|(n, d)| {
            let limit = Arc::clone(&limit);
            let node = d.node.clone();
            let connector = Arc::clone(&d.connector);
            let addr = addr_of(n);
            tokio::spawn(async move {
                let _permit = limit.acquire_owned().await.unwrap();
                sync_once(&node, &connector, addr).await
            })
        })
        .collect()
}

/// The outcomes of `tasks`, all within [`INGEST_WAIT`].
async fn outcomes(tasks: Vec<JoinHandle<ConnOutcome>>, what: &str) -> Vec<ConnOutcome> {
    let deadline = tokio::time::Instant::now() + INGEST_WAIT;
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        let o = tokio::time::timeout_at(deadline, t)
            .await
            .unwrap_or_else(|_| panic!("{what}: not done within {INGEST_WAIT:?}"))
            .unwrap();
        out.push(o);
    }
    out
}

/// Datagrams dropped so far by `front`'s socket and by HQ's at `hq`.
fn socket_drops(front: &DelayProxy, hq: SocketAddr) -> (Option<u64>, Option<u64>) {
    (
        udp_socket_drops(front.addr().port()),
        udp_socket_drops(hq.port()),
    )
}

/// The office arm: the devices load their offices (no uplink yet, not
/// measured), then the offices connect to a fresh HQ over `wan` and HQ
/// ingests what they carry. Returns the run and how long loading took.
async fn via_offices(
    hq_root: &HqRoot,
    dir: &Path,
    fleet: &[FleetDevice],
    offices: usize,
    changes: usize,
    wan: Duration,
    base: u64,
) -> (IngestRun, Duration) {
    let per_office = fleet.len() / offices;
    let total = (fleet.len() * changes) as u64;
    let all: Vec<String> = fleet.iter().map(|d| d.compartment.clone()).collect();
    let (hq, _, hq_addr) = relay(hq_root, dir, &format!("hq-{base}"), base, &all).await;
    let mut office_nodes = Vec::new();
    for o in 0..offices {
        let theirs = &all[o * per_office..(o + 1) * per_office];
        let n = base + 10 + o as u64;
        office_nodes.push(relay(hq_root, dir, &format!("office-{n}"), n, theirs).await);
    }

    let loading = Instant::now();
    let addrs: Vec<SocketAddr> = office_nodes.iter().map(|o| o.2).collect();
    outcomes(
        push_all(fleet, |n| addrs[n / per_office]),
        "the devices load their offices",
    )
    .await;
    let loaded = loading.elapsed();
    let mut watches = Vec::new();
    for (node, ..) in &office_nodes {
        let head = node
            .with_engine(|e| e.store().log_head().unwrap())
            .await
            .unwrap();
        assert_eq!(
            head as usize,
            per_office * changes,
            "an office holds its devices' changes"
        );
        watches.push((Watch::new(node), head));
    }

    let front = Arc::new(DelayProxy::start(hq_addr, wan).await.unwrap());
    let retries = RETRIES.load(Ordering::Relaxed);
    let started = Instant::now();
    let sampler = Sampler::start(Arc::clone(&front), started);
    let mut uplinks = Vec::new();
    for (node, identity, _) in &office_nodes {
        let node = node.clone();
        // The task owns the connector as long as the session runs.
        let c = connector(identity);
        let addr = front.addr();
        uplinks.push(tokio::spawn(async move {
            let conn = connect(&c, addr).await;
            node.run_connection(conn, Mode::Live).await
        }));
    }
    let took = hq_holds_all(&hq, total, "ingest via the offices").await - started;
    let ramp = sampler.per_window(2 * wan).await;
    for (events, head) in &mut watches {
        events
            .until(
                "HQ acknowledges an office's log",
                acked_by(hq.device(), *head),
            )
            .await;
    }
    wait_quiet(&[&front], 2 * wan + Duration::from_millis(50)).await;
    let wire = front.bytes();
    let drops = socket_drops(&front, hq_addr);
    for (node, ..) in &office_nodes {
        node.shutdown().await;
    }
    let mut session = 0;
    for t in uplinks {
        session += session_bytes(&ended(t, "office → HQ").await);
    }
    hq.shutdown().await;
    let run = IngestRun {
        connections: offices,
        took,
        wire,
        session,
        drops,
        retries: RETRIES.load(Ordering::Relaxed) - retries,
        ramp,
    };
    (run, loaded)
}

/// The direct arm: every device pushes its log to a fresh HQ over `wan`.
async fn direct(
    hq_root: &HqRoot,
    dir: &Path,
    fleet: &[FleetDevice],
    changes: usize,
    wan: Duration,
    base: u64,
) -> IngestRun {
    let total = (fleet.len() * changes) as u64;
    let all: Vec<String> = fleet.iter().map(|d| d.compartment.clone()).collect();
    let (hq, _, hq_addr) = relay(hq_root, dir, &format!("hq-{base}"), base, &all).await;
    let front = Arc::new(DelayProxy::start(hq_addr, wan).await.unwrap());
    let addr = front.addr();
    let retries = RETRIES.load(Ordering::Relaxed);
    let started = Instant::now();
    let sampler = Sampler::start(Arc::clone(&front), started);
    let tasks = push_all(fleet, |_| addr);
    let took = hq_holds_all(&hq, total, "direct ingest").await - started;
    let ramp = sampler.per_window(2 * wan).await;
    let session = outcomes(tasks, "the devices push to HQ")
        .await
        .iter()
        .map(session_bytes)
        .sum();
    wait_quiet(&[&front], 2 * wan + Duration::from_millis(50)).await;
    let wire = front.bytes();
    let drops = socket_drops(&front, hq_addr);
    hq.shutdown().await;
    IngestRun {
        connections: fleet.len(),
        took,
        wire,
        session,
        drops,
        retries: RETRIES.load(Ordering::Relaxed) - retries,
        ramp,
    }
}

/// Part 2 in each of `wans` (the one-way delay on HQ's links), printed.
async fn ingest(
    hq_root: &HqRoot,
    stores: Vec<Store>,
    made: Duration,
    offices: usize,
    changes: usize,
    wans: &[Duration],
) {
    let devices = stores.len();
    let total = devices * changes;
    let fleet: Vec<FleetDevice> = stores
        .into_iter()
        .enumerate()
        .map(|(n, s)| {
            let compartment = format!("unit-{n}");
            let (node, identity) = start(
                hq_root,
                s,
                1_000 + n as u64,
                Role::Field,
                std::slice::from_ref(&compartment),
            );
            FleetDevice {
                node,
                connector: Arc::new(connector(&identity)),
                compartment,
            }
        })
        .collect();
    let cert_size = |compartments: &[String]| {
        let names: Vec<&str> = compartments.iter().map(String::as_str).collect();
        let id = fleet[0].node.device();
        issue(hq_root, id, 1, Role::Relay, &names)
            .unwrap()
            .to_bytes()
            .len()
    };
    let all: Vec<String> = fleet.iter().map(|d| d.compartment.clone()).collect();
    let hq_cert = cert_size(&all);
    let office_cert = cert_size(&all[..devices / offices]);
    let dir = tempfile::tempdir().unwrap();
    let mut rows = Vec::new();
    for (g, &wan) in wans.iter().enumerate() {
        let base = 100 * (g as u64 + 1);
        let (office_run, loaded) =
            via_offices(hq_root, dir.path(), &fleet, offices, changes, wan, base).await;
        let direct_run = direct(hq_root, dir.path(), &fleet, changes, wan, base + 1).await;
        rows.push((wan, office_run, loaded, direct_run));
    }
    for d in &fleet {
        d.node.shutdown().await;
    }

    println!();
    println!(
        "Part 2: HQ ingest, {offices} offices × {} devices × {changes} changes = {total} changes (devices made in {:.1} s), via the offices and directly, a fresh HQ each",
        devices / offices,
        made.as_secs_f64()
    );
    println!(
        "(time from the first connect to HQ until HQ holds every change durably; bytes on HQ's links; direct: {CONCURRENCY} connections at a time)"
    );
    println!(
        "(each device writes a compartment of its own, so HQ's certificate lists all {devices}: {hq_cert} B, in the Hello of every session HQ opens; an office's lists its {} devices' compartments: {office_cert} B)",
        devices / offices
    );
    println!();
    println!(
        "| HQ links | arm | connections to HQ | time s | changes/s | wire KB | wire B/change | datagrams | session KB | session B/change | UDP drops: proxy / HQ | connects retried |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let rate = |r: &IngestRun| total as f64 / r.took.as_secs_f64();
    let per = |b: u64| b as f64 / total as f64;
    let drops = |r: &IngestRun| {
        let show = |d: Option<u64>| d.map_or("n/a".to_owned(), |d| d.to_string());
        format!("{} / {}", show(r.drops.0), show(r.drops.1))
    };
    for (wan, o, loaded, d) in &rows {
        let label = if wan.is_zero() {
            "loopback, no added delay".to_owned()
        } else {
            format!("WAN {} ms one way", wan.as_millis())
        };
        for (arm, r) in [
            (
                format!(
                    "via {offices} offices (loaded in {:.1} s, not counted)",
                    loaded.as_secs_f64()
                ),
                o,
            ),
            ("direct".to_owned(), d),
        ] {
            println!(
                "| {label} | {arm} | {} | {:.2} | {:.0} | {:.1} | {:.0} | {} | {:.1} | {:.0} | {} | {} |",
                r.connections,
                r.took.as_secs_f64(),
                rate(r),
                r.wire.total() as f64 / 1e3,
                per(r.wire.total()),
                r.wire.datagrams(),
                r.session as f64 / 1e3,
                per(r.session),
                drops(r),
                r.retries,
            );
        }
        println!(
            "| | offices / direct | | {:.2}x | {:.2}x | {:.2}x | | {:.2}x | {:.2}x | | | |",
            o.took.as_secs_f64() / d.took.as_secs_f64(),
            rate(o) / rate(d),
            o.wire.total() as f64 / d.wire.total() as f64,
            o.wire.datagrams() as f64 / d.wire.datagrams() as f64,
            o.session as f64 / d.session as f64,
        );
    }
    for (wan, o, _, d) in &rows {
        if wan.is_zero() {
            continue;
        }
        let kb = |r: &IngestRun| {
            r.ramp
                .iter()
                .map(|b| format!("{:.0}", *b as f64 / 1e3))
                .collect::<Vec<_>>()
                .join(" ")
        };
        println!();
        println!(
            "KB sent toward HQ in each WAN round trip ({} ms) from the first connect until HQ held everything:",
            2 * wan.as_millis()
        );
        println!("- via {offices} offices: {}", kb(o));
        println!("- direct: {}", kb(d));
    }
}

fn main() {
    let quick = std::env::var_os("BENCH_QUICK").is_some();
    let wan = Duration::from_millis(env_usize("BENCH_WAN_MS", 50) as u64);
    let lan = Duration::from_millis(env_usize("BENCH_LAN_MS", 1) as u64);
    let reps = env_usize("BENCH_REPS", if quick { 10 } else { 20 }).max(1);
    let offices = env_usize("BENCH_OFFICES", if quick { 2 } else { 5 }).clamp(1, 89);
    let per_office = env_usize("BENCH_DEVICES", if quick { 20 } else { 100 }).max(1);
    let changes = env_usize("BENCH_CHANGES", 20).max(1);
    let hq_root = HqRoot::from_secret(SecretKey::from_seed(&[203; 32]));

    let made = Instant::now();
    let stores = fleet_stores(offices * per_office, changes);
    let made = made.elapsed();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut results = Vec::new();
        for geometry in [
            Geometry { wan, lan },
            Geometry {
                wan: Duration::ZERO,
                lan: Duration::ZERO,
            },
        ] {
            results.push(propagation(&hq_root, geometry, reps).await);
        }
        print_propagation(&results, reps);
        ingest(
            &hq_root,
            stores,
            made,
            offices,
            changes,
            &[Duration::ZERO, wan],
        )
        .await;
    });
}
