//! The bad-input catalogue, frame half, in the sans-IO engine: a relay's
//! real [`Session`] (in-memory redb store, real certificates) is fed bad
//! frames as the first thing a peer sends, or right after a good `Hello`.
//! Each gets its named error and a `Close` with its code, and the relay's
//! store is left as it was. The same inputs over real QUIC, with the
//! listener's own limits (opening frame, connections per key, streams), are
//! in `crates/node/tests/refusals.rs` and `crates/transport/tests/limits.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fieldsync_case::CaseKind;
use fieldsync_identity::{
    CERTIFICATE_VERSION, CaseId, CertificateBody, Compartment, DeviceCertificate, DeviceId, HqRoot,
    Role, SecretKey, Timestamp,
};
use fieldsync_protocol::{
    Authority, CloseCode, DEFAULT_MAX_IN_FLIGHT, FrameDecoder, Hello, MAX_FRAME_LEN,
    MIN_PROTOCOL_VERSION, Message, NodeRole, PROTOCOL_VERSION, Session, SessionConfig,
    SessionError, WireError,
};
use fieldsync_store::{NewCase, NewDevice, Store, StoreKind};

const T0: i64 = 1_790_000_000_000;

fn now() -> Timestamp {
    Timestamp::from_millis(T0)
}

fn hq() -> HqRoot {
    HqRoot::from_secret(SecretKey::from_seed(&[200; 32]))
}

fn cert(device: DeviceId, role: Role) -> DeviceCertificate {
    let general = vec![Compartment::new("general").unwrap()];
    let write = if role.can_author_changes() {
        general.clone()
    } else {
        Vec::new()
    };
    hq().issue(CertificateBody {
        version: CERTIFICATE_VERSION,
        serial: 1,
        issuer: hq().public(),
        device,
        name: "node".into(),
        office: "rome".into(),
        role,
        read: general,
        write,
        not_before: Timestamp::from_millis(T0 - 3_600_000),
        not_after: Timestamp::from_millis(T0 + 86_400_000),
    })
    .unwrap()
}

/// A relay store with one case in its log.
fn relay_store() -> Store {
    let store = Store::create_in_memory(NewDevice {
        seed: [1; 32],
        name: "relay",
        epoch: [1; 16],
        now: now(),
        kind: StoreKind::Relay,
    })
    .unwrap();
    store
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
    store
}

/// The device at the other end.
fn device() -> DeviceId {
    DeviceId::from_public_key(SecretKey::from_seed(&[2; 32]).public())
}

fn relay_session(store: &Store) -> Session {
    let relay = store.device().id();
    Session::new(
        SessionConfig {
            role: NodeRole::Relay,
            certificate: cert(relay, Role::Relay),
            authority: Authority::new(hq().public(), None),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            deferred_commits: false,
        },
        store,
        device(),
        now(),
    )
    .unwrap()
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = u32::try_from(body.len()).unwrap().to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

fn hello(version: u16, min_version: u16) -> Vec<u8> {
    Message::Hello(Hello {
        version,
        min_version,
        role: NodeRole::Device,
        certificate: cert(device(), Role::Field).to_bytes(),
        epoch: [2; 16],
        head: 0,
        want: None,
        revocations: 0,
    })
    .to_frame()
}

/// What a bad frame must leave as it was.
#[derive(Debug, PartialEq, Eq)]
struct State {
    log_head: u64,
    peers: usize,
    quarantined: usize,
    cases: usize,
    cursor: bool,
}

fn state(store: &Store) -> State {
    State {
        log_head: store.log_head().unwrap(),
        peers: store.peers().unwrap().len(),
        quarantined: store.quarantine().unwrap().len(),
        cases: store.list_cases().unwrap().len(),
        cursor: store.peer_cursor(&device()).unwrap().is_some(),
    }
}

/// Drains what the session sent; returns the `Close` among it.
fn sent_close(s: &mut Session) -> Option<(CloseCode, String)> {
    let mut dec = FrameDecoder::new();
    while let Some(bytes) = s.poll_transmit() {
        dec.push(&bytes);
    }
    let mut close = None;
    while let Some(f) = dec.next_frame().unwrap() {
        if let Message::Close { code, reason } = Message::decode(&f).unwrap() {
            close = Some((code, reason));
        }
    }
    close
}

/// Feeds `bytes` to a fresh relay session, as the first input or after a
/// good `Hello`; returns the error and the `Close` it sent.
fn feed(after_hello: bool, bytes: &[u8]) -> (SessionError, (CloseCode, String), Session) {
    let store = relay_store();
    let mut s = relay_session(&store);
    if after_hello {
        s.handle_input(
            &store,
            &hello(PROTOCOL_VERSION, MIN_PROTOCOL_VERSION),
            now(),
        )
        .unwrap();
        assert!(sent_close(&mut s).is_none());
    }
    let before = state(&store);
    let err = s.handle_input(&store, bytes, now()).unwrap_err();
    assert!(s.is_closed());
    let close = sent_close(&mut s).expect("a Close was sent");
    assert_eq!(state(&store), before, "{err}");
    assert!(matches!(
        s.handle_input(
            &store,
            &hello(PROTOCOL_VERSION, MIN_PROTOCOL_VERSION),
            now()
        ),
        Err(SessionError::Closed)
    ));
    assert_eq!(state(&store), before, "nothing after the close either");
    (err, close, s)
}

#[test]
fn an_oversized_frame_is_refused_when_its_header_arrives() {
    for after_hello in [false, true] {
        let header = u32::try_from(MAX_FRAME_LEN + 1).unwrap().to_be_bytes();
        // The header alone: none of the announced bytes are awaited.
        let (err, (code, reason), _) = feed(after_hello, &header);
        assert!(
            matches!(
                &err,
                SessionError::Wire(WireError::FrameTooLarge { len, limit: MAX_FRAME_LEN })
                    if *len == MAX_FRAME_LEN + 1
            ),
            "{err:?}"
        );
        assert_eq!(code, CloseCode::Protocol);
        assert!(reason.contains("exceeds the limit"), "{reason}");
    }
    // A frame of exactly the limit is not refused for its size.
    let mut dec = FrameDecoder::new();
    dec.push(&u32::try_from(MAX_FRAME_LEN).unwrap().to_be_bytes());
    assert_eq!(dec.next_frame(), Ok(None));
}

#[test]
fn a_truncated_frame_is_held_and_never_acted_on() {
    let store = relay_store();
    let mut s = relay_session(&store);
    let before = state(&store);
    let good = hello(PROTOCOL_VERSION, MIN_PROTOCOL_VERSION);
    // Every proper prefix of a good Hello: held, nothing happens.
    for cut in [1, 3, 4, 5, good.len() / 2, good.len() - 1] {
        let mut dec = FrameDecoder::new();
        dec.push(&good[..cut]);
        assert_eq!(dec.next_frame(), Ok(None), "cut at {cut}");
        assert_eq!(dec.buffered(), cut);
    }
    s.handle_input(&store, &good[..good.len() - 1], now())
        .unwrap();
    assert!(!s.is_closed());
    assert!(sent_close(&mut s).is_none());
    assert_eq!(state(&store), before, "the cut Hello did nothing");
    // The last byte completes it: only now is the peer recorded.
    s.handle_input(&store, &good[good.len() - 1..], now())
        .unwrap();
    assert_eq!(state(&store).peers, before.peers + 1);
    // A cut frame after that is held too, and the session goes on.
    let later = frame(&Message::CaughtUp { head: 0 }.encode());
    s.handle_input(&store, &later[..later.len() - 1], now())
        .unwrap();
    assert!(!s.is_closed());
}

#[test]
fn an_unknown_message_type_is_refused() {
    for after_hello in [false, true] {
        let (err, (code, reason), _) = feed(after_hello, &frame(&[200, 1, 2, 3]));
        assert!(
            matches!(err, SessionError::Wire(WireError::UnknownType(200))),
            "{err:?}"
        );
        assert_eq!(code, CloseCode::Protocol);
        assert!(reason.contains("unknown message type 200"), "{reason}");
    }
}

#[test]
fn an_empty_or_malformed_frame_is_refused() {
    let (err, (code, _), _) = feed(false, &[0, 0, 0, 0]);
    assert!(
        matches!(err, SessionError::Wire(WireError::Empty)),
        "{err:?}"
    );
    assert_eq!(code, CloseCode::Protocol);
    // A Hello tag with a body that does not decode.
    let (err, (code, _), _) = feed(false, &frame(&[1, 0xff, 0xff, 0xff]));
    assert!(
        matches!(
            err,
            SessionError::Wire(WireError::Malformed { what: "hello", .. })
        ),
        "{err:?}"
    );
    assert_eq!(code, CloseCode::Protocol);
}

#[test]
fn a_version_below_the_floor_is_refused() {
    let floor = MIN_PROTOCOL_VERSION - 1;
    let (err, (code, reason), _) = feed(false, &hello(floor, floor));
    assert!(
        matches!(
            err,
            SessionError::Version { version, ours: PROTOCOL_VERSION, our_min: MIN_PROTOCOL_VERSION, .. }
                if version == floor
        ),
        "{err:?}"
    );
    assert_eq!(code, CloseCode::Version);
    assert!(
        reason.starts_with(&format!("peer speaks protocol {floor}")),
        "{reason}"
    );
    // A peer that accepts only versions above ours is refused the same way.
    let (err, (code, _), _) = feed(false, &hello(PROTOCOL_VERSION + 1, PROTOCOL_VERSION + 1));
    assert!(matches!(err, SessionError::Version { .. }), "{err:?}");
    assert_eq!(code, CloseCode::Version);
    // The floor itself is accepted.
    let store = relay_store();
    let mut s = relay_session(&store);
    s.handle_input(
        &store,
        &hello(MIN_PROTOCOL_VERSION, MIN_PROTOCOL_VERSION),
        now(),
    )
    .unwrap();
    assert!(sent_close(&mut s).is_none());
}

#[test]
fn anything_but_a_hello_first_is_refused() {
    let (err, (code, reason), _) = feed(false, &frame(&Message::CaughtUp { head: 3 }.encode()));
    assert!(matches!(err, SessionError::Protocol(_)), "{err:?}");
    assert_eq!(code, CloseCode::Protocol);
    assert!(reason.contains("unexpected caught-up"), "{reason}");
}
