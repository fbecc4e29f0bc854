//! FieldSync transport: authenticated byte streams between devices and relays.
//!
//! The transport moves frames and knows nothing of cases. It gives the
//! session engine one bidirectional byte stream per connection, and tells it
//! which ed25519 device key is at the other end.
//!
//! It is not the protocol: it parses no messages and does not check
//! headquarters certificates, revocation or compartments. Nor is it a
//! general TLS toolkit: one ALPN, one key type, one stream per session.
//!
//! # Identities are the ed25519 keys
//!
//! Each side presents a self-signed X.509 certificate generated (with rcgen)
//! from its ed25519 device key ([`Identity`]). The certificate is only an
//! envelope, as with TLS raw public keys: the verifiers in [`danger`] accept
//! exactly one certificate carrying an ed25519 key, check the TLS 1.3
//! handshake signature with that key, and ask a [`PeerPolicy`] whether the key
//! is welcome. There is no chain, no CA, no name and no date check; the
//! FieldSync protocol checks the headquarters-signed device certificate in
//! its first message. The module is called `danger` because it replaces
//! rustls' web PKI checks, and every such replacement deserves a look.
//!
//! Authentication is mutual and mandatory. TLS 1.3 only, ALPN `fieldsync/1`
//! ([`ALPN`]), the ring crypto provider passed explicitly, no 0-RTT, no session
//! resumption (every connection is a full handshake through the verifiers).
//!
//! # QUIC, and TLS over TCP where UDP is blocked
//!
//! A [`Listener`] binds QUIC on a UDP port and TLS 1.3 over TCP on the TCP
//! port of the same number. A [`Connector`] (or [`connect`]) tries QUIC first
//! and, when the handshake has not completed within
//! [`TransportSettings::quic_connect_timeout`], falls back to TCP on the same
//! address; [`Connection::kind`] says which one carries the session. Both give
//! the same thing: a [`Connection`] with a proven peer key and a
//! [`SessionStream`]. Over QUIC the client opens one bidirectional stream and
//! must write first (its Hello), since QUIC announces a stream only with data.
//!
//! # Field links
//!
//! [`TransportSettings::default`] assumes slow, lossy links with 1.5 s round
//! trips: keep-alives every 5 s, a 60 s idle timeout, a 750 ms initial RTT
//! estimate, an initial congestion window of 32 datagrams (38,400 bytes, so
//! that a sync of tens of KB over a satellite link does not spend round
//! trips growing it), 6 s before falling back to TCP, at most 4 streams per
//! connection. [`TransportSettings::congestion`] picks the congestion
//! controller ([`Congestion`]; CUBIC by default). The server follows clients
//! that change address (QUIC migration), and a client can move its own
//! socket with [`Connector::rebind`]. The transport's own QUIC close codes
//! are in [`close_code`]; over TCP, close codes are not carried.
//!
//! [`Listener::with_socket`] and [`Connector::with_socket`] run QUIC over a
//! UDP socket of the caller's ([`socket`]): a link emulator, a socket that
//! counts or records what crosses it, or one set up by other means.
//!
//! # Limits
//!
//! A listener faces the open internet, so everything a peer can make it
//! hold is bounded ([`TransportSettings`], counted in [`Listener::stats`]):
//! handshakes in progress (512; beyond 128, an unvalidated QUIC client must
//! first answer a Retry), the client's opening frame (64 KiB, whole within
//! the 20 s handshake timeout, or the connection is closed with
//! [`close_code::BAD_OPENING`]), live connections per peer key (4, then
//! [`close_code::TOO_MANY_CONNECTIONS`]), one session stream per connection
//! (up to 4 concurrent bidirectional streams; every one beyond the session's
//! is refused at once with [`close_code::STREAM_REFUSED`], no unidirectional
//! streams), and the bytes a peer may send ahead of the reader (2 MiB per
//! stream, 4 MiB per connection). The UDP socket asks for an 8 MiB receive
//! buffer, so that a fleet reconnecting at once is not dropped by the kernel.
//!
//! # Frames
//!
//! The protocol's unit is a frame: a `u32` big-endian length and that many
//! bytes, at most [`MAX_FRAME`] (4 MiB). [`read_frame`] and [`write_frame`]
//! work on any tokio stream; [`Connection`] has both as methods.
//!
//! # Example
//!
//! ```
//! use fieldsync_identity::SecretKey;
//! use fieldsync_transport::*;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), TransportError> {
//! let settings = TransportSettings::default();
//! let relay = Identity::new(&SecretKey::from_seed(&[1; 32]))?; // seeds from a real RNG
//! let device = Identity::new(&SecretKey::from_seed(&[2; 32]))?;
//!
//! let listener = Listener::bind(
//!     "127.0.0.1:0".parse().unwrap(), &relay, &settings, PeerPolicy::accept_any(),
//! ).await?;
//! let connector = Connector::bind(
//!     "127.0.0.1:0".parse().unwrap(), &device, settings.clone(), PeerPolicy::default(),
//! )?;
//!
//! // The device dials the relay, pinning the key it expects, and speaks first.
//! let mut conn = connector.connect_pinned(listener.local_addr(), relay.public()).await?;
//! conn.write_frame(b"hello").await?;
//!
//! let mut session = listener.accept().await?;
//! assert_eq!(session.peer(), &device.public());
//! assert_eq!(session.read_frame().await?.as_deref(), Some(&b"hello"[..]));
//! session.write_frame(b"welcome").await?;
//! assert_eq!(conn.read_frame().await?.as_deref(), Some(&b"welcome"[..]));
//! assert_eq!(conn.kind(), Kind::Quic);
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

mod config;
mod connection;
mod connector;
pub mod danger;
mod error;
mod frame;
mod identity;
mod limits;
mod listener;
mod policy;
mod settings;

pub use connection::{Connection, Kind, SessionReader, SessionStream, SessionWriter};
pub use connector::{Connector, connect};
pub use error::TransportError;
pub use frame::{MAX_FRAME, read_frame, write_frame};
pub use identity::Identity;
pub use limits::ListenerStats;
pub use listener::Listener;
pub use policy::{PeerPolicy, PolicyFn};
pub use settings::{Congestion, Protocols, TransportSettings};

pub mod socket {
    //! Custom UDP sockets under QUIC ([`crate::Listener::with_socket`],
    //! [`crate::Connector::with_socket`]): quinn's socket abstraction, re-exported so
    //! that a caller needs no quinn dependency of its own.
    //!
    //! A socket implements [`AsyncUdpSocket`]; a wrapper usually holds an inner
    //! socket from [`tokio_socket`] and changes what passes through it (delays
    //! or drops datagrams, counts them, sends them elsewhere).

    use std::sync::Arc;

    use quinn::Runtime as _;

    pub use quinn::udp::{EcnCodepoint, RecvMeta, Transmit};
    pub use quinn::{AsyncUdpSocket, UdpPoller};

    /// Wraps a bound standard UDP socket for quinn on the Tokio runtime (made
    /// non-blocking here), as [`crate::Listener::bind`] and
    /// [`crate::Connector::new`] do with their own sockets. Must be called
    /// within a Tokio runtime.
    pub fn tokio_socket(socket: std::net::UdpSocket) -> std::io::Result<Arc<dyn AsyncUdpSocket>> {
        quinn::TokioRuntime.wrap_udp_socket(socket)
    }
}

/// The ALPN protocol id every FieldSync connection negotiates.
pub const ALPN: &[u8] = b"fieldsync/1";

/// QUIC application close codes the transport itself sends. The session
/// layer may use any other code for its own reasons.
pub mod close_code {
    /// A normal close (also used when a listener shuts down).
    pub const NORMAL: u32 = 0;
    /// The client completed the handshake but opened no session stream in time.
    pub const NO_SESSION_STREAM: u32 = 1;
    /// The handshake passed but the peer's key or protocol is unusable.
    pub const BAD_PEER: u32 = 2;
    /// The listener already holds
    /// [`crate::TransportSettings::max_connections_per_peer`] connections
    /// with this peer's key; seen by the peer as
    /// [`crate::TransportError::TooManyConnections`].
    pub const TOO_MANY_CONNECTIONS: u32 = 3;
    /// The server is at its connection limit; seen by the peer as
    /// [`crate::TransportError::Busy`].
    pub const BUSY: u32 = 4;
    /// A stream beyond the session's was refused (a stream code, sent in
    /// STOP_SENDING and RESET_STREAM; the connection goes on).
    pub const STREAM_REFUSED: u32 = 5;
    /// The client's first frame was larger than
    /// [`crate::TransportSettings::max_opening_frame`] or did not arrive
    /// within [`crate::TransportSettings::handshake_timeout`]; seen by the
    /// peer as [`crate::TransportError::BadOpening`].
    pub const BAD_OPENING: u32 = 6;
}
