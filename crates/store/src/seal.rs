//! The one seam through which every stored value passes.
//!
//! Today the only implementation is [`PlainSeal`]: values are stored as they
//! are, behind a one-byte format tag. Encryption at rest replaces it with an
//! AEAD seal (and keyed hashes for case keys) without changing any table
//! layout: the tag tells the two formats apart.

use fieldsync_identity::CaseId;

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
}

/// Format tag of a value stored in the clear.
const TAG_PLAIN: u8 = 0;

/// Stores values in the clear (until encryption at rest is configured).
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
}
