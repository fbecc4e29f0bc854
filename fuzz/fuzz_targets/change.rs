//! Signed-change verification: decoding an envelope, verifying its
//! signature, and the actor binding (a change's actor must be its signer).
//!
//! Input: `[mode][bytes]`. Even mode: the bytes are an envelope off the
//! wire; one that decodes re-encodes to the same bytes, and verifies only
//! if its actor belongs to its signer. Odd mode: the bytes are an Automerge
//! change chunk (its checksum fixed so mutants reach the parser), signed
//! as a rogue device would: by its actor's own key it must verify, by any
//! other key it must not, and a flipped bit anywhere in the envelope must
//! fail decoding or verification.
#![no_main]

use fieldsync_case::{
    CHANGE_HEADER_LEN, ChangePayload, decode_change, encode_change, envelope_hash, parse_change,
    payload_for_local,
};
use fieldsync_fuzz::{check, device_keys, fix_checksum, key_of};
use fieldsync_identity::{CaseId, Signable, Signed, VerifyError, sign};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| check(|| run(data)));

fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        envelope(rest);
    } else {
        resigned(mode, rest);
    }
}

fn envelope(bytes: &[u8]) {
    let signed = match decode_change(bytes) {
        Ok(s) => s,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    assert_eq!(encode_change(&signed), bytes, "decode/encode is not exact");
    assert_eq!(envelope_hash(bytes), Some(signed.payload().hash()));
    let bound = signed
        .payload()
        .actor()
        .is_some_and(|a| a.device.public_key() == signed.signer());
    if signed.verify().is_ok() {
        assert!(bound, "a change verified whose actor is not its signer");
    }
}

fn resigned(mode: u8, body: &[u8]) {
    let mut chunk = body.to_vec();
    fix_checksum(&mut chunk);
    let Ok(change) = parse_change(&chunk) else {
        return;
    };
    assert_eq!(change.raw_bytes(), &chunk[..]);
    let payload = payload_for_local(CaseId::from_bytes([mode; 16]), u64::from(mode), change);
    let author = payload.actor().and_then(|a| key_of(&a.device));

    for key in device_keys() {
        let is_author = author.is_some_and(|a| a.public() == key.public());
        // `sign` refuses to sign another device's change.
        match sign(payload.clone(), key) {
            Ok(_) => assert!(is_author, "signed a change of another actor"),
            Err(e) => {
                assert!(!is_author, "the author could not sign: {e}");
                assert!(matches!(e, VerifyError::SignerMismatch { .. }), "{e}");
            }
        }
        // A signature made around `sign` by a non-author fails the binding.
        let mut msg = Vec::new();
        payload.signed_message(&mut msg);
        let sig = key.sign_with_domain(ChangePayload::DOMAIN, &msg);
        let forged = Signed::from_parts(payload.clone(), key.public(), sig);
        assert_eq!(forged.verify().is_ok(), is_author);
    }

    let Some(key) = author else {
        return;
    };
    let Ok(signed) = sign(payload, key) else {
        panic!("the author could not sign its change");
    };
    let wire = encode_change(signed.as_signed());
    let decoded = match decode_change(&wire) {
        Ok(d) => d,
        Err(e) => panic!("a signed change does not decode: {e}"),
    };
    assert_eq!(decoded.payload(), signed.payload());
    if let Err(e) = decoded.verify() {
        panic!("a change signed by its author does not verify: {e}");
    }
    // One flipped bit anywhere (header, signature, change) is caught.
    let at = (usize::from(mode) * 131 + wire.len() / 3) % wire.len();
    for i in [
        0,
        1,
        17,
        17 + 32,
        CHANGE_HEADER_LEN - 1,
        CHANGE_HEADER_LEN + 9,
        at,
    ] {
        if i >= wire.len() {
            continue;
        }
        let mut bad = wire.clone();
        bad[i] ^= 1 << (mode % 8);
        let caught = decode_change(&bad).map_or(true, |s| s.verify().is_err());
        assert!(
            caught,
            "flipping bit {} of byte {i} went unnoticed",
            mode % 8
        );
    }
}
