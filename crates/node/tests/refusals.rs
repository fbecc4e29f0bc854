//! The transport half of the bad-input catalogue, against a real relay node
//! (a real redb file) over real QUIC on loopback: each bad input gets its
//! named error, and the relay's store is left as it was (log head, peers
//! table, quarantine, cases).
//!
//! | bad input | refused by | named error |
//! |---|---|---|
//! | no client certificate | TLS (rustls, mutual auth mandatory) | TLS `certificate_required` |
//! | expired, revoked, foreign-issuer, self-signed certificate | the session's `Hello` check | `SessionError::Certificate` (close code `Certificate`) |
//! | version below the floor | the session's `Hello` check | `SessionError::Version` (close code `Version`) |
//! | unknown message type | the session's decoder | `WireError::UnknownType` (close code `Protocol`) |
//! | oversized frame | the listener (opening frame), the session's decoder (later frames) | `TransportError::BadOpening`; `WireError::FrameTooLarge` |
//! | truncated frame | the listener (opening frame), the session (later frames) | `TransportError::BadOpening`; the session ends unfinished |
//! | too many connections for one certificate | the listener | `TransportError::TooManyConnections` |
//! | too many streams | QUIC stream limits and the listener | blocked; `STREAM_REFUSED` |
//! | wrong ALPN | TLS (see `crates/transport/tests/refusals.rs`) | TLS `no_application_protocol` |
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fieldsync_case::CaseKind;
use fieldsync_identity::{
    CERTIFICATE_VERSION, CaseId, CertificateBody, Compartment, DeviceCertificate, DeviceId, HqRoot,
    Revocation, Role, SecretKey, Timestamp,
};
use fieldsync_node::{Mode, Node, NodeConfig, NodeEventKind, now};
use fieldsync_protocol::{
    CloseCode, Hello, MAX_FRAME_LEN, MIN_PROTOCOL_VERSION, Message, NodeRole, PROTOCOL_VERSION,
};
use fieldsync_store::{NewCase, NewDevice, Store, StoreKind};
use fieldsync_transport::{
    ALPN, Connection, Connector, Identity, Listener, PeerPolicy, TransportError, TransportSettings,
    close_code,
};
use tempfile::TempDir;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::broadcast;

/// Every step is bounded by this.
const STEP: Duration = Duration::from_secs(20);

async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP, f)
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than {STEP:?}"))
}

/// A certificate valid from `from` to `to` (milliseconds from now).
fn certificate(
    issuer: &HqRoot,
    device: DeviceId,
    role: Role,
    from: i64,
    to: i64,
) -> DeviceCertificate {
    let general = vec![Compartment::new("general").unwrap()];
    let write = if role.can_author_changes() {
        general.clone()
    } else {
        Vec::new()
    };
    issuer
        .issue(CertificateBody {
            version: CERTIFICATE_VERSION,
            serial: 7,
            issuer: issuer.public(),
            device,
            name: "someone".into(),
            office: "rome".into(),
            role,
            read: general,
            write,
            not_before: Timestamp::from_millis(now().as_millis() + from),
            not_after: Timestamp::from_millis(now().as_millis() + to),
        })
        .unwrap()
}

fn valid(issuer: &HqRoot, device: DeviceId, role: Role) -> DeviceCertificate {
    certificate(issuer, device, role, -3_600_000, 86_400_000)
}

struct Relay {
    node: Node,
    addr: SocketAddr,
    listener: Arc<Listener>,
    hq: HqRoot,
    _dir: TempDir,
}

/// A relay on a real redb file, served on loopback with `settings`.
async fn relay(settings: TransportSettings) -> Relay {
    let dir = tempfile::tempdir().unwrap();
    let hq = HqRoot::from_secret(SecretKey::from_seed(&[200; 32]));
    let store = Store::create(
        &dir.path().join("relay.redb"),
        NewDevice {
            seed: [1; 32],
            name: "hq-relay",
            epoch: [1; 16],
            now: now(),
            kind: StoreKind::Relay,
        },
    )
    .unwrap();
    let cert = valid(&hq, store.device().id(), Role::Relay);
    let identity = Identity::new(store.device().secret_key()).unwrap();
    let node = Node::start(store, NodeConfig::new(NodeRole::Relay, cert, hq.public())).unwrap();
    // Something in the log, so that "nothing changed" is not "nothing there".
    node.with_engine(|e| {
        e.store()
            .create_case(
                &NewCase {
                    id: CaseId::from_bytes([9; 16]),
                    kind: CaseKind::CriminalInvestigation,
                    office: "rome",
                    compartment: "general",
                    title: "Ledger",
                },
                now(),
            )
            .unwrap();
    })
    .await
    .unwrap();
    let listener = Arc::new(
        Listener::bind(
            "127.0.0.1:0".parse().unwrap(),
            &identity,
            &settings,
            PeerPolicy::accept_any(),
        )
        .await
        .unwrap(),
    );
    let addr = listener.local_addr();
    let accepting = listener.clone();
    let serving = node.clone();
    tokio::spawn(async move {
        while let Ok(conn) = accepting.accept().await {
            let node = serving.clone();
            tokio::spawn(async move { node.run_connection(conn, Mode::Live).await });
        }
    });
    Relay {
        node,
        addr,
        listener,
        hq,
        _dir: dir,
    }
}

/// What a refusal must leave as it was.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    log_head: u64,
    peers: Vec<DeviceId>,
    quarantined: usize,
    cases: usize,
}

async fn snapshot(node: &Node) -> Snapshot {
    node.with_engine(|e| {
        let s = e.store();
        Snapshot {
            log_head: s.log_head().unwrap(),
            peers: s.peers().unwrap().into_iter().map(|(d, _)| d).collect(),
            quarantined: s.quarantine().unwrap().len(),
            cases: s.list_cases().unwrap().len(),
        }
    })
    .await
    .unwrap()
}

/// A device key with a transport identity.
struct Key {
    secret: SecretKey,
    identity: Identity,
}

fn key(seed: u8) -> Key {
    let secret = SecretKey::from_seed(&[seed; 32]);
    let identity = Identity::new(&secret).unwrap();
    Key { secret, identity }
}

impl Key {
    fn device(&self) -> DeviceId {
        DeviceId::from_public_key(self.secret.public())
    }

    async fn connect(&self, relay: &Relay) -> Result<Connection, TransportError> {
        let connector = Connector::new(
            &self.identity,
            TransportSettings::default(),
            PeerPolicy::accept_any(),
        )?;
        bounded("connect", connector.connect(relay.addr)).await
    }
}

fn hello(cert: &DeviceCertificate, version: u16, min_version: u16) -> Vec<u8> {
    Message::Hello(Hello {
        version,
        min_version,
        role: NodeRole::Device,
        certificate: cert.to_bytes(),
        epoch: [42; 16],
        head: 0,
        want: None,
        revocations: 0,
    })
    .encode()
}

/// Reads the relay's messages until its `Close` (its own `Hello` and
/// anything else come first).
async fn close_of(conn: &mut Connection) -> (CloseCode, String) {
    bounded("the relay's close", async {
        loop {
            let frame = conn
                .read_frame()
                .await
                .unwrap()
                .expect("the relay ended the stream without a Close");
            if let Message::Close { code, reason } = Message::decode(&frame).unwrap() {
                return (code, reason);
            }
        }
    })
    .await
}

/// The relay's account of how the session with `device` ended.
async fn ended(
    events: &mut broadcast::Receiver<fieldsync_node::NodeEvent>,
    device: DeviceId,
) -> String {
    bounded("the relay's session end", async {
        loop {
            let ev = events.recv().await.unwrap();
            if ev.peer == device
                && let NodeEventKind::Ended { error } = ev.kind
            {
                return error.unwrap_or_default();
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_a_certificate_is_refused_in_the_tls_handshake() {
    let relay = relay(TransportSettings::default()).await;
    let before = snapshot(&relay.node).await;
    let mut events = relay.node.subscribe();

    let mut tls = quinn::rustls::ClientConfig::builder_with_provider(Arc::new(
        quinn::rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&quinn::rustls::version::TLS13])
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(fieldsync_transport::danger::ServerKeyVerifier::new(
        PeerPolicy::accept_any(),
    ))
    .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let config = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(tls)).unwrap(),
    ));
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let connecting = endpoint
        .connect_with(config, relay.addr, "127.0.0.1")
        .unwrap();
    let err = bounded("refusal", async {
        match connecting.await {
            Err(e) => e,
            Ok(conn) => conn.closed().await,
        }
    })
    .await;
    // 0x100 + certificate_required (116)
    assert!(
        matches!(&err, quinn::ConnectionError::ConnectionClosed(c) if u64::from(c.error_code) == 0x100 + 116),
        "{err:?}"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), events.recv())
            .await
            .is_err(),
        "no session was opened"
    );
    assert_eq!(relay.listener.stats().handshakes_failed, 1);
    assert_eq!(relay.listener.stats().accepted, 0);
    assert_eq!(snapshot(&relay.node).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_revoked_foreign_and_self_signed_certificates_are_refused_at_the_hello() {
    let relay = relay(TransportSettings::default()).await;
    let revoked = key(12);
    let list = relay
        .hq
        .revoke(
            None,
            Revocation::new(revoked.device(), now(), "seized at the border").accepting(0, 0),
            now(),
        )
        .unwrap();
    relay
        .node
        .with_engine(move |e| e.adopt_revocations(list).unwrap())
        .await
        .unwrap();
    let before = snapshot(&relay.node).await;
    let mut events = relay.node.subscribe();

    let expired = key(11);
    let foreign = key(13);
    let own = key(14);
    let elsewhere = HqRoot::from_secret(SecretKey::from_seed(&[99; 32]));
    let cases = [
        (
            &expired,
            certificate(
                &relay.hq,
                expired.device(),
                Role::Field,
                -86_400_000,
                -3_600_000,
            ),
            "expired",
        ),
        (
            &revoked,
            valid(&relay.hq, revoked.device(), Role::Field),
            "seized at the border",
        ),
        (
            &foreign,
            valid(&elsewhere, foreign.device(), Role::Field),
            "certificate refused",
        ),
        (
            &own,
            valid(
                &HqRoot::from_secret(own.secret.clone()),
                own.device(),
                Role::Field,
            ),
            "certificate refused",
        ),
    ];
    for (key, cert, why) in cases {
        let mut conn = key.connect(&relay).await.unwrap();
        conn.write_frame(&hello(&cert, PROTOCOL_VERSION, MIN_PROTOCOL_VERSION))
            .await
            .unwrap();
        let (code, reason) = close_of(&mut conn).await;
        assert_eq!(code, CloseCode::Certificate, "{why}: {reason}");
        assert!(reason.contains(why), "{why}: {reason}");
        let error = ended(&mut events, key.device()).await;
        assert!(
            error.starts_with("certificate refused") && error.contains(why),
            "{why}: {error}"
        );
    }
    assert_eq!(snapshot(&relay.node).await, before, "no peer was recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_below_the_floor_and_an_unknown_message_type_are_refused() {
    let relay = relay(TransportSettings::default()).await;
    let before = snapshot(&relay.node).await;
    let mut events = relay.node.subscribe();

    let old = key(21);
    let cert = valid(&relay.hq, old.device(), Role::Field);
    let mut conn = old.connect(&relay).await.unwrap();
    let floor = MIN_PROTOCOL_VERSION - 1;
    conn.write_frame(&hello(&cert, floor, floor)).await.unwrap();
    let (code, reason) = close_of(&mut conn).await;
    assert_eq!(code, CloseCode::Version, "{reason}");
    assert!(
        reason.starts_with(&format!("peer speaks protocol {floor}")),
        "{reason}"
    );
    assert!(ended(&mut events, old.device()).await.contains("protocol"));

    let odd = key(22);
    let mut conn = odd.connect(&relay).await.unwrap();
    conn.write_frame(&[200, 1, 2, 3]).await.unwrap();
    let (code, reason) = close_of(&mut conn).await;
    assert_eq!(code, CloseCode::Protocol, "{reason}");
    assert!(reason.contains("unknown message type 200"), "{reason}");
    assert!(
        ended(&mut events, odd.device())
            .await
            .contains("unknown message type 200")
    );
    assert_eq!(snapshot(&relay.node).await, before);
}

/// Opens a verified session for `key` and waits for the relay's CaughtUp.
async fn open_session(relay: &Relay, key: &Key) -> Connection {
    let cert = valid(&relay.hq, key.device(), Role::Field);
    let mut conn = key.connect(relay).await.unwrap();
    conn.write_frame(&hello(&cert, PROTOCOL_VERSION, MIN_PROTOCOL_VERSION))
        .await
        .unwrap();
    bounded("the relay's log", async {
        loop {
            let frame = conn.read_frame().await.unwrap().unwrap();
            match Message::decode(&frame).unwrap() {
                Message::CaughtUp { .. } => break,
                Message::Close { code, reason } => panic!("closed: {code:?} {reason}"),
                _ => {}
            }
        }
    })
    .await;
    conn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_truncated_frames_are_refused() {
    let settings = TransportSettings {
        handshake_timeout: Duration::from_secs(2),
        ..TransportSettings::default()
    };
    let relay = relay(settings.clone()).await;
    let before = snapshot(&relay.node).await;
    let mut events = relay.node.subscribe();

    // As the opening frame: the listener refuses, no session starts.
    let k = key(31);
    let too_big = u32::try_from(settings.max_opening_frame + 1).unwrap();
    for raw in [too_big.to_be_bytes().to_vec(), vec![0, 0, 0, 50, 1, 2, 3]] {
        let mut conn = k.connect(&relay).await.unwrap();
        conn.stream().write_all(&raw).await.unwrap();
        let _ = conn.stream().writer().shutdown().await;
        let err = bounded("read", conn.read_frame()).await.unwrap_err();
        assert!(matches!(err, TransportError::BadOpening { .. }), "{err:?}");
    }
    assert_eq!(relay.listener.stats().bad_openings, 2);
    assert_eq!(snapshot(&relay.node).await, before);

    // After a valid Hello: the session's decoder refuses a frame header
    // over the limit as soon as it sees it.
    let k = key(32);
    let mut conn = open_session(&relay, &k).await;
    let before = snapshot(&relay.node).await;
    let header = u32::try_from(MAX_FRAME_LEN + 1).unwrap().to_be_bytes();
    conn.stream().write_all(&header).await.unwrap();
    conn.stream().flush().await.unwrap();
    let (code, reason) = close_of(&mut conn).await;
    assert_eq!(code, CloseCode::Protocol, "{reason}");
    assert!(reason.contains("exceeds the limit"), "{reason}");
    assert!(
        ended(&mut events, k.device())
            .await
            .contains(&format!("frame of {} bytes exceeds", MAX_FRAME_LEN + 1))
    );

    // A frame cut short, then the end of the stream: the session ends
    // unfinished and the partial frame is dropped.
    let k = key(33);
    let mut conn = open_session(&relay, &k).await;
    conn.stream()
        .write_all(&[0, 0, 1, 0, 2, 2, 2, 2])
        .await
        .unwrap();
    conn.finish().await.unwrap();
    let error = ended(&mut events, k.device()).await;
    assert!(error.contains("ended before the session did"), "{error}");
    let after = snapshot(&relay.node).await;
    assert_eq!(after.log_head, before.log_head);
    assert_eq!(after.quarantined, before.quarantined);
    assert_eq!(after.cases, before.cases);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_certificate_gets_at_most_its_share_of_connections() {
    let relay = relay(TransportSettings {
        max_connections_per_peer: 2,
        ..TransportSettings::default()
    })
    .await;
    let k = key(41);
    let mut first = open_session(&relay, &k).await;
    let _second = open_session(&relay, &k).await;
    let before = snapshot(&relay.node).await;

    let cert = valid(&relay.hq, k.device(), Role::Field);
    // The listener closes it right after the handshake: the connect, the
    // write or the read after it says why, whichever sees the close first.
    let err = match k.connect(&relay).await {
        Err(e) => e,
        Ok(mut third) => match third
            .write_frame(&hello(&cert, PROTOCOL_VERSION, MIN_PROTOCOL_VERSION))
            .await
        {
            Err(e) => e,
            Ok(()) => bounded("read", third.read_frame()).await.unwrap_err(),
        },
    };
    assert!(
        matches!(&err, TransportError::TooManyConnections { reason } if reason.contains("already holds 2")),
        "{err:?}"
    );
    assert_eq!(relay.listener.stats().refused_per_peer, 1);
    assert_eq!(snapshot(&relay.node).await, before);

    // Another device is not affected; the first two sessions live on and
    // get what the relay stores next.
    let _other = open_session(&relay, &key(42)).await;
    relay
        .node
        .with_engine(|e| {
            e.store()
                .create_case(
                    &NewCase {
                        id: CaseId::from_bytes([10; 16]),
                        kind: CaseKind::CriminalInvestigation,
                        office: "rome",
                        compartment: "general",
                        title: "Manifest",
                    },
                    now(),
                )
                .unwrap();
            e.log_grew();
        })
        .await
        .unwrap();
    let batch = bounded("a live batch", async {
        loop {
            let frame = first.read_frame().await.unwrap().unwrap();
            if let Message::Batch(b) = Message::decode(&frame).unwrap()
                && !b.geneses.is_empty()
            {
                return b;
            }
        }
    })
    .await;
    assert_eq!(batch.geneses.len(), 1);
}

/// Reads messages from a raw QUIC session stream until one that `want`s.
async fn read_until(recv: &mut quinn::RecvStream, want: impl Fn(&Message) -> bool) -> Message {
    bounded("a message", async {
        loop {
            let frame = fieldsync_transport::read_frame(recv)
                .await
                .unwrap()
                .unwrap();
            let msg = Message::decode(&frame).unwrap();
            if want(&msg) {
                return msg;
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_streams_are_blocked_or_refused_and_the_session_goes_on() {
    let relay = relay(TransportSettings::default()).await;
    let k = key(51);
    let cert = valid(&relay.hq, k.device(), Role::Field);

    // A raw QUIC client, so that it can open streams of its own.
    let mut tls = quinn::rustls::ClientConfig::builder_with_provider(Arc::new(
        quinn::rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&quinn::rustls::version::TLS13])
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(fieldsync_transport::danger::ServerKeyVerifier::new(
        PeerPolicy::accept_any(),
    ))
    .with_client_auth_cert(k.identity.cert_chain(), k.identity.private_key())
    .unwrap();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let config = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(tls)).unwrap(),
    ));
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let conn = bounded(
        "connect",
        endpoint
            .connect_with(config, relay.addr, "127.0.0.1")
            .unwrap(),
    )
    .await
    .unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    fieldsync_transport::write_frame(
        &mut send,
        &hello(&cert, PROTOCOL_VERSION, MIN_PROTOCOL_VERSION),
    )
    .await
    .unwrap();
    read_until(&mut recv, |m| matches!(m, Message::CaughtUp { .. })).await;

    // Three more streams, each stuffed with a megabyte: refused at once.
    let mut extra = Vec::new();
    for _ in 0..3 {
        let (mut s, r) = conn.open_bi().await.unwrap();
        let err = bounded("refused", async {
            loop {
                if let Err(e) = s.write(&[7u8; 64 * 1024]).await {
                    break e;
                }
            }
        })
        .await;
        assert_eq!(
            err,
            quinn::WriteError::Stopped(quinn::VarInt::from_u32(close_code::STREAM_REFUSED))
        );
        extra.push((s, r));
    }
    // A fifth concurrent stream is blocked by QUIC's limit.
    let blocked = tokio::time::timeout(Duration::from_millis(300), conn.open_bi()).await;
    assert!(blocked.is_err(), "a fifth concurrent stream was allowed");
    assert_eq!(relay.listener.stats().streams_refused, 3);

    // The session itself still works: a live change arrives on it.
    relay
        .node
        .with_engine(|e| {
            e.store()
                .create_case(
                    &NewCase {
                        id: CaseId::from_bytes([11; 16]),
                        kind: CaseKind::CriminalInvestigation,
                        office: "rome",
                        compartment: "general",
                        title: "Stele",
                    },
                    now(),
                )
                .unwrap();
            e.log_grew();
        })
        .await
        .unwrap();
    read_until(
        &mut recv,
        |m| matches!(m, Message::Batch(b) if !b.geneses.is_empty()),
    )
    .await;
}

#[test]
fn the_transport_and_the_protocol_agree_on_frame_limits() {
    assert_eq!(MAX_FRAME_LEN, fieldsync_transport::MAX_FRAME);
    // A Hello with a large certificate (longest name and office, a hundred
    // compartments) fits the listener's opening frame with room to spare.
    let hq = HqRoot::from_secret(SecretKey::from_seed(&[3; 32]));
    let compartments: Vec<Compartment> = (0..100)
        .map(|i| Compartment::new(&format!("compartment-{i:03}")).unwrap())
        .collect();
    let cert = hq
        .issue(CertificateBody {
            version: CERTIFICATE_VERSION,
            serial: u64::MAX,
            issuer: hq.public(),
            device: key(4).device(),
            name: "n".repeat(256),
            office: "o".repeat(256),
            role: Role::Supervisor,
            read: compartments.clone(),
            write: compartments,
            not_before: now(),
            not_after: Timestamp::from_millis(now().as_millis() + 1000),
        })
        .unwrap();
    let frame = hello(&cert, PROTOCOL_VERSION, MIN_PROTOCOL_VERSION);
    let opening = TransportSettings::default().max_opening_frame;
    assert!(frame.len() * 8 < opening, "{} bytes", frame.len());
}
