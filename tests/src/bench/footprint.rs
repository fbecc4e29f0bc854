//! Footprint: what the field agent costs a device. The release binary's
//! size (beside the same binary stripped, and the relay's), the resident
//! memory of `fieldsync-agent sync --watch` sitting idle after a sync (a
//! real child process connected to a real `fieldsync-server serve` child),
//! the bytes an encrypted store spends per change (beside the signed
//! changes' own bytes), and the start-up time of `case list` on a store of
//! 1,000 cases (beside commands that do not open the store, or only open
//! it).
//!
//! Three agents take part: A, locked with a key file, creates the cases
//! (timed for the start-up goal) and pushes them; B, locked with a
//! passphrase (the default), and C, with a key file, receive them all over
//! the relay. What Argon2id's 64 MiB leaves behind shows as B against C,
//! once after the sync and once restarted with nothing to receive.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::world::make_cases;
use super::{Goal, Options, Section, peak_rss_kib, percentile, rss_kib};
use crate::{Agent, Server, binary};

const MIB: f64 = 1024.0 * 1024.0;

/// Runs the scenario.
pub fn run(opts: Options) -> Result<Vec<Section>> {
    let cases = opts.pick(1_000, 200);
    let history = opts.pick(3, 1);
    let runs = opts.pick(15, 5);
    let cpu_runs = opts.pick(40, 10);
    let pass_runs = opts.pick(5, 2);
    let idle = opts.pick(Duration::from_secs(5), Duration::from_secs(2));
    let per_case = 2 + history;
    let changes = (cases * per_case) as u64;

    let mut s = Section::new(
        "footprint",
        "Footprint",
        format!(
            "The release binaries as built (`target/release`), and copies stripped with `objcopy`. \
             Three agents enrolled at a real `fieldsync-server serve` child on loopback: A, locked \
             with a key file, holds {cases} cases × {per_case} signed changes ({changes} changes, \
             made through the store API on its real encrypted redb file, one durable commit \
             each) and pushes them; B (passphrase: Argon2id, m = 64 MiB) and C (key file) receive \
             them all through the relay. Resident memory (VmRSS; VmHWM is the peak) of each \
             `sync --watch` child after all synced and sat idle {} s, and of B and C restarted \
             with nothing left to receive. Start-up: wall time of the \
             real child process, median of {runs} interleaved runs after a warm-up run \
             (passphrase: {pass_runs} runs), and CPU time (user + system) per run over \
             {cpu_runs} runs in a row.",
            idle.as_secs()
        ),
    );
    s.columns(&["measure", "value", "beside it, same run"]);

    let dir = tempfile::tempdir().context("temporary directory")?;
    let agent_bin = binary("fieldsync-agent");
    let server_bin = binary("fieldsync-server");

    // 1. Binary sizes.
    let agent_size = file_len(&agent_bin)?;
    let server_size = file_len(&server_bin)?;
    let agent_stripped = stripped_len(&agent_bin, dir.path(), "--strip-all")?;
    let agent_no_debug = stripped_len(&agent_bin, dir.path(), "--strip-debug")?;
    let server_stripped = stripped_len(&server_bin, dir.path(), "--strip-all")?;
    s.figure("agent_binary_bytes", agent_size as f64);
    s.figure("server_binary_bytes", server_size as f64);
    let mut beside = format!("server {}", mib(server_size));
    if let (Some(a), Some(d), Some(srv)) = (agent_stripped, agent_no_debug, server_stripped) {
        s.figure("agent_binary_stripped_bytes", a as f64);
        s.figure("agent_binary_no_debuginfo_bytes", d as f64);
        s.figure("server_binary_stripped_bytes", srv as f64);
        beside = format!(
            "stripped {} (without debug info only {}); server {} ({} stripped)",
            mib(a),
            mib(d),
            mib(server_size),
            mib(srv)
        );
    }
    s.row(["agent release binary", &mib(agent_size), &beside]);
    s.goal(Goal::new(
        "agent release binary (`target/release/fieldsync-agent` as built) < 20 MiB",
        match agent_stripped {
            Some(a) => format!("{} ({} stripped)", mib(agent_size), mib(a)),
            None => mib(agent_size),
        },
        (agent_size as f64) < 20.0 * MIB,
    ));

    // 2. Headquarters, serving; agent A (key file) with the cases.
    let hq = Server::new(&dir.path().join("hq"));
    check(
        hq.command(&["init", "--name", "hq-relay", "--compartments", "general"]),
        "fieldsync-server init",
    )?;
    let serving = hq.serve("127.0.0.1:0");
    let relay = serving.addr.to_string();
    let a = Agent::with_key_file(&dir.path().join("a"), &dir.path().join("a.key"));
    enroll(&a, &hq, "field-a", &relay, dir.path())?;
    let made = Instant::now();
    let (envelope_bytes, listed) = {
        let store = a.open_store();
        let ids = make_cases(&store, cases, history)?;
        let mut bytes = 0u64;
        let mut count = 0u64;
        for id in &ids {
            for e in store.case_envelopes(id)? {
                bytes += e.len() as u64;
                count += 1;
            }
        }
        if count != changes {
            bail!("agent A holds {count} changes of its cases, expected {changes}");
        }
        (bytes, store.list_cases()?.len())
    };
    if listed != cases {
        bail!("agent A lists {listed} cases, expected {cases}");
    }
    let made = made.elapsed();

    // 3. Start-up, on A's store (before any sync holds it open): wall
    // time interleaved, then CPU time (user + system) in batches.
    let a_listed = listing(&a)?;
    if a_listed != (cases, changes) {
        bail!(
            "`case list` on agent A shows {a_listed:?} (cases, changes), expected {:?}",
            (cases, changes)
        );
    }
    let version = || {
        let mut c = Command::new(&agent_bin);
        c.arg("--version");
        c
    };
    let id = || a.command(&["id"]);
    let list = || a.command(&["case", "list"]);
    let mut t_version = Vec::new();
    let mut t_id = Vec::new();
    let mut t_list = Vec::new();
    for r in 0..=runs {
        let v = time(version(), "fieldsync-agent --version")?;
        let i = time(id(), "fieldsync-agent id")?;
        let l = time(list(), "fieldsync-agent case list")?;
        if r > 0 {
            t_version.push(v);
            t_id.push(i);
            t_list.push(l);
        }
    }
    let (version_ms, id_ms, list_ms) =
        (median_ms(&t_version), median_ms(&t_id), median_ms(&t_list));
    let list_min_ms = min_ms(&t_list);
    let cpu_version = cpu_ms_per_run(version, cpu_runs, "fieldsync-agent --version")?;
    let cpu_id = cpu_ms_per_run(id, cpu_runs, "fieldsync-agent id")?;
    let cpu_list = cpu_ms_per_run(list, cpu_runs, "fieldsync-agent case list")?;

    // 4. Watching: A pushes everything, then B (passphrase) and C (key
    // file) pull everything at once and all three sit idle.
    let b = Agent::new(&dir.path().join("b"));
    enroll(&b, &hq, "field-b", &relay, dir.path())?;
    let c = Agent::with_key_file(&dir.path().join("c"), &dir.path().join("c.key"));
    enroll(&c, &hq, "field-c", &relay, dir.path())?;
    let synced_within = Duration::from_secs(opts.pick(120, 30));
    let mut watch_a = Watcher::start(&a)?;
    watch_a.wait_for("synced with relay", synced_within)?;
    let mut watch_b = Watcher::start(&b)?;
    let mut watch_c = Watcher::start(&c)?;
    watch_b.wait_for("synced with relay", synced_within)?;
    watch_c.wait_for("synced with relay", synced_within)?;
    std::thread::sleep(idle);
    let a_mem = watch_a.memory()?;
    let b_mem = watch_b.memory()?;
    let c_mem = watch_c.memory()?;
    let relay_rss = rss_kib(serving.pid()).unwrap_or(0);
    watch_a.stop()?;
    watch_b.stop()?;
    watch_c.stop()?;

    // What arrived: B and C list every case, A has nothing pending.
    for (name, agent) in [("B", &b), ("C", &c)] {
        let got = listing(agent)?;
        if got != (cases, changes) {
            bail!(
                "agent {name} holds {got:?} (cases, changes) after syncing, expected {:?}",
                (cases, changes)
            );
        }
    }
    let pending = run_json(&a, &["status", "--json"])?["pending"].as_u64();
    if pending != Some(0) {
        bail!("agent A still has {pending:?} changes not acknowledged after its sync");
    }
    // Argon2id alone: B and C watch again with nothing left to receive, so
    // an unlock and an empty exchange are all they did.
    let mut again_b = Watcher::start(&b)?;
    let mut again_c = Watcher::start(&c)?;
    again_b.wait_for("synced with relay", synced_within)?;
    again_c.wait_for("synced with relay", synced_within)?;
    std::thread::sleep(idle / 2);
    let (b_calm, c_calm) = (again_b.memory()?, again_c.memory()?);
    again_b.stop()?;
    again_c.stop()?;

    let mut t_pass = Vec::new();
    for _ in 0..pass_runs {
        t_pass.push(time(
            b.command(&["case", "list"]),
            "fieldsync-agent case list (passphrase)",
        )?);
    }
    let pass_ms = median_ms(&t_pass);
    drop(serving);

    // Store files: as the agents left them, and A's compacted.
    let store_of = |agent: &Agent| file_len(&agent.data().join(fieldsync_vault::STORE_FILE));
    let (a_store, b_store, c_store) = (store_of(&a)?, store_of(&b)?, store_of(&c)?);
    {
        let mut store = a.open_store();
        store.compact()?;
    }
    let a_compact = store_of(&a)?;

    // Binary rows were added first; then start-up, memory, store.
    s.row([
        format!("start-up, `case list`, {cases} cases, key file"),
        format!("{list_ms:.1} ms (min {list_min_ms:.1})"),
        format!(
            "`--version` (opens nothing) {version_ms:.1} ms; `id` (opens the store) {id_ms:.1} ms. \
             CPU per run: `case list` {}, `id` {}, `--version` {}",
            opt_ms(cpu_list),
            opt_ms(cpu_id),
            opt_ms(cpu_version)
        ),
    ]);
    s.row([
        format!("start-up, `case list`, {cases} cases, passphrase"),
        format!("{pass_ms:.0} ms"),
        format!(
            "+{:.0} ms over the key file: Argon2id (m = 64 MiB, t = 3) at every unlock, by design",
            pass_ms - list_ms
        ),
    ]);
    s.figure("startup_case_list_ms", list_ms);
    s.figure("startup_case_list_min_ms", list_min_ms);
    s.figure("startup_id_ms", id_ms);
    s.figure("startup_version_ms", version_ms);
    s.figure("startup_case_list_passphrase_ms", pass_ms);
    for (name, v) in [
        ("cpu_case_list_ms", cpu_list),
        ("cpu_id_ms", cpu_id),
        ("cpu_version_ms", cpu_version),
    ] {
        if let Some(v) = v {
            s.figure(name, v);
        }
    }

    let kib = |k: u64| format!("{:.1} MiB", k as f64 / 1024.0);
    s.row([
        "idle RSS, `sync --watch`, passphrase, received every case (B)".to_owned(),
        kib(b_mem.rss),
        format!(
            "private {}, mapped files (the binary) {}; peak (VmHWM) {}; the same with a key file (C): {} (private {}, peak {})",
            kib(b_mem.anon),
            kib(b_mem.file),
            kib(b_mem.peak),
            kib(c_mem.rss),
            kib(c_mem.anon),
            kib(c_mem.peak),
        ),
    ]);
    s.row([
        "idle RSS, `sync --watch` restarted with nothing to receive, passphrase (B)".to_owned(),
        kib(b_calm.rss),
        format!(
            "peak {}: Argon2id's 64 MiB, freed after the unlock; key file (C): {} (peak {}), so {:+.1} MiB of the unlock stays",
            kib(b_calm.peak),
            kib(c_calm.rss),
            kib(c_calm.peak),
            (b_calm.rss as f64 - c_calm.rss as f64) / 1024.0
        ),
    ]);
    s.row([
        "idle RSS, `sync --watch`, key file, sent every case (A)".to_owned(),
        kib(a_mem.rss),
        format!(
            "private {}, mapped files {}; peak {}; the relay {}",
            kib(a_mem.anon),
            kib(a_mem.file),
            kib(a_mem.peak),
            kib(relay_rss)
        ),
    ]);
    for (name, m) in [
        ("passphrase", b_mem),
        ("receiver_key_file", c_mem),
        ("sender_key_file", a_mem),
    ] {
        s.figure(format!("agent_idle_rss_{name}_kib"), m.rss as f64);
        s.figure(format!("agent_peak_rss_{name}_kib"), m.peak as f64);
        s.figure(format!("agent_idle_anon_{name}_kib"), m.anon as f64);
        s.figure(format!("agent_idle_file_{name}_kib"), m.file as f64);
    }
    for (name, m) in [("passphrase", b_calm), ("key_file", c_calm)] {
        s.figure(format!("agent_restarted_rss_{name}_kib"), m.rss as f64);
        s.figure(format!("agent_restarted_peak_{name}_kib"), m.peak as f64);
    }
    s.figure("relay_idle_rss_kib", relay_rss as f64);
    let worst = a_mem.rss.max(b_mem.rss).max(c_mem.rss);
    let rss_text =
        "agent idle RSS in `sync --watch` < 30 MiB, after syncing 1,000 cases (5,000 changes)";
    let rss_measured = format!(
        "{} at most ({} passphrase, {} key file receiving, {} key file sending)",
        kib(worst),
        kib(b_mem.rss),
        kib(c_mem.rss),
        kib(a_mem.rss)
    );
    if cases == 1_000 {
        s.goal(Goal::new(
            rss_text,
            rss_measured,
            (worst as f64) < 30.0 * 1024.0,
        ));
    } else {
        s.goal(Goal::unjudged(
            rss_text,
            format!("{rss_measured} after {cases} cases ({changes} changes)"),
        ));
    }

    let per = |bytes: u64| bytes as f64 / changes as f64;
    s.row([
        "store bytes per change (A, which made them)".to_owned(),
        format!("{:.0} B", per(a_store)),
        format!(
            "the signed changes {:.0} B each ({:.2}×); A compacted {:.0} B; received by sync: B {:.0} B, C {:.0} B; A's file {}",
            per(envelope_bytes),
            a_store as f64 / envelope_bytes as f64,
            per(a_compact),
            per(b_store),
            per(c_store),
            mib(a_store)
        ),
    ]);
    s.figure("changes", changes as f64);
    s.figure("store_a_bytes", a_store as f64);
    s.figure("store_a_compacted_bytes", a_compact as f64);
    s.figure("store_b_bytes", b_store as f64);
    s.figure("store_c_bytes", c_store as f64);
    s.figure("envelope_bytes", envelope_bytes as f64);
    s.figure("store_bytes_per_change", per(a_store));
    s.figure("envelope_bytes_per_change", per(envelope_bytes));
    s.figure(
        "store_to_envelope_ratio",
        a_store as f64 / envelope_bytes as f64,
    );
    s.figure("make_cases_s", made.as_secs_f64());

    let startup_text = "`case list` start-up on 1,000 cases (key file) < 50 ms";
    let startup_measured = format!(
        "{list_ms:.1} ms median ({:.0}× `--version`); CPU {}",
        list_ms / version_ms.max(0.001),
        opt_ms(cpu_list)
    );
    if cases == 1_000 {
        s.goal(Goal::new(startup_text, startup_measured, list_ms < 50.0));
    } else {
        s.goal(Goal::unjudged(
            startup_text,
            format!("{startup_measured} on {cases} cases"),
        ));
    }
    Ok(vec![s])
}

/// `x.y MiB`.
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB)
}

fn file_len(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("reading the size of {}", path.display()))?
        .len())
}

/// The size of a copy of `bin` passed through `objcopy FLAG`; `None` when
/// `objcopy` is not installed.
fn stripped_len(bin: &Path, dir: &Path, flag: &str) -> Result<Option<u64>> {
    let name = bin.file_name().context("a binary without a name")?;
    let copy: PathBuf = dir.join(format!("{}{flag}", name.to_string_lossy()));
    std::fs::copy(bin, &copy).with_context(|| format!("copying {}", bin.display()))?;
    let out = match Command::new("objcopy").arg(flag).arg(&copy).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).context("running objcopy"),
    };
    if !out.status.success() {
        bail!(
            "objcopy {flag} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let len = file_len(&copy)?;
    std::fs::remove_file(&copy).with_context(|| format!("removing {}", copy.display()))?;
    Ok(Some(len))
}

/// Runs `cmd` to completion; its standard output, or an error with its
/// standard error.
fn check(mut cmd: Command, what: &str) -> Result<String> {
    let out = cmd.output().with_context(|| format!("starting {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Wall time of `cmd`, from spawn to exit; an error if it failed.
fn time(mut cmd: Command, what: &str) -> Result<Duration> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let started = Instant::now();
    let out = cmd.output().with_context(|| format!("starting {what}"))?;
    let took = started.elapsed();
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(took)
}

fn median_ms(v: &[Duration]) -> f64 {
    let mut v = v.to_vec();
    v.sort();
    percentile(&v, 0.5).as_secs_f64() * 1e3
}

fn min_ms(v: &[Duration]) -> f64 {
    v.iter().min().map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

fn opt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.1} ms"))
}

/// CPU time (user + system) of this process's children that were waited
/// for (`/proc/self/stat`, cutime + cstime, in 1/100 s): exact in sum, so a
/// batch of runs gives the mean of one to a fraction of a tick.
fn children_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // Fields 16 and 17 of the line; the first after the name is field 3.
    let ticks = |i: usize| fields.get(i - 3)?.parse::<u64>().ok();
    Some(Duration::from_millis((ticks(16)? + ticks(17)?) * 10))
}

/// Mean CPU time of one run of the command `make` builds, over `runs`
/// runs in a row; `None` where `/proc` is not there.
fn cpu_ms_per_run(make: impl Fn() -> Command, runs: usize, what: &str) -> Result<Option<f64>> {
    let before = children_cpu();
    for _ in 0..runs {
        time(make(), what)?;
    }
    Ok(match (before, children_cpu()) {
        (Some(b), Some(a)) => Some(a.saturating_sub(b).as_secs_f64() * 1e3 / runs as f64),
        _ => None,
    })
}

fn run_json(agent: &Agent, args: &[&str]) -> Result<Value> {
    let text = check(
        agent.command(args),
        &format!("fieldsync-agent {}", args.join(" ")),
    )?;
    serde_json::from_str(&text).with_context(|| format!("not JSON: {text}"))
}

/// How many cases `case list --json` shows, and their signed changes in all.
fn listing(agent: &Agent) -> Result<(usize, u64)> {
    let list = run_json(agent, &["case", "list", "--json"])?;
    let cases = list
        .as_array()
        .context("`case list --json` is not an array")?;
    let changes = cases
        .iter()
        .map(|c| {
            c["changes"]
                .as_u64()
                .context("a listed case without `changes`")
        })
        .sum::<Result<u64>>()?;
    Ok((cases.len(), changes))
}

/// Initializes `agent` and enrolls it at `hq` as a field device of office
/// rome reading `general`, pointed at `relay`.
fn enroll(agent: &Agent, hq: &Server, name: &str, relay: &str, dir: &Path) -> Result<()> {
    check(
        agent.command(&["init", "--name", name, "--office", "rome"]),
        "fieldsync-agent init",
    )?;
    let id = run_json(agent, &["id", "--json"])?["device"]
        .as_str()
        .context("no device id")?
        .to_owned();
    let cert = dir.join(format!("{name}.cert"));
    let cert_s = cert.to_string_lossy().into_owned();
    check(
        hq.command(&[
            "enroll", "--device", &id, "--name", name, "--office", "rome", "--role", "field",
            "--read", "general", "--out", &cert_s,
        ]),
        "fieldsync-server enroll",
    )?;
    check(
        agent.command(&["enroll", "--cert", &cert_s, "--relay", relay]),
        "fieldsync-agent enroll",
    )?;
    Ok(())
}

/// Resident memory of a process, KiB.
#[derive(Debug, Clone, Copy)]
struct Memory {
    rss: u64,
    peak: u64,
    /// Private pages (heap, stacks): `RssAnon`.
    anon: u64,
    /// Pages of mapped files, the binary's code above all: `RssFile`,
    /// shared and clean, which the kernel can drop and read again.
    file: u64,
}

/// A `/proc/<pid>/status` field in KiB.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// A `fieldsync-agent sync --watch` child, its output lines on a channel;
/// killed (by its PID) if dropped before it stopped.
struct Watcher {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Watcher {
    fn start(agent: &Agent) -> Result<Self> {
        let mut child = agent
            .command(&["sync", "--watch"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting fieldsync-agent sync --watch")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Watcher {
            child,
            lines,
            seen: Vec::new(),
        })
    }

    /// Waits for an output line containing `what`.
    fn wait_for(&mut self, what: &str, within: Duration) -> Result<()> {
        let until = Instant::now() + within;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = line.contains(what);
                    self.seen.push(line);
                    if hit {
                        return Ok(());
                    }
                }
                Err(RecvTimeoutError::Timeout) => bail!(
                    "`sync --watch` printed no {what:?} within {within:?}; it printed {:?}",
                    self.seen
                ),
                Err(RecvTimeoutError::Disconnected) => bail!(
                    "`sync --watch` ended before printing {what:?}; it printed {:?}",
                    self.seen
                ),
            }
        }
    }

    fn memory(&self) -> Result<Memory> {
        let pid = self.child.id();
        match (
            rss_kib(pid),
            peak_rss_kib(pid),
            status_kib(pid, "RssAnon"),
            status_kib(pid, "RssFile"),
        ) {
            (Some(rss), Some(peak), Some(anon), Some(file)) => Ok(Memory {
                rss,
                peak,
                anon,
                file,
            }),
            _ => bail!("cannot read /proc/{pid}/status"),
        }
    }

    /// Interrupts it (SIGINT, as Ctrl-C) and waits until it stopped cleanly.
    fn stop(mut self) -> Result<()> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        self.wait_for("stopped", Duration::from_secs(30))?;
        let status = self.child.wait().context("waiting for sync --watch")?;
        if !status.success() {
            bail!("`sync --watch` exited with {status}");
        }
        Ok(())
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
