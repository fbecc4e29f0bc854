//! Relay ingest: D devices push their logs concurrently over real QUIC on
//! loopback to one relay (a real redb file, durable commits), beside the
//! in-process ceiling measured in the same run on the same changes: change
//! parsing, batch signature verification and batched durable redb commits,
//! with no network and no session.
//!
//! Every device writes its own compartment, so the relay has nothing to
//! send back and the run measures ingest. The relay runs on a runtime of
//! its own with two workers (as `fieldsync-server serve` does), the devices
//! on another, single-threaded one. The devices are made once; each round
//! they push to a fresh relay with an identity of its own, so each round
//! ingests every change. The paths run in alternation (ceiling, network,
//! ceiling, network …) and the best run of each is compared. The run fails
//! unless the relay holds every change, its cursor of each device's log
//! reaches that log's head, and each device holds the relay's signed
//! receipt for its whole log.
//!
//! `INGEST_DEVICES` and `INGEST_CHANGES` set other sizes (the goals are
//! judged only at the full size).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, ensure};
use fieldsync_case::{
    CaseKind, Field, Genesis, VerifiedChange, VerifiedGenesis, decode_change, verify_genesis,
};
use fieldsync_identity::{CaseId, DeviceId, HqRoot, Role, decode_signed, verify_batch};
use fieldsync_node::{Mode, Node, NodeEventKind, now};
use fieldsync_store::{Ingest, NewCase, Store};
use fieldsync_transport::Connector;
use tokio::sync::broadcast::error::RecvError;

use super::world::{connect_retrying, connector, device_store, hq, relay_store, start_node};
use super::{Goal, Options, Section, percentile};
use crate::net::{env_usize, serve_relay};

/// Devices and changes per device the goals name.
const FULL: (usize, usize) = (100, 200);

/// Devices and changes per device of a quick run.
const QUICK: (usize, usize) = (20, 50);

/// Cases each device writes (its changes are spread over them).
const CASES_PER_DEVICE: usize = 10;

/// Changes per durable commit on the in-process path (the protocol's batch size).
const CEILING_BATCH: usize = fieldsync_protocol::MAX_BATCH_CHANGES;

/// The longest the devices may take to connect, push and be acknowledged.
const SESSION_TIMEOUT: Duration = Duration::from_secs(300);

/// Changes per second the relay must ingest over QUIC (full size).
const GOAL_RATE: f64 = 20_000.0;

/// Share of the in-process ceiling the network path must reach (full size).
const GOAL_SHARE: f64 = 0.60;

/// Device `n`'s compartment: no other device reads it.
fn compartment(n: usize) -> String {
    format!("unit-{n}")
}

/// One pushing device: its store (in memory), certificate serial and log head.
struct Device {
    store: Store,
    serial: u64,
    head: u64,
}

/// What the relay must hold of a device once it pushed: its whole log.
#[derive(Clone)]
struct Wanted {
    device: DeviceId,
    epoch: [u8; 16],
    head: u64,
}

/// A device store holding `changes` signed changes spread over
/// [`CASES_PER_DEVICE`] cases of its own compartment.
fn make_device(n: usize, changes: usize) -> Result<Device> {
    let store = device_store(1000 + n as u64)?;
    let unit = compartment(n);
    let mut cases = Vec::with_capacity(CASES_PER_DEVICE);
    for k in 0..CASES_PER_DEVICE {
        let mut id = [k as u8; 16];
        id[..8].copy_from_slice(&(n as u64).to_le_bytes());
        cases.push(store.create_case(
            &NewCase {
                id: CaseId::from_bytes(id),
                kind: CaseKind::CriminalInvestigation,
                office: "rome",
                compartment: &unit,
                title: "Shipment",
            },
            now(),
        )?);
    }
    for i in CASES_PER_DEVICE..changes {
        let case = cases[i % cases.len()];
        store.edit_case(&case, now(), "note", |d| {
            d.set_field(Field::Title, &format!("Shipment {i}: manifest checked"))
        })?;
    }
    let head = store.log_head()?;
    ensure!(
        head as usize == changes,
        "device {n} holds {head} changes, not {changes}"
    );
    Ok(Device {
        store,
        serial: 10 + n as u64,
        head,
    })
}

/// What the in-process path is given: each genesis on its own, then the
/// envelopes, in the order the devices' logs hold them.
enum Input {
    Genesis(Vec<u8>),
    Change(Vec<u8>),
}

fn ceiling_input(devices: &[Device]) -> Result<Vec<Input>> {
    let mut input = Vec::new();
    for d in devices {
        let mut after = 0;
        loop {
            let b = d.store.read_log(after, CEILING_BATCH, 1 << 20, |_| true)?;
            input.extend(b.geneses.into_iter().map(|(_, g)| Input::Genesis(g)));
            input.extend(b.entries.into_iter().map(|e| Input::Change(e.envelope)));
            if b.at_end {
                break;
            }
            after = b.next;
        }
    }
    Ok(input)
}

/// In process: the same envelopes parsed, batch-verified and committed in
/// batches of [`CEILING_BATCH`], each commit durable; returns the time and
/// the changes stored.
fn ceiling(dir: &Path, name: &str, seed: u8, input: &[Input]) -> Result<(Duration, usize)> {
    let store = relay_store(dir, name, seed)?;
    let started = Instant::now();
    let mut geneses: BTreeMap<CaseId, VerifiedGenesis> = BTreeMap::new();
    let mut pending: Vec<&[u8]> = Vec::with_capacity(CEILING_BATCH);
    let mut stored = 0;
    let flush = |pending: &mut Vec<&[u8]>, geneses: &BTreeMap<CaseId, VerifiedGenesis>| {
        let signed = pending
            .drain(..)
            .map(decode_change)
            .collect::<Result<Vec<_>, _>>()?;
        let verified: Vec<VerifiedChange> =
            verify_batch(signed).map_err(|e| anyhow!("change {}: {}", e.index, e.error))?;
        let mut by_case: BTreeMap<CaseId, Vec<VerifiedChange>> = BTreeMap::new();
        for c in verified {
            by_case.entry(c.payload().case()).or_default().push(c);
        }
        let cases = by_case
            .into_iter()
            .map(|(case, changes)| {
                let g = geneses.get(&case).context("a change before its genesis")?;
                Ok((g.clone(), changes))
            })
            .collect::<Result<Vec<_>>>()?;
        let r = store.ingest(
            Ingest {
                cases,
                ..Ingest::default()
            },
            now(),
        )?;
        anyhow::Ok(r.stored)
    };
    for item in input {
        match item {
            Input::Genesis(g) => {
                let v = verify_genesis(decode_signed::<Genesis>(g)?)?;
                geneses.insert(v.payload().value().case, v);
            }
            Input::Change(e) => {
                pending.push(e);
                if pending.len() >= CEILING_BATCH {
                    stored += flush(&mut pending, &geneses)?;
                }
            }
        }
    }
    if !pending.is_empty() {
        stored += flush(&mut pending, &geneses)?;
    }
    Ok((started.elapsed(), stored))
}

/// A relay node on a runtime thread of its own, serving on loopback.
struct Relay {
    node: Node,
    device: DeviceId,
    addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<Result<()>>,
}

impl Relay {
    fn start(hq: &HqRoot, dir: &Path, name: &str, seed: u8, devices: usize) -> Result<Self> {
        let store = relay_store(dir, name, seed)?;
        let device = store.device().id();
        let units: Vec<String> = (0..devices).map(compartment).collect();
        let units: Vec<&str> = units.iter().map(String::as_str).collect();
        let (node, identity) = start_node(hq, store, 1, Role::Relay, &units)?;
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let serving = node.clone();
        let thread = std::thread::Builder::new()
            .name("ingest-relay".into())
            .spawn(move || -> Result<()> {
                // Two workers, as `fieldsync-server serve` runs.
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("ingest-relay")
                    .enable_all()
                    .build()?;
                rt.block_on(async move {
                    let addr = serve_relay(&serving, &identity).await;
                    let failed = addr.is_err();
                    let _ = addr_tx.send(addr);
                    if !failed {
                        let _ = stop_rx.await;
                    }
                    serving.shutdown().await;
                });
                Ok(())
            })?;
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(30))
            .context("the relay did not start listening")??;
        Ok(Relay {
            node,
            device,
            addr,
            stop,
            thread,
        })
    }

    fn stop(self) -> Result<()> {
        let _ = self.stop.send(());
        self.thread
            .join()
            .map_err(|_| anyhow!("the relay's thread panicked"))?
    }
}

/// What one network run measured.
struct Pushed {
    /// From the first connection to the last session's end.
    took: Duration,
    /// Per device, from the start of the run until its connection was up
    /// (QUIC and TLS handshakes done), in order.
    connected: Vec<Duration>,
    /// Per device, from the start of the run until its session was synced
    /// (its whole log acknowledged by the relay), in order.
    synced: Vec<Duration>,
}

/// The pushing devices, running: each device's node and client endpoint,
/// and what the relay must hold of it. The same devices push to a fresh
/// relay each round.
struct Fleet {
    nodes: Vec<Node>,
    connectors: Vec<Arc<Connector>>,
    wanted: Vec<Wanted>,
}

impl Fleet {
    /// Starts the devices' nodes (call inside the devices' runtime).
    fn start(hq: &HqRoot, devices: Vec<Device>) -> Result<Self> {
        let mut fleet = Fleet {
            nodes: Vec::with_capacity(devices.len()),
            connectors: Vec::with_capacity(devices.len()),
            wanted: Vec::with_capacity(devices.len()),
        };
        for (n, d) in devices.into_iter().enumerate() {
            fleet.wanted.push(Wanted {
                device: d.store.device().id(),
                epoch: d.store.epoch()?,
                head: d.head,
            });
            let (node, identity) =
                start_node(hq, d.store, d.serial, Role::Field, &[&compartment(n)])?;
            fleet.connectors.push(Arc::new(connector(&identity)?));
            fleet.nodes.push(node);
        }
        Ok(fleet)
    }

    async fn stop(&self) {
        for node in &self.nodes {
            node.shutdown().await;
        }
    }
}

/// Every device connects at once and pushes its log to a fresh relay;
/// returns once every session is synced and the relay is checked.
fn over_quic(
    hq: &HqRoot,
    dir: &Path,
    name: &str,
    seed: u8,
    fleet: &Fleet,
    rt: &tokio::runtime::Runtime,
) -> Result<Pushed> {
    let relay = Relay::start(hq, dir, name, seed, fleet.nodes.len())?;
    let result = rt.block_on(push_all(&relay, fleet));
    let stopped = relay.stop();
    let pushed = result?;
    stopped?;
    Ok(pushed)
}

async fn push_all(relay: &Relay, fleet: &Fleet) -> Result<Pushed> {
    let addr = relay.addr;
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(fleet.nodes.len());
    for (node, connector) in fleet.nodes.iter().zip(&fleet.connectors) {
        let node = node.clone();
        let connector = Arc::clone(connector);
        let mut events = node.subscribe();
        tasks.push(tokio::spawn(async move {
            let synced = tokio::spawn(async move {
                loop {
                    match events.recv().await {
                        Ok(e) if matches!(e.kind, NodeEventKind::Synced) => {
                            return Some(started.elapsed());
                        }
                        Ok(_) | Err(RecvError::Lagged(_)) => {}
                        Err(RecvError::Closed) => return None,
                    }
                }
            });
            let conn = connect_retrying(&connector, addr).await?;
            let connected = started.elapsed();
            let out = node.run_connection(conn, Mode::UntilSynced).await;
            ensure!(out.synced, "a device's push did not sync: {out:?}");
            // Synced comes before the session's end; the watcher has it by now.
            let at = tokio::time::timeout(Duration::from_secs(5), synced)
                .await
                .ok()
                .and_then(Result::ok)
                .flatten();
            let at = at.context("a device's session ended synced but its event was not seen")?;
            Ok((connected, at))
        }));
    }
    let mut connected = Vec::with_capacity(tasks.len());
    let mut synced = Vec::with_capacity(tasks.len());
    let mut failure = None;
    let deadline = tokio::time::Instant::from_std(started + SESSION_TIMEOUT);
    for mut t in tasks {
        match tokio::time::timeout_at(deadline, &mut t).await {
            Ok(Ok(Ok((up, at)))) => {
                connected.push(up);
                synced.push(at);
            }
            Ok(Ok(Err(e))) => failure = failure.or(Some(e)),
            Ok(Err(e)) => failure = failure.or(Some(anyhow!("a device's task failed: {e}"))),
            Err(_) => {
                t.abort();
                failure = failure.or(Some(anyhow!(
                    "a device did not finish its push within {SESSION_TIMEOUT:?}"
                )));
            }
        }
    }
    let took = started.elapsed();
    if let Some(e) = failure {
        return Err(e);
    }
    check(relay, fleet).await?;
    connected.sort_unstable();
    synced.sort_unstable();
    Ok(Pushed {
        took,
        connected,
        synced,
    })
}

/// The relay holds every change: its log has them all, and its cursor of
/// each device's log is that log's head; each device holds the relay's
/// signed receipt for its whole log.
async fn check(relay: &Relay, fleet: &Fleet) -> Result<()> {
    let wanted = fleet.wanted.clone();
    let total: u64 = wanted.iter().map(|w| w.head).sum();
    let heads: Vec<u64> = wanted.iter().map(|w| w.head).collect();
    let (held, short) = relay
        .node
        .with_engine(move |e| -> Result<(u64, Vec<String>)> {
            let held = e.store().log_head()?;
            let mut short = Vec::new();
            for w in wanted {
                let cursor = e.store().peer_cursor(&w.device)?;
                if cursor.is_none_or(|c| c.epoch != w.epoch || c.seq != w.head) {
                    short.push(format!("{}: {cursor:?} of {}", w.device.short(), w.head));
                }
            }
            Ok((held, short))
        })
        .await??;
    ensure!(
        held == total,
        "the relay holds {held} changes of the {total} pushed"
    );
    ensure!(
        short.is_empty(),
        "the relay's cursor falls short for {} device(s): {}",
        short.len(),
        short.join(", ")
    );
    for (node, head) in fleet.nodes.iter().zip(heads) {
        let relay_id = relay.device;
        let through = node
            .with_engine(move |e| e.store().latest_receipt(&relay_id))
            .await??
            .map(|r| r.through);
        ensure!(
            through == Some(head),
            "device {} holds no receipt for its whole log ({through:?} of {head})",
            node.device().short()
        );
    }
    Ok(())
}

/// Runs the scenario.
pub fn run(opts: Options) -> Result<Vec<Section>> {
    let (d_default, c_default) = opts.pick(FULL, QUICK);
    let n_devices = env_usize("INGEST_DEVICES", d_default).max(1);
    let per_device = env_usize("INGEST_CHANGES", c_default).max(CASES_PER_DEVICE);
    let rounds = opts.pick(5, 10);
    let total = n_devices * per_device;
    let dir = tempfile::tempdir()?;
    let hq = hq();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let made = Instant::now();
    let devices = (0..n_devices)
        .map(|n| make_device(n, per_device))
        .collect::<Result<Vec<_>>>()?;
    let made = made.elapsed();
    let input = ceiling_input(&devices)?;
    let fleet = rt.block_on(async { Fleet::start(&hq, devices) })?;
    let mut ceilings = Vec::new();
    let mut pushes = Vec::new();
    let mut failure = None;
    for round in 0..rounds {
        let seed = 210 + round as u8;
        match ceiling(dir.path(), &format!("ceiling-{round}.redb"), seed, &input) {
            Ok((_, stored)) if stored != total => {
                failure = Some(anyhow!(
                    "the in-process path stored {stored} changes of {total}"
                ));
            }
            Ok((took, _)) => ceilings.push(took),
            Err(e) => failure = Some(e),
        }
        if failure.is_some() {
            break;
        }
        // A fresh relay (an identity of its own) each round: every device
        // pushes its whole log again.
        let relay = format!("quic-{round}.redb");
        match over_quic(&hq, dir.path(), &relay, seed + 20, &fleet, &rt) {
            Ok(pushed) => pushes.push(pushed),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    rt.block_on(fleet.stop());
    if let Some(e) = failure {
        return Err(e);
    }

    let rate = |d: Duration| total as f64 / d.as_secs_f64().max(1e-9);
    let best_ceiling = ceilings.iter().copied().min().unwrap_or_default();
    let best = pushes
        .iter()
        .min_by_key(|p| p.took)
        .context("no network run")?;
    let ceiling_rate = rate(best_ceiling);
    let quic_rate = rate(best.took);
    let share = quic_rate / ceiling_rate;

    let mut s = Section::new(
        "ingest",
        "Relay ingest",
        format!(
            "{n_devices} devices × {per_device} signed changes ({total} in all, over {} cases) \
             pushed concurrently over real QUIC on loopback to one relay (a real redb file, \
             durable group commits), beside the in-process ceiling on the same changes: \
             parse, batch signature verification, durable redb commits of {CEILING_BATCH} \
             changes on one thread, no network and no session. The relay checks signatures \
             on its connections' tasks (a batch per core at a time) while its engine thread \
             stores, so it may pass the ceiling where cores are free. Best of {rounds} \
             alternating runs of each path, the same devices pushing to a fresh relay each \
             run; every run checks that the relay holds every change and that each device \
             holds the relay's receipt for its whole log (devices made in {:.1} s).",
            n_devices * CASES_PER_DEVICE,
            made.as_secs_f64()
        ),
    );
    s.columns(&["path", "run", "time", "changes/s", "of ceiling"]);
    for (i, c) in ceilings.iter().enumerate() {
        s.row([
            "in-process ceiling (parse + batch verify + durable batched commits)".to_owned(),
            format!("{}", i + 1),
            format!("{:.2} s", c.as_secs_f64()),
            format!("{:.0}", rate(*c)),
            format!("{:.0} %", 100.0 * rate(*c) / ceiling_rate),
        ]);
    }
    for (i, p) in pushes.iter().enumerate() {
        s.row([
            format!("{n_devices} devices over QUIC on loopback, concurrently"),
            format!("{}", i + 1),
            format!(
                "{:.2} s (devices connected p50 {:.2} s, p99 {:.2} s; synced p50 {:.2} s, p99 {:.2} s)",
                p.took.as_secs_f64(),
                percentile(&p.connected, 0.5).as_secs_f64(),
                percentile(&p.connected, 0.99).as_secs_f64(),
                percentile(&p.synced, 0.5).as_secs_f64(),
                percentile(&p.synced, 0.99).as_secs_f64()
            ),
            format!("{:.0}", rate(p.took)),
            format!("{:.0} %", 100.0 * rate(p.took) / ceiling_rate),
        ]);
    }
    s.figure("devices", n_devices as f64);
    s.figure("changes_per_device", per_device as f64);
    s.figure("ceiling_changes_per_s", ceiling_rate);
    s.figure("quic_changes_per_s", quic_rate);
    s.figure("share_of_ceiling", share);
    s.figure("quic_s", best.took.as_secs_f64());
    s.figure("ceiling_s", best_ceiling.as_secs_f64());
    s.figure(
        "device_connected_p50_s",
        percentile(&best.connected, 0.5).as_secs_f64(),
    );
    s.figure(
        "device_connected_p99_s",
        percentile(&best.connected, 0.99).as_secs_f64(),
    );
    s.figure(
        "device_synced_p50_s",
        percentile(&best.synced, 0.5).as_secs_f64(),
    );
    s.figure(
        "device_synced_p99_s",
        percentile(&best.synced, 0.99).as_secs_f64(),
    );
    let judged = !opts.quick && (n_devices, per_device) == FULL;
    let rate_text = format!(
        "≥ {:.0} changes/s from {} devices × {} changes over QUIC",
        GOAL_RATE, FULL.0, FULL.1
    );
    let share_text = format!("≥ {:.0} % of the in-process ceiling", 100.0 * GOAL_SHARE);
    let rate_measured = format!("{quic_rate:.0} changes/s");
    let share_measured = format!("{:.0} % (ceiling {ceiling_rate:.0}/s)", 100.0 * share);
    if judged {
        s.goal(Goal::new(rate_text, rate_measured, quic_rate >= GOAL_RATE));
        s.goal(Goal::new(share_text, share_measured, share >= GOAL_SHARE));
    } else {
        s.goal(Goal::unjudged(rate_text, rate_measured));
        s.goal(Goal::unjudged(share_text, share_measured));
    }
    Ok(vec![s])
}
