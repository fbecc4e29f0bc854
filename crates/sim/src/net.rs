//! The simulated network: links with latency and bandwidth, connections
//! carrying a pair of sessions, and the virtual clock's event queue.
//!
//! A connection is one QUIC stream each way: frames arrive in order, after
//! the link's latency plus the time to push their bytes through its
//! bandwidth behind the frames sent before them. Dropping a connection
//! discards both sessions and every frame in flight (their deliveries find
//! no connection and are ignored).

use std::collections::BTreeMap;

use fieldsync_protocol::Session;

use crate::rng::SimRng;

/// Virtual time, in milliseconds since the start of the run.
pub(crate) type Millis = u64;

/// Index of a node in the world.
pub(crate) type NodeIx = usize;

/// A link's character, fixed when the connection opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LinkSpec {
    /// One-way latency.
    pub(crate) latency_ms: Millis,
    /// Bandwidth, in bits per second.
    pub(crate) bits_per_sec: u64,
}

impl LinkSpec {
    /// A field link: 50–1500 ms one way, 10 kbit/s to 10 Mbit/s (log-uniform).
    pub(crate) fn field(rng: &mut SimRng) -> Self {
        Self {
            latency_ms: rng.log_range(50, 1500),
            bits_per_sec: rng.log_range(10_000, 10_000_000),
        }
    }

    /// A fast, short link (an office LAN, or a relay's uplink at its best).
    pub(crate) fn lan(rng: &mut SimRng) -> Self {
        Self {
            latency_ms: rng.range(1, 20),
            bits_per_sec: rng.log_range(10_000_000, 100_000_000),
        }
    }

    /// Time to push `len` bytes through the link.
    pub(crate) fn serialize_ms(&self, len: usize) -> Millis {
        let bits = (len as u64).saturating_mul(8).saturating_mul(1000);
        bits.div_ceil(self.bits_per_sec.max(1))
    }
}

/// Which end of a connection: the dialer (a device or an office relay) or
/// the relay it dialed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Side {
    /// The node that opened the connection.
    Dialer,
    /// The relay that accepted it.
    Acceptor,
}

impl Side {
    /// The other end.
    pub(crate) fn other(self) -> Side {
        match self {
            Side::Dialer => Side::Acceptor,
            Side::Acceptor => Side::Dialer,
        }
    }

    fn ix(self) -> usize {
        match self {
            Side::Dialer => 0,
            Side::Acceptor => 1,
        }
    }
}

/// One connection: two sessions and the link between them.
#[derive(Debug)]
pub(crate) struct Conn {
    /// The dialing node.
    pub(crate) dialer: NodeIx,
    /// The accepting relay.
    pub(crate) acceptor: NodeIx,
    /// The dialer's session and the acceptor's session.
    sessions: [Session; 2],
    /// The link.
    pub(crate) link: LinkSpec,
    /// When each direction's pipe is free again.
    busy_until: [Millis; 2],
}

impl Conn {
    /// A connection between `dialer` and `acceptor` carrying these sessions.
    pub(crate) fn new(
        dialer: NodeIx,
        acceptor: NodeIx,
        dialer_session: Session,
        acceptor_session: Session,
        link: LinkSpec,
    ) -> Self {
        Self {
            dialer,
            acceptor,
            sessions: [dialer_session, acceptor_session],
            link,
            busy_until: [0, 0],
        }
    }

    /// The node at `side`.
    pub(crate) fn node(&self, side: Side) -> NodeIx {
        match side {
            Side::Dialer => self.dialer,
            Side::Acceptor => self.acceptor,
        }
    }

    /// The side `node` is on, if it is an end of this connection.
    pub(crate) fn side_of(&self, node: NodeIx) -> Option<Side> {
        if self.dialer == node {
            Some(Side::Dialer)
        } else if self.acceptor == node {
            Some(Side::Acceptor)
        } else {
            None
        }
    }

    /// The session at `side`.
    pub(crate) fn session(&self, side: Side) -> &Session {
        &self.sessions[side.ix()]
    }

    /// The session at `side`, mutably.
    pub(crate) fn session_mut(&mut self, side: Side) -> &mut Session {
        &mut self.sessions[side.ix()]
    }

    /// When a frame of `len` bytes sent now from `from` arrives at the other end.
    pub(crate) fn send_time(&mut self, from: Side, len: usize, now: Millis) -> Millis {
        let start = now.max(self.busy_until[from.ix()]);
        let done = start.saturating_add(self.link.serialize_ms(len));
        self.busy_until[from.ix()] = done;
        done.saturating_add(self.link.latency_ms)
    }

    /// Whether both sessions report synced.
    pub(crate) fn is_synced(&self) -> bool {
        self.sessions.iter().all(Session::is_synced)
    }

    /// Whether both sessions are closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.sessions.iter().all(Session::is_closed)
    }
}

/// Something scheduled at a virtual time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ev {
    /// A frame reaches one end of a connection.
    Deliver {
        /// The connection.
        conn: u64,
        /// The receiving end.
        to: Side,
        /// The frame.
        frame: Vec<u8>,
    },
    /// A device edits a case.
    Edit(NodeIx),
    /// A node's link comes up (it leaves a partition): it will dial.
    Online(NodeIx),
    /// A node's link goes down for a while (a partition).
    Offline(NodeIx),
    /// A node with its link up and no connection dials its relay.
    Dial(NodeIx),
    /// A relay comes back after a crash.
    Restart(NodeIx),
    /// The next fault strikes.
    Fault,
    /// Headquarters revokes a device.
    Revoke,
    /// Headquarters releases a liaison's quarantined changes of one case.
    Release,
}

/// The event queue: ordered by time, then by the order of scheduling, so
/// that equal times replay identically.
#[derive(Debug, Default)]
pub(crate) struct Scheduler {
    queue: BTreeMap<(Millis, u64), Ev>,
    next: u64,
}

impl Scheduler {
    /// Schedules `ev` at `at`.
    pub(crate) fn at(&mut self, at: Millis, ev: Ev) {
        self.queue.insert((at, self.next), ev);
        self.next += 1;
    }

    /// The earliest event, removed from the queue.
    pub(crate) fn pop(&mut self) -> Option<(Millis, Ev)> {
        self.queue.pop_first().map(|((t, _), ev)| (t, ev))
    }

    /// When the earliest event is due, if any.
    pub(crate) fn peek_time(&self) -> Option<Millis> {
        self.queue.first_key_value().map(|((t, _), _)| *t)
    }

    /// Drops every event.
    pub(crate) fn clear(&mut self) {
        self.queue.clear();
    }

    /// Events waiting.
    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }
}
