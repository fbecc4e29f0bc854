//! Shared helpers of FieldSync's end-to-end tests: locating and running the
//! real binaries as child processes.
//!
//! This package holds no product code. Its tests (`tests/`) drive the
//! `fieldsync-agent` binary over its command line, crash it with `kill -9`,
//! and exchange bundles between stores; its benches (`benches/`) measure the
//! store against bare redb in the same run.
//!
//! ```no_run
//! let out = fieldsync_tests::Agent::new(std::path::Path::new("/tmp/x")).run(&["id"]);
//! ```
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// Path of a workspace binary, (re)built once per test process so that a
/// test never runs a stale binary (cargo does not rebuild the binaries of
/// other packages for a test run; the build is a no-op when they are fresh).
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    // target/<profile>/deps/<test-exe> → target/<profile>/<name>
    let dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .map(|d| {
            if d.ends_with("deps") {
                d.parent().map(Path::to_path_buf).unwrap_or(d)
            } else {
                d
            }
        })
        .unwrap_or_else(|| PathBuf::from("target/debug"));
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "--bins", "-p", "fieldsync-agent"]);
        if dir.ends_with("release") {
            cmd.arg("--release");
        }
        let status = cmd.status();
        assert!(
            matches!(status, Ok(s) if s.success()),
            "building the FieldSync binaries failed: {status:?}"
        );
    });
    dir.join(name)
}

/// One agent with its own data directory.
#[derive(Debug, Clone)]
pub struct Agent {
    data: PathBuf,
}

/// A finished agent command.
#[derive(Debug)]
pub struct Run {
    /// Exit code (`None` if killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// Panics with the command's output unless it succeeded.
    pub fn ok(self) -> Self {
        assert_eq!(
            self.code,
            Some(0),
            "command failed:\nstdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// Panics unless the command failed with exit code 1 and a one-line error.
    pub fn fails(self) -> Self {
        assert_eq!(
            self.code,
            Some(1),
            "expected failure:\nstdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        assert!(
            self.stderr.starts_with("error: "),
            "stderr: {}",
            self.stderr
        );
        self
    }

    /// Standard output, trimmed.
    pub fn out(&self) -> &str {
        self.stdout.trim()
    }
}

impl Agent {
    /// An agent whose data lives in `data`.
    pub fn new(data: &Path) -> Self {
        Self {
            data: data.to_owned(),
        }
    }

    /// The data directory.
    pub fn data(&self) -> &Path {
        &self.data
    }

    /// The agent command, ready to run.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(binary("fieldsync-agent"));
        cmd.arg("--data").arg(&self.data).args(args);
        cmd.env_remove("FIELDSYNC_DATA").env_remove("FIELDSYNC_LOG");
        cmd
    }

    /// Runs the agent with `args`.
    pub fn run(&self, args: &[&str]) -> Run {
        let out: Output = self
            .command(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot start fieldsync-agent: {e}"));
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}
