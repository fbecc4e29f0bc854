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

pub mod bench;
pub mod delay;
pub mod net;

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
        cmd.args([
            "build",
            "--quiet",
            "--bins",
            "-p",
            "fieldsync-agent",
            "-p",
            "fieldsync-server",
        ]);
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

/// The passphrase test agents' stores are locked with (through
/// `FIELDSYNC_PASSPHRASE`), unless an agent uses a key file.
pub const TEST_PASSPHRASE: &str = "field test passphrase";

/// One agent with its own data directory. Its store is encrypted at rest,
/// locked with [`TEST_PASSPHRASE`] or with a key file.
#[derive(Debug, Clone)]
pub struct Agent {
    data: PathBuf,
    key_file: Option<PathBuf>,
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
    /// An agent whose data lives in `data`, its store locked with
    /// [`TEST_PASSPHRASE`] (every command pays for Argon2id).
    pub fn new(data: &Path) -> Self {
        Self {
            data: data.to_owned(),
            key_file: None,
        }
    }

    /// An agent whose store is locked with the key file `key_file` (made by
    /// `init` if missing): unlocking costs next to nothing, for tests that
    /// time or kill commands.
    pub fn with_key_file(data: &Path, key_file: &Path) -> Self {
        Self {
            data: data.to_owned(),
            key_file: Some(key_file.to_owned()),
        }
    }

    /// Opens this agent's store in this process (the agent must not be
    /// running), unlocking it as the agent would.
    pub fn open_store(&self) -> fieldsync_store::Store {
        use fieldsync_vault::{Credential, Vault};
        let credential = match &self.key_file {
            Some(k) => Credential::from_key_file(k)
                .unwrap_or_else(|e| panic!("cannot read the key file: {e}")),
            None => Credential::passphrase(zeroize::Zeroizing::new(TEST_PASSPHRASE.to_owned())),
        };
        let key = Vault::new(&self.data)
            .unlock(&credential, &mut |_, _| {})
            .unwrap_or_else(|e| panic!("cannot unlock the agent's store: {e}"));
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).unwrap_or_else(|e| panic!("no randomness: {e}"));
        fieldsync_store::Store::open_sealed(
            &self.data.join(fieldsync_vault::STORE_FILE),
            fieldsync_store::AeadSeal::new(key.as_bytes(), seed),
        )
        .unwrap_or_else(|e| panic!("cannot open the agent's store: {e}"))
    }

    /// The data directory.
    pub fn data(&self) -> &Path {
        &self.data
    }

    /// The agent command, ready to run.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(binary("fieldsync-agent"));
        cmd.arg("--data").arg(&self.data).args(args);
        for var in [
            "FIELDSYNC_DATA",
            "FIELDSYNC_LOG",
            "FIELDSYNC_PASSPHRASE",
            "FIELDSYNC_KEY_FILE",
        ] {
            cmd.env_remove(var);
        }
        match &self.key_file {
            Some(k) => cmd.env("FIELDSYNC_KEY_FILE", k),
            None => cmd.env("FIELDSYNC_PASSPHRASE", TEST_PASSPHRASE),
        };
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

/// One relay (`fieldsync-server`) with its own data directory.
#[derive(Debug, Clone)]
pub struct Server {
    data: PathBuf,
}

/// A `fieldsync-server serve` child process; killed (by its PID) when dropped.
#[derive(Debug)]
pub struct Serving {
    child: std::process::Child,
    /// The address it serves on.
    pub addr: std::net::SocketAddr,
}

impl Serving {
    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the server at once (SIGKILL), as a crash or power loss would.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Asks the server to stop (SIGTERM) and waits for it; true if it
    /// exited successfully.
    pub fn stop(mut self) -> bool {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        self.child.wait().is_ok_and(|s| s.success())
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Server {
    /// A server whose data lives in `data`.
    pub fn new(data: &Path) -> Self {
        Self {
            data: data.to_owned(),
        }
    }

    /// The data directory.
    pub fn data(&self) -> &Path {
        &self.data
    }

    /// The server command, ready to run.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(binary("fieldsync-server"));
        cmd.arg("--data").arg(&self.data).args(args);
        for var in [
            "FIELDSYNC_SERVER_DATA",
            "FIELDSYNC_LISTEN",
            "FIELDSYNC_MAX_CONNECTIONS",
            "FIELDSYNC_CONFIG",
            "RUST_LOG",
        ] {
            cmd.env_remove(var);
        }
        cmd
    }

    /// Runs the server with `args` (not `serve`).
    pub fn run(&self, args: &[&str]) -> Run {
        let out: Output = self
            .command(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot start fieldsync-server: {e}"));
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Starts `serve --listen listen` and waits (at most 30 s) until it
    /// says it is serving.
    pub fn serve(&self, listen: &str) -> Serving {
        self.serve_with(listen, &[])
    }

    /// Like [`Server::serve`], with more `serve` arguments (`--upstream`, `--cert`).
    pub fn serve_with(&self, listen: &str, more: &[&str]) -> Serving {
        use std::io::{BufRead, BufReader};
        let mut args = vec!["serve", "--listen", listen];
        args.extend_from_slice(more);
        let mut child = self
            .command(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start fieldsync-server serve: {e}"));
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            while let Some(Ok(line)) = lines.next() {
                if let Some(rest) = line.split(" serving on ").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or("").to_owned();
                    let _ = tx.send(addr);
                }
            }
        });
        let addr = rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!("fieldsync-server serve did not start within 30 s")
            });
        let addr = addr
            .parse()
            .unwrap_or_else(|_| panic!("bad address in the serve line: {addr}"));
        Serving { child, addr }
    }
}
