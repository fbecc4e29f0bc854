//! `Signed<T>` comes from outside; [`Signed::verify`] (or [`verify_batch`])
//! turns it into a [`Verified<T>`], the only form the store accepts.

use crate::error::{BatchVerifyError, VerifyError};
use crate::ids::DeviceId;
use crate::keys::{PublicKey, SecretKey, Signature, framed_message};

/// A payload that can be signed.
///
/// The signature always covers `DOMAIN || 0 || signed_message()`. Implementors
/// must make `signed_message` a function of the exact bytes that are stored
/// and sent (for a change: its hash, which Automerge computes over its bytes),
/// never of a re-serialization.
pub trait Signable {
    /// Domain-separation tag, unique per payload type and version.
    const DOMAIN: &'static [u8];

    /// Appends the message the signature covers to `out`.
    fn signed_message(&self, out: &mut Vec<u8>);

    /// Checks that `signer` may sign this payload as its author. For a change
    /// this is the actor binding; by default any signer is accepted.
    fn check_signer(&self, signer: &PublicKey) -> Result<(), String> {
        let _ = signer;
        Ok(())
    }
}

/// A payload with a claimed signer and signature, not yet verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signed<T> {
    payload: T,
    signer: PublicKey,
    signature: Signature,
}

/// A payload whose signature and signer binding have been verified.
/// It can only be made by [`Signed::verify`], [`verify_batch`] or [`sign`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified<T>(Signed<T>);

impl<T: Signable> Signed<T> {
    /// Assembles a signed value from its parts, as decoded from storage or the wire.
    pub fn from_parts(payload: T, signer: PublicKey, signature: Signature) -> Self {
        Self {
            payload,
            signer,
            signature,
        }
    }

    /// The payload (not verified).
    pub fn payload(&self) -> &T {
        &self.payload
    }

    /// The claimed signer.
    pub fn signer(&self) -> &PublicKey {
        &self.signer
    }

    /// The signature.
    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    fn message(&self) -> Vec<u8> {
        let mut msg = Vec::with_capacity(96);
        self.payload.signed_message(&mut msg);
        let mut framed = Vec::with_capacity(T::DOMAIN.len() + 1 + msg.len());
        framed_message(&mut framed, T::DOMAIN, &msg);
        framed
    }

    fn check_binding(&self) -> Result<(), VerifyError> {
        self.payload
            .check_signer(&self.signer)
            .map_err(|reason| VerifyError::SignerMismatch {
                signer: DeviceId::from_public_key(self.signer).short(),
                reason,
            })
    }

    /// Verifies the signature (strictly) and the signer binding.
    pub fn verify(self) -> Result<Verified<T>, VerifyError> {
        let msg = self.message();
        self.signer
            .dalek()
            .verify_strict(&msg, &self.signature.dalek())
            .map_err(|_| VerifyError::BadSignature {
                signer: DeviceId::from_public_key(self.signer).short(),
            })?;
        self.check_binding()?;
        Ok(Verified(self))
    }
}

/// Signs `payload` with `key`. Fails when the key is not the payload's
/// author (for a change: the actor belongs to another device).
pub fn sign<T: Signable>(payload: T, key: &SecretKey) -> Result<Verified<T>, VerifyError> {
    let mut msg = Vec::with_capacity(96);
    payload.signed_message(&mut msg);
    let signature = key.sign_with_domain(T::DOMAIN, &msg);
    let signed = Signed::from_parts(payload, key.public(), signature);
    signed.check_binding()?;
    Ok(Verified(signed))
}

impl<T> Verified<T> {
    /// The verified payload.
    pub fn payload(&self) -> &T {
        &self.0.payload
    }

    /// The verified signer.
    pub fn signer(&self) -> &PublicKey {
        &self.0.signer
    }

    /// The signing device.
    pub fn device(&self) -> DeviceId {
        DeviceId::from_public_key(self.0.signer)
    }

    /// The signature.
    pub fn signature(&self) -> &Signature {
        &self.0.signature
    }

    /// Back to the signed form, for sending or storing.
    pub fn into_signed(self) -> Signed<T> {
        self.0
    }

    /// Borrows the signed form.
    pub fn as_signed(&self) -> &Signed<T> {
        &self.0
    }

    /// Splits into payload, signer and signature.
    pub fn into_parts(self) -> (T, PublicKey, Signature) {
        (self.0.payload, self.0.signer, self.0.signature)
    }
}

/// Verifies many signed values at once with ed25519 batch verification
/// (about twice the throughput of one-by-one verification).
///
/// All or nothing: on failure, the error names the first item that fails
/// when checked on its own (strict verification), so a caller can report it.
pub fn verify_batch<T: Signable>(
    items: Vec<Signed<T>>,
) -> Result<Vec<Verified<T>>, BatchVerifyError> {
    // Binding first: it is cheap and names the culprit directly.
    for (index, item) in items.iter().enumerate() {
        item.check_binding()
            .map_err(|error| BatchVerifyError { index, error })?;
    }
    let messages: Vec<Vec<u8>> = items.iter().map(Signed::message).collect();
    let msg_refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
    let sigs: Vec<ed25519_dalek::Signature> = items.iter().map(|i| i.signature.dalek()).collect();
    let keys: Vec<ed25519_dalek::VerifyingKey> = items.iter().map(|i| *i.signer.dalek()).collect();
    let batch_ok = ed25519_dalek::verify_batch(&msg_refs, &sigs, &keys).is_ok();
    // Batch verification is cofactored; strict single verification is not.
    // Accept the batch only if it passes; when it fails, find the culprit
    // one by one so the error is precise.
    if !batch_ok {
        for (index, item) in items.iter().enumerate() {
            if item
                .signer
                .dalek()
                .verify_strict(&messages[index], &item.signature.dalek())
                .is_err()
            {
                return Err(BatchVerifyError {
                    index,
                    error: VerifyError::BadSignature {
                        signer: DeviceId::from_public_key(item.signer).short(),
                    },
                });
            }
        }
    }
    Ok(items.into_iter().map(Verified).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq, Eq)]
    struct Note {
        author: PublicKey,
        text: Vec<u8>,
    }

    impl Signable for Note {
        const DOMAIN: &'static [u8] = b"fieldsync/test-note/v1";
        fn signed_message(&self, out: &mut Vec<u8>) {
            out.extend_from_slice(self.author.as_bytes());
            out.extend_from_slice(&self.text);
        }
        fn check_signer(&self, signer: &PublicKey) -> Result<(), String> {
            if *signer == self.author {
                Ok(())
            } else {
                Err("note names another author".into())
            }
        }
    }

    fn key(n: u8) -> SecretKey {
        SecretKey::from_seed(&[n; 32])
    }

    fn note(k: &SecretKey, text: &str) -> Note {
        Note {
            author: k.public(),
            text: text.as_bytes().to_vec(),
        }
    }

    #[test]
    fn sign_then_verify() {
        let k = key(1);
        let v = sign(note(&k, "hello"), &k).unwrap();
        let again = v.clone().into_signed().verify().unwrap();
        assert_eq!(again, v);
        assert_eq!(v.device(), DeviceId::from_public_key(k.public()));
    }

    #[test]
    fn signing_for_another_author_fails() {
        let k = key(1);
        let other = key(2);
        let err = sign(note(&other, "x"), &k).unwrap_err();
        assert!(matches!(err, VerifyError::SignerMismatch { .. }));
    }

    #[test]
    fn tampered_payload_fails() {
        let k = key(1);
        let (mut p, signer, sig) = sign(note(&k, "hello"), &k).unwrap().into_parts();
        p.text[0] ^= 1;
        let err = Signed::from_parts(p, signer, sig).verify().unwrap_err();
        assert!(matches!(err, VerifyError::BadSignature { .. }));
    }

    #[test]
    fn resigned_by_other_key_is_a_mismatch() {
        // A valid signature by a key that is not the author's: signature ok, binding not.
        let author = key(1);
        let forger = key(2);
        let p = note(&author, "hello");
        let mut msg = Vec::new();
        p.signed_message(&mut msg);
        let sig = forger.sign_with_domain(Note::DOMAIN, &msg);
        let err = Signed::from_parts(p, forger.public(), sig)
            .verify()
            .unwrap_err();
        assert!(matches!(err, VerifyError::SignerMismatch { .. }));
    }

    #[test]
    fn batch_names_the_culprit() {
        let keys: Vec<SecretKey> = (1..=10).map(key).collect();
        let mut items: Vec<Signed<Note>> = keys
            .iter()
            .map(|k| sign(note(k, "batch"), k).unwrap().into_signed())
            .collect();
        assert_eq!(verify_batch(items.clone()).unwrap().len(), 10);
        let (mut p, s, sig) = (
            items[6].payload.clone(),
            items[6].signer,
            items[6].signature,
        );
        p.text.push(b'!');
        items[6] = Signed::from_parts(p, s, sig);
        let err = verify_batch(items).unwrap_err();
        assert_eq!(err.index, 6);
        assert!(verify_batch::<Note>(Vec::new()).unwrap().is_empty());
    }

    proptest::proptest! {
        #[test]
        fn any_flipped_bit_fails(byte in 0usize..64, bit in 0u8..8) {
            let k = key(5);
            let (p, signer, sig) = sign(note(&k, "evidence"), &k).unwrap().into_parts();
            let mut bytes = sig.to_bytes();
            bytes[byte] ^= 1 << bit;
            proptest::prop_assert!(Signed::from_parts(p, signer, Signature::from_bytes(bytes)).verify().is_err());
        }
    }
}
