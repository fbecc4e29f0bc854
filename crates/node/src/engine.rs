//! The engine thread: the one place where the store is written and the
//! sessions run. Everything else talks to it through [`Cmd`]s.
//!
//! Store work (redb commits, each with its fsync) blocks, so the engine runs
//! on its own OS thread, never on the async runtime's workers. Connection
//! tasks send it the bytes they read; it feeds them to the connection's
//! [`Session`], and hands each connection's outgoing frames to that
//! connection's writer task. When a session stores changes, every other
//! session is told the log grew, which is how live changes reach subscribed
//! peers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fieldsync_identity::{DeviceCertificate, DeviceId, PublicKey, RevocationList, Timestamp};
use fieldsync_protocol::{
    Authority, CloseCode, DEFAULT_MAX_IN_FLIGHT, Event, Inbound, NodeRole, Session, SessionConfig,
    SessionError,
};
use fieldsync_store::Store;
use tokio::sync::{OwnedSemaphorePermit, broadcast, mpsc, oneshot};

/// Identifies one connection for as long as the node runs.
pub type ConnId = u64;

/// The wall clock, as the protocol's timestamps.
pub fn now() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    Timestamp::from_millis(ms)
}

/// How the node presents itself in its sessions.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Device or relay.
    pub role: NodeRole,
    /// This node's certificate, issued by headquarters.
    pub certificate: DeviceCertificate,
    /// The headquarters key every certificate must chain to.
    pub hq: PublicKey,
    /// Batches in flight per session, at most.
    pub max_in_flight: usize,
    /// Group commit: batches from all peers that arrive together are made
    /// durable by one fsync, before any of them is acknowledged.
    pub group_commit: bool,
    /// Frames read and prepared but not yet handled by the engine, at most,
    /// in KiB, over all connections (a prepared batch is held parsed: this
    /// bounds the memory of what waits, however fast peers send). A reader
    /// that finds no room hands over what it holds and stops reading until
    /// the engine frees some; QUIC flow control then holds its peer. A
    /// frame larger than the whole room waits until the room is empty.
    /// At least 1 (0 is taken as 1).
    pub queued_limit_kib: u32,
}

/// [`NodeConfig::queued_limit_kib`] by default: 32 MiB.
pub const DEFAULT_QUEUED_KIB: u32 = 32 * 1024;

impl NodeConfig {
    /// A configuration with the default window.
    pub fn new(role: NodeRole, certificate: DeviceCertificate, hq: PublicKey) -> Self {
        Self {
            role,
            certificate,
            hq,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            group_commit: true,
            queued_limit_kib: DEFAULT_QUEUED_KIB,
        }
    }
}

/// Frames held for a group commit, at most, before the engine flushes even
/// though more input is queued.
const MAX_HELD: usize = 4096;

/// How long what is stored may wait for its group commit while input keeps
/// coming: the engine flushes once what is queued is handled, or after
/// this long, whichever is first (acknowledgements wait for the flush).
const GROUP_COMMIT_WINDOW: Duration = Duration::from_millis(10);

/// How long the other sessions may go untold that the log grew while input
/// keeps coming: they are told once the engine has handled what is queued,
/// or after this long, whichever is first (one notice for all the batches
/// stored meanwhile, not one per batch).
const GREW_NOTICE_DELAY: Duration = Duration::from_millis(20);

/// What a connection's session does once both sides hold each other's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Stay connected: live changes flow both ways (relays, `sync --watch`).
    Live,
    /// Close as soon as the session is synced (`sync`).
    UntilSynced,
}

/// What the engine sends a connection's writer.
#[derive(Debug)]
pub(crate) enum Out {
    /// Bytes for the peer (whole frames).
    Frame(Vec<u8>),
    /// The session ended: flush, then close the connection.
    Close,
}

/// What happened on one connection, for whoever subscribed.
#[derive(Debug, Clone)]
pub struct NodeEvent {
    /// The connection.
    pub conn: ConnId,
    /// Its authenticated peer.
    pub peer: DeviceId,
    /// What happened.
    pub kind: NodeEventKind,
}

/// The kinds of [`NodeEvent`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum NodeEventKind {
    /// An event of the session itself.
    Session(Event),
    /// Both logs are exchanged and acknowledged (first time on this connection).
    Synced,
    /// The connection's session is over; `error` says why when it failed.
    Ended {
        /// The failure, if it was one.
        error: Option<String>,
    },
}

/// How one connection's session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnOutcome {
    /// The authenticated peer.
    pub peer: DeviceId,
    /// Whether the session reached "synced" (both logs exchanged and acknowledged).
    pub synced: bool,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// Session bytes written to the connection (frames with their length
    /// prefixes; transport overhead not counted).
    pub bytes_sent: u64,
    /// Session bytes read from the connection (frames with their length
    /// prefixes; transport overhead not counted).
    pub bytes_received: u64,
}

/// A job run on the engine thread with the engine in hand (admin commands,
/// local edits while a session is live).
pub(crate) type Job = Box<dyn FnOnce(&mut Engine) + Send>;

/// Messages to the engine thread.
pub(crate) enum Cmd {
    /// A connection was authenticated: open a session with `peer`.
    Open {
        id: ConnId,
        peer: DeviceId,
        mode: Mode,
        out: mpsc::UnboundedSender<Out>,
        done: oneshot::Sender<ConnOutcome>,
    },
    /// Frames read from a connection, decoded and their signatures checked
    /// (on the connection's task, not on the engine thread), in order, with
    /// the room they take among the frames waiting for the engine (given
    /// back once they are handled).
    Input {
        id: ConnId,
        frames: Vec<Inbound>,
        room: Option<OwnedSemaphorePermit>,
    },
    /// The connection is gone (read side ended or failed).
    Gone { id: ConnId, reason: Option<String> },
    /// Run a job on the engine thread.
    Run(Job),
    /// Close every session and stop.
    Shutdown,
}

struct Live {
    session: Session,
    out: mpsc::UnboundedSender<Out>,
    peer: DeviceId,
    mode: Mode,
    synced: bool,
    error: Option<String>,
    done: oneshot::Sender<ConnOutcome>,
}

impl Live {
    /// Tells the connection task how it ended.
    fn report(self, error: Option<String>) -> (DeviceId, Option<String>) {
        let _ = self.done.send(ConnOutcome {
            peer: self.peer,
            synced: self.synced,
            error: error.clone(),
            bytes_sent: 0,
            bytes_received: 0,
        });
        (self.peer, error)
    }
}

/// The state the engine thread owns. Jobs get `&mut Engine`.
pub struct Engine {
    store: Arc<Store>,
    cfg: NodeConfig,
    authority: Authority,
    /// Open sessions (boxed: a session is large, and idle ones should cost
    /// only themselves, not a share of map nodes sized for them).
    conns: BTreeMap<ConnId, Box<Live>>,
    events: broadcast::Sender<NodeEvent>,
    /// Something was stored without waiting for the disk since the last
    /// flush: since when.
    unflushed: Option<Instant>,
    /// Frames that wait for the next flush (they may acknowledge what it makes durable).
    held: Vec<(mpsc::UnboundedSender<Out>, Out)>,
    /// A relay above this node acknowledged more of its log since the
    /// sessions were last told (they carry its receipt down to their peers).
    upstream_advanced: bool,
    /// Since when sessions have stored changes the other sessions were not
    /// told of yet.
    grew_since: Option<Instant>,
}

impl Engine {
    pub(crate) fn new(
        store: Arc<Store>,
        cfg: NodeConfig,
        events: broadcast::Sender<NodeEvent>,
    ) -> Self {
        let revocations = store
            .revocations()
            .ok()
            .flatten()
            .and_then(|bytes| RevocationList::from_bytes(&bytes, &cfg.hq).ok());
        let authority = Authority::new(cfg.hq, revocations);
        Self {
            store,
            cfg,
            authority,
            conns: BTreeMap::new(),
            events,
            unflushed: None,
            held: Vec::new(),
            upstream_advanced: false,
            grew_since: None,
        }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The trust anchor and the revocation list in force.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// Peers with an open session.
    pub fn connected(&self) -> Vec<DeviceId> {
        self.conns.values().map(|l| l.peer).collect()
    }

    /// Runs the engine until [`Cmd::Shutdown`] or until every sender is gone.
    pub(crate) fn run(mut self, mut inbox: mpsc::Receiver<Cmd>) {
        'outer: while let Some(cmd) = inbox.blocking_recv() {
            // Everything queued now is handled before one flush (group commit),
            // unless that takes longer than the group-commit window.
            let mut next = Some(cmd);
            while let Some(cmd) = next.take() {
                if !self.handle(cmd) {
                    break 'outer;
                }
                if self.held.len() >= MAX_HELD
                    || self
                        .unflushed
                        .is_some_and(|t| t.elapsed() >= GROUP_COMMIT_WINDOW)
                {
                    self.flush();
                }
                if self
                    .grew_since
                    .is_some_and(|t| t.elapsed() >= GREW_NOTICE_DELAY)
                {
                    self.tell_log_grew();
                }
                next = inbox.try_recv().ok();
            }
            // Once per round of input, however many receipts arrived in it.
            self.relay_upstream_receipts();
            self.flush();
            // Once per round too, however many batches were stored in it,
            // after the flush: the notices go out at once.
            self.tell_log_grew();
            self.flush();
        }
        self.flush();
        for id in self.conns.keys().copied().collect::<Vec<_>>() {
            if let Some(live) = self.conns.get_mut(&id) {
                live.session
                    .close(CloseCode::Done, "the node is shutting down");
            }
            self.drain(id);
        }
        tracing::debug!("engine stopped");
    }

    /// Handles one command; false to stop.
    fn handle(&mut self, cmd: Cmd) -> bool {
        match cmd {
            Cmd::Open {
                id,
                peer,
                mode,
                out,
                done,
            } => self.open(id, peer, mode, out, done),
            Cmd::Input { id, frames, room } => {
                self.input(id, frames);
                drop(room);
            }
            Cmd::Gone { id, reason } => self.gone(id, reason),
            Cmd::Run(job) => job(self),
            Cmd::Shutdown => return false,
        }
        true
    }

    /// Sends a frame, or holds it until the next flush when something is
    /// stored but not durable yet.
    fn send(&mut self, out: &mpsc::UnboundedSender<Out>, msg: Out) {
        if self.unflushed.is_some() {
            self.held.push((out.clone(), msg));
        } else {
            let _ = out.send(msg);
        }
    }

    /// Makes what was stored durable, then releases the frames that waited
    /// for it. If the disk fails, nothing held is sent: no peer is told its
    /// changes are safe, and every session ends.
    pub fn flush(&mut self) {
        if self.unflushed.take().is_none() {
            return;
        }
        let held = std::mem::take(&mut self.held);
        match self.store.flush() {
            Ok(()) => {
                for (out, msg) in held {
                    let _ = out.send(msg);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "flushing the store failed; closing every session");
                for (out, _) in held {
                    let _ = out.send(Out::Close);
                }
                for id in self.conns.keys().copied().collect::<Vec<_>>() {
                    if let Some(live) = self.conns.remove(&id) {
                        let _ = live.out.send(Out::Close);
                        let (peer, error) = live.report(Some(format!("storage failed: {e}")));
                        self.emit(id, peer, NodeEventKind::Ended { error });
                    }
                }
            }
        }
    }

    fn session_config(&self) -> SessionConfig {
        SessionConfig {
            role: self.cfg.role,
            certificate: self.cfg.certificate.clone(),
            authority: self.authority.clone(),
            max_in_flight: self.cfg.max_in_flight,
            deferred_commits: self.cfg.group_commit,
        }
    }

    fn open(
        &mut self,
        id: ConnId,
        peer: DeviceId,
        mode: Mode,
        out: mpsc::UnboundedSender<Out>,
        done: oneshot::Sender<ConnOutcome>,
    ) {
        match Session::new(self.session_config(), &self.store, peer, now()) {
            Ok(session) => {
                self.conns.insert(
                    id,
                    Box::new(Live {
                        session,
                        out,
                        peer,
                        mode,
                        synced: false,
                        error: None,
                        done,
                    }),
                );
                self.drain(id);
            }
            Err(e) => {
                tracing::error!(peer = %peer.short(), error = %e, "cannot open a session");
                let live_error = Some(e.to_string());
                let _ = out.send(Out::Close);
                let _ = done.send(ConnOutcome {
                    peer,
                    synced: false,
                    error: live_error.clone(),
                    bytes_sent: 0,
                    bytes_received: 0,
                });
                self.emit(id, peer, NodeEventKind::Ended { error: live_error });
            }
        }
    }

    fn input(&mut self, id: ConnId, frames: Vec<Inbound>) {
        let Some(live) = self.conns.get_mut(&id) else {
            return; // closed already; late frames are dropped
        };
        for frame in frames {
            if let Err(e) = live.session.handle_inbound(&self.store, frame, now()) {
                live.error.get_or_insert_with(|| describe(&e));
            }
            if live.session.is_closed() {
                break; // what follows the end is dropped
            }
        }
        self.drain(id);
    }

    fn gone(&mut self, id: ConnId, reason: Option<String>) {
        let Some(mut live) = self.conns.remove(&id) else {
            return;
        };
        let error = live.error.take().or(if live.session.is_closed() {
            None
        } else {
            Some(reason.unwrap_or_else(|| "the connection ended before the session did".into()))
        });
        let (peer, error) = self.finish_live(live, error);
        self.emit(id, peer, NodeEventKind::Ended { error });
    }

    /// Sends what session `id` has queued, publishes its events, and reacts:
    /// stored changes go to every other session; a newer revocation list is
    /// adopted everywhere; a synced one-shot session is closed.
    fn drain(&mut self, id: ConnId) {
        let mut grew = false;
        let mut revocations = false;
        let mut orders = false;
        let mut ended = None;
        let mut frames = Vec::new();
        let mut events = Vec::new();
        let Some(live) = self.conns.get_mut(&id) else {
            return;
        };
        let peer = live.peer;
        let out = live.out.clone();
        loop {
            // Events first: a batch stored without waiting for the disk
            // holds back this session's frames (its acknowledgement among
            // them) until the flush.
            while let Some(ev) = live.session.poll_event() {
                match &ev {
                    Event::Stored { report, .. } => {
                        grew |= report.stored > 0;
                        if self.cfg.group_commit {
                            self.unflushed.get_or_insert_with(Instant::now);
                        }
                    }
                    Event::RevocationsUpdated { .. } => revocations = true,
                    Event::WipeOrderHeld { .. } => orders = true,
                    Event::Acknowledged { receipt: true, .. } => self.upstream_advanced = true,
                    _ => {}
                }
                events.push(NodeEventKind::Session(ev));
            }
            while let Some(frame) = live.session.poll_transmit() {
                frames.push(frame);
            }
            if !live.synced && live.session.is_synced() {
                live.synced = true;
                events.push(NodeEventKind::Synced);
                if live.mode == Mode::UntilSynced {
                    live.session.close(CloseCode::Done, "synced");
                    continue; // send the Close frame
                }
            }
            break;
        }
        if live.session.is_closed() {
            ended = Some(live.error.clone());
        }
        for frame in frames {
            self.send(&out, Out::Frame(frame));
        }
        for kind in events {
            self.emit(id, peer, kind);
        }
        if let Some(error) = ended
            && let Some(live) = self.conns.remove(&id)
        {
            let (peer, error) = self.finish_live(live, error);
            self.emit(id, peer, NodeEventKind::Ended { error });
        }
        if revocations {
            self.revocations_changed();
        }
        if orders {
            self.wipe_orders_except(Some(id));
        }
        if grew {
            // The other sessions are told later, once for every batch
            // stored until then (`tell_log_grew`).
            self.grew_since.get_or_insert_with(Instant::now);
        }
    }

    /// The wipe orders this relay holds changed (headquarters issued one,
    /// or a session brought one from another relay): every session sends
    /// its peer what it should get of them (a device its own order, at
    /// once, if it is connected; a relay every new order).
    pub fn wipe_orders_changed(&mut self) {
        self.wipe_orders_except(None);
    }

    fn wipe_orders_except(&mut self, except: Option<ConnId>) {
        if self.cfg.role != NodeRole::Relay {
            return;
        }
        let ids: Vec<ConnId> = self
            .conns
            .keys()
            .copied()
            .filter(|id| Some(*id) != except)
            .collect();
        for id in ids {
            if let Some(live) = self.conns.get_mut(&id)
                && let Err(e) = live.session.handle_wipe_orders(&self.store, now())
            {
                live.error.get_or_insert_with(|| describe(&e));
            }
            self.drain(id);
        }
    }

    /// Ends a connection's session: its writer closes after what is held
    /// for it, and its task learns how it ended.
    fn finish_live(
        &mut self,
        live: Box<Live>,
        error: Option<String>,
    ) -> (DeviceId, Option<String>) {
        let out = live.out.clone();
        self.send(&out, Out::Close);
        live.report(error)
    }

    fn emit(&self, conn: ConnId, peer: DeviceId, kind: NodeEventKind) {
        // No subscriber is not an error.
        let _ = self.events.send(NodeEvent { conn, peer, kind });
    }

    /// The local log grew (a local edit, an admin release, a batch from a
    /// peer): every session forwards what its peer lacks.
    pub fn log_grew(&mut self) {
        self.grew_since = None;
        self.log_grew_to_all();
    }

    /// Sessions stored changes since the others were last told: tell every
    /// session now (the one that stored them finds nothing new to send).
    fn tell_log_grew(&mut self) {
        if self.grew_since.take().is_some() {
            self.log_grew_to_all();
        }
    }

    fn log_grew_to_all(&mut self) {
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            if let Some(live) = self.conns.get_mut(&id)
                && let Err(e) = live.session.handle_log_grew(&self.store, now())
            {
                live.error.get_or_insert_with(|| describe(&e));
            }
            self.drain(id);
        }
    }

    /// A relay above this one acknowledged more of this node's log: every
    /// session tells its peer how much of the peer's log that covers.
    fn relay_upstream_receipts(&mut self) {
        if !std::mem::take(&mut self.upstream_advanced) || self.cfg.role != NodeRole::Relay {
            return;
        }
        let receipts = match self.store.receipts() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "reading receipts");
                return;
            }
        };
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            if let Some(live) = self.conns.get_mut(&id)
                && let Err(e) = live
                    .session
                    .handle_upstream_receipts(&self.store, &receipts)
            {
                live.error.get_or_insert_with(|| describe(&e));
            }
            self.drain(id);
        }
    }

    /// Adopts `list` if it is newer than the one in force: stores it
    /// (withdrawing what it puts beyond a newly revoked device's revocation
    /// point, [`Store::adopt_revocations`]), and every session passes it on
    /// (and ends if its peer is now revoked).
    pub fn adopt_revocations(&mut self, list: RevocationList) -> Result<bool, SessionError> {
        if !self.authority.adopt(list.clone()) {
            return Ok(false);
        }
        // Stored together with the withdrawal of what this node holds beyond
        // a newly revoked device's revocation point (nothing when a session
        // stored this list already).
        self.store.adopt_revocations(&list, now())?;
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            if let Some(live) = self.conns.get_mut(&id)
                && let Err(e) = live.session.handle_revocations(list.clone(), now())
            {
                live.error.get_or_insert_with(|| describe(&e));
            }
            self.drain(id);
        }
        Ok(true)
    }

    /// The stored revocation list may be newer than the one in force (a
    /// session adopted one from its peer, or headquarters issued one): take
    /// it from the store and pass it to every session.
    pub fn revocations_changed(&mut self) {
        let list = self
            .store
            .revocations()
            .ok()
            .flatten()
            .and_then(|bytes| RevocationList::from_bytes(&bytes, &self.cfg.hq).ok());
        if let Some(list) = list
            && let Err(e) = self.adopt_revocations(list)
        {
            tracing::error!(error = %e, "adopting a revocation list");
        }
    }
}

/// A session error as one line for people.
fn describe(e: &SessionError) -> String {
    e.to_string()
}
