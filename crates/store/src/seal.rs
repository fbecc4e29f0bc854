//! The one seam through which every stored value passes.
//!
//! Two implementations exist. [`PlainSeal`] stores values as they are,
//! behind a one-byte format tag, and uses case ids themselves as table keys:
//! relays (headquarters infrastructure) and stores made before encryption at
//! rest. [`AeadSeal`] encrypts every value with XChaCha20-Poly1305 and turns
//! case ids and compartment names into keyed hashes, so that the file
//! reveals neither case content nor which cases or compartments it holds:
//! field devices. The tag tells the two formats apart; a store refuses to
//! open with the wrong kind of seal ([`SealError::StoreEncrypted`],
//! [`SealError::StoreNotEncrypted`]).
//!
//! An [`AeadSeal`] value is `1 ‖ nonce (24) ‖ ciphertext ‖ tag (16)`. The
//! associated data binds a domain tag, the table name and the row key, so
//! a value moved to another row or table fails to open
//! ([`SealError::Tampered`]). Each value gets a fresh 24-byte nonce: a
//! keyed BLAKE3 hash of a random seed given when the seal is made, a
//! counter, and the table, key and value (so even a reused seed could
//! only repeat a nonce for the very same value in the very same row).
//! What the AEAD does not hide: table names, value lengths, how many rows
//! each table has, peer device ids (keys of the peer tables), change
//! hashes (keys of `changes-1`, `pending-1`, `releases-1`) and log
//! positions; and it does not stop someone who can write the file from
//! rolling a row back to an older value of that same row, or deleting rows.

use std::sync::atomic::{AtomicU64, Ordering};

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{Key, Tag, XChaCha20Poly1305, XNonce};
use fieldsync_identity::CaseId;
use zeroize::Zeroizing;

use crate::error::SealError;

/// Seals values before they are written and opens them after they are read.
pub trait Seal: Send + Sync {
    /// Seals `plain`, stored in `table` under `key` (the key is bound as
    /// associated data by sealing implementations, so values cannot be swapped).
    fn seal(&self, table: &str, key: &[u8], plain: &[u8]) -> Vec<u8>;
    /// Opens a value written by [`Seal::seal`].
    fn open(&self, table: &str, key: &[u8], sealed: &[u8]) -> Result<Vec<u8>, SealError>;
    /// The key a case is stored under.
    fn case_key(&self, case: &CaseId) -> [u8; 16];
    /// The key a compartment's entries are indexed under (`reads-1`).
    fn compartment_key(&self, compartment: &str) -> [u8; 16];
    /// Whether values are encrypted (the store checks this against the
    /// format of the values it holds when it opens).
    fn encrypted(&self) -> bool;
}

/// Format tag of a value stored in the clear.
pub(crate) const TAG_PLAIN: u8 = 0;
/// Format tag of a value sealed by [`AeadSeal`].
pub(crate) const TAG_AEAD: u8 = 1;

/// Stores values in the clear (relays, and stores made before encryption at rest).
#[derive(Debug, Default, Clone, Copy)]
pub struct PlainSeal;

impl Seal for PlainSeal {
    fn seal(&self, _table: &str, _key: &[u8], plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plain.len() + 1);
        out.push(TAG_PLAIN);
        out.extend_from_slice(plain);
        out
    }

    fn open(&self, table: &str, _key: &[u8], sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        match sealed.split_first() {
            Some((&TAG_PLAIN, rest)) => Ok(rest.to_vec()),
            Some((&TAG_AEAD, _)) => Err(SealError::StoreEncrypted),
            Some((&tag, _)) => Err(SealError::UnknownFormat {
                table: table.to_owned(),
                tag,
            }),
            None => Err(SealError::Empty {
                table: table.to_owned(),
            }),
        }
    }

    fn case_key(&self, case: &CaseId) -> [u8; 16] {
        *case.as_bytes()
    }

    fn compartment_key(&self, compartment: &str) -> [u8; 16] {
        let full = blake3::derive_key("fieldsync compartment index key v1", compartment.as_bytes());
        let mut key = [0u8; 16];
        key.copy_from_slice(&full[..16]);
        key
    }

    fn encrypted(&self) -> bool {
        false
    }
}

/// Domain tag at the start of every [`AeadSeal`] value's associated data.
const AD_DOMAIN: &[u8] = b"fieldsync seal v1";
/// Nonce and tag lengths of XChaCha20-Poly1305.
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// Encrypts every value with XChaCha20-Poly1305 and keys cases and
/// compartments by keyed BLAKE3 hashes: the seal of a store encrypted at rest.
///
/// Made from the store's 32-byte data key (see `fieldsync-vault`), from
/// which four subkeys are derived with BLAKE3's key derivation, each under
/// its own context: the value key, the case-key hash key, the
/// compartment-key hash key and the nonce key. Every key is zeroized when
/// the seal is dropped; `Debug` shows none.
pub struct AeadSeal {
    cipher: XChaCha20Poly1305,
    case_hash: Zeroizing<[u8; 32]>,
    compartment_hash: Zeroizing<[u8; 32]>,
    nonce_key: Zeroizing<[u8; 32]>,
    nonce_seed: Zeroizing<[u8; 32]>,
    counter: AtomicU64,
}

impl std::fmt::Debug for AeadSeal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AeadSeal(..)")
    }
}

impl AeadSeal {
    /// A seal under `data_key`. `nonce_seed` must be 32 fresh random bytes
    /// for each seal made (this crate reads no OS random generator).
    pub fn new(data_key: &[u8; 32], nonce_seed: [u8; 32]) -> Self {
        let sub = |context: &str| Zeroizing::new(blake3::derive_key(context, data_key));
        let value_key = sub("fieldsync store value key v1");
        Self {
            cipher: XChaCha20Poly1305::new(&Key::from(*value_key)),
            case_hash: sub("fieldsync store case key v1"),
            compartment_hash: sub("fieldsync store compartment key v1"),
            nonce_key: sub("fieldsync store nonce key v1"),
            nonce_seed: Zeroizing::new(nonce_seed),
            counter: AtomicU64::new(0),
        }
    }

    fn associated_data(table: &str, key: &[u8]) -> Vec<u8> {
        let mut ad = Vec::with_capacity(AD_DOMAIN.len() + 5 + table.len() + key.len());
        ad.extend_from_slice(AD_DOMAIN);
        ad.push(TAG_AEAD);
        ad.extend_from_slice(&(table.len() as u32).to_le_bytes());
        ad.extend_from_slice(table.as_bytes());
        ad.extend_from_slice(key);
        ad
    }

    fn nonce(&self, table: &str, key: &[u8], plain: &[u8]) -> [u8; NONCE_LEN] {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut h = blake3::Hasher::new_keyed(&self.nonce_key);
        h.update(self.nonce_seed.as_slice());
        h.update(&n.to_le_bytes());
        h.update(&(table.len() as u64).to_le_bytes());
        h.update(table.as_bytes());
        h.update(&(key.len() as u64).to_le_bytes());
        h.update(key);
        h.update(plain);
        let mut nonce = [0u8; NONCE_LEN];
        h.finalize_xof().fill(&mut nonce);
        nonce
    }

    fn keyed16(key: &[u8; 32], input: &[u8]) -> [u8; 16] {
        let full = blake3::keyed_hash(key, input);
        let mut out = [0u8; 16];
        out.copy_from_slice(&full.as_bytes()[..16]);
        out
    }
}

impl Seal for AeadSeal {
    /// # Panics
    ///
    /// Only for a value over 256 GiB (the cipher's limit): stored values are
    /// far smaller (redb's limit is under 4 GiB).
    fn seal(&self, table: &str, key: &[u8], plain: &[u8]) -> Vec<u8> {
        let nonce = self.nonce(table, key, plain);
        let ad = Self::associated_data(table, key);
        let mut out = Vec::with_capacity(1 + NONCE_LEN + plain.len() + TAG_LEN);
        out.push(TAG_AEAD);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let body = &mut out[1 + NONCE_LEN..];
        let tag = match self
            .cipher
            .encrypt_inout_detached(&XNonce::from(nonce), &ad, body.into())
        {
            Ok(tag) => tag,
            Err(_) => unreachable!("XChaCha20-Poly1305 refused a value under 256 GiB"),
        };
        out.extend_from_slice(tag.as_slice());
        out
    }

    fn open(&self, table: &str, key: &[u8], sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        let tampered = || SealError::Tampered {
            table: table.to_owned(),
        };
        let body = match sealed.split_first() {
            Some((&TAG_AEAD, rest)) => rest,
            Some((&TAG_PLAIN, _)) => {
                return Err(SealError::Unsealed {
                    table: table.to_owned(),
                });
            }
            Some((&tag, _)) => {
                return Err(SealError::UnknownFormat {
                    table: table.to_owned(),
                    tag,
                });
            }
            None => {
                return Err(SealError::Empty {
                    table: table.to_owned(),
                });
            }
        };
        if body.len() < NONCE_LEN + TAG_LEN {
            return Err(tampered());
        }
        let (nonce, rest) = body.split_at(NONCE_LEN);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| tampered())?;
        let tag = Tag::try_from(tag).map_err(|_| tampered())?;
        let mut plain = ciphertext.to_vec();
        self.cipher
            .decrypt_inout_detached(
                &XNonce::from(nonce),
                &Self::associated_data(table, key),
                plain.as_mut_slice().into(),
                &tag,
            )
            .map_err(|_| tampered())?;
        Ok(plain)
    }

    fn case_key(&self, case: &CaseId) -> [u8; 16] {
        Self::keyed16(&self.case_hash, case.as_bytes())
    }

    fn compartment_key(&self, compartment: &str) -> [u8; 16] {
        Self::keyed16(&self.compartment_hash, compartment.as_bytes())
    }

    fn encrypted(&self) -> bool {
        true
    }
}

/// Opens the store's first value (`meta-1/schema`, raw bytes `raw`) with
/// `seal`, checking first that the store and the seal agree on encryption:
/// a store written encrypted refuses a plain seal and the other way round,
/// and a key that does not open it is named [`SealError::WrongKey`].
pub(crate) fn probe(
    seal: &dyn Seal,
    table: &str,
    key: &[u8],
    raw: &[u8],
) -> Result<Vec<u8>, SealError> {
    match (raw.first(), seal.encrypted()) {
        (Some(&TAG_AEAD), false) => return Err(SealError::StoreEncrypted),
        (Some(&TAG_PLAIN), true) => return Err(SealError::StoreNotEncrypted),
        _ => {}
    }
    seal.open(table, key, raw).map_err(|e| match e {
        SealError::Tampered { .. } => SealError::WrongKey,
        e => e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_round_trip_and_tags() {
        let s = PlainSeal;
        let sealed = s.seal("t", b"k", b"value");
        assert_eq!(s.open("t", b"k", &sealed).unwrap(), b"value");
        assert!(matches!(
            s.open("t", b"k", &[9, 1, 2]),
            Err(SealError::UnknownFormat { tag: 9, .. })
        ));
        assert!(matches!(
            s.open("t", b"k", &[]),
            Err(SealError::Empty { .. })
        ));
    }

    #[test]
    fn aead_round_trip_binds_table_and_key() {
        let s = AeadSeal::new(&[7; 32], [1; 32]);
        let a = s.seal("cases-1", b"row-a", b"Looted stele");
        let b = s.seal("cases-1", b"row-a", b"Looted stele");
        assert_eq!(a[0], TAG_AEAD);
        assert_eq!(a.len(), 1 + 24 + 12 + 16);
        assert_ne!(a, b, "every value gets its own nonce");
        assert!(!a.windows(6).any(|w| w == b"Looted"));
        assert_eq!(s.open("cases-1", b"row-a", &a).unwrap(), b"Looted stele");
        assert_eq!(s.open("cases-1", b"row-a", &b).unwrap(), b"Looted stele");
        // Another row, another table, a flipped bit, a truncation: all fail.
        for (table, key) in [("cases-1", &b"row-b"[..]), ("snapshots-1", b"row-a")] {
            assert_eq!(
                s.open(table, key, &a),
                Err(SealError::Tampered {
                    table: table.into()
                })
            );
        }
        for i in 1..a.len() {
            let mut bad = a.clone();
            bad[i] ^= 1;
            assert!(matches!(
                s.open("cases-1", b"row-a", &bad),
                Err(SealError::Tampered { .. })
            ));
        }
        assert!(matches!(
            s.open("cases-1", b"row-a", &a[..20]),
            Err(SealError::Tampered { .. })
        ));
        // Another key does not open it; a plain value is refused; so is the reverse.
        let other = AeadSeal::new(&[8; 32], [1; 32]);
        assert!(matches!(
            other.open("cases-1", b"row-a", &a),
            Err(SealError::Tampered { .. })
        ));
        let plain = PlainSeal.seal("cases-1", b"row-a", b"x");
        assert!(matches!(
            s.open("cases-1", b"row-a", &plain),
            Err(SealError::Unsealed { .. })
        ));
        assert_eq!(
            PlainSeal.open("cases-1", b"row-a", &a),
            Err(SealError::StoreEncrypted)
        );
        assert_eq!(format!("{s:?}"), "AeadSeal(..)");
    }

    #[test]
    fn aead_index_keys_are_keyed_hashes() {
        let case = CaseId::from_bytes([3; 16]);
        let s = AeadSeal::new(&[7; 32], [1; 32]);
        let t = AeadSeal::new(&[7; 32], [2; 32]);
        let u = AeadSeal::new(&[9; 32], [1; 32]);
        assert_ne!(s.case_key(&case), *case.as_bytes());
        assert_eq!(
            s.case_key(&case),
            t.case_key(&case),
            "stable under one data key"
        );
        assert_ne!(s.case_key(&case), u.case_key(&case));
        assert_ne!(
            s.compartment_key("antiquities"),
            PlainSeal.compartment_key("antiquities")
        );
        assert_eq!(
            s.compartment_key("antiquities"),
            t.compartment_key("antiquities")
        );
        assert_ne!(
            s.compartment_key("antiquities"),
            s.compartment_key("general")
        );
        assert_ne!(
            &s.compartment_key("x")[..],
            &s.case_key(&CaseId::from_bytes(*b"x\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0"))[..]
        );
    }

    #[test]
    fn probe_names_the_mismatch() {
        let aead = AeadSeal::new(&[7; 32], [1; 32]);
        let sealed = aead.seal("meta-1", b"schema", &[4, 0, 0, 0]);
        let plain = PlainSeal.seal("meta-1", b"schema", &[4, 0, 0, 0]);
        assert_eq!(
            probe(&aead, "meta-1", b"schema", &sealed).unwrap(),
            [4, 0, 0, 0]
        );
        assert_eq!(
            probe(&PlainSeal, "meta-1", b"schema", &sealed),
            Err(SealError::StoreEncrypted)
        );
        assert_eq!(
            probe(&aead, "meta-1", b"schema", &plain),
            Err(SealError::StoreNotEncrypted)
        );
        let other = AeadSeal::new(&[8; 32], [1; 32]);
        assert_eq!(
            probe(&other, "meta-1", b"schema", &sealed),
            Err(SealError::WrongKey)
        );
    }
}
