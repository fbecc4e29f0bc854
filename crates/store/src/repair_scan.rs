//! The last resort of a repair: finding signed changes, geneses and the
//! device identity in the raw bytes of a store file redb cannot open.
//!
//! With the plain seal every value is stored whole, in the clear, behind a
//! one-byte tag: a change envelope is found by the Automerge magic bytes at
//! its fixed offset, a genesis by its case id (a genesis is stored as a
//! length-prefixed field of a case row), and the device identity by its
//! seed, which must derive the key that signed some of the changes found.
//! Whatever is found is only a candidate: the caller keeps what verifies.

use fieldsync_case::{CHANGE_ENVELOPE_V1, CHANGE_HEADER_LEN};
use fieldsync_identity::{PUBLIC_KEY_LEN, SIGNATURE_LEN, SecretKey};

use crate::rows::{DeviceRecord, decode};
use crate::store::StoreKind;

/// Magic bytes that open every Automerge chunk.
const AUTOMERGE_MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
/// Chunk type of an uncompressed change.
const CHUNK_CHANGE: u8 = 1;
/// Length of a signed record's header: version, signer, signature.
const SIGNED_HEADER: usize = 1 + PUBLIC_KEY_LEN + SIGNATURE_LEN;
/// How far around the meta keys the device record is looked for.
const META_WINDOW: usize = 8192;

/// Candidates found in raw bytes.
#[derive(Default)]
pub(crate) struct Found {
    /// Change envelopes, by offset.
    pub(crate) changes: Vec<(u64, Vec<u8>)>,
    /// Signed genesis envelopes.
    pub(crate) geneses: Vec<Vec<u8>>,
    /// The device identity, if a seed deriving a signer's key was found.
    pub(crate) device: Option<DeviceRecord>,
    /// A store whose identity signed changes is a device's.
    pub(crate) kind: Option<StoreKind>,
}

/// Reads an unsigned LEB128 value at `at`: the value and its length.
fn uleb(bytes: &[u8], at: usize) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for i in 0..10 {
        let b = *bytes.get(at + i)?;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// Every position of `needle` in `hay`.
fn positions<'a>(hay: &'a [u8], needle: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
    hay.windows(needle.len())
        .enumerate()
        .filter(move |(_, w)| *w == needle)
        .map(|(i, _)| i)
}

/// Scans `bytes` (see the module docs); `device`, when known, is accepted
/// as the identity even if it signed none of the changes found.
pub(crate) fn scan(bytes: &[u8], device: Option<fieldsync_identity::DeviceId>) -> Found {
    let mut found = Found::default();
    // Change envelopes: the chunk's magic sits right after the header.
    for at in positions(bytes, &AUTOMERGE_MAGIC) {
        let Some(start) = at.checked_sub(CHANGE_HEADER_LEN) else {
            continue;
        };
        if bytes[start] != CHANGE_ENVELOPE_V1 || bytes.get(at + 8) != Some(&CHUNK_CHANGE) {
            continue;
        }
        let Some((len, n)) = uleb(bytes, at + 9) else {
            continue;
        };
        let Some(end) = usize::try_from(len)
            .ok()
            .and_then(|len| (at + 9 + n).checked_add(len))
            .filter(|end| *end <= bytes.len())
        else {
            continue;
        };
        found
            .changes
            .push((start as u64, bytes[start..end].to_vec()));
    }
    // Geneses: wherever a case id of a change found appears, a signed
    // genesis may start just before it, behind its length.
    let mut cases: Vec<[u8; 16]> = found
        .changes
        .iter()
        .filter_map(|(_, env)| env.get(1..17)?.try_into().ok())
        .collect();
    cases.sort_unstable();
    cases.dedup();
    for case in &cases {
        for p in positions(bytes, case) {
            for d in 0..=1 {
                let Some(s) = p.checked_sub(SIGNED_HEADER + d) else {
                    continue;
                };
                if bytes[s] != 1 {
                    continue;
                }
                for lb in 1..=2 {
                    let Some(at) = s.checked_sub(lb) else {
                        continue;
                    };
                    let Some((len, n)) = uleb(bytes, at) else {
                        continue;
                    };
                    let Some(end) = usize::try_from(len).ok().and_then(|l| s.checked_add(l)) else {
                        continue;
                    };
                    if n == lb && end <= bytes.len() {
                        found.geneses.push(bytes[s..end].to_vec());
                    }
                }
            }
        }
    }
    // The device identity: near the meta table's keys, a tagged record
    // whose seed derives the key that signed changes found here.
    let mut signers: Vec<[u8; 32]> = found
        .changes
        .iter()
        .filter_map(|(_, env)| env.get(17..17 + PUBLIC_KEY_LEN)?.try_into().ok())
        .collect();
    signers.extend(device.map(|d| *d.as_bytes()));
    if signers.is_empty() {
        return found;
    }
    'meta: for at in positions(bytes, b"epoch") {
        let from = at.saturating_sub(META_WINDOW);
        let to = (at + META_WINDOW).min(bytes.len());
        if positions(&bytes[from..to], b"device").next().is_none() {
            continue;
        }
        for s in from..to.saturating_sub(34) {
            if bytes[s] != 0 {
                continue;
            }
            // Decoding is cheap and rules out most positions; deriving
            // the key rules out the rest.
            let end = to.min(s + 1 + 512);
            let Ok(record) = decode::<DeviceRecord>(&bytes[s + 1..end], "device identity") else {
                continue;
            };
            if record.name.is_empty() || record.name.chars().count() > 256 {
                continue;
            }
            let key = SecretKey::from_seed(&record.seed);
            if signers.contains(key.public().as_bytes()) {
                // An identity that signed changes here is a device's.
                let public = *key.public().as_bytes();
                let own = found
                    .changes
                    .iter()
                    .any(|(_, env)| env.get(17..17 + PUBLIC_KEY_LEN) == Some(public.as_slice()));
                found.device = Some(record);
                found.kind = own.then_some(StoreKind::Device);
                break 'meta;
            }
        }
    }
    found
}
