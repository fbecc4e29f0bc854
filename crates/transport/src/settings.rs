//! [`TransportSettings`], [`Congestion`] and [`Protocols`].

use std::time::Duration;

use crate::error::TransportError;

/// The smallest flow-control window the settings accept.
const MIN_WINDOW: u32 = 16 * 1024;

/// The smallest initial congestion window the settings accept: two
/// datagrams of QUIC's minimum size (RFC 9002 allows no less).
const MIN_INITIAL_WINDOW: u64 = 2 * 1200;

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
    /// Concurrent bidirectional streams the peer may open; QUIC blocks the
    /// peer's next one until one ends. A session uses one: a listener
    /// refuses every further stream at once (stopped and reset with
    /// [`crate::close_code::STREAM_REFUSED`]), discarding what it carried.
    pub max_concurrent_bidi_streams: u32,
    /// Handshakes a listener runs at once; further attempts are refused
    /// (a QUIC client sees [`TransportError::Busy`] and retries with backoff). Sized for a fleet reconnecting at once
    /// after an outage; each pending handshake costs a few KiB.
    pub max_pending_handshakes: usize,
    /// Established connections a listener queues until [`crate::Listener::accept`] takes them.
    pub accept_queue: usize,
    /// Handshakes in progress above which a listener first asks a QUIC
    /// client whose address is not yet validated to prove it (a QUIC Retry:
    /// one more round trip). Spoofed sources cannot answer, so a flood of
    /// them stops costing handshakes; honest clients answer transparently.
    pub retry_above: usize,
    /// Live connections (handshakes in progress included) one peer key may
    /// hold on a listener at once. The next is closed with
    /// [`crate::close_code::TOO_MANY_CONNECTIONS`]. A device needs one; a
    /// few more cover reconnections while a dead connection times out.
    pub max_connections_per_peer: usize,
    /// Largest first frame a client may send, in bytes. A listener yields
    /// a connection only once its whole first frame has arrived, within
    /// [`TransportSettings::handshake_timeout`]: until then the peer has
    /// proven only a key, which anyone can make.
    pub max_opening_frame: usize,
    /// `SO_RCVBUF` asked for a listener's UDP socket, in bytes (`None`: the
    /// OS default, often about 200 KiB, which overflows when hundreds of
    /// devices connect at once). Linux caps it at `net.core.rmem_max`;
    /// [`crate::Listener::udp_receive_buffer`] says what was granted.
    pub udp_receive_buffer: Option<usize>,
    /// Bytes a peer may send on one QUIC stream beyond what this side has
    /// read (flow control). Bounds the memory a connection's session stream
    /// can take; 2 MiB covers a 10 Mbit/s link with 1.5 s round trips.
    pub stream_receive_window: u32,
    /// Bytes a peer may send on one QUIC connection, all streams together,
    /// beyond what this side has read.
    pub connection_receive_window: u32,
    /// Bytes this side buffers for sending on one QUIC connection, at most.
    pub send_window: u64,
    /// The congestion controller: how QUIC paces what it sends to what
    /// the path carries. CUBIC, the default, matched BBR on the emulated
    /// satellite and bad cellular links of the performance suite
    /// (`fieldsync-bench --only hostile`) and beat it on HF radio.
    pub congestion: Congestion,
    /// Bytes QUIC may send before the first acknowledgement (the initial
    /// congestion window). On long round trips each doubling of the window
    /// costs a round trip: with the common ten datagrams (12 KB), a sync of
    /// 40 KB over a 600 ms satellite link spends three round trips growing
    /// the window where one would do. The default, 32 datagrams (38,400
    /// bytes), is about one bandwidth-delay product of such a link; QUIC
    /// paces it over the estimated round trip rather than sending it at
    /// once.
    pub initial_window: u64,
}

/// QUIC congestion controllers ([`TransportSettings::congestion`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Congestion {
    /// CUBIC (RFC 9438): cuts its window to 70 % on loss and grows it back
    /// along a cubic curve. The usual choice on wired and LAN paths.
    #[default]
    Cubic,
    /// NewReno (RFC 9002): halves on loss, grows by one datagram a round trip.
    NewReno,
    /// BBR (version 1): paces at the bottleneck rate it measures and keeps
    /// about one bandwidth-delay product in flight, so random loss alone
    /// does not slow it down. quinn marks its implementation experimental;
    /// on the suite's emulated links it was no faster than CUBIC on
    /// satellite and bad cellular and overran a slow link's small queue.
    Bbr,
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
            retry_above: 128,
            max_connections_per_peer: 4,
            max_opening_frame: 64 * 1024,
            udp_receive_buffer: Some(8 * 1024 * 1024),
            stream_receive_window: 2 * 1024 * 1024,
            connection_receive_window: 4 * 1024 * 1024,
            send_window: 4 * 1024 * 1024,
            congestion: Congestion::Cubic,
            initial_window: 32 * 1200,
        }
    }
}

/// The longest timer accepted: deadlines are instants, which a timeout of
/// centuries would overflow.
const MAX_TIMER: Duration = Duration::from_secs(24 * 3600);
/// The largest initial round-trip estimate accepted.
const MAX_INITIAL_RTT: Duration = Duration::from_secs(60);

impl TransportSettings {
    /// Checks that the timers fit together.
    pub fn validate(&self) -> Result<(), TransportError> {
        let bad = |m: &str| Err(TransportError::Config(m.to_owned()));
        if self.keep_alive.is_zero() || self.keep_alive >= self.idle_timeout / 2 {
            return bad("keep_alive must be non-zero and less than half of idle_timeout");
        }
        if self.initial_rtt.is_zero() || self.initial_rtt > MAX_INITIAL_RTT {
            return bad("initial_rtt must be non-zero and at most a minute");
        }
        if self.quic_connect_timeout.is_zero()
            || self.tcp_connect_timeout.is_zero()
            || self.handshake_timeout.is_zero()
        {
            return bad("connect and handshake timeouts must be non-zero");
        }
        if [
            self.keep_alive,
            self.idle_timeout,
            self.quic_connect_timeout,
            self.tcp_connect_timeout,
            self.handshake_timeout,
        ]
        .iter()
        .any(|t| *t > MAX_TIMER)
        {
            return bad("timeouts must be at most a day");
        }
        if self.max_concurrent_bidi_streams == 0 {
            return bad("max_concurrent_bidi_streams must be at least 1 (the session stream)");
        }
        if self.max_pending_handshakes == 0 || self.accept_queue == 0 {
            return bad("max_pending_handshakes and accept_queue must be at least 1");
        }
        if self.max_connections_per_peer == 0 {
            return bad("max_connections_per_peer must be at least 1");
        }
        if self.max_opening_frame > crate::MAX_FRAME {
            return bad("max_opening_frame cannot exceed the frame limit (4 MiB)");
        }
        if self.stream_receive_window < MIN_WINDOW
            || self.connection_receive_window < self.stream_receive_window
            || self.send_window < u64::from(MIN_WINDOW)
        {
            return bad(
                "windows must be at least 16 KiB, and the connection's at least the stream's",
            );
        }
        if self.initial_window < MIN_INITIAL_WINDOW || self.initial_window > self.send_window {
            return bad(
                "initial_window must be at least two datagrams (2,400 bytes) and at most send_window",
            );
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
        for bad in [
            TransportSettings {
                max_connections_per_peer: 0,
                ..TransportSettings::default()
            },
            TransportSettings {
                stream_receive_window: 1024,
                ..TransportSettings::default()
            },
            TransportSettings {
                connection_receive_window: 1024 * 1024,
                ..TransportSettings::default()
            },
            TransportSettings {
                max_opening_frame: crate::MAX_FRAME + 1,
                ..TransportSettings::default()
            },
            TransportSettings {
                initial_window: 1200,
                ..TransportSettings::default()
            },
            TransportSettings {
                initial_window: 64 * 1024 * 1024,
                ..TransportSettings::default()
            },
            TransportSettings {
                handshake_timeout: Duration::from_secs(u64::MAX),
                ..TransportSettings::default()
            },
            TransportSettings {
                idle_timeout: Duration::from_secs(2 * 24 * 3600),
                ..TransportSettings::default()
            },
            TransportSettings {
                initial_rtt: Duration::from_secs(61),
                ..TransportSettings::default()
            },
        ] {
            assert!(
                matches!(bad.validate(), Err(TransportError::Config(_))),
                "{bad:?}"
            );
        }
    }
}
