//! [`Connector`]: the connecting side. QUIC first, TLS over TCP when QUIC does not answer.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use quinn::{ConnectionError, TransportConfig};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;

use crate::config::{client_tls, quic_client, transport_config};
use crate::connection::{Accepted, Connection, quic_peer, tls_peer, tune_tcp};
use crate::danger::ServerKeyVerifier;
use crate::error::{TransportError, from_connection_error, from_io};
use crate::identity::Identity;
use crate::policy::PeerPolicy;
use crate::settings::TransportSettings;

/// How one attempt (QUIC or TCP) ended without a connection.
enum Failed {
    /// Nobody answered on this transport: try the next one.
    NoAnswer(String),
    /// Somebody answered and the handshake failed: stop here.
    Fatal(TransportError),
}

/// The connecting side of a node: one QUIC endpoint (one UDP socket),
/// reused for every connection, plus TLS over TCP as the fallback.
///
/// `connect` tries QUIC first. When the QUIC handshake has not completed
/// within [`TransportSettings::quic_connect_timeout`] (UDP blocked, or no
/// QUIC listener) it connects with TLS 1.3 over TCP to the same address; the
/// resulting [`Connection::kind`] says which was used. A handshake that
/// fails after the peer answered (refused key, wrong protocol) is not retried
/// over TCP. When neither answers: [`TransportError::Unreachable`].
#[derive(Debug)]
pub struct Connector {
    endpoint: quinn::Endpoint,
    identity: Identity,
    settings: TransportSettings,
    transport: Arc<TransportConfig>,
    policy: PeerPolicy,
}

impl Connector {
    /// A connector whose UDP socket is bound to an ephemeral port on all IPv4
    /// interfaces. Must be called within a Tokio runtime.
    pub fn new(
        identity: &Identity,
        settings: TransportSettings,
        policy: PeerPolicy,
    ) -> Result<Self, TransportError> {
        Self::bind(
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
            identity,
            settings,
            policy,
        )
    }

    /// A connector whose UDP socket is bound to `local`. Must be called within a Tokio runtime.
    pub fn bind(
        local: SocketAddr,
        identity: &Identity,
        settings: TransportSettings,
        policy: PeerPolicy,
    ) -> Result<Self, TransportError> {
        let transport = transport_config(&settings)?;
        let endpoint = quinn::Endpoint::client(local).map_err(|source| TransportError::Bind {
            addr: local,
            source,
        })?;
        Ok(Self {
            endpoint,
            identity: identity.clone(),
            settings,
            transport,
            policy,
        })
    }

    /// A connector whose QUIC endpoint sends and receives through `socket`,
    /// a UDP socket the caller built: one that shapes, records or relays
    /// the datagrams it carries (a link emulator, a test harness), or a
    /// socket set up by other means. Everything else is as with
    /// [`Connector::new`]: the same settings, peer policy and handshake,
    /// and the fallback to TLS over TCP (on an ordinary TCP socket, which
    /// does not pass through `socket`) when QUIC does not answer within
    /// [`TransportSettings::quic_connect_timeout`]; check
    /// [`Connection::kind`] where only QUIC will do. Must be called within
    /// a Tokio runtime.
    ///
    /// A socket is made from a standard one with
    /// [`socket::tokio_socket`](crate::socket::tokio_socket), and
    /// implements [`socket::AsyncUdpSocket`](crate::socket::AsyncUdpSocket).
    pub fn with_socket(
        socket: Arc<dyn quinn::AsyncUdpSocket>,
        identity: &Identity,
        settings: TransportSettings,
        policy: PeerPolicy,
    ) -> Result<Self, TransportError> {
        let transport = transport_config(&settings)?;
        let local = socket.local_addr().map_err(TransportError::Io)?;
        let endpoint = quinn::Endpoint::new_with_abstract_socket(
            quinn::EndpointConfig::default(),
            None,
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(|source| TransportError::Bind {
            addr: local,
            source,
        })?;
        Ok(Self {
            endpoint,
            identity: identity.clone(),
            settings,
            transport,
            policy,
        })
    }

    /// The local address of the UDP socket.
    pub fn local_addr(&self) -> Result<SocketAddr, TransportError> {
        self.endpoint.local_addr().map_err(TransportError::Io)
    }

    /// This node's key.
    pub fn public(&self) -> fieldsync_identity::PublicKey {
        self.identity.public()
    }

    /// Connects to `addr`, applying the connector's policy to the peer's key.
    pub async fn connect(&self, addr: SocketAddr) -> Result<Connection, TransportError> {
        self.connect_with_policy(addr, &self.policy).await
    }

    /// Connects to `addr`, accepting only the key `expected`.
    pub async fn connect_pinned(
        &self,
        addr: SocketAddr,
        expected: fieldsync_identity::PublicKey,
    ) -> Result<Connection, TransportError> {
        self.connect_with_policy(addr, &PeerPolicy::pinned(expected))
            .await
    }

    /// Connects to `addr`, applying `policy` to the peer's key.
    pub async fn connect_with_policy(
        &self,
        addr: SocketAddr,
        policy: &PeerPolicy,
    ) -> Result<Connection, TransportError> {
        let quic = match self.try_quic(addr, policy).await {
            Ok(conn) => return Ok(conn),
            Err(Failed::Fatal(e)) => return Err(e),
            Err(Failed::NoAnswer(why)) => why,
        };
        tracing::info!(%addr, reason = %quic, "QUIC did not answer; falling back to TLS over TCP");
        match self.try_tcp(addr, policy).await {
            Ok(conn) => Ok(conn),
            Err(Failed::Fatal(e)) => Err(e),
            Err(Failed::NoAnswer(tcp)) => Err(TransportError::Unreachable { addr, quic, tcp }),
        }
    }

    /// Moves the QUIC endpoint to a new UDP socket; open connections migrate
    /// to it (the peer sees a new address and validates the new path).
    pub fn rebind(&self, socket: std::net::UdpSocket) -> Result<(), TransportError> {
        let addr = socket.local_addr().map_err(TransportError::Io)?;
        self.endpoint
            .rebind(socket)
            .map_err(|source| TransportError::Bind { addr, source })?;
        tracing::info!(local = %addr, "QUIC endpoint rebound");
        Ok(())
    }

    /// Closes every QUIC connection of this connector with `code` and `reason`.
    pub fn close(&self, code: u32, reason: &str) {
        self.endpoint
            .close(quinn::VarInt::from_u32(code), reason.as_bytes());
    }

    async fn try_quic(&self, addr: SocketAddr, policy: &PeerPolicy) -> Result<Connection, Failed> {
        let verifier = ServerKeyVerifier::new(policy.clone());
        let tls = client_tls(&self.identity, verifier.clone()).map_err(Failed::Fatal)?;
        let config = quic_client(tls, self.transport.clone()).map_err(Failed::Fatal)?;
        let connecting = match self
            .endpoint
            .connect_with(config, addr, &addr.ip().to_string())
        {
            Ok(c) => c,
            Err(quinn::ConnectError::EndpointStopping) => {
                return Err(Failed::Fatal(TransportError::Closed));
            }
            // E.g. an IPv6 address from an IPv4 socket: TCP may still get there.
            Err(e) => return Err(Failed::NoAnswer(e.to_string())),
        };
        let wait = self.settings.quic_connect_timeout;
        let conn = match timeout(wait, connecting).await {
            Err(_) => {
                return Err(Failed::NoAnswer(format!(
                    "no QUIC handshake within {wait:?}"
                )));
            }
            Ok(Err(e)) => {
                if let Some(rejection) = verifier.rejection() {
                    return Err(Failed::Fatal(rejection));
                }
                return Err(match e {
                    ConnectionError::TimedOut | ConnectionError::Reset => {
                        Failed::NoAnswer(e.to_string())
                    }
                    other => Failed::Fatal(from_connection_error(&other)),
                });
            }
            Ok(Ok(conn)) => conn,
        };
        let peer = quic_peer(&conn).map_err(Failed::Fatal)?;
        // Opening a stream is local (the server allows a few): no round trip.
        let (send, recv) = conn
            .open_bi()
            .await
            .map_err(|e| Failed::Fatal(from_connection_error(&e)))?;
        tracing::debug!(%addr, peer = %fieldsync_identity::DeviceId::from_public_key(peer).short(), "QUIC connected");
        Ok(Connection::quic(
            conn,
            peer,
            send,
            recv,
            Accepted::default(),
        ))
    }

    async fn try_tcp(&self, addr: SocketAddr, policy: &PeerPolicy) -> Result<Connection, Failed> {
        let wait = self.settings.tcp_connect_timeout;
        let stream = match timeout(wait, TcpStream::connect(addr)).await {
            Err(_) => return Err(Failed::NoAnswer(format!("no TCP answer within {wait:?}"))),
            Ok(Err(e)) => return Err(Failed::NoAnswer(e.to_string())),
            Ok(Ok(stream)) => stream,
        };
        tune_tcp(&stream, &self.settings);
        let verifier = ServerKeyVerifier::new(policy.clone());
        let tls = client_tls(&self.identity, verifier.clone()).map_err(Failed::Fatal)?;
        let name = ServerName::IpAddress(addr.ip().into());
        let wait = self.settings.handshake_timeout;
        let tls = match timeout(wait, TlsConnector::from(tls).connect(name, stream)).await {
            Err(_) => {
                return Err(Failed::Fatal(TransportError::Handshake(format!(
                    "TLS over TCP did not complete within {wait:?}"
                ))));
            }
            Ok(Err(e)) => return Err(Failed::Fatal(verifier.rejection().unwrap_or(from_io(e)))),
            Ok(Ok(tls)) => tls,
        };
        let peer = tls_peer(tls.get_ref().1).map_err(Failed::Fatal)?;
        tracing::debug!(%addr, peer = %fieldsync_identity::DeviceId::from_public_key(peer).short(), "TLS over TCP connected");
        Ok(Connection::tcp(tls.into(), peer, addr, Accepted::default()))
    }
}

/// Connects once to `addr` with a fresh [`Connector`] (its UDP socket lives
/// as long as the connection). Nodes that connect often should keep a
/// `Connector`. Must be called within a Tokio runtime.
pub async fn connect(
    addr: SocketAddr,
    identity: &Identity,
    settings: &TransportSettings,
    policy: PeerPolicy,
) -> Result<Connection, TransportError> {
    let local = match (addr.ip().is_loopback(), addr) {
        (true, SocketAddr::V4(_)) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        (true, SocketAddr::V6(_)) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        (false, SocketAddr::V4(_)) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        (false, SocketAddr::V6(_)) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    Connector::bind(
        SocketAddr::new(local, 0),
        identity,
        settings.clone(),
        policy,
    )?
    .connect(addr)
    .await
}
