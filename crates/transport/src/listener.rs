//! [`Listener`]: QUIC on a UDP port and TLS 1.3 over TCP on the same port number.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use fieldsync_identity::{DeviceId, PublicKey};
use quinn::VarInt;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::{Instant, timeout_at};
use tokio_rustls::TlsAcceptor;

use crate::close_code;
use crate::config::{quic_server, server_tls};
use crate::connection::{Accepted, Connection, quic_peer, tls_peer, tune_tcp};
use crate::error::{TransportError, from_connection_error, from_io};
use crate::identity::Identity;
use crate::limits::{ConnGuard, Counters, ListenerStats, PeerSlot, PeerSlots};
use crate::policy::PeerPolicy;
use crate::settings::{Protocols, TransportSettings};

/// How many times `bind` retries when port 0 gave a UDP port whose TCP twin is taken.
const SAME_PORT_ATTEMPTS: usize = 16;

/// Accepts connections over QUIC and over TLS 1.3 on TCP, on one port number.
///
/// Handshakes run in background tasks, so a slow or silent peer never holds
/// up the others; [`Listener::accept`] yields connections whose peer key has
/// been proven and accepted by the policy, and whose opening frame has
/// arrived, in the order they became ready. Failed handshakes are logged
/// (`tracing`), counted ([`Listener::stats`]) and never reach `accept`.
///
/// # Limits
///
/// Everything a peer can make a listener hold is bounded by
/// [`TransportSettings`]: handshakes in progress
/// (`max_pending_handshakes`; beyond `retry_above` an unvalidated QUIC
/// client must first answer a Retry), the time and size of the client's
/// opening frame (`handshake_timeout`, `max_opening_frame`), connections per
/// peer key (`max_connections_per_peer`), streams per connection (one
/// session stream; further ones are refused at once) and the bytes a peer
/// may send ahead of the reader (`stream_receive_window`,
/// `connection_receive_window`). The UDP socket gets a large receive buffer
/// (`udp_receive_buffer`) so that a burst of handshakes is not dropped by
/// the kernel.
#[derive(Debug)]
pub struct Listener {
    local: SocketAddr,
    protocols: Protocols,
    endpoint: Option<quinn::Endpoint>,
    ready: Mutex<mpsc::Receiver<Connection>>,
    tasks: Vec<AbortHandle>,
    shared: Arc<Shared>,
    udp_receive_buffer: Option<usize>,
}

/// What the accept loops and handshake tasks share.
#[derive(Debug)]
struct Shared {
    pending: Arc<Semaphore>,
    slots: Arc<PeerSlots>,
    counters: Arc<Counters>,
    settings: TransportSettings,
}

impl Shared {
    /// Handshakes in progress now.
    fn in_progress(&self) -> usize {
        self.settings
            .max_pending_handshakes
            .saturating_sub(self.pending.available_permits())
    }

    /// A slot for `peer`, or the reason it has none.
    fn slot(&self, peer: &PublicKey) -> Result<PeerSlot, String> {
        self.slots.take(*peer).ok_or_else(|| {
            Counters::bump(&self.counters.refused_per_peer);
            format!(
                "device {} already holds {} live connections here, the limit; \
                 the oldest ends when its idle timeout passes",
                DeviceId::from_public_key(*peer).short(),
                self.slots.limit()
            )
        })
    }

    /// Hands a ready connection to `accept`.
    async fn deliver(&self, ready: &mpsc::Sender<Connection>, conn: Connection) {
        Counters::bump(&self.counters.accepted);
        // Err: the listener is gone; dropping the connection closes it.
        let _ = ready.send(conn).await;
    }
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
        let bound = bind_sockets(addr, protocols, quic_config, settings.udp_receive_buffer).await?;
        let local = match (&bound.endpoint, &bound.tcp) {
            (Some(e), _) => e.local_addr(),
            (None, Some(t)) => t.local_addr(),
            (None, None) => Err(io::Error::other("no socket bound")),
        }
        .map_err(|source| TransportError::Bind { addr, source })?;
        Ok(Self::serve(local, protocols, bound, tls, settings))
    }

    /// Serves QUIC over `socket`, a UDP socket the caller built: one that
    /// shapes, records or relays the datagrams it carries (a link
    /// emulator, a test harness), or a socket set up by other means.
    /// Everything else is as with [`Listener::bind_with`] with QUIC only:
    /// the same handshake, peer policy, limits and counters. No TLS over TCP
    /// is served, and the socket's buffers are the caller's to size
    /// ([`TransportSettings::udp_receive_buffer`] is not applied;
    /// [`Listener::udp_receive_buffer`] is `None`). Must be called within
    /// a Tokio runtime.
    ///
    /// A socket is made from a standard one with
    /// [`socket::tokio_socket`](crate::socket::tokio_socket), and
    /// implements [`socket::AsyncUdpSocket`](crate::socket::AsyncUdpSocket).
    pub fn with_socket(
        socket: Arc<dyn quinn::AsyncUdpSocket>,
        identity: &Identity,
        settings: &TransportSettings,
        policy: PeerPolicy,
    ) -> Result<Self, TransportError> {
        let addr = socket.local_addr().map_err(TransportError::Io)?;
        let bind_error = |source| TransportError::Bind { addr, source };
        let tls = server_tls(identity, policy)?;
        let quic_config = quic_server(tls.clone(), settings)?;
        let endpoint = quinn::Endpoint::new_with_abstract_socket(
            quinn::EndpointConfig::default(),
            Some(quic_config),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(bind_error)?;
        let bound = Bound {
            endpoint: Some(endpoint),
            tcp: None,
            udp_receive_buffer: None,
        };
        let protocols = Protocols {
            quic: true,
            tcp: false,
        };
        Ok(Self::serve(addr, protocols, bound, tls, settings))
    }

    /// Starts the accept loops on bound sockets.
    fn serve(
        local: SocketAddr,
        protocols: Protocols,
        bound: Bound,
        tls: Arc<rustls::ServerConfig>,
        settings: &TransportSettings,
    ) -> Self {
        let (tx, rx) = mpsc::channel(settings.accept_queue);
        let shared = Arc::new(Shared {
            pending: Arc::new(Semaphore::new(settings.max_pending_handshakes)),
            slots: PeerSlots::new(settings.max_connections_per_peer),
            counters: Arc::new(Counters::default()),
            settings: settings.clone(),
        });
        let mut tasks = Vec::new();
        if let Some(endpoint) = &bound.endpoint {
            let task = tokio::spawn(quic_accept_loop(
                endpoint.clone(),
                tx.clone(),
                shared.clone(),
            ));
            tasks.push(task.abort_handle());
        }
        if let Some(tcp) = bound.tcp {
            let acceptor = TlsAcceptor::from(tls);
            let task = tokio::spawn(tcp_accept_loop(tcp, acceptor, tx, shared.clone()));
            tasks.push(task.abort_handle());
        }
        tracing::info!(
            %local,
            quic = protocols.quic,
            tcp = protocols.tcp,
            udp_receive_buffer = ?bound.udp_receive_buffer,
            "listening"
        );
        Self {
            local,
            protocols,
            endpoint: bound.endpoint,
            ready: Mutex::new(rx),
            tasks,
            shared,
            udp_receive_buffer: bound.udp_receive_buffer,
        }
    }

    /// The bound address; QUIC and TCP share its port number.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The transports this listener serves.
    pub fn protocols(&self) -> Protocols {
        self.protocols
    }

    /// The UDP socket's receive buffer as the OS granted it, in bytes
    /// (Linux reports twice what it grants for data, for its bookkeeping);
    /// `None` without QUIC, and over a socket given to
    /// [`Listener::with_socket`].
    pub fn udp_receive_buffer(&self) -> Option<usize> {
        self.udp_receive_buffer
    }

    /// Connections `peer` holds on this listener now, handshakes in progress
    /// included (see [`TransportSettings::max_connections_per_peer`]).
    pub fn peer_connections(&self, peer: &PublicKey) -> usize {
        self.shared.slots.held(peer)
    }

    /// What the listener accepted and refused since it was bound.
    pub fn stats(&self) -> ListenerStats {
        self.shared
            .counters
            .snapshot(self.shared.in_progress(), self.shared.slots.peers())
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

/// The sockets of a listener.
struct Bound {
    endpoint: Option<quinn::Endpoint>,
    tcp: Option<TcpListener>,
    udp_receive_buffer: Option<usize>,
}

/// A UDP socket bound to `addr`, with `SO_RCVBUF` raised to `receive_buffer`
/// before binding; returns the size the OS granted.
fn udp_socket(
    addr: SocketAddr,
    receive_buffer: Option<usize>,
) -> io::Result<(std::net::UdpSocket, Option<usize>)> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let Some(wanted) = receive_buffer
        && let Err(e) = socket.set_recv_buffer_size(wanted)
    {
        tracing::warn!(wanted, error = %e, "cannot set the UDP receive buffer");
    }
    let granted = socket.recv_buffer_size().ok();
    if let (Some(wanted), Some(granted)) = (receive_buffer, granted)
        && granted < wanted
    {
        tracing::warn!(
            wanted,
            granted,
            "the OS granted a smaller UDP receive buffer than asked; raise \
             net.core.rmem_max (sysctl) so that bursts of handshakes are not dropped"
        );
    }
    socket.bind(&addr.into())?;
    Ok((socket.into(), granted))
}

/// Binds the UDP endpoint and the TCP listener on one port number.
async fn bind_sockets(
    addr: SocketAddr,
    protocols: Protocols,
    quic_config: quinn::ServerConfig,
    receive_buffer: Option<usize>,
) -> Result<Bound, TransportError> {
    let bind_error = |source| TransportError::Bind { addr, source };
    if !protocols.quic {
        let tcp = TcpListener::bind(addr).await.map_err(bind_error)?;
        return Ok(Bound {
            endpoint: None,
            tcp: Some(tcp),
            udp_receive_buffer: None,
        });
    }
    let mut last_error = None;
    for _ in 0..SAME_PORT_ATTEMPTS {
        let (socket, granted) = udp_socket(addr, receive_buffer).map_err(bind_error)?;
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(quic_config.clone()),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(bind_error)?;
        let bound = |tcp| Bound {
            endpoint: Some(endpoint.clone()),
            tcp,
            udp_receive_buffer: granted,
        };
        if !protocols.tcp {
            return Ok(bound(None));
        }
        let port = endpoint.local_addr().map_err(bind_error)?.port();
        match TcpListener::bind(SocketAddr::new(addr.ip(), port)).await {
            Ok(tcp) => return Ok(bound(Some(tcp))),
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
    shared: Arc<Shared>,
) {
    let mut handshakes = JoinSet::new();
    loop {
        tokio::select! {
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                // Under load, a client must show it receives at its address
                // before it costs a handshake.
                if shared.in_progress() >= shared.settings.retry_above
                    && !incoming.remote_address_validated()
                    && incoming.may_retry()
                {
                    Counters::bump(&shared.counters.retries);
                    if let Err(e) = incoming.retry() {
                        e.into_incoming().refuse();
                    }
                    continue;
                }
                let Ok(permit) = shared.pending.clone().try_acquire_owned() else {
                    Counters::bump(&shared.counters.refused_busy);
                    // Per attempt at debug: a flood must not flood the log
                    // too (`Listener::stats` counts them).
                    tracing::debug!(remote = %incoming.remote_address(), "too many pending handshakes; refusing QUIC");
                    incoming.refuse();
                    continue;
                };
                handshakes.spawn(quic_handshake(incoming, ready.clone(), shared.clone(), permit));
            }
            Some(_) = handshakes.join_next(), if !handshakes.is_empty() => {}
        }
    }
}

async fn quic_handshake(
    incoming: quinn::Incoming,
    ready: mpsc::Sender<Connection>,
    shared: Arc<Shared>,
    _permit: OwnedSemaphorePermit,
) {
    let remote = incoming.remote_address();
    // One deadline for the handshake and the client's opening frame.
    let deadline = Instant::now() + shared.settings.handshake_timeout;
    let counters = &shared.counters;
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
        let slot = match shared.slot(&peer) {
            Ok(slot) => slot,
            Err(reason) => {
                conn.close(
                    VarInt::from_u32(close_code::TOO_MANY_CONNECTIONS),
                    reason.as_bytes(),
                );
                return Err(TransportError::TooManyConnections { reason });
            }
        };
        // The client's first bytes announce its session stream.
        let (send, mut recv) = match timeout_at(deadline, conn.accept_bi()).await {
            Ok(Ok(streams)) => streams,
            Ok(Err(e)) => return Err(from_connection_error(&e)),
            Err(_) => {
                conn.close(
                    VarInt::from_u32(close_code::NO_SESSION_STREAM),
                    b"no session stream opened",
                );
                return Err(TransportError::Handshake(
                    "the client opened no session stream in time".to_owned(),
                ));
            }
        };
        let opening = match read_opening(&mut recv, deadline, &shared.settings).await {
            Ok(opening) => opening,
            Err(e) => {
                Counters::bump(&counters.bad_openings);
                let reason = e.to_string();
                conn.close(VarInt::from_u32(close_code::BAD_OPENING), reason.as_bytes());
                return Err(e);
            }
        };
        let extra = tokio::spawn(refuse_extra_streams(conn.clone(), counters.clone()));
        let guard = ConnGuard {
            _slot: Some(slot),
            extra_streams: Some(extra.abort_handle()),
        };
        Ok(Connection::quic(
            conn,
            peer,
            send,
            recv,
            Accepted {
                opening,
                guard: Some(guard),
            },
        ))
    };
    match handshake.await {
        Ok(conn) => {
            tracing::debug!(%remote, peer = %conn.peer_device().short(), "accepted QUIC");
            shared.deliver(&ready, conn).await;
        }
        Err(e) => {
            if !matches!(e, TransportError::TooManyConnections { .. }) {
                Counters::bump(&counters.handshakes_failed);
            }
            tracing::info!(%remote, error = %e, "QUIC handshake failed");
        }
    }
}

/// Reads the client's opening frame (length prefix included) by `deadline`.
/// Memory grows with the bytes that arrive, not with the announced length.
async fn read_opening<R: AsyncRead + Unpin>(
    r: &mut R,
    deadline: Instant,
    settings: &TransportSettings,
) -> Result<Vec<u8>, TransportError> {
    let max = settings.max_opening_frame;
    let read = async {
        let mut header = [0u8; 4];
        r.read_exact(&mut header).await.map_err(opening_io)?;
        let len = usize::try_from(u32::from_be_bytes(header)).unwrap_or(usize::MAX);
        if len > max {
            return Err(TransportError::FrameTooLarge { len, max });
        }
        let mut out = header.to_vec();
        (&mut *r)
            .take(len as u64)
            .read_to_end(&mut out)
            .await
            .map_err(opening_io)?;
        if out.len() < 4 + len {
            return Err(TransportError::Truncated);
        }
        Ok(out)
    };
    match timeout_at(deadline, read).await {
        Ok(result) => result,
        Err(_) => Err(TransportError::Handshake(format!(
            "the client's opening frame did not arrive within {:?}",
            settings.handshake_timeout
        ))),
    }
}

fn opening_io(e: io::Error) -> TransportError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        TransportError::Truncated
    } else {
        from_io(e)
    }
}

/// Refuses every stream the peer opens beyond the session's: stopped and
/// reset at once, what it carried discarded. Runs until the connection ends
/// or the connection's guard is dropped.
async fn refuse_extra_streams(conn: quinn::Connection, counters: Arc<Counters>) {
    let code = VarInt::from_u32(close_code::STREAM_REFUSED);
    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
        let _ = recv.stop(code);
        let _ = send.reset(code);
        Counters::bump(&counters.streams_refused);
        tracing::debug!(remote = %conn.remote_address(), "refused a stream beyond the session's");
    }
}

async fn tcp_accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<Connection>,
    shared: Arc<Shared>,
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
                let Ok(permit) = shared.pending.clone().try_acquire_owned() else {
                    Counters::bump(&shared.counters.refused_busy);
                    tracing::debug!(%remote, "too many pending handshakes; refusing TCP");
                    continue;
                };
                handshakes.spawn(tcp_handshake(
                    stream, remote, acceptor.clone(), ready.clone(), shared.clone(), permit,
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
    shared: Arc<Shared>,
    _permit: OwnedSemaphorePermit,
) {
    tune_tcp(&stream, &shared.settings);
    let deadline = Instant::now() + shared.settings.handshake_timeout;
    let counters = &shared.counters;
    let mut tls = match timeout_at(deadline, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            Counters::bump(&counters.handshakes_failed);
            tracing::info!(%remote, error = %from_io(e), "TLS over TCP handshake failed");
            return;
        }
        Err(_) => {
            Counters::bump(&counters.handshakes_failed);
            tracing::info!(%remote, "TLS over TCP handshake timed out");
            return;
        }
    };
    let peer = match tls_peer(tls.get_ref().1) {
        Ok(peer) => peer,
        Err(e) => {
            Counters::bump(&counters.handshakes_failed);
            tracing::info!(%remote, error = %e, "TLS over TCP refused");
            return;
        }
    };
    // Over TCP there is no close code: the peer sees the stream end.
    let slot = match shared.slot(&peer) {
        Ok(slot) => slot,
        Err(reason) => {
            tracing::info!(%remote, %reason, "TLS over TCP refused");
            let _ = tls.shutdown().await;
            return;
        }
    };
    let opening = match read_opening(&mut tls, deadline, &shared.settings).await {
        Ok(opening) => opening,
        Err(e) => {
            Counters::bump(&counters.bad_openings);
            tracing::info!(%remote, error = %e, "TLS over TCP refused");
            return;
        }
    };
    let guard = ConnGuard {
        _slot: Some(slot),
        extra_streams: None,
    };
    let conn = Connection::tcp(
        tls.into(),
        peer,
        remote,
        Accepted {
            opening,
            guard: Some(guard),
        },
    );
    tracing::debug!(%remote, peer = %conn.peer_device().short(), "accepted TLS over TCP");
    shared.deliver(&ready, conn).await;
}
