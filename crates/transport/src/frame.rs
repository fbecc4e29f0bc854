//! Frames: a `u32` big-endian length, then that many bytes, at most [`MAX_FRAME`].

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use crate::error::{TransportError, from_io};

/// The largest frame payload, 4 MiB.
pub const MAX_FRAME: usize = 4 * 1024 * 1024;

/// Payloads up to this size are written with their header in one write (one
/// TLS record, one QUIC stream write).
const COALESCE: usize = 16 * 1024;

/// Reads one frame.
///
/// Returns `Ok(None)` when the stream ends cleanly between frames,
/// [`TransportError::FrameTooLarge`] when the header announces more than
/// [`MAX_FRAME`] bytes (nothing more is read), and
/// [`TransportError::Truncated`] when the stream ends inside a frame. The
/// buffer grows as bytes arrive, so a lying header costs no 4 MiB up front.
pub async fn read_frame<R>(r: &mut R) -> Result<Option<Vec<u8>>, TransportError>
where
    R: AsyncRead + Unpin + ?Sized,
{
    let mut header = [0u8; 4];
    let mut got = 0;
    while got < header.len() {
        let n = match r.read(&mut header[got..]).await {
            Ok(n) => n,
            Err(e) if got == 0 => return Err(at_boundary(e)),
            Err(e) => return Err(mid_frame(e)),
        };
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(TransportError::Truncated)
            };
        }
        got += n;
    }
    let len = usize::try_from(u32::from_be_bytes(header)).unwrap_or(usize::MAX);
    if len > MAX_FRAME {
        return Err(TransportError::FrameTooLarge {
            len,
            max: MAX_FRAME,
        });
    }
    let mut body = Vec::with_capacity(len.min(64 * 1024));
    (&mut *r)
        .take(len as u64)
        .read_to_end(&mut body)
        .await
        .map_err(mid_frame)?;
    if body.len() < len {
        return Err(TransportError::Truncated);
    }
    Ok(Some(body))
}

/// Writes one frame and flushes.
///
/// Fails with [`TransportError::FrameTooLarge`] (writing nothing) when the
/// payload exceeds [`MAX_FRAME`].
pub async fn write_frame<W>(w: &mut W, payload: &[u8]) -> Result<(), TransportError>
where
    W: AsyncWrite + Unpin + ?Sized,
{
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|_| payload.len() <= MAX_FRAME)
        .ok_or(TransportError::FrameTooLarge {
            len: payload.len(),
            max: MAX_FRAME,
        })?;
    let header = len.to_be_bytes();
    if payload.len() <= COALESCE {
        let mut buf = Vec::with_capacity(header.len() + payload.len());
        buf.extend_from_slice(&header);
        buf.extend_from_slice(payload);
        w.write_all(&buf).await.map_err(from_io)?;
    } else {
        w.write_all(&header).await.map_err(from_io)?;
        w.write_all(payload).await.map_err(from_io)?;
    }
    w.flush().await.map_err(from_io)
}

/// An error before the first byte of a frame.
fn at_boundary(e: io::Error) -> TransportError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        // tokio-rustls: TCP ended without a TLS close_notify.
        TransportError::ConnectionLost("the connection ended without a TLS close_notify".to_owned())
    } else {
        from_io(e)
    }
}

/// An error after the first byte of a frame.
fn mid_frame(e: io::Error) -> TransportError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        TransportError::Truncated
    } else {
        from_io(e)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[tokio::test]
    async fn round_trip_and_clean_eof() {
        let mut wire = Vec::new();
        write_frame(&mut wire, b"hello").await.unwrap();
        write_frame(&mut wire, &[]).await.unwrap();
        write_frame(&mut wire, &vec![7u8; 100_000]).await.unwrap();
        let mut r = wire.as_slice();
        assert_eq!(read_frame(&mut r).await.unwrap().unwrap(), b"hello");
        assert_eq!(read_frame(&mut r).await.unwrap().unwrap(), b"");
        assert_eq!(read_frame(&mut r).await.unwrap().unwrap().len(), 100_000);
        assert!(read_frame(&mut r).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn limits() {
        let header = u32::try_from(MAX_FRAME + 1).unwrap().to_be_bytes();
        let mut r = header.as_slice();
        assert!(matches!(
            read_frame(&mut r).await,
            Err(TransportError::FrameTooLarge { len, max: MAX_FRAME }) if len == MAX_FRAME + 1
        ));
        let mut r = [0u8, 0].as_slice();
        assert!(matches!(
            read_frame(&mut r).await,
            Err(TransportError::Truncated)
        ));
        let mut r = [0u8, 0, 0, 5, b'a', b'b'].as_slice();
        assert!(matches!(
            read_frame(&mut r).await,
            Err(TransportError::Truncated)
        ));
        let mut sink = Vec::new();
        assert!(matches!(
            write_frame(&mut sink, &vec![0; MAX_FRAME + 1]).await,
            Err(TransportError::FrameTooLarge { .. })
        ));
        assert!(sink.is_empty());
        write_frame(&mut sink, &vec![0; MAX_FRAME]).await.unwrap();
        let mut r = sink.as_slice();
        assert_eq!(read_frame(&mut r).await.unwrap().unwrap().len(), MAX_FRAME);
    }
}
