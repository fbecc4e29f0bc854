//! [`TransportError`] and the translation of quinn, rustls and I/O errors into it.

use std::io;
use std::net::SocketAddr;

use quinn::ConnectionError;
use rustls::AlertDescription;

/// Everything that can go wrong while binding, connecting, accepting or moving frames.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// A local UDP or TCP socket could not be bound.
    #[error("cannot bind {addr}: {source}; is another FieldSync process using this port?")]
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
    /// A socket or stream I/O error that fits no other variant.
    #[error("i/o error: {0}")]
    Io(#[source] io::Error),
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
    /// The connection died: idle timeout, reset, or a protocol violation.
    #[error("the connection was lost: {0}")]
    ConnectionLost(String),
    /// The connection, the listener or the connector was closed locally.
    #[error("closed")]
    Closed,
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
        ConnectionError::ConnectionClosed(close) => {
            let code = u64::from(close.error_code);
            match alert_from_quic_code(code) {
                Some(alert) => TransportError::RejectedByPeer(describe_alert(alert)),
                None => TransportError::ConnectionLost(format!("the peer closed QUIC: {close}")),
            }
        }
        ConnectionError::ApplicationClosed(close) => TransportError::ClosedByPeer {
            code: close.error_code.into_inner(),
            reason: String::from_utf8_lossy(&close.reason).into_owned(),
        },
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
}
