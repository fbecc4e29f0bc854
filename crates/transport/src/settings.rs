//! [`TransportSettings`] and [`Protocols`].

use std::time::Duration;

use crate::error::TransportError;

/// Timers and limits for field links: slow (1.5 s round trips), lossy, and
/// sometimes without UDP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportSettings {
    /// How often QUIC sends a keep-alive when nothing else is sent. Keeps NAT
    /// bindings open; must be well below `idle_timeout`. Also the TCP
    /// keep-alive idle time and probe interval.
    pub keep_alive: Duration,
    /// A connection with no sign of life from the peer for this long is
    /// dead. QUIC uses the smaller of both sides' values; on TCP it bounds
    /// unacknowledged data (Linux `TCP_USER_TIMEOUT`).
    pub idle_timeout: Duration,
    /// The round trip QUIC assumes before measuring one. Set near the slow
    /// links' real value so the first packets are not resent too early.
    pub initial_rtt: Duration,
    /// How long `connect` waits for the QUIC handshake before falling back to
    /// TLS over TCP.
    pub quic_connect_timeout: Duration,
    /// How long the TCP connect may take once QUIC has given up.
    pub tcp_connect_timeout: Duration,
    /// Bound on a TLS handshake over TCP, and on the accepting side on the
    /// whole QUIC handshake plus the client's first bytes.
    pub handshake_timeout: Duration,
    /// Concurrent bidirectional streams the peer may open. A session uses one.
    pub max_concurrent_bidi_streams: u32,
    /// Handshakes a listener runs at once; further attempts are refused
    /// (clients retry with backoff). Sized for a fleet reconnecting at once
    /// after an outage; each pending handshake costs a few KiB.
    pub max_pending_handshakes: usize,
    /// Established connections a listener queues until [`crate::Listener::accept`] takes them.
    pub accept_queue: usize,
}

impl Default for TransportSettings {
    fn default() -> Self {
        Self {
            keep_alive: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            initial_rtt: Duration::from_millis(750),
            quic_connect_timeout: Duration::from_secs(6),
            tcp_connect_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(20),
            max_concurrent_bidi_streams: 4,
            max_pending_handshakes: 512,
            accept_queue: 128,
        }
    }
}

impl TransportSettings {
    /// Checks that the timers fit together.
    pub fn validate(&self) -> Result<(), TransportError> {
        let bad = |m: &str| Err(TransportError::Config(m.to_owned()));
        if self.keep_alive.is_zero() || self.keep_alive >= self.idle_timeout / 2 {
            return bad("keep_alive must be non-zero and less than half of idle_timeout");
        }
        if self.initial_rtt.is_zero() {
            return bad("initial_rtt must be non-zero");
        }
        if self.quic_connect_timeout.is_zero()
            || self.tcp_connect_timeout.is_zero()
            || self.handshake_timeout.is_zero()
        {
            return bad("connect and handshake timeouts must be non-zero");
        }
        if self.max_concurrent_bidi_streams == 0 {
            return bad("max_concurrent_bidi_streams must be at least 1 (the session stream)");
        }
        if self.max_pending_handshakes == 0 || self.accept_queue == 0 {
            return bad("max_pending_handshakes and accept_queue must be at least 1");
        }
        Ok(())
    }
}

/// Which transports a [`crate::Listener`] serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Protocols {
    /// QUIC on the UDP port.
    pub quic: bool,
    /// TLS 1.3 over TCP on the TCP port of the same number.
    pub tcp: bool,
}

impl Default for Protocols {
    fn default() -> Self {
        Self {
            quic: true,
            tcp: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert!(TransportSettings::default().validate().is_ok());
        let bad = TransportSettings {
            keep_alive: Duration::from_secs(40),
            ..TransportSettings::default()
        };
        assert!(matches!(bad.validate(), Err(TransportError::Config(_))));
    }
}
