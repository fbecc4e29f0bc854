//! [`Listener`]: QUIC on a UDP port and TLS 1.3 over TCP on the same port number.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use quinn::VarInt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::{Instant, timeout, timeout_at};
use tokio_rustls::TlsAcceptor;

use crate::close_code;
use crate::config::{quic_server, server_tls};
use crate::connection::{Connection, quic_peer, tls_peer, tune_tcp};
use crate::error::{TransportError, from_connection_error, from_io};
use crate::identity::Identity;
use crate::policy::PeerPolicy;
use crate::settings::{Protocols, TransportSettings};

/// How many times `bind` retries when port 0 gave a UDP port whose TCP twin is taken.
const SAME_PORT_ATTEMPTS: usize = 16;

/// Accepts connections over QUIC and over TLS 1.3 on TCP, on one port number.
///
/// Handshakes run in background tasks, so a slow or silent peer never holds
/// up the others; [`Listener::accept`] yields connections whose peer key has
/// been proven and accepted by the policy, in the order they became ready.
/// Failed handshakes are logged (`tracing`) and never reach `accept`.
#[derive(Debug)]
pub struct Listener {
    local: SocketAddr,
    protocols: Protocols,
    endpoint: Option<quinn::Endpoint>,
    ready: Mutex<mpsc::Receiver<Connection>>,
    tasks: Vec<AbortHandle>,
}

impl Listener {
    /// Binds QUIC and TCP on `addr` (port 0: one free port number for both).
    pub async fn bind(
        addr: SocketAddr,
        identity: &Identity,
        settings: &TransportSettings,
        policy: PeerPolicy,
    ) -> Result<Self, TransportError> {
        Self::bind_with(addr, identity, settings, policy, Protocols::default()).await
    }

    /// Binds only the transports in `protocols` (for tests, and hosts where one is unwanted).
    pub async fn bind_with(
        addr: SocketAddr,
        identity: &Identity,
        settings: &TransportSettings,
        policy: PeerPolicy,
        protocols: Protocols,
    ) -> Result<Self, TransportError> {
        if !protocols.quic && !protocols.tcp {
            return Err(TransportError::Config(
                "a listener needs QUIC, TCP or both".to_owned(),
            ));
        }
        let tls = server_tls(identity, policy)?;
        let quic_config = quic_server(tls.clone(), settings)?;
        let (endpoint, tcp) = bind_sockets(addr, protocols, quic_config).await?;
        let local = match (&endpoint, &tcp) {
            (Some(e), _) => e.local_addr(),
            (None, Some(t)) => t.local_addr(),
            (None, None) => Err(io::Error::other("no socket bound")),
        }
        .map_err(|source| TransportError::Bind { addr, source })?;

        let (tx, rx) = mpsc::channel(settings.accept_queue);
        let limit = Arc::new(Semaphore::new(settings.max_pending_handshakes));
        let mut tasks = Vec::new();
        if let Some(endpoint) = &endpoint {
            let task = tokio::spawn(quic_accept_loop(
                endpoint.clone(),
                tx.clone(),
                limit.clone(),
                settings.clone(),
            ));
            tasks.push(task.abort_handle());
        }
        if let Some(tcp) = tcp {
            let acceptor = TlsAcceptor::from(tls);
            let task = tokio::spawn(tcp_accept_loop(tcp, acceptor, tx, limit, settings.clone()));
            tasks.push(task.abort_handle());
        }
        tracing::info!(%local, quic = protocols.quic, tcp = protocols.tcp, "listening");
        Ok(Self {
            local,
            protocols,
            endpoint,
            ready: Mutex::new(rx),
            tasks,
        })
    }

    /// The bound address; QUIC and TCP share its port number.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The transports this listener serves.
    pub fn protocols(&self) -> Protocols {
        self.protocols
    }

    /// The next authenticated connection, from QUIC or TCP. Fails with
    /// [`TransportError::Closed`] once the listener is closed.
    pub async fn accept(&self) -> Result<Connection, TransportError> {
        self.ready
            .lock()
            .await
            .recv()
            .await
            .ok_or(TransportError::Closed)
    }

    /// Stops accepting and closes the QUIC endpoint (and so every QUIC
    /// connection accepted through it). Accepted TCP connections live on.
    pub fn close(&self) {
        for task in &self.tasks {
            task.abort();
        }
        if let Some(endpoint) = &self.endpoint {
            endpoint.close(VarInt::from_u32(close_code::NORMAL), b"listener closed");
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.close();
    }
}

/// Binds the UDP endpoint and the TCP listener on one port number.
async fn bind_sockets(
    addr: SocketAddr,
    protocols: Protocols,
    quic_config: quinn::ServerConfig,
) -> Result<(Option<quinn::Endpoint>, Option<TcpListener>), TransportError> {
    let bind_error = |source| TransportError::Bind { addr, source };
    if !protocols.quic {
        let tcp = TcpListener::bind(addr).await.map_err(bind_error)?;
        return Ok((None, Some(tcp)));
    }
    let mut last_error = None;
    for _ in 0..SAME_PORT_ATTEMPTS {
        let endpoint = quinn::Endpoint::server(quic_config.clone(), addr).map_err(bind_error)?;
        if !protocols.tcp {
            return Ok((Some(endpoint), None));
        }
        let port = endpoint.local_addr().map_err(bind_error)?.port();
        match TcpListener::bind(SocketAddr::new(addr.ip(), port)).await {
            Ok(tcp) => return Ok((Some(endpoint), Some(tcp))),
            // Port 0 gave a UDP port whose TCP twin is taken: pick another.
            Err(e) if addr.port() == 0 && e.kind() == io::ErrorKind::AddrInUse => {
                endpoint.close(VarInt::from_u32(0), b"");
                last_error = Some(e);
            }
            Err(e) => return Err(bind_error(e)),
        }
    }
    Err(bind_error(last_error.unwrap_or_else(|| {
        io::Error::from(io::ErrorKind::AddrInUse)
    })))
}

async fn quic_accept_loop(
    endpoint: quinn::Endpoint,
    ready: mpsc::Sender<Connection>,
    limit: Arc<Semaphore>,
    settings: TransportSettings,
) {
    let mut handshakes = JoinSet::new();
    loop {
        tokio::select! {
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                let Ok(permit) = limit.clone().try_acquire_owned() else {
                    tracing::warn!(remote = %incoming.remote_address(), "too many pending handshakes; refusing QUIC");
                    incoming.refuse();
                    continue;
                };
                handshakes.spawn(quic_handshake(incoming, ready.clone(), permit, settings.clone()));
            }
            Some(_) = handshakes.join_next(), if !handshakes.is_empty() => {}
        }
    }
}

async fn quic_handshake(
    incoming: quinn::Incoming,
    ready: mpsc::Sender<Connection>,
    _permit: OwnedSemaphorePermit,
    settings: TransportSettings,
) {
    let remote = incoming.remote_address();
    // One deadline for the handshake and the client's first bytes.
    let deadline = Instant::now() + settings.handshake_timeout;
    let handshake = async {
        let connecting = incoming.accept().map_err(|e| from_connection_error(&e))?;
        let conn = match timeout_at(deadline, connecting).await {
            Ok(conn) => conn.map_err(|e| from_connection_error(&e))?,
            Err(_) => {
                return Err(TransportError::Handshake(
                    "the QUIC handshake timed out".to_owned(),
                ));
            }
        };
        let peer = match quic_peer(&conn) {
            Ok(peer) => peer,
            Err(e) => {
                conn.close(VarInt::from_u32(close_code::BAD_PEER), b"bad peer");
                return Err(e);
            }
        };
        // The client's first bytes announce its session stream.
        match timeout_at(deadline, conn.accept_bi()).await {
            Ok(Ok((send, recv))) => Ok(Connection::quic(conn, peer, send, recv)),
            Ok(Err(e)) => Err(from_connection_error(&e)),
            Err(_) => {
                conn.close(
                    VarInt::from_u32(close_code::NO_SESSION_STREAM),
                    b"no session stream opened",
                );
                Err(TransportError::Handshake(
                    "the client opened no session stream in time".to_owned(),
                ))
            }
        }
    };
    match handshake.await {
        Ok(conn) => {
            tracing::debug!(%remote, peer = %conn.peer_device().short(), "accepted QUIC");
            // Err: the listener is gone; dropping the connection closes it.
            let _ = ready.send(conn).await;
        }
        Err(e) => tracing::info!(%remote, error = %e, "QUIC handshake failed"),
    }
}

async fn tcp_accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<Connection>,
    limit: Arc<Semaphore>,
    settings: TransportSettings,
) {
    let mut handshakes = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, remote) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // E.g. out of file descriptors: wait a little, go on.
                        tracing::warn!(error = %e, "TCP accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = limit.clone().try_acquire_owned() else {
                    tracing::warn!(%remote, "too many pending handshakes; refusing TCP");
                    continue;
                };
                handshakes.spawn(tcp_handshake(
                    stream, remote, acceptor.clone(), ready.clone(), permit, settings.clone(),
                ));
            }
            Some(_) = handshakes.join_next(), if !handshakes.is_empty() => {}
        }
    }
}

async fn tcp_handshake(
    stream: TcpStream,
    remote: SocketAddr,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<Connection>,
    _permit: OwnedSemaphorePermit,
    settings: TransportSettings,
) {
    tune_tcp(&stream, &settings);
    let tls = match timeout(settings.handshake_timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::info!(%remote, error = %from_io(e), "TLS over TCP handshake failed");
            return;
        }
        Err(_) => {
            tracing::info!(%remote, "TLS over TCP handshake timed out");
            return;
        }
    };
    match tls_peer(tls.get_ref().1) {
        Ok(peer) => {
            let conn = Connection::tcp(tls.into(), peer, remote);
            tracing::debug!(%remote, peer = %conn.peer_device().short(), "accepted TLS over TCP");
            let _ = ready.send(conn).await;
        }
        Err(e) => tracing::info!(%remote, error = %e, "TLS over TCP refused"),
    }
}
