//! Message decoding: `Message::decode` on a frame's contents, then every
//! decoder a session runs on what a message carries (certificates,
//! geneses, change envelopes, quarantine releases, revocation lists,
//! receipts), keyed to the fixtures' headquarters so that seeds made from
//! real records get past the signature checks. A message that decodes
//! must survive an encode/decode round trip unchanged.
#![no_main]

use fieldsync_case::{Genesis, decode_change, encode_change, verify_genesis};
use fieldsync_fuzz::{check, hq};
use fieldsync_identity::{DeviceCertificate, RevocationList, decode_signed};
use fieldsync_protocol::{FrameDecoder, Message, verify_receipt, verify_release};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| check(|| run(data)));

fn run(data: &[u8]) {
    let msg = match Message::decode(data) {
        Ok(m) => m,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let encoded = msg.encode();
    assert_eq!(
        Message::decode(&encoded).as_ref(),
        Ok(&msg),
        "a decoded message does not survive encode/decode"
    );
    let mut frames = FrameDecoder::new();
    frames.push(&msg.to_frame());
    assert_eq!(frames.next_frame().ok().flatten(), Some(encoded));

    let hq = hq().public();
    match &msg {
        Message::Hello(h) => {
            let _ = DeviceCertificate::from_bytes(&h.certificate, &hq);
        }
        Message::Batch(b) => {
            for c in &b.certificates {
                if let Ok(cert) = DeviceCertificate::from_bytes(c, &hq) {
                    assert_eq!(&cert.to_bytes(), c);
                }
            }
            for g in &b.geneses {
                if let Ok(signed) = decode_signed::<Genesis>(g) {
                    let _ = verify_genesis(signed);
                }
            }
            for env in &b.changes {
                if let Ok(signed) = decode_change(env) {
                    assert_eq!(&encode_change(&signed), env);
                    let _ = signed.verify();
                }
            }
            for r in &b.releases {
                let _ = verify_release(r);
            }
        }
        Message::Ack(a) => {
            if let Some(r) = &a.receipt {
                let _ = verify_receipt(r);
            }
        }
        Message::Revocations(r) => {
            if let Ok(list) = RevocationList::from_bytes(r, &hq) {
                assert_eq!(&list.to_bytes(), r);
            }
        }
        _ => {}
    }
}
