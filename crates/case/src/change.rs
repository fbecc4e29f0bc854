//! Signed changes: an Automerge change, the case it belongs to and the
//! device's signing counter, signed by the device whose actor made it.
//!
//! The envelope ([`encode_change`]) is
//! `[version = 1][case: 16][signer: 32][signature: 64][counter: 8, BE][automerge change chunk]`.
//! The signature covers `"fieldsync/change/v1" ‖ 0 ‖ case ‖ change hash ‖ counter`,
//! and the change hash is Automerge's SHA-256 over the exact change bytes, so
//! the signature covers exactly the bytes that are stored and sent.

use std::fmt;
use std::str::FromStr;

use fieldsync_identity::{
    ActorBinding, CaseId, DeviceId, PUBLIC_KEY_LEN, PublicKey, SIGNATURE_LEN, Signable, Signature,
    Signed, Verified,
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::actions::check_actions;
use crate::error::ChangeError;
use crate::guard::guarded;

/// Largest Automerge change accepted in an envelope: 512 KiB. Half a sync
/// batch (1 MiB), so that the largest change, its envelope header, its
/// case's genesis and its author's certificate always travel in one batch;
/// [`CaseDoc::commit`](crate::CaseDoc::commit) refuses to make a larger one.
pub const MAX_CHANGE_LEN: usize = 512 << 10;
/// Version byte of the envelope.
pub const CHANGE_ENVELOPE_V1: u8 = 1;
/// Size of the envelope header before the change bytes.
pub const CHANGE_HEADER_LEN: usize = 1 + 16 + PUBLIC_KEY_LEN + SIGNATURE_LEN + 8;

/// Magic bytes that open every Automerge chunk.
const AUTOMERGE_MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
/// Chunk type of an uncompressed change.
const CHUNK_CHANGE: u8 = 1;

/// The SHA-256 hash Automerge gives a change. Usable as a store key
/// (`.0`, [`ChangeHash::as_bytes`]); its text form is 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChangeHash(pub [u8; 32]);

impl ChangeHash {
    /// The 32 hash bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The short human form: the first 8 hex digits.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }

    /// The same hash as Automerge's type.
    pub fn to_automerge(self) -> automerge::ChangeHash {
        automerge::ChangeHash(self.0)
    }
}

impl From<automerge::ChangeHash> for ChangeHash {
    fn from(h: automerge::ChangeHash) -> Self {
        Self(h.0)
    }
}

impl From<ChangeHash> for automerge::ChangeHash {
    fn from(h: ChangeHash) -> Self {
        automerge::ChangeHash(h.0)
    }
}

impl fmt::Display for ChangeHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for ChangeHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChangeHash({})", self.short())
    }
}

/// A change hash text that is not 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid change hash: expected 64 hex digits")]
pub struct ChangeHashError;

impl FromStr for ChangeHash {
    type Err = ChangeHashError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut bytes).map_err(|_| ChangeHashError)?;
        Ok(Self(bytes))
    }
}

impl Serialize for ChangeHash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for ChangeHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            <[u8; 32]>::deserialize(d).map(Self)
        }
    }
}

/// What a device signs for each change: the case, the device's signing
/// counter (monotonic per incarnation; revocation points refer to it) and
/// the Automerge change.
#[derive(Clone, Debug)]
pub struct ChangePayload {
    case: CaseId,
    counter: u64,
    change: automerge::Change,
}

/// A change as it comes off the wire or out of storage.
pub type SignedChange = Signed<ChangePayload>;
/// A change whose signature and actor binding are verified.
pub type VerifiedChange = Verified<ChangePayload>;

/// Wraps a change this device just committed, for signing.
pub fn payload_for_local(case: CaseId, counter: u64, change: automerge::Change) -> ChangePayload {
    ChangePayload {
        case,
        counter,
        change,
    }
}

impl ChangePayload {
    /// The case the change belongs to.
    pub fn case(&self) -> CaseId {
        self.case
    }

    /// The device's signing counter.
    pub fn counter(&self) -> u64 {
        self.counter
    }

    /// The Automerge change.
    pub fn change(&self) -> &automerge::Change {
        &self.change
    }

    /// Takes the Automerge change out (to apply it).
    pub fn into_change(self) -> automerge::Change {
        self.change
    }

    /// The change hash.
    pub fn hash(&self) -> ChangeHash {
        self.change.hash().into()
    }

    /// The exact change bytes (an uncompressed Automerge change chunk).
    pub fn raw_bytes(&self) -> &[u8] {
        self.change.raw_bytes()
    }

    /// The device and incarnation of the change's actor, if it is a FieldSync actor.
    pub fn actor(&self) -> Option<ActorBinding> {
        ActorBinding::parse(self.change.actor_id().to_bytes())
    }

    /// The hashes of the changes this one depends on.
    pub fn deps(&self) -> Vec<ChangeHash> {
        self.change.deps().iter().map(|h| ChangeHash(h.0)).collect()
    }

    /// The change's sequence number among its actor's changes.
    pub fn seq(&self) -> u64 {
        self.change.seq()
    }
}

impl PartialEq for ChangePayload {
    fn eq(&self, other: &Self) -> bool {
        self.case == other.case
            && self.counter == other.counter
            && self.change.hash() == other.change.hash()
    }
}

impl Eq for ChangePayload {}

impl Signable for ChangePayload {
    const DOMAIN: &'static [u8] = b"fieldsync/change/v1";

    fn signed_message(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.case.as_bytes());
        out.extend_from_slice(&self.change.hash().0);
        out.extend_from_slice(&self.counter.to_be_bytes());
    }

    fn check_signer(&self, signer: &PublicKey) -> Result<(), String> {
        let actor = self.change.actor_id().to_bytes();
        match ActorBinding::parse(actor) {
            None => Err(format!(
                "actor {} is not a FieldSync actor",
                short_hex(actor)
            )),
            Some(binding) if binding.device.public_key() == signer => Ok(()),
            Some(binding) => Err(format!(
                "actor {} belongs to device {}",
                short_hex(actor),
                binding.device.short()
            )),
        }
    }
}

/// The first 8 hex digits of some bytes.
fn short_hex(bytes: &[u8]) -> String {
    let mut s = hex::encode(&bytes[..bytes.len().min(4)]);
    if s.is_empty() {
        s.push_str("(empty)");
    }
    s
}

/// Encodes a signed change into its envelope (see the module docs).
pub fn encode_change(c: &Signed<ChangePayload>) -> Vec<u8> {
    let p = c.payload();
    let body = p.raw_bytes();
    let mut out = Vec::with_capacity(CHANGE_HEADER_LEN + body.len());
    out.push(CHANGE_ENVELOPE_V1);
    out.extend_from_slice(p.case.as_bytes());
    out.extend_from_slice(c.signer().as_bytes());
    out.extend_from_slice(c.signature().as_bytes());
    out.extend_from_slice(&p.counter.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Decodes an envelope written by [`encode_change`]. Never panics: Automerge
/// parses the change behind [`guarded`]. Accepts only an uncompressed change
/// chunk with a valid checksum, so that the bytes are a function of the hash
/// the signature covers. Does not verify the signature: call
/// [`Signed::verify`] or [`fieldsync_identity::verify_batch`].
pub fn decode_change(bytes: &[u8]) -> Result<SignedChange, ChangeError> {
    if bytes.len() < CHANGE_HEADER_LEN {
        return Err(ChangeError::TooShort {
            len: bytes.len(),
            header: CHANGE_HEADER_LEN,
        });
    }
    let (header, body) = bytes.split_at(CHANGE_HEADER_LEN);
    if header[0] != CHANGE_ENVELOPE_V1 {
        return Err(ChangeError::UnsupportedVersion { version: header[0] });
    }
    if body.len() > MAX_CHANGE_LEN {
        return Err(ChangeError::TooLarge {
            len: body.len(),
            limit: MAX_CHANGE_LEN,
        });
    }
    let mut case = [0u8; 16];
    case.copy_from_slice(&header[1..17]);
    let signer =
        PublicKey::from_slice(&header[17..17 + PUBLIC_KEY_LEN]).map_err(ChangeError::BadSigner)?;
    let sig_at = 17 + PUBLIC_KEY_LEN;
    let signature = Signature::from_slice(&header[sig_at..sig_at + SIGNATURE_LEN])
        .map_err(ChangeError::BadSigner)?;
    let mut counter = [0u8; 8];
    counter.copy_from_slice(&header[sig_at + SIGNATURE_LEN..]);
    let change = parse_change(body)?;
    Ok(Signed::from_parts(
        ChangePayload {
            case: CaseId::from_bytes(case),
            counter: u64::from_be_bytes(counter),
            change,
        },
        signer,
        signature,
    ))
}

/// The Automerge hash of the change in a stored envelope, read without
/// parsing the change: SHA-256 over the chunk after its magic and checksum,
/// which is how Automerge defines it. For envelopes that were decoded and
/// verified once (the store holds only such), this equals the hash
/// [`decode_change`] computes; `None` when the bytes are too short to be one.
pub fn envelope_hash(envelope: &[u8]) -> Option<ChangeHash> {
    use sha2::Digest;
    let chunk = envelope.get(CHANGE_HEADER_LEN..)?;
    let hashed = chunk.get(8..)?;
    Some(ChangeHash(sha2::Sha256::digest(hashed).into()))
}

/// Parses one uncompressed Automerge change chunk, behind the guard, and
/// refuses operations no case document is made of (see [`CaseDoc::apply`](crate::CaseDoc::apply)).
pub fn parse_change(body: &[u8]) -> Result<automerge::Change, ChangeError> {
    if body.len() > MAX_CHANGE_LEN {
        return Err(ChangeError::TooLarge {
            len: body.len(),
            limit: MAX_CHANGE_LEN,
        });
    }
    if body.len() < 9 || body[..4] != AUTOMERGE_MAGIC {
        return Err(ChangeError::NotAChange {
            detail: "no automerge chunk header".into(),
        });
    }
    if body[8] != CHUNK_CHANGE {
        return Err(ChangeError::NotAChange {
            detail: format!(
                "chunk type {} is not an uncompressed change ({CHUNK_CHANGE})",
                body[8]
            ),
        });
    }
    let change = guarded("parsing a change", || {
        automerge::Change::from_bytes(body.to_vec())
    })?
    .map_err(|e| ChangeError::Malformed {
        detail: e.to_string(),
    })?;
    if body[4..8] != change.hash().0[..4] {
        return Err(ChangeError::NotAChange {
            detail: "chunk checksum does not match the change hash".into(),
        });
    }
    if change.raw_bytes() != body {
        return Err(ChangeError::NotAChange {
            detail: "change bytes are not in canonical form".into(),
        });
    }
    check_actions(body)?;
    Ok(change)
}

/// The device that made a change, if its actor is a FieldSync actor.
pub fn change_device(change: &automerge::Change) -> Option<DeviceId> {
    ActorBinding::parse(change.actor_id().to_bytes()).map(|b| b.device)
}
