//! Signed records: a serde value together with the exact bytes it was
//! decoded from, so that signatures always cover stored and sent bytes,
//! never a re-serialization.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::DecodeError;
use crate::keys::{PUBLIC_KEY_LEN, PublicKey, SIGNATURE_LEN, Signature};
use crate::signed::{Signable, Signed};

/// A record type that travels signed (certificates, revocation lists, case genesis).
pub trait Record: Serialize + DeserializeOwned {
    /// Domain-separation tag of its signatures.
    const DOMAIN: &'static [u8];
    /// What it is, for error messages.
    const WHAT: &'static str;
    /// Largest encoding accepted, in bytes.
    const MAX_LEN: usize;

    /// Checks that `signer` may sign this record (see [`Signable::check_signer`]).
    fn check_signer(&self, signer: &PublicKey) -> Result<(), String> {
        let _ = signer;
        Ok(())
    }
}

/// A record value and the exact bytes (postcard) it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded<T> {
    value: T,
    bytes: Vec<u8>,
}

impl<T: Record> Encoded<T> {
    /// Encodes a new value.
    pub fn new(value: T) -> Result<Self, DecodeError> {
        let bytes = postcard::to_stdvec(&value).map_err(|e| DecodeError::Malformed {
            what: T::WHAT,
            detail: e.to_string(),
        })?;
        if bytes.len() > T::MAX_LEN {
            return Err(DecodeError::TooLarge {
                what: T::WHAT,
                len: bytes.len(),
                limit: T::MAX_LEN,
            });
        }
        Ok(Self { value, bytes })
    }

    /// Decodes bytes, keeping them. Trailing bytes are an error.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > T::MAX_LEN {
            return Err(DecodeError::TooLarge {
                what: T::WHAT,
                len: bytes.len(),
                limit: T::MAX_LEN,
            });
        }
        let (value, rest) =
            postcard::take_from_bytes::<T>(bytes).map_err(|e| DecodeError::Malformed {
                what: T::WHAT,
                detail: e.to_string(),
            })?;
        if !rest.is_empty() {
            return Err(DecodeError::Malformed {
                what: T::WHAT,
                detail: format!("{} trailing bytes", rest.len()),
            });
        }
        Ok(Self {
            value,
            bytes: bytes.to_vec(),
        })
    }

    /// The decoded value.
    pub fn value(&self) -> &T {
        &self.value
    }

    /// The exact encoded bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl<T: Record> Signable for Encoded<T> {
    const DOMAIN: &'static [u8] = T::DOMAIN;

    fn signed_message(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.bytes);
    }

    fn check_signer(&self, signer: &PublicKey) -> Result<(), String> {
        self.value.check_signer(signer)
    }
}

/// Envelope version of [`encode_signed`].
const ENVELOPE_V1: u8 = 1;

/// Encodes a signed record: `[1][signer: 32][signature: 64][record bytes]`.
pub fn encode_signed<T: Record>(signed: &Signed<Encoded<T>>) -> Vec<u8> {
    let body = signed.payload().bytes();
    let mut out = Vec::with_capacity(1 + PUBLIC_KEY_LEN + SIGNATURE_LEN + body.len());
    out.push(ENVELOPE_V1);
    out.extend_from_slice(signed.signer().as_bytes());
    out.extend_from_slice(signed.signature().as_bytes());
    out.extend_from_slice(body);
    out
}

/// Decodes what [`encode_signed`] wrote. The result still has to be verified.
pub fn decode_signed<T: Record>(bytes: &[u8]) -> Result<Signed<Encoded<T>>, DecodeError> {
    let header = 1 + PUBLIC_KEY_LEN + SIGNATURE_LEN;
    if bytes.len() < header {
        return Err(DecodeError::Malformed {
            what: T::WHAT,
            detail: format!("{} bytes is shorter than a signed envelope", bytes.len()),
        });
    }
    if bytes[0] != ENVELOPE_V1 {
        return Err(DecodeError::UnsupportedVersion {
            what: T::WHAT,
            version: bytes[0],
        });
    }
    let signer = PublicKey::from_slice(&bytes[1..1 + PUBLIC_KEY_LEN]).map_err(|e| {
        DecodeError::Malformed {
            what: T::WHAT,
            detail: format!("signer: {e}"),
        }
    })?;
    let signature = Signature::from_slice(&bytes[1 + PUBLIC_KEY_LEN..header]).map_err(|e| {
        DecodeError::Malformed {
            what: T::WHAT,
            detail: format!("signature: {e}"),
        }
    })?;
    let record = Encoded::decode(&bytes[header..])?;
    Ok(Signed::from_parts(record, signer, signature))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SecretKey;
    use crate::signed::sign;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    struct Memo {
        text: String,
    }

    impl Record for Memo {
        const DOMAIN: &'static [u8] = b"fieldsync/test-memo/v1";
        const WHAT: &'static str = "memo";
        const MAX_LEN: usize = 64;
    }

    #[test]
    fn round_trip_and_tamper() {
        let k = SecretKey::from_seed(&[4; 32]);
        let memo = Encoded::new(Memo { text: "hi".into() }).unwrap();
        let v = sign(memo, &k).unwrap();
        let bytes = encode_signed(v.as_signed());
        let back = decode_signed::<Memo>(&bytes).unwrap().verify().unwrap();
        assert_eq!(back.payload().value().text, "hi");
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            let ok = decode_signed::<Memo>(&bad)
                .ok()
                .and_then(|s| s.verify().ok());
            assert!(ok.is_none(), "flipping byte {i} went unnoticed");
        }
        assert!(decode_signed::<Memo>(&bytes[..50]).is_err());
        let mut long = bytes.clone();
        long.push(0);
        assert!(decode_signed::<Memo>(&long).is_err());
    }

    #[test]
    fn size_limit() {
        let err = Encoded::new(Memo {
            text: "x".repeat(100),
        })
        .unwrap_err();
        assert!(matches!(err, DecodeError::TooLarge { .. }));
    }
}
