//! Hostile links: a device pushes about 100 KB of new signed changes to a
//! relay over an emulated satellite, bad cellular and HF radio link
//! ([`super::impair`]), beside Automerge's per-document sync of the same
//! documents over the same link (same profile, same seeds), and beside the
//! ideal: the bytes that must cross at the link's rate plus two round trips.
//!
//! Each run builds a fresh world: a relay on a real redb file, a device with a
//! few cases the relay already holds (synced beforehand over plain
//! loopback, not timed), then notes written on the device until the new
//! signed changes pass the target size. Both ends of each measured
//! connection send through an [`ImpairedSocket`] with the profile, so each
//! direction is shaped (delay, loss, rate with a bounded queue). FieldSync
//! is timed from the connection attempt to the moment the device knows the
//! relay holds everything (the session's "synced": every batch stored
//! durably and acknowledged); the per-document baseline from the
//! connection attempt to the end of its last round (the round in which
//! neither side had anything left to send). Both then check the data: the
//! relay holds every new envelope, and the per-document server's documents
//! have the device's heads. Satellite and bad cellular run five times with
//! different seeds and their goals are judged on the median: one lost
//! handshake or acknowledgement datagram costs a QUIC probe timeout, so a
//! single draw says more about the seed than about the software.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use automerge::AutoCommit;
use fieldsync_identity::{CaseId, Role};
use fieldsync_node::{Mode, Node, NodeEventKind, now};
use fieldsync_transport::{
    Connection, Connector, Identity, Kind, Listener, PeerPolicy, Protocols, TransportSettings,
};

use super::impair::{ImpairedSocket, LinkStats, Profile, SplitMix};
use super::world::{COMPARTMENT, device_store, docs_of, hq, make_cases, relay_store, start_node};
use super::{Goal, Options, Section, perdoc};

/// Cases the notes are spread over.
const CASES: usize = 4;

/// Loopback, any port.
fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// One profile's runs: what to send, how often, how long it may take.
#[derive(Debug, Clone, Copy)]
struct Plan {
    profile: Profile,
    /// New signed changes to push, envelope bytes (at least).
    target: usize,
    /// The goal: FieldSync within this many times the ideal, judged on the
    /// median of the runs (`None`: reported only).
    goal: Option<f64>,
    /// Runs, each with its own seeds; the goal is judged on their median.
    runs: u64,
    /// Bound on each measured sync.
    limit: Duration,
    /// Run `r` draws the relay's link from `seed + 2r`, the device's from
    /// `seed + 2r + 1`.
    seed: u64,
}

/// Wall time after which a full run starts no further runs (each sync is
/// bounded on its own too).
const BUDGET: Duration = Duration::from_secs(330);

/// Runs the scenario: satellite and bad cellular five times each (seeds
/// apart), HF radio once (quick: satellite once, with a smaller transfer).
pub fn run(opts: Options) -> Result<Vec<Section>> {
    let plans: Vec<Plan> = if opts.quick {
        vec![Plan {
            profile: Profile::SATELLITE,
            target: 20_000,
            goal: Some(2.0),
            runs: 1,
            limit: Duration::from_secs(8),
            seed: 0x5a7e_0000,
        }]
    } else {
        vec![
            Plan {
                profile: Profile::SATELLITE,
                target: 100_000,
                goal: Some(2.0),
                runs: 5,
                limit: Duration::from_secs(30),
                seed: 0x5a7e_0000,
            },
            Plan {
                profile: Profile::BAD_CELLULAR,
                target: 100_000,
                goal: Some(3.0),
                runs: 5,
                limit: Duration::from_secs(45),
                seed: 0xce11_0000,
            },
            Plan {
                profile: Profile::HF_RADIO,
                target: 100_000,
                goal: None,
                runs: 1,
                limit: Duration::from_secs(120),
                seed: 0x4ff0_0000,
            },
        ]
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let started = Instant::now();
    let mut results = Vec::new();
    for (i, plan) in plans.iter().enumerate() {
        let mut runs = Vec::new();
        for r in 0..plan.runs {
            // Every profile gets its first run; later ones only within the budget.
            if r > 0 && started.elapsed() > BUDGET {
                eprintln!("  {}: time budget spent after {r} runs", plan.profile.name);
                break;
            }
            eprintln!(
                "  {}, run {}: {} KB of new changes",
                plan.profile.name,
                r + 1,
                plan.target / 1000
            );
            let seeds = (plan.seed + 2 * r, plan.seed + 2 * r + 1);
            runs.push(rt.block_on(one_run(*plan, seeds, 10 * i as u64 + r))?);
        }
        results.push((*plan, runs));
    }
    Ok(vec![section(&results, opts)])
}

/// The settings both ends use on these links: the defaults, with a minute
/// for the QUIC handshake. On HF a handshake datagram lost twice waits for
/// backed-off probe timeouts that can pass the default 20 s accept bound
/// and the 6 s before a connector tries TCP (which these listeners do not
/// serve).
fn link_settings() -> TransportSettings {
    TransportSettings {
        quic_connect_timeout: Duration::from_secs(60),
        handshake_timeout: Duration::from_secs(60),
        ..TransportSettings::default()
    }
}

/// What one run measured.
#[derive(Debug, Clone)]
struct Outcome {
    plan: Plan,
    seeds: (u64, u64),
    /// New signed changes and their envelope bytes.
    changes: usize,
    envelope_bytes: u64,
    /// FieldSync: session bytes each way, connect and synced times, the
    /// time the session ended, the link.
    fs_up: u64,
    fs_down: u64,
    fs_connect: Duration,
    fs_synced: Duration,
    fs_closed: Duration,
    fs_link: LinkStats,
    /// Per-document: bytes, rounds, time; `Err`: why it did not finish
    /// (timed out or failed).
    pd: Result<PerDoc, String>,
    pd_link: LinkStats,
}

#[derive(Debug, Clone, Copy)]
struct PerDoc {
    cost: perdoc::Cost,
    connect: Duration,
}

impl Outcome {
    /// Bytes that must cross: the FieldSync session's larger direction.
    fn must_cross(&self) -> u64 {
        self.fs_up.max(self.fs_down)
    }

    /// The larger direction's session bytes at the link rate, plus two round trips.
    fn ideal(&self) -> Duration {
        let p = self.plan.profile;
        Duration::from_secs_f64(self.must_cross() as f64 * 8.0 / p.rate_bps as f64) + p.rtt * 2
    }

    fn fs_ratio(&self) -> f64 {
        self.fs_synced.as_secs_f64() / self.ideal().as_secs_f64()
    }

    fn pd_time(&self) -> Option<Duration> {
        self.pd.as_ref().ok().map(|p| p.connect + p.cost.wall)
    }
}

async fn one_run(plan: Plan, seeds: (u64, u64), n: u64) -> Result<Outcome> {
    let dir = tempfile::tempdir().context("temporary directory")?;
    let hq = hq();
    let relay_store = relay_store(dir.path(), "relay.redb", 240)?;
    let (relay, relay_id) = start_node(&hq, relay_store, 1, Role::Relay, &[COMPARTMENT])?;

    // The device and the cases the relay already holds.
    let store = device_store(500 + n)?;
    let cases = make_cases(&store, CASES, 1)?;
    let (device, device_id) = start_node(&hq, store, 2, Role::Field, &[COMPARTMENT])?;
    base_sync(&relay, &relay_id, &device, &device_id).await?;
    let base = relay
        .with_engine(|e| e.store().log_head())
        .await
        .context("relay stopped")??;

    // New notes on the device, until their envelopes pass the target.
    let (new, relay_docs, device_docs) = {
        let c = cases.clone();
        let target = plan.target;
        let new = device
            .with_engine(move |e| write_notes(e.store(), &c, base, target))
            .await
            .context("device stopped")??;
        let c = cases.clone();
        let relay_docs = relay
            .with_engine(move |e| docs_of(e.store(), &c))
            .await
            .context("relay stopped")??;
        let c = cases.clone();
        let device_docs = device
            .with_engine(move |e| docs_of(e.store(), &c))
            .await
            .context("device stopped")??;
        (new, relay_docs, device_docs)
    };
    let envelope_bytes: u64 = new.iter().map(|(_, e)| e.len() as u64).sum();

    // FieldSync over the impaired link.
    let fs = tokio::time::timeout(
        plan.limit,
        fieldsync_run(plan, seeds, &relay, &relay_id, &device, &device_id),
    )
    .await
    .map_err(|_| {
        anyhow::anyhow!(
            "{}: FieldSync did not sync within {:?}",
            plan.profile.name,
            plan.limit
        )
    })?
    .with_context(|| format!("{}: FieldSync", plan.profile.name))?;
    eprintln!(
        "    FieldSync: synced in {:.2} s (connected at {:.2} s, closed at {:.2} s), {} B up, \
         {} datagrams, {} lost, {} dropped by the queue",
        fs.synced.as_secs_f64(),
        fs.connect.as_secs_f64(),
        fs.closed.as_secs_f64(),
        fs.up,
        fs.link.datagrams,
        fs.link.lost,
        fs.link.queue_drops
    );
    let expected = base + new.len() as u64;
    let new_check = new.clone();
    let (head, all_there) = relay
        .with_engine(move |e| -> Result<(u64, bool)> {
            let store = e.store();
            let mut all = true;
            for (case, envelope) in &new_check {
                all &= store.case_envelopes(case)?.contains(envelope);
            }
            Ok((store.log_head()?, all))
        })
        .await
        .context("relay stopped")??;
    ensure!(
        head == expected && all_there,
        "{}: the relay holds {head} changes (expected {expected}), every new envelope: {all_there}",
        plan.profile.name
    );
    relay.shutdown().await;
    device.shutdown().await;

    // Automerge's per-document sync of the same documents, same link.
    let (pd, pd_link) = perdoc_run(plan, seeds, &relay_id, &device_id, relay_docs, device_docs)
        .await
        .with_context(|| format!("{}: per-document sync", plan.profile.name))?;
    if let Ok(pd) = &pd {
        eprintln!(
            "    per-document: {:.2} s (connected at {:.2} s), {} B up, {} rounds, \
             {} datagrams, {} lost, {} dropped by the queue",
            (pd.connect + pd.cost.wall).as_secs_f64(),
            pd.connect.as_secs_f64(),
            pd.cost.up,
            pd.cost.rounds,
            pd_link.datagrams,
            pd_link.lost,
            pd_link.queue_drops
        );
    }

    Ok(Outcome {
        plan,
        seeds,
        changes: new.len(),
        envelope_bytes,
        fs_up: fs.up,
        fs_down: fs.down,
        fs_connect: fs.connect,
        fs_synced: fs.synced,
        fs_closed: fs.closed,
        fs_link: fs.link,
        pd,
        pd_link,
    })
}

/// The device's first sync with the relay, over plain loopback (not measured).
async fn base_sync(
    relay: &Node,
    relay_id: &Identity,
    device: &Node,
    device_id: &Identity,
) -> Result<()> {
    let quic = Protocols {
        quic: true,
        tcp: false,
    };
    let settings = TransportSettings::default();
    let listener = Listener::bind_with(
        loopback(),
        relay_id,
        &settings,
        PeerPolicy::accept_any(),
        quic,
    )
    .await?;
    let addr = listener.local_addr();
    let r = relay.clone();
    let serving = tokio::spawn(async move {
        let conn = listener.accept().await?;
        Ok::<_, anyhow::Error>(r.run_connection(conn, Mode::Live).await)
    });
    let connector = Connector::new(device_id, settings, PeerPolicy::accept_any())?;
    let conn = connector.connect(addr).await?;
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        device.run_connection(conn, Mode::UntilSynced),
    )
    .await
    .context("the first sync over loopback took over 30 s")?;
    ensure!(out.synced && out.error.is_none(), "first sync: {out:?}");
    let _ = tokio::time::timeout(Duration::from_secs(10), serving).await;
    Ok(())
}

/// Writes notes on `cases` until the signed changes after log position
/// `after` make `target` envelope bytes; returns them (case, envelope).
fn write_notes(
    store: &fieldsync_store::Store,
    cases: &[CaseId],
    after: u64,
    target: usize,
) -> Result<Vec<(CaseId, Vec<u8>)>> {
    let me = store.device().id();
    let mut rng = SplitMix::new(0x0b5e_7e55);
    let gates = ["north gate", "east quay", "rail yard", "customs shed"];
    let mut i = 0usize;
    loop {
        for _ in 0..8 {
            let case = &cases[i % cases.len()];
            let plate = rng.next_u64();
            let text = format!(
                "Observation {i}: vehicle {:03X}-{:04X} seen at the {} at {:02}:{:02}, \
                 {} occupants, heading towards the harbour; photographs taken, plate \
                 checked against the watch list, reference {:016x}.",
                plate & 0xfff,
                (plate >> 12) & 0xffff,
                gates[(plate >> 28) as usize % gates.len()],
                (plate >> 32) % 24,
                (plate >> 40) % 60,
                1 + (plate >> 48) % 4,
                rng.next_u64(),
            );
            store.edit_case(case, now(), "note", |doc| doc.add_note(me, now(), &text))?;
            i += 1;
        }
        let entries = store
            .read_log(after, usize::MAX, usize::MAX, |_| true)?
            .entries;
        let bytes: usize = entries.iter().map(|e| e.envelope.len()).sum();
        if bytes >= target {
            return Ok(entries.into_iter().map(|e| (e.case, e.envelope)).collect());
        }
    }
}

/// An impaired listener and connector for one measured connection.
fn impaired_pair(
    profile: Profile,
    seeds: (u64, u64),
    relay_id: &Identity,
    device_id: &Identity,
) -> Result<(
    Listener,
    Connector,
    Arc<ImpairedSocket>,
    Arc<ImpairedSocket>,
)> {
    let settings = link_settings();
    let server = ImpairedSocket::bind(loopback(), profile, seeds.0)?;
    let client = ImpairedSocket::bind(loopback(), profile, seeds.1)?;
    let listener = Listener::with_socket(
        server.clone(),
        relay_id,
        &settings,
        PeerPolicy::accept_any(),
    )?;
    let connector = Connector::with_socket(
        client.clone(),
        device_id,
        settings,
        PeerPolicy::accept_any(),
    )?;
    Ok((listener, connector, server, client))
}

/// Connects over QUIC (a fallback to TCP would bypass the link: refused).
async fn connect_quic(connector: &Connector, addr: SocketAddr) -> Result<Connection> {
    let conn = connector.connect(addr).await?;
    if conn.kind() != Kind::Quic {
        bail!("the connection fell back to {}", conn.kind());
    }
    Ok(conn)
}

struct FieldSyncRun {
    up: u64,
    down: u64,
    connect: Duration,
    synced: Duration,
    closed: Duration,
    link: LinkStats,
}

async fn fieldsync_run(
    plan: Plan,
    seeds: (u64, u64),
    relay: &Node,
    relay_id: &Identity,
    device: &Node,
    device_id: &Identity,
) -> Result<FieldSyncRun> {
    let (listener, connector, server, client) =
        impaired_pair(plan.profile, seeds, relay_id, device_id)?;
    let addr = listener.local_addr();
    let r = relay.clone();
    let serving = tokio::spawn(async move {
        let conn = listener.accept().await?;
        Ok::<_, anyhow::Error>(r.run_connection(conn, Mode::Live).await)
    });
    let mut events = device.subscribe();
    let started = Instant::now();
    let conn = connect_quic(&connector, addr).await?;
    let connect = started.elapsed();
    let d = device.clone();
    let session = tokio::spawn(async move { d.run_connection(conn, Mode::UntilSynced).await });
    let synced = loop {
        match events.recv().await {
            Ok(e) if matches!(e.kind, NodeEventKind::Synced) => break started.elapsed(),
            Ok(e) => {
                if let NodeEventKind::Ended { error } = e.kind {
                    bail!("the session ended before it synced: {error:?}");
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(e) => bail!("device events: {e}"),
        }
    };
    let out = session.await?;
    let closed = started.elapsed();
    ensure!(out.synced && out.error.is_none(), "FieldSync: {out:?}");
    let _ = tokio::time::timeout(Duration::from_secs(10), serving).await;
    Ok(FieldSyncRun {
        up: out.bytes_sent,
        down: out.bytes_received,
        connect,
        synced,
        closed,
        link: server.stats().plus(client.stats()),
    })
}

async fn perdoc_run(
    plan: Plan,
    seeds: (u64, u64),
    relay_id: &Identity,
    device_id: &Identity,
    relay_docs: Vec<AutoCommit>,
    device_docs: Vec<AutoCommit>,
) -> Result<(Result<PerDoc, String>, LinkStats)> {
    let (listener, connector, server, client) =
        impaired_pair(plan.profile, seeds, relay_id, device_id)?;
    let addr = listener.local_addr();
    let serving = tokio::spawn(perdoc::serve(listener, relay_docs));
    let run = async {
        let started = Instant::now();
        let conn = connect_quic(&connector, addr).await?;
        let connect = started.elapsed();
        let (cost, docs) = perdoc::sync(conn, device_docs).await?;
        Ok::<_, anyhow::Error>((PerDoc { connect, cost }, docs))
    };
    let started = Instant::now();
    let done = tokio::time::timeout(plan.limit, run).await;
    let link = server.stats().plus(client.stats());
    let why = match done {
        Ok(Ok(done)) => Ok(done),
        Err(_) => Err(format!("not done within {}", secs(plan.limit))),
        Ok(Err(e)) => Err(format!("failed after {}: {e:#}", secs(started.elapsed()))),
    };
    let (pd, mut device_docs) = match why {
        Ok(done) => done,
        Err(why) => {
            serving.abort();
            eprintln!("    per-document: {why}");
            return Ok((Err(why), link));
        }
    };
    let mut server_docs = tokio::time::timeout(Duration::from_secs(30), serving)
        .await
        .context("the per-document server did not finish")???;
    ensure!(
        perdoc::converged(&mut server_docs, &mut device_docs),
        "{}: the per-document sync did not converge",
        plan.profile.name
    );
    Ok((Ok(pd), server.stats().plus(client.stats())))
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn link_cell(l: &LinkStats) -> String {
    format!(
        "{} of {} ({} lost, {} queue)",
        l.lost + l.queue_drops,
        l.datagrams,
        l.lost,
        l.queue_drops
    )
}

/// The median of `v` (the lower middle for an even count).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or(f64::NAN)
}

fn profile_text(p: &Profile) -> String {
    format!(
        "{} {} ms RTT, {} % loss, {} kbit/s, {} KB queue",
        p.name,
        p.rtt.as_millis(),
        p.loss * 100.0,
        p.rate_bps / 1000,
        p.queue_bytes / 1000
    )
}

fn section(results: &[(Plan, Vec<Outcome>)], opts: Options) -> Section {
    let profiles: Vec<String> = results
        .iter()
        .map(|(p, _)| profile_text(&p.profile))
        .collect();
    let settings = link_settings();
    let mut s = Section::new(
        "hostile",
        "Hostile links",
        format!(
            "A device pushes new signed changes (notes on {CASES} cases the relay already holds; \
             {}) to a relay on a real redb file, over QUIC through an emulated link: every \
             datagram either way crosses a bottleneck at the link rate (IPv4 and UDP headers \
             included) behind a tail-drop queue, then random loss, then half the round trip; \
             fates are drawn from fixed seeds, different for each run. Profiles: {}. Transport \
             settings: the defaults ({:?}, initial window {} B, initial RTT {} ms, keep-alive {} s, \
             idle timeout {} s) with {} s for the QUIC handshake (connect and accept). \
             FieldSync (`Node::run_connection`, `Mode::UntilSynced`) is timed from the connection \
             attempt to \"synced\" (the relay stored every change durably and acknowledged it); \
             the baseline is Automerge's per-document sync of the same documents (fresh sync \
             states, pipelined rounds) over the same link with the same seeds, timed from the \
             connection attempt to the end of its last round. Ideal: the bytes that must cross \
             (the FieldSync session's larger direction, device → relay: frames with their length \
             prefixes, no QUIC or TLS overhead) at the link rate, plus two round trips. Goals are \
             judged on the median of the runs.",
            if opts.quick {
                "quick run: satellite only, about 20 KB of envelopes"
            } else {
                "about 100 KB of envelopes"
            },
            profiles.join("; "),
            settings.congestion,
            settings.initial_window,
            settings.initial_rtt.as_millis(),
            settings.keep_alive.as_secs(),
            settings.idle_timeout.as_secs(),
            settings.quic_connect_timeout.as_secs(),
        ),
    );
    s.columns(&[
        "link, run",
        "new changes (envelope bytes)",
        "FieldSync session bytes up / down",
        "ideal",
        "FieldSync (× ideal)",
        "per-document (× ideal)",
        "per-document bytes up / down, rounds",
        "datagrams dropped of sent, FieldSync",
        "the same, per-document",
    ]);
    for (plan, runs) in results {
        let p = plan.profile;
        let key = p.name.replace([' ', '/'], "_").to_lowercase();
        for (r, o) in runs.iter().enumerate() {
            let ideal = o.ideal();
            let pd_cell = match (&o.pd, o.pd_time()) {
                (_, Some(t)) => format!(
                    "{} ({:.2}×)",
                    secs(t),
                    t.as_secs_f64() / ideal.as_secs_f64()
                ),
                (Err(why), None) => why.clone(),
                (Ok(_), None) => "—".to_owned(),
            };
            let pd_bytes = o.pd.as_ref().map_or_else(
                |_| "—".to_owned(),
                |p| format!("{} / {}, {}", p.cost.up, p.cost.down, p.cost.rounds),
            );
            s.row([
                format!(
                    "{}, {} (seeds {:#x}, {:#x})",
                    p.name,
                    r + 1,
                    o.seeds.0,
                    o.seeds.1
                ),
                format!("{} ({} B)", o.changes, o.envelope_bytes),
                format!("{} / {}", o.fs_up, o.fs_down),
                secs(ideal),
                format!(
                    "{} ({:.2}×; connected {}, closed {})",
                    secs(o.fs_synced),
                    o.fs_ratio(),
                    secs(o.fs_connect),
                    secs(o.fs_closed)
                ),
                pd_cell,
                pd_bytes,
                link_cell(&o.fs_link),
                link_cell(&o.pd_link),
            ]);
            let k = format!("{key}_run{}", r + 1);
            s.figure(format!("{k}_changes"), o.changes as f64);
            s.figure(format!("{k}_envelope_bytes"), o.envelope_bytes as f64);
            s.figure(format!("{k}_fieldsync_up_bytes"), o.fs_up as f64);
            s.figure(format!("{k}_fieldsync_down_bytes"), o.fs_down as f64);
            s.figure(format!("{k}_ideal_s"), ideal.as_secs_f64());
            s.figure(format!("{k}_fieldsync_s"), o.fs_synced.as_secs_f64());
            s.figure(
                format!("{k}_fieldsync_connect_s"),
                o.fs_connect.as_secs_f64(),
            );
            s.figure(format!("{k}_fieldsync_closed_s"), o.fs_closed.as_secs_f64());
            s.figure(format!("{k}_fieldsync_x_ideal"), o.fs_ratio());
            s.figure(
                format!("{k}_fieldsync_datagrams"),
                o.fs_link.datagrams as f64,
            );
            s.figure(format!("{k}_fieldsync_lost"), o.fs_link.lost as f64);
            s.figure(
                format!("{k}_fieldsync_queue_drops"),
                o.fs_link.queue_drops as f64,
            );
            s.figure(format!("{k}_fieldsync_wire_bytes"), o.fs_link.bytes as f64);
            s.figure(format!("{k}_perdoc_datagrams"), o.pd_link.datagrams as f64);
            s.figure(format!("{k}_perdoc_lost"), o.pd_link.lost as f64);
            s.figure(
                format!("{k}_perdoc_queue_drops"),
                o.pd_link.queue_drops as f64,
            );
            if let (Ok(pd), Some(t)) = (&o.pd, o.pd_time()) {
                s.figure(format!("{k}_perdoc_s"), t.as_secs_f64());
                s.figure(
                    format!("{k}_perdoc_x_ideal"),
                    t.as_secs_f64() / ideal.as_secs_f64(),
                );
                s.figure(format!("{k}_perdoc_up_bytes"), pd.cost.up as f64);
                s.figure(format!("{k}_perdoc_down_bytes"), pd.cost.down as f64);
                s.figure(format!("{k}_perdoc_rounds"), pd.cost.rounds as f64);
            }
        }
        let ratios: Vec<f64> = runs.iter().map(Outcome::fs_ratio).collect();
        let fs_median = median(ratios.clone());
        let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = ratios.iter().copied().fold(0.0, f64::max);
        s.figure(format!("{key}_fieldsync_x_ideal_median"), fs_median);
        s.figure(
            format!("{key}_fieldsync_s_median"),
            median(runs.iter().map(|o| o.fs_synced.as_secs_f64()).collect()),
        );
        s.figure(
            format!("{key}_ideal_s_median"),
            median(runs.iter().map(|o| o.ideal().as_secs_f64()).collect()),
        );
        let pd_ratios: Vec<f64> = runs
            .iter()
            .filter_map(|o| Some(o.pd_time()?.as_secs_f64() / o.ideal().as_secs_f64()))
            .collect();
        if pd_ratios.len() == runs.len() {
            s.figure(format!("{key}_perdoc_x_ideal_median"), median(pd_ratios));
        }
        let measured = if runs.len() > 1 {
            format!(
                "{fs_median:.2}× (median of {} runs, {lo:.2}–{hi:.2}×)",
                runs.len()
            )
        } else {
            format!("{fs_median:.2}×")
        };
        match plan.goal {
            Some(x) if !opts.quick => s.goal(Goal::new(
                format!("{}: FieldSync within {x}× of ideal (100 KB)", p.name),
                measured,
                fs_median <= x,
            )),
            Some(x) => s.goal(Goal::unjudged(
                format!("{}: FieldSync within {x}× of ideal (100 KB)", p.name),
                format!(
                    "{measured} for {} B",
                    runs.first().map_or(0, |o| o.envelope_bytes)
                ),
            )),
            // Reported in the table and the figures; no goal.
            None => {}
        }
    }
    s
}
