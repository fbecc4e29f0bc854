//! Listeners and connectors over a caller's own UDP socket: a wrapper that
//! counts what it sends, and can drop every n-th datagram or hold each for
//! a while, under both ends. Frames still arrive whole (QUIC resends what
//! the socket dropped), the listener's policy and limits apply as over its
//! own socket, and over a long link the first flight is as large as the
//! initial congestion window, with every congestion controller.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use common::*;
use fieldsync_transport::socket::{AsyncUdpSocket, RecvMeta, Transmit, UdpPoller, tokio_socket};
use fieldsync_transport::{
    Congestion, Connector, Kind, Listener, PeerPolicy, TransportError, TransportSettings,
};

/// Sends through an ordinary socket, counting datagrams and bytes, and
/// silently drops every `drop_every`-th datagram.
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn AsyncUdpSocket>,
    drop_every: u64,
    /// Held this long before it is sent (zero: sent at once).
    delay: Duration,
    datagrams: AtomicU64,
    bytes: AtomicU64,
    dropped: AtomicU64,
}

impl Counting {
    fn bind(drop_every: u64) -> Arc<Self> {
        Self::delayed(drop_every, Duration::ZERO)
    }

    fn delayed(drop_every: u64, delay: Duration) -> Arc<Self> {
        let std = std::net::UdpSocket::bind(loopback()).unwrap();
        Arc::new(Self {
            inner: tokio_socket(std).unwrap(),
            drop_every,
            delay,
            datagrams: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        })
    }

    fn datagrams(&self) -> u64 {
        self.datagrams.load(Ordering::SeqCst)
    }
}

impl AsyncUdpSocket for Counting {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        let n = self.datagrams.fetch_add(1, Ordering::SeqCst) + 1;
        self.bytes
            .fetch_add(transmit.contents.len() as u64, Ordering::SeqCst);
        if n.is_multiple_of(self.drop_every) {
            self.dropped.fetch_add(1, Ordering::SeqCst);
            return Ok(());
        }
        if self.delay.is_zero() {
            return self.inner.try_send(transmit);
        }
        let (inner, delay) = (self.inner.clone(), self.delay);
        let (destination, ecn, src_ip) = (transmit.destination, transmit.ecn, transmit.src_ip);
        let contents = transmit.contents.to_vec();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = inner.try_send(&Transmit {
                destination,
                ecn,
                contents: &contents,
                segment_size: None,
                src_ip,
            });
        });
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    // One datagram a transmit, so that every datagram is counted and
    // dropped on its own.
    fn max_transmit_segments(&self) -> usize {
        1
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

/// The tests' settings, with time for QUIC to resend a dropped handshake
/// packet before the connector would try TCP (which these listeners do not
/// serve).
fn socket_settings() -> TransportSettings {
    TransportSettings {
        quic_connect_timeout: Duration::from_secs(10),
        ..settings()
    }
}

#[tokio::test]
async fn frames_cross_custom_sockets_on_both_ends_despite_drops() {
    let server_socket = Counting::bind(7);
    let client_socket = Counting::bind(7);
    let listener = Listener::with_socket(
        server_socket.clone(),
        &identity(60),
        &socket_settings(),
        PeerPolicy::accept_any(),
    )
    .unwrap();
    assert_eq!(
        listener.local_addr(),
        server_socket.local_addr().unwrap(),
        "the listener is where its socket is"
    );
    assert!(listener.protocols().quic && !listener.protocols().tcp);
    assert_eq!(listener.udp_receive_buffer(), None);
    let connector = Connector::with_socket(
        client_socket.clone(),
        &identity(61),
        socket_settings(),
        PeerPolicy::accept_any(),
    )
    .unwrap();
    assert_eq!(
        connector.local_addr().unwrap(),
        client_socket.local_addr().unwrap()
    );

    let mut conn = bounded(
        "connect",
        connector.connect_pinned(listener.local_addr(), identity(60).public()),
    )
    .await
    .unwrap();
    assert_eq!(conn.kind(), Kind::Quic, "QUIC, not the TCP fallback");
    conn.write_frame(b"hello").await.unwrap();
    let mut server = bounded("accept", listener.accept()).await.unwrap();
    assert_eq!(server.peer(), &identity(61).public());
    assert_eq!(server.remote_addr(), client_socket.local_addr().unwrap());
    assert_eq!(
        bounded("read", server.read_frame()).await.unwrap().unwrap(),
        b"hello"
    );

    let echo = tokio::spawn(async move {
        while let Ok(Some(frame)) = server.read_frame().await {
            server.write_frame(&frame).await.unwrap();
        }
    });
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    for frame in [b"small".to_vec(), Vec::new(), big.clone()] {
        bounded("echo", async {
            conn.write_frame(&frame).await.unwrap();
            assert_eq!(conn.read_frame().await.unwrap().unwrap(), frame);
        })
        .await;
    }
    bounded("finish", conn.finish()).await.unwrap();
    bounded("server end", echo).await.unwrap();

    // Both ways went through the custom sockets, drops included.
    for (side, socket) in [("client", &client_socket), ("server", &server_socket)] {
        assert!(
            socket.bytes.load(Ordering::SeqCst) > big.len() as u64,
            "{side} sent {} bytes",
            socket.bytes.load(Ordering::SeqCst)
        );
        assert!(socket.datagrams() > 200, "{side}: {}", socket.datagrams());
        assert_eq!(
            socket.dropped.load(Ordering::SeqCst),
            socket.datagrams() / 7,
            "{side}"
        );
    }
    assert_eq!(listener.stats().accepted, 1);
    conn.close(0, "done").await;
}

#[tokio::test]
async fn policy_and_peer_limits_apply_over_a_custom_socket() {
    // A listener pinned to another key refuses the client.
    let refusing = Listener::with_socket(
        Counting::bind(u64::MAX),
        &identity(62),
        &socket_settings(),
        PeerPolicy::pinned(identity(99).public()),
    )
    .unwrap();
    let connector = Connector::with_socket(
        Counting::bind(u64::MAX),
        &identity(63),
        socket_settings(),
        PeerPolicy::accept_any(),
    )
    .unwrap();
    let err = bounded("refused session", async {
        let mut conn = connector.connect(refusing.local_addr()).await?;
        conn.write_frame(b"hello").await?;
        conn.read_frame().await
    })
    .await
    .unwrap_err();
    assert!(matches!(&err, TransportError::RejectedByPeer(_)), "{err:?}");

    // One connection per key: the second is closed with the limit's code.
    let limited = Listener::with_socket(
        Counting::bind(u64::MAX),
        &identity(64),
        &TransportSettings {
            max_connections_per_peer: 1,
            ..socket_settings()
        },
        PeerPolicy::accept_any(),
    )
    .unwrap();
    let mut first = bounded("first", connector.connect(limited.local_addr()))
        .await
        .unwrap();
    first.write_frame(b"one").await.unwrap();
    let mut held = bounded("accept", limited.accept()).await.unwrap();
    assert_eq!(held.read_frame().await.unwrap().unwrap(), b"one");
    let err = bounded("second", async {
        let mut second = connector.connect(limited.local_addr()).await?;
        second.write_frame(b"two").await?;
        second.read_frame().await
    })
    .await
    .unwrap_err();
    assert!(
        matches!(&err, TransportError::TooManyConnections { .. }),
        "{err:?}"
    );
    assert_eq!(limited.peer_connections(&identity(63).public()), 1);
    assert_eq!(limited.stats().refused_per_peer, 1);
}

/// Datagrams the client sends in the first 400 ms of a 300 KB write over a
/// link with 300 ms each way: no acknowledgement can come back by then, so
/// the count is the initial congestion window (paced over the round trip).
async fn first_flight(congestion: Congestion, initial_window: u64) -> u64 {
    let one_way = Duration::from_millis(300);
    let settings = TransportSettings {
        congestion,
        initial_window,
        ..socket_settings()
    };
    let server_socket = Counting::delayed(u64::MAX, one_way);
    let client_socket = Counting::delayed(u64::MAX, one_way);
    let listener = Listener::with_socket(
        server_socket,
        &identity(65),
        &settings,
        PeerPolicy::accept_any(),
    )
    .unwrap();
    let connector = Connector::with_socket(
        client_socket.clone(),
        &identity(66),
        settings,
        PeerPolicy::accept_any(),
    )
    .unwrap();
    let mut conn = bounded("connect", connector.connect(listener.local_addr()))
        .await
        .unwrap();
    conn.write_frame(b"hello").await.unwrap();
    let mut server = bounded("accept", listener.accept()).await.unwrap();
    assert_eq!(server.read_frame().await.unwrap().unwrap(), b"hello");
    // Let the handshake's last acknowledgements cross.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let before = client_socket.datagrams();
    let big = vec![7u8; 300_000];
    let writer = tokio::spawn(async move {
        conn.write_frame(&big).await.unwrap();
        conn
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let sent = client_socket.datagrams() - before;
    // The frame is on its way, whatever the window.
    let mut conn = bounded("the write", writer).await.unwrap();
    let frame = bounded("the frame", server.read_frame())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(frame.len(), 300_000);
    conn.write_frame(b"bye").await.unwrap();
    conn.close(0, "done").await;
    sent
}

#[tokio::test]
async fn the_initial_window_bounds_the_first_flight_for_every_controller() {
    let runs: Vec<_> = [Congestion::Cubic, Congestion::NewReno, Congestion::Bbr]
        .into_iter()
        .map(|c| {
            (
                c,
                tokio::spawn(first_flight(c, 4 * 1200)),
                tokio::spawn(first_flight(c, 64 * 1200)),
            )
        })
        .collect();
    for (congestion, small, large) in runs {
        let (small, large) = (small.await.unwrap(), large.await.unwrap());
        // Four datagrams' worth (a few acknowledgement-only packets aside).
        assert!(
            small <= 8,
            "{congestion:?}: {small} datagrams with a 4-datagram window"
        );
        assert!(
            large >= 4 * small.max(1) && large >= 20,
            "{congestion:?}: {large} datagrams with a 64-datagram window, {small} with 4"
        );
    }
}
