//! The bad-input catalogue, data half: each test feeds the real sans-IO
//! [`Session`] of a relay (or a device) one kind of bad input, as a peer
//! would send it after a normal `Hello` exchange, and shows the named error,
//! the close code sent, and that the receiver's store is exactly as it was
//! (heads, log head, case records, quarantine, pending, cursors), or
//! exactly the stated change.
//!
//! The transport half (frames, ALPN, certificates, streams, connections)
//! lives in `crates/transport/tests`; the store half (a corrupted stored
//! document, a damaged file, a full disk) in `crates/store/tests/catalogue.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fieldsync_case::{
    CHANGE_HEADER_LEN, CaseDoc, CaseError, CaseRecord, ChangeHash, ChangePayload, MAX_CHANGE_LEN,
    decode_change, encode_change, payload_for_local,
};
use fieldsync_identity::{
    CERTIFICATE_VERSION, CaseId, CertificateBody, Compartment, DeviceCertificate, DeviceId, HqRoot,
    Role, SecretKey, Signable, Signed, Timestamp, sign,
};
use fieldsync_protocol::{
    Authority, Batch, CloseCode, DEFAULT_MAX_IN_FLIGHT, Event, Message, NodeRole, RepairHeads,
    Session, SessionConfig, SessionError,
};
use fieldsync_store::{
    BundleError, CaseListing, Cursor, NewCase, NewDevice, PendingLimits, QuarantineEntry, Store,
    StoreKind,
};

const T0: i64 = 1_790_000_000_000;

fn t(s: i64) -> Timestamp {
    Timestamp::from_millis(T0 + s * 1000)
}

// ---- the world (as in sessions.rs) ----

struct Node {
    store: Store,
    key: SecretKey,
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
                office: "rome".into(),
                role,
                read: c(read),
                write: c(write),
                not_before: t(-10),
                not_after: t(86_400 * 365),
            })
            .unwrap();
        Node {
            store,
            key: SecretKey::from_seed(&[seed; 32]),
            cert,
            role: if role == Role::Relay {
                NodeRole::Relay
            } else {
                NodeRole::Device
            },
            authority: Authority::new(self.hq.public(), None),
        }
    }

    /// Headquarters and one field device that reads and writes `general`.
    fn pair() -> (Self, Node, Node) {
        let mut w = World::new();
        let hq = w.node(1, "hq", Role::Relay, &["general"], &["general"]);
        let a = w.node(2, "a", Role::Field, &["general"], &["general"]);
        (w, hq, a)
    }
}

fn new_case(n: &Node, id: u8, compartment: &str, title: &str) -> CaseId {
    n.store
        .create_case(
            &NewCase {
                id: CaseId::from_bytes([id; 16]),
                kind: fieldsync_case::CaseKind::CriminalInvestigation,
                office: "rome",
                compartment,
                title,
            },
            t(1),
        )
        .unwrap()
}

/// Moves frames between two sessions until both are idle; every frame must
/// be accepted.
fn settle(a: &Node, sa: &mut Session, b: &Node, sb: &mut Session, now: Timestamp) {
    for _ in 0..1000 {
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
    }
    panic!("sessions do not settle");
}

/// A full sync between `a` and `b` that must succeed.
fn sync(a: &Node, b: &Node, now: Timestamp) {
    let mut sa = Session::new(a.config(), &a.store, b.id(), now).unwrap();
    let mut sb = Session::new(b.config(), &b.store, a.id(), now).unwrap();
    settle(a, &mut sa, b, &mut sb, now);
    assert!(sa.is_synced() && sb.is_synced());
}

/// Everything a node's store shows, to compare before and after.
#[derive(Debug, PartialEq)]
struct State {
    log_head: u64,
    cases: Vec<CaseListing>,
    heads: Vec<(CaseId, Vec<ChangeHash>)>,
    records: Vec<CaseRecord>,
    quarantine: Vec<(u64, QuarantineEntry)>,
    pending: usize,
    cursors: Vec<Option<Cursor>>,
}

fn state(n: &Node, peers: &[&Node]) -> State {
    let cases = n.store.list_cases().unwrap();
    State {
        log_head: n.store.log_head().unwrap(),
        heads: n
            .store
            .case_heads()
            .unwrap()
            .into_iter()
            .map(|h| (h.case, h.heads))
            .collect(),
        records: cases
            .iter()
            .map(|c| n.store.case_record(&c.id).unwrap())
            .collect(),
        cases,
        quarantine: n.store.quarantine().unwrap(),
        pending: n.store.pending_len().unwrap(),
        cursors: peers
            .iter()
            .map(|p| n.store.peer_cursor(&p.id()).unwrap())
            .collect(),
    }
}

/// The close code in the last frame a session queued.
fn close_code(s: &mut Session) -> CloseCode {
    let last = std::iter::from_fn(|| s.poll_transmit())
        .last()
        .expect("a close frame");
    match Message::decode(&last[4..]).unwrap() {
        Message::Close { code, .. } => code,
        other => panic!("expected a close frame, got {other:?}"),
    }
}

/// Opens a session from device `a` to relay `hq` and lets it settle; then
/// makes `edit` on `a` (if any), takes the batch `a` would send next, lets
/// `tamper` change it, and hands it to the relay. Returns the relay's
/// verdict and the close code it sent back.
fn send_tampered(
    a: &Node,
    hq: &Node,
    now: Timestamp,
    edit: impl FnOnce(&Node),
    tamper: impl FnOnce(&mut Batch),
) -> (SessionError, CloseCode) {
    let mut sa = Session::new(a.config(), &a.store, hq.id(), now).unwrap();
    let mut sh = Session::new(hq.config(), &hq.store, a.id(), now).unwrap();
    settle(a, &mut sa, hq, &mut sh, now);
    edit(a);
    sa.handle_log_grew(&a.store, now).unwrap();
    let mut batch = match sa.poll_transmit() {
        Some(frame) => match Message::decode(&frame[4..]).unwrap() {
            Message::Batch(b) => b,
            other => panic!("expected a batch, got {other:?}"),
        },
        None => Batch {
            through: a.store.log_head().unwrap(),
            ..Batch::default()
        },
    };
    tamper(&mut batch);
    let err = sh
        .handle_input(&hq.store, &Message::Batch(batch).to_frame(), now)
        .expect_err("the relay must refuse");
    assert!(sh.is_closed());
    (err, close_code(&mut sh))
}

/// A relay session with device `a` after `a`'s `Hello` (what the relay
/// sends back is dropped): for feeding it batches `a`'s own log does not hold.
fn relay_session(hq: &Node, a: &Node, now: Timestamp) -> Session {
    let mut sa = Session::new(a.config(), &a.store, hq.id(), now).unwrap();
    let mut sh = Session::new(hq.config(), &hq.store, a.id(), now).unwrap();
    let hello = sa.poll_transmit().unwrap();
    sh.handle_input(&hq.store, &hello, now).unwrap();
    while sh.poll_transmit().is_some() {}
    sh
}

/// A note edit on `a`'s first case.
fn note(text: &'static str) -> impl FnOnce(&Node) {
    move |a: &Node| {
        let case = a.store.list_cases().unwrap()[0].id;
        a.store
            .edit_case(&case, t(5), "note", |d| d.add_note(a.id(), t(5), text))
            .unwrap()
            .unwrap();
    }
}

/// Signs `change` for `case` with `key`, bypassing the signer check that
/// `sign` makes: what a forger's own code would do.
fn forge(case: CaseId, counter: u64, change: automerge::Change, key: &SecretKey) -> Vec<u8> {
    let payload = payload_for_local(case, counter, change);
    let mut msg = Vec::new();
    payload.signed_message(&mut msg);
    let sig = key.sign_with_domain(ChangePayload::DOMAIN, &msg);
    encode_change(&Signed::from_parts(payload, key.public(), sig))
}

/// The Automerge changes of `a`'s case, as stored.
fn changes_of(n: &Node, case: &CaseId) -> Vec<automerge::Change> {
    n.store
        .case_envelopes(case)
        .unwrap()
        .iter()
        .map(|e| decode_change(e).unwrap().payload().change().clone())
        .collect()
}

/// An Automerge document of `a`'s actor holding `changes`: for making
/// changes the case API would refuse to make.
fn raw_doc(a: &Node, changes: Vec<automerge::Change>) -> automerge::AutoCommit {
    let mut doc = automerge::AutoCommit::new()
        .with_actor(automerge::ActorId::from(a.id().actor(0).to_bytes()));
    doc.apply_changes(changes).unwrap();
    doc
}

/// Signs `change` with `a`'s real key and sends it, alone, as `a`'s next
/// batch to the relay: its verdict and close code.
fn send_signed(
    a: &Node,
    hq: &Node,
    now: Timestamp,
    case: CaseId,
    counter: u64,
    change: automerge::Change,
) -> (SessionError, CloseCode) {
    let env = encode_change(
        sign(payload_for_local(case, counter, change), &a.key)
            .unwrap()
            .as_signed(),
    );
    send_tampered(
        a,
        hq,
        now,
        |_| {},
        |b| {
            b.changes = vec![env];
            b.through = a.store.log_head().unwrap();
        },
    )
}

// ---- 1. bad signature ----

/// See also `sessions.rs`: `a_forged_change_closes_the_session_and_stores_nothing`.
#[test]
fn bad_signature() {
    let (_w, hq, a) = World::pair();
    new_case(&a, 1, "general", "Real");
    sync(&a, &hq, t(2));
    let before = state(&hq, &[&a]);
    let (err, code) = send_tampered(&a, &hq, t(3), note("x"), |b| {
        // One bit of the signature (after version, case and signer).
        b.changes[0][1 + 16 + 32 + 5] ^= 1;
    });
    assert!(
        matches!(&err, SessionError::Forgery(m) if m.contains("signature")),
        "{err}"
    );
    assert_eq!(code, CloseCode::Forgery);
    assert_eq!(state(&hq, &[&a]), before);
}

// ---- 2. actor not bound to the signing key ----

#[test]
fn actor_not_bound_to_the_signing_key() {
    let (mut w, hq, a) = World::pair();
    let b = w.node(3, "b", Role::Field, &["general"], &["general"]);
    let case = new_case(&a, 1, "general", "A's case");
    sync(&a, &hq, t(2));
    sync(&b, &hq, t(2));
    let before = state(&hq, &[&a, &b]);
    // B makes a change under A's actor and signs it with its own key.
    let mut doc = CaseDoc::new(a.id().actor(0));
    doc.apply(changes_of(&a, &case)).unwrap();
    doc.set_title("A never wrote this").unwrap();
    let change = doc.commit(t(3), "impersonation").unwrap().unwrap();
    let forged = forge(case, 99, change, &b.key);
    let (err, code) = send_tampered(
        &b,
        &hq,
        t(3),
        |_| {},
        |batch| {
            batch.changes = vec![forged];
            batch.through = b.store.log_head().unwrap();
        },
    );
    assert!(
        matches!(&err, SessionError::Forgery(m) if m.contains(&a.id().short())),
        "{err}"
    );
    assert_eq!(code, CloseCode::Forgery);
    assert_eq!(state(&hq, &[&a, &b]), before);
}

/// The record view binds a note to the device whose change created it.
#[test]
fn actor_not_bound_to_the_signing_key_a_note_names_its_writer_not_its_claim() {
    let (mut w, hq, a) = World::pair();
    let b = w.node(3, "b", Role::Field, &["general"], &["general"]);
    let case = new_case(&a, 1, "general", "Attribution");
    sync(&a, &hq, t(2));
    sync(&b, &hq, t(2));
    // B writes a note naming A as its author (through the normal API).
    b.store
        .edit_case(&case, t(3), "note", |d| {
            d.add_note(a.id(), t(3), "A saw it")
        })
        .unwrap();
    sync(&b, &hq, t(4));
    let r = hq.store.case_record(&case).unwrap();
    assert_eq!(r.notes[0].author, b.id());
    assert_eq!(r.notes[0].claimed_author, Some(a.id()));
    assert!(
        r.problems
            .iter()
            .any(|p| p.contains("notes/0/author") && p.contains(&b.id().to_string())),
        "{:?}",
        r.problems
    );
}

// ---- 3. change hash not matching its bytes ----

#[test]
fn change_hash_not_matching_its_bytes() {
    let (_w, hq, a) = World::pair();
    new_case(&a, 1, "general", "Hash");
    sync(&a, &hq, t(2));
    let before = state(&hq, &[&a]);
    // A byte of the change body altered: the chunk's checksum (the first
    // bytes of the change hash) no longer matches the bytes.
    let (err, code) = send_tampered(&a, &hq, t(3), note("original text"), |b| {
        let env = &mut b.changes[0];
        let at = env.windows(8).position(|w| w == b"original").unwrap();
        env[at] ^= 0x20;
    });
    assert!(
        matches!(&err, SessionError::Forgery(m) if m.contains("checksum")),
        "{err}"
    );
    assert_eq!(code, CloseCode::Forgery);
    assert_eq!(state(&hq, &[&a]), before);

    // The same, with the checksum recomputed: the bytes now hash to another
    // change than the one signed.
    let (_w, hq, a) = World::pair();
    new_case(&a, 1, "general", "Hash");
    sync(&a, &hq, t(2));
    let before = state(&hq, &[&a]);
    let (err, code) = send_tampered(&a, &hq, t(4), note("second text"), |b| {
        let env = &mut b.changes[0];
        let at = env.windows(6).position(|w| w == b"second").unwrap();
        env[at] = b'S';
        let change = automerge::Change::from_bytes(env[CHANGE_HEADER_LEN..].to_vec())
            .expect("a text byte changed is still a change");
        env[CHANGE_HEADER_LEN + 4..CHANGE_HEADER_LEN + 8].copy_from_slice(&change.hash().0[..4]);
    });
    assert!(
        matches!(&err, SessionError::Forgery(m) if m.contains("signature")),
        "{err}"
    );
    assert_eq!(code, CloseCode::Forgery);
    assert_eq!(state(&hq, &[&a]), before);
}

// ---- 4. bytes that are not an Automerge change ----

#[test]
fn bytes_that_are_not_an_automerge_change() {
    let (_w, hq, a) = World::pair();
    new_case(&a, 1, "general", "Garbage");
    sync(&a, &hq, t(2));
    let before = state(&hq, &[&a]);
    for (i, body) in [
        b"not automerge at all".to_vec(),
        vec![0x85, 0x6f, 0x4a, 0x83, 0, 0, 0, 0, 2, 1, 0], // a compressed chunk
        vec![0x85, 0x6f, 0x4a, 0x83, 1, 2, 3, 4, 1, 200, 9], // a truncated change
    ]
    .into_iter()
    .enumerate()
    {
        let (err, code) = send_tampered(
            &a,
            &hq,
            t(3 + i as i64),
            |_| {},
            |b| {
                // A real header (case, signer, signature, counter) before garbage.
                let env = a
                    .store
                    .case_envelopes(&a.store.list_cases().unwrap()[0].id)
                    .unwrap();
                let mut bad = env[0][..CHANGE_HEADER_LEN].to_vec();
                bad.extend_from_slice(&body);
                b.changes = vec![bad];
                b.through = a.store.log_head().unwrap();
            },
        );
        assert!(
            matches!(&err, SessionError::Forgery(m) if m.contains("not an automerge change") || m.contains("malformed automerge change")),
            "{err}"
        );
        assert_eq!(code, CloseCode::Forgery);
        assert_eq!(state(&hq, &[&a]), before);
    }
}

/// An enrolled device signs a change that marks text (rich-text marks, which
/// no case document is made of, and where malformed Automerge changes can
/// abort the process): refused when the batch is decoded, before anything
/// reaches Automerge or the store.
#[test]
fn a_change_holding_rich_text_marks() {
    use automerge::marks::{ExpandMark, Mark};
    use automerge::transaction::Transactable;
    let (_w, hq, a) = World::pair();
    let case = new_case(&a, 1, "general", "Marked");
    sync(&a, &hq, t(2));
    let before = state(&hq, &[&a]);
    let first = changes_of(&a, &case).remove(0);
    let mut doc = raw_doc(&a, vec![first.clone()]);
    let text = doc
        .put_object(automerge::ROOT, "scratch", automerge::ObjType::Text)
        .unwrap();
    doc.splice_text(&text, 0, 0, "urgent").unwrap();
    doc.mark(
        &text,
        Mark::new("bold".into(), true, 0, 6),
        ExpandMark::After,
    )
    .unwrap();
    doc.commit();
    let marked = doc.get_changes(&[first.hash()]).remove(0);
    let (err, code) = send_signed(&a, &hq, t(3), case, 9, marked);
    assert!(
        matches!(&err, SessionError::Forgery(m) if m.contains("rich-text marks")),
        "{err}"
    );
    assert_eq!(code, CloseCode::Forgery);
    assert_eq!(state(&hq, &[&a]), before);
}

// ---- 5. a change over the size limit ----

/// A change larger than `MAX_CHANGE_LEN` (but within a batch) is refused as
/// a limit; a device never makes one (see `crates/case/tests/authorship.rs`).
#[test]
fn change_over_the_size_limit() {
    let (_w, hq, a) = World::pair();
    let case = new_case(&a, 1, "general", "Big");
    sync(&a, &hq, t(2));
    let before = state(&hq, &[&a]);
    // Made with Automerge directly, signed by A's real key.
    let mut doc = raw_doc(&a, changes_of(&a, &case));
    let blob: Vec<u8> = (0..MAX_CHANGE_LEN + 4096)
        .map(|i| (i * 7919 % 251) as u8)
        .collect();
    automerge::transaction::Transactable::put(&mut doc, automerge::ROOT, "blob", blob).unwrap();
    doc.commit();
    let big = doc.get_last_local_change().unwrap();
    assert!(big.raw_bytes().len() > MAX_CHANGE_LEN);
    let (err, code) = send_signed(&a, &hq, t(3), case, 50, big);
    assert!(
        matches!(&err, SessionError::Limit(m) if m.contains("change too large")),
        "{err}"
    );
    assert_eq!(code, CloseCode::Limit);
    assert_eq!(state(&hq, &[&a]), before);
}

// ---- 6. dependencies that never arrive, until the pending limit ----

/// A device sends changes whose first dependency it never sends. The relay
/// holds them in pending (and acknowledges each batch: they are stored
/// durably) until the pending table would pass its limits; that batch is
/// refused with a named error and a `Limit` close, and nothing of it is
/// stored. What was acknowledged is kept: when the missing change finally
/// arrives, everything is stored. The limits are lowered here (to 700
/// changes) so that a debug build runs this in seconds; the default limits
/// are tested in `crates/store/tests/sync.rs`: `pending_is_bounded`.
#[test]
fn dependencies_that_never_arrive_until_the_pending_limit() {
    let (_w, hq, a) = World::pair();
    let limits = PendingLimits {
        changes: 700,
        ..PendingLimits::default()
    };
    hq.store.set_pending_limits(limits).unwrap();
    assert_eq!(hq.store.pending_limits().unwrap(), limits);
    let case = CaseId::from_bytes([9; 16]);
    let genesis = {
        let g = fieldsync_case::new_genesis(
            case,
            fieldsync_case::CaseKind::CulturalProperty,
            "rome",
            "general",
            a.id(),
            t(1),
        )
        .unwrap();
        fieldsync_identity::encode_signed(sign(g, &a.key).unwrap().as_signed())
    };
    let mut doc = CaseDoc::new(a.id().actor(0));
    doc.init("flood").unwrap();
    let first = doc.commit(t(1), "e").unwrap().unwrap();
    let first = encode_change(
        sign(payload_for_local(case, 1, first), &a.key)
            .unwrap()
            .as_signed(),
    );
    let total = 2 * fieldsync_protocol::MAX_BATCH_CHANGES + 100;
    let mut rest = Vec::with_capacity(total);
    for i in 0..total {
        doc.set_title(&format!("t{i}")).unwrap();
        let c = doc.commit(t(1), "e").unwrap().unwrap();
        rest.push(encode_change(
            sign(payload_for_local(case, i as u64 + 2, c), &a.key)
                .unwrap()
                .as_signed(),
        ));
    }
    let mut sh = relay_session(&hq, &a, t(2));
    let mut through = 0;
    let mut acked = 0;
    let mut refusal = None;
    for chunk in rest.chunks(fieldsync_protocol::MAX_BATCH_CHANGES) {
        through += chunk.len() as u64;
        let batch = Batch {
            geneses: vec![genesis.clone()],
            changes: chunk.to_vec(),
            through,
            ..Batch::default()
        };
        match sh.handle_input(&hq.store, &Message::Batch(batch).to_frame(), t(2)) {
            Ok(()) => acked = through,
            Err(e) => {
                refusal = Some(e);
                break;
            }
        }
    }
    let err = refusal.expect("the pending limit was never reached");
    assert!(
        matches!(
            err,
            SessionError::Ingest(BundleError::PendingFull { changes: 700, .. })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("nothing of this batch was stored"));
    assert_eq!(close_code(&mut sh), CloseCode::Limit);
    // Every acknowledged change is held; the refused batch is not; the cursor
    // is where the acknowledgements stopped.
    assert_eq!(acked, fieldsync_protocol::MAX_BATCH_CHANGES as u64);
    assert_eq!(hq.store.pending_len().unwrap() as u64, acked);
    assert_eq!(hq.store.peer_cursor(&a.id()).unwrap().unwrap().seq, acked);
    assert_eq!(hq.store.log_head().unwrap(), 0);
    // The missing change arrives (with what was refused): all is stored.
    let mut sh = relay_session(&hq, &a, t(3));
    let mut tail = vec![first];
    tail.extend(rest[acked as usize..].iter().cloned());
    for chunk in tail.chunks(fieldsync_protocol::MAX_BATCH_CHANGES) {
        acked += chunk.len() as u64;
        let batch = Batch {
            geneses: vec![genesis.clone()],
            changes: chunk.to_vec(),
            through: acked,
            ..Batch::default()
        };
        sh.handle_input(&hq.store, &Message::Batch(batch).to_frame(), t(3))
            .unwrap();
    }
    assert_eq!(hq.store.pending_len().unwrap(), 0);
    assert_eq!(
        hq.store.log_head().unwrap(),
        total as u64 + 1,
        "every change stored, none lost"
    );
}

// ---- 7. equivocation ----

/// A rogue (enrolled) device signs two different changes as its second
/// change to a case. Headquarters stored the first, forwarded it, and an
/// honest device built on it; then the second arrives. Both are held in the
/// quarantine, with the honest change that depends on the first; the case
/// is rebuilt without them; the device is flagged (an audit entry and
/// `Store::equivocations`); a copy arriving again, and a later change built
/// on a held one, are held too. The batch is acknowledged: holding is not
/// losing.
#[test]
fn equivocation() {
    let mut w = World::new();
    let hq = w.node(1, "hq", Role::Relay, &["general"], &["general"]);
    let a = w.node(2, "a", Role::Field, &["general"], &["general"]);
    let rogue = w.node(3, "rogue", Role::Field, &["general"], &["general"]);
    let case = new_case(&rogue, 1, "general", "Two stories");
    rogue
        .store
        .edit_case(&case, t(2), "note", |d| {
            d.add_note(rogue.id(), t(2), "version one")
        })
        .unwrap();
    sync(&rogue, &hq, t(3));
    sync(&a, &hq, t(3));
    a.store
        .edit_case(&case, t(4), "note", |d| d.add_note(a.id(), t(4), "seen it"))
        .unwrap();
    sync(&a, &hq, t(5));
    let envs = a.store.case_envelopes(&case).unwrap();
    let [first, one, built] = &envs[..] else {
        panic!("three changes expected");
    };
    let (first_c, one_c) = (decode_change(first).unwrap(), decode_change(one).unwrap());
    assert_eq!(one_c.payload().seq(), 2);

    // The second story: the rogue's actor, number 2 again, on the same base.
    let mut doc = CaseDoc::new(rogue.id().actor(0));
    doc.apply(vec![first_c.payload().change().clone()]).unwrap();
    doc.add_note(rogue.id(), t(6), "version two").unwrap();
    let two = doc.commit(t(6), "note").unwrap().unwrap();
    assert_eq!(two.seq(), 2);
    let two = encode_change(
        sign(payload_for_local(case, 9, two), &rogue.key)
            .unwrap()
            .as_signed(),
    );
    let before = state(&hq, &[&a, &rogue]);
    let audit_before = hq.store.audit_log().unwrap().len();
    let mut sh = relay_session(&hq, &rogue, t(7));
    let batch = Batch {
        changes: vec![two.clone()],
        through: rogue.store.log_head().unwrap(),
        ..Batch::default()
    };
    sh.handle_input(&hq.store, &Message::Batch(batch).to_frame(), t(7))
        .unwrap();
    let stored: Vec<Event> = std::iter::from_fn(|| sh.poll_event()).collect();
    assert!(
        stored.iter().any(|e| matches!(
            e,
            Event::Stored { report, .. } if report.quarantined == 3 && report.stored == 0
        )),
        "{stored:?}"
    );
    assert!(!sh.is_closed());

    // Both stories and the honest change built on the first are held.
    let after = state(&hq, &[&a, &rogue]);
    let held: Vec<&QuarantineEntry> = after.quarantine[before.quarantine.len()..]
        .iter()
        .map(|(_, q)| q)
        .collect();
    let mut held_changes: Vec<&Vec<u8>> = held.iter().map(|q| &q.change).collect();
    held_changes.sort();
    let mut expected = vec![one, &two, built];
    expected.sort();
    assert_eq!(held_changes, expected);
    for q in &held {
        if q.change == *built {
            assert!(q.reason.contains("depends on change"), "{}", q.reason);
            assert_eq!(q.signer, a.id());
        } else {
            assert!(q.reason.starts_with("equivocation:"), "{}", q.reason);
            assert_eq!(q.signer, rogue.id());
        }
    }
    // The case is rebuilt from what stands: its first change. The log
    // keeps its positions.
    assert_eq!(after.log_head, before.log_head);
    assert_eq!(after.heads, vec![(case, vec![first_c.payload().hash()])]);
    assert!(hq.store.case_record(&case).unwrap().notes.is_empty());
    // The device is flagged.
    let flagged = hq.store.equivocations().unwrap();
    assert_eq!(flagged.len(), 1);
    assert_eq!(
        (
            flagged[0].case,
            flagged[0].device,
            flagged[0].seq,
            flagged[0].dependents
        ),
        (case, rogue.id(), 2, 1)
    );
    let mut hashes = flagged[0].changes.clone();
    hashes.sort();
    let mut want = vec![
        one_c.payload().hash(),
        decode_change(&two).unwrap().payload().hash(),
    ];
    want.sort();
    assert_eq!(hashes, want);
    let audit = hq.store.audit_log().unwrap();
    assert_eq!(audit.len(), audit_before + 1);
    assert!(
        audit[audit_before].detail.contains(&rogue.id().to_string()),
        "{}",
        audit[audit_before].detail
    );

    // A copy of the first story sent again is held, not stored; so is a
    // later change the honest device built on a held one.
    a.store
        .edit_case(&case, t(8), "note", |d| d.add_note(a.id(), t(8), "more"))
        .unwrap();
    let later = a.store.case_envelopes(&case).unwrap().pop().unwrap();
    let settled = state(&hq, &[&a, &rogue]);
    let mut sh = relay_session(&hq, &a, t(9));
    let batch = Batch {
        changes: vec![one.clone(), later.clone()],
        through: a.store.log_head().unwrap(),
        ..Batch::default()
    };
    sh.handle_input(&hq.store, &Message::Batch(batch).to_frame(), t(9))
        .unwrap();
    let now = state(&hq, &[&a, &rogue]);
    assert_eq!(now.heads, settled.heads);
    assert_eq!(now.log_head, settled.log_head);
    assert_eq!(now.pending, 0, "nothing waits forever on a held change");
    assert_eq!(now.quarantine.len(), settled.quarantine.len() + 1);
    let (_, q) = now.quarantine.last().unwrap();
    assert_eq!(q.change, later);
    assert!(q.reason.contains("depends on change"), "{}", q.reason);
    assert_eq!(hq.store.equivocations().unwrap()[0].dependents, 2);
}

// ---- 8. an Automerge panic during apply ----

/// The first change of a case, and a second whose bytes parse, carry the
/// author's actor and the right dependencies, but make Automerge 0.12 panic
/// when applied: found by mutating a real change (real bytes, no injected
/// panic).
fn panicking_change(first: &automerge::Change, second: &automerge::Change) -> automerge::Change {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut state = 0x5eed_1234u64;
    let mut rng = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let bytes = second.raw_bytes().to_vec();
    let mut found = None;
    for _ in 0..200_000 {
        let mut b = bytes.clone();
        for _ in 0..1 + rng() % 3 {
            let i = 9 + (rng() as usize) % (b.len() - 9);
            b[i] = rng() as u8;
        }
        let Some(parsed) = catch_unwind(AssertUnwindSafe(|| {
            automerge::Change::from_bytes(b.clone())
        }))
        .ok()
        .and_then(Result::ok) else {
            continue;
        };
        b[4..8].copy_from_slice(&parsed.hash().0[..4]);
        let Ok(fixed) = automerge::Change::from_bytes(b) else {
            continue;
        };
        if fixed.actor_id() != second.actor_id() || fixed.deps() != second.deps() {
            continue;
        }
        let mut probe = CaseDoc::new(
            DeviceId::from_public_key(SecretKey::from_seed(&[99; 32]).public()).actor(0),
        );
        probe.apply(vec![first.clone()]).unwrap();
        if matches!(
            probe.apply(vec![fixed.clone()]),
            Err(CaseError::Panicked(_))
        ) {
            found = Some(fixed);
            break;
        }
    }
    std::panic::set_hook(hook);
    found.expect("no panicking mutant found")
}

/// A rogue (but enrolled) device's change that makes Automerge panic reaches
/// a device through the relay (a relay stores changes by their headers and
/// never applies them). The device keeps the case as it was, quarantines the
/// change, acknowledges the batch (so it is not sent again) and closes the
/// session with a named error.
#[test]
fn automerge_panic_during_apply() {
    let mut w = World::new();
    let hq = w.node(1, "hq", Role::Relay, &["general"], &["general"]);
    let d = w.node(2, "d", Role::Field, &["general"], &["general"]);
    let rogue = w.node(3, "rogue", Role::Field, &["general"], &["general"]);
    let case = new_case(&rogue, 1, "general", "Hostile");
    sync(&rogue, &hq, t(2));
    sync(&d, &hq, t(3));
    let first = changes_of(&rogue, &case).remove(0);
    let mut doc = CaseDoc::new(rogue.id().actor(0));
    doc.apply(vec![first.clone()]).unwrap();
    doc.splice_summary(0, 0, "hello world").unwrap();
    doc.add_note(rogue.id(), t(4), "note").unwrap();
    let second = doc.commit(t(4), "edit").unwrap().unwrap();
    let bomb = panicking_change(&first, &second);
    let bomb_env = encode_change(
        sign(payload_for_local(case, 7, bomb), &rogue.key)
            .unwrap()
            .as_signed(),
    );
    // The relay stores it (by its header).
    let mut sr = Session::new(rogue.config(), &rogue.store, hq.id(), t(4)).unwrap();
    let mut sh = Session::new(hq.config(), &hq.store, rogue.id(), t(4)).unwrap();
    settle(&rogue, &mut sr, &hq, &mut sh, t(4));
    let batch = Batch {
        changes: vec![bomb_env.clone()],
        through: rogue.store.log_head().unwrap(),
        ..Batch::default()
    };
    sh.handle_input(&hq.store, &Message::Batch(batch).to_frame(), t(4))
        .unwrap();
    assert_eq!(hq.store.case_heads().unwrap()[0].heads.len(), 1);

    // The device syncs.
    let before = state(&d, &[&hq]);
    let mut sd = Session::new(d.config(), &d.store, hq.id(), t(5)).unwrap();
    let mut sh = Session::new(hq.config(), &hq.store, d.id(), t(5)).unwrap();
    let quiet = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut refusal = None;
    for _ in 0..100 {
        let fd: Vec<Vec<u8>> = std::iter::from_fn(|| sd.poll_transmit()).collect();
        let fh: Vec<Vec<u8>> = std::iter::from_fn(|| sh.poll_transmit()).collect();
        if fd.is_empty() && fh.is_empty() {
            break;
        }
        for f in fh {
            if let Err(e) = sd.handle_input(&d.store, &f, t(5)) {
                refusal.get_or_insert(e);
            }
        }
        for f in fd {
            let _ = sh.handle_input(&hq.store, &f, t(5));
        }
    }
    std::panic::set_hook(quiet);
    let err = refusal.expect("the device must close the session");
    assert!(
        matches!(&err, SessionError::Forgery(m) if m.contains("Automerge could not apply") && m.contains("panicked")),
        "{err}"
    );
    assert!(sd.is_closed() && sh.is_closed());
    let events: Vec<Event> = std::iter::from_fn(|| sh.poll_event()).collect();
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::Closed {
                code: CloseCode::Forgery,
                by_peer: true,
                ..
            }
        )),
        "{events:?}"
    );
    // The case is as it was; the change is in the quarantine, with its reason.
    let after = state(&d, &[&hq]);
    assert_eq!(after.records, before.records);
    assert_eq!(after.heads, before.heads);
    assert_eq!(after.log_head, before.log_head);
    assert_eq!(after.quarantine.len(), before.quarantine.len() + 1);
    let (_, q) = after.quarantine.last().unwrap();
    assert_eq!(q.change, bomb_env);
    assert!(q.reason.contains("panicked"), "{}", q.reason);
    // It is not sent again: the next session is clean.
    sync(&d, &hq, t(6));
    assert_eq!(state(&d, &[&hq]).quarantine, after.quarantine);
    assert_eq!(d.store.case_record(&case).unwrap().title, "Hostile");
}

// ---- 10. a change for a compartment the peer may not read ----

/// See also `sessions.rs`: `a_case_outside_the_readers_compartments_looks_like_no_case`
/// (what a reader is sent). Here also what the relay answers a peer that
/// names a case it may not read: the answer for a case that does not exist.
#[test]
fn a_change_for_a_compartment_the_peer_may_not_read() {
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
    let n = w.node(3, "narc", Role::Field, &["narcotics"], &["narcotics"]);
    let hidden = new_case(&a, 0x41, "general", "Not for narcotics");
    new_case(&a, 0x42, "narcotics", "Narcotics");
    sync(&a, &hq, t(2));
    let nowhere = CaseId::from_bytes([0x77; 16]);

    // What the reader is sent: nothing of the hidden case.
    let mut sn = Session::new(n.config(), &n.store, hq.id(), t(3)).unwrap();
    let mut sh = Session::new(hq.config(), &hq.store, n.id(), t(3)).unwrap();
    let mut seen = Vec::new();
    for _ in 0..100 {
        let fnn: Vec<Vec<u8>> = std::iter::from_fn(|| sn.poll_transmit()).collect();
        let fh: Vec<Vec<u8>> = std::iter::from_fn(|| sh.poll_transmit()).collect();
        if fnn.is_empty() && fh.is_empty() {
            break;
        }
        for f in fh {
            seen.extend_from_slice(&f);
            sn.handle_input(&n.store, &f, t(3)).unwrap();
        }
        for f in fnn {
            sh.handle_input(&hq.store, &f, t(3)).unwrap();
        }
    }
    assert!(!seen.windows(16).any(|w| w == hidden.as_bytes()));
    assert_eq!(n.store.list_cases().unwrap().len(), 1);
    let before = state(&hq, &[&a, &n]);

    // The reader offers both cases in a repair: the hidden one is answered
    // exactly as the one that does not exist (nothing held of it).
    let offer = RepairHeads {
        differing: vec![],
        cases: vec![
            (*hidden.as_bytes(), vec![[1; 32]]),
            (*nowhere.as_bytes(), vec![[1; 32]]),
        ],
    };
    sh.handle_input(&hq.store, &Message::RepairOffer(offer).to_frame(), t(3))
        .unwrap();
    let need = sh.poll_transmit().unwrap();
    let Message::RepairNeed(need) = Message::decode(&need[4..]).unwrap() else {
        panic!("expected a repair need");
    };
    assert_eq!(
        need.cases,
        vec![(*hidden.as_bytes(), vec![]), (*nowhere.as_bytes(), vec![])]
    );

    // A change of the hidden case (with its genesis) is answered as one of a
    // case unknown here: acknowledged, held in the quarantine (the reader
    // may not write there), never applied or forwarded. (Sent without its
    // genesis it is stored-case business as usual: quarantined too, where
    // a case unknown here closes the session; a peer that lost access to a
    // compartment must not be stuck on its own old changes.)
    let mut answers = Vec::new();
    for (case, genesis) in [
        (hidden, hq.store.case_genesis(&hidden).unwrap().unwrap()),
        (
            nowhere,
            fieldsync_identity::encode_signed(
                sign(
                    fieldsync_case::new_genesis(
                        nowhere,
                        fieldsync_case::CaseKind::CriminalInvestigation,
                        "rome",
                        "general",
                        n.id(),
                        t(4),
                    )
                    .unwrap(),
                    &n.key,
                )
                .unwrap()
                .as_signed(),
            ),
        ),
    ] {
        let mut doc = CaseDoc::new(n.id().actor(0));
        doc.init("probe").unwrap();
        let c = doc.commit(t(4), "probe").unwrap().unwrap();
        let env = encode_change(
            sign(payload_for_local(case, 1, c), &n.key)
                .unwrap()
                .as_signed(),
        );
        let mut sh = relay_session(&hq, &n, t(4));
        let batch = Batch {
            geneses: vec![genesis],
            changes: vec![env.clone()],
            through: n.store.log_head().unwrap(),
            ..Batch::default()
        };
        sh.handle_input(&hq.store, &Message::Batch(batch).to_frame(), t(4))
            .unwrap();
        assert!(!sh.is_closed());
        let reply: Vec<Message> = std::iter::from_fn(|| sh.poll_transmit())
            .map(|f| Message::decode(&f[4..]).unwrap())
            .collect();
        let stored: Vec<Event> = std::iter::from_fn(|| sh.poll_event())
            .filter(|e| matches!(e, Event::Stored { .. }))
            .collect();
        answers.push((
            reply
                .iter()
                .map(|m| match m {
                    Message::Ack(a) => format!("ack {} receipt {}", a.through, a.receipt.is_some()),
                    other => format!("{other:?}"),
                })
                .collect::<Vec<_>>(),
            stored,
        ));
        let (_, q) = hq.store.quarantine().unwrap().pop().unwrap();
        assert_eq!(q.change, env);
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(
        answers[0].0,
        vec![format!("ack {} receipt true", n.store.log_head().unwrap())]
    );
    let after = state(&hq, &[&a, &n]);
    assert_eq!(
        (&after.cases, &after.heads, &after.records, after.log_head),
        (
            &before.cases,
            &before.heads,
            &before.records,
            before.log_head
        )
    );
    assert_eq!(after.quarantine.len(), before.quarantine.len() + 2);
}
