//! Frame decoding, both layers: the sans-IO `FrameDecoder` of
//! `fieldsync-protocol` (bytes pushed in pieces) and `read_frame` of
//! `fieldsync-transport` (an async stream that delivers bytes in pieces,
//! returns `Pending` between some of them, and ends cleanly or with an
//! error). Both must agree with a reference reading of the stream, and
//! every frame read must re-encode to the exact bytes it came from.
//!
//! Input: `[piece sizes: 2 bytes][end: 1 byte][stream]`.
#![no_main]

use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};

use fieldsync_fuzz::check;
use fieldsync_protocol::{FrameDecoder, MAX_FRAME_LEN, Message, WireError};
use fieldsync_transport::{MAX_FRAME, TransportError, read_frame, write_frame};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, ReadBuf};

fuzz_target!(|data: &[u8]| check(|| run(data)));

/// How a stream ends after its last byte.
#[derive(Clone, Copy, Debug, PartialEq)]
enum End {
    /// A clean end of stream.
    Eof,
    /// An `UnexpectedEof` error (a TCP end without TLS close_notify).
    UnexpectedEof,
    /// Another I/O error.
    Broken,
}

/// The reference reading of a whole stream: its frames, then how it stops.
#[derive(Debug, PartialEq)]
enum Stop {
    /// Ended between frames.
    Between,
    /// Ended inside a header or a body.
    Inside,
    /// A header announced more than the limit.
    TooLarge(usize),
}

fn reference(stream: &[u8]) -> (Vec<&[u8]>, Stop) {
    let mut frames = Vec::new();
    let mut at = 0;
    loop {
        let rest = &stream[at..];
        if rest.is_empty() {
            return (frames, Stop::Between);
        }
        if rest.len() < 4 {
            return (frames, Stop::Inside);
        }
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len > MAX_FRAME {
            return (frames, Stop::TooLarge(len));
        }
        if rest.len() < 4 + len {
            return (frames, Stop::Inside);
        }
        frames.push(&rest[4..4 + len]);
        at += 4 + len;
    }
}

/// A stream that hands out `data` in pieces of 1..=`max` bytes (the sizes
/// follow `sizes`), returns `Pending` on every `pending`-th call (never
/// when `pending` < 2), and ends as `end` says.
struct Pieces<'a> {
    data: &'a [u8],
    sizes: u8,
    pending: u8,
    calls: u32,
    end: End,
}

impl AsyncRead for Pieces<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.calls += 1;
        if self.pending >= 2 && self.calls.is_multiple_of(u32::from(self.pending)) {
            return Poll::Pending;
        }
        if self.data.is_empty() {
            return Poll::Ready(match self.end {
                End::Eof => Ok(()),
                End::UnexpectedEof => Err(io::ErrorKind::UnexpectedEof.into()),
                End::Broken => Err(io::Error::other("link broken")),
            });
        }
        let size =
            1 + (self.calls as usize * 7 + usize::from(self.sizes)) % (usize::from(self.sizes) + 1);
        let n = size.min(self.data.len()).min(buf.remaining());
        let (head, tail) = self.data.split_at(n);
        buf.put_slice(head);
        self.data = tail;
        Poll::Ready(Ok(()))
    }
}

/// Polls a future that only ever waits on [`Pieces`] to completion.
fn block_on<F: Future>(f: F, budget: usize) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..budget {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
    panic!("a frame read did not finish within {budget} polls");
}

fn run(data: &[u8]) {
    assert_eq!(MAX_FRAME, MAX_FRAME_LEN, "the two frame limits differ");
    if data.len() < 3 {
        return;
    }
    let (sizes, pending, end) = (data[0], data[1] % 8, data[2]);
    let end = match end % 3 {
        0 => End::Eof,
        1 => End::UnexpectedEof,
        _ => End::Broken,
    };
    let stream = &data[3..];
    let (frames, stop) = reference(stream);

    // The sans-IO decoder, fed in pieces.
    let mut dec = FrameDecoder::new();
    let mut got: Vec<Vec<u8>> = Vec::new();
    let mut err = None;
    let step = usize::from(sizes % 64) + 1;
    'feed: for piece in stream.chunks(step) {
        dec.push(piece);
        loop {
            match dec.next_frame() {
                Ok(Some(f)) => {
                    // Every frame it yields decodes as a message or gives a named error.
                    if let Ok(m) = Message::decode(&f) {
                        assert_eq!(Message::decode(&m.encode()).as_ref(), Ok(&m));
                    }
                    got.push(f);
                }
                Ok(None) => break,
                Err(e) => {
                    err = Some(e);
                    break 'feed;
                }
            }
        }
    }
    // The decoder refuses an empty frame (no message is empty); the
    // transport passes it up.
    let first_empty = frames.iter().position(|f| f.is_empty());
    let expect_ok: Vec<&[u8]> = frames[..first_empty.unwrap_or(frames.len())].to_vec();
    assert_eq!(got, expect_ok, "FrameDecoder disagrees with the reference");
    match (&err, first_empty, &stop) {
        (Some(WireError::Empty), Some(_), _) => {}
        (Some(WireError::FrameTooLarge { len, limit }), None, Stop::TooLarge(l)) => {
            assert_eq!((*len, *limit), (*l, MAX_FRAME_LEN));
        }
        (None, None, Stop::Between) => assert_eq!(dec.buffered(), 0),
        (None, None, Stop::Inside) => assert!(dec.buffered() > 0),
        other => panic!("FrameDecoder ended with {other:?}"),
    }

    // The transport's reader, over a stream of pieces.
    let mut reader = Pieces {
        data: stream,
        sizes,
        pending,
        calls: 0,
        end,
    };
    let budget = 16 * (stream.len() + 8);
    let mut read: Vec<Vec<u8>> = Vec::new();
    let outcome = loop {
        match block_on(read_frame(&mut reader), budget) {
            Ok(Some(f)) => read.push(f),
            other => break other,
        }
    };
    assert_eq!(read, frames, "read_frame disagrees with the reference");
    match (outcome, &stop, end) {
        (Ok(None), Stop::Between, End::Eof) => {}
        (Err(TransportError::ConnectionLost(_)), Stop::Between, End::UnexpectedEof) => {}
        (Err(TransportError::Truncated), Stop::Inside, End::Eof | End::UnexpectedEof) => {}
        (Err(TransportError::FrameTooLarge { len, max }), Stop::TooLarge(l), _) => {
            assert_eq!((len, max), (*l, MAX_FRAME));
        }
        (Err(e), Stop::Between | Stop::Inside, End::Broken) => {
            assert!(!matches!(e, TransportError::Truncated), "{e}");
        }
        (other, stop, end) => panic!("read_frame ended with {other:?} at {stop:?}, {end:?}"),
    }

    // Writing the frames back gives the bytes they were read from.
    let mut written = Vec::new();
    for f in &read {
        let mut w: Vec<u8> = Vec::new();
        block_on(write_frame(&mut w, f), 64).unwrap_or_else(|e| panic!("write_frame: {e}"));
        written.extend_from_slice(&w);
    }
    assert_eq!(&written[..], &stream[..written.len()]);
}
