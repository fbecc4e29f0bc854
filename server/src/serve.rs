//! `serve`: the relay on the network. QUIC and TLS-over-TCP on one port,
//! a live session per connected device, the control socket for the command
//! line, and a graceful stop.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fieldsync_identity::Role;
use fieldsync_node::{Mode, Node, NodeConfig};
use fieldsync_protocol::NodeRole;
use fieldsync_store::{PlainSeal, Store, StoreError, StoreOptions};
use fieldsync_transport::{
    Congestion, Identity, Listener, ListenerStats, PeerPolicy, TransportError, TransportSettings,
    close_code,
};
use serde::Deserialize;
use tokio::sync::Semaphore;

use crate::admin::{self, AdminContext, AdminRequest, AdminResponse, error_line, execute};
use crate::keys::{self, DataDir};

/// The default address: loopback, so that a first run exposes nothing.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:4433";

/// Connections served at once, by default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// Live connections one device key may hold at once, by default.
pub const DEFAULT_MAX_CONNECTIONS_PER_DEVICE: usize = 4;

/// `SO_RCVBUF` asked for the UDP socket, by default (8 MiB).
pub const DEFAULT_UDP_RECEIVE_BUFFER: usize = 8 * 1024 * 1024;

/// The store's page cache while serving, by default (MiB). redb's own
/// default (1 GiB) lets a relay's memory grow with every change it stores
/// or sends; with 16 MiB a relay holding and serving 10,000 cases stays
/// near 32 MiB resident, at the same ingest and sync speed (pages beyond
/// the cache are read again from the file, through the operating system's
/// page cache).
pub const DEFAULT_CACHE_SIZE_MIB: usize = 16;

/// How often `serve` logs what its listener refused, when it refused anything.
const STATS_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// What `serve` takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeOptions {
    /// UDP (QUIC) and TCP (TLS fallback) address.
    pub listen: SocketAddr,
    /// Connections served at once; more are turned away until one ends.
    pub max_connections: usize,
    /// Live connections one device key may hold at once; the next is
    /// refused with a named reason (a device needs one; a few more cover
    /// reconnections while a dead connection times out).
    pub max_connections_per_device: usize,
    /// `SO_RCVBUF` asked for the UDP socket, in bytes (0: the OS default).
    /// Linux caps it at `net.core.rmem_max`; the relay warns when it does.
    pub udp_receive_buffer: usize,
    /// The store's page cache, in bytes: the most redb keeps in memory of
    /// the store file (see [`StoreOptions`]).
    pub cache_size: usize,
    /// An office relay's headquarters (HOST:PORT): its log goes up there,
    /// and what its compartments may read comes down, whenever reachable.
    pub upstream: Option<String>,
    /// A relay certificate from headquarters to install first (an office
    /// relay's enrollment).
    pub cert: Option<PathBuf>,
    /// The QUIC link, for relays behind slow or long links (HF radio,
    /// satellite): served connections and the upstream one alike.
    pub link: LinkOptions,
}

/// The QUIC link settings a relay may tune (see [`TransportSettings`]):
/// an HF radio link needs a handshake timeout near a minute, a satellite
/// link an initial round-trip estimate near its real one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkOptions {
    /// [`TransportSettings::handshake_timeout`].
    pub handshake_timeout: Duration,
    /// [`TransportSettings::idle_timeout`].
    pub idle_timeout: Duration,
    /// [`TransportSettings::initial_rtt`].
    pub initial_rtt: Duration,
    /// [`TransportSettings::congestion`].
    pub congestion: Congestion,
    /// [`TransportSettings::initial_window`], in bytes.
    pub initial_window: u64,
}

impl Default for LinkOptions {
    fn default() -> Self {
        let t = TransportSettings::default();
        Self {
            handshake_timeout: t.handshake_timeout,
            idle_timeout: t.idle_timeout,
            initial_rtt: t.initial_rtt,
            congestion: t.congestion,
            initial_window: t.initial_window,
        }
    }
}

impl LinkOptions {
    /// `settings` with these link options.
    fn apply(&self, settings: TransportSettings) -> TransportSettings {
        TransportSettings {
            handshake_timeout: self.handshake_timeout,
            idle_timeout: self.idle_timeout,
            initial_rtt: self.initial_rtt,
            congestion: self.congestion,
            initial_window: self.initial_window,
            ..settings
        }
    }
}

/// The TOML config file (`--config FILE`, or `DIR/server.toml` when it
/// exists). Command-line options and environment variables win over it.
///
/// ```toml
/// listen = "0.0.0.0:4433"
/// max_connections = 2000
/// max_connections_per_device = 4
/// udp_receive_buffer = 8388608       # bytes; 0 keeps the OS default
/// cache_size_mib = 16                # the store's page cache
/// upstream = "hq.example.org:4433"   # office relays only
/// # The QUIC link (defaults shown; an HF radio relay wants
/// # handshake_timeout_secs = 60 and initial_rtt_ms near its round trip):
/// handshake_timeout_secs = 20
/// idle_timeout_secs = 60             # more than 10 (keep-alives go every 5 s)
/// initial_rtt_ms = 750
/// congestion = "cubic"               # or "newreno", "bbr"
/// initial_window = 38400             # bytes sent before the first acknowledgement
/// ```
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// See [`ServeOptions::listen`].
    pub listen: Option<String>,
    /// See [`ServeOptions::max_connections`].
    pub max_connections: Option<usize>,
    /// See [`ServeOptions::max_connections_per_device`].
    pub max_connections_per_device: Option<usize>,
    /// See [`ServeOptions::udp_receive_buffer`].
    pub udp_receive_buffer: Option<usize>,
    /// [`ServeOptions::cache_size`], in MiB (`--cache-size-mib` wins over it).
    pub cache_size_mib: Option<usize>,
    /// See [`ServeOptions::upstream`].
    pub upstream: Option<String>,
    /// [`LinkOptions::handshake_timeout`], in seconds.
    pub handshake_timeout_secs: Option<u64>,
    /// [`LinkOptions::idle_timeout`], in seconds.
    pub idle_timeout_secs: Option<u64>,
    /// [`LinkOptions::initial_rtt`], in milliseconds.
    pub initial_rtt_ms: Option<u64>,
    /// [`LinkOptions::congestion`]: `cubic`, `newreno` or `bbr`.
    pub congestion: Option<String>,
    /// [`LinkOptions::initial_window`], in bytes.
    pub initial_window: Option<u64>,
}

impl ConfigFile {
    /// The link options this file sets over the defaults, checked.
    fn link(&self) -> Result<LinkOptions, ServeError> {
        let d = LinkOptions::default();
        let congestion = match self.congestion.as_deref().map(str::to_ascii_lowercase) {
            None => d.congestion,
            Some(c) => match c.as_str() {
                "cubic" => Congestion::Cubic,
                "newreno" => Congestion::NewReno,
                "bbr" => Congestion::Bbr,
                _ => {
                    return Err(ServeError::Option(format!(
                        "congestion '{c}' is not one of: cubic, newreno, bbr"
                    )));
                }
            },
        };
        let link = LinkOptions {
            handshake_timeout: self
                .handshake_timeout_secs
                .map_or(d.handshake_timeout, Duration::from_secs),
            idle_timeout: self
                .idle_timeout_secs
                .map_or(d.idle_timeout, Duration::from_secs),
            initial_rtt: self
                .initial_rtt_ms
                .map_or(d.initial_rtt, Duration::from_millis),
            congestion,
            initial_window: self.initial_window.unwrap_or(d.initial_window),
        };
        link.apply(TransportSettings::default())
            .validate()
            .map_err(|e| ServeError::Option(format!("link settings: {e}")))?;
        Ok(link)
    }
}

/// Why the relay cannot serve.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The config file cannot be read or parsed.
    #[error("config file {path}: {reason}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An option has a wrong value.
    #[error("{0}")]
    Option(String),
    /// The data directory has no server.
    #[error("no server in {0}: run `fieldsync-server init --name NAME` first")]
    NotInitialized(PathBuf),
    /// Another process holds the store.
    #[error("the store {0} is in use: another fieldsync-server already serves this data directory")]
    InUse(PathBuf),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The relay's own key or certificate is wrong.
    #[error("{0}")]
    Identity(String),
    /// The network failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The engine could not start.
    #[error("cannot start the sync engine: {0}")]
    Engine(#[from] std::io::Error),
}

impl ConfigFile {
    /// Reads `path`.
    pub fn read(path: &Path) -> Result<Self, ServeError> {
        let text = std::fs::read_to_string(path).map_err(|e| ServeError::Config {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        toml::from_str(&text).map_err(|e| ServeError::Config {
            path: path.to_owned(),
            reason: e.to_string(),
        })
    }
}

impl ServeOptions {
    /// Options from the command line (or environment) first, then the
    /// config file, then the defaults.
    pub fn resolve(
        listen: Option<&str>,
        max_connections: Option<usize>,
        file: &ConfigFile,
    ) -> Result<Self, ServeError> {
        let listen = listen.or(file.listen.as_deref()).unwrap_or(DEFAULT_LISTEN);
        let listen = listen.parse().map_err(|_| {
            ServeError::Option(format!(
                "listen address '{listen}' is not IP:PORT (e.g. {DEFAULT_LISTEN})"
            ))
        })?;
        let max_connections = max_connections
            .or(file.max_connections)
            .unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if max_connections == 0 {
            return Err(ServeError::Option(
                "max_connections must be at least 1".into(),
            ));
        }
        let max_connections_per_device = file
            .max_connections_per_device
            .unwrap_or(DEFAULT_MAX_CONNECTIONS_PER_DEVICE);
        if max_connections_per_device == 0 {
            return Err(ServeError::Option(
                "max_connections_per_device must be at least 1".into(),
            ));
        }
        let cache_size_mib = file.cache_size_mib.unwrap_or(DEFAULT_CACHE_SIZE_MIB);
        let cache_size = cache_size_mib
            .checked_mul(1024 * 1024)
            .filter(|_| cache_size_mib >= 1)
            .ok_or_else(|| {
                ServeError::Option(format!(
                    "cache_size_mib must be at least 1 (MiB), and fit in memory; {cache_size_mib} does not"
                ))
            })?;
        Ok(Self {
            listen,
            max_connections,
            max_connections_per_device,
            udp_receive_buffer: file
                .udp_receive_buffer
                .unwrap_or(DEFAULT_UDP_RECEIVE_BUFFER),
            cache_size,
            upstream: file.upstream.clone(),
            cert: None,
            link: file.link()?,
        })
    }

    /// How the store is opened: its page cache.
    pub fn store_options(&self) -> StoreOptions {
        StoreOptions::default().with_cache_size(self.cache_size)
    }

    /// The listener's settings: the transport's defaults with these options.
    pub fn transport_settings(&self) -> TransportSettings {
        self.link.apply(TransportSettings {
            max_connections_per_peer: self.max_connections_per_device,
            udp_receive_buffer: (self.udp_receive_buffer > 0).then_some(self.udp_receive_buffer),
            ..TransportSettings::default()
        })
    }
}

/// A relay that is up: its engine and the address it listens on.
#[derive(Debug)]
pub struct Running {
    /// The engine (for jobs and events).
    pub node: Node,
    /// The bound address (the real port when 0 was asked).
    pub addr: SocketAddr,
    /// This relay's device id.
    pub relay: fieldsync_identity::DeviceId,
}

/// Opens the relay in `dir`, binds `opts.listen`, and serves until
/// `shutdown` completes; `ready` is called once the listener is bound.
pub async fn serve(
    dir: &DataDir,
    opts: &ServeOptions,
    ready: impl FnOnce(&Running),
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    if let Some(addr) = &opts.upstream {
        check_upstream(addr)?;
    }
    let path = dir.store();
    if !path.is_file() {
        return Err(ServeError::NotInitialized(dir.root().to_owned()));
    }
    let store = match Store::open_with(&path, PlainSeal, opts.store_options()) {
        Ok(s) => s,
        Err(StoreError::Busy { .. }) => return Err(ServeError::InUse(path)),
        Err(e) => return Err(e.into()),
    };
    if let Some(path) = &opts.cert {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ServeError::Identity(format!("{}: {e}", path.display())))?;
        let cert = crate::hq::install_office_certificate(dir, &store, &text)
            .map_err(|e| ServeError::Identity(error_line(&e)))?;
        tracing::info!(hq = %cert.issuer(), "relay certificate installed");
    }
    let hq = admin::hq_public(&store).map_err(|_| {
        ServeError::Identity(format!(
            "this relay has no certificate from headquarters yet: enroll {} at headquarters with --role relay, then serve --cert FILE",
            store.device().id()
        ))
    })?;
    let cert = keys::read_certificate(&dir.relay_certificate(), &hq)
        .map_err(|e| ServeError::Identity(e.to_string()))?;
    if cert.device() != store.device().id() || cert.role() != Role::Relay {
        return Err(ServeError::Identity(format!(
            "{} is not a relay certificate for this relay ({})",
            dir.relay_certificate().display(),
            store.device().id().short()
        )));
    }
    let identity = Identity::new(store.device().secret_key())
        .map_err(|e| ServeError::Identity(e.to_string()))?;
    let relay = store.device().id();
    let node = Node::start(store, NodeConfig::new(NodeRole::Relay, cert, hq))?;
    let listener = match Listener::bind(
        opts.listen,
        &identity,
        &opts.transport_settings(),
        PeerPolicy::accept_any(),
    )
    .await
    {
        Ok(l) => l,
        Err(e) => {
            node.shutdown().await;
            return Err(e.into());
        }
    };
    let running = Running {
        node: node.clone(),
        addr: listener.local_addr(),
        relay,
    };
    #[cfg(unix)]
    let control = match start_control(dir, &node) {
        Ok(c) => c,
        Err(e) => {
            node.shutdown().await;
            return Err(e);
        }
    };
    let (stop_upstream, upstream) = match &opts.upstream {
        Some(addr) => match start_upstream(&node, &identity, addr, &opts.link).await {
            Ok((tx, task)) => (Some(tx), Some(task)),
            Err(e) => {
                #[cfg(unix)]
                control.abort();
                node.shutdown().await;
                return Err(e);
            }
        },
        None => (None, None),
    };
    ready(&running);
    tracing::info!(addr = %running.addr, relay = %relay.short(), "serving");
    let limit = Arc::new(Semaphore::new(opts.max_connections));
    let mut stats_timer = tokio::time::interval(STATS_EVERY);
    let mut last_stats = listener.stats();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = stats_timer.tick() => {
                let now = listener.stats();
                log_refusals(&last_stats, &now);
                last_stats = now;
            }
            accepted = listener.accept() => match accepted {
                Ok(conn) => {
                    let Ok(permit) = limit.clone().try_acquire_owned() else {
                        tracing::warn!(peer = %conn.peer_device().short(), "connection limit reached; turning a device away");
                        tokio::spawn(conn.close(
                            close_code::BUSY,
                            "the relay is at its connection limit; try again later",
                        ));
                        continue;
                    };
                    let node = node.clone();
                    tokio::spawn(async move {
                        let outcome = node.run_connection(conn, Mode::Live).await;
                        match &outcome.error {
                            Some(e) => tracing::info!(peer = %outcome.peer.short(), error = %e, "session ended"),
                            None => tracing::debug!(peer = %outcome.peer.short(), "session ended"),
                        }
                        drop(permit);
                    });
                }
                Err(TransportError::Closed) => break,
                Err(e) => tracing::warn!(error = %e, "accept failed"),
            },
            () = &mut shutdown => break,
        }
    }
    tracing::info!("shutting down");
    listener.close();
    if let (Some(stop), Some(task)) = (stop_upstream, upstream) {
        let _ = stop.send(true);
        let _ = task.await;
    }
    node.shutdown().await;
    #[cfg(unix)]
    control.abort();
    Ok(())
}

/// Logs what the listener refused since `before`, if anything.
fn log_refusals(before: &ListenerStats, now: &ListenerStats) {
    let failed = now.handshakes_failed - before.handshakes_failed;
    let busy = now.refused_busy - before.refused_busy;
    let per_device = now.refused_per_peer - before.refused_per_peer;
    let openings = now.bad_openings - before.bad_openings;
    let streams = now.streams_refused - before.streams_refused;
    let retries = now.retries - before.retries;
    if busy > 0 {
        // At capacity: devices were turned away and will retry.
        tracing::warn!(
            accepted = now.accepted - before.accepted,
            handshakes_failed = failed,
            refused_busy = busy,
            refused_per_device = per_device,
            bad_openings = openings,
            streams_refused = streams,
            retries,
            devices_connected = now.peers,
            "too many handshakes at once in the last minute; some were refused"
        );
    } else if failed + per_device + openings + streams + retries > 0 {
        tracing::info!(
            accepted = now.accepted - before.accepted,
            handshakes_failed = failed,
            refused_busy = busy,
            refused_per_device = per_device,
            bad_openings = openings,
            streams_refused = streams,
            retries,
            devices_connected = now.peers,
            "listener refusals in the last minute"
        );
    }
}

/// Checks an upstream address for form only: the name is looked up at every
/// attempt, so an office that starts while headquarters' name does not
/// resolve (the uplink is down) serves its devices and connects once it does.
fn check_upstream(addr: &str) -> Result<(), ServeError> {
    if addr
        .rsplit_once(':')
        .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
    {
        return Err(ServeError::Option(format!(
            "upstream '{addr}' is not HOST:PORT"
        )));
    }
    Ok(())
}

/// An office relay's link to headquarters: one live session at a time,
/// redialed with backoff whenever it drops.
async fn start_upstream(
    node: &Node,
    identity: &Identity,
    addr: &str,
    link: &LinkOptions,
) -> Result<
    (
        tokio::sync::watch::Sender<bool>,
        tokio::task::JoinHandle<()>,
    ),
    ServeError,
> {
    let connector = fieldsync_transport::Connector::new(
        identity,
        link.apply(TransportSettings::default()),
        PeerPolicy::accept_any(),
    )?;
    let dialer = fieldsync_node::Dialer::resolving(
        node.clone(),
        connector,
        vec![addr.to_owned()],
        fieldsync_node::Backoff::default(),
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (ev_tx, mut ev_rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let logging = tokio::spawn(async move {
            while let Some(ev) = ev_rx.recv().await {
                match ev {
                    fieldsync_node::DialEvent::Connected { addr, transport } => {
                        tracing::info!(%addr, %transport, "upstream connected");
                    }
                    fieldsync_node::DialEvent::Unreachable { error } => {
                        tracing::info!(%error, "upstream unreachable");
                    }
                    fieldsync_node::DialEvent::SessionEnded(o) => {
                        tracing::info!(error = ?o.error, "upstream session ended");
                    }
                    _ => {}
                }
            }
        });
        dialer.run(stop_rx, ev_tx).await;
        let _ = logging.await;
    });
    Ok((stop_tx, task))
}

/// Serves the control socket: each request runs on the engine thread, so
/// the command line sees what the sessions see, and what it changes (a
/// revocation, a release) reaches the sessions at once.
#[cfg(unix)]
fn start_control(dir: &DataDir, node: &Node) -> Result<tokio::task::JoinHandle<()>, ServeError> {
    let server = crate::control::ControlServer::bind(&dir.control_socket())
        .map_err(|e| ServeError::Identity(format!("control socket: {e}")))?;
    let dir = dir.clone();
    let node = node.clone();
    let runtime = tokio::runtime::Handle::current();
    let handler = move |req: AdminRequest| -> Result<AdminResponse, String> {
        let dir = dir.clone();
        // Called on a blocking thread: wait there for the engine's answer.
        runtime
            .block_on(node.with_engine(move |engine| {
                let out = AdminContext::load(engine.store(), &dir)
                    .and_then(|ctx| execute(&ctx, &req))
                    .map_err(|e| error_line(&e));
                if out.is_ok() && req.changes_state() {
                    engine.revocations_changed();
                    engine.wipe_orders_changed();
                    engine.log_grew();
                }
                out
            }))
            .map_err(|e| e.to_string())?
    };
    Ok(tokio::spawn(server.serve(handler)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn listener_limits_come_from_the_config_file() {
        let file: ConfigFile =
            toml::from_str("max_connections_per_device = 2\nudp_receive_buffer = 1048576\n")
                .unwrap();
        let opts = ServeOptions::resolve(None, None, &file).unwrap();
        let settings = opts.transport_settings();
        assert_eq!(settings.max_connections_per_peer, 2);
        assert_eq!(settings.udp_receive_buffer, Some(1 << 20));
        assert!(settings.validate().is_ok());

        let defaults = ServeOptions::resolve(None, None, &ConfigFile::default()).unwrap();
        assert_eq!(
            defaults.max_connections_per_device,
            DEFAULT_MAX_CONNECTIONS_PER_DEVICE
        );
        assert_eq!(
            defaults.transport_settings().udp_receive_buffer,
            Some(DEFAULT_UDP_RECEIVE_BUFFER)
        );

        let os_default: ConfigFile = toml::from_str("udp_receive_buffer = 0").unwrap();
        let opts = ServeOptions::resolve(None, None, &os_default).unwrap();
        assert_eq!(opts.transport_settings().udp_receive_buffer, None);

        let zero: ConfigFile = toml::from_str("max_connections_per_device = 0").unwrap();
        assert!(matches!(
            ServeOptions::resolve(None, None, &zero),
            Err(ServeError::Option(m)) if m.contains("max_connections_per_device")
        ));
    }

    #[test]
    fn link_settings_come_from_the_config_file_and_are_checked() {
        let file: ConfigFile = toml::from_str(
            "handshake_timeout_secs = 60\nidle_timeout_secs = 180\ninitial_rtt_ms = 1500\n\
             congestion = \"BBR\"\ninitial_window = 12000\n",
        )
        .unwrap();
        let opts = ServeOptions::resolve(None, None, &file).unwrap();
        let s = opts.transport_settings();
        assert_eq!(s.handshake_timeout, Duration::from_secs(60));
        assert_eq!(s.idle_timeout, Duration::from_secs(180));
        assert_eq!(s.initial_rtt, Duration::from_millis(1500));
        assert_eq!(s.congestion, Congestion::Bbr);
        assert_eq!(s.initial_window, 12_000);
        assert!(s.validate().is_ok());
        // The upstream connection gets them too; the rest stays the default.
        let up = opts.link.apply(TransportSettings::default());
        assert_eq!(up.handshake_timeout, Duration::from_secs(60));
        assert_eq!(up.keep_alive, TransportSettings::default().keep_alive);

        let defaults = ServeOptions::resolve(None, None, &ConfigFile::default()).unwrap();
        assert_eq!(defaults.link, LinkOptions::default());
        assert_eq!(
            defaults.transport_settings().initial_window,
            TransportSettings::default().initial_window
        );

        for (bad, named) in [
            ("congestion = \"vegas\"", "congestion 'vegas'"),
            ("handshake_timeout_secs = 0", "handshake timeouts"),
            ("idle_timeout_secs = 8", "idle_timeout"),
            ("initial_rtt_ms = 0", "initial_rtt"),
            ("initial_window = 100", "initial_window"),
            (
                "handshake_timeout_secs = 18446744073709551615",
                "at most a day",
            ),
            ("initial_rtt_ms = 3600000", "initial_rtt"),
        ] {
            let file: ConfigFile = toml::from_str(bad).unwrap();
            match ServeOptions::resolve(None, None, &file) {
                Err(ServeError::Option(m)) => assert!(m.contains(named), "{bad}: {m}"),
                other => panic!("{bad}: expected a named refusal, got {other:?}"),
            }
        }
    }

    #[test]
    fn the_store_cache_comes_from_the_config_file() {
        let file: ConfigFile = toml::from_str("cache_size_mib = 8").unwrap();
        let opts = ServeOptions::resolve(None, None, &file).unwrap();
        assert_eq!(opts.cache_size, 8 << 20);
        assert_eq!(opts.store_options().cache_size, 8 << 20);

        let defaults = ServeOptions::resolve(None, None, &ConfigFile::default()).unwrap();
        assert_eq!(defaults.cache_size, DEFAULT_CACHE_SIZE_MIB << 20);
        assert!(defaults.cache_size < StoreOptions::DEFAULT_CACHE_SIZE);

        for bad in [
            "cache_size_mib = 0",
            "cache_size_mib = 18446744073709551615",
        ] {
            let file: ConfigFile = toml::from_str(bad).unwrap();
            assert!(matches!(
                ServeOptions::resolve(None, None, &file),
                Err(ServeError::Option(m)) if m.contains("cache_size_mib")
            ));
        }
    }
}
