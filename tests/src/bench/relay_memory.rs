//! Relay memory: a real `fieldsync-server serve` child process is filled
//! with D cases (10,000) by ten devices pushing at once over QUIC on
//! loopback; it is stopped and started again (a new process opening the
//! store), then a new device syncs every case down, so the relay reads them
//! all. The relay's resident memory (`VmRSS`, and the peak `VmHWM`, from
//! `/proc`) is read empty, after the pushes, after the new open and after
//! the sync down.
//!
//! The baseline, in the same run: the same relay, cases and devices with
//! redb's default page cache of 1 GiB (`--cache-size-mib 1024`), how a
//! relay ran before `serve` bounded its cache: its memory grows with every
//! change it stores or reads until the cache or the file is full.

use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, ensure};
use fieldsync_identity::{HqRoot, Role};
use fieldsync_node::Mode;
use fieldsync_store::Store;

use crate::{Server, Serving};

use super::subscribers::{rss_of, served_relay};
use super::world;
use super::{Goal, Options, Section, peak_rss_kib};

/// Notes added to each case after its creation and triage edit.
const NOTES: usize = 2;

/// Signed changes per case: the creation, the triage edit, the notes.
const CHANGES_PER_CASE: usize = 2 + NOTES;

/// The compartment device `i` writes its cases in: each pushing device has
/// its own, so that the relay does not forward one device's cases to the
/// others while they push (the devices would materialize each other's
/// cases, which is not what is measured).
fn compartment(i: usize) -> String {
    format!("desk-{i}")
}

/// How long the relay is left idle before its memory is read.
const SETTLE: Duration = Duration::from_millis(500);

/// What the goal allows a relay holding 10,000 cases, in KiB.
const GOAL_KIB: u64 = 64 * 1024;

/// One relay's figures.
struct Measured {
    /// The page cache it ran with, as shown.
    cache: String,
    /// Before any case, KiB.
    rss_empty: u64,
    /// Idle after every case was pushed, KiB.
    rss_loaded: u64,
    /// Peak while the devices pushed, KiB.
    push_peak: u64,
    /// Restarted: idle after opening the store with every case, KiB.
    rss_open: u64,
    /// Restarted: idle after a device synced every case down, KiB.
    rss_read: u64,
    /// Restarted: peak from the open through the sync down, KiB.
    peak: u64,
    /// Its store file, bytes.
    file: u64,
    /// Until every pushing device was synced.
    push: Duration,
    /// The new device's sync of everything.
    sync_down: Duration,
}

/// Runs the scenario.
pub fn run(opts: Options) -> Result<Vec<Section>> {
    let cases = opts.pick(10_000, 1_000);
    let pushers = opts.pick(10, 4);
    let limit = Duration::from_secs(opts.pick(300, 60));
    let dir = tempfile::tempdir()?;
    let before = measure(
        &dir.path().join("default-cache"),
        &["--cache-size-mib", "1024"],
        "redb's default, 1 GiB (before)",
        cases,
        pushers,
        limit,
    )
    .context("the relay with redb's default page cache")?;
    let after = measure(
        &dir.path().join("serve-default"),
        &[],
        &format!("serve's default, {}", serve_default_cache(dir.path())),
        cases,
        pushers,
        limit,
    )
    .context("the relay with serve's default page cache")?;

    let mib = |kib: u64| kib as f64 / 1024.0;
    let mut s = Section::new(
        "relay-memory",
        "Relay memory",
        format!(
            "A real `fieldsync-server serve` child process; {pushers} devices push {cases} cases \
             ({CHANGES_PER_CASE} signed changes each) over QUIC on loopback, all at once; the \
             relay is stopped and started again (a new process opening the store), then a new \
             device syncs every case down (the relay reads them all). Relay memory from \
             /proc: VmRSS idle after each step, VmHWM the peak of each process. The goal is \
             judged on the restarted relay, from its start through the sync down: what \
             holding and serving the cases costs. The push's peak adds the batches in flight \
             from {pushers} devices at once (bounded by the sessions' windows, not by the \
             cases; it varies from run to run with how many are queued). Baseline in the \
             same run: the same relay and devices with redb's default page cache (1 GiB), as \
             before `serve` bounded it (the integrity check of the open is bounded in both)."
        ),
    );
    s.columns(&[
        "relay page cache",
        "RSS empty",
        &format!("after {cases} cases pushed (peak)"),
        "restarted: RSS after the open",
        "after a device synced every case down",
        "restarted: peak (VmHWM)",
        "store file",
        "push",
        "sync down",
    ]);
    for m in [&before, &after] {
        s.row([
            m.cache.clone(),
            format!("{:.1} MiB", mib(m.rss_empty)),
            format!("{:.1} MiB ({:.1} MiB)", mib(m.rss_loaded), mib(m.push_peak)),
            format!("{:.1} MiB", mib(m.rss_open)),
            format!("{:.1} MiB", mib(m.rss_read)),
            format!("{:.1} MiB", mib(m.peak)),
            format!("{:.1} MB", m.file as f64 / 1e6),
            format!("{:.1} s", m.push.as_secs_f64()),
            format!("{:.1} s", m.sync_down.as_secs_f64()),
        ]);
    }
    s.figure("cases", cases as f64);
    s.figure("changes", (cases * CHANGES_PER_CASE) as f64);
    for (prefix, m) in [("baseline_", &before), ("", &after)] {
        s.figure(format!("{prefix}rss_empty_kib"), m.rss_empty as f64);
        s.figure(format!("{prefix}rss_pushed_kib"), m.rss_loaded as f64);
        s.figure(format!("{prefix}push_peak_kib"), m.push_peak as f64);
        s.figure(format!("{prefix}rss_open_kib"), m.rss_open as f64);
        s.figure(format!("{prefix}rss_read_kib"), m.rss_read as f64);
        s.figure(format!("{prefix}rss_peak_kib"), m.peak as f64);
        s.figure(format!("{prefix}store_file_bytes"), m.file as f64);
        s.figure(format!("{prefix}push_s"), m.push.as_secs_f64());
        s.figure(format!("{prefix}sync_down_s"), m.sync_down.as_secs_f64());
    }
    let ratio = after.peak as f64 / before.peak.max(1) as f64;
    s.figure("peak_ratio", ratio);
    s.figure(
        "sync_down_ratio",
        after.sync_down.as_secs_f64() / before.sync_down.as_secs_f64().max(1e-3),
    );
    let goal = "relay memory with 10,000 cases < 64 MiB (VmHWM of the relay holding them, \
                from its start through a device syncing every case down)";
    let measured = format!(
        "{:.1} MiB ({:.1} MiB idle after; redb's default cache: {:.1} MiB, {ratio:.2}×; \
         while {pushers} devices pushed them: {:.1} MiB peak)",
        mib(after.peak),
        mib(after.rss_read),
        mib(before.peak),
        mib(after.push_peak)
    );
    if opts.quick {
        s.goal(Goal::unjudged(goal, format!("{cases} cases: {measured}")));
    } else {
        s.goal(Goal::new(goal, measured, after.peak < GOAL_KIB));
    }
    Ok(vec![s])
}

/// `serve`'s default page cache as its `--help` states it ("16 MiB"), or
/// "unknown" when the help does not say.
fn serve_default_cache(dir: &Path) -> String {
    let help = Server::new(dir)
        .command(&["serve", "--help"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    help.split_once("--cache-size-mib")
        .and_then(|(_, rest)| rest.split_once("--config"))
        .and_then(|(text, _)| text.split_once("[default: "))
        .and_then(|(_, rest)| rest.split_once(']'))
        .map_or_else(|| "unknown".to_owned(), |(v, _)| format!("{v} MiB"))
}

/// Runs one relay in `dir` with `serve_args` through the whole scenario.
fn measure(
    dir: &Path,
    serve_args: &[&str],
    cache: &str,
    cases: usize,
    pushers: usize,
    limit: Duration,
) -> Result<Measured> {
    // The devices' cases are written before the relay starts, so that the
    // work of writing them does not overlap what is measured.
    let t = Instant::now();
    let stores = author(cases, pushers)?;
    eprintln!(
        "relay-memory: {cases} cases written by {pushers} devices in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let compartments: Vec<String> = (0..pushers).map(compartment).collect();
    let all: Vec<&str> = compartments.iter().map(String::as_str).collect();
    let (serving, hq) = served_relay(dir, &all.join(","), serve_args)?;
    std::thread::sleep(SETTLE);
    let rss_empty = rss_of(serving.pid())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    let started = Instant::now();
    push(&rt, &hq, stores, &all, serving.addr, limit)?;
    let push_time = started.elapsed();
    std::thread::sleep(SETTLE);
    let rss_loaded = rss_of(serving.pid())?;
    let push_peak = peak_rss_kib(serving.pid()).context("no VmHWM for the relay")?;
    ensure!(serving.stop(), "the relay did not stop cleanly");
    eprintln!(
        "relay-memory: pushed in {:.1} s; the relay restarts",
        push_time.as_secs_f64()
    );

    // The same relay again: a new process opening the store with every case.
    let serving = serve_again(dir, serve_args)?;
    std::thread::sleep(SETTLE);
    let rss_open = rss_of(serving.pid())?;
    let started = Instant::now();
    let (cases_held, changes_held) = sync_down(&rt, &hq, &all, serving.addr, limit)?;
    let sync_time = started.elapsed();
    ensure!(
        cases_held == cases && changes_held == cases * CHANGES_PER_CASE,
        "the new device holds {cases_held} cases and {changes_held} changes, not {cases} and {}",
        cases * CHANGES_PER_CASE
    );
    std::thread::sleep(SETTLE);
    let rss_read = rss_of(serving.pid())?;
    let peak = peak_rss_kib(serving.pid()).context("no VmHWM for the relay")?;
    eprintln!(
        "relay-memory: synced down in {:.1} s",
        sync_time.as_secs_f64()
    );
    let file = std::fs::metadata(dir.join("relay.redb"))
        .map(|m| m.len())
        .unwrap_or(0);
    drop(rt);
    ensure!(serving.stop(), "the relay did not stop cleanly");
    Ok(Measured {
        cache: cache.to_owned(),
        rss_empty,
        rss_loaded,
        push_peak,
        rss_open,
        rss_read,
        peak,
        file,
        push: push_time,
        sync_down: sync_time,
    })
}

/// Serves the relay in `dir` again (after a stop), as a new process.
fn serve_again(dir: &Path, serve_args: &[&str]) -> Result<Serving> {
    let server = Server::new(dir);
    catch_unwind(AssertUnwindSafe(|| {
        server.serve_with("127.0.0.1:0", serve_args)
    }))
    .map_err(|_| anyhow!("fieldsync-server serve did not start again"))
}

/// Every device in `stores` pushes its cases to the relay at `addr` at
/// the same time, device `i` writing compartment `compartments[i]`; returns
/// once every device is synced.
fn push(
    rt: &tokio::runtime::Runtime,
    hq: &HqRoot,
    stores: Vec<Store>,
    compartments: &[&str],
    addr: SocketAddr,
    limit: Duration,
) -> Result<()> {
    let mut nodes = Vec::with_capacity(stores.len());
    let mut sessions = Vec::with_capacity(stores.len());
    {
        let _in_runtime = rt.enter();
        for (i, store) in stores.into_iter().enumerate() {
            let (node, identity) =
                world::start_node(hq, store, 100 + i as u64, Role::Field, &[compartments[i]])?;
            let connector = world::connector(&identity)?;
            let pushing = node.clone();
            sessions.push(rt.spawn(async move {
                let conn = world::connect_retrying(&connector, addr).await?;
                Ok::<_, anyhow::Error>(pushing.run_connection(conn, Mode::UntilSynced).await)
            }));
            nodes.push(node);
        }
    }
    let outcomes = rt.block_on(async {
        let mut outcomes = Vec::new();
        for task in sessions {
            let outcome = tokio::time::timeout(limit, task)
                .await
                .map_err(|_| anyhow!("a device did not push its cases within {limit:?}"))???;
            outcomes.push(outcome);
        }
        for n in &nodes {
            n.shutdown().await;
        }
        Ok::<_, anyhow::Error>(outcomes)
    })?;
    for o in &outcomes {
        ensure!(
            o.synced && o.error.is_none(),
            "a device's push did not finish: {:?}",
            o.error
        );
    }
    Ok(())
}

/// A new device reading `compartments` syncs everything from the relay at
/// `addr`; returns the cases and changes it then holds.
fn sync_down(
    rt: &tokio::runtime::Runtime,
    hq: &HqRoot,
    compartments: &[&str],
    addr: SocketAddr,
    limit: Duration,
) -> Result<(usize, usize)> {
    let (node, connector) = {
        let _in_runtime = rt.enter();
        let store = world::device_store(1_000_000)?;
        let (node, identity) = world::start_node(hq, store, 99, Role::Field, compartments)?;
        (node, world::connector(&identity)?)
    };
    rt.block_on(async {
        let conn = world::connect_retrying(&connector, addr).await?;
        let outcome = tokio::time::timeout(limit, node.run_connection(conn, Mode::UntilSynced))
            .await
            .map_err(|_| anyhow!("the sync down did not finish within {limit:?}"))?;
        ensure!(
            outcome.synced && outcome.error.is_none(),
            "the sync down did not finish: {:?}",
            outcome.error
        );
        let held = node
            .with_engine(|e| {
                e.store()
                    .list_cases()
                    .map(|l| (l.len(), l.iter().map(|c| c.changes as usize).sum::<usize>()))
            })
            .await
            .map_err(|_| anyhow!("the device's node stopped"))??;
        node.shutdown().await;
        Ok(held)
    })
}

/// `pushers` device stores holding `cases` cases between them, each case
/// with [`CHANGES_PER_CASE`] signed changes; written on two threads.
fn author(cases: usize, pushers: usize) -> Result<Vec<Store>> {
    let per = cases.div_ceil(pushers);
    let mut stores: Vec<Option<Store>> = (0..pushers).map(|_| None).collect();
    std::thread::scope(|scope| -> Result<()> {
        let (even, odd): (Vec<_>, Vec<_>) =
            stores.iter_mut().enumerate().partition(|(i, _)| i % 2 == 0);
        let handles: Vec<_> = [even, odd]
            .into_iter()
            .map(|half| {
                scope.spawn(move || -> Result<()> {
                    for (i, slot) in half {
                        let first = i * per;
                        let count = per.min(cases.saturating_sub(first));
                        *slot = Some(author_one(i as u64, first, count)?);
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| anyhow!("writing the devices' cases panicked"))??;
        }
        Ok(())
    })?;
    stores
        .into_iter()
        .map(|s| s.context("a device store was not written"))
        .collect()
}

/// Device `n`'s store with cases `first..first + count`.
fn author_one(n: u64, first: usize, count: usize) -> Result<Store> {
    let store = world::device_store(n)?;
    world::make_cases_in(
        &store,
        &compartment(n as usize),
        first..first + count,
        NOTES,
    )?;
    Ok(store)
}
