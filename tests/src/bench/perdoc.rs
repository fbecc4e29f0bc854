//! The baseline every network scenario is compared with: Automerge's
//! per-document sync protocol (`automerge::sync`), one fresh sync state per
//! document (as automerge-repo and samod start on every new connection),
//! pipelined over one FieldSync QUIC connection: each round the client sends
//! every document's message and an end-of-round marker, the server applies
//! them and answers with its own messages and a marker; done when a whole
//! round carries no message either way.
//!
//! A frame is the document's index (4 bytes, big-endian) then the encoded
//! sync message; the marker is an empty frame. Bytes are counted as the
//! FieldSync session counts its own: frames with their 4-byte length
//! prefixes, QUIC and TLS overhead not counted.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use automerge::AutoCommit;
use automerge::sync::{Message, State, SyncDoc};
use fieldsync_transport::{Connection, Listener};

/// What one per-document sync cost, seen from the client.
#[derive(Debug, Default, Clone, Copy)]
pub struct Cost {
    /// Session bytes client → server.
    pub up: u64,
    /// Session bytes server → client.
    pub down: u64,
    /// Client → server → client exchanges, the last (empty) one included.
    pub rounds: usize,
    /// From the first message to the end of the last round (the caller adds
    /// the connection's set-up when it times the handshake too).
    pub wall: Duration,
}

impl Cost {
    /// Bytes both ways.
    pub fn total(&self) -> u64 {
        self.up + self.down
    }
}

fn frame(i: usize, m: Message) -> Result<Vec<u8>> {
    let mut f = u32::try_from(i)?.to_be_bytes().to_vec();
    f.extend_from_slice(&m.encode());
    Ok(f)
}

fn parse(f: &[u8], docs: usize) -> Result<(usize, Message)> {
    if f.len() < 4 {
        bail!("a per-document frame of {} bytes", f.len());
    }
    let (idx, msg) = f.split_at(4);
    let i = u32::from_be_bytes([idx[0], idx[1], idx[2], idx[3]]) as usize;
    if i >= docs {
        bail!("document index {i} of {docs}");
    }
    Ok((i, Message::decode(msg).context("decoding a sync message")?))
}

/// The server: accepts one connection on `listener` and syncs `docs` with
/// its client round by round; returns its documents once the client
/// finishes its stream.
pub async fn serve(listener: Listener, mut docs: Vec<AutoCommit>) -> Result<Vec<AutoCommit>> {
    let mut conn = listener.accept().await?;
    let mut states: Vec<State> = (0..docs.len()).map(|_| State::new()).collect();
    loop {
        loop {
            let Some(f) = conn.read_frame().await? else {
                conn.close(0, "done").await;
                return Ok(docs);
            };
            if f.is_empty() {
                break;
            }
            let (i, m) = parse(&f, docs.len())?;
            docs[i].sync().receive_sync_message(&mut states[i], m)?;
        }
        for (i, (doc, state)) in docs.iter_mut().zip(states.iter_mut()).enumerate() {
            if let Some(m) = doc.sync().generate_sync_message(state) {
                conn.write_frame(&frame(i, m)?).await?;
            }
        }
        conn.write_frame(&[]).await?;
    }
}

/// The client: syncs `docs` with the server at the other end of `conn`;
/// returns the cost and its documents.
pub async fn sync(
    mut conn: Connection,
    mut docs: Vec<AutoCommit>,
) -> Result<(Cost, Vec<AutoCommit>)> {
    let mut c = Cost::default();
    let started = Instant::now();
    let mut states: Vec<State> = (0..docs.len()).map(|_| State::new()).collect();
    loop {
        c.rounds += 1;
        let mut sent = 0;
        for (i, (doc, state)) in docs.iter_mut().zip(states.iter_mut()).enumerate() {
            if let Some(m) = doc.sync().generate_sync_message(state) {
                let f = frame(i, m)?;
                c.up += f.len() as u64 + 4;
                conn.write_frame(&f).await?;
                sent += 1;
            }
        }
        conn.write_frame(&[]).await?;
        c.up += 4;
        let mut got = 0;
        loop {
            let f = conn
                .read_frame()
                .await?
                .context("the server ended the stream mid-round")?;
            c.down += f.len() as u64 + 4;
            if f.is_empty() {
                break;
            }
            let (i, m) = parse(&f, docs.len())?;
            docs[i].sync().receive_sync_message(&mut states[i], m)?;
            got += 1;
        }
        if sent == 0 && got == 0 {
            break;
        }
    }
    c.wall = started.elapsed();
    // The sync is complete; the end of the stream only lets the server
    // return its documents. Bounded: on a lossy link the server's side of
    // the goodbye can be lost, and nothing would answer any more.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), conn.finish()).await;
    conn.close(0, "done").await;
    Ok((c, docs))
}

/// Whether every pair of documents has the same heads.
pub fn converged(a: &mut [AutoCommit], b: &mut [AutoCommit]) -> bool {
    a.len() == b.len()
        && a.iter_mut()
            .zip(b.iter_mut())
            .all(|(x, y)| x.get_heads() == y.get_heads())
}
