//! [`TransportError`] and the translation of quinn, rustls and I/O errors into it.

use std::io;
use std::net::SocketAddr;

use quinn::ConnectionError;
use rustls::AlertDescription;

use crate::close_code;

/// Everything that can go wrong while binding, connecting, accepting or moving frames.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// A local UDP or TCP socket could not be bound. The OS error is the
    /// source (shown once by `{:#}` and by error-chain printers), not part
    /// of this message.
    #[error("cannot bind {addr}{}", bind_hint(.source))]
    Bind {
        /// The address we tried to bind.
        addr: SocketAddr,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// A connection attempt could not even start (closed connector, bad address).
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// The address we tried to reach.
        addr: SocketAddr,
        /// Why the attempt could not start.
        reason: String,
    },
    /// A relay's name did not resolve to any address (now: names are
    /// looked up again at every attempt).
    #[error("cannot resolve {name}: {reason}")]
    Resolve {
        /// The name, as configured (`host:port`).
        name: String,
        /// What the resolver said.
        reason: String,
    },
    /// Neither QUIC nor TLS over TCP answered.
    #[error(
        "{addr} is unreachable (QUIC: {quic}; TCP: {tcp}); check the address and that the relay is running"
    )]
    Unreachable {
        /// The address we tried to reach.
        addr: SocketAddr,
        /// What happened to the QUIC attempt.
        quic: String,
        /// What happened to the TCP attempt.
        tcp: String,
    },
    /// The TLS handshake failed for a reason other than the peer's key.
    #[error("TLS handshake failed: {0}")]
    Handshake(String),
    /// The peer did not present exactly one certificate carrying an ed25519 key.
    #[error("the peer's certificate is unusable: {0}")]
    PeerKey(String),
    /// The peer proved an ed25519 key that the local policy refused.
    #[error("the peer's key was refused by local policy: {0}")]
    Refused(String),
    /// The peer aborted the handshake: it refused this node's key, or speaks another protocol.
    #[error("the peer refused the connection: {0}")]
    RejectedByPeer(String),
    /// The node's TLS identity (certificate and key) could not be built.
    #[error("cannot build the TLS identity: {0}")]
    Identity(String),
    /// The settings or the TLS configuration are invalid.
    #[error("invalid transport configuration: {0}")]
    Config(String),
    /// A socket or stream I/O error that fits no other variant. The OS
    /// error is part of the message (it is not also the source, so that a
    /// chain printer shows it once).
    #[error("i/o error: {0}")]
    Io(io::Error),
    /// A frame's length header exceeds the limit.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes; closing the session")]
    FrameTooLarge {
        /// The announced (or attempted) length.
        len: usize,
        /// The limit, [`crate::MAX_FRAME`].
        max: usize,
    },
    /// The stream ended in the middle of a frame.
    #[error("the stream ended in the middle of a frame")]
    Truncated,
    /// The peer closed the connection or the stream with an application code.
    #[error("the peer closed the connection (code {code}): {reason}")]
    ClosedByPeer {
        /// The application close code (0 is a normal close).
        code: u64,
        /// The peer's reason text, if any.
        reason: String,
    },
    /// The peer already holds as many live connections with this key as it
    /// allows ([`crate::close_code::TOO_MANY_CONNECTIONS`]).
    #[error("too many connections with this device key: {reason}")]
    TooManyConnections {
        /// The peer's explanation.
        reason: String,
    },
    /// The peer is at its connection limit ([`crate::close_code::BUSY`]);
    /// try again later.
    #[error("the peer is at its connection limit: {reason}")]
    Busy {
        /// The peer's explanation.
        reason: String,
    },
    /// The client's first frame was too large or did not arrive in time
    /// ([`crate::close_code::BAD_OPENING`]).
    #[error("the peer refused this connection's opening: {reason}")]
    BadOpening {
        /// The peer's explanation.
        reason: String,
    },
    /// The connection died: idle timeout, reset, or a protocol violation.
    #[error("the connection was lost: {0}")]
    ConnectionLost(String),
    /// The connection, the listener or the connector was closed locally.
    #[error("closed")]
    Closed,
}

/// What to check when a bind fails, by the kind of OS error.
fn bind_hint(source: &io::Error) -> &'static str {
    match source.kind() {
        io::ErrorKind::AddrInUse => " (is another FieldSync process using this port?)",
        io::ErrorKind::PermissionDenied => " (ports below 1024 need privileges)",
        io::ErrorKind::AddrNotAvailable => " (no local interface has this address)",
        _ => "",
    }
}

/// A person-readable explanation of a TLS alert sent by the peer.
pub(crate) fn describe_alert(alert: AlertDescription) -> String {
    match alert {
        AlertDescription::AccessDenied => {
            "its policy refused this node's key (TLS access_denied); ask the peer's operator \
             to accept this device"
                .to_owned()
        }
        AlertDescription::BadCertificate
        | AlertDescription::UnsupportedCertificate
        | AlertDescription::CertificateUnknown
        | AlertDescription::CertificateRequired => {
            format!("it could not use this node's certificate (TLS {alert:?})")
        }
        AlertDescription::NoApplicationProtocol => {
            "it does not speak fieldsync/1 (TLS no_application_protocol)".to_owned()
        }
        AlertDescription::ProtocolVersion => "it does not speak TLS 1.3".to_owned(),
        AlertDescription::HandshakeFailure => {
            "no common TLS parameters (TLS handshake_failure)".to_owned()
        }
        other => format!("TLS alert {other:?}"),
    }
}

/// QUIC carries TLS alerts as transport error codes 0x100..=0x1ff.
fn alert_from_quic_code(code: u64) -> Option<AlertDescription> {
    if (0x100..=0x1ff).contains(&code) {
        u8::try_from(code - 0x100).ok().map(AlertDescription::from)
    } else {
        None
    }
}

/// Translates a quinn connection error.
pub(crate) fn from_connection_error(err: &ConnectionError) -> TransportError {
    match err {
        ConnectionError::VersionMismatch => {
            TransportError::Handshake("the peer speaks no common QUIC version".to_owned())
        }
        ConnectionError::TransportError(e) => {
            TransportError::Handshake(format!("local QUIC/TLS error: {e}"))
        }
        ConnectionError::ConnectionClosed(close)
            if close.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED =>
        {
            TransportError::Busy {
                reason: "it has too many handshakes in progress (QUIC connection refused)"
                    .to_owned(),
            }
        }
        ConnectionError::ConnectionClosed(close) => {
            let code = u64::from(close.error_code);
            match alert_from_quic_code(code) {
                Some(alert) => TransportError::RejectedByPeer(describe_alert(alert)),
                None => TransportError::ConnectionLost(format!("the peer closed QUIC: {close}")),
            }
        }
        ConnectionError::ApplicationClosed(close) => {
            let reason = String::from_utf8_lossy(&close.reason).into_owned();
            match close.error_code.into_inner() {
                c if c == u64::from(close_code::TOO_MANY_CONNECTIONS) => {
                    TransportError::TooManyConnections { reason }
                }
                c if c == u64::from(close_code::BUSY) => TransportError::Busy { reason },
                c if c == u64::from(close_code::BAD_OPENING) => {
                    TransportError::BadOpening { reason }
                }
                code => TransportError::ClosedByPeer { code, reason },
            }
        }
        ConnectionError::Reset => TransportError::ConnectionLost(
            "the peer reset the connection (it restarted or forgot it)".to_owned(),
        ),
        ConnectionError::TimedOut => TransportError::ConnectionLost(
            "no sign of life from the peer within the idle timeout".to_owned(),
        ),
        ConnectionError::LocallyClosed => TransportError::Closed,
        ConnectionError::CidsExhausted => {
            TransportError::ConnectionLost("connection ids exhausted".to_owned())
        }
    }
}

/// Translates a rustls error seen on a TCP connection.
pub(crate) fn from_rustls_error(err: &rustls::Error) -> TransportError {
    match err {
        rustls::Error::AlertReceived(alert) => {
            TransportError::RejectedByPeer(describe_alert(*alert))
        }
        rustls::Error::NoApplicationProtocol => TransportError::Handshake(
            "the peer offered no common application protocol (fieldsync/1)".to_owned(),
        ),
        other => TransportError::Handshake(other.to_string()),
    }
}

/// Translates an I/O error from a session stream (QUIC or TLS over TCP).
///
/// quinn and tokio-rustls wrap their errors in `io::Error`; unwrap them so
/// that a refused key or a closed connection keeps its name.
pub(crate) fn from_io(err: io::Error) -> TransportError {
    if let Some(inner) = err.get_ref() {
        if let Some(e) = inner.downcast_ref::<quinn::ReadError>() {
            return match e {
                quinn::ReadError::ConnectionLost(c) => from_connection_error(c),
                quinn::ReadError::Reset(code) => TransportError::ClosedByPeer {
                    code: code.into_inner(),
                    reason: "the peer reset the session stream".to_owned(),
                },
                quinn::ReadError::ClosedStream => TransportError::Closed,
                other => TransportError::ConnectionLost(other.to_string()),
            };
        }
        if let Some(e) = inner.downcast_ref::<quinn::WriteError>() {
            return match e {
                quinn::WriteError::ConnectionLost(c) => from_connection_error(c),
                quinn::WriteError::Stopped(code) => TransportError::ClosedByPeer {
                    code: code.into_inner(),
                    reason: "the peer stopped reading the session stream".to_owned(),
                },
                quinn::WriteError::ClosedStream => TransportError::Closed,
                other => TransportError::ConnectionLost(other.to_string()),
            };
        }
        if let Some(e) = inner.downcast_ref::<quinn::ClosedStream>() {
            return TransportError::ConnectionLost(e.to_string());
        }
        if let Some(e) = inner.downcast_ref::<rustls::Error>() {
            return from_rustls_error(e);
        }
    }
    match err.kind() {
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => {
            TransportError::ConnectionLost(err.to_string())
        }
        _ => TransportError::Io(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quic_alert_codes() {
        assert_eq!(
            alert_from_quic_code(0x100 + 49),
            Some(AlertDescription::AccessDenied)
        );
        assert_eq!(
            alert_from_quic_code(0x178),
            Some(AlertDescription::NoApplicationProtocol)
        );
        assert_eq!(alert_from_quic_code(0x0a), None);
        assert_eq!(alert_from_quic_code(0x200), None);
    }

    #[test]
    fn io_errors_keep_their_names() {
        let e = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(AlertDescription::AccessDenied),
        );
        assert!(
            matches!(from_io(e), TransportError::RejectedByPeer(m) if m.contains("access_denied"))
        );
        let e = io::Error::from(quinn::ReadError::ConnectionLost(ConnectionError::TimedOut));
        assert!(matches!(from_io(e), TransportError::ConnectionLost(_)));
        let e = io::Error::from(io::ErrorKind::PermissionDenied);
        assert!(matches!(from_io(e), TransportError::Io(_)));
    }

    /// The message and every source, joined as `{:#}` (anyhow) prints them.
    fn chain(e: &(dyn std::error::Error + 'static)) -> String {
        let mut out = e.to_string();
        let mut cause = e.source();
        while let Some(c) = cause {
            out.push_str(": ");
            out.push_str(&c.to_string());
            cause = c.source();
        }
        out
    }

    #[test]
    fn os_errors_print_once_in_a_chain() {
        let os = io::Error::from(io::ErrorKind::AddrInUse).to_string();
        let e = TransportError::Bind {
            addr: "127.0.0.1:4433".parse().unwrap_or_else(|_| unreachable!()),
            source: io::Error::from(io::ErrorKind::AddrInUse),
        };
        let line = chain(&e);
        assert_eq!(line.matches(&os).count(), 1, "{line}");
        assert!(line.starts_with("cannot bind 127.0.0.1:4433 (is another FieldSync"));
        let e = TransportError::Io(io::Error::other("disk on fire"));
        assert_eq!(chain(&e), "i/o error: disk on fire");
    }

    #[test]
    fn transport_close_codes_have_names() {
        let closed = |code: u32| {
            from_connection_error(&ConnectionError::ApplicationClosed(
                quinn::ApplicationClose {
                    error_code: quinn::VarInt::from_u32(code),
                    reason: b"why".to_vec().into(),
                },
            ))
        };
        assert!(matches!(
            closed(close_code::TOO_MANY_CONNECTIONS),
            TransportError::TooManyConnections { reason } if reason == "why"
        ));
        assert!(matches!(
            closed(close_code::BUSY),
            TransportError::Busy { .. }
        ));
        assert!(matches!(
            closed(close_code::BAD_OPENING),
            TransportError::BadOpening { .. }
        ));
        assert!(matches!(
            closed(77),
            TransportError::ClosedByPeer { code: 77, .. }
        ));
        // A QUIC listener refusing a connection attempt is busy, too.
        let refused =
            from_connection_error(&ConnectionError::ConnectionClosed(quinn::ConnectionClose {
                error_code: quinn::TransportErrorCode::CONNECTION_REFUSED,
                frame_type: None,
                reason: Vec::new().into(),
            }));
        assert!(
            matches!(&refused, TransportError::Busy { reason } if reason.contains("handshakes")),
            "{refused:?}"
        );
    }
}
