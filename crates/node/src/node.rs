//! The handle the binaries hold: start the engine, give it connections, run
//! jobs on its thread, watch its events, shut it down.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use fieldsync_identity::{DeviceId, PublicKey};
use fieldsync_protocol::{FrameDecoder, Inbound};
use fieldsync_store::Store;
use fieldsync_transport::{Connection, SessionReader, SessionWriter, TransportError};
use tokio::io::AsyncWriteExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, mpsc, oneshot};
use tokio::time::{Duration, timeout};

use crate::engine::{Cmd, ConnId, ConnOutcome, Engine, Mode, NodeConfig, NodeEvent, Out};

/// Commands queued for the engine, at most, before connection readers wait
/// (backpressure on peers that send faster than the store commits).
const INBOX: usize = 256;

/// Events kept for slow subscribers before they start missing some.
const EVENTS: usize = 1024;

/// Bytes read from a connection at a time, at most.
const READ_CHUNK: usize = 64 * 1024;

/// Frames at least this long (batches of more than a few changes) are
/// decoded and their signatures checked on the blocking pool, so a large
/// batch neither holds up the engine thread nor the runtime's workers;
/// shorter ones are prepared where they are read.
const PREPARE_APART: usize = 8 * 1024;

/// Batches prepared at once on the blocking pool, at most: one per core.
/// Batches from many peers are then checked about in the order they came,
/// so the engine stores the first while the next are checked (were they
/// all checked at once, each would take as long as all of them).
fn prepare_slots() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// How long a peer has to finish its side once our session is over.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The node's engine is gone (it was shut down, or its thread ended).
#[derive(Debug, Clone, thiserror::Error)]
#[error("the node has shut down")]
pub struct NodeStopped;

/// A running node: an engine thread that owns the store and the sessions.
/// Cheap to clone; every clone drives the same engine.
#[derive(Clone)]
pub struct Node {
    inbox: mpsc::Sender<Cmd>,
    events: broadcast::Sender<NodeEvent>,
    next_conn: Arc<AtomicU64>,
    device: DeviceId,
    /// The headquarters key (the batches' author certificates are checked
    /// against it as they are read).
    hq: PublicKey,
    /// Turns to prepare a large frame on the blocking pool.
    preparing: Arc<Semaphore>,
    /// Room for frames waiting for the engine, in KiB
    /// ([`NodeConfig::queued_limit_kib`]).
    queued: Arc<Semaphore>,
    /// The size of that room.
    queued_limit: u32,
    /// Turns true once the engine thread has ended and dropped the store.
    stopped: tokio::sync::watch::Receiver<bool>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("device", &self.device)
            .finish()
    }
}

impl Node {
    /// Starts the engine on its own thread. The store is the engine's from
    /// now on: reach it through [`Node::with_engine`].
    pub fn start(store: Store, cfg: NodeConfig) -> Result<Self, std::io::Error> {
        let device = store.device().id();
        let hq = cfg.hq;
        let queued_limit = cfg.queued_limit_kib.max(1);
        let (inbox, rx) = mpsc::channel(INBOX);
        let (events, _) = broadcast::channel(EVENTS);
        let engine = Engine::new(Arc::new(store), cfg, events.clone());
        let (stopped_tx, stopped) = tokio::sync::watch::channel(false);
        std::thread::Builder::new()
            .name("fieldsync-engine".into())
            .spawn(move || {
                // The engine, and with it the store, is dropped when `run` returns.
                engine.run(rx);
                let _ = stopped_tx.send(true);
            })?;
        Ok(Self {
            inbox,
            events,
            next_conn: Arc::new(AtomicU64::new(1)),
            device,
            hq,
            preparing: Arc::new(Semaphore::new(prepare_slots())),
            queued: Arc::new(Semaphore::new(queued_limit as usize)),
            queued_limit,
            stopped,
        })
    }

    /// This node's device id.
    pub fn device(&self) -> DeviceId {
        self.device
    }

    /// KiB of frames read and prepared that wait for the engine now, over
    /// all connections; at most [`NodeConfig::queued_limit_kib`].
    pub fn queued_kib(&self) -> u32 {
        let free = u32::try_from(self.queued.available_permits()).unwrap_or(u32::MAX);
        self.queued_limit.saturating_sub(free)
    }

    /// Events of every connection from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.events.subscribe()
    }

    /// Runs `job` on the engine thread, with the store and the sessions in
    /// hand, and returns what it returns.
    pub async fn with_engine<R: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Engine) -> R + Send + 'static,
    ) -> Result<R, NodeStopped> {
        let (tx, rx) = oneshot::channel();
        self.inbox
            .send(Cmd::Run(Box::new(move |engine| {
                let _ = tx.send(job(engine));
            })))
            .await
            .map_err(|_| NodeStopped)?;
        rx.await.map_err(|_| NodeStopped)
    }

    /// Stops the engine: what is stored is flushed, every session is
    /// closed (its peer is told), and the store is closed; returns once the
    /// engine thread has ended, so a process may exit right after.
    pub async fn shutdown(&self) {
        let _ = self.inbox.send(Cmd::Shutdown).await;
        let mut stopped = self.stopped.clone();
        let _ = stopped.wait_for(|s| *s).await;
    }

    /// Runs a session over `conn` until it ends: the peer is the key the
    /// transport authenticated; the session checks its certificate. In
    /// [`Mode::UntilSynced`] the session closes once both logs are exchanged
    /// and acknowledged. The outcome counts the session bytes each way.
    pub async fn run_connection(&self, conn: Connection, mode: Mode) -> ConnOutcome {
        let id: ConnId = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let peer = conn.peer_device();
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let (done_tx, mut done_rx) = oneshot::channel();
        let (reader, writer) = conn.into_split();
        let stopped = ConnOutcome {
            peer,
            synced: false,
            error: Some("the node has shut down".into()),
            bytes_sent: 0,
            bytes_received: 0,
        };
        let open = Cmd::Open {
            id,
            peer,
            mode,
            out: out_tx,
            done: done_tx,
        };
        if self.inbox.send(open).await.is_err() {
            return stopped;
        }
        tracing::debug!(conn = id, peer = %peer.short(), "session opened");
        let sent = Arc::new(AtomicU64::new(0));
        let received = AtomicU64::new(0);
        let writing = tokio::spawn(write_loop(writer, out_rx, Arc::clone(&sent)));
        let reading = read_loop(
            reader,
            id,
            &self.inbox,
            &received,
            self.hq,
            (&self.preparing, &self.queued, self.queued_limit),
        );
        tokio::pin!(reading);
        let mut outcome = None;
        let read_result = tokio::select! {
            r = &mut reading => r,
            o = &mut done_rx => {
                // Our session is over; the peer gets a moment to finish its side.
                outcome = o.ok();
                timeout(CLOSE_GRACE, &mut reading).await.unwrap_or(Ok(()))
            }
        };
        let reason = read_result.err().map(|e| e.to_string());
        let _ = self.inbox.send(Cmd::Gone { id, reason }).await;
        let mut outcome = match outcome {
            Some(o) => o,
            None => done_rx.await.unwrap_or(stopped),
        };
        if let Ok(Some(writer)) = writing.await {
            writer.close(0, "session over").await;
        }
        outcome.bytes_sent = sent.load(Ordering::Relaxed);
        outcome.bytes_received = received.load(Ordering::Relaxed);
        tracing::debug!(conn = id, peer = %peer.short(), ?outcome, "session ended");
        outcome
    }
}

/// Reads frames and hands them to the engine, decoded and their signatures
/// checked ([`Inbound`]), until the peer finishes or the connection fails,
/// counting the bytes in `received`. Each frame takes room in `queued`
/// until the engine has handled it; a reader that finds no room hands over
/// what it has prepared, then waits (holding none while it waits).
async fn read_loop(
    mut reader: SessionReader,
    id: ConnId,
    inbox: &mpsc::Sender<Cmd>,
    received: &AtomicU64,
    hq: PublicKey,
    (preparing, queued, limit): (&Semaphore, &Arc<Semaphore>, u32),
) -> Result<(), TransportError> {
    let mut decoder = FrameDecoder::new();
    let mut broken = false;
    let mut frames = Vec::new();
    let mut room: Option<OwnedSemaphorePermit> = None;
    loop {
        // No buffer of our own while idle: the transport hands over what came.
        let Some(bytes) = reader.read_some(READ_CHUNK).await? else {
            return Ok(());
        };
        received.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        if broken {
            continue; // the session ended at a bad frame; the rest is dropped
        }
        decoder.push(&bytes);
        loop {
            let frame = match decoder.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    frames.push(Inbound::from(e));
                    broken = true;
                    break;
                }
            };
            let kib = u32::try_from(frame.len().div_ceil(1024))
                .unwrap_or(limit)
                .clamp(1, limit);
            let permit = match Arc::clone(queued).try_acquire_many_owned(kib) {
                Ok(p) => p,
                Err(_) => {
                    if !hand_over(inbox, id, &mut frames, &mut room).await {
                        return Ok(()); // the engine stopped
                    }
                    match Arc::clone(queued).acquire_many_owned(kib).await {
                        Ok(p) => p,
                        Err(_) => return Ok(()), // never closed
                    }
                }
            };
            match room.as_mut() {
                Some(r) => r.merge(permit),
                None => room = Some(permit),
            }
            frames.push(prepare(frame, hq, preparing).await);
        }
        if !hand_over(inbox, id, &mut frames, &mut room).await {
            return Ok(()); // the engine stopped
        }
    }
}

/// Sends the engine the frames prepared so far with the room they take;
/// false when the engine has stopped.
async fn hand_over(
    inbox: &mpsc::Sender<Cmd>,
    id: ConnId,
    frames: &mut Vec<Inbound>,
    room: &mut Option<OwnedSemaphorePermit>,
) -> bool {
    if frames.is_empty() {
        return true;
    }
    let cmd = Cmd::Input {
        id,
        frames: std::mem::take(frames),
        room: room.take(),
    };
    inbox.send(cmd).await.is_ok()
}

/// Decodes a frame and checks its signatures; a long one on the blocking
/// pool, when its turn comes.
async fn prepare(frame: Vec<u8>, hq: PublicKey, preparing: &Semaphore) -> Inbound {
    if frame.len() < PREPARE_APART {
        return Inbound::decode(&frame, &hq);
    }
    let Ok(_turn) = preparing.acquire().await else {
        return Inbound::decode(&frame, &hq); // never closed
    };
    let frame = Arc::new(frame);
    let apart = Arc::clone(&frame);
    match tokio::task::spawn_blocking(move || Inbound::decode(&apart, &hq)).await {
        Ok(inbound) => inbound,
        // The pool is shutting down: do it here.
        Err(_) => Inbound::decode(&frame, &hq),
    }
}

/// Writes what the engine sends until it says the session is over, then
/// finishes the stream so the peer reads everything before the end. Bytes
/// written are counted in `sent`.
async fn write_loop(
    mut writer: SessionWriter,
    mut out: mpsc::UnboundedReceiver<Out>,
    sent: Arc<AtomicU64>,
) -> Option<SessionWriter> {
    while let Some(msg) = out.recv().await {
        match msg {
            Out::Frame(bytes) => {
                if let Err(e) = writer.write_all(&bytes).await {
                    tracing::debug!(error = %e, "write failed; the connection is gone");
                    return None;
                }
                sent.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            }
            Out::Close => break,
        }
    }
    let _ = writer.flush().await;
    if let Err(e) = timeout(CLOSE_GRACE, writer.finish()).await {
        tracing::debug!(error = %e, "the peer did not take the end of the stream in time");
    }
    Some(writer)
}
