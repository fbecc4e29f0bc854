//! FieldSync case documents: a typed case schema over Automerge, signed
//! changes, conflicts and history.
//!
//! A case is one Automerge document ([`CaseDoc`]) plus a signed, immutable
//! [`Genesis`]. Devices edit their copy offline; each [`CaseDoc::commit`]
//! yields one Automerge change, which the device signs ([`ChangePayload`],
//! [`fieldsync_identity::sign`]) and ships as an envelope
//! ([`encode_change`] / [`decode_change`]). Any node can verify who made a
//! change: the change's actor id *is* the device key ([`fieldsync_identity::ActorBinding`]).
//! Merging is Automerge's: concurrent edits of one field are kept and shown by
//! [`CaseDoc::conflicts`]; [`CaseDoc::record`] gives the merged record
//! headquarters reads, [`CaseDoc::history`] who changed what.
//!
//! What it is not: it does no IO, reads no clock and draws no random numbers
//! (time and ids are arguments), and knows nothing of storage, sync or
//! authorization (certificates, roles, compartments are checked elsewhere).
//!
//! Automerge 0.12 panics on some malformed bytes, so every Automerge call on
//! foreign data runs behind [`guarded`]; a document whose Automerge call
//! panicked is poisoned and refuses further work.
//!
//! ```
//! use fieldsync_case::{CaseDoc, CaseKind, Field, ItemId, Status, new_genesis, payload_for_local,
//!     encode_change, decode_change};
//! use fieldsync_identity::{CaseId, DeviceId, SecretKey, Timestamp, sign};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let key = SecretKey::from_seed(&[1; 32]); // from a real RNG in practice
//! let device = DeviceId::from_public_key(key.public());
//! let now = Timestamp::from_millis(1_764_342_731_000);
//! let case = CaseId::from_bytes([7; 16]);
//!
//! // Create the case: a signed genesis and a first change.
//! let genesis = sign(new_genesis(case, CaseKind::CulturalProperty, "Rome", "eu.cultural", device, now)?, &key)?;
//! let mut doc = CaseDoc::new(device.actor(0));
//! doc.init("Stolen icon, Bari")?;
//! doc.add_task(ItemId::from_u64(0x5eed), "Interview the dealer", Some("agent b"))?;
//! let change = doc.commit(now, "open case")?.expect("edits were pending");
//!
//! // Sign it and send it; the receiver decodes, verifies and applies it.
//! let signed = sign(payload_for_local(case, 1, change), &key)?;
//! let wire = encode_change(signed.as_signed());
//! let received = decode_change(&wire)?.verify()?;
//! let mut hq = CaseDoc::new(DeviceId::from_public_key(SecretKey::from_seed(&[2; 32]).public()).actor(0));
//! hq.apply(vec![received.payload().change().clone()])?;
//!
//! hq.set_field(Field::Status, "active")?;
//! let _second = hq.commit(now, "start work")?; // sign and store this one too
//! let record = hq.record(genesis.payload().value())?;
//! assert_eq!(record.title, "Stolen icon, Bari");
//! assert_eq!(record.status, Status::Active);
//! assert_eq!(record.tasks[0].assignee.as_deref(), Some("agent b"));
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod actions;
mod change;
mod doc;
mod edit;
mod error;
mod genesis;
mod guard;
mod history;
mod read;
mod record;
mod schema;

pub use change::{
    CHANGE_ENVELOPE_V1, CHANGE_HEADER_LEN, ChangeHash, ChangeHashError, ChangePayload,
    MAX_CHANGE_LEN, SignedChange, VerifiedChange, change_device, decode_change, encode_change,
    envelope_hash, parse_change, payload_for_local,
};
pub use doc::CaseDoc;
pub use edit::{CustodyInput, MAX_IDENTIFIERS, SubjectInput};
pub use error::{CaseError, ChangeError, GuardError};
pub use genesis::{
    COMPARTMENT_MAX_CHARS, GENESIS_VERSION, Genesis, OFFICE_MAX_CHARS, SignedGenesis,
    VerifiedGenesis, new_genesis, validate_compartment, validate_office, verify_genesis,
};
pub use guard::guarded;
pub use history::HistoryEntry;
pub use record::{
    AttachmentRef, CaseRecord, CaseSummary, Conflict, ConflictValue, CustodyRecord, EvidenceRecord,
    Identifier, LinkRecord, NoteRecord, RECORD_SCHEMA, SubjectRecord, TaskRecord,
};
pub use schema::{
    CaseKind, DOC_SCHEMA, Field, ItemId, ItemIdError, NAME_MAX_CHARS, NameError, Priority,
    SUBJECT_FIELDS, SUMMARY_MAX_CHARS, Status, TEXT_MAX_CHARS, TITLE_MAX_CHARS,
};
