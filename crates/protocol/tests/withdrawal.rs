//! A revoked device behind an office: the office accepts its changes before
//! it hears of the revocation, devices behind it build on them; when the
//! office learns the list from headquarters it withdraws them, and so does
//! every device it passes the list to, except what a device's own changes
//! depend on. Real sessions over an in-memory pipe, real stores.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use fieldsync_case::{CaseKind, ChangeHash, Field, envelope_hash};
use fieldsync_identity::{
    CERTIFICATE_VERSION, CaseId, CertificateBody, Compartment, DeviceCertificate, DeviceId, HqRoot,
    Revocation, Role, SecretKey, Timestamp,
};
use fieldsync_protocol::{
    Authority, DEFAULT_MAX_IN_FLIGHT, NodeRole, Session, SessionConfig, apply_release,
    encode_release, release_body,
};
use fieldsync_store::{NewCase, NewDevice, Store, StoreKind, dependent_reason};

const T0: i64 = 1_790_000_000_000;

fn t(s: i64) -> Timestamp {
    Timestamp::from_millis(T0 + s * 1000)
}

struct Node {
    store: Store,
    cert: DeviceCertificate,
    role: NodeRole,
}

impl Node {
    fn id(&self) -> DeviceId {
        self.store.device().id()
    }

    /// A session configuration with the revocation list this node's store
    /// holds (as a driver builds it).
    fn config(&self, hq: &HqRoot) -> SessionConfig {
        let list = self
            .store
            .revocations()
            .unwrap()
            .map(|b| fieldsync_identity::RevocationList::from_bytes(&b, &hq.public()).unwrap());
        SessionConfig {
            role: self.role,
            certificate: self.cert.clone(),
            authority: Authority::new(hq.public(), list),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            deferred_commits: false,
        }
    }

    fn quarantined(&self) -> Vec<(ChangeHash, String)> {
        self.store
            .quarantine()
            .unwrap()
            .into_iter()
            .map(|(_, e)| (envelope_hash(&e.change).unwrap(), e.reason))
            .collect()
    }

    fn heads(&self) -> Vec<(CaseId, Vec<ChangeHash>)> {
        self.store
            .case_heads()
            .unwrap()
            .into_iter()
            .map(|h| (h.case, h.heads))
            .collect()
    }
}

fn node(hq: &HqRoot, seed: u8, name: &str, role: Role) -> Node {
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
    let general = vec![Compartment::new("general").unwrap()];
    let cert = hq
        .issue(CertificateBody {
            version: CERTIFICATE_VERSION,
            serial: u64::from(seed),
            issuer: hq.public(),
            device: store.device().id(),
            name: name.into(),
            office: "rome".into(),
            role,
            read: general.clone(),
            write: general,
            not_before: t(-10),
            not_after: t(86_400 * 365),
        })
        .unwrap();
    let role = if role == Role::Relay {
        NodeRole::Relay
    } else {
        NodeRole::Device
    };
    Node { store, cert, role }
}

/// Runs a session between `a` (dialing) and `b` until neither has anything
/// to send; returns the first error either side met.
fn sync(hq: &HqRoot, a: &Node, b: &Node, now: Timestamp) -> Result<(), String> {
    let mut sa = Session::new(a.config(hq), &a.store, b.id(), now).unwrap();
    let mut sb = Session::new(b.config(hq), &b.store, a.id(), now).unwrap();
    let mut outcome = Ok(());
    for _ in 0..1000 {
        let fa: Vec<Vec<u8>> = std::iter::from_fn(|| sa.poll_transmit()).collect();
        let fb: Vec<Vec<u8>> = std::iter::from_fn(|| sb.poll_transmit()).collect();
        if fa.is_empty() && fb.is_empty() {
            return outcome;
        }
        for f in fa {
            if !sb.is_closed()
                && let Err(e) = sb.handle_input(&b.store, &f, now)
                && outcome.is_ok()
            {
                outcome = Err(format!("{}: {e}", b.cert.name()));
            }
        }
        for f in fb {
            if !sa.is_closed()
                && let Err(e) = sa.handle_input(&a.store, &f, now)
                && outcome.is_ok()
            {
                outcome = Err(format!("{}: {e}", a.cert.name()));
            }
        }
    }
    panic!("sync does not settle");
}

fn note(n: &Node, case: &CaseId, at: Timestamp, text: &str) -> ChangeHash {
    let me = n.id();
    n.store
        .edit_case(case, at, "note", |d| d.add_note(me, at, text))
        .unwrap()
        .unwrap()
}

#[test]
fn an_office_withdraws_what_it_accepted_beyond_the_revocation_point() {
    let root = HqRoot::from_secret(SecretKey::from_seed(&[200; 32]));
    let hq = node(&root, 1, "hq", Role::Relay);
    let office = node(&root, 2, "office", Role::Relay);
    let lost = node(&root, 3, "lost-laptop", Role::Field);
    let builder = node(&root, 4, "builder", Role::Field);
    let reader = node(&root, 5, "reader", Role::Field);
    hq.store
        .set_revocations(&root.empty_revocations(t(0)).unwrap().to_bytes())
        .unwrap();

    // The lost laptop's case reaches headquarters through the office.
    let case = lost
        .store
        .create_case(
            &NewCase {
                id: CaseId::from_bytes([1; 16]),
                kind: CaseKind::CulturalProperty,
                office: "rome",
                compartment: "general",
                title: "Stele",
            },
            t(1),
        )
        .unwrap();
    note(&lost, &case, t(2), "seen at the port");
    sync(&root, &lost, &office, t(3)).unwrap();
    sync(&root, &office, &hq, t(4)).unwrap();

    // Headquarters revokes it, accepting what it holds of it.
    let held = hq.store.signed_counters(&lost.id()).unwrap();
    assert_eq!(held.get(&0), Some(&2));
    let list = root
        .revoke(
            None,
            Revocation::new(lost.id(), t(5), "stolen").accepting(0, held[&0]),
            t(5),
        )
        .unwrap();
    assert_eq!(
        hq.store
            .adopt_revocations(&list, t(5))
            .unwrap()
            .quarantined(),
        0
    );

    // The office has not heard: it takes the laptop's next change, and the
    // builder builds on it; the reader only reads.
    let forged = lost
        .store
        .edit_case(&case, t(6), "title", |d| {
            d.set_field(Field::Title, "Forged")
        })
        .unwrap()
        .unwrap();
    sync(&root, &lost, &office, t(7)).unwrap();
    sync(&root, &builder, &office, t(8)).unwrap();
    let built = note(&builder, &case, t(9), "on top of the new title");
    sync(&root, &builder, &office, t(10)).unwrap();
    sync(&root, &reader, &office, t(11)).unwrap();
    assert_eq!(reader.store.case_record(&case).unwrap().title, "Forged");
    assert!(office.store.has_change(&case, &built).unwrap());
    let office_head = office.store.log_head().unwrap();

    // The office syncs with headquarters: it learns the list and withdraws
    // both; headquarters, which got them in the same session, holds both
    // in its quarantine too.
    sync(&root, &office, &hq, t(12)).unwrap();
    let root_reason = list
        .change_status(&lost.id(), 0, 3)
        .quarantine_reason(&lost.id())
        .unwrap();
    let dep_reason = dependent_reason(&forged, &lost.id());
    for n in [&office, &hq] {
        let q = n.quarantined();
        assert!(q.contains(&(forged, root_reason.clone())), "{q:?}");
        assert!(q.contains(&(built, dep_reason.clone())), "{q:?}");
        assert_eq!(q.len(), 2, "{q:?}");
        assert!(!n.store.has_change(&case, &forged).unwrap());
        assert_eq!(n.store.pending_len().unwrap(), 0);
    }
    assert_eq!(office.heads(), hq.heads());
    assert_eq!(
        office.store.log_head().unwrap(),
        office_head,
        "the head stays"
    );
    assert_eq!(
        office.store.list_cases_with_summaries().unwrap()[0].title,
        "Stele"
    );

    // The reader learns the list from the office and withdraws both; the
    // builder keeps its own change and the one it depends on.
    sync(&root, &reader, &office, t(13)).unwrap();
    assert_eq!(reader.store.case_record(&case).unwrap().title, "Stele");
    assert_eq!(reader.quarantined().len(), 2);
    assert_eq!(reader.heads(), hq.heads());
    sync(&root, &builder, &office, t(14)).unwrap();
    assert!(builder.store.revocations().unwrap().is_some());
    assert!(builder.store.has_change(&case, &built).unwrap());
    assert!(builder.store.has_change(&case, &forged).unwrap());
    assert!(builder.quarantined().is_empty());
    // The revoked laptop is refused.
    let refused = sync(&root, &lost, &office, t(15)).unwrap_err();
    assert!(refused.contains("revoked"), "{refused}");

    // Headquarters releases the withdrawn change, then its dependent: both
    // travel with their releases and stand everywhere again.
    let certs: BTreeMap<DeviceId, DeviceCertificate> = BTreeMap::new();
    let authority = hq.config(&root).authority;
    for hash in [forged, built] {
        let (id, entry) = hq
            .store
            .quarantine()
            .unwrap()
            .into_iter()
            .find(|(_, e)| envelope_hash(&e.change) == Some(hash))
            .unwrap();
        let body = release_body(&entry, root.public(), "checked", t(16)).unwrap();
        let release = encode_release(root.sign(body).unwrap().as_signed());
        let r = apply_release(&hq.store, &authority, id, &release, &certs, t(16)).unwrap();
        assert_eq!(r.stored, 1);
    }
    assert!(hq.store.quarantine().unwrap().is_empty());
    sync(&root, &office, &hq, t(17)).unwrap();
    sync(&root, &reader, &office, t(18)).unwrap();
    for n in [&office, &reader] {
        assert!(n.quarantined().is_empty(), "{:?}", n.quarantined());
        assert!(n.store.has_change(&case, &forged).unwrap());
        assert!(n.store.has_change(&case, &built).unwrap());
        assert_eq!(n.heads(), hq.heads());
    }
    assert_eq!(reader.store.case_record(&case).unwrap().title, "Forged");
}
