//! Reconnection after offline and initial sync, over real QUIC on loopback,
//! each beside Automerge's per-document sync ([`super::perdoc`]) of the same
//! documents over the same kind of connection, in the same run.
//!
//! Reconnection: a device (A) and a relay (a real redb file, durable
//! commits) hold the same D cases; while A is offline it changes k = 10
//! cases and another device changes k other cases through the relay; then A
//! reconnects. The floor is the 2k new changes' bytes plus their
//! signatures. The exchange is run twice: on bare loopback (bytes, wall
//! time), and again with fresh edits through a delay line of
//! [`DELAY_RTT`] round-trip time, where the extra wall time over the
//! loopback run, divided by the round-trip time, counts the round trips the
//! exchange waits for (the QUIC handshake's included).
//!
//! Initial sync: a relay holds 1,000 cases × 50 changes; a new device syncs
//! them all. Its bytes are compared with the documents' own bytes: the
//! signed changes and geneses the relay holds for them (the record that
//! must cross), and, for reference, Automerge's compressed save of the same
//! documents.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use automerge::AutoCommit;
use fieldsync_case::decode_change;
use fieldsync_identity::{CaseId, Role};
use fieldsync_node::{ConnOutcome, Mode, Node, now};
use fieldsync_transport::{Connector, Identity, Listener, PeerPolicy, TransportSettings};

use super::perdoc::{self, Cost};
use super::world::{self, COMPARTMENT};
use super::{Goal, Options, Section};
use crate::delay::DelayProxy;
use crate::net::serve_relay;

/// Cases changed on each side while the device is offline.
pub const K: usize = 10;

/// Notes of history per case before the offline period.
const HISTORY: usize = 3;

/// The round-trip time of the delay line the round trips are counted over.
pub const DELAY_RTT: Duration = Duration::from_millis(100);

/// Runs the reconnection (D = 100, 1,000, 10,000; quick: 100, 1,000) and
/// the initial sync (1,000 × 50; quick: 200 × 50).
pub fn run(opts: Options) -> Result<Vec<Section>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let ds: &[usize] = opts.pick(&[100, 1_000, 10_000], &[100, 1_000]);
    let mut results = Vec::new();
    for &d in ds {
        eprintln!("  reconnection, D = {d}");
        results.push(rt.block_on(reconnection(d))?);
    }
    let cases = opts.pick(1_000, 200);
    eprintln!("  initial sync, {cases} cases × 50 changes");
    let initial = rt.block_on(initial_sync(cases, 50))?;
    Ok(vec![
        reconnection_section(&results, opts),
        initial_section(&initial, opts),
    ])
}

/// One reconnection's figures.
#[derive(Debug, Clone)]
struct Reconnection {
    d: usize,
    /// Bytes of a reconnection with nothing new on either side.
    idle: u64,
    floor: u64,
    envelopes: u64,
    fs: Path,
    am: Path,
}

/// One path's figures (FieldSync or per-document).
#[derive(Debug, Clone, Copy, Default)]
struct Path {
    up: u64,
    down: u64,
    wall: Duration,
    delayed_wall: Duration,
    /// Per-document rounds (client → server → client), counted by the client.
    rounds: usize,
}

impl Path {
    fn total(&self) -> u64 {
        self.up + self.down
    }

    /// Round trips the exchange waited for: its extra time over the delay
    /// line divided by the line's round-trip time.
    fn round_trips(&self) -> f64 {
        self.delayed_wall.saturating_sub(self.wall).as_secs_f64() / DELAY_RTT.as_secs_f64()
    }
}

/// A party of the world: a node and its transport identity.
struct Party {
    node: Node,
    identity: Identity,
    connector: Connector,
}

impl Party {
    fn device(
        hq: &fieldsync_identity::HqRoot,
        n: u64,
        store: fieldsync_store::Store,
    ) -> Result<Self> {
        let (node, identity) = world::start_node(hq, store, 100 + n, Role::Field, &[COMPARTMENT])?;
        let connector = world::connector(&identity)?;
        Ok(Party {
            node,
            identity,
            connector,
        })
    }

    /// Connects to `addr` and runs a session until synced.
    async fn sync(&self, addr: SocketAddr) -> Result<(ConnOutcome, Duration)> {
        let started = Instant::now();
        let conn = self.connector.connect(addr).await?;
        let out = self.node.run_connection(conn, Mode::UntilSynced).await;
        let took = started.elapsed();
        ensure!(
            out.synced && out.error.is_none(),
            "session did not sync: {out:?}"
        );
        Ok((out, took))
    }
}

/// The relay: a real redb file, served on loopback.
async fn relay(
    dir: &std::path::Path,
    hq: &fieldsync_identity::HqRoot,
) -> Result<(Node, Identity, SocketAddr)> {
    let store = world::relay_store(dir, "relay.redb", 250)?;
    let (node, identity) = world::start_node(hq, store, 1, Role::Relay, &[COMPARTMENT])?;
    let addr = serve_relay(&node, &identity).await?;
    Ok((node, identity, addr))
}

/// Edits `cases` on `node` (a note each); returns the new changes' floor
/// bytes (change bytes + 64-byte signature), their envelope bytes, and the
/// envelopes by case.
async fn edit(
    node: &Node,
    cases: Vec<CaseId>,
    text: &'static str,
) -> Result<(u64, u64, Vec<(CaseId, Vec<u8>)>)> {
    node.with_engine(move |e| -> Result<_> {
        let store = e.store();
        let me = store.device().id();
        let before = store.log_head()?;
        for c in &cases {
            store.edit_case(c, now(), "note", |doc| doc.add_note(me, now(), text))?;
        }
        let entries = store
            .read_log(before, usize::MAX, usize::MAX, |_| true)?
            .entries;
        ensure!(
            entries.len() == cases.len(),
            "{} new log entries for {} edits",
            entries.len(),
            cases.len()
        );
        let mut floor = 0;
        let mut envelopes = 0;
        for e in &entries {
            floor += decode_change(&e.envelope)?.payload().raw_bytes().len() as u64 + 64;
            envelopes += e.envelope.len() as u64;
        }
        Ok((
            floor,
            envelopes,
            entries.into_iter().map(|e| (e.case, e.envelope)).collect(),
        ))
    })
    .await?
}

/// Whether `node` holds every envelope of `expected`.
async fn holds(node: &Node, expected: Vec<(CaseId, Vec<u8>)>) -> Result<bool> {
    node.with_engine(move |e| -> Result<bool> {
        for (c, env) in &expected {
            if !e.store().case_envelopes(c)?.contains(env) {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await?
}

async fn docs(node: &Node, cases: Vec<CaseId>) -> Result<Vec<AutoCommit>> {
    node.with_engine(move |e| world::docs_of(e.store(), &cases))
        .await?
}

/// Automerge's per-document sync of `server_docs` (served with the relay's
/// identity on a fresh loopback listener, through a delay line when
/// `one_way` is set) with `client_docs` (the device's connector). Returns
/// the cost, the wall time from the connect, and whether the documents converged.
async fn per_document(
    server_identity: &Identity,
    client: &Connector,
    server_docs: Vec<AutoCommit>,
    client_docs: Vec<AutoCommit>,
    one_way: Option<Duration>,
) -> Result<(Cost, Duration)> {
    let listener = Listener::bind(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        server_identity,
        &TransportSettings::default(),
        PeerPolicy::accept_any(),
    )
    .await?;
    let mut addr = listener.local_addr();
    let proxy = match one_way {
        Some(d) => {
            let p = DelayProxy::start(addr, d).await?;
            addr = p.addr();
            Some(p)
        }
        None => None,
    };
    let server = tokio::spawn(perdoc::serve(listener, server_docs));
    let started = Instant::now();
    let conn = client.connect(addr).await?;
    let (cost, mut client_docs) = perdoc::sync(conn, client_docs).await?;
    let wall = started.elapsed();
    let mut server_docs = server.await.context("per-document server")??;
    drop(proxy);
    ensure!(
        perdoc::converged(&mut server_docs, &mut client_docs),
        "the per-document sync did not converge"
    );
    Ok((cost, wall))
}

/// One reconnection at `d` cases: the loopback run, then the delayed run.
async fn reconnection(d: usize) -> Result<Reconnection> {
    ensure!(d >= 2 * K, "D must be at least {}", 2 * K);
    let dir = tempfile::tempdir()?;
    let hq = world::hq();
    let (relay, relay_identity, addr) = relay(dir.path(), &hq).await?;

    // A holds the D cases and pushes them; B downloads them.
    let a_store = world::device_store(1)?;
    let cases = world::make_cases(&a_store, d, HISTORY)?;
    let a = Party::device(&hq, 1, a_store)?;
    a.sync(addr).await.context("A's first push")?;
    let b = Party::device(&hq, 2, world::device_store(2)?)?;
    b.sync(addr).await.context("B's first download")?;
    let changes = (d * (2 + HISTORY)) as u64;
    let b_head = b.node.with_engine(|e| e.store().log_head()).await??;
    ensure!(b_head == changes, "B holds {b_head} of {changes} changes");

    // With nothing new on either side: what a reconnection costs in itself.
    let (idle, _) = a.sync(addr).await.context("A's idle reconnection")?;

    let mut out = Reconnection {
        d,
        idle: idle.bytes_sent + idle.bytes_received,
        floor: 0,
        envelopes: 0,
        fs: Path::default(),
        am: Path::default(),
    };
    for (round, one_way) in [(0, None), (1, Some(DELAY_RTT / 2))] {
        // Offline: k edits on A, k other edits on B, which B pushes.
        let a_cases = cases[..K].to_vec();
        let b_cases = cases[K..2 * K].to_vec();
        let (fa, ea, a_new) = edit(&a.node, a_cases, "vehicle seen at the north gate").await?;
        let (fb, eb, b_new) =
            edit(&b.node, b_cases, "driver questioned at the border post").await?;
        b.sync(addr).await.context("B's push")?;
        let relay_docs = docs(&relay, cases.clone()).await?;
        let a_docs = docs(&a.node, cases.clone()).await?;

        // FieldSync: A reconnects.
        let proxy = match one_way {
            Some(d) => Some(DelayProxy::start(addr, d).await?),
            None => None,
        };
        let target = proxy.as_ref().map_or(addr, DelayProxy::addr);
        let (fs, fs_wall) = a.sync(target).await.context("A's reconnection")?;
        drop(proxy);
        ensure!(
            holds(&relay, a_new).await?,
            "the relay holds A's new changes"
        );
        ensure!(holds(&a.node, b_new).await?, "A holds B's new changes");

        // Per-document sync of the same documents, same kind of connection.
        let (am, am_wall) =
            per_document(&relay_identity, &a.connector, relay_docs, a_docs, one_way).await?;

        if round == 0 {
            out.floor = fa + fb;
            out.envelopes = ea + eb;
            out.fs = Path {
                up: fs.bytes_sent,
                down: fs.bytes_received,
                wall: fs_wall,
                ..Path::default()
            };
            out.am = Path {
                up: am.up,
                down: am.down,
                wall: am_wall,
                rounds: am.rounds,
                ..Path::default()
            };
        } else {
            out.fs.delayed_wall = fs_wall;
            out.am.delayed_wall = am_wall;
        }
    }
    relay.shutdown().await;
    a.node.shutdown().await;
    b.node.shutdown().await;
    drop(a.identity);
    Ok(out)
}

fn kb(b: u64) -> String {
    format!("{:.1} KB", b as f64 / 1e3)
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

fn reconnection_section(rs: &[Reconnection], opts: Options) -> Section {
    let mut s = Section::new(
        "reconnect",
        "Reconnection after offline",
        format!(
            "A device and a relay (real redb file, durable commits) hold D cases ({} changes each); \
             offline, k = {K} cases change on the device and k others on the relay (through a second device); \
             the device reconnects over QUIC on loopback. Floor: the 2k new changes' bytes plus their \
             64-byte signatures. Baseline: Automerge's per-document sync (fresh state per document, \
             pipelined) of the same documents over the same kind of QUIC connection. Bytes are session \
             bytes both ways (frames with length prefixes). Round trips: the extra wall time of the same \
             exchange through a {} ms RTT delay line, divided by the RTT (QUIC handshake included).",
            2 + HISTORY,
            DELAY_RTT.as_millis()
        ),
    );
    s.columns(&[
        "D",
        "idle reconnection",
        "floor",
        "FieldSync up / down",
        "of floor",
        "per-doc up / down",
        "per-doc ÷ FieldSync bytes",
        "round trips FieldSync / per-doc",
        "wall FieldSync / per-doc",
    ]);
    for r in rs {
        let of_floor = r.fs.total() as f64 / r.floor as f64;
        let ratio = r.am.total() as f64 / r.fs.total() as f64;
        s.row([
            format!("{}", r.d),
            kb(r.idle),
            kb(r.floor),
            format!("{} / {}", kb(r.fs.up), kb(r.fs.down)),
            format!("{of_floor:.2}×"),
            format!("{} / {}", kb(r.am.up), kb(r.am.down)),
            format!("{ratio:.0}×"),
            format!(
                "{:.1} / {:.1} ({} rounds)",
                r.fs.round_trips(),
                r.am.round_trips(),
                r.am.rounds
            ),
            format!("{} / {}", ms(r.fs.wall), ms(r.am.wall)),
        ]);
        let p = format!("d{}", r.d);
        s.figure(format!("{p}.idle_reconnection_bytes"), r.idle as f64);
        s.figure(format!("{p}.floor_bytes"), r.floor as f64);
        s.figure(format!("{p}.envelope_bytes"), r.envelopes as f64);
        s.figure(format!("{p}.fieldsync.up_bytes"), r.fs.up as f64);
        s.figure(format!("{p}.fieldsync.down_bytes"), r.fs.down as f64);
        s.figure(format!("{p}.fieldsync.wall_s"), r.fs.wall.as_secs_f64());
        s.figure(format!("{p}.fieldsync.round_trips"), r.fs.round_trips());
        s.figure(format!("{p}.perdoc.up_bytes"), r.am.up as f64);
        s.figure(format!("{p}.perdoc.down_bytes"), r.am.down as f64);
        s.figure(format!("{p}.perdoc.wall_s"), r.am.wall.as_secs_f64());
        s.figure(format!("{p}.perdoc.round_trips"), r.am.round_trips());
        s.figure(format!("{p}.perdoc.rounds"), r.am.rounds as f64);
        s.figure(format!("{p}.perdoc_over_fieldsync_bytes"), ratio);
    }
    // Bytes within 1.3× of the floor plus a constant: the constant is what
    // a reconnection costs with nothing new (hellos, cursors, caught-up),
    // measured at each D.
    if let Some(last) = rs.last() {
        let worst = rs
            .iter()
            .map(|r| r.fs.total().saturating_sub(r.idle) as f64 / r.floor as f64)
            .fold(0.0, f64::max);
        let idle: Vec<String> = rs.iter().map(|r| kb(r.idle)).collect();
        s.goal(Goal::new(
            "reconnection bytes within 1.3× of the floor plus a constant",
            format!(
                "{worst:.2}× of the floor beyond the bytes of an idle reconnection ({})",
                idle.join(", ")
            ),
            worst <= 1.3,
        ));
        let trips: Vec<f64> = rs.iter().map(|r| r.fs.round_trips()).collect();
        let spread = trips.iter().cloned().fold(f64::MIN, f64::max)
            - trips.iter().cloned().fold(f64::MAX, f64::min);
        s.goal(Goal::new(
            "round trips independent of D",
            format!(
                "{} (D = {})",
                trips
                    .iter()
                    .map(|t| format!("{t:.1}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                rs.iter()
                    .map(|r| r.d.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            spread < 1.0,
        ));
        let ratio = last.am.total() as f64 / last.fs.total() as f64;
        let text = "≥ 200× fewer bytes than the per-document baseline at D = 10,000";
        let measured = format!("{ratio:.0}× at D = {}", last.d);
        if last.d >= 10_000 {
            s.goal(Goal::new(text, measured, ratio >= 200.0));
        } else {
            s.goal(Goal::unjudged(text, measured));
        }
    }
    let _ = opts;
    s
}

/// The initial sync's figures.
#[derive(Debug, Clone)]
struct Initial {
    cases: usize,
    changes: u64,
    /// The signed changes and geneses the relay holds for the cases.
    record: u64,
    /// The bare changes' bytes (no signature, no envelope).
    raw_changes: u64,
    /// Automerge's compressed save of every document.
    saved: u64,
    fs_down: u64,
    fs_up: u64,
    fs_wall: Duration,
    am: Cost,
    am_wall: Duration,
}

async fn initial_sync(n_cases: usize, per_case: usize) -> Result<Initial> {
    ensure!(per_case >= 2, "a case has at least its creation and triage");
    let dir = tempfile::tempdir()?;
    let hq = world::hq();
    let (relay, relay_identity, addr) = relay(dir.path(), &hq).await?;
    let a_store = world::device_store(1)?;
    let cases = world::make_cases(&a_store, n_cases, per_case - 2)?;
    let a = Party::device(&hq, 1, a_store)?;
    a.sync(addr).await.context("the first device's push")?;
    a.node.shutdown().await;

    // The documents' bytes, as the relay holds them.
    let c2 = cases.clone();
    let (record, raw_changes, changes, mut relay_docs) = relay
        .with_engine(move |e| -> Result<_> {
            let store = e.store();
            let (mut record, mut raw, mut n) = (0u64, 0u64, 0u64);
            for c in &c2 {
                record += store.case_genesis(c)?.context("a genesis")?.len() as u64;
                for env in store.case_envelopes(c)? {
                    record += env.len() as u64;
                    raw += decode_change(&env)?.payload().raw_bytes().len() as u64;
                    n += 1;
                }
            }
            Ok((record, raw, n, world::docs_of(store, &c2)?))
        })
        .await??;
    let saved: u64 = relay_docs.iter_mut().map(|d| d.save().len() as u64).sum();

    // A new device syncs everything.
    let c = Party::device(&hq, 3, world::device_store(3)?)?;
    let (out, fs_wall) = c.sync(addr).await.context("the new device's first sync")?;
    let held = c.node.with_engine(|e| e.store().log_head()).await??;
    ensure!(
        held == changes,
        "the new device holds {held} of {changes} changes"
    );

    // Per-document: the relay's documents to empty ones.
    let empty: Vec<AutoCommit> = (0..n_cases).map(|_| AutoCommit::new()).collect();
    let (am, am_wall) =
        per_document(&relay_identity, &c.connector, relay_docs, empty, None).await?;
    relay.shutdown().await;
    c.node.shutdown().await;
    Ok(Initial {
        cases: n_cases,
        changes,
        record,
        raw_changes,
        saved,
        fs_down: out.bytes_received,
        fs_up: out.bytes_sent,
        fs_wall,
        am,
        am_wall,
    })
}

fn initial_section(i: &Initial, opts: Options) -> Section {
    let mut s = Section::new(
        "initial",
        "Initial sync of a new device",
        format!(
            "A relay (real redb file) holds {} cases × {} changes; a new device syncs them all over QUIC \
             on loopback. The documents' bytes: the signed changes and geneses the relay holds for them \
             (the record that must cross); for reference, the bare Automerge changes and Automerge's \
             compressed save of the same documents. Baseline: Automerge's per-document sync of the same \
             documents to empty ones over the same kind of connection.",
            i.cases,
            i.changes / i.cases as u64
        ),
    );
    s.columns(&[
        "",
        "bytes down",
        "bytes up",
        "of the documents' bytes",
        "wall",
    ]);
    s.row([
        "documents: signed changes + geneses".to_owned(),
        kb(i.record),
        String::new(),
        "1.00×".into(),
        String::new(),
    ]);
    s.row([
        "(bare Automerge changes)".to_owned(),
        kb(i.raw_changes),
        String::new(),
        format!("{:.2}×", i.raw_changes as f64 / i.record as f64),
        String::new(),
    ]);
    s.row([
        "(Automerge compressed save)".to_owned(),
        kb(i.saved),
        String::new(),
        format!("{:.2}×", i.saved as f64 / i.record as f64),
        String::new(),
    ]);
    let fs_of = i.fs_down as f64 / i.record as f64;
    s.row([
        "FieldSync".to_owned(),
        kb(i.fs_down),
        kb(i.fs_up),
        format!("{fs_of:.2}×"),
        ms(i.fs_wall),
    ]);
    s.row([
        format!("Automerge per-document ({} rounds)", i.am.rounds),
        kb(i.am.down),
        kb(i.am.up),
        format!("{:.2}×", i.am.down as f64 / i.record as f64),
        ms(i.am_wall),
    ]);
    s.figure("cases", i.cases as f64);
    s.figure("changes", i.changes as f64);
    s.figure("record_bytes", i.record as f64);
    s.figure("raw_change_bytes", i.raw_changes as f64);
    s.figure("automerge_saved_bytes", i.saved as f64);
    s.figure("fieldsync.down_bytes", i.fs_down as f64);
    s.figure("fieldsync.up_bytes", i.fs_up as f64);
    s.figure("fieldsync.wall_s", i.fs_wall.as_secs_f64());
    s.figure("perdoc.down_bytes", i.am.down as f64);
    s.figure("perdoc.up_bytes", i.am.up as f64);
    s.figure("perdoc.wall_s", i.am_wall.as_secs_f64());
    let text = "initial sync of 1,000 cases × 50 changes within 1.1× of the documents' bytes";
    let measured = format!("{fs_of:.3}× ({} cases)", i.cases);
    if opts.quick {
        s.goal(Goal::unjudged(text, measured));
    } else {
        s.goal(Goal::new(text, measured, fs_of <= 1.1));
    }
    s
}
