//! Per-peer connection counting, and what a listener keeps alive beside
//! each accepted connection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use fieldsync_identity::PublicKey;
use tokio::task::AbortHandle;

/// What a listener accepted and refused since it was bound
/// ([`crate::Listener::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListenerStats {
    /// Connections handed to [`crate::Listener::accept`].
    pub accepted: u64,
    /// Handshakes in progress now.
    pub in_progress: u64,
    /// Peer keys holding at least one connection now.
    pub peers: u64,
    /// Handshakes that failed: TLS refused the peer's certificate (none,
    /// wrong key type, refused by the policy), wrong ALPN, timeouts, or the
    /// peer gave up.
    pub handshakes_failed: u64,
    /// Attempts refused at once because `max_pending_handshakes` were in progress.
    pub refused_busy: u64,
    /// QUIC Retries sent to unvalidated addresses under load.
    pub retries: u64,
    /// Connections closed because their key held `max_connections_per_peer` already.
    pub refused_per_peer: u64,
    /// Connections closed because the opening frame was too large, cut
    /// short, or late.
    pub bad_openings: u64,
    /// Streams refused beyond each connection's session stream.
    pub streams_refused: u64,
}

/// The counters behind [`ListenerStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) accepted: AtomicU64,
    pub(crate) handshakes_failed: AtomicU64,
    pub(crate) refused_busy: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) refused_per_peer: AtomicU64,
    pub(crate) bad_openings: AtomicU64,
    pub(crate) streams_refused: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, in_progress: usize, peers: usize) -> ListenerStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ListenerStats {
            accepted: get(&self.accepted),
            in_progress: in_progress as u64,
            peers: peers as u64,
            handshakes_failed: get(&self.handshakes_failed),
            refused_busy: get(&self.refused_busy),
            retries: get(&self.retries),
            refused_per_peer: get(&self.refused_per_peer),
            bad_openings: get(&self.bad_openings),
            streams_refused: get(&self.streams_refused),
        }
    }
}

/// Live connections per peer key on one listener, with a limit.
#[derive(Debug)]
pub(crate) struct PeerSlots {
    limit: usize,
    live: Mutex<HashMap<PublicKey, usize>>,
}

impl PeerSlots {
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            live: Mutex::new(HashMap::new()),
        })
    }

    /// The limit per key.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// A slot for `key`, or `None` when it already holds `limit`.
    pub(crate) fn take(self: &Arc<Self>, key: PublicKey) -> Option<PeerSlot> {
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        let held = live.entry(key).or_insert(0);
        if *held >= self.limit {
            return None;
        }
        *held += 1;
        Some(PeerSlot {
            slots: Arc::clone(self),
            key,
        })
    }

    /// Connections `key` holds now.
    pub(crate) fn held(&self, key: &PublicKey) -> usize {
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .copied()
            .unwrap_or(0)
    }

    /// Keys holding at least one connection.
    pub(crate) fn peers(&self) -> usize {
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// One counted connection; the count drops with it.
#[derive(Debug)]
pub(crate) struct PeerSlot {
    slots: Arc<PeerSlots>,
    key: PublicKey,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut live = self
            .slots
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(held) = live.get_mut(&self.key) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                live.remove(&self.key);
            }
        }
    }
}

/// What an accepted connection holds until both halves of its session
/// stream are dropped: its per-peer slot, and the task that refuses the
/// peer's extra streams (stopped when the connection is done with).
#[derive(Debug, Default)]
pub(crate) struct ConnGuard {
    pub(crate) _slot: Option<PeerSlot>,
    pub(crate) extra_streams: Option<AbortHandle>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if let Some(task) = &self.extra_streams {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use fieldsync_identity::SecretKey;

    use super::*;

    #[test]
    fn slots_count_per_key_and_free_on_drop() {
        let slots = PeerSlots::new(2);
        let a = SecretKey::from_seed(&[1; 32]).public();
        let b = SecretKey::from_seed(&[2; 32]).public();
        let a1 = slots.take(a);
        let a2 = slots.take(a);
        assert!(a1.is_some() && a2.is_some());
        assert!(slots.take(a).is_none(), "a third for the same key");
        let b1 = slots.take(b);
        assert!(b1.is_some(), "another key has its own count");
        assert_eq!((slots.held(&a), slots.held(&b), slots.peers()), (2, 1, 2));
        drop(a1);
        assert_eq!(slots.held(&a), 1);
        assert!(slots.take(a).is_some(), "a freed slot is taken again");
        drop((a2, b1));
        assert_eq!(
            slots.peers(),
            0,
            "no entry is kept for keys without connections"
        );
    }
}
