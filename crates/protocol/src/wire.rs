//! Wire format: length-prefixed frames carrying versioned, typed messages.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes; a
//! frame holds one message: a one-byte type tag and a postcard body. Every
//! size has a hard limit, and every decoder returns an error, never panics.

use fieldsync_identity::MAX_WIPE_ORDER_LEN;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The protocol version this build speaks. Version 2 added
/// [`Message::Relayed`], version 3 [`Message::WipeOrder`], version 4
/// deflated batches ([`encode_batch_deflated`]); each is sent only to peers
/// that speak it.
pub const PROTOCOL_VERSION: u16 = 4;
/// The first protocol version with [`Message::Relayed`].
pub const RELAYED_SINCE: u16 = 2;
/// The first protocol version with [`Message::WipeOrder`].
pub const WIPE_ORDERS_SINCE: u16 = 3;
/// The first protocol version that accepts deflated batches.
pub const DEFLATED_BATCHES_SINCE: u16 = 4;
/// The oldest protocol version this build accepts from a peer.
pub const MIN_PROTOCOL_VERSION: u16 = 1;
/// Largest frame accepted or sent, in bytes (length prefix excluded).
pub const MAX_FRAME_LEN: usize = 4 << 20;
/// Most changes in one batch.
pub const MAX_BATCH_CHANGES: usize = 512;
/// Most bytes of change envelopes, geneses and certificates in one batch.
pub const MAX_BATCH_BYTES: usize = 1 << 20;
/// Most bytes of free text in a `Close` message.
pub const MAX_REASON_LEN: usize = 1024;

/// A position in a node's log: its epoch and a sequence number.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireCursor {
    /// The log's epoch (a new epoch means a new log: a restored or wiped node).
    pub epoch: [u8; 16],
    /// The last sequence number held.
    pub seq: u64,
}

/// What a node is, as it says in its `Hello` (its certificate must agree).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeRole {
    /// A field device: laptop or handheld.
    Device,
    /// A relay: headquarters or an office.
    Relay,
}

/// The first message of each side.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The version the sender speaks.
    pub version: u16,
    /// The oldest version the sender accepts.
    pub min_version: u16,
    /// What the sender is.
    pub role: NodeRole,
    /// The sender's headquarters-signed certificate.
    pub certificate: Vec<u8>,
    /// The sender's log epoch.
    pub epoch: [u8; 16],
    /// The last sequence number of the sender's log.
    pub head: u64,
    /// Where the sender stands in the receiver's log (`None`: never synced).
    pub want: Option<WireCursor>,
    /// Sequence number of the revocation list the sender holds (0: none).
    pub revocations: u64,
}

/// Part of the sender's log, as the receiver may read it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct Batch {
    /// Certificates of authors the receiver has not been sent in this session.
    pub certificates: Vec<Vec<u8>>,
    /// Signed genesis records of the cases the changes belong to.
    pub geneses: Vec<Vec<u8>>,
    /// Signed change envelopes, in the sender's log order.
    pub changes: Vec<Vec<u8>>,
    /// The sender's log position this batch brings the receiver to.
    pub through: u64,
    /// Signed quarantine releases of changes in this batch that failed
    /// authorization somewhere and were let through by a supervisor or
    /// headquarters.
    pub releases: Vec<Vec<u8>>,
}

/// The receiver durably holds the sender's log through `through`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// The sender's log position acknowledged.
    pub through: u64,
    /// A relay's signed receipt for it (relays send one unless every batch
    /// acknowledged carried nothing, to a peer of version 2 or later).
    pub receipt: Option<Vec<u8>>,
}

/// Why a session ends.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCode {
    /// Normal end.
    Done,
    /// The peer speaks an unsupported version.
    Version,
    /// The peer's certificate was refused.
    Certificate,
    /// The peer sent a malformed frame or message.
    Protocol,
    /// The peer sent a change with a bad signature.
    Forgery,
    /// The receiver could not store what it was sent.
    Storage,
    /// The peer exceeded a limit.
    Limit,
}

/// Number of buckets in a repair digest.
pub const REPAIR_BUCKETS: usize = 64;
/// Most cases listed in one `RepairHeads` message.
pub const MAX_REPAIR_CASES: usize = 65_536;

/// The sender's per-case heads, summarized: case ids fall into
/// [`REPAIR_BUCKETS`] buckets by their first byte; each bucket's digest is a
/// hash over its cases and their heads. Equal sets cost a few hundred bytes.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RepairDigest {
    /// One 8-byte digest per bucket.
    pub buckets: Vec<[u8; 8]>,
    /// The sender's log head when the repair started.
    pub head: u64,
}

/// The receiver's heads for every case in the buckets that differ.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct RepairHeads {
    /// Indices of the buckets whose digests differ.
    pub differing: Vec<u8>,
    /// (case id, its heads) for the receiver's cases in those buckets.
    pub cases: Vec<([u8; 16], Vec<[u8; 32]>)>,
}

/// Every message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// The opening message of each side.
    Hello(Hello),
    /// Part of the sender's log.
    Batch(Batch),
    /// Acknowledgement (with a receipt, from a relay).
    Ack(Ack),
    /// The sender has sent its whole log up to `head`; new changes follow live.
    CaughtUp {
        /// The sender's log head.
        head: u64,
    },
    /// A headquarters-signed revocation list.
    Revocations(Vec<u8>),
    /// Repair: the sender's per-case heads, bucketed (its log is new to the receiver).
    RepairDigest(RepairDigest),
    /// Repair: the receiver's heads of the cases in differing buckets.
    RepairHeads(RepairHeads),
    /// Repair: the sender's heads of cases where the receiver holds changes
    /// the sender does not know.
    RepairOffer(RepairHeads),
    /// Repair: for each offered case whose heads it does not all hold, every
    /// change hash the receiver holds of it.
    RepairNeed(RepairHeads),
    /// A receipt of the relay above the sender (headquarters), carried
    /// down: a signed `RelayedReceiptBody` saying how far it covers the
    /// receiver's log. Only relays send it, only to devices (protocol
    /// version 2 and later).
    Relayed(Vec<u8>),
    /// A headquarters-signed wipe order (`fieldsync_identity::WipeOrder`).
    /// Only relays send it: to a device, only that device's order; to a
    /// relay, every order they hold (protocol version 3 and later).
    WipeOrder(Vec<u8>),
    /// The sender ends the session.
    Close {
        /// Why.
        code: CloseCode,
        /// Details for a person.
        reason: String,
    },
}

/// A frame or message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum WireError {
    /// A frame announced more bytes than allowed.
    #[error("frame of {len} bytes exceeds the limit of {limit}")]
    FrameTooLarge {
        /// The announced length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The frame is empty.
    #[error("empty frame")]
    Empty,
    /// The type tag is not one this version knows.
    #[error("unknown message type {0}")]
    UnknownType(u8),
    /// The body does not decode.
    #[error("malformed {what} message: {detail}")]
    Malformed {
        /// The message type.
        what: &'static str,
        /// The decoder's error.
        detail: String,
    },
    /// A batch exceeds its limits.
    #[error("batch exceeds its limits ({changes} changes, {bytes} bytes)")]
    BatchTooLarge {
        /// Number of changes.
        changes: usize,
        /// Bytes carried.
        bytes: usize,
    },
}

const T_HELLO: u8 = 1;
const T_BATCH: u8 = 2;
const T_ACK: u8 = 3;
const T_CAUGHT_UP: u8 = 4;
const T_REVOCATIONS: u8 = 5;
const T_CLOSE: u8 = 6;
const T_REPAIR_DIGEST: u8 = 7;
const T_REPAIR_HEADS: u8 = 8;
const T_REPAIR_OFFER: u8 = 9;
const T_REPAIR_NEED: u8 = 10;
const T_RELAYED: u8 = 11;
const T_WIPE_ORDER: u8 = 12;
const T_BATCH_DEFLATED: u8 = 13;

/// Deflate level for batches: the fastest (level 1 gives nearly all of
/// the gain on signed changes: ~0.30 of their size for a 512-change batch
/// against ~0.29 at level 9).
const DEFLATE_LEVEL: u32 = 1;

/// A batch, encoded deflated when that is smaller: a message of its own
/// type (decoded by [`Message::decode`] as a plain [`Message::Batch`]),
/// for peers of protocol version [`DEFLATED_BATCHES_SINCE`] and later.
/// Signed changes compress well together (the same signer, actor, case and
/// field names recur); signatures do not, and stay whole inside.
pub fn encode_batch_deflated(b: &Batch) -> Vec<u8> {
    let plain = body(T_BATCH, b);
    let mut out = vec![T_BATCH_DEFLATED];
    let mut z = flate2::write::DeflateEncoder::new(out, flate2::Compression::new(DEFLATE_LEVEL));
    // Writing into a Vec cannot fail.
    if std::io::Write::write_all(&mut z, &plain[1..]).is_err() {
        return plain;
    }
    out = match z.finish() {
        Ok(o) => o,
        Err(_) => return plain,
    };
    if out.len() < plain.len() { out } else { plain }
}

/// Inflates a deflated batch body, refusing one that inflates beyond
/// [`MAX_FRAME_LEN`] (a small frame must not become a large allocation).
fn inflate_batch(bytes: &[u8]) -> Result<Vec<u8>, WireError> {
    use std::io::Read as _;
    let mut out = Vec::with_capacity(bytes.len().saturating_mul(4).min(MAX_FRAME_LEN));
    let limit = MAX_FRAME_LEN as u64 + 1;
    flate2::read::DeflateDecoder::new(bytes)
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| WireError::Malformed {
            what: "deflated batch",
            detail: e.to_string(),
        })?;
    if out.len() > MAX_FRAME_LEN {
        return Err(WireError::Malformed {
            what: "deflated batch",
            detail: format!("inflates beyond {MAX_FRAME_LEN} bytes"),
        });
    }
    Ok(out)
}

#[derive(Serialize, Deserialize)]
struct CloseBody {
    code: CloseCode,
    reason: String,
}

impl Batch {
    /// Whether the batch carries nothing but a new position (it moves the
    /// receiver's cursor past entries it may not read or sent itself).
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
            && self.geneses.is_empty()
            && self.certificates.is_empty()
            && self.releases.is_empty()
    }

    /// Bytes of payload the batch carries.
    pub fn payload_len(&self) -> usize {
        self.certificates
            .iter()
            .chain(&self.geneses)
            .chain(&self.changes)
            .chain(&self.releases)
            .map(Vec::len)
            .sum()
    }

    fn check(&self) -> Result<(), WireError> {
        let bytes = self.payload_len();
        let items = self
            .changes
            .len()
            .max(self.geneses.len())
            .max(self.certificates.len())
            .max(self.releases.len());
        if items > MAX_BATCH_CHANGES || bytes > MAX_BATCH_BYTES {
            return Err(WireError::BatchTooLarge {
                changes: self.changes.len(),
                bytes,
            });
        }
        Ok(())
    }
}

fn body<T: Serialize>(tag: u8, value: &T) -> Vec<u8> {
    let mut out = vec![tag];
    // Serializing these plain structs into a Vec cannot fail.
    if let Ok(bytes) = postcard::to_stdvec(value) {
        out.extend_from_slice(&bytes);
    }
    out
}

fn parse<T: for<'de> Deserialize<'de>>(what: &'static str, bytes: &[u8]) -> Result<T, WireError> {
    let (value, rest) = postcard::take_from_bytes(bytes).map_err(|e| WireError::Malformed {
        what,
        detail: e.to_string(),
    })?;
    if !rest.is_empty() {
        return Err(WireError::Malformed {
            what,
            detail: format!("{} trailing bytes", rest.len()),
        });
    }
    Ok(value)
}

fn repair_heads(what: &'static str, bytes: &[u8]) -> Result<RepairHeads, WireError> {
    let h: RepairHeads = parse(what, bytes)?;
    if h.cases.len() > MAX_REPAIR_CASES {
        return Err(WireError::Malformed {
            what,
            detail: format!("{} cases (limit {MAX_REPAIR_CASES})", h.cases.len()),
        });
    }
    Ok(h)
}

impl Message {
    /// Encodes the message (without the frame's length prefix).
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Message::Hello(h) => body(T_HELLO, h),
            Message::Batch(b) => body(T_BATCH, b),
            Message::Ack(a) => body(T_ACK, a),
            Message::CaughtUp { head } => body(T_CAUGHT_UP, head),
            Message::Revocations(r) => body(T_REVOCATIONS, r),
            Message::RepairDigest(d) => body(T_REPAIR_DIGEST, d),
            Message::RepairHeads(h) => body(T_REPAIR_HEADS, h),
            Message::RepairOffer(h) => body(T_REPAIR_OFFER, h),
            Message::RepairNeed(h) => body(T_REPAIR_NEED, h),
            Message::Relayed(r) => body(T_RELAYED, r),
            Message::WipeOrder(o) => body(T_WIPE_ORDER, o),
            Message::Close { code, reason } => {
                let mut reason = reason.clone();
                if reason.len() > MAX_REASON_LEN {
                    let mut cut = MAX_REASON_LEN;
                    while !reason.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    reason.truncate(cut);
                }
                body(
                    T_CLOSE,
                    &CloseBody {
                        code: *code,
                        reason,
                    },
                )
            }
        }
    }

    /// Decodes one message (a frame's contents).
    pub fn decode(bytes: &[u8]) -> Result<Message, WireError> {
        let (&tag, rest) = bytes.split_first().ok_or(WireError::Empty)?;
        let msg = match tag {
            T_HELLO => Message::Hello(parse("hello", rest)?),
            T_BATCH => {
                let b: Batch = parse("batch", rest)?;
                b.check()?;
                Message::Batch(b)
            }
            T_BATCH_DEFLATED => {
                let b: Batch = parse("batch", &inflate_batch(rest)?)?;
                b.check()?;
                Message::Batch(b)
            }
            T_ACK => Message::Ack(parse("ack", rest)?),
            T_CAUGHT_UP => Message::CaughtUp {
                head: parse("caught-up", rest)?,
            },
            T_REVOCATIONS => Message::Revocations(parse("revocations", rest)?),
            T_REPAIR_DIGEST => {
                let d: RepairDigest = parse("repair digest", rest)?;
                if d.buckets.len() != REPAIR_BUCKETS {
                    return Err(WireError::Malformed {
                        what: "repair digest",
                        detail: format!("{} buckets, expected {REPAIR_BUCKETS}", d.buckets.len()),
                    });
                }
                Message::RepairDigest(d)
            }
            T_REPAIR_HEADS => Message::RepairHeads(repair_heads("repair heads", rest)?),
            T_REPAIR_OFFER => Message::RepairOffer(repair_heads("repair offer", rest)?),
            T_REPAIR_NEED => Message::RepairNeed(repair_heads("repair need", rest)?),
            T_RELAYED => Message::Relayed(parse("relayed receipt", rest)?),
            T_WIPE_ORDER => {
                let order: Vec<u8> = parse("wipe order", rest)?;
                if order.len() > MAX_WIPE_ORDER_LEN {
                    return Err(WireError::Malformed {
                        what: "wipe order",
                        detail: format!("{} bytes (limit {MAX_WIPE_ORDER_LEN})", order.len()),
                    });
                }
                Message::WipeOrder(order)
            }
            T_CLOSE => {
                let c: CloseBody = parse("close", rest)?;
                if c.reason.len() > MAX_REASON_LEN {
                    return Err(WireError::Malformed {
                        what: "close",
                        detail: "reason too long".into(),
                    });
                }
                Message::Close {
                    code: c.code,
                    reason: c.reason,
                }
            }
            other => return Err(WireError::UnknownType(other)),
        };
        Ok(msg)
    }

    /// Encodes the message as a complete frame (length prefix included).
    pub fn to_frame(&self) -> Vec<u8> {
        let body = self.encode();
        let mut out = Vec::with_capacity(body.len() + 4);
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }
}

/// Splits a byte stream into frames, holding at most one partial frame.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
}

impl FrameDecoder {
    /// A decoder with nothing buffered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete frame, if one has arrived. An oversized length
    /// prefix is an error as soon as it is seen (before its bytes arrive).
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, WireError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len > MAX_FRAME_LEN {
            return Err(WireError::FrameTooLarge {
                len,
                limit: MAX_FRAME_LEN,
            });
        }
        if len == 0 {
            return Err(WireError::Empty);
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let frame = self.buf[4..4 + len].to_vec();
        self.buf.drain(..4 + len);
        if self.buf.is_empty() && self.buf.capacity() > 4096 {
            // An idle session keeps no large buffer from its last batch.
            self.buf = Vec::new();
        }
        Ok(Some(frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn samples() -> Vec<Message> {
        vec![
            Message::Hello(Hello {
                version: PROTOCOL_VERSION,
                min_version: MIN_PROTOCOL_VERSION,
                role: NodeRole::Device,
                certificate: vec![1, 2, 3],
                epoch: [7; 16],
                head: 42,
                want: Some(WireCursor {
                    epoch: [1; 16],
                    seq: 9,
                }),
                revocations: 3,
            }),
            Message::Batch(Batch {
                certificates: vec![vec![9; 10]],
                geneses: vec![vec![1; 20]],
                changes: vec![vec![2; 300], vec![3; 200]],
                through: 77,
                releases: vec![vec![4; 120]],
            }),
            Message::Ack(Ack {
                through: 77,
                receipt: Some(vec![5; 100]),
            }),
            Message::CaughtUp { head: 77 },
            Message::Revocations(vec![8; 50]),
            Message::RepairDigest(RepairDigest {
                buckets: vec![[3; 8]; REPAIR_BUCKETS],
                head: 9,
            }),
            Message::RepairHeads(RepairHeads {
                differing: vec![1, 5],
                cases: vec![([1; 16], vec![[2; 32]])],
            }),
            Message::RepairOffer(RepairHeads {
                differing: vec![],
                cases: vec![([3; 16], vec![[4; 32]])],
            }),
            Message::RepairNeed(RepairHeads {
                differing: vec![],
                cases: vec![([3; 16], vec![[5; 32]; 3])],
            }),
            Message::Relayed(vec![9; 40]),
            Message::WipeOrder(vec![6; 250]),
            Message::Close {
                code: CloseCode::Forgery,
                reason: "bad signature".into(),
            },
        ]
    }

    fn compressible_batch() -> Batch {
        let change: Vec<u8> = b"note: vehicle seen at the north gate; ".repeat(8);
        Batch {
            certificates: vec![vec![9; 10]],
            geneses: vec![vec![1; 20]],
            changes: vec![change; 40],
            through: 77,
            releases: vec![],
        }
    }

    #[test]
    fn a_deflated_batch_decodes_as_the_same_batch_and_is_smaller() {
        let b = compressible_batch();
        let plain = Message::Batch(b.clone()).encode();
        let deflated = encode_batch_deflated(&b);
        assert_eq!(deflated[0], T_BATCH_DEFLATED);
        assert!(
            deflated.len() * 4 < plain.len(),
            "{} vs {}",
            deflated.len(),
            plain.len()
        );
        assert_eq!(Message::decode(&deflated).unwrap(), Message::Batch(b));
    }

    #[test]
    fn a_batch_that_does_not_compress_is_sent_plain() {
        // Random-looking bytes (a keyed hash stream) do not deflate.
        let mut noise = Vec::new();
        let mut x = blake3::hash(b"seed");
        while noise.len() < 2000 {
            noise.extend_from_slice(x.as_bytes());
            x = blake3::hash(x.as_bytes());
        }
        let b = Batch {
            changes: vec![noise],
            through: 1,
            ..Batch::default()
        };
        let encoded = encode_batch_deflated(&b);
        assert_eq!(encoded, Message::Batch(b).encode());
    }

    #[test]
    fn a_deflated_batch_inflating_beyond_the_frame_limit_is_refused() {
        // 5 MiB of zeros deflate to a few kilobytes.
        let mut z =
            flate2::write::DeflateEncoder::new(vec![T_BATCH_DEFLATED], flate2::Compression::best());
        std::io::Write::write_all(&mut z, &vec![0u8; 5 << 20]).unwrap();
        let bomb = z.finish().unwrap();
        assert!(bomb.len() < 64 << 10);
        let err = Message::decode(&bomb).unwrap_err();
        assert!(
            matches!(&err, WireError::Malformed { what: "deflated batch", detail } if detail.contains("inflates beyond")),
            "{err:?}"
        );
    }

    #[test]
    fn a_deflated_batch_that_is_not_deflate_is_malformed() {
        let err = Message::decode(&[T_BATCH_DEFLATED, 0xff, 0xfe, 0x00]).unwrap_err();
        assert!(
            matches!(
                err,
                WireError::Malformed {
                    what: "deflated batch",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn a_deflated_batch_over_the_batch_limits_is_refused() {
        let b = Batch {
            changes: vec![vec![1; 10]; MAX_BATCH_CHANGES + 1],
            through: 1,
            ..Batch::default()
        };
        let err = Message::decode(&encode_batch_deflated(&b)).unwrap_err();
        assert!(matches!(err, WireError::BatchTooLarge { .. }), "{err:?}");
    }

    #[test]
    fn messages_round_trip_through_frames() {
        let mut dec = FrameDecoder::new();
        let all: Vec<u8> = samples().iter().flat_map(Message::to_frame).collect();
        // Delivered one byte at a time.
        let mut out = Vec::new();
        for b in all {
            dec.push(&[b]);
            while let Some(f) = dec.next_frame().unwrap() {
                out.push(Message::decode(&f).unwrap());
            }
        }
        assert_eq!(out, samples());
        assert_eq!(dec.buffered(), 0);
    }

    #[test]
    fn limits_and_garbage_are_named_errors() {
        let mut dec = FrameDecoder::new();
        dec.push(&((MAX_FRAME_LEN as u32) + 1).to_be_bytes());
        assert!(matches!(
            dec.next_frame(),
            Err(WireError::FrameTooLarge { .. })
        ));
        assert_eq!(Message::decode(&[]), Err(WireError::Empty));
        assert_eq!(Message::decode(&[200]), Err(WireError::UnknownType(200)));
        assert!(matches!(
            Message::decode(&[T_HELLO, 1]),
            Err(WireError::Malformed { .. })
        ));
        let big = Batch {
            changes: vec![vec![0; 1]; MAX_BATCH_CHANGES + 1],
            ..Batch::default()
        };
        assert!(matches!(
            Message::decode(&Message::Batch(big).encode()),
            Err(WireError::BatchTooLarge { .. })
        ));
        let huge = Message::WipeOrder(vec![0; MAX_WIPE_ORDER_LEN + 1]).encode();
        assert!(matches!(
            Message::decode(&huge),
            Err(WireError::Malformed {
                what: "wipe order",
                ..
            })
        ));
        let mut trailing = Message::CaughtUp { head: 1 }.encode();
        trailing.push(0);
        assert!(matches!(
            Message::decode(&trailing),
            Err(WireError::Malformed { .. })
        ));
    }

    proptest! {
        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = Message::decode(&bytes);
            let mut dec = FrameDecoder::new();
            dec.push(&bytes);
            while let Ok(Some(f)) = dec.next_frame() {
                let _ = Message::decode(&f);
            }
        }

        #[test]
        fn mutated_messages_never_panic(i in 0usize..12, pos in any::<usize>(), byte in any::<u8>()) {
            let mut m = samples()[i].encode();
            let at = pos % m.len();
            m[at] = byte;
            let _ = Message::decode(&m);
        }
    }
}
