//! Frames prepared apart from the session ([`Inbound::decode`], as the node
//! does on its connection tasks) are handled exactly as the raw bytes are,
//! good and bad alike; and a relay whose log grows with what a peer may not
//! read moves that peer's cursor with one position-only batch at a time.
//! Real (in-memory redb) stores, real certificates and real signatures.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fieldsync_case::{CaseKind, Field};
use fieldsync_identity::{
    CERTIFICATE_VERSION, CaseId, CertificateBody, Compartment, DeviceCertificate, DeviceId, HqRoot,
    Role, SecretKey, Timestamp,
};
use fieldsync_protocol::{
    Authority, DEFAULT_MAX_IN_FLIGHT, Event, FrameDecoder, Inbound, Message, NodeRole, Session,
    SessionConfig,
};
use fieldsync_store::{NewCase, NewDevice, Store, StoreKind};

const T0: i64 = 1_790_000_000_000;

fn t(s: i64) -> Timestamp {
    Timestamp::from_millis(T0 + s * 1000)
}

struct Node {
    store: Store,
    cert: DeviceCertificate,
    role: NodeRole,
    hq: HqRoot,
}

impl Node {
    fn id(&self) -> DeviceId {
        self.store.device().id()
    }

    fn config(&self) -> SessionConfig {
        SessionConfig {
            role: self.role,
            certificate: self.cert.clone(),
            authority: Authority::new(self.hq.public(), None),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            deferred_commits: false,
        }
    }

    fn session(&self, peer: &Node) -> Session {
        Session::new(self.config(), &self.store, peer.id(), t(5)).unwrap()
    }
}

fn hq() -> HqRoot {
    HqRoot::from_secret(SecretKey::from_seed(&[200; 32]))
}

fn node(seed: u8, role: Role, units: &[&str]) -> Node {
    let hq = hq();
    let store = Store::create_in_memory(NewDevice {
        seed: [seed; 32],
        name: &format!("node-{seed}"),
        epoch: [seed; 16],
        now: t(0),
        kind: if role == Role::Relay {
            StoreKind::Relay
        } else {
            StoreKind::Device
        },
    })
    .unwrap();
    let units: Vec<Compartment> = units.iter().map(|u| Compartment::new(u).unwrap()).collect();
    let cert = hq
        .issue(CertificateBody {
            version: CERTIFICATE_VERSION,
            serial: u64::from(seed),
            issuer: hq.public(),
            device: store.device().id(),
            name: format!("node-{seed}"),
            office: "rome".into(),
            role,
            read: units.clone(),
            write: if role == Role::Relay {
                Vec::new()
            } else {
                units
            },
            not_before: t(-10),
            not_after: t(86_400),
        })
        .unwrap();
    Node {
        store,
        cert,
        role: if role == Role::Relay {
            NodeRole::Relay
        } else {
            NodeRole::Device
        },
        hq,
    }
}

/// A device writing `changes` changes over three cases of `unit`.
fn device(seed: u8, unit: &str, changes: usize) -> Node {
    let d = node(seed, Role::Field, &[unit]);
    let cases: Vec<CaseId> = (0..3u8)
        .map(|k| {
            d.store
                .create_case(
                    &NewCase {
                        id: CaseId::from_bytes([seed.wrapping_mul(16).wrapping_add(k); 16]),
                        kind: CaseKind::CriminalInvestigation,
                        office: "rome",
                        compartment: unit,
                        title: "Shipment",
                    },
                    t(1),
                )
                .unwrap()
        })
        .collect();
    for i in 3..changes {
        d.store
            .edit_case(&cases[i % 3], t(2), "note", |doc| {
                doc.set_field(Field::Title, &format!("Shipment {i}"))
            })
            .unwrap();
    }
    d
}

fn frames(s: &mut Session) -> Vec<Vec<u8>> {
    std::iter::from_fn(|| s.poll_transmit()).collect()
}

fn events(s: &mut Session) -> Vec<Event> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

/// How a side takes its peer's frames: raw bytes, or prepared apart.
#[derive(Clone, Copy)]
enum Feed {
    Raw,
    Prepared,
}

fn feed(
    s: &mut Session,
    n: &Node,
    how: Feed,
    frame: &[u8],
) -> Result<(), fieldsync_protocol::SessionError> {
    match how {
        Feed::Raw => s.handle_input(&n.store, frame, t(5)),
        Feed::Prepared => {
            let mut decoder = FrameDecoder::new();
            decoder.push(frame);
            let mut result = Ok(());
            loop {
                let inbound = match decoder.next_frame() {
                    Ok(Some(f)) => Inbound::decode(&f, &n.hq.public()),
                    Ok(None) => break,
                    Err(e) => Inbound::from(e),
                };
                result = s.handle_inbound(&n.store, inbound, t(5));
                if result.is_err() || s.is_closed() {
                    break;
                }
            }
            result
        }
    }
}

/// Runs `a` (a device) against `b` (a relay) until neither sends; `b`
/// takes `a`'s frames as `how` says. Returns `b`'s events.
fn push(a: &Node, b: &Node, how: Feed) -> Vec<Event> {
    let mut sa = a.session(b);
    let mut sb = b.session(a);
    for _ in 0..100 {
        let fa = frames(&mut sa);
        let fb = frames(&mut sb);
        if fa.is_empty() && fb.is_empty() {
            assert!(sa.is_synced() && sb.is_synced(), "idle but not synced");
            return events(&mut sb);
        }
        for f in fa {
            feed(&mut sb, b, how, &f).unwrap();
        }
        for f in fb {
            sa.handle_input(&a.store, &f, t(5)).unwrap();
        }
    }
    panic!("the sync does not settle");
}

#[test]
fn prepared_frames_store_what_the_raw_bytes_store() {
    let d = device(1, "unit-a", 700); // more than one batch
    let raw = node(9, Role::Relay, &["unit-a"]);
    let prepared = node(9, Role::Relay, &["unit-a"]);
    let by_raw = push(&d, &raw, Feed::Raw);
    let by_prepared = push(&d, &prepared, Feed::Prepared);
    assert_eq!(by_raw, by_prepared);
    let stored: usize = by_prepared
        .iter()
        .map(|e| match e {
            Event::Stored { report, .. } => report.stored,
            _ => 0,
        })
        .sum();
    assert_eq!(stored, 700);
    assert_eq!(prepared.store.log_head().unwrap(), 700);
    assert_eq!(
        raw.store.peer_cursor(&d.id()).unwrap(),
        prepared.store.peer_cursor(&d.id()).unwrap()
    );
}

/// The relay's session with `d`, and `d`'s hello and first batch frames.
fn first_batch(d: &Node, r: &Node) -> (Session, Vec<u8>, Vec<u8>) {
    let mut sd = d.session(r);
    let mut sr = r.session(d);
    for f in frames(&mut sr) {
        sd.handle_input(&d.store, &f, t(5)).unwrap();
    }
    let mut out = frames(&mut sd).into_iter();
    let hello = out.next().expect("a hello");
    let batch = out
        .find(|f| matches!(Message::decode(&f[4..]), Ok(Message::Batch(_))))
        .expect("a batch");
    (sr, hello, batch)
}

#[test]
fn a_forged_batch_is_refused_alike_whether_prepared_or_not() {
    let d = device(2, "unit-a", 20);
    let mut outcomes = Vec::new();
    for how in [Feed::Raw, Feed::Prepared] {
        let r = node(9, Role::Relay, &["unit-a"]);
        let (mut sr, hello, batch) = first_batch(&d, &r);
        let Ok(Message::Batch(mut b)) = Message::decode(&batch[4..]) else {
            panic!("not a batch");
        };
        // A byte of the last change's signature (after the format byte,
        // the case id and the signer's key), flipped.
        let last = b.changes.last_mut().unwrap();
        last[1 + 16 + 32 + 5] ^= 1;
        let forged = Message::Batch(b).to_frame();
        feed(&mut sr, &r, how, &hello).unwrap();
        let err = feed(&mut sr, &r, how, &forged).unwrap_err().to_string();
        assert!(sr.is_closed());
        assert_eq!(r.store.log_head().unwrap(), 0, "nothing of it is stored");
        let closed: Vec<Event> = events(&mut sr)
            .into_iter()
            .filter(|e| matches!(e, Event::Closed { .. }))
            .collect();
        outcomes.push((err, closed));
    }
    assert!(outcomes[0].0.contains("forged"), "{}", outcomes[0].0);
    assert_eq!(outcomes[0], outcomes[1]);
}

#[test]
fn a_bad_frame_is_refused_alike_whether_prepared_or_not() {
    let d = device(3, "unit-a", 10);
    let mut outcomes = Vec::new();
    for how in [Feed::Raw, Feed::Prepared] {
        let r = node(9, Role::Relay, &["unit-a"]);
        let mut sr = r.session(&d);
        let mut sd = d.session(&r);
        feed(&mut sr, &r, how, &frames(&mut sd).remove(0)).unwrap();
        // A length prefix beyond the limit, then garbage inside a good length.
        let too_long = feed(&mut sr, &r, how, &[0xff, 0xff, 0xff, 0xff]);
        let mut sr2 = r.session(&d);
        let garbage = feed(&mut sr2, &r, how, &[0, 0, 0, 3, 0xee, 1, 2]);
        outcomes.push((
            too_long.unwrap_err().to_string(),
            garbage.unwrap_err().to_string(),
            sr.is_closed() && sr2.is_closed(),
        ));
    }
    assert!(outcomes[0].2);
    assert_eq!(outcomes[0], outcomes[1]);
}

/// Position-only batches among `frames`, with the position each brings the peer to.
fn positions(frames: &[Vec<u8>]) -> Vec<u64> {
    frames
        .iter()
        .filter_map(|f| match Message::decode(&f[4..]) {
            Ok(Message::Batch(b)) if b.is_empty() => Some(b.through),
            _ => None,
        })
        .collect()
}

#[test]
fn a_log_grown_with_what_a_peer_may_not_read_moves_it_one_batch_at_a_time() {
    let r = node(9, Role::Relay, &["unit-a", "unit-b"]);
    let a = device(4, "unit-a", 5);
    // Device a syncs with the relay and stays connected.
    let mut sa = a.session(&r);
    let mut sr = r.session(&a);
    let settle = |sa: &mut Session, sr: &mut Session| {
        let mut sent = Vec::new();
        for _ in 0..50 {
            let fa = frames(sa);
            let fr = frames(sr);
            if fa.is_empty() && fr.is_empty() {
                return sent;
            }
            for f in fa {
                sr.handle_input(&r.store, &f, t(5)).unwrap();
            }
            for f in &fr {
                sa.handle_input(&a.store, f, t(5)).unwrap();
            }
            sent.extend(fr);
        }
        panic!("does not settle");
    };
    settle(&mut sa, &mut sr);
    assert!(sa.is_synced() && sr.is_synced());
    // Three other devices push what device a may not read; the relay's
    // session with a hears of each growth, and a's acknowledgements are
    // held back meanwhile.
    let mut told = Vec::new();
    for seed in 5..8 {
        let b = device(seed, "unit-b", 30);
        push(&b, &r, Feed::Raw);
        sr.handle_log_grew(&r.store, t(5)).unwrap();
        told.extend(frames(&mut sr));
    }
    let head = r.store.log_head().unwrap();
    assert_eq!(head, 5 + 90);
    let first = positions(&told);
    assert_eq!(
        first.len(),
        1,
        "one position-only batch in flight: {first:?}"
    );
    assert!(first[0] < head);
    assert!(!sr.is_synced());
    // Its acknowledgement brings one more, covering every growth since.
    for f in &told {
        sa.handle_input(&a.store, f, t(5)).unwrap();
    }
    let rest = settle(&mut sa, &mut sr);
    assert_eq!(positions(&rest), vec![head]);
    assert!(sa.is_synced() && sr.is_synced());
    let cursor = a.store.peer_cursor(&r.id()).unwrap().unwrap();
    assert_eq!(cursor.seq, head, "a's cursor reaches the relay's head");
}
