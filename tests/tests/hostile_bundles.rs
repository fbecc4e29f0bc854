//! Bundles from outside that must not hurt: a validly signed change whose
//! bytes make Automerge panic, and a bundle with a forged change. The store
//! and the agent refuse them with a named error, store nothing, and live on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::panic::{AssertUnwindSafe, catch_unwind};

use automerge::Change;
use fieldsync_case::{
    CaseDoc, CaseError, CaseKind, ItemId, SubjectInput, encode_change, new_genesis,
    payload_for_local,
};
use fieldsync_identity::{
    ActorBinding, CaseId, DeviceId, Encoded, SecretKey, Signed, Timestamp, encode_signed, sign,
};
use fieldsync_store::{
    BUNDLE_MAGIC, BUNDLE_VERSION, BundleBody, BundleCase, BundleError, NewCase, NewDevice, Store,
    StoreKind,
};
use fieldsync_tests::Agent;

const T0: i64 = 1_790_000_000_000;

fn now() -> Timestamp {
    Timestamp::from_millis(T0)
}

/// xorshift64: deterministic mutations.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A rogue (validly keyed) device's case: genesis, first change, and a second
/// change whose bytes parse and carry its actor but make Automerge panic on apply.
fn poisoned_case(key: &SecretKey) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let device = DeviceId::from_public_key(key.public());
    let case = CaseId::from_bytes([0x66; 16]);
    let genesis = sign(
        new_genesis(
            case,
            CaseKind::VisaSecurity,
            "rome",
            "general",
            device,
            now(),
        )
        .unwrap(),
        key,
    )
    .unwrap();
    let mut doc = CaseDoc::new(device.actor(0));
    doc.init("Hostile").unwrap();
    let first = doc.commit(now(), "create").unwrap().unwrap();
    doc.splice_summary(0, 0, "hello world").unwrap();
    let subject = SubjectInput {
        name: "X".into(),
        role: Some("r".into()),
        ..Default::default()
    };
    doc.add_subject(ItemId::from_u64(5), &subject).unwrap();
    doc.add_note(device, now(), "note").unwrap();
    let second = doc.commit(now(), "edit").unwrap().unwrap();

    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut rng = Rng(0x5eed_1234);
    let bytes = second.raw_bytes().to_vec();
    let mut found = None;
    for _ in 0..200_000 {
        let mut b = bytes.clone();
        for _ in 0..1 + rng.next() % 3 {
            let i = 9 + (rng.next() as usize) % (b.len() - 9);
            b[i] = rng.next() as u8;
        }
        let Some(parsed) = catch_unwind(AssertUnwindSafe(|| Change::from_bytes(b.clone())))
            .ok()
            .and_then(Result::ok)
        else {
            continue;
        };
        // Keep the chunk checksum consistent, as a deliberate attacker would.
        b[4..8].copy_from_slice(&parsed.hash().0[..4]);
        let Ok(fixed) = Change::from_bytes(b) else {
            continue;
        };
        if ActorBinding::parse(fixed.actor_id().to_bytes()) != Some(device.actor(0)) {
            continue;
        }
        let mut probe = CaseDoc::new(device.actor(0));
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
    let bad = found.expect("no panicking mutant found");
    let env = |c: Change, n: u64| {
        encode_change(
            sign(payload_for_local(case, n, c), key)
                .unwrap()
                .as_signed(),
        )
    };
    (
        encode_signed(genesis.as_signed()),
        env(first, 1),
        env(bad, 2),
    )
}

fn bundle(key: &SecretKey, cases: Vec<BundleCase>) -> Vec<u8> {
    let body = Encoded::new(BundleBody {
        version: BUNDLE_VERSION,
        exporter: key.public(),
        created_at: now(),
        cases,
    })
    .unwrap();
    let mut out = BUNDLE_MAGIC.to_vec();
    out.extend_from_slice(&encode_signed(sign(body, key).unwrap().as_signed()));
    out
}

fn store_with_a_case(path: &std::path::Path) -> Store {
    let store = Store::create(
        path,
        NewDevice {
            seed: [1; 32],
            name: "hq-laptop",
            epoch: [2; 16],
            now: now(),
            kind: StoreKind::Device,
        },
    )
    .unwrap();
    store
        .create_case(
            &NewCase {
                id: CaseId::from_bytes([1; 16]),
                kind: CaseKind::CriminalInvestigation,
                office: "rome",
                compartment: "general",
                title: "Mine",
            },
            now(),
        )
        .unwrap();
    store
}

#[test]
fn a_change_that_panics_automerge_is_refused_and_the_store_lives_on() {
    let rogue = SecretKey::from_seed(&[0x99; 32]);
    let (genesis, first, bad) = poisoned_case(&rogue);
    let file = bundle(
        &rogue,
        vec![BundleCase {
            genesis,
            changes: vec![first, bad],
        }],
    );

    let dir = tempfile::tempdir().unwrap();
    let store = store_with_a_case(&dir.path().join("s.redb"));
    let before = store.list_cases().unwrap();
    let err = store.import_bundle(&file, now()).unwrap_err();
    assert!(
        matches!(
            &err,
            BundleError::Apply {
                error: CaseError::Panicked(_),
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        store.list_cases().unwrap(),
        before,
        "a refused bundle changed the store"
    );
    // The store still works.
    let me = store.device().id();
    store
        .edit_case(&CaseId::from_bytes([1; 16]), now(), "note", |d| {
            d.add_note(me, now(), "still here")
        })
        .unwrap();
    assert!(store.verify_all(now()).unwrap().problems.is_empty());

    // Through the agent binary: a named error, exit code 1 (not a crash), nothing stored.
    let agent = Agent::new(&dir.path().join("agent"));
    agent
        .run(&["init", "--name", "field", "--office", "rome"])
        .ok();
    let path = dir.path().join("hostile.fsb");
    std::fs::write(&path, &file).unwrap();
    let r = agent.run(&["import", path.to_str().unwrap()]).fails();
    assert!(
        r.stderr.contains("nothing was stored") && r.stderr.contains("panicked"),
        "{}",
        r.stderr
    );
    assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
    assert!(agent.run(&["case", "list", "--json"]).ok().out() == "[]");
}

#[test]
fn a_forged_change_inside_a_validly_signed_bundle_is_refused() {
    let author = SecretKey::from_seed(&[0x31; 32]);
    let forger = SecretKey::from_seed(&[0x32; 32]);
    let device = DeviceId::from_public_key(author.public());
    let case = CaseId::from_bytes([0x77; 16]);
    let genesis = sign(
        new_genesis(
            case,
            CaseKind::PersonnelRecovery,
            "mexico-city",
            "general",
            device,
            now(),
        )
        .unwrap(),
        &author,
    )
    .unwrap();
    let mut doc = CaseDoc::new(device.actor(0));
    doc.init("Recovery").unwrap();
    let first = doc.commit(now(), "create").unwrap().unwrap();
    doc.add_note(device, now(), "forged words").unwrap();
    let second = doc.commit(now(), "edit").unwrap().unwrap();
    let good = sign(payload_for_local(case, 1, first), &author).unwrap();
    // The forger signs a change whose actor is the author's: a valid signature, wrong signer.
    let payload = payload_for_local(case, 2, second);
    let mut msg = Vec::new();
    fieldsync_identity::Signable::signed_message(&payload, &mut msg);
    let sig = forger.sign_with_domain(
        <fieldsync_case::ChangePayload as fieldsync_identity::Signable>::DOMAIN,
        &msg,
    );
    let forged = Signed::from_parts(payload, forger.public(), sig);
    let file = bundle(
        &forger,
        vec![BundleCase {
            genesis: encode_signed(genesis.as_signed()),
            changes: vec![encode_change(good.as_signed()), encode_change(&forged)],
        }],
    );
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_a_case(&dir.path().join("s.redb"));
    let err = store.import_bundle(&file, now()).unwrap_err();
    assert!(
        matches!(err, BundleError::BadChangeSignature { index: 1, .. }),
        "{err}"
    );
    assert_eq!(store.list_cases().unwrap().len(), 1);
}
