//! Two real engines over an in-memory pipe, with real (in-memory redb)
//! stores, real certificates and real signatures.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fieldsync_case::{CaseKind, Field, decode_change};
use fieldsync_identity::{
    CERTIFICATE_VERSION, CaseId, CertificateBody, Compartment, DeviceCertificate, DeviceId,
    Encoded, HQ_OFFICE, HqRoot, Revocation, Role, SecretKey, Timestamp,
};
use fieldsync_protocol::{
    Authority, CloseCode, DEFAULT_MAX_IN_FLIGHT, Event, Message, NodeRole, RELAYED_RECEIPT_VERSION,
    RelayedReceiptBody, Session, SessionConfig, SessionError, apply_release,
    encode_relayed_receipt, encode_release, release_body,
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

    fn node(&mut self, seed: u8, name: &str, role: Role, read: &[&str], write: &[&str]) -> Node {
        self.node_at(seed, name, "rome", role, read, write)
    }

    fn node_at(
        &mut self,
        seed: u8,
        name: &str,
        office: &str,
        role: Role,
        read: &[&str],
        write: &[&str],
    ) -> Node {
        let kind = if role == Role::Relay {
            StoreKind::Relay
        } else {
            StoreKind::Device
        };
        let store = Store::create_in_memory(NewDevice {
            seed: [seed; 32],
            name,
            epoch: [seed; 16],
            now: t(0),
            kind,
        })
        .unwrap();
        self.serial += 1;
        let c = |v: &[&str]| {
            v.iter()
                .map(|s| Compartment::new(s).unwrap())
                .collect::<Vec<_>>()
        };
        let cert = self
            .hq
            .issue(CertificateBody {
                version: CERTIFICATE_VERSION,
                serial: self.serial,
                issuer: self.hq.public(),
                device: store.device().id(),
                name: name.into(),
                office: office.into(),
                role,
                read: c(read),
                write: c(write),
                not_before: t(-10),
                not_after: t(86_400 * 365),
            })
            .unwrap();
        let role = if role == Role::Relay {
            NodeRole::Relay
        } else {
            NodeRole::Device
        };
        Node {
            store,
            cert,
            role,
            authority: Authority::new(self.hq.public(), None),
        }
    }
}

/// Bytes carried each way and frames exchanged by one sync.
#[derive(Debug, Default)]
struct Traffic {
    a_to_b: usize,
    b_to_a: usize,
    rounds: usize,
}

/// Runs a session between `a` (the connecting side) and `b` until neither has
/// anything to send. Returns the traffic and both sessions' events.
fn sync(
    a: &Node,
    b: &Node,
    now: Timestamp,
) -> (Traffic, Vec<Event>, Vec<Event>, Result<(), String>) {
    let mut sa = Session::new(a.config(), &a.store, b.id(), now).unwrap();
    let mut sb = Session::new(b.config(), &b.store, a.id(), now).unwrap();
    let mut traffic = Traffic::default();
    let mut outcome = Ok(());
    loop {
        let fa: Vec<Vec<u8>> = std::iter::from_fn(|| sa.poll_transmit()).collect();
        let fb: Vec<Vec<u8>> = std::iter::from_fn(|| sb.poll_transmit()).collect();
        if fa.is_empty() && fb.is_empty() {
            break;
        }
        traffic.rounds += 1;
        for f in fa {
            traffic.a_to_b += f.len();
            if !sb.is_closed()
                && let Err(e) = sb.handle_input(&b.store, &f, now)
                && outcome.is_ok()
            {
                outcome = Err(format!("b: {e}"));
            }
        }
        for f in fb {
            traffic.b_to_a += f.len();
            if !sa.is_closed()
                && let Err(e) = sa.handle_input(&a.store, &f, now)
                && outcome.is_ok()
            {
                outcome = Err(format!("a: {e}"));
            }
        }
        assert!(traffic.rounds < 1000, "sync does not settle");
    }
    if outcome.is_ok() {
        assert!(
            sa.is_synced() && sb.is_synced(),
            "sessions idle but not synced"
        );
    }
    let ea = std::iter::from_fn(|| sa.poll_event()).collect();
    let eb = std::iter::from_fn(|| sb.poll_event()).collect();
    (traffic, ea, eb, outcome)
}

fn new_case(n: &Node, id: u8, compartment: &str, title: &str) -> CaseId {
    n.store
        .create_case(
            &NewCase {
                id: CaseId::from_bytes([id; 16]),
                kind: CaseKind::CriminalInvestigation,
                office: "rome",
                compartment,
                title,
            },
            t(1),
        )
        .unwrap()
}

#[test]
fn two_devices_converge_through_headquarters_with_receipts() {
    let mut w = World::new();
    let hq = w.node(
        1,
        "hq",
        Role::Relay,
        &["general", "narcotics"],
        &["general", "narcotics"],
    );
    let a = w.node(2, "rome-laptop", Role::Field, &["general"], &["general"]);
    let b = w.node(
        3,
        "mexico-handheld",
        Role::Field,
        &["general"],
        &["general"],
    );
    let ca = new_case(&a, 1, "general", "Stele");
    let cb = new_case(&b, 2, "general", "Tunnel");
    a.store
        .edit_case(&ca, t(2), "status", |d| {
            d.set_field(Field::Status, "active")
        })
        .unwrap();
    assert_eq!(a.store.outbox_len().unwrap(), 2);

    let (_, ev, _, ok) = sync(&a, &hq, t(3));
    ok.unwrap();
    assert!(
        ev.iter()
            .any(|e| matches!(e, Event::Acknowledged { receipt: true, .. }))
    );
    assert_eq!(
        a.store.outbox_len().unwrap(),
        0,
        "a relay receipt empties the outbox"
    );
    let receipt = a
        .store
        .latest_receipt(&hq.id())
        .unwrap()
        .expect("receipt stored");
    assert_eq!(receipt.through, a.store.log_head().unwrap());
    sync(&b, &hq, t(4)).3.unwrap();
    sync(&a, &hq, t(5)).3.unwrap();
    for c in [ca, cb] {
        assert_eq!(
            a.store.case_record(&c).unwrap(),
            b.store.case_record(&c).unwrap()
        );
    }
    // The relay stored by headers only; its heads agree with the devices'.
    let relay_heads = hq.store.case_heads().unwrap();
    let device_heads = a.store.case_heads().unwrap();
    assert_eq!(
        relay_heads
            .iter()
            .map(|h| (h.case, h.heads.clone()))
            .collect::<Vec<_>>(),
        device_heads
            .iter()
            .map(|h| (h.case, h.heads.clone()))
            .collect::<Vec<_>>()
    );
}

#[test]
fn reconnecting_costs_what_changed_not_what_exists() {
    let mut w = World::new();
    let hq = w.node(1, "hq", Role::Relay, &["general"], &["general"]);
    let a = w.node(2, "a", Role::Field, &["general"], &["general"]);
    for i in 0..50 {
        new_case(&a, i + 1, "general", &format!("case {i}"));
    }
    let (first, _, _, ok) = sync(&a, &hq, t(2));
    ok.unwrap();
    // Nothing changed: only hellos, caught-up and nothing else.
    let (idle, _, _, ok) = sync(&a, &hq, t(3));
    ok.unwrap();
    assert!(
        idle.a_to_b + idle.b_to_a < 2_000,
        "idle reconnect cost {idle:?} (first sync {first:?})"
    );
    // One change: about the change, whatever the number of cases.
    a.store
        .edit_case(&CaseId::from_bytes([7; 16]), t(4), "note", |d| {
            d.add_note(a.id(), t(4), "new")
        })
        .unwrap();
    let (one, _, _, ok) = sync(&a, &hq, t(5));
    ok.unwrap();
    assert!(one.a_to_b < idle.a_to_b + 2_500, "one change cost {one:?}");
    assert!(one.rounds <= 4, "round trips: {one:?}");
}

#[test]
fn a_case_outside_the_readers_compartments_looks_like_no_case() {
    let mut w = World::new();
    let hq = w.node(
        1,
        "hq",
        Role::Relay,
        &["general", "narcotics"],
        &["general", "narcotics"],
    );
    let a = w.node(
        2,
        "a",
        Role::Field,
        &["general", "narcotics"],
        &["general", "narcotics"],
    );
    let n = w.node(3, "narc-only", Role::Field, &["narcotics"], &["narcotics"]);
    new_case(&a, 1, "general", "General case");
    let secret = new_case(&a, 2, "narcotics", "Narcotics case");
    sync(&a, &hq, t(2)).3.unwrap();
    sync(&n, &hq, t(3)).3.unwrap();
    let cases: Vec<CaseId> = n
        .store
        .list_cases()
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(cases, vec![secret]);
}

#[test]
fn a_liaison_edit_is_quarantined_not_applied_not_forwarded() {
    let mut w = World::new();
    let hq = w.node(1, "hq", Role::Relay, &["general"], &["general"]);
    let a = w.node(2, "a", Role::Field, &["general"], &["general"]);
    let l = w.node(3, "ambassador", Role::Liaison, &["general"], &[]);
    let c = new_case(&a, 1, "general", "Visa case");
    sync(&a, &hq, t(2)).3.unwrap();
    sync(&l, &hq, t(3)).3.unwrap();
    assert_eq!(l.store.list_cases().unwrap().len(), 1, "a liaison reads");
    l.store
        .edit_case(&c, t(4), "title", |d| {
            d.set_field(Field::Title, "Changed by liaison")
        })
        .unwrap();
    sync(&l, &hq, t(5)).3.unwrap();
    let q = hq.store.quarantine().unwrap();
    assert_eq!(q.len(), 1);
    assert!(q[0].1.reason.contains("liaison"), "{}", q[0].1.reason);
    sync(&a, &hq, t(6)).3.unwrap();
    assert_eq!(a.store.case_record(&c).unwrap().title, "Visa case");
}

#[test]
fn a_release_lets_a_quarantined_change_through_everywhere_it_travels() {
    let mut w = World::new();
    let hq = w.node(1, "hq", Role::Relay, &["general"], &["general"]);
    let a = w.node(2, "a", Role::Field, &["general"], &["general"]);
    let l = w.node(3, "ambassador", Role::Liaison, &["general"], &[]);
    let sup = w.node(
        4,
        "supervisor",
        Role::Supervisor,
        &["general"],
        &["general"],
    );
    let other = w.node(
        5,
        "other-sup",
        Role::Supervisor,
        &["general", "narcotics"],
        &["narcotics"],
    );
    let c = new_case(&a, 1, "general", "Visa case");
    sync(&a, &hq, t(2)).3.unwrap();
    sync(&l, &hq, t(3)).3.unwrap();
    l.store
        .edit_case(&c, t(4), "title", |d| {
            d.set_field(Field::Title, "Visa case (embassy note)")
        })
        .unwrap();
    sync(&l, &hq, t(5)).3.unwrap();
    let q = hq.store.quarantine().unwrap();
    assert_eq!(q.len(), 1);
    let (id, entry) = q[0].clone();
    let certs: std::collections::BTreeMap<_, _> = [&sup, &other, &a]
        .iter()
        .map(|n| (n.id(), n.cert.clone()))
        .collect();
    let head = hq.store.log_head().unwrap();

    // Neither a field device nor a supervisor of another compartment may release.
    for (signer, why) in [(&a, "may not release"), (&other, "may not write")] {
        let body = release_body(&entry, *signer.cert.device().public_key(), "ok", t(6)).unwrap();
        let signed = signer.store.sign(body).unwrap();
        let err = apply_release(
            &hq.store,
            &hq.authority,
            id,
            &encode_release(signed.as_signed()),
            &certs,
            t(6),
        )
        .unwrap_err();
        assert!(
            matches!(&err, SessionError::NotAllowed(m) if m.contains(why)),
            "{err}"
        );
    }
    // A release whose bytes were altered is a forgery.
    let body = release_body(&entry, *sup.cert.device().public_key(), "ok", t(6)).unwrap();
    let mut tampered = encode_release(sup.store.sign(body).unwrap().as_signed());
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert!(matches!(
        apply_release(&hq.store, &hq.authority, id, &tampered, &certs, t(6)).unwrap_err(),
        SessionError::Forgery(_)
    ));
    assert_eq!(hq.store.log_head().unwrap(), head, "nothing changed");
    assert_eq!(hq.store.quarantine().unwrap().len(), 1, "nothing changed");

    // The supervisor of the case's compartment releases it.
    let body = release_body(
        &entry,
        *sup.cert.device().public_key(),
        "the embassy note is confirmed",
        t(7),
    )
    .unwrap();
    let release = encode_release(sup.store.sign(body).unwrap().as_signed());
    let r = apply_release(&hq.store, &hq.authority, id, &release, &certs, t(7)).unwrap();
    assert_eq!((r.stored, r.released_from_quarantine), (1, 1));
    assert!(hq.store.quarantine().unwrap().is_empty());
    assert!(matches!(
        apply_release(&hq.store, &hq.authority, id, &release, &certs, t(7)).unwrap_err(),
        SessionError::Store(fieldsync_store::StoreError::UnknownQuarantine { .. })
    ));

    // It travels with its release: device `a`, which would hold a liaison's
    // change back on its own, checks the release and applies it.
    sync(&a, &hq, t(8)).3.unwrap();
    assert_eq!(
        a.store.case_record(&c).unwrap().title,
        "Visa case (embassy note)"
    );
    assert!(a.store.quarantine().unwrap().is_empty());
    let hash = fieldsync_case::envelope_hash(&entry.change).unwrap();
    assert_eq!(a.store.release_for(&c, &hash).unwrap(), Some(release));

    // Headquarters itself may release, with its root key.
    l.store
        .edit_case(&c, t(9), "title", |d| {
            d.set_field(Field::Title, "Second note")
        })
        .unwrap();
    sync(&l, &hq, t(10)).3.unwrap();
    let (id, entry) = hq.store.quarantine().unwrap()[0].clone();
    let body = release_body(&entry, w.hq.public(), "approved at headquarters", t(11)).unwrap();
    let release = encode_release(w.hq.sign(body).unwrap().as_signed());
    apply_release(&hq.store, &hq.authority, id, &release, &certs, t(11)).unwrap();
    sync(&a, &hq, t(12)).3.unwrap();
    assert_eq!(a.store.case_record(&c).unwrap().title, "Second note");
    assert_eq!(
        a.store.case_heads().unwrap(),
        hq.store.case_heads().unwrap()
    );
}

#[test]
fn a_forged_change_closes_the_session_and_stores_nothing() {
    let mut w = World::new();
    let hq = w.node(1, "hq", Role::Relay, &["general"], &["general"]);
    let a = w.node(2, "a", Role::Field, &["general"], &["general"]);
    new_case(&a, 1, "general", "Real");
    let mut sa = Session::new(a.config(), &a.store, hq.id(), t(2)).unwrap();
    let mut sh = Session::new(hq.config(), &hq.store, a.id(), t(2)).unwrap();
    let hello_h = sh.poll_transmit().unwrap();
    sa.handle_input(&a.store, &hello_h, t(2)).unwrap();
    let mut result = Ok(());
    while let Some(frame) = sa.poll_transmit() {
        let mut msg = Message::decode(&frame[4..]).unwrap();
        if let Message::Batch(b) = &mut msg {
            // Flip one bit of the first change's signature.
            let env = &mut b.changes[0];
            env[60] ^= 1;
            assert!(decode_change(env).unwrap().verify().is_err());
        }
        if let Err(e) = sh.handle_input(&hq.store, &msg.to_frame(), t(2)) {
            result = Err(e);
            break;
        }
    }
    let err = result.unwrap_err();
    assert!(matches!(err, SessionError::Forgery(_)), "{err}");
    assert!(sh.is_closed());
    assert!(hq.store.list_cases().unwrap().is_empty());
    let close = std::iter::from_fn(|| sh.poll_transmit()).last().unwrap();
    assert!(matches!(
        Message::decode(&close[4..]).unwrap(),
        Message::Close {
            code: CloseCode::Forgery,
            ..
        }
    ));
}

#[test]
fn revocations_travel_and_a_revoked_device_is_refused() {
    let mut w = World::new();
    let mut hq = w.node(1, "hq", Role::Relay, &["general"], &["general"]);
    let a = w.node(2, "a", Role::Field, &["general"], &["general"]);
    let b = w.node(3, "b", Role::Field, &["general"], &["general"]);
    new_case(&a, 1, "general", "Before");
    sync(&a, &hq, t(2)).3.unwrap();
    let point = a.store.log_head().unwrap();
    let list =
        w.hq.revoke(
            None,
            Revocation::new(a.id(), t(3), "lost in Rome").accepting(0, point),
            t(3),
        )
        .unwrap();
    hq.authority.adopt(list.clone());
    hq.store.set_revocations(&list.to_bytes()).unwrap();
    let (_, eb, _, ok) = sync(&b, &hq, t(4));
    ok.unwrap();
    assert!(
        eb.iter()
            .any(|e| matches!(e, Event::RevocationsUpdated { sequence: 1 }))
    );
    assert!(b.store.revocations().unwrap().is_some());
    let (_, _, _, refused) = sync(&a, &hq, t(5));
    let msg = refused.unwrap_err();
    assert!(msg.contains("revoked"), "{msg}");
}

#[test]
fn a_certificate_for_another_key_is_refused() {
    let mut w = World::new();
    let hq = w.node(1, "hq", Role::Relay, &["general"], &["general"]);
    let a = w.node(2, "a", Role::Field, &["general"], &["general"]);
    let impostor = w.node(3, "impostor", Role::Field, &["general"], &["general"]);
    // The relay believes it talks to `impostor` (the transport said so), but `a`'s certificate arrives.
    let mut sa = Session::new(a.config(), &a.store, hq.id(), t(1)).unwrap();
    let mut sh = Session::new(hq.config(), &hq.store, impostor.id(), t(1)).unwrap();
    let hello = sa.poll_transmit().unwrap();
    let err = sh.handle_input(&hq.store, &hello, t(1)).unwrap_err();
    assert!(matches!(err, SessionError::NotAllowed(_)), "{err}");
    let _ = sh.poll_transmit();
}

/// A relay store rebuilt from another's data under a new epoch (a restore).
fn restored_copy(w: &mut World, from: &Node, seed: u8) -> Node {
    use fieldsync_case::{Genesis, verify_genesis};
    use fieldsync_identity::decode_signed;
    use fieldsync_store::Ingest;
    let copy = w.node(seed, "hq-restored", Role::Relay, &["general"], &["general"]);
    let mut cases = Vec::new();
    for h in from.store.case_heads().unwrap() {
        let g = verify_genesis(decode_signed::<Genesis>(&h.genesis).unwrap()).unwrap();
        let changes = from
            .store
            .case_envelopes(&h.case)
            .unwrap()
            .iter()
            .map(|e| decode_change(e).unwrap().verify().unwrap())
            .collect();
        cases.push((g, changes));
    }
    copy.store
        .ingest(
            Ingest {
                cases,
                ..Ingest::default()
            },
            t(0),
        )
        .unwrap();
    copy
}

#[test]
fn repair_after_a_lost_cursor_sends_only_what_differs() {
    let mut w = World::new();
    let hq = w.node(1, "hq", Role::Relay, &["general"], &["general"]);
    let a = w.node(2, "a", Role::Field, &["general"], &["general"]);
    for i in 0..200u8 {
        new_case(&a, i, "general", &format!("case {i}"));
    }
    sync(&a, &hq, t(2)).3.unwrap();
    // Headquarters is restored from a copy: same data, new log epoch; the
    // device edits 10 cases meanwhile.
    let restored = restored_copy(&mut w, &hq, 9);
    for i in 0..10u8 {
        let c = CaseId::from_bytes([i * 20; 16]);
        a.store
            .edit_case(&c, t(3), "note", |d| {
                d.add_note(a.id(), t(3), "after the restore")
            })
            .unwrap();
    }
    let (repair, _, _, ok) = sync(&a, &restored, t(4));
    ok.unwrap();
    let fresh = w.node(10, "hq-new", Role::Relay, &["general"], &["general"]);
    let (full, _, _, ok) = sync(&a, &fresh, t(5));
    ok.unwrap();
    eprintln!("repair {repair:?}, full resync {full:?}");
    let total = |t: &Traffic| t.a_to_b + t.b_to_a;
    // Both sides repair (each lost its cursor into the other's log) and
    // exchange only what the other lacks: at 200 cases under a quarter of
    // a full resync, itself deflated (the digest and the heads of the
    // differing buckets, hashes that do not compress, are most of it; the
    // share falls as the number of cases grows).
    assert!(
        total(&repair) * 4 < total(&full),
        "repair {repair:?} vs full {full:?}"
    );
    // Headquarters held every change the device had before: it is sent the
    // new changes, and sends back no case whole.
    assert!(repair.b_to_a < 4_000, "{repair:?}");
    let heads = |n: &Node| {
        n.store
            .case_heads()
            .unwrap()
            .into_iter()
            .map(|h| (h.case, h.heads))
            .collect::<Vec<_>>()
    };
    assert_eq!(heads(&restored), heads(&a));
    // And the next reconnect is an ordinary, cheap one.
    let (after, _, _, ok) = sync(&a, &restored, t(6));
    ok.unwrap();
    assert!(total(&after) < 1_500, "{after:?}");
}

/// Moves every queued frame between two open sessions until both are idle.
fn settle(a: &Node, sa: &mut Session, b: &Node, sb: &mut Session, now: Timestamp) {
    for _ in 0..100 {
        let fa: Vec<Vec<u8>> = std::iter::from_fn(|| sa.poll_transmit()).collect();
        let fb: Vec<Vec<u8>> = std::iter::from_fn(|| sb.poll_transmit()).collect();
        if fa.is_empty() && fb.is_empty() {
            return;
        }
        for f in fa {
            sb.handle_input(&b.store, &f, now).unwrap();
        }
        for f in fb {
            sa.handle_input(&a.store, &f, now).unwrap();
        }
        // What a session stored grew its node's log: the driver tells the node's other sessions.
    }
    panic!("sessions do not settle");
}

#[test]
fn live_changes_flow_to_connected_peers() {
    let mut w = World::new();
    let hq = w.node(1, "hq", Role::Relay, &["general"], &["general"]);
    let a = w.node(2, "a", Role::Field, &["general"], &["general"]);
    let b = w.node(3, "b", Role::Field, &["general"], &["general"]);
    let c = new_case(&a, 1, "general", "Live");
    let (mut a_hq, mut hq_a) = (
        Session::new(a.config(), &a.store, hq.id(), t(1)).unwrap(),
        Session::new(hq.config(), &hq.store, a.id(), t(1)).unwrap(),
    );
    let (mut b_hq, mut hq_b) = (
        Session::new(b.config(), &b.store, hq.id(), t(1)).unwrap(),
        Session::new(hq.config(), &hq.store, b.id(), t(1)).unwrap(),
    );
    settle(&a, &mut a_hq, &hq, &mut hq_a, t(1));
    hq_b.handle_log_grew(&hq.store, t(1)).unwrap();
    settle(&b, &mut b_hq, &hq, &mut hq_b, t(1));
    assert!(a_hq.is_synced() && b_hq.is_synced());
    assert_eq!(b.store.list_cases().unwrap().len(), 1);
    // While all stay connected: an edit on A reaches B with no new session.
    a.store
        .edit_case(&c, t(2), "note", |d| d.add_note(a.id(), t(2), "live"))
        .unwrap();
    a_hq.handle_log_grew(&a.store, t(2)).unwrap();
    settle(&a, &mut a_hq, &hq, &mut hq_a, t(2));
    hq_b.handle_log_grew(&hq.store, t(2)).unwrap();
    settle(&b, &mut b_hq, &hq, &mut hq_b, t(2));
    assert_eq!(b.store.case_record(&c).unwrap().notes.len(), 1);
    assert!(b_hq.is_synced() && hq_b.is_synced());
}

#[test]
fn a_sync_cut_mid_way_resumes_where_it_stopped() {
    let mut w = World::new();
    let hq = w.node(1, "hq", Role::Relay, &["general"], &["general"]);
    let a = w.node(2, "a", Role::Field, &["general"], &["general"]);
    // Enough changes for several batches.
    for i in 0..200u8 {
        let c = new_case(&a, i, "general", &format!("case {i}"));
        let long = "x".repeat(2000);
        a.store
            .edit_case(&c, t(1), "summary", |d| d.set_field(Field::Summary, &long))
            .unwrap();
    }
    let mut sa = Session::new(a.config(), &a.store, hq.id(), t(2)).unwrap();
    let mut sh = Session::new(hq.config(), &hq.store, a.id(), t(2)).unwrap();
    let hello = sh.poll_transmit().unwrap();
    sa.handle_input(&a.store, &hello, t(2)).unwrap();
    // Deliver the device's hello and only its first batch, then the link drops.
    let frames: Vec<Vec<u8>> = std::iter::from_fn(|| sa.poll_transmit()).collect();
    assert!(
        frames.len() > 3,
        "expected several batches, got {}",
        frames.len()
    );
    for f in &frames[..2] {
        sh.handle_input(&hq.store, f, t(2)).unwrap();
    }
    let held = hq.store.peer_cursor(&a.id()).unwrap().unwrap().seq;
    assert!(held > 0 && held < a.store.log_head().unwrap());
    let stored_before = hq.store.case_heads().unwrap().len();
    drop((sa, sh));
    // A new connection: the relay's cursor says where to resume.
    let (resumed, _, _, ok) = sync(&a, &hq, t(3));
    ok.unwrap();
    assert_eq!(hq.store.case_heads().unwrap().len(), 200);
    // The resumed session carries the rest (the batches after the first),
    // plus a hello and a certificate: not the first batch again.
    let rest: usize = frames[2..].iter().map(Vec::len).sum();
    assert!(
        resumed.a_to_b < rest + 3_000,
        "resume resent what was held ({stored_before} cases were): {resumed:?}"
    );
}

#[test]
fn a_case_created_where_its_creator_may_only_read_is_quarantined() {
    let mut w = World::new();
    let hq = w.node(
        1,
        "hq",
        Role::Relay,
        &["general", "narcotics"],
        &["general", "narcotics"],
    );
    // Reads narcotics, writes only general; its store lets it create anything locally.
    let a = w.node(2, "a", Role::Field, &["general", "narcotics"], &["general"]);
    new_case(&a, 1, "narcotics", "Not mine to open");
    new_case(&a, 2, "general", "Mine");
    sync(&a, &hq, t(2)).3.unwrap();
    let held: Vec<CaseId> = hq
        .store
        .list_cases()
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(held, vec![CaseId::from_bytes([2; 16])]);
    let q = hq.store.quarantine().unwrap();
    assert_eq!(q.len(), 1);
    assert!(
        q[0].1.reason.contains("not certified to write"),
        "{}",
        q[0].1.reason
    );
}

#[test]
fn a_device_whose_acknowledgement_was_lost_learns_at_the_next_session() {
    let mut w = World::new();
    let hq = w.node(1, "hq", Role::Relay, &["general"], &["general"]);
    let a = w.node(2, "a", Role::Field, &["general"], &["general"]);
    let c = new_case(&a, 1, "general", "Ledger");
    a.store
        .edit_case(&c, t(2), "n", |d| d.add_note(a.id(), t(2), "first"))
        .unwrap();
    // The relay stores everything, but its frames after the Hello (its
    // acknowledgement and receipt among them) never reach the device.
    let mut sa = Session::new(a.config(), &a.store, hq.id(), t(3)).unwrap();
    let mut sb = Session::new(hq.config(), &hq.store, a.id(), t(3)).unwrap();
    let mut hello_delivered = false;
    for _ in 0..50 {
        let fa: Vec<Vec<u8>> = std::iter::from_fn(|| sa.poll_transmit()).collect();
        let fb: Vec<Vec<u8>> = std::iter::from_fn(|| sb.poll_transmit()).collect();
        if fa.is_empty() && fb.is_empty() {
            break;
        }
        for f in fa {
            let _ = sb.handle_input(&hq.store, &f, t(3));
        }
        for f in fb {
            if !hello_delivered {
                hello_delivered = true;
                sa.handle_input(&a.store, &f, t(3)).unwrap();
            }
        }
    }
    assert_eq!(
        hq.store.log_head().unwrap(),
        2,
        "the relay holds both changes"
    );
    assert_eq!(
        a.store.outbox_len().unwrap(),
        2,
        "the device was never told"
    );
    // Next session: nothing needs sending, and the relay's first words are
    // a receipt for what it already holds.
    let (traffic, ev, _, ok) = sync(&a, &hq, t(4));
    ok.unwrap();
    assert_eq!(a.store.outbox_len().unwrap(), 0);
    assert!(ev.iter().any(|e| matches!(
        e,
        Event::Acknowledged {
            through: 2,
            receipt: true
        }
    )));
    assert_eq!(
        a.store.latest_receipt(&hq.id()).unwrap().unwrap().through,
        2
    );
    assert!(
        traffic.a_to_b < 1_500,
        "no change was sent again: {traffic:?}"
    );
}

/// Opens a session between `a` and `b`, lets it settle, then hands `a`
/// `frame` as if `b` had sent it; returns `a`'s verdict.
fn feed_forged(a: &Node, b: &Node, frame: Vec<u8>, now: Timestamp) -> Result<(), SessionError> {
    let mut sa = Session::new(a.config(), &a.store, b.id(), now).unwrap();
    let mut sb = Session::new(b.config(), &b.store, a.id(), now).unwrap();
    settle(a, &mut sa, b, &mut sb, now);
    sa.handle_input(&a.store, &frame, now)
}

#[test]
fn an_office_carries_headquarters_receipt_down_to_its_devices() {
    let mut w = World::new();
    let hq = w.node_at(1, "hq", HQ_OFFICE, Role::Relay, &["general"], &["general"]);
    let office = w.node(2, "rome-office", Role::Relay, &["general"], &["general"]);
    let a = w.node(3, "a", Role::Field, &["general"], &["general"]);
    let b = w.node(4, "b", Role::Field, &["general"], &["general"]);
    let c = new_case(&a, 1, "general", "Ledger");
    a.store
        .edit_case(&c, t(2), "n", |d| d.add_note(a.id(), t(2), "first"))
        .unwrap();
    let first = a.store.log_head().unwrap();

    // The uplink is down: the office holds a's changes, headquarters does not.
    let (_, ev, _, ok) = sync(&a, &office, t(3));
    ok.unwrap();
    assert!(!ev.iter().any(|e| matches!(e, Event::RelayedReceipt { .. })));
    assert_eq!(
        a.store
            .latest_receipt(&office.id())
            .unwrap()
            .unwrap()
            .through,
        first
    );
    assert!(a.store.latest_receipt(&hq.id()).unwrap().is_none());

    // The uplink returns; at the device's next session the office carries
    // headquarters' receipt down.
    let (_, _, at_hq, ok) = sync(&office, &hq, t(4));
    ok.unwrap();
    // Headquarters moves the office's cursor past the changes the office
    // sent it with a batch that carries nothing: acknowledged, no receipt.
    assert!(
        at_hq
            .iter()
            .any(|e| matches!(e, Event::Acknowledged { receipt: false, .. })),
        "{at_hq:?}"
    );
    a.store
        .edit_case(&c, t(5), "n", |d| d.add_note(a.id(), t(5), "second"))
        .unwrap();
    let (_, ev, _, ok) = sync(&a, &office, t(6));
    ok.unwrap();
    assert!(ev.iter().any(|e| matches!(
        e,
        Event::RelayedReceipt { upstream, through }
            if *upstream == hq.id() && *through == first
    )));
    let at_hq = a.store.latest_receipt(&hq.id()).unwrap().unwrap();
    assert_eq!(
        at_hq.through, first,
        "the second note has not reached headquarters"
    );
    assert_eq!(
        a.store.peer_ack(&hq.id()).unwrap(),
        0,
        "headquarters acknowledged nothing to the device itself"
    );
    assert_eq!(
        a.store.peer(&hq.id()).unwrap().unwrap().carried_by,
        Some(office.id()),
        "the device learns headquarters' certificate from the office"
    );
    sync(&office, &hq, t(7)).3.unwrap();
    sync(&a, &office, t(8)).3.unwrap();
    assert_eq!(
        a.store.latest_receipt(&hq.id()).unwrap().unwrap().through,
        a.store.log_head().unwrap()
    );

    // An office cannot claim more than headquarters' receipt says: a
    // receipt headquarters gave another device, or a position beyond the
    // device's log, is refused with the reason and changes nothing.
    new_case(&b, 2, "general", "Other");
    sync(&b, &hq, t(9)).3.unwrap();
    let held = a.store.latest_receipt(&hq.id()).unwrap().unwrap();
    let hq_cert = hq.cert.to_bytes();
    let forge = |through: u64, upstream_receipt: Vec<u8>| {
        let body = Encoded::new(RelayedReceiptBody {
            version: RELAYED_RECEIPT_VERSION,
            relay: *office.cert.device().public_key(),
            device: a.id(),
            epoch: a.store.epoch().unwrap(),
            through,
            upstream_certificate: hq_cert.clone(),
            upstream_receipt,
        })
        .unwrap();
        let signed = office.store.sign(body).unwrap();
        Message::Relayed(encode_relayed_receipt(signed.as_signed())).to_frame()
    };
    let others = b.store.latest_receipt(&hq.id()).unwrap().unwrap().bytes;
    let office_receipt = office
        .store
        .latest_receipt(&hq.id())
        .unwrap()
        .unwrap()
        .bytes;
    for (frame, why) in [
        (forge(1, others), "upstream receipt for"),
        (
            forge(held.through + 5, office_receipt),
            "beyond this log's head",
        ),
    ] {
        let err = feed_forged(&a, &office, frame, t(10)).unwrap_err();
        assert!(err.to_string().contains(why), "{err}");
        assert_eq!(a.store.latest_receipt(&hq.id()).unwrap().unwrap(), held);
    }
    // And a device never carries receipts.
    let err = feed_forged(&office, &a, forge(1, Vec::new()), t(11)).unwrap_err();
    assert!(err.to_string().contains("only a relay"), "{err}");
}

/// A device that never synced with a relay whose log is not empty pushes by
/// repair; its log spans several batches, each acknowledged at position 0
/// (repair batches carry no log position). Each acknowledgement settles one
/// batch: the first must not settle them all, or the second is refused as
/// an acknowledgement of something never sent.
#[test]
fn a_first_push_by_repair_over_several_batches_is_acknowledged_batch_by_batch() {
    let mut w = World::new();
    let hq = w.node(1, "hq", Role::Relay, &["general"], &["general"]);
    let b = w.node(3, "b", Role::Field, &["general"], &["general"]);
    new_case(&b, 250, "general", "first at headquarters");
    sync(&b, &hq, t(1)).3.unwrap();
    let a = w.node(2, "a", Role::Field, &["general"], &["general"]);
    for i in 0..100u8 {
        let case = new_case(&a, i, "general", &format!("case {i}"));
        for n in 0..20 {
            a.store
                .edit_case(&case, t(2), "note", |d| {
                    d.add_note(a.id(), t(2), &format!("note {n}"))
                })
                .unwrap();
        }
    }
    assert!(a.store.log_head().unwrap() > 2_000);
    sync(&a, &hq, t(3)).3.unwrap();
    assert_eq!(a.store.outbox_len().unwrap(), 0);
    let at_hq = hq.store.case_heads().unwrap();
    for mine in a.store.case_heads().unwrap() {
        let theirs = at_hq.iter().find(|h| h.case == mine.case);
        assert_eq!(
            theirs.map(|h| &h.heads),
            Some(&mine.heads),
            "case {}",
            mine.case
        );
    }
}

/// The frames `relay` sends a device that says it speaks `version`, after
/// its hello: (message type tags, decoded messages).
fn batches_sent_to_a_peer_of_version(version: u16) -> (Vec<u8>, Vec<Message>) {
    let mut w = World::new();
    let hq = w.node(1, "hq", Role::Relay, &["general"], &["general"]);
    let a = w.node(2, "a", Role::Field, &["general"], &["general"]);
    let b = w.node(3, "b", Role::Field, &["general"], &["general"]);
    for i in 0..20 {
        new_case(
            &a,
            i + 1,
            "general",
            &format!("case {i}: container at the port"),
        );
    }
    sync(&a, &hq, t(2)).3.unwrap();
    let mut sr = Session::new(hq.config(), &hq.store, b.id(), t(3)).unwrap();
    let hello = Message::Hello(fieldsync_protocol::Hello {
        version,
        min_version: 1,
        role: NodeRole::Device,
        certificate: b.cert.to_bytes(),
        epoch: b.store.epoch().unwrap(),
        head: 0,
        want: None,
        revocations: 0,
    });
    sr.handle_input(&hq.store, &hello.to_frame(), t(3)).unwrap();
    let frames: Vec<Vec<u8>> = std::iter::from_fn(|| sr.poll_transmit()).collect();
    let tags = frames.iter().map(|f| f[4]).collect();
    let msgs = frames
        .iter()
        .map(|f| Message::decode(&f[4..]).unwrap())
        .collect();
    (tags, msgs)
}

#[test]
fn batches_travel_deflated_only_to_peers_that_speak_version_4() {
    const T_BATCH: u8 = 2;
    const T_BATCH_DEFLATED: u8 = 13;
    let (old_tags, old) = batches_sent_to_a_peer_of_version(3);
    let (new_tags, new) = batches_sent_to_a_peer_of_version(4);
    assert!(old_tags.contains(&T_BATCH), "{old_tags:?}");
    assert!(!old_tags.contains(&T_BATCH_DEFLATED), "{old_tags:?}");
    assert!(new_tags.contains(&T_BATCH_DEFLATED), "{new_tags:?}");
    // The same batches either way, once decoded.
    let batches = |m: &[Message]| -> Vec<Message> {
        m.iter()
            .filter(|m| matches!(m, Message::Batch(_)))
            .cloned()
            .collect()
    };
    assert_eq!(batches(&old), batches(&new));
    assert!(!batches(&new).is_empty());
}
