//! The signed change envelope: round trip, tampering, forged authorship,
//! garbage.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Device, base, case_id, t};
use fieldsync_case::{
    CHANGE_HEADER_LEN, ChangeError, ChangePayload, MAX_CHANGE_LEN, decode_change, encode_change,
    envelope_hash, payload_for_local,
};
use fieldsync_identity::{Signable, Signed, VerifyError, sign, verify_batch};
use proptest::prelude::*;
use std::sync::LazyLock;

/// A valid envelope signed by device 1, and the device.
fn envelope() -> (Device, Vec<u8>) {
    static BYTES: LazyLock<Vec<u8>> = LazyLock::new(|| {
        let a = Device::new(1);
        let (mut doc, _) = base(&a, "Envelope");
        doc.splice_summary(0, 0, "some words").unwrap();
        let change = doc.commit(t(2), "words").unwrap().unwrap();
        let signed = sign(payload_for_local(case_id(), 42, change), &a.key).unwrap();
        encode_change(signed.as_signed())
    });
    (Device::new(1), BYTES.clone())
}

#[test]
fn round_trip_and_verify() {
    let (a, bytes) = envelope();
    let signed = decode_change(&bytes).unwrap();
    assert_eq!(
        encode_change(&signed),
        bytes,
        "re-encoding gives the same bytes"
    );
    let v = signed.verify().unwrap();
    let p = v.payload();
    assert_eq!(p.case(), case_id());
    assert_eq!(p.counter(), 42);
    assert_eq!(p.actor().unwrap().device, a.id);
    assert_eq!(v.device(), a.id);
    assert_eq!(p.hash(), p.change().hash().into());
    assert_eq!(
        envelope_hash(&bytes),
        Some(p.hash()),
        "the hash read from the envelope is Automerge's"
    );
    assert_eq!(envelope_hash(&bytes[..CHANGE_HEADER_LEN + 4]), None);
    assert_eq!(p.raw_bytes(), &bytes[CHANGE_HEADER_LEN..]);
    assert_eq!(p.deps().len(), 1);
    assert_eq!(p.hash().to_string().len(), 64);
    assert_eq!(p.hash().short().len(), 8);
    assert_eq!(
        p.hash()
            .to_string()
            .parse::<fieldsync_case::ChangeHash>()
            .unwrap(),
        p.hash()
    );
    // The signed message is case ‖ hash ‖ counter.
    let mut msg = Vec::new();
    p.signed_message(&mut msg);
    assert_eq!(&msg[..16], case_id().as_bytes());
    assert_eq!(&msg[16..48], p.hash().as_bytes());
    assert_eq!(msg[48..], 42u64.to_be_bytes());
    assert_eq!(
        verify_batch(vec![decode_change(&bytes).unwrap()])
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn every_flipped_byte_is_caught() {
    let (_, bytes) = envelope();
    for i in 0..bytes.len() {
        for bit in [0x01, 0x80] {
            let mut bad = bytes.clone();
            bad[i] ^= bit;
            let verified = decode_change(&bad).ok().and_then(|s| s.verify().ok());
            assert!(
                verified.is_none(),
                "flipping bit {bit:#x} of byte {i} went unnoticed"
            );
        }
    }
}

#[test]
fn a_change_signed_by_another_device_is_a_mismatch() {
    let a = Device::new(1);
    let b = Device::new(2);
    let (_, change) = base(&a, "A's case");
    // B cannot sign A's change ...
    let err = sign(payload_for_local(case_id(), 1, change.clone()), &b.key).unwrap_err();
    assert!(matches!(err, VerifyError::SignerMismatch { .. }), "{err}");
    assert!(err.to_string().contains(&a.id.short()), "{err}");
    // ... and a valid signature by B over A's change, forged by hand, fails verification.
    let payload = payload_for_local(case_id(), 1, change);
    let mut msg = Vec::new();
    payload.signed_message(&mut msg);
    let sig = b.key.sign_with_domain(ChangePayload::DOMAIN, &msg);
    let forged = Signed::from_parts(payload, b.key.public(), sig);
    let bytes = encode_change(&forged);
    let err = decode_change(&bytes).unwrap().verify().unwrap_err();
    assert!(matches!(err, VerifyError::SignerMismatch { .. }), "{err}");
    let err = verify_batch(vec![decode_change(&bytes).unwrap()]).unwrap_err();
    assert!(matches!(err.error, VerifyError::SignerMismatch { .. }));
}

#[test]
fn a_non_fieldsync_actor_is_refused() {
    let a = Device::new(1);
    let mut doc = automerge::AutoCommit::new()
        .with_actor(automerge::ActorId::from(b"plain actor".as_slice()));
    automerge::transaction::Transactable::put(&mut doc, automerge::ROOT, "k", "v").unwrap();
    doc.commit();
    let change = doc.get_last_local_change().unwrap();
    let err = sign(payload_for_local(case_id(), 1, change), &a.key).unwrap_err();
    assert!(err.to_string().contains("not a FieldSync actor"), "{err}");
}

#[test]
fn named_errors() {
    let (_, bytes) = envelope();
    assert!(matches!(
        decode_change(&bytes[..10]),
        Err(ChangeError::TooShort { .. })
    ));
    let mut v2 = bytes.clone();
    v2[0] = 2;
    assert!(matches!(
        decode_change(&v2),
        Err(ChangeError::UnsupportedVersion { version: 2 })
    ));
    let mut bad_key = bytes.clone();
    bad_key[17..49].copy_from_slice(&[0; 32]); // a small-order point
    assert!(matches!(
        decode_change(&bad_key),
        Err(ChangeError::BadSigner(_))
    ));
    let mut big = bytes[..CHANGE_HEADER_LEN].to_vec();
    big.resize(CHANGE_HEADER_LEN + MAX_CHANGE_LEN + 1, 0);
    assert!(matches!(
        decode_change(&big),
        Err(ChangeError::TooLarge { .. })
    ));
    let header_only = &bytes[..CHANGE_HEADER_LEN];
    assert!(matches!(
        decode_change(header_only),
        Err(ChangeError::NotAChange { .. })
    ));
    let mut compressed = bytes.clone();
    compressed[CHANGE_HEADER_LEN + 8] = 2;
    assert!(matches!(
        decode_change(&compressed),
        Err(ChangeError::NotAChange { .. })
    ));
    let mut checksum = bytes.clone();
    checksum[CHANGE_HEADER_LEN + 4] ^= 1;
    assert!(matches!(
        decode_change(&checksum),
        Err(ChangeError::NotAChange { .. })
    ));
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(matches!(
        decode_change(&trailing),
        Err(ChangeError::Malformed { .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_are_rejected(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        prop_assert!(decode_change(&bytes).is_err());
    }

    #[test]
    fn random_bodies_behind_a_valid_header_never_verify(
        body in proptest::collection::vec(any::<u8>(), 0..400),
        keep_magic in any::<bool>(),
    ) {
        let (_, bytes) = envelope();
        let mut bad = bytes[..CHANGE_HEADER_LEN].to_vec();
        if keep_magic {
            bad.extend_from_slice(&bytes[CHANGE_HEADER_LEN..CHANGE_HEADER_LEN + 9]);
        }
        bad.extend_from_slice(&body);
        let verified = decode_change(&bad).ok().and_then(|s| s.verify().ok());
        prop_assert!(verified.is_none());
    }

    #[test]
    fn mutated_envelopes_never_verify(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
    ) {
        let (_, bytes) = envelope();
        let mut bad = bytes.clone();
        for (at, value, how) in edits {
            let i = at.index(bad.len());
            match how {
                0 => bad[i] = value,
                1 => bad.insert(i, value),
                _ => { bad.remove(i); }
            }
        }
        prop_assume!(bad != bytes);
        let verified = decode_change(&bad).ok().and_then(|s| s.verify().ok());
        prop_assert!(verified.is_none());
    }
}
