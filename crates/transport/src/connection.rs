//! [`Connection`]: an authenticated link to one peer, and its session byte stream.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use fieldsync_identity::{DeviceId, PublicKey};
use quinn::VarInt;
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsStream;

use crate::ALPN;
use crate::danger::peer_key_from_certs;
use crate::error::{TransportError, from_connection_error, from_io};
use crate::frame;
use crate::limits::ConnGuard;
use crate::settings::TransportSettings;

/// Which transport carries a [`Connection`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// QUIC over UDP.
    Quic,
    /// TLS 1.3 over TCP, the fallback where UDP is blocked.
    Tcp,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Quic => "QUIC",
            Kind::Tcp => "TLS/TCP",
        })
    }
}

/// An authenticated connection to one peer carrying one session stream.
///
/// The peer's ed25519 key has been proven by the TLS handshake and accepted
/// by the [`crate::PeerPolicy`]. Over QUIC the session stream is the one
/// bidirectional stream the client opened; over TCP it is the TLS stream.
///
/// The connecting side must write first: QUIC announces a new stream to the
/// peer only when data is sent on it, and the accepting side's
/// [`crate::Listener::accept`] yields the connection only after that. The
/// FieldSync protocol starts with the client's Hello, so this holds.
///
/// TLS 1.3 checks the client's certificate after the client has finished its
/// half of the handshake. A server that refuses this node's key is therefore
/// reported by the first read: [`TransportError::RejectedByPeer`].
pub struct Connection {
    peer: PublicKey,
    kind: Kind,
    remote: SocketAddr,
    quic: Option<quinn::Connection>,
    stream: SessionStream,
}

/// How a connection came to be: what the listener already read, and what
/// it holds for the connection's lifetime. Empty on the connecting side.
#[derive(Debug, Default)]
pub(crate) struct Accepted {
    /// The client's opening frame (length prefix included), read by the
    /// listener; the session stream yields it first.
    pub(crate) opening: Vec<u8>,
    /// Released when both halves of the session stream are dropped.
    pub(crate) guard: Option<ConnGuard>,
}

impl Connection {
    pub(crate) fn quic(
        conn: quinn::Connection,
        peer: PublicKey,
        send: quinn::SendStream,
        recv: quinn::RecvStream,
        accepted: Accepted,
    ) -> Self {
        let guard = accepted.guard.map(Arc::new);
        Self {
            peer,
            kind: Kind::Quic,
            remote: conn.remote_address(),
            stream: SessionStream {
                reader: SessionReader {
                    opening: Opening::new(accepted.opening),
                    inner: ReaderInner::Quic(recv),
                    _guard: guard.clone(),
                },
                writer: SessionWriter {
                    inner: WriterInner::Quic {
                        send,
                        conn: conn.clone(),
                    },
                    _guard: guard,
                },
            },
            quic: Some(conn),
        }
    }

    pub(crate) fn tcp(
        tls: TlsStream<TcpStream>,
        peer: PublicKey,
        remote: SocketAddr,
        accepted: Accepted,
    ) -> Self {
        let (read, write) = tokio::io::split(tls);
        let guard = accepted.guard.map(Arc::new);
        Self {
            peer,
            kind: Kind::Tcp,
            remote,
            quic: None,
            stream: SessionStream {
                reader: SessionReader {
                    opening: Opening::new(accepted.opening),
                    inner: ReaderInner::Tcp(read),
                    _guard: guard.clone(),
                },
                writer: SessionWriter {
                    inner: WriterInner::Tcp(write),
                    _guard: guard,
                },
            },
        }
    }

    /// The peer's ed25519 key, proven by the handshake.
    pub fn peer(&self) -> &PublicKey {
        &self.peer
    }

    /// The peer's device id.
    pub fn peer_device(&self) -> DeviceId {
        DeviceId::from_public_key(self.peer)
    }

    /// QUIC or TCP.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The peer's address; over QUIC it follows the peer when it migrates.
    pub fn remote_addr(&self) -> SocketAddr {
        match &self.quic {
            Some(conn) => conn.remote_address(),
            None => self.remote,
        }
    }

    /// The current round-trip estimate (QUIC only).
    pub fn rtt(&self) -> Option<std::time::Duration> {
        self.quic.as_ref().map(quinn::Connection::rtt)
    }

    /// The session's bidirectional byte stream.
    pub fn stream(&mut self) -> &mut SessionStream {
        &mut self.stream
    }

    /// Reads one frame from the session stream; see [`frame::read_frame`].
    pub async fn read_frame(&mut self) -> Result<Option<Vec<u8>>, TransportError> {
        self.stream.reader.read_frame().await
    }

    /// Writes one frame to the session stream; see [`frame::write_frame`].
    pub async fn write_frame(&mut self, payload: &[u8]) -> Result<(), TransportError> {
        self.stream.writer.write_frame(payload).await
    }

    /// Splits into a reader and a writer that can live in different tasks.
    pub fn into_split(self) -> (SessionReader, SessionWriter) {
        (self.stream.reader, self.stream.writer)
    }

    /// Ends this side of the session stream once everything written has
    /// arrived (QUIC: the peer acknowledged it; TCP: TLS close_notify sent).
    pub async fn finish(&mut self) -> Result<(), TransportError> {
        self.stream.writer.finish().await
    }

    /// Closes the connection at once. Over QUIC the peer sees
    /// [`TransportError::ClosedByPeer`] with `code` and `reason`, and data
    /// still in flight is dropped: call [`Connection::finish`] first. Over
    /// TCP the code and reason are not sent; the peer sees the end of the stream.
    pub async fn close(self, code: u32, reason: &str) {
        self.stream.writer.close(code, reason).await;
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.peer_device())
            .field("kind", &self.kind)
            .field("remote", &self.remote_addr())
            .finish_non_exhaustive()
    }
}

/// The session's bidirectional byte stream: [`AsyncRead`] + [`AsyncWrite`].
pub struct SessionStream {
    reader: SessionReader,
    writer: SessionWriter,
}

impl SessionStream {
    /// The reading half.
    pub fn reader(&mut self) -> &mut SessionReader {
        &mut self.reader
    }

    /// The writing half.
    pub fn writer(&mut self) -> &mut SessionWriter {
        &mut self.writer
    }
}

impl fmt::Debug for SessionStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionStream(..)")
    }
}

impl AsyncRead for SessionStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.reader).poll_read(cx, buf)
    }
}

impl AsyncWrite for SessionStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.writer).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.writer).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.writer).poll_shutdown(cx)
    }
}

enum ReaderInner {
    Quic(quinn::RecvStream),
    Tcp(tokio::io::ReadHalf<TlsStream<TcpStream>>),
}

/// Bytes the listener read before the connection was handed over (the
/// client's opening frame), yielded before anything else.
#[derive(Debug, Default)]
struct Opening {
    bytes: Vec<u8>,
    at: usize,
}

impl Opening {
    fn new(bytes: Vec<u8>) -> Self {
        Self { bytes, at: 0 }
    }

    fn is_empty(&self) -> bool {
        self.at >= self.bytes.len()
    }

    /// Up to `max` of the remaining bytes; frees the buffer once all are taken.
    fn take(&mut self, max: usize) -> Vec<u8> {
        let end = self.bytes.len().min(self.at.saturating_add(max));
        let out = self.bytes[self.at..end].to_vec();
        self.at = end;
        if self.is_empty() {
            *self = Self::default();
        }
        out
    }
}

/// The reading half of a session stream.
pub struct SessionReader {
    opening: Opening,
    inner: ReaderInner,
    _guard: Option<Arc<ConnGuard>>,
}

impl SessionReader {
    /// Reads one frame; see [`frame::read_frame`].
    pub async fn read_frame(&mut self) -> Result<Option<Vec<u8>>, TransportError> {
        frame::read_frame(self).await
    }

    /// Reads whatever bytes have arrived, up to `max` (`None` at the end of
    /// the stream). Over QUIC this takes the received chunk itself, so an
    /// idle reader holds no buffer of its own; over TCP it reads into a
    /// buffer of the size that arrived.
    pub async fn read_some(&mut self, max: usize) -> Result<Option<Vec<u8>>, TransportError> {
        if !self.opening.is_empty() {
            return Ok(Some(self.opening.take(max)));
        }
        match &mut self.inner {
            ReaderInner::Quic(recv) => match recv.read_chunk(max, true).await {
                Ok(Some(chunk)) => Ok(Some(chunk.bytes.to_vec())),
                Ok(None) => Ok(None),
                Err(e) => Err(from_io(io::Error::from(e))),
            },
            ReaderInner::Tcp(read) => {
                let mut buf = vec![0u8; max.min(4 * 1024)];
                let n = read.read(&mut buf).await.map_err(from_io)?;
                if n == 0 {
                    return Ok(None);
                }
                buf.truncate(n);
                Ok(Some(buf))
            }
        }
    }
}

impl fmt::Debug for SessionReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionReader(..)")
    }
}

impl AsyncRead for SessionReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.opening.is_empty() {
            let bytes = self.opening.take(buf.remaining());
            buf.put_slice(&bytes);
            return Poll::Ready(Ok(()));
        }
        match &mut self.inner {
            ReaderInner::Quic(recv) => AsyncRead::poll_read(Pin::new(recv), cx, buf),
            ReaderInner::Tcp(read) => Pin::new(read).poll_read(cx, buf),
        }
    }
}

enum WriterInner {
    Quic {
        send: quinn::SendStream,
        conn: quinn::Connection,
    },
    Tcp(tokio::io::WriteHalf<TlsStream<TcpStream>>),
}

/// The writing half of a session stream.
pub struct SessionWriter {
    inner: WriterInner,
    _guard: Option<Arc<ConnGuard>>,
}

impl SessionWriter {
    /// Writes one frame; see [`frame::write_frame`].
    pub async fn write_frame(&mut self, payload: &[u8]) -> Result<(), TransportError> {
        frame::write_frame(self, payload).await
    }

    /// Ends this direction once everything written has arrived; see [`Connection::finish`].
    pub async fn finish(&mut self) -> Result<(), TransportError> {
        match &mut self.inner {
            WriterInner::Quic { send, .. } => {
                // Already finished is fine.
                let _ = send.finish();
                match send.stopped().await {
                    Ok(_) => Ok(()),
                    Err(quinn::StoppedError::ConnectionLost(e)) => Err(from_connection_error(&e)),
                    Err(e) => Err(TransportError::ConnectionLost(e.to_string())),
                }
            }
            WriterInner::Tcp(write) => write.shutdown().await.map_err(from_io),
        }
    }

    /// Closes the whole connection; see [`Connection::close`].
    pub async fn close(self, code: u32, reason: &str) {
        match self.inner {
            WriterInner::Quic { conn, .. } => conn.close(VarInt::from_u32(code), reason.as_bytes()),
            WriterInner::Tcp(mut write) => {
                // Best effort: the peer may be gone already.
                let _ = write.shutdown().await;
            }
        }
    }
}

impl fmt::Debug for SessionWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionWriter(..)")
    }
}

impl AsyncWrite for SessionWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.inner {
            WriterInner::Quic { send, .. } => AsyncWrite::poll_write(Pin::new(send), cx, buf),
            WriterInner::Tcp(write) => Pin::new(write).poll_write(cx, buf),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.inner {
            WriterInner::Quic { send, .. } => AsyncWrite::poll_flush(Pin::new(send), cx),
            WriterInner::Tcp(write) => Pin::new(write).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.inner {
            WriterInner::Quic { send, .. } => AsyncWrite::poll_shutdown(Pin::new(send), cx),
            WriterInner::Tcp(write) => Pin::new(write).poll_shutdown(cx),
        }
    }
}

/// The peer's key from an established QUIC connection, and a check that
/// `fieldsync/1` was negotiated.
pub(crate) fn quic_peer(conn: &quinn::Connection) -> Result<PublicKey, TransportError> {
    let alpn = conn
        .handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.protocol);
    if alpn.as_deref() != Some(ALPN) {
        return Err(TransportError::Handshake(
            "fieldsync/1 was not negotiated".to_owned(),
        ));
    }
    let certs = conn
        .peer_identity()
        .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or_else(|| TransportError::PeerKey("the peer presented no certificate".to_owned()))?;
    peer_key_from_certs(&certs)
}

/// The peer's key from an established TLS connection over TCP, and a check
/// that `fieldsync/1` was negotiated (a TCP client may offer no ALPN at all).
pub(crate) fn tls_peer(common: &rustls::CommonState) -> Result<PublicKey, TransportError> {
    if common.alpn_protocol() != Some(ALPN) {
        return Err(TransportError::Handshake(
            "fieldsync/1 was not negotiated".to_owned(),
        ));
    }
    peer_key_from_certs(common.peer_certificates().unwrap_or_default())
}

/// Field-link socket options for TCP: no Nagle delay, keep-alives at the
/// QUIC keep-alive interval, and (Linux) give up on unacknowledged data after
/// the idle timeout. Failures are logged, not fatal.
pub(crate) fn tune_tcp(stream: &TcpStream, settings: &TransportSettings) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
    let sock = socket2::SockRef::from(stream);
    let keepalive = socket2::TcpKeepalive::new().with_time(settings.keep_alive);
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let keepalive = keepalive.with_interval(settings.keep_alive).with_retries(
        u32::try_from(settings.idle_timeout.as_secs() / settings.keep_alive.as_secs().max(1))
            .unwrap_or(u32::MAX)
            .max(1),
    );
    if let Err(e) = sock.set_tcp_keepalive(&keepalive) {
        tracing::debug!(error = %e, "cannot set TCP keep-alive");
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Err(e) = sock.set_tcp_user_timeout(Some(settings.idle_timeout)) {
        tracing::debug!(error = %e, "cannot set TCP_USER_TIMEOUT");
    }
}
