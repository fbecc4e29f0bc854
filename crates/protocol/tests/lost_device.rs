//! Lost devices, with real engines over an in-memory pipe, real (in-memory
//! redb) stores and real signatures: headquarters' wipe orders travel from
//! headquarters through an office to their device and nowhere else; forged,
//! expired, replayed or foreign orders change nothing but the audit log; a
//! revoked device with a pending order gets the order and nothing else; a
//! device records each contact with a relay that accepted it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fieldsync_case::CaseKind;
use fieldsync_identity::{
    CERTIFICATE_VERSION, CaseId, CertificateBody, Compartment, DeviceCertificate, DeviceId,
    HQ_OFFICE, HqRoot, Revocation, Role, SecretKey, Timestamp, WipeOrder,
};
use fieldsync_protocol::{
    Authority, CloseCode, DEFAULT_MAX_IN_FLIGHT, Event, Hello, MAX_IGNORED_ORDERS, Message,
    NodeRole, Session, SessionConfig, SessionError,
};
use fieldsync_store::{AuditKind, NewCase, NewDevice, Store, StoreKind};

const T0: i64 = 1_790_000_000_000;

fn t(s: i64) -> Timestamp {
    Timestamp::from_millis(T0 + s * 1000)
}

struct Node {
    store: Store,
    cert: DeviceCertificate,
    role: NodeRole,
    authority: Authority,
}

impl Node {
    fn id(&self) -> DeviceId {
        self.store.device().id()
    }

    fn config(&self) -> SessionConfig {
        SessionConfig {
            role: self.role,
            certificate: self.cert.clone(),
            authority: self.authority.clone(),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            deferred_commits: false,
        }
    }
}

struct World {
    hq: HqRoot,
    serial: u64,
}

impl World {
    fn new() -> Self {
        Self {
            hq: HqRoot::from_secret(SecretKey::from_seed(&[200; 32])),
            serial: 0,
        }
    }

    fn node(&mut self, seed: u8, office: &str, role: Role) -> Node {
        let kind = match role {
            Role::Relay => StoreKind::Relay,
            _ => StoreKind::Device,
        };
        let store = Store::create_in_memory(NewDevice {
            seed: [seed; 32],
            name: office,
            epoch: [seed; 16],
            now: t(0),
            kind,
        })
        .unwrap();
        self.serial += 1;
        let general: Compartment = "general".parse().unwrap();
        let cert = self
            .hq
            .issue(CertificateBody {
                version: CERTIFICATE_VERSION,
                serial: self.serial,
                issuer: self.hq.public(),
                device: store.device().id(),
                name: format!("node {seed}"),
                office: office.into(),
                role,
                read: vec![general.clone()],
                write: vec![general],
                not_before: t(-10),
                not_after: t(86_400 * 365),
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
            authority: Authority::new(self.hq.public(), None),
        }
    }

    fn order(&self, device: &Node, nonce: u8, issued: Timestamp, days: u32) -> WipeOrder {
        self.hq
            .order_wipe(
                device.id(),
                [nonce; 16],
                issued,
                days,
                "seized at the border",
            )
            .unwrap()
    }
}

/// What one session between `a` (connecting) and `b` did.
struct Run {
    /// `a`'s events and `b`'s.
    ea: Vec<Event>,
    eb: Vec<Event>,
    /// Messages `b` sent `a`, in order.
    b_to_a: Vec<Message>,
    /// The first error either side returned.
    outcome: Result<(), String>,
}

/// Runs a session until neither side has anything to send (a side may
/// close it: no "synced" is required).
fn run(a: &Node, b: &Node, now: Timestamp) -> Run {
    let mut sa = Session::new(a.config(), &a.store, b.id(), now).unwrap();
    let mut sb = Session::new(b.config(), &b.store, a.id(), now).unwrap();
    let mut outcome = Ok(());
    let mut b_to_a = Vec::new();
    for _ in 0..1000 {
        let fa: Vec<Vec<u8>> = std::iter::from_fn(|| sa.poll_transmit()).collect();
        let fb: Vec<Vec<u8>> = std::iter::from_fn(|| sb.poll_transmit()).collect();
        if fa.is_empty() && fb.is_empty() {
            let ea = std::iter::from_fn(|| sa.poll_event()).collect();
            let eb = std::iter::from_fn(|| sb.poll_event()).collect();
            return Run {
                ea,
                eb,
                b_to_a,
                outcome,
            };
        }
        for f in fa {
            if !sb.is_closed()
                && let Err(e) = sb.handle_input(&b.store, &f, now)
                && outcome.is_ok()
            {
                outcome = Err(format!("b: {e}"));
            }
        }
        for f in fb {
            b_to_a.push(Message::decode(&f[4..]).unwrap());
            if !sa.is_closed()
                && let Err(e) = sa.handle_input(&a.store, &f, now)
                && outcome.is_ok()
            {
                outcome = Err(format!("a: {e}"));
            }
        }
    }
    panic!("the session does not settle");
}

fn new_case(n: &Node, id: u8, title: &str) -> CaseId {
    n.store
        .create_case(
            &NewCase {
                id: CaseId::from_bytes([id; 16]),
                kind: CaseKind::CriminalInvestigation,
                office: "rome",
                compartment: "general",
                title,
            },
            t(1),
        )
        .unwrap()
}

fn wipe_orders(messages: &[Message]) -> Vec<WipeOrder> {
    let hq = HqRoot::from_secret(SecretKey::from_seed(&[200; 32])).public();
    messages
        .iter()
        .filter_map(|m| match m {
            Message::WipeOrder(b) => Some(WipeOrder::from_bytes(b, &hq).unwrap()),
            _ => None,
        })
        .collect()
}

fn ordered(events: &[Event]) -> Vec<&WipeOrder> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::WipeOrdered { order } => Some(order),
            _ => None,
        })
        .collect()
}

/// Everything a device's store holds that an ignored order must not change.
fn fingerprint(s: &Store) -> String {
    format!(
        "{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
        s.log_head().unwrap(),
        s.list_cases().unwrap(),
        s.quarantine().unwrap(),
        s.pending_wipe().unwrap(),
        s.outbox_len().unwrap(),
        s.revocations().unwrap(),
        s.last_relay_contact().unwrap(),
    )
}

fn audit_kinds(s: &Store) -> Vec<AuditKind> {
    s.audit_log().unwrap().iter().map(|e| e.kind).collect()
}

#[test]
fn headquarters_order_reaches_its_device_through_an_office() {
    let mut w = World::new();
    let hq = w.node(1, HQ_OFFICE, Role::Relay);
    let office = w.node(2, "rome", Role::Relay);
    let lost = w.node(3, "rome", Role::Field);
    let other = w.node(4, "rome", Role::Field);
    new_case(&lost, 1, "Stele");
    run(&lost, &office, t(1)).outcome.unwrap();
    assert_eq!(lost.store.last_relay_contact().unwrap(), Some(t(1)));

    let order = w.order(&lost, 7, t(2), 30);
    hq.store.issue_wipe_order(&order, t(2)).unwrap();
    // Headquarters to the office.
    let up = run(&office, &hq, t(3));
    up.outcome.unwrap();
    assert_eq!(wipe_orders(&up.b_to_a), std::slice::from_ref(&order));
    assert!(
        up.ea
            .iter()
            .any(|e| matches!(e, Event::WipeOrderHeld { device } if *device == lost.id()))
    );
    assert_eq!(
        office.store.held_wipe_order(&lost.id()).unwrap(),
        Some(order.to_bytes())
    );
    // A second session carries nothing new.
    let again = run(&office, &hq, t(4));
    assert!(
        !again
            .ea
            .iter()
            .any(|e| matches!(e, Event::WipeOrderHeld { .. }))
    );

    // Another device of the office gets no order, and nothing of the lost one's.
    let o = run(&other, &office, t(5));
    o.outcome.unwrap();
    assert!(wipe_orders(&o.b_to_a).is_empty());
    assert!(ordered(&o.ea).is_empty());
    assert_eq!(other.store.pending_wipe().unwrap(), None);

    // The lost device: the order comes first, before anything else the
    // office sends but its hello; it accepts and closes.
    let before = lost.store.log_head().unwrap();
    let d = run(&lost, &office, t(6));
    d.outcome.unwrap();
    assert!(matches!(d.b_to_a[0], Message::Hello(_)));
    assert!(
        matches!(d.b_to_a[1], Message::WipeOrder(_)),
        "{:?}",
        d.b_to_a[1]
    );
    assert_eq!(ordered(&d.ea), [&order]);
    assert!(d.ea.iter().any(|e| matches!(
        e,
        Event::Closed { code: CloseCode::Done, by_peer: false, reason } if reason.contains("wiped")
    )));
    let pending = lost.store.pending_wipe().unwrap().unwrap();
    assert_eq!(pending.order, order.to_bytes());
    assert_eq!(pending.accepted_at, t(6));
    assert_eq!(lost.store.log_head().unwrap(), before);
    assert!(audit_kinds(&lost.store).contains(&AuditKind::WipeOrdered));
    // The office recorded the delivery.
    assert!(d.eb.iter().any(|e| matches!(
        e,
        Event::WipeOrderDelivered { device, refused: false } if *device == lost.id()
    )));
    let delivery = office.store.wipe_delivery(&lost.id()).unwrap().unwrap();
    assert_eq!((delivery.nonce, delivery.first_at), ([7; 16], t(6)));
    assert!(audit_kinds(&office.store).contains(&AuditKind::WipeDelivered));
    assert!(audit_kinds(&office.store).contains(&AuditKind::WipeHeld));

    // The order comes again (the device stopped before it could wipe): it
    // is still pending, and obeyed again, not logged as a replay.
    let again = run(&lost, &office, t(7));
    assert_eq!(ordered(&again.ea), [&order]);
    assert!(!audit_kinds(&lost.store).contains(&AuditKind::WipeIgnored));
}

#[test]
fn a_relay_sends_a_device_only_its_own_order() {
    let mut w = World::new();
    let hq = w.node(1, HQ_OFFICE, Role::Relay);
    let a = w.node(3, "rome", Role::Field);
    let b = w.node(4, "rome", Role::Field);
    let c = w.node(5, "rome", Role::Field);
    let for_a = w.order(&a, 1, t(1), 30);
    let for_b = w.order(&b, 2, t(1), 30);
    hq.store.issue_wipe_order(&for_a, t(1)).unwrap();
    hq.store.issue_wipe_order(&for_b, t(1)).unwrap();
    for (device, expected) in [
        (&a, vec![for_a.clone()]),
        (&b, vec![for_b.clone()]),
        (&c, vec![]),
    ] {
        let r = run(device, &hq, t(2));
        r.outcome.unwrap();
        assert_eq!(wipe_orders(&r.b_to_a), expected);
    }
    // An expired order is no longer carried.
    let d = w.node(6, "rome", Role::Field);
    hq.store
        .issue_wipe_order(&w.order(&d, 3, t(1), 1), t(1))
        .unwrap();
    let late = t(2 * 86_400);
    let r = run(&d, &hq, late);
    r.outcome.unwrap();
    assert!(wipe_orders(&r.b_to_a).is_empty());
    assert_eq!(d.store.pending_wipe().unwrap(), None);
}

/// What a node did with one order injected into a settled session.
struct Fed {
    events: Vec<Event>,
    closed: bool,
    /// The node's [`fingerprint`] and audit length once the session had
    /// settled, just before the order arrived.
    before: String,
    audit_before: usize,
}

/// Opens a session from `relay` to `node`, settles it, then hands `node`
/// `bytes` as a wipe order from the relay.
fn feed_order(node: &Node, relay: &Node, bytes: Vec<u8>, now: Timestamp) -> Fed {
    let mut sd = Session::new(node.config(), &node.store, relay.id(), now).unwrap();
    let mut sr = Session::new(relay.config(), &relay.store, node.id(), now).unwrap();
    for _ in 0..100 {
        let fd: Vec<Vec<u8>> = std::iter::from_fn(|| sd.poll_transmit()).collect();
        let fr: Vec<Vec<u8>> = std::iter::from_fn(|| sr.poll_transmit()).collect();
        if fd.is_empty() && fr.is_empty() {
            break;
        }
        for f in fd {
            sr.handle_input(&relay.store, &f, now).unwrap();
        }
        for f in fr {
            sd.handle_input(&node.store, &f, now).unwrap();
        }
    }
    while sd.poll_event().is_some() {}
    let before = fingerprint(&node.store);
    let audit_before = node.store.audit_log().unwrap().len();
    sd.handle_input(&node.store, &Message::WipeOrder(bytes).to_frame(), now)
        .unwrap();
    Fed {
        events: std::iter::from_fn(|| sd.poll_event()).collect(),
        closed: sd.is_closed(),
        before,
        audit_before,
    }
}

#[test]
fn forged_expired_replayed_and_foreign_orders_change_nothing_but_the_audit_log() {
    let mut w = World::new();
    let hq = w.node(1, HQ_OFFICE, Role::Relay);
    let device = w.node(3, "rome", Role::Field);
    let neighbour = w.node(4, "rome", Role::Field);
    new_case(&device, 1, "Stele");
    run(&device, &hq, t(1)).outcome.unwrap();

    let good = w.order(&device, 1, t(2), 30).to_bytes();
    let mut bad_signature = good.clone();
    bad_signature[40] ^= 0x01;
    let elsewhere = HqRoot::from_secret(SecretKey::from_seed(&[77; 32]))
        .order_wipe(device.id(), [2; 16], t(2), 30, "not ours")
        .unwrap()
        .to_bytes();
    let expired = w.order(&device, 3, t(-86_400 * 3), 1).to_bytes();
    let for_neighbour = w.order(&neighbour, 4, t(2), 30).to_bytes();
    // Issued before the device's certificate (a replay from an earlier enrollment).
    let before_enrollment = w.order(&device, 5, t(-20), 30).to_bytes();
    let cases: [(&str, Vec<u8>, &str); 6] = [
        ("bad signature", bad_signature, "does not verify"),
        (
            "another headquarters",
            elsewhere,
            "not by this device's headquarters",
        ),
        ("expired", expired, "expired"),
        ("another device", for_neighbour, "not for this device"),
        (
            "before the certificate",
            before_enrollment,
            "earlier enrollment",
        ),
        ("garbage", vec![1; 120], "malformed"),
    ];
    for (what, bytes, reason) in cases {
        let fed = feed_order(&device, &hq, bytes, t(10));
        assert!(ordered(&fed.events).is_empty(), "{what}: {:?}", fed.events);
        assert!(
            !fed.closed,
            "{what}: an ignored order does not end the session"
        );
        let log = device.store.audit_log().unwrap();
        assert_eq!(log.len(), fed.audit_before + 1, "{what}");
        let last = log.last().unwrap();
        assert_eq!(last.kind, AuditKind::WipeIgnored, "{what}");
        assert!(last.detail.contains(reason), "{what}: {}", last.detail);
        assert!(
            last.detail.contains(&hq.id().short()),
            "{what}: {}",
            last.detail
        );
        assert_eq!(fingerprint(&device.store), fed.before, "{what}");
    }

    // A nonce already handled: the device accepted an order with it; the
    // store then holds that order pending. Another order bearing the same
    // nonce is a replay: no event, an audit entry, nothing else.
    let first = w.order(&device, 9, t(11), 30);
    let fed = feed_order(&device, &hq, first.to_bytes(), t(12));
    assert_eq!(ordered(&fed.events), [&first]);
    assert!(fed.closed);
    let replay = w.order(&device, 9, t(13), 10);
    let fed = feed_order(&device, &hq, replay.to_bytes(), t(14));
    assert!(ordered(&fed.events).is_empty(), "{:?}", fed.events);
    let log = device.store.audit_log().unwrap();
    assert_eq!(log.len(), fed.audit_before + 1);
    assert!(
        log.last().unwrap().detail.contains("a replay"),
        "{:?}",
        log.last()
    );
    assert_eq!(fingerprint(&device.store), fed.before);
}

#[test]
fn a_revoked_device_with_a_pending_order_gets_the_order_and_nothing_else() {
    let mut w = World::new();
    let mut hq = w.node(1, HQ_OFFICE, Role::Relay);
    let lost = w.node(3, "rome", Role::Field);
    let fellow = w.node(4, "rome", Role::Field);
    let theirs = new_case(&lost, 1, "Before the loss");
    run(&lost, &hq, t(1)).outcome.unwrap();
    new_case(&fellow, 2, "What the thief must not read");
    run(&fellow, &hq, t(2)).outcome.unwrap();
    let contact = lost.store.last_relay_contact().unwrap();
    // Made on the lost device after it was lost.
    lost.store
        .edit_case(&theirs, t(3), "n", |d| d.add_note(lost.id(), t(3), "after"))
        .unwrap();

    // Headquarters orders the wipe, then revokes.
    let order = w.order(&lost, 5, t(4), 30);
    hq.store.issue_wipe_order(&order, t(4)).unwrap();
    let point = lost.store.log_head().unwrap() - 1;
    let list =
        w.hq.revoke(
            None,
            Revocation::new(lost.id(), t(4), "lost").accepting(0, point),
            t(4),
        )
        .unwrap();
    hq.authority.adopt(list.clone());
    hq.store.adopt_revocations(&list, t(4)).unwrap();
    let hq_head = hq.store.log_head().unwrap();

    let r = run(&lost, &hq, t(5));
    // Hello, the order, the refusal: nothing else.
    assert_eq!(r.b_to_a.len(), 3, "{:?}", r.b_to_a);
    assert!(matches!(r.b_to_a[0], Message::Hello(_)));
    assert_eq!(wipe_orders(&r.b_to_a[1..2]), std::slice::from_ref(&order));
    assert!(matches!(
        &r.b_to_a[2],
        Message::Close { code: CloseCode::Certificate, reason } if reason.contains("revoked")
    ));
    assert_eq!(ordered(&r.ea), [&order]);
    assert!(r.eb.iter().any(|e| matches!(
        e,
        Event::WipeOrderDelivered { device, refused: true } if *device == lost.id()
    )));
    assert_eq!(
        lost.store.pending_wipe().unwrap().unwrap().order,
        order.to_bytes()
    );
    // Nothing of the fellow's case reached the lost device; nothing of the
    // lost device's reached headquarters; the lease was not renewed.
    assert!(
        lost.store
            .case_genesis(&CaseId::from_bytes([2; 16]))
            .unwrap()
            .is_none()
    );
    assert_eq!(hq.store.log_head().unwrap(), hq_head);
    assert_eq!(lost.store.last_relay_contact().unwrap(), contact);
    assert!(!lost.store.audit_log().unwrap().is_empty());

    // A revoked device without an order is refused with nothing at all.
    let stray = w.node(6, "rome", Role::Field);
    run(&stray, &hq, t(6)).outcome.unwrap();
    let contact = stray.store.last_relay_contact().unwrap();
    let list =
        w.hq.revoke(Some(&list), Revocation::new(stray.id(), t(7), "lost"), t(7))
            .unwrap();
    hq.authority.adopt(list.clone());
    let r = run(&stray, &hq, t(8));
    assert_eq!(r.b_to_a.len(), 2, "{:?}", r.b_to_a);
    assert!(matches!(
        r.b_to_a[1],
        Message::Close {
            code: CloseCode::Certificate,
            ..
        }
    ));
    assert!(r.outcome.unwrap_err().contains("revoked"));
    assert_eq!(stray.store.last_relay_contact().unwrap(), contact);
    assert_eq!(stray.store.pending_wipe().unwrap(), None);
}

#[test]
fn relays_check_the_orders_they_carry_and_devices_carry_none() {
    let mut w = World::new();
    let hq = w.node(1, HQ_OFFICE, Role::Relay);
    let office = w.node(2, "rome", Role::Relay);
    let device = w.node(3, "rome", Role::Field);
    // A forged order from a peer relay is ignored and logged by the office.
    let mut forged = w.order(&device, 1, t(1), 30).to_bytes();
    forged[50] ^= 0x20;
    let fed = feed_order(&office, &hq, forged, t(2));
    assert!(!fed.closed);
    assert!(
        !fed.events
            .iter()
            .any(|e| matches!(e, Event::WipeOrderHeld { .. }))
    );
    assert!(office.store.held_wipe_orders().unwrap().is_empty());
    let log = office.store.audit_log().unwrap();
    assert_eq!(log.len(), fed.audit_before + 1);
    assert_eq!(log.last().unwrap().kind, AuditKind::WipeIgnored);
    // An expired one likewise.
    let stale = w.order(&device, 2, t(-3 * 86_400), 1).to_bytes();
    let fed = feed_order(&office, &hq, stale, t(2));
    assert!(!fed.closed);
    assert!(office.store.held_wipe_orders().unwrap().is_empty());
    assert_eq!(
        office.store.audit_log().unwrap().len(),
        fed.audit_before + 1
    );
    // A device sending an order breaks the protocol.
    let good = w.order(&device, 3, t(1), 30).to_bytes();
    let mut sr = Session::new(office.config(), &office.store, device.id(), t(3)).unwrap();
    let mut sd = Session::new(device.config(), &device.store, office.id(), t(3)).unwrap();
    let hello = sd.poll_transmit().unwrap();
    sr.handle_input(&office.store, &hello, t(3)).unwrap();
    let err = sr
        .handle_input(&office.store, &Message::WipeOrder(good).to_frame(), t(3))
        .unwrap_err();
    assert!(matches!(err, SessionError::Protocol(_)), "{err}");
    assert!(office.store.held_wipe_orders().unwrap().is_empty());
}

#[test]
fn a_peer_of_protocol_version_2_gets_no_order() {
    let mut w = World::new();
    let hq = w.node(1, HQ_OFFICE, Role::Relay);
    let device = w.node(3, "rome", Role::Field);
    hq.store
        .issue_wipe_order(&w.order(&device, 1, t(1), 30), t(1))
        .unwrap();
    let mut sr = Session::new(hq.config(), &hq.store, device.id(), t(2)).unwrap();
    let hello = Message::Hello(Hello {
        version: 2,
        min_version: 1,
        role: NodeRole::Device,
        certificate: device.cert.to_bytes(),
        epoch: device.store.epoch().unwrap(),
        head: 0,
        want: None,
        revocations: 0,
    });
    sr.handle_input(&hq.store, &hello.to_frame(), t(2)).unwrap();
    let sent: Vec<Message> = std::iter::from_fn(|| sr.poll_transmit())
        .map(|f| Message::decode(&f[4..]).unwrap())
        .collect();
    assert!(
        sent.iter().any(|m| matches!(m, Message::CaughtUp { .. })),
        "{sent:?}"
    );
    assert!(wipe_orders(&sent).is_empty(), "{sent:?}");
    assert_eq!(hq.store.wipe_delivery(&device.id()).unwrap(), None);
}

#[test]
fn a_device_records_contact_only_when_a_relay_accepts_it() {
    let mut w = World::new();
    let hq = w.node(1, HQ_OFFICE, Role::Relay);
    let device = w.node(3, "rome", Role::Field);
    assert_eq!(device.store.last_relay_contact().unwrap(), None);
    run(&device, &hq, t(5)).outcome.unwrap();
    assert_eq!(device.store.last_relay_contact().unwrap(), Some(t(5)));
    // Relays keep no lease.
    assert_eq!(hq.store.last_relay_contact().unwrap(), None);
    // A relay that refuses the device (another headquarters' relay, whose
    // certificate the device refuses in turn) renews nothing.
    let mut other = World::new();
    other.hq = HqRoot::from_secret(SecretKey::from_seed(&[99; 32]));
    let stranger = other.node(7, HQ_OFFICE, Role::Relay);
    let r = run(&device, &stranger, t(9));
    assert!(r.outcome.is_err());
    assert_eq!(device.store.last_relay_contact().unwrap(), Some(t(5)));
}

#[test]
fn a_peer_sending_many_bad_orders_is_cut_off() {
    let mut w = World::new();
    let hq = w.node(1, HQ_OFFICE, Role::Relay);
    let device = w.node(3, "rome", Role::Field);
    let mut sd = Session::new(device.config(), &device.store, hq.id(), t(1)).unwrap();
    let mut sr = Session::new(hq.config(), &hq.store, device.id(), t(1)).unwrap();
    for _ in 0..20 {
        let fd: Vec<Vec<u8>> = std::iter::from_fn(|| sd.poll_transmit()).collect();
        let fr: Vec<Vec<u8>> = std::iter::from_fn(|| sr.poll_transmit()).collect();
        for f in fd {
            sr.handle_input(&hq.store, &f, t(1)).unwrap();
        }
        for f in fr {
            sd.handle_input(&device.store, &f, t(1)).unwrap();
        }
    }
    let audit = device.store.audit_log().unwrap().len();
    let mut forged = w.order(&device, 1, t(1), 30).to_bytes();
    forged[60] ^= 1;
    for _ in 0..MAX_IGNORED_ORDERS {
        sd.handle_input(
            &device.store,
            &Message::WipeOrder(forged.clone()).to_frame(),
            t(2),
        )
        .unwrap();
    }
    let err = sd
        .handle_input(&device.store, &Message::WipeOrder(forged).to_frame(), t(2))
        .unwrap_err();
    assert!(matches!(err, SessionError::Limit(_)), "{err}");
    assert!(sd.is_closed());
    assert_eq!(
        device.store.audit_log().unwrap().len(),
        audit + MAX_IGNORED_ORDERS
    );
    assert_eq!(device.store.pending_wipe().unwrap(), None);
}
