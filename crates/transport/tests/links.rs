//! Real loopback links: QUIC handshake and echo, TCP fallback, unreachable
//! peers, migration, frame limits, a 1.5 s round-trip link.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use fieldsync_transport::{
    Connector, Kind, MAX_FRAME, PeerPolicy, Protocols, TransportError, TransportSettings, connect,
};
use tokio::io::AsyncWriteExt as _;

#[tokio::test]
async fn quic_handshake_both_sides_see_the_other_key_and_frames_echo() {
    let listener = listener(1, PeerPolicy::accept_any(), Protocols::default()).await;
    let client = connector(2);
    let addr = listener.local_addr();

    let mut conn = bounded("connect", client.connect_pinned(addr, identity(1).public()))
        .await
        .unwrap();
    assert_eq!(conn.kind(), Kind::Quic);
    assert_eq!(conn.peer(), &identity(1).public());
    assert_eq!(conn.remote_addr(), addr);

    // The client speaks first; only then does the server see the stream.
    conn.write_frame(b"hello").await.unwrap();
    let mut server = bounded("accept", listener.accept()).await.unwrap();
    assert_eq!(server.kind(), Kind::Quic);
    assert_eq!(server.peer(), &identity(2).public());
    assert_eq!(
        server.remote_addr(),
        client.local_addr().unwrap(),
        "the server sees the client's socket"
    );
    assert_eq!(
        bounded("read", server.read_frame()).await.unwrap().unwrap(),
        b"hello"
    );

    // Echo a few frames, large and empty ones included.
    let echo = tokio::spawn(async move {
        while let Ok(Some(frame)) = server.read_frame().await {
            server.write_frame(&frame).await.unwrap();
        }
        server
    });
    for frame in [
        vec![],
        vec![1u8; 10],
        vec![2u8; 1_000_000],
        vec![3u8; MAX_FRAME],
    ] {
        bounded("echo", async {
            conn.write_frame(&frame).await.unwrap();
            assert_eq!(conn.read_frame().await.unwrap().unwrap(), frame);
        })
        .await;
    }

    // A graceful end: the server sees a clean end of stream.
    bounded("finish", conn.finish()).await.unwrap();
    let server = bounded("server end", echo).await.unwrap();
    assert_eq!(server.kind(), Kind::Quic);
    conn.close(0, "done").await;
}

#[tokio::test]
async fn free_connect_function_works() {
    let listener = listener(11, PeerPolicy::accept_any(), Protocols::default()).await;
    let _echo = spawn_echo(listener.clone());
    let mut conn = bounded(
        "connect",
        connect(
            listener.local_addr(),
            &identity(12),
            &settings(),
            PeerPolicy::pinned(identity(11).public()),
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        ask(&mut conn, "peer?").await,
        identity(12).public().to_string()
    );
    assert_eq!(ask(&mut conn, "kind?").await, "QUIC");
}

#[tokio::test]
async fn falls_back_to_tls_over_tcp_when_quic_does_not_answer() {
    let listener = listener(
        3,
        PeerPolicy::accept_any(),
        Protocols {
            quic: false,
            tcp: true,
        },
    )
    .await;
    let _echo = spawn_echo(listener.clone());
    let client = connector(4);

    let started = Instant::now();
    let mut conn = bounded("connect", client.connect(listener.local_addr()))
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(conn.kind(), Kind::Tcp);
    assert!(
        took >= settings().quic_connect_timeout,
        "QUIC was tried first ({took:?})"
    );
    assert!(
        took < Duration::from_secs(5),
        "fallback was quick ({took:?})"
    );
    assert_eq!(conn.peer(), &identity(3).public());
    assert_eq!(conn.remote_addr(), listener.local_addr());

    assert_eq!(
        ask(&mut conn, "peer?").await,
        identity(4).public().to_string()
    );
    assert_eq!(ask(&mut conn, "kind?").await, "TLS/TCP");
    for frame in [vec![], vec![5u8; 70_000], vec![6u8; MAX_FRAME]] {
        bounded("echo", async {
            conn.write_frame(&frame).await.unwrap();
            assert_eq!(conn.read_frame().await.unwrap().unwrap(), frame);
        })
        .await;
    }
    bounded("finish", conn.finish()).await.unwrap();
}

#[tokio::test]
async fn both_transports_serve_the_same_port() {
    let listener = listener(13, PeerPolicy::accept_any(), Protocols::default()).await;
    let _echo = spawn_echo(listener.clone());
    let addr = listener.local_addr();

    // TLS over TCP on the QUIC port number, with a plain rustls client.
    let config = raw_client_config(&identity(14), b"fieldsync/1");
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let mut tls = bounded(
        "TLS handshake",
        tokio_rustls::TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .unwrap();
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(fieldsync_transport::ALPN)
    );
    bounded("echo over raw TLS", async {
        fieldsync_transport::write_frame(&mut tls, b"kind?")
            .await
            .unwrap();
        let reply = fieldsync_transport::read_frame(&mut tls)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(reply, b"TLS/TCP");
    })
    .await;

    let mut quic = bounded("connect", connector(15).connect(addr))
        .await
        .unwrap();
    assert_eq!(quic.kind(), Kind::Quic);
    assert_eq!(ask(&mut quic, "kind?").await, "QUIC");
}

#[tokio::test]
async fn nothing_listening_is_unreachable_in_bounded_time() {
    // A port that was free a moment ago, on both UDP and TCP.
    let addr = {
        let tcp = std::net::TcpListener::bind(loopback()).unwrap();
        tcp.local_addr().unwrap()
    };
    let client = connector(5);
    let started = Instant::now();
    let err = bounded("connect", client.connect(addr)).await.unwrap_err();
    let took = started.elapsed();
    match &err {
        TransportError::Unreachable { addr: a, quic, tcp } => {
            assert_eq!(*a, addr);
            assert!(quic.contains("no QUIC handshake"), "{quic}");
            assert!(!tcp.is_empty());
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(err.to_string().contains("unreachable"), "{err}");
}

#[tokio::test]
async fn client_migrates_to_a_new_socket_and_frames_keep_flowing() {
    let listener = listener(6, PeerPolicy::accept_any(), Protocols::default()).await;
    let _echo = spawn_echo(listener.clone());
    let client = connector(7);
    let mut conn = bounded("connect", client.connect(listener.local_addr()))
        .await
        .unwrap();
    let before = client.local_addr().unwrap();
    assert_eq!(ask(&mut conn, "addr?").await, before.to_string());

    let socket = std::net::UdpSocket::bind(loopback()).unwrap();
    let after = socket.local_addr().unwrap();
    assert_ne!(before, after);
    client.rebind(socket).unwrap();
    assert_eq!(client.local_addr().unwrap(), after);

    for i in 0..20u8 {
        assert_eq!(
            ask(&mut conn, &format!("frame {i}")).await,
            format!("frame {i}")
        );
    }
    // The server followed the client to its new address.
    assert_eq!(ask(&mut conn, "addr?").await, after.to_string());
    assert_eq!(
        ask(&mut conn, "peer?").await,
        identity(7).public().to_string()
    );
}

/// Writes an opening frame and then raw bytes on a fresh connection of the
/// given kind, then lets the server read two frames. (A bad opening frame
/// never reaches `accept`: see `limits.rs`.)
async fn server_reads_raw(
    protocols: Protocols,
    raw: &[u8],
) -> Result<Option<Vec<u8>>, TransportError> {
    let listener = listener(8, PeerPolicy::accept_any(), protocols).await;
    let client = connector(9);
    let mut conn = bounded("connect", client.connect(listener.local_addr()))
        .await
        .unwrap();
    conn.write_frame(b"opening").await.unwrap();
    conn.stream().write_all(raw).await.unwrap();
    conn.stream().flush().await.unwrap();
    let mut server = bounded("accept", listener.accept()).await.unwrap();
    assert_eq!(
        bounded("read", server.read_frame()).await.unwrap().unwrap(),
        b"opening"
    );
    let (result, _) = tokio::join!(bounded("read", server.read_frame()), async {
        bounded("finish", conn.finish()).await.ok();
    });
    result
}

#[tokio::test]
async fn frame_limits_over_real_links() {
    let oversize = u32::try_from(MAX_FRAME + 1).unwrap().to_be_bytes();
    let truncated = [0, 0, 0, 10, b'a', b'b', b'c'];
    for protocols in [
        Protocols::default(),
        Protocols {
            quic: false,
            tcp: true,
        },
    ] {
        let err = server_reads_raw(protocols, &oversize).await.unwrap_err();
        assert!(
            matches!(err, TransportError::FrameTooLarge { len, max: MAX_FRAME } if len == MAX_FRAME + 1),
            "{err:?}"
        );
        let err = server_reads_raw(protocols, &truncated).await.unwrap_err();
        assert!(matches!(err, TransportError::Truncated), "{err:?}");
    }
}

#[tokio::test]
async fn oversize_frames_are_not_sent() {
    let listener = listener(10, PeerPolicy::accept_any(), Protocols::default()).await;
    let _echo = spawn_echo(listener.clone());
    let mut conn = bounded("connect", connector(16).connect(listener.local_addr()))
        .await
        .unwrap();
    let err = conn.write_frame(&vec![0; MAX_FRAME + 1]).await.unwrap_err();
    assert!(
        matches!(err, TransportError::FrameTooLarge { .. }),
        "{err:?}"
    );
    // The connection is still usable: nothing was written.
    assert_eq!(ask(&mut conn, "still here").await, "still here");
}

#[tokio::test]
async fn closing_is_seen_by_the_peer() {
    let listener = listener(17, PeerPolicy::accept_any(), Protocols::default()).await;
    let mut conn = bounded("connect", connector(18).connect(listener.local_addr()))
        .await
        .unwrap();
    conn.write_frame(b"hi").await.unwrap();
    let mut server = bounded("accept", listener.accept()).await.unwrap();
    assert_eq!(server.read_frame().await.unwrap().unwrap(), b"hi");
    conn.close(7, "revoked").await;
    let err = bounded("read", server.read_frame()).await.unwrap_err();
    assert!(
        matches!(&err, TransportError::ClosedByPeer { code: 7, reason } if reason == "revoked"),
        "{err:?}"
    );

    // A closed listener refuses further accepts.
    listener.close();
    assert!(matches!(
        bounded("accept", listener.accept()).await,
        Err(TransportError::Closed)
    ));
}

/// A UDP relay on loopback that delays every datagram by `one_way` in each
/// direction, for one client at a time.
async fn delay_proxy(server: SocketAddr, one_way: Duration) -> SocketAddr {
    let front = Arc::new(tokio::net::UdpSocket::bind(loopback()).await.unwrap());
    let back = Arc::new(tokio::net::UdpSocket::bind(loopback()).await.unwrap());
    back.connect(server).await.unwrap();
    let addr = front.local_addr().unwrap();
    let client = Arc::new(Mutex::new(None::<SocketAddr>));
    tokio::spawn({
        let (front, back, client) = (front.clone(), back.clone(), client.clone());
        async move {
            let mut buf = vec![0u8; 65_536];
            while let Ok((n, from)) = front.recv_from(&mut buf).await {
                *client.lock().unwrap() = Some(from);
                let (packet, back) = (buf[..n].to_vec(), back.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(one_way).await;
                    let _ = back.send(&packet).await;
                });
            }
        }
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok(n) = back.recv(&mut buf).await {
            let Some(to) = *client.lock().unwrap() else {
                continue;
            };
            let (packet, front) = (buf[..n].to_vec(), front.clone());
            tokio::spawn(async move {
                tokio::time::sleep(one_way).await;
                let _ = front.send_to(&packet, to).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn default_settings_keep_a_1_5_s_round_trip_link_on_quic() {
    let listener = listener(40, PeerPolicy::accept_any(), Protocols::default()).await;
    let _echo = spawn_echo(listener.clone());
    let proxy = delay_proxy(listener.local_addr(), Duration::from_millis(750)).await;
    let client = Connector::bind(
        loopback(),
        &identity(41),
        TransportSettings::default(),
        PeerPolicy::accept_any(),
    )
    .unwrap();
    // Nothing listens on TCP at the proxy's port: only QUIC can succeed.
    let mut conn = bounded("connect", client.connect(proxy)).await.unwrap();
    assert_eq!(conn.kind(), Kind::Quic);
    assert_eq!(ask(&mut conn, "ping").await, "ping");
    assert_eq!(
        ask(&mut conn, "peer?").await,
        identity(41).public().to_string()
    );
    let rtt = conn.rtt().unwrap();
    assert!(rtt >= Duration::from_millis(1400), "{rtt:?}");
}
