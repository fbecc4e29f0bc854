//! Newtypes over ed25519-dalek: [`SecretKey`], [`PublicKey`], [`Signature`].

use std::fmt;

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::KeyError;

/// Length of a public key in bytes.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length of a signature in bytes.
pub const SIGNATURE_LEN: usize = 64;

/// An ed25519 signing key. Its `Debug` never prints the key; it is zeroized on drop.
#[derive(Clone)]
pub struct SecretKey(SigningKey);

impl SecretKey {
    /// Builds a key from 32 secret seed bytes. The caller supplies the
    /// randomness (this crate never touches the OS random generator).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self(SigningKey::from_bytes(seed))
    }

    /// The 32 secret seed bytes, wrapped so that they are zeroized when dropped.
    pub fn to_seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// Signs `domain || message`. Every signature in FieldSync carries a
    /// domain tag so that a signature made for one purpose is never valid
    /// for another.
    pub fn sign_with_domain(&self, domain: &[u8], message: &[u8]) -> Signature {
        let mut buf = Vec::with_capacity(domain.len() + 1 + message.len());
        framed_message(&mut buf, domain, message);
        Signature(self.0.sign(&buf).to_bytes())
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

/// Writes the exact bytes a signature covers: the domain tag, a zero byte, then the message.
pub(crate) fn framed_message(buf: &mut Vec<u8>, domain: &[u8], message: &[u8]) {
    buf.extend_from_slice(domain);
    buf.push(0);
    buf.extend_from_slice(message);
}

/// Parsed public keys remembered per thread, at most.
pub(crate) const KEY_MEMO: usize = 4096;

thread_local! {
    /// Keys that parsed (valid and not weak), by their bytes.
    static MEMO: std::cell::RefCell<std::collections::HashMap<[u8; PUBLIC_KEY_LEN], VerifyingKey>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// An ed25519 public key. Weak (small-order) keys are rejected on construction.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Parses 32 bytes; rejects points that are not on the curve and weak keys.
    ///
    /// Parsing decompresses a curve point (a field square root, about 10 µs),
    /// and the same few keys sign everything a node reads: keys that parsed
    /// are remembered per thread (at most 4096 of them).
    pub fn from_bytes(bytes: &[u8; PUBLIC_KEY_LEN]) -> Result<Self, KeyError> {
        if let Some(key) = MEMO.with(|m| m.borrow().get(bytes).copied()) {
            return Ok(Self(key));
        }
        let key = VerifyingKey::from_bytes(bytes).map_err(|_| KeyError::InvalidPublicKey)?;
        if key.is_weak() {
            return Err(KeyError::WeakPublicKey);
        }
        MEMO.with(|m| {
            let mut m = m.borrow_mut();
            if m.len() >= KEY_MEMO {
                m.clear();
            }
            m.insert(*bytes, key);
        });
        Ok(Self(key))
    }

    /// Parses a slice that must be exactly 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, KeyError> {
        let arr: &[u8; PUBLIC_KEY_LEN] = bytes.try_into().map_err(|_| KeyError::WrongLength {
            what: "public key",
            expected: PUBLIC_KEY_LEN,
            got: bytes.len(),
        })?;
        Self::from_bytes(arr)
    }

    /// The 32 key bytes.
    pub fn to_bytes(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.0.to_bytes()
    }

    /// The 32 key bytes, borrowed.
    pub fn as_bytes(&self) -> &[u8; PUBLIC_KEY_LEN] {
        self.0.as_bytes()
    }

    /// Verifies a signature over `domain || 0 || message` (strict verification).
    pub fn verify_with_domain(
        &self,
        domain: &[u8],
        message: &[u8],
        signature: &Signature,
    ) -> Result<(), KeyError> {
        let mut buf = Vec::with_capacity(domain.len() + 1 + message.len());
        framed_message(&mut buf, domain, message);
        let sig = ed25519_dalek::Signature::from_bytes(&signature.0);
        self.0
            .verify_strict(&buf, &sig)
            .map_err(|_| KeyError::BadSignature)
    }

    pub(crate) fn dalek(&self) -> &VerifyingKey {
        &self.0
    }
}

impl PartialOrd for PublicKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for PublicKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", hex::encode(self.as_bytes()))
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.as_bytes()))
    }
}

impl std::str::FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0u8; PUBLIC_KEY_LEN];
        hex::decode_to_slice(s.trim(), &mut bytes).map_err(|_| KeyError::BadText {
            what: "public key",
            expected: "64 hex digits",
        })?;
        Self::from_bytes(&bytes)
    }
}

impl Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            self.as_bytes().serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            let bytes = <[u8; PUBLIC_KEY_LEN]>::deserialize(d)?;
            Self::from_bytes(&bytes).map_err(serde::de::Error::custom)
        }
    }
}

/// An ed25519 signature (64 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Signature(#[serde(with = "sig_bytes")] [u8; SIGNATURE_LEN]);

impl Signature {
    /// Wraps 64 signature bytes (checked at verification time).
    pub fn from_bytes(bytes: [u8; SIGNATURE_LEN]) -> Self {
        Self(bytes)
    }

    /// Parses a slice that must be exactly 64 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, KeyError> {
        let arr: [u8; SIGNATURE_LEN] = bytes.try_into().map_err(|_| KeyError::WrongLength {
            what: "signature",
            expected: SIGNATURE_LEN,
            got: bytes.len(),
        })?;
        Ok(Self(arr))
    }

    /// The 64 signature bytes.
    pub fn to_bytes(&self) -> [u8; SIGNATURE_LEN] {
        self.0
    }

    /// The 64 signature bytes, borrowed.
    pub fn as_bytes(&self) -> &[u8; SIGNATURE_LEN] {
        &self.0
    }

    pub(crate) fn dalek(&self) -> ed25519_dalek::Signature {
        ed25519_dalek::Signature::from_bytes(&self.0)
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({}..)", hex::encode(&self.0[..8]))
    }
}

mod sig_bytes {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(bytes)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        let v: &[u8] =
            <&[u8]>::deserialize(d).map_err(|_| D::Error::custom("expected 64 signature bytes"))?;
        v.try_into()
            .map_err(|_| D::Error::invalid_length(v.len(), &"64 signature bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_secret() {
        let k = SecretKey::from_seed(&[7; 32]);
        assert_eq!(format!("{k:?}"), "SecretKey(..)");
    }

    #[test]
    fn domain_separation() {
        let k = SecretKey::from_seed(&[1; 32]);
        let sig = k.sign_with_domain(b"a", b"msg");
        assert!(k.public().verify_with_domain(b"a", b"msg", &sig).is_ok());
        assert_eq!(
            k.public().verify_with_domain(b"b", b"msg", &sig),
            Err(KeyError::BadSignature)
        );
        // The zero separator keeps ("ab","c") and ("a","bc") apart.
        let sig = k.sign_with_domain(b"ab", b"c");
        assert!(k.public().verify_with_domain(b"a", b"bc", &sig).is_err());
    }

    #[test]
    fn public_key_text_round_trip() {
        let p = SecretKey::from_seed(&[3; 32]).public();
        let text = p.to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(text.parse::<PublicKey>().ok(), Some(p));
        assert!("zz".parse::<PublicKey>().is_err());
    }

    #[test]
    fn weak_key_rejected() {
        // The identity point (small order) encodes as 1 followed by zeros.
        let mut weak = [0u8; 32];
        weak[0] = 1;
        assert_eq!(PublicKey::from_bytes(&weak), Err(KeyError::WeakPublicKey));
    }
}
