//! Limits under flood. A real relay (`fieldsync-server serve`, a child
//! process, so that its memory is its own) is hit at the same time by
//!
//! - (a) handshakes with bad certificates, 10,000 a minute: self-signed,
//!   from a foreign headquarters, expired (each a fresh connection that
//!   presents its certificate in its `Hello`, as a device would);
//! - (b) 1,000 devices with valid certificates holding a session open (they
//!   answer every batch, as an idle device does);
//! - (c) one device editing and pushing signed changes as fast as it can
//!   over a live session (100 edits at a time, each batch forwarded at once);
//!
//! while honest devices sync again and again (an edit, connect, sync,
//! disconnect) and their handshake latency is recorded: from the start of
//! the connection to the relay's `Hello` accepted. The same honest rounds
//! and the same push against the idle relay, earlier in the same run, are
//! the baseline. Reported: the relay's peak resident memory against its
//! 512 MiB budget, honest handshake p50/p99 (goal: p99 under 2 s), the bad
//! handshakes refused, changes ingested per second, and the flood/idle ratios.
//!
//! First, apart: N devices connect at the same moment to a bare listener,
//! with the OS's default UDP receive buffer and with the 8 MiB the listener
//! asks for by default; datagrams the kernel dropped and the time until all
//! are in.
//!
//! `cargo bench -p fieldsync-tests --bench flood` (a burst of 500; 20 s idle,
//! 60 s of flood, 1,000 holders, 8 honest devices); `BENCH_QUICK=1` runs a
//! burst of 250, 8 s and 15 s, 250 holders, 4 honest devices. Knobs:
//! `FLOOD_BURST`, `FLOOD_SECONDS`, `FLOOD_IDLE_SECONDS`, `FLOOD_HOLDERS`,
//! `FLOOD_BAD_PER_MINUTE`, `FLOOD_HONEST`. Every phase is bounded in count
//! and time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fieldsync_case::{CaseKind, Field};
use fieldsync_identity::{
    CERTIFICATE_VERSION, CaseId, CertificateBody, Compartment, DeviceCertificate, DeviceId, HqRoot,
    Role, SecretKey, Timestamp,
};
use fieldsync_node::{Mode, Node, NodeConfig, NodeEventKind, now};
use fieldsync_protocol::{
    Ack, CloseCode, Event, Hello, MIN_PROTOCOL_VERSION, Message, NodeRole, PROTOCOL_VERSION,
};
use fieldsync_store::{NewCase, NewDevice, Store, StoreKind};
use fieldsync_tests::Server;
use fieldsync_tests::net::{env_usize, issue};
use fieldsync_transport::{Connection, Connector, Identity, PeerPolicy, TransportSettings};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// The relay's memory budget.
const BUDGET_MIB: f64 = 512.0;
/// Bad certificates are presented from this many keys, in turn.
const BAD_KEYS: usize = 256;
/// Bad attempts in flight at most; beyond it an attempt is skipped (counted).
const BAD_IN_FLIGHT: usize = 512;
/// Any one connection attempt or read gives up after this.
const ATTEMPT_LIMIT: Duration = Duration::from_secs(20);

struct Sizes {
    flood: Duration,
    idle: Duration,
    holders: usize,
    bad_per_minute: usize,
    honest: usize,
    burst: usize,
}

impl Sizes {
    fn from_env() -> Self {
        let quick = std::env::var_os("BENCH_QUICK").is_some();
        let pick = |name, full, reduced| env_usize(name, if quick { reduced } else { full });
        Self {
            flood: Duration::from_secs(pick("FLOOD_SECONDS", 60, 15) as u64),
            idle: Duration::from_secs(pick("FLOOD_IDLE_SECONDS", 20, 8) as u64),
            holders: pick("FLOOD_HOLDERS", 1000, 250),
            bad_per_minute: pick("FLOOD_BAD_PER_MINUTE", 10_000, 10_000).max(1),
            honest: pick("FLOOD_HONEST", 8, 4).max(1),
            burst: pick("FLOOD_BURST", 500, 250).max(1),
        }
    }
}

// ---- measurements ----

/// Resident memory of a process now and at its peak, in KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// UDP datagrams the kernel dropped for want of receive buffer (this
/// network namespace, every socket).
fn udp_receive_errors() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// Samples the relay's resident memory every 100 ms; the peak since the
/// last `take` is kept.
struct RssSampler {
    peak: Arc<AtomicU64>,
    /// (seconds since start, KiB), every 5 s.
    timeline: Arc<std::sync::Mutex<Vec<(u64, u64)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    fn start(pid: u32) -> Self {
        let peak = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let timeline = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (p, s, t) = (peak.clone(), stop.clone(), timeline.clone());
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let mut n = 0u64;
            while !s.load(Ordering::Relaxed) {
                let now = rss_kib(pid).0;
                p.fetch_max(now, Ordering::Relaxed);
                if n.is_multiple_of(50) {
                    t.lock().unwrap().push((started.elapsed().as_secs(), now));
                }
                n += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Self {
            peak,
            timeline,
            stop,
            thread: Some(thread),
        }
    }

    /// The peak since the last call, in MiB.
    fn take(&self) -> f64 {
        self.peak.swap(0, Ordering::Relaxed) as f64 / 1024.0
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

// ---- the devices ----

fn device_store(seed: u64, name: &str) -> Store {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    bytes[8] = 0xf1;
    Store::create_in_memory(NewDevice {
        seed: bytes,
        name,
        epoch: [seed as u8; 16],
        now: now(),
        kind: StoreKind::Device,
    })
    .unwrap()
}

fn connector(identity: &Identity) -> Connector {
    Connector::new(
        identity,
        TransportSettings::default(),
        PeerPolicy::accept_any(),
    )
    .unwrap()
}

fn new_case(store: &Store, id: u64, compartment: &str) -> CaseId {
    let mut bytes = [0x5a; 16];
    bytes[..8].copy_from_slice(&id.to_le_bytes());
    store
        .create_case(
            &NewCase {
                id: CaseId::from_bytes(bytes),
                kind: CaseKind::CriminalInvestigation,
                office: "rome",
                compartment,
                title: "Shipment",
            },
            now(),
        )
        .unwrap()
}

/// An honest device: a real node that edits one case and syncs it.
struct Honest {
    node: Node,
    connector: Connector,
    case: CaseId,
}

fn honest(hq: &HqRoot, n: usize) -> Honest {
    let store = device_store(1_000 + n as u64, &format!("honest-{n}"));
    let cert = issue(
        hq,
        store.device().id(),
        1_000 + n as u64,
        Role::Field,
        &["general"],
    )
    .unwrap();
    let case = new_case(&store, 1_000 + n as u64, "general");
    let connector = connector(&Identity::new(store.device().secret_key()).unwrap());
    let node = Node::start(store, NodeConfig::new(NodeRole::Device, cert, hq.public())).unwrap();
    Honest {
        node,
        connector,
        case,
    }
}

/// A device that pushes a backlog of signed changes, in 10 cases of its
/// own compartment (the relay has nothing to send back).
struct Pusher {
    node: Node,
    connector: Connector,
    cases: Vec<CaseId>,
}

fn pusher(hq: &HqRoot, n: u64) -> Pusher {
    let store = device_store(5_000 + n, &format!("pusher-{n}"));
    let compartment = format!("push-{n}");
    let cert = issue(
        hq,
        store.device().id(),
        5_000 + n,
        Role::Field,
        &[compartment.as_str()],
    )
    .unwrap();
    let cases: Vec<CaseId> = (0..10)
        .map(|k| new_case(&store, 5_000 + n * 100 + k, &compartment))
        .collect();
    let connector = connector(&Identity::new(store.device().secret_key()).unwrap());
    let node = Node::start(store, NodeConfig::new(NodeRole::Device, cert, hq.public())).unwrap();
    Pusher {
        node,
        connector,
        cases,
    }
}

impl Pusher {
    /// A first sync with only its cases, so that the relay knows where the
    /// device's log stands (the backlog then goes as a plain push).
    async fn prime(&self, addr: SocketAddr) {
        let conn = self.connector.connect(addr).await.unwrap();
        let outcome = tokio::time::timeout(
            ATTEMPT_LIMIT,
            self.node.run_connection(conn, Mode::UntilSynced),
        )
        .await
        .unwrap();
        assert!(outcome.synced, "{outcome:?}");
    }
}

/// A device's opening message.
fn hello(cert: &DeviceCertificate) -> Vec<u8> {
    Message::Hello(Hello {
        version: PROTOCOL_VERSION,
        min_version: MIN_PROTOCOL_VERSION,
        role: NodeRole::Device,
        certificate: cert.to_bytes(),
        epoch: [7; 16],
        head: 0,
        want: None,
        revocations: 0,
    })
    .encode()
}

/// A key with a transport identity and a certificate to present.
struct Presenter {
    connector: Connector,
    hello: Vec<u8>,
}

fn presenter(seed: u64, cert: impl FnOnce(DeviceId, &SecretKey) -> DeviceCertificate) -> Presenter {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    bytes[8] = 0xb0;
    let secret = SecretKey::from_seed(&bytes);
    let identity = Identity::new(&secret).unwrap();
    let cert = cert(identity.device(), &secret);
    Presenter {
        connector: connector(&identity),
        hello: hello(&cert),
    }
}

/// Certificates that must be refused: self-signed, from another
/// headquarters, or expired.
fn bad_certificate(
    hq: &HqRoot,
    n: usize,
    device: DeviceId,
    secret: &SecretKey,
) -> DeviceCertificate {
    let general = vec![Compartment::new("general").unwrap()];
    let (issuer, from, to) = match n % 3 {
        0 => (HqRoot::from_secret(secret.clone()), -3_600_000, 86_400_000),
        1 => (
            HqRoot::from_secret(SecretKey::from_seed(&[0xee; 32])),
            -3_600_000,
            86_400_000,
        ),
        _ => (hq.clone(), -2 * 86_400_000, -86_400_000),
    };
    issuer
        .issue(CertificateBody {
            version: CERTIFICATE_VERSION,
            serial: n as u64,
            issuer: issuer.public(),
            device,
            name: format!("bad-{n}"),
            office: "nowhere".into(),
            role: Role::Field,
            read: general.clone(),
            write: general,
            not_before: Timestamp::from_millis(now().as_millis() + from),
            not_after: Timestamp::from_millis(now().as_millis() + to),
        })
        .unwrap()
}

// ---- the flood ----

#[derive(Debug, Default)]
struct BadTally {
    attempts: AtomicU64,
    refused_at_hello: AtomicU64,
    refused_by_transport: AtomicU64,
    timed_out: AtomicU64,
    let_through: AtomicU64,
    skipped: AtomicU64,
}

/// One bad handshake: connect, present the certificate, expect a refusal.
async fn bad_attempt(p: Arc<Presenter>, addr: SocketAddr, tally: Arc<BadTally>) {
    let outcome = tokio::time::timeout(ATTEMPT_LIMIT, async {
        let mut conn = match p.connector.connect(addr).await {
            Ok(c) => c,
            Err(_) => return &tally.refused_by_transport,
        };
        if conn.write_frame(&p.hello).await.is_err() {
            return &tally.refused_by_transport;
        }
        loop {
            match conn.read_frame().await {
                Ok(Some(frame)) => match Message::decode(&frame) {
                    Ok(Message::Hello(_)) => continue,
                    Ok(Message::Close {
                        code: CloseCode::Certificate,
                        ..
                    }) => return &tally.refused_at_hello,
                    Ok(Message::Close { .. }) => return &tally.refused_by_transport,
                    _ => return &tally.let_through,
                },
                _ => return &tally.refused_by_transport,
            }
        }
    })
    .await;
    match outcome {
        Ok(counter) => counter,
        Err(_) => &tally.timed_out,
    }
    .fetch_add(1, Ordering::Relaxed);
}

/// Bad handshakes at `per_minute` until `until`.
async fn bad_flood(
    presenters: Vec<Arc<Presenter>>,
    addr: SocketAddr,
    per_minute: usize,
    until: Instant,
    tally: Arc<BadTally>,
) {
    let period = Duration::from_secs_f64(60.0 / per_minute as f64);
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut attempts = JoinSet::new();
    let mut n = 0usize;
    while Instant::now() < until {
        tokio::select! {
            () = tokio::time::sleep_until(until.into()) => break,
            _ = ticks.tick() => {
                tally.attempts.fetch_add(1, Ordering::Relaxed);
                if attempts.len() >= BAD_IN_FLIGHT {
                    tally.skipped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let p = presenters[n % presenters.len()].clone();
                n += 1;
                attempts.spawn(bad_attempt(p, addr, tally.clone()));
            }
            Some(_) = attempts.join_next(), if !attempts.is_empty() => {}
        }
    }
    while attempts.join_next().await.is_some() {}
}

#[derive(Debug, Default)]
struct HoldTally {
    open: AtomicUsize,
    peak: AtomicUsize,
    refused: AtomicU64,
    dropped: AtomicU64,
}

/// A device with a valid certificate that holds its session open until
/// `stop`, answering every batch.
async fn hold(
    p: Presenter,
    addr: SocketAddr,
    mut stop: watch::Receiver<bool>,
    tally: Arc<HoldTally>,
) {
    let mut wait = Duration::from_millis(100);
    let give_up = Instant::now() + ATTEMPT_LIMIT * 3;
    let mut conn: Connection = loop {
        let attempt = tokio::select! {
            r = p.connector.connect(addr) => r,
            _ = stop.changed() => return,
        };
        match attempt {
            Ok(c) => break c,
            Err(_) if Instant::now() < give_up => {
                tally.refused.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(_) => return,
        }
    };
    if conn.write_frame(&p.hello).await.is_err() {
        tally.dropped.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let mut counted = false;
    loop {
        let frame = tokio::select! {
            f = conn.read_frame() => f,
            _ = stop.changed() => break,
        };
        let Ok(Some(frame)) = frame else {
            tally.dropped.fetch_add(1, Ordering::Relaxed);
            break;
        };
        match Message::decode(&frame) {
            Ok(Message::Batch(b)) => {
                let ack = Message::Ack(Ack {
                    through: b.through,
                    receipt: None,
                });
                if conn.write_frame(&ack.encode()).await.is_err() {
                    tally.dropped.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
            Ok(Message::CaughtUp { .. }) if !counted => {
                counted = true;
                let now_open = tally.open.fetch_add(1, Ordering::Relaxed) + 1;
                tally.peak.fetch_max(now_open, Ordering::Relaxed);
            }
            Ok(Message::Close { .. }) => {
                tally.dropped.fetch_add(1, Ordering::Relaxed);
                break;
            }
            _ => {}
        }
    }
    if counted {
        tally.open.fetch_sub(1, Ordering::Relaxed);
    }
    conn.close(0, "done").await;
}

// ---- the honest rounds and the push ----

#[derive(Debug, Default)]
struct HonestRuns {
    /// QUIC (or TLS) handshake done: `connect` returned.
    connects: Vec<Duration>,
    /// The relay's `Hello` accepted: the session is open.
    handshakes: Vec<Duration>,
    syncs: Vec<Duration>,
    failures: usize,
}

/// Edit, connect, sync, disconnect, again, until `until`; one round at
/// most every 250 ms.
async fn honest_rounds(d: Arc<Honest>, addr: SocketAddr, until: Instant) -> HonestRuns {
    let mut runs = HonestRuns::default();
    let mut round = 0u64;
    while Instant::now() < until {
        round += 1;
        let case = d.case;
        d.node
            .with_engine(move |e| {
                e.store()
                    .edit_case(&case, now(), "note", |doc| {
                        doc.set_field(Field::Title, &format!("Round {round}"))
                    })
                    .unwrap();
            })
            .await
            .unwrap();
        let mut events = d.node.subscribe();
        let started = Instant::now();
        let conn = match tokio::time::timeout(ATTEMPT_LIMIT, d.connector.connect(addr)).await {
            Ok(Ok(c)) => c,
            _ => {
                runs.failures += 1;
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
        };
        let connected = started.elapsed();
        let node = d.node.clone();
        let session =
            tokio::spawn(async move { node.run_connection(conn, Mode::UntilSynced).await });
        let verified = tokio::time::timeout(ATTEMPT_LIMIT, async {
            loop {
                match events.recv().await {
                    Ok(ev) => {
                        if let NodeEventKind::Session(Event::PeerVerified { .. }) = ev.kind {
                            return true;
                        }
                        if let NodeEventKind::Ended { .. } = ev.kind {
                            return false;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return false,
                }
            }
        })
        .await;
        let handshake = started.elapsed();
        let outcome = tokio::time::timeout(ATTEMPT_LIMIT, session).await;
        match (verified, outcome) {
            (Ok(true), Ok(Ok(o))) if o.synced => {
                runs.connects.push(connected);
                runs.handshakes.push(handshake);
                runs.syncs.push(started.elapsed());
            }
            _ => runs.failures += 1,
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    runs
}

/// What the pusher got the relay to hold.
struct Pushed {
    /// Changes the relay acknowledged.
    changes: u64,
    /// From the connection's start to the last acknowledgement.
    took: Duration,
}

/// Edits as fast as it can, 100 changes at a time, while a live session
/// forwards them, until `until`; then waits (bounded) for the relay to
/// acknowledge the rest.
async fn push(pusher: Pusher, addr: SocketAddr, until: Instant) -> Option<Pushed> {
    let Pusher {
        node,
        connector,
        cases,
    } = pusher;
    let first = node
        .with_engine(|e| e.store().log_head().unwrap())
        .await
        .unwrap();
    let acked = Arc::new(AtomicU64::new(first));
    let mut events = node.subscribe();
    let counting = acked.clone();
    let listening = tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(ev) => {
                    if let NodeEventKind::Session(Event::Acknowledged { through, .. }) = ev.kind {
                        counting.fetch_max(through, Ordering::Relaxed);
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => break,
            }
        }
    });
    let started = Instant::now();
    let conn = tokio::time::timeout(ATTEMPT_LIMIT, connector.connect(addr))
        .await
        .ok()?
        .ok()?;
    let session = tokio::spawn({
        let node = node.clone();
        async move { node.run_connection(conn, Mode::Live).await }
    });
    let mut n = 0usize;
    while Instant::now() < until && !session.is_finished() {
        let cases = cases.clone();
        let from = n;
        node.with_engine(move |e| {
            for i in from..from + 100 {
                e.store()
                    .edit_case(&cases[i % cases.len()], now(), "note", |d| {
                        d.set_field(Field::Title, &format!("Shipment {i}: manifest checked"))
                    })
                    .unwrap();
            }
            e.log_grew();
        })
        .await
        .unwrap();
        n += 100;
    }
    let head = node
        .with_engine(|e| e.store().log_head().unwrap())
        .await
        .unwrap();
    let drained = tokio::time::timeout(Duration::from_secs(60), async {
        while acked.load(Ordering::Relaxed) < head && !session.is_finished() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let took = started.elapsed();
    let changes = acked.load(Ordering::Relaxed) - first;
    node.shutdown().await;
    let outcome = session.await.unwrap();
    listening.abort();
    if drained.is_err() || acked.load(Ordering::Relaxed) < head {
        println!(
            "the push did not finish: {changes} of {} acknowledged; {:?}",
            head - first,
            outcome.error
        );
        return None;
    }
    assert!(
        outcome.bytes_sent > changes * 100,
        "{} bytes for {changes} changes",
        outcome.bytes_sent
    );
    Some(Pushed { changes, took })
}

/// What one phase measured.
struct Phase {
    runs: HonestRuns,
    push: Option<Pushed>,
    rss_peak_mib: f64,
    udp_drops: u64,
}

async fn phase(
    honest: &[Arc<Honest>],
    pusher: Pusher,
    addr: SocketAddr,
    length: Duration,
    rss: &RssSampler,
) -> Phase {
    let drops = udp_receive_errors();
    rss.take();
    let until = Instant::now() + length;
    let mut rounds = JoinSet::new();
    for d in honest {
        rounds.spawn(honest_rounds(d.clone(), addr, until));
    }
    let pushed = tokio::spawn(push(pusher, addr, until));
    let mut runs = HonestRuns::default();
    while let Some(r) = rounds.join_next().await {
        let r = r.unwrap();
        runs.connects.extend(r.connects);
        runs.handshakes.extend(r.handshakes);
        runs.syncs.extend(r.syncs);
        runs.failures += r.failures;
    }
    let push = pushed.await.unwrap();
    runs.connects.sort();
    runs.handshakes.sort();
    runs.syncs.sort();
    Phase {
        runs,
        push,
        rss_peak_mib: rss.take(),
        udp_drops: udp_receive_errors().saturating_sub(drops),
    }
}

/// What a burst of simultaneous connections cost a bare listener.
struct Burst {
    granted: Option<usize>,
    all_in: Option<Duration>,
    p99: Duration,
    accepted: usize,
    drops: u64,
}

/// `n` devices connect to an in-process listener at the same moment and
/// send their opening frame; the listener's UDP receive buffer is `buffer`.
async fn burst(identities: &[Identity], buffer: Option<usize>) -> Burst {
    let relay = Identity::new(&SecretKey::from_seed(&[0x77; 32])).unwrap();
    let settings = TransportSettings {
        udp_receive_buffer: buffer,
        ..TransportSettings::default()
    };
    let listener = Arc::new(
        fieldsync_transport::Listener::bind(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            &relay,
            &settings,
            PeerPolicy::accept_any(),
        )
        .await
        .unwrap(),
    );
    let granted = listener.udp_receive_buffer();
    let addr = listener.local_addr();
    let accepted = Arc::new(AtomicUsize::new(0));
    let accepting = {
        let (listener, accepted) = (listener.clone(), accepted.clone());
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok(conn) = listener.accept().await {
                accepted.fetch_add(1, Ordering::Relaxed);
                held.push(conn);
            }
        })
    };
    let connectors: Vec<Connector> = identities.iter().map(connector).collect();
    let drops = udp_receive_errors();
    let started = Instant::now();
    let mut connecting = JoinSet::new();
    for c in connectors {
        connecting.spawn(async move {
            let mut conn = tokio::time::timeout(ATTEMPT_LIMIT, c.connect(addr))
                .await
                .ok()?
                .ok()?;
            conn.write_frame(b"hello").await.ok()?;
            Some((started.elapsed(), conn, c))
        });
    }
    let mut times = Vec::new();
    let mut open = Vec::new();
    while let Some(r) = connecting.join_next().await {
        if let Some((t, conn, c)) = r.unwrap() {
            times.push(t);
            open.push((conn, c));
        }
    }
    let n = identities.len();
    let all_in = tokio::time::timeout(ATTEMPT_LIMIT, async {
        while accepted.load(Ordering::Relaxed) < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .ok()
    .map(|()| started.elapsed());
    let drops = udp_receive_errors().saturating_sub(drops);
    times.sort();
    listener.close();
    accepting.abort();
    drop(open);
    Burst {
        granted,
        all_in,
        p99: percentile(&times, 0.99),
        accepted: accepted.load(Ordering::Relaxed),
        drops,
    }
}

/// The UDP receive buffer against a fleet reconnecting at once.
fn burst_section(rt: &tokio::runtime::Runtime, n: usize) {
    let identities: Vec<Identity> = (0..n)
        .map(|i| {
            let mut seed = [0x33u8; 32];
            seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
            Identity::new(&SecretKey::from_seed(&seed)).unwrap()
        })
        .collect();
    println!("{n} devices connecting at the same moment to a bare listener (QUIC, loopback):");
    println!();
    println!(
        "| UDP receive buffer | granted | accepted | all in | connect p99 | datagrams dropped |"
    );
    println!("|---|---|---|---|---|---|");
    for (name, buffer) in [
        ("OS default", None),
        ("8 MiB (the default setting)", Some(8 * 1024 * 1024)),
    ] {
        let b = rt.block_on(burst(&identities, buffer));
        println!(
            "| {name} | {} KiB | {} of {n} | {} | {:.0} ms | {} |",
            b.granted.unwrap_or(0) / 1024,
            b.accepted,
            b.all_in.map_or("not within 20 s".to_owned(), |d| format!(
                "{:.2} s",
                d.as_secs_f64()
            )),
            ms(b.p99),
            b.drops
        );
    }
    println!();
}

fn main() {
    let sizes = Sizes::from_env();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::new(&dir.path().join("hq"));
    server
        .run(&[
            "init",
            "--name",
            "hq-relay",
            "--compartments",
            "general,idle,push-1,push-2",
        ])
        .ok();
    let seed = hex::decode(
        std::fs::read_to_string(server.data().join("hq-root.key"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    let hq = HqRoot::from_secret(SecretKey::from_seed(&seed.try_into().unwrap()));
    let serving = server.serve("127.0.0.1:0");
    let addr = serving.addr;
    let pid = serving.pid();
    std::thread::sleep(Duration::from_millis(300));
    let (rss_start, _) = rss_kib(pid);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    burst_section(&rt, sizes.burst);
    let made = Instant::now();
    let (honest, pushers, holders, bad) = {
        let _in_runtime = rt.enter(); // endpoints bind their sockets on the runtime
        let honest: Vec<Arc<Honest>> = (0..sizes.honest)
            .map(|n| Arc::new(honest(&hq, n)))
            .collect();
        let pushers = [pusher(&hq, 1), pusher(&hq, 2)];
        let holders: Vec<Presenter> = (0..sizes.holders)
            .map(|n| {
                presenter(20_000 + n as u64, |device, _| {
                    issue(&hq, device, 20_000 + n as u64, Role::Field, &["idle"]).unwrap()
                })
            })
            .collect();
        let bad: Vec<Arc<Presenter>> = (0..BAD_KEYS)
            .map(|n| {
                Arc::new(presenter(90_000 + n as u64, |device, secret| {
                    bad_certificate(&hq, n, device, secret)
                }))
            })
            .collect();
        (honest, pushers, holders, bad)
    };
    println!(
        "Flood on a real relay (fieldsync-server serve, pid {pid}) at {addr}; {} honest devices, \
         {} holders, {} bad handshakes/min, a device editing and pushing as fast as it can; \
         made in {:.1} s",
        sizes.honest,
        sizes.holders,
        sizes.bad_per_minute,
        made.elapsed().as_secs_f64()
    );
    let rss = RssSampler::start(pid);
    let [push_idle, push_flood] = pushers;

    let (idle, flood, bad_tally, hold_tally, flood_took) = rt.block_on(async {
        for p in [&push_idle, &push_flood] {
            p.prime(addr).await;
        }
        // Idle: the honest rounds and the push alone.
        let idle = phase(&honest, push_idle, addr, sizes.idle, &rss).await;

        // Flood: everything at once.
        let started = Instant::now();
        let until = started + sizes.flood;
        let (stop_tx, stop_rx) = watch::channel(false);
        let hold_tally = Arc::new(HoldTally::default());
        let mut holding = JoinSet::new();
        for p in holders {
            holding.spawn(hold(p, addr, stop_rx.clone(), hold_tally.clone()));
        }
        let bad_tally = Arc::new(BadTally::default());
        let flooding = tokio::spawn(bad_flood(
            bad,
            addr,
            sizes.bad_per_minute,
            until,
            bad_tally.clone(),
        ));
        let flood = phase(&honest, push_flood, addr, sizes.flood, &rss).await;
        let _ = tokio::time::timeout(ATTEMPT_LIMIT * 2, flooding).await;
        let flood_took = started.elapsed();
        let _ = stop_tx.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(30), async {
            while holding.join_next().await.is_some() {}
        })
        .await;
        for d in &honest {
            d.node.shutdown().await;
        }
        (idle, flood, bad_tally, hold_tally, flood_took)
    });
    let timeline = rss.timeline.lock().unwrap().clone();
    drop(rss);
    let (rss_end, hwm) = rss_kib(pid);
    let stopped = serving.stop();

    let mib = |kib: u64| kib as f64 / 1024.0;
    let rate = |p: &Phase| {
        p.push
            .as_ref()
            .map(|d| d.changes as f64 / d.took.as_secs_f64())
    };
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    let pct = |v: &[Duration], p: f64| ms(percentile(v, p));
    println!();
    println!(
        "| relay | honest rounds | failed | connect p50 / p99 | handshake p50 / p99 / max | sync p50 / p99 | changes pushed | changes/s | RSS peak | UDP drops |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (name, p) in [("idle", &idle), ("under flood", &flood)] {
        let r = &p.runs;
        println!(
            "| {name} | {} | {} | {:.0} / {:.0} ms | {:.0} / {:.0} / {:.0} ms | {:.0} / {:.0} ms | {} | {} | {:.1} MiB | {} |",
            r.handshakes.len(),
            r.failures,
            pct(&r.connects, 0.5),
            pct(&r.connects, 0.99),
            pct(&r.handshakes, 0.5),
            pct(&r.handshakes, 0.99),
            pct(&r.handshakes, 1.0),
            pct(&r.syncs, 0.5),
            pct(&r.syncs, 0.99),
            p.push
                .as_ref()
                .map_or("did not finish".to_owned(), |d| format!(
                    "{} in {:.1} s",
                    d.changes,
                    d.took.as_secs_f64()
                )),
            rate(p).map_or("-".to_owned(), |r| format!("{r:.0}")),
            p.rss_peak_mib,
            p.udp_drops,
        );
    }
    let (i, f) = (&idle.runs, &flood.runs);
    println!(
        "| flood / idle | | | {:.1}× / {:.1}× | {:.1}× / {:.1}× | {:.1}× / {:.1}× | | {:.2}× | {:.2}× | |",
        ratio(pct(&f.connects, 0.5), pct(&i.connects, 0.5)),
        ratio(pct(&f.connects, 0.99), pct(&i.connects, 0.99)),
        ratio(pct(&f.handshakes, 0.5), pct(&i.handshakes, 0.5)),
        ratio(pct(&f.handshakes, 0.99), pct(&i.handshakes, 0.99)),
        ratio(pct(&f.syncs, 0.5), pct(&i.syncs, 0.5)),
        ratio(pct(&f.syncs, 0.99), pct(&i.syncs, 0.99)),
        ratio(rate(&flood).unwrap_or(0.0), rate(&idle).unwrap_or(0.0)),
        ratio(flood.rss_peak_mib, idle.rss_peak_mib),
    );
    let b = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let attempts = b(&bad_tally.attempts);
    println!();
    println!(
        "Bad certificates: {attempts} attempts in {:.0} s ({:.0}/min): {} refused at the Hello, \
         {} refused by the transport, {} timed out, {} skipped (over {BAD_IN_FLIGHT} in flight), \
         {} let through.",
        flood_took.as_secs_f64(),
        attempts as f64 * 60.0 / sizes.flood.as_secs_f64(),
        b(&bad_tally.refused_at_hello),
        b(&bad_tally.refused_by_transport),
        b(&bad_tally.timed_out),
        b(&bad_tally.skipped),
        b(&bad_tally.let_through),
    );
    println!(
        "Holders: {} of {} held a session at once at the peak; {} connection attempts refused \
         (retried), {} sessions dropped by the relay.",
        hold_tally.peak.load(Ordering::Relaxed),
        sizes.holders,
        b(&hold_tally.refused),
        b(&hold_tally.dropped),
    );
    println!(
        "Relay memory: {:.1} MiB at start, peak {:.1} MiB idle, {:.1} MiB under flood, \
         {:.1} MiB at the end; VmHWM {:.1} MiB against a budget of {BUDGET_MIB:.0} MiB ({}).",
        mib(rss_start),
        idle.rss_peak_mib,
        flood.rss_peak_mib,
        mib(rss_end),
        mib(hwm),
        if mib(hwm) < BUDGET_MIB {
            "within"
        } else {
            "OVER"
        }
    );
    println!(
        "Relay RSS every 5 s from the idle phase on (MiB): {}",
        timeline
            .iter()
            .map(|(_, kib)| format!("{:.0}", mib(*kib)))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let p99 = percentile(&f.handshakes, 0.99);
    println!(
        "Honest handshake p99 under flood: {:.0} ms against a goal of 2,000 ms ({}).",
        ms(p99),
        if p99 < Duration::from_secs(2) && !f.handshakes.is_empty() {
            "met"
        } else {
            "MISSED"
        }
    );
    assert_eq!(
        b(&bad_tally.let_through),
        0,
        "a bad certificate got a session"
    );
    assert!(stopped, "the relay stops cleanly after the flood");
}
