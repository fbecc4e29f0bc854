//! `fieldsync-bench`: FieldSync's performance suite. Runs every scenario
//! beside its baseline in the same run, prints the report, and writes it to
//! `target/bench-report.json` and `target/bench-report.md`.
//!
//! ```text
//! cargo run --release -p fieldsync-tests --bin fieldsync-bench -- [--quick] [--only ID,ID] [--out DIR]
//! ```
//!
//! Scenario ids: reconnect (reconnection and initial sync), ingest,
//! subscribers, hostile, footprint, relay-memory. `--quick` runs the
//! reduced set (about two minutes; CI runs it so the suite never rots: it
//! reports, it does not judge timings). The exit status is non-zero only
//! when a scenario failed to run, never for a goal missed.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use fieldsync_tests::bench::{self, Options, Report, Section};

type Scenario = fn(Options) -> Result<Vec<Section>>;

/// Every scenario, in the order run: id, title (for a failure), function.
const SCENARIOS: &[(&str, &str, Scenario)] = &[
    (
        "reconnect",
        "Reconnection and initial sync",
        bench::reconnect::run,
    ),
    ("ingest", "Relay ingest", bench::ingest::run),
    ("subscribers", "Live subscribers", bench::subscribers::run),
    ("hostile", "Hostile links", bench::hostile::run),
    ("footprint", "Footprint", bench::footprint::run),
    ("relay-memory", "Relay memory", bench::relay_memory::run),
];

struct Args {
    quick: bool,
    only: Option<Vec<String>>,
    out: Option<PathBuf>,
}

fn usage() -> String {
    let ids: Vec<&str> = SCENARIOS.iter().map(|s| s.0).collect();
    format!(
        "usage: fieldsync-bench [--quick] [--only ID[,ID…]] [--out DIR]\nscenarios: {}",
        ids.join(", ")
    )
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        quick: false,
        only: None,
        out: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => args.quick = true,
            "--only" => {
                let ids: Vec<String> = it
                    .next()
                    .context("--only needs scenario ids")?
                    .split(',')
                    .map(str::to_owned)
                    .collect();
                for id in &ids {
                    if !SCENARIOS.iter().any(|s| s.0 == id) {
                        bail!("unknown scenario {id:?}\n{}", usage());
                    }
                }
                args.only = Some(ids);
            }
            "--out" => args.out = Some(it.next().context("--out needs a directory")?.into()),
            "-h" | "--help" => {
                println!("{}", usage());
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{}", usage()),
        }
    }
    Ok(args)
}

/// `target/` (this binary lives in `target/<profile>/`), unless `CARGO_TARGET_DIR` says otherwise.
fn target_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        return d.into();
    }
    std::env::current_exe()
        .ok()
        .and_then(|p| Some(p.parent()?.parent()?.to_path_buf()))
        .unwrap_or_else(|| PathBuf::from("target"))
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / (1024.0 * 1024.0));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    format!(
        "{cpu}, {cores} cores, {mem_gib:.0} GiB, {} {kernel}",
        std::env::consts::OS
    )
}

fn commit() -> String {
    Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("fieldsync-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs the scenarios; `Ok(false)` when one failed to run.
fn run() -> Result<bool> {
    let args = parse_args()?;
    let opts = Options { quick: args.quick };
    let started = Instant::now();
    let mut report = Report {
        machine: machine(),
        date: fieldsync_node::now().to_string(),
        commit: commit(),
        quick: args.quick,
        ..Report::default()
    };
    let mut all_ran = true;
    for (id, title, scenario) in SCENARIOS {
        if let Some(only) = &args.only
            && !only.iter().any(|o| o == id)
        {
            continue;
        }
        eprintln!("fieldsync-bench: {id} …");
        let t = Instant::now();
        let sections = match scenario(opts) {
            Ok(s) => s,
            Err(e) => {
                all_ran = false;
                vec![Section::failed(id, title, &e)]
            }
        };
        eprintln!(
            "fieldsync-bench: {id} took {:.1} s",
            t.elapsed().as_secs_f64()
        );
        for s in sections {
            all_ran &= s.error.is_none();
            println!("{}", s.markdown());
            report.sections.push(s);
        }
    }
    report.took_s = started.elapsed().as_secs_f64();
    let dir = args.out.unwrap_or_else(target_dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let json = dir.join("bench-report.json");
    let md = dir.join("bench-report.md");
    std::fs::write(&json, serde_json::to_string_pretty(&report.json())?)
        .with_context(|| format!("writing {}", json.display()))?;
    std::fs::write(&md, report.markdown()).with_context(|| format!("writing {}", md.display()))?;
    println!(
        "{}",
        report
            .markdown()
            .lines()
            .take_while(|l| !l.starts_with("####"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    eprintln!(
        "fieldsync-bench: report in {} and {} ({:.0} s)",
        json.display(),
        md.display(),
        report.took_s
    );
    Ok(all_ran)
}
