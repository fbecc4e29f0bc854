//! Listener limits over real loopback links: the client's opening frame
//! (size, time, cut short), connections per peer key, streams per
//! connection, bytes ahead of the reader, QUIC Retry under load, the UDP
//! receive buffer, and a bind that fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use fieldsync_transport::{
    ALPN, Connection, Listener, MAX_FRAME, PeerPolicy, Protocols, TransportError,
    TransportSettings, close_code,
};
use tokio::io::AsyncWriteExt as _;

const TCP_ONLY: Protocols = Protocols {
    quic: false,
    tcp: true,
};

async fn listener_with(
    seed: u8,
    settings: TransportSettings,
    protocols: Protocols,
) -> Arc<Listener> {
    Arc::new(
        Listener::bind_with(
            loopback(),
            &identity(seed),
            &settings,
            PeerPolicy::accept_any(),
            protocols,
        )
        .await
        .unwrap(),
    )
}

async fn accept_yields_nothing(listener: &Listener) {
    let accepted = tokio::time::timeout(Duration::from_millis(300), listener.accept()).await;
    assert!(accepted.is_err(), "accept yielded {accepted:?}");
}

/// Connects, writes `raw` as the first bytes, and returns what the first
/// read says (the listener's verdict).
async fn open_with(listener: &Listener, seed: u8, raw: &[u8], finish: bool) -> TransportError {
    let mut conn = bounded("connect", connector(seed).connect(listener.local_addr()))
        .await
        .unwrap();
    conn.stream().write_all(raw).await.unwrap();
    conn.stream().flush().await.unwrap();
    if finish {
        let _ = conn.stream().writer().shutdown().await;
    }
    match bounded("read", conn.read_frame()).await {
        Err(e) => e,
        Ok(frame) => panic!("the listener let the connection through: {frame:?}"),
    }
}

#[tokio::test]
async fn a_bad_opening_frame_never_reaches_accept() {
    let settings = TransportSettings {
        handshake_timeout: Duration::from_millis(1500),
        ..settings()
    };
    let listener = listener_with(40, settings.clone(), Protocols::default()).await;

    // Larger than max_opening_frame (and than the frame limit).
    for len in [settings.max_opening_frame + 1, MAX_FRAME + 1] {
        let header = u32::try_from(len).unwrap().to_be_bytes();
        let err = open_with(&listener, 41, &header, false).await;
        assert!(
            matches!(&err, TransportError::BadOpening { reason } if reason.contains("exceeds the limit")),
            "{err:?}"
        );
    }
    // Cut short: 3 of 10 bytes, then the end of the stream.
    let err = open_with(&listener, 41, &[0, 0, 0, 10, 1, 2, 3], true).await;
    assert!(
        matches!(&err, TransportError::BadOpening { reason } if reason.contains("middle of a frame")),
        "{err:?}"
    );
    // Too slow: half a header, then nothing until the deadline.
    let err = open_with(&listener, 41, &[0, 0], false).await;
    assert!(
        matches!(&err, TransportError::BadOpening { reason } if reason.contains("did not arrive")),
        "{err:?}"
    );
    accept_yields_nothing(&listener).await;
    let stats = listener.stats();
    assert_eq!(stats.bad_openings, 4, "{stats:?}");
    assert_eq!(stats.accepted, 0);
    assert_eq!(
        listener.peer_connections(&identity(41).public()),
        0,
        "refused connections hold no slot"
    );

    // Over TCP the stream just ends (TCP carries no close code).
    let listener = listener_with(42, settings.clone(), TCP_ONLY).await;
    let header = u32::try_from(settings.max_opening_frame + 1)
        .unwrap()
        .to_be_bytes();
    let mut conn = bounded("connect", connector(43).connect(listener.local_addr()))
        .await
        .unwrap();
    conn.stream().write_all(&header).await.unwrap();
    conn.stream().flush().await.unwrap();
    let read = bounded("read", conn.read_frame()).await;
    assert!(!matches!(read, Ok(Some(_))), "{read:?}");
    accept_yields_nothing(&listener).await;
    assert_eq!(listener.stats().bad_openings, 1);

    // A proper opening frame of exactly the limit passes.
    let listener = listener_with(44, settings.clone(), Protocols::default()).await;
    let _echo = spawn_echo(listener.clone());
    let mut conn = bounded("connect", connector(45).connect(listener.local_addr()))
        .await
        .unwrap();
    let opening = vec![9u8; settings.max_opening_frame];
    conn.write_frame(&opening).await.unwrap();
    assert_eq!(
        bounded("echo", conn.read_frame()).await.unwrap().unwrap(),
        opening
    );
}

/// Connects with `seed`'s key and completes one echo.
async fn echoing(listener: &Listener, seed: u8) -> Connection {
    let mut conn = bounded("connect", connector(seed).connect(listener.local_addr()))
        .await
        .unwrap();
    assert_eq!(ask(&mut conn, "ping").await, "ping");
    conn
}

#[tokio::test]
async fn one_key_gets_at_most_its_share_of_connections() {
    for protocols in [Protocols::default(), TCP_ONLY] {
        let settings = TransportSettings {
            max_connections_per_peer: 2,
            ..settings()
        };
        let listener = listener_with(50, settings, protocols).await;
        let _echo = spawn_echo(listener.clone());
        let key = identity(51).public();

        let first = echoing(&listener, 51).await;
        let mut second = echoing(&listener, 51).await;
        assert_eq!(listener.peer_connections(&key), 2);

        // The third with the same key is refused, by name over QUIC.
        // The listener closes it right after the handshake: the connect,
        // the write or the read after it says why, whichever sees it first.
        let read = match bounded("connect", connector(51).connect(listener.local_addr())).await {
            Err(e) => Err(e),
            Ok(mut third) => match third.write_frame(b"ping").await {
                Err(e) => Err(e),
                Ok(()) => bounded("read", third.read_frame()).await,
            },
        };
        if protocols.quic {
            let err = read.unwrap_err();
            assert!(
                matches!(&err, TransportError::TooManyConnections { reason }
                    if reason.contains("already holds 2 live connections")),
                "{err:?}"
            );
            assert!(err.to_string().starts_with("too many connections"), "{err}");
        } else {
            assert!(!matches!(read, Ok(Some(_))), "{read:?}");
        }
        assert_eq!(listener.stats().refused_per_peer, 1);
        assert_eq!(listener.peer_connections(&key), 2);

        // Other keys are not affected, and the two live ones still work.
        let _other = echoing(&listener, 52).await;
        assert_eq!(ask(&mut second, "still here").await, "still here");

        // Once one of the two ends, the key may connect again.
        first.close(close_code::NORMAL, "bye").await;
        bounded("the slot frees", async {
            while listener.peer_connections(&key) > 1 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        let _again = echoing(&listener, 51).await;
        assert_eq!(listener.peer_connections(&key), 2);
    }
}

/// A raw quinn client holding `seed`'s key, with its session stream open
/// and the opening frame sent.
async fn raw_session(
    listener: &Listener,
    seed: u8,
) -> (
    quinn::Endpoint,
    quinn::Connection,
    quinn::SendStream,
    quinn::RecvStream,
) {
    let endpoint = raw_quic_endpoint();
    let config = raw_quic_config(raw_client_config(&identity(seed), ALPN));
    let conn = bounded(
        "connect",
        endpoint
            .connect_with(config, listener.local_addr(), "127.0.0.1")
            .unwrap(),
    )
    .await
    .unwrap();
    let (mut send, recv) = conn.open_bi().await.unwrap();
    send.write_all(&[0, 0, 0, 2, b'h', b'i']).await.unwrap();
    (endpoint, conn, send, recv)
}

async fn raw_ask(send: &mut quinn::SendStream, recv: &mut quinn::RecvStream, text: &[u8]) {
    let mut frame = u32::try_from(text.len()).unwrap().to_be_bytes().to_vec();
    frame.extend_from_slice(text);
    send.write_all(&frame).await.unwrap();
    let got = bounded("echo", fieldsync_transport::read_frame(recv))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, text);
}

#[tokio::test]
async fn streams_beyond_the_session_are_blocked_or_refused() {
    let settings = settings();
    assert_eq!(settings.max_concurrent_bidi_streams, 4);
    let listener = listener_with(60, settings, Protocols::default()).await;
    let _echo = spawn_echo(listener.clone());
    let (_endpoint, conn, mut send, mut recv) = raw_session(&listener, 61).await;
    assert_eq!(
        bounded("opening echo", fieldsync_transport::read_frame(&mut recv))
            .await
            .unwrap()
            .unwrap(),
        b"hi"
    );

    // Three more bidirectional streams fit the limit; a fifth waits for
    // QUIC to allow it, and unidirectional streams are not allowed at all.
    let mut extra = Vec::new();
    for _ in 0..3 {
        extra.push(conn.open_bi().await.unwrap());
    }
    let blocked = tokio::time::timeout(Duration::from_millis(300), conn.open_bi()).await;
    assert!(blocked.is_err(), "a fifth concurrent stream was allowed");
    let uni = tokio::time::timeout(Duration::from_millis(300), conn.open_uni()).await;
    assert!(uni.is_err(), "a unidirectional stream was allowed");

    // Whatever the extra streams carry is refused at once.
    for (send, _) in &mut extra {
        let err = bounded("refused", async {
            loop {
                if let Err(e) = send.write(&[7u8; 64 * 1024]).await {
                    break e;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert_eq!(
            err,
            quinn::WriteError::Stopped(quinn::VarInt::from_u32(close_code::STREAM_REFUSED))
        );
    }
    assert_eq!(listener.stats().streams_refused, 3);
    // Refused streams count against the limit until the peer ends its side
    // too: churning streams without finishing them gets a peer nowhere.
    let blocked = tokio::time::timeout(Duration::from_millis(300), conn.open_bi()).await;
    assert!(blocked.is_err(), "a refused stream was not counted");
    for (send, _) in &mut extra {
        send.reset(quinn::VarInt::from_u32(0)).unwrap();
    }
    // Then QUIC allows new ones (refused too).
    let (mut fifth, _) = bounded("a stream once the others are over", conn.open_bi())
        .await
        .unwrap();
    fifth.write_all(b"more").await.unwrap();
    assert_eq!(
        bounded("fifth refused", fifth.stopped()).await.unwrap(),
        Some(quinn::VarInt::from_u32(close_code::STREAM_REFUSED))
    );
    assert_eq!(listener.stats().streams_refused, 4);

    // The session stream is untouched.
    raw_ask(&mut send, &mut recv, b"still here").await;
}

#[tokio::test]
async fn a_peer_cannot_send_far_ahead_of_the_reader() {
    let window = 256 * 1024;
    let settings = TransportSettings {
        stream_receive_window: window,
        connection_receive_window: 2 * window,
        ..settings()
    };
    let listener = listener_with(62, settings, Protocols::default()).await;
    let (_endpoint, conn, mut send, _recv) = raw_session(&listener, 63).await;
    let mut server = bounded("accept", listener.accept()).await.unwrap();

    // The server reads nothing while the client tries to send 4 MiB.
    let total = 4 * 1024 * 1024;
    let writer = tokio::spawn(async move {
        send.write_all(&vec![5u8; total]).await.unwrap();
        send.finish().unwrap();
        send
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    let sent = conn.stats().udp_tx.bytes;
    let bound = u64::from(window) + 128 * 1024;
    assert!(
        sent < bound,
        "the client got {sent} bytes onto the wire against a {window}-byte window"
    );
    assert!(!writer.is_finished());

    // Once the server reads, everything arrives.
    let mut got = 0;
    bounded("drain", async {
        while let Some(bytes) = server.stream().reader().read_some(64 * 1024).await.unwrap() {
            got += bytes.len();
        }
    })
    .await;
    assert_eq!(got, 6 + total, "the opening frame and the 4 MiB");
    bounded("writer", writer).await.unwrap();
}

#[tokio::test]
async fn under_load_quic_clients_prove_their_address_first() {
    let settings = TransportSettings {
        retry_above: 0,
        ..settings()
    };
    let listener = listener_with(64, settings, Protocols::default()).await;
    let _echo = spawn_echo(listener.clone());
    let mut conn = echoing(&listener, 65).await;
    assert_eq!(ask(&mut conn, "kind?").await, "QUIC");
    let stats = listener.stats();
    assert_eq!((stats.retries, stats.accepted), (1, 1), "{stats:?}");
}

#[tokio::test]
async fn the_udp_receive_buffer_is_raised() {
    let default = listener_with(
        66,
        TransportSettings {
            udp_receive_buffer: None,
            ..settings()
        },
        Protocols::default(),
    )
    .await
    .udp_receive_buffer()
    .unwrap();
    let raised = listener_with(67, settings(), Protocols::default())
        .await
        .udp_receive_buffer()
        .unwrap();
    assert!(raised >= default, "{raised} < {default}");
    // Linux grants twice what was asked (for its bookkeeping) up to net.core.rmem_max.
    #[cfg(target_os = "linux")]
    {
        let asked = 100_000;
        let granted = listener_with(
            68,
            TransportSettings {
                udp_receive_buffer: Some(asked),
                ..settings()
            },
            Protocols::default(),
        )
        .await
        .udp_receive_buffer()
        .unwrap();
        assert_eq!(granted, 2 * asked);
    }
    assert_eq!(
        listener_with(69, settings(), TCP_ONLY)
            .await
            .udp_receive_buffer(),
        None
    );
}

#[tokio::test]
async fn a_taken_port_is_one_clear_error() {
    let first = listener_with(70, settings(), Protocols::default()).await;
    let err = Listener::bind(
        first.local_addr(),
        &identity(71),
        &settings(),
        PeerPolicy::accept_any(),
    )
    .await
    .unwrap_err();
    let TransportError::Bind { addr, source } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*addr, first.local_addr());
    assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse);
    let message = err.to_string();
    assert!(message.contains("another FieldSync process"), "{message}");
    // The OS error is the source, not repeated in the message.
    assert!(!message.contains(&source.to_string()), "{message}");
}

#[tokio::test]
async fn a_listener_at_its_handshake_limit_turns_clients_away_by_name() {
    let settings = TransportSettings {
        max_pending_handshakes: 1,
        ..settings()
    };
    let listener = listener_with(72, settings, Protocols::default()).await;
    let _echo = spawn_echo(listener.clone());
    // A client that completes the QUIC handshake and then says nothing
    // holds the one handshake slot (until the handshake timeout).
    let endpoint = raw_quic_endpoint();
    let silent = bounded(
        "connect",
        endpoint
            .connect_with(
                raw_quic_config(raw_client_config(&identity(73), ALPN)),
                listener.local_addr(),
                "127.0.0.1",
            )
            .unwrap(),
    )
    .await
    .unwrap();
    bounded("the slot is taken", async {
        while listener.stats().in_progress < 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let err = bounded("connect", connector(74).connect(listener.local_addr()))
        .await
        .unwrap_err();
    assert!(matches!(&err, TransportError::Busy { .. }), "{err:?}");
    assert!(err.to_string().contains("connection limit"), "{err}");
    assert_eq!(listener.stats().refused_busy, 1);

    // Once the silent client is gone, the slot is free again.
    silent.close(quinn::VarInt::from_u32(0), b"bye");
    bounded("the slot frees", async {
        while listener.stats().in_progress > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let mut conn = echoing(&listener, 74).await;
    assert_eq!(ask(&mut conn, "again").await, "again");
}
