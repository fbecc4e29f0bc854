//! Staying connected to a relay: one connection at a time (single-flight),
//! and after a failure a wait that doubles up to a ceiling, with jitter, so
//! that a flapping link, or a thousand devices coming back at once after an
//! outage, never opens a storm of connections.

use std::net::SocketAddr;
use std::time::Duration;

use fieldsync_transport::{Connection, Connector, TransportError};
use tokio::sync::{mpsc, watch};

use crate::engine::{ConnOutcome, Mode};
use crate::node::Node;

/// Jittered exponential backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The wait after the first failure.
    pub initial: Duration,
    /// The longest wait.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// The wait before attempt `attempt` (0 = the first retry): `initial ·
    /// 2^attempt`, capped at `max`, then scaled into its upper half by
    /// `jitter` (any u64; uniform jitter gives a uniform spread over
    /// `[d/2, d]`).
    pub fn delay(&self, attempt: u32, jitter: u64) -> Duration {
        let base = self
            .initial
            .saturating_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
            .min(self.max);
        let half = base / 2;
        let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        let extra = if nanos == 0 { 0 } else { jitter % (nanos + 1) };
        half + Duration::from_nanos(extra)
    }
}

/// What a [`Dialer`] is doing, for logs and status lines.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum DialEvent {
    /// Trying a relay.
    Connecting {
        /// Its address.
        addr: SocketAddr,
    },
    /// Connected (and authenticated at the TLS layer).
    Connected {
        /// The relay's address.
        addr: SocketAddr,
        /// QUIC or TCP.
        transport: String,
    },
    /// No relay answered.
    Unreachable {
        /// The last error.
        error: String,
    },
    /// A session ended.
    SessionEnded(ConnOutcome),
    /// Waiting before the next attempt.
    Waiting {
        /// How long.
        delay: Duration,
    },
}

/// Where a relay is: an address, or a `host:port` name looked up at each
/// attempt (so that a node started while its resolver is out of reach, or
/// a relay that moved, is found at a later attempt).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Addr(SocketAddr),
    Name(String),
}

/// Keeps a node connected to its relays.
#[derive(Debug)]
pub struct Dialer {
    node: Node,
    connector: Connector,
    relays: Vec<Target>,
    backoff: Backoff,
}

fn jitter() -> u64 {
    let mut b = [0u8; 8];
    // Without OS randomness the waits are merely not spread; still bounded.
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b)
}

impl Dialer {
    /// A dialer for `node` that tries `relays` in order.
    pub fn new(
        node: Node,
        connector: Connector,
        relays: Vec<SocketAddr>,
        backoff: Backoff,
    ) -> Self {
        Self {
            node,
            connector,
            relays: relays.into_iter().map(Target::Addr).collect(),
            backoff,
        }
    }

    /// A dialer for `node` that tries the relays named `host:port` in
    /// order, looking each name up again at every attempt.
    pub fn resolving(
        node: Node,
        connector: Connector,
        names: Vec<String>,
        backoff: Backoff,
    ) -> Self {
        Self {
            node,
            connector,
            relays: names
                .into_iter()
                .map(|n| match n.parse() {
                    Ok(addr) => Target::Addr(addr),
                    Err(_) => Target::Name(n),
                })
                .collect(),
            backoff,
        }
    }

    /// The addresses of the relays, in order, as they resolve now.
    async fn addresses(&self) -> (Vec<SocketAddr>, Option<TransportError>) {
        let mut out = Vec::new();
        let mut failed = None;
        for t in &self.relays {
            match t {
                Target::Addr(a) => out.push(*a),
                Target::Name(n) => match tokio::net::lookup_host(n.as_str()).await {
                    Ok(addrs) => out.extend(addrs),
                    Err(e) => {
                        tracing::info!(relay = %n, error = %e, "cannot resolve");
                        failed = Some(TransportError::Resolve {
                            name: n.clone(),
                            reason: e.to_string(),
                        });
                    }
                },
            }
        }
        (out, failed)
    }

    /// The connector (for migration: [`Connector::rebind`]).
    pub fn connector(&self) -> &Connector {
        &self.connector
    }

    /// Connects to the first relay that answers, trying each in order.
    pub async fn connect_once(
        &self,
        events: Option<&mpsc::UnboundedSender<DialEvent>>,
    ) -> Result<(SocketAddr, Connection), TransportError> {
        let (addrs, mut last) = self.addresses().await;
        for addr in addrs {
            if let Some(tx) = events {
                let _ = tx.send(DialEvent::Connecting { addr });
            }
            match self.connector.connect(addr).await {
                Ok(conn) => {
                    if let Some(tx) = events {
                        let _ = tx.send(DialEvent::Connected {
                            addr,
                            transport: conn.kind().to_string(),
                        });
                    }
                    return Ok((addr, conn));
                }
                Err(e) => {
                    tracing::info!(%addr, error = %e, "relay not reachable");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| TransportError::Config("no relay address is configured".into())))
    }

    /// Stays connected until `stop` turns true: runs a live session on each
    /// connection, and after it ends or an attempt fails, waits the backoff
    /// before the next. A session that reached "synced" resets the backoff.
    pub async fn run(
        self,
        mut stop: watch::Receiver<bool>,
        events: mpsc::UnboundedSender<DialEvent>,
    ) {
        let mut attempt: u32 = 0;
        while !*stop.borrow() {
            let result = tokio::select! {
                r = self.connect_once(Some(&events)) => r,
                _ = stop.changed() => break,
            };
            match result {
                Ok((_, conn)) => {
                    let outcome = tokio::select! {
                        o = self.node.run_connection(conn, Mode::Live) => o,
                        _ = stop.changed() => break,
                    };
                    if outcome.synced {
                        attempt = 0;
                    }
                    let _ = events.send(DialEvent::SessionEnded(outcome));
                }
                Err(e) => {
                    let _ = events.send(DialEvent::Unreachable {
                        error: e.to_string(),
                    });
                }
            }
            let delay = self.backoff.delay(attempt, jitter());
            attempt = attempt.saturating_add(1);
            let _ = events.send(DialEvent::Waiting { delay });
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.changed() => break,
            }
        }
        self.connector.close(0, "shutting down");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_ceiling_and_jitters_in_the_upper_half() {
        let b = Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(60),
        };
        assert_eq!(b.delay(0, 0), Duration::from_millis(250));
        assert_eq!(b.delay(0, u64::MAX), b.delay(0, u64::MAX % 250_000_001));
        assert!(b.delay(0, 123_456_789) <= Duration::from_millis(500));
        assert_eq!(b.delay(3, 0), Duration::from_secs(2));
        for attempt in [7, 20, 31, 32, 1000] {
            let d = b.delay(attempt, jitter());
            assert!(
                d >= Duration::from_secs(30) && d <= Duration::from_secs(60),
                "{d:?}"
            );
        }
        // Different jitter, different waits: clients do not retry in lockstep.
        let spread: std::collections::BTreeSet<_> =
            (0..50u64).map(|j| b.delay(4, j * 7_919_000_017)).collect();
        assert!(spread.len() > 40);
    }
}
