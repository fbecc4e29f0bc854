//! The FieldSync store: one redb file per node holding its cases, the
//! signed change log, per-case heads and snapshots, peers' cursors and
//! acknowledgements (the outbox), receipts, pending changes, the quarantine,
//! known peers, the revocation list and the audit trail.
//!
//! What it is: the durable half of a node. Every write is one durable redb
//! transaction, so a local edit is reported done only once it survives power
//! loss; after a failed commit the handle refuses writes until reopened. Every
//! signed change is kept (the evidence); documents load from a compacted
//! snapshot plus the changes stored after it. A [`StoreKind::Device`] store
//! materializes documents as changes arrive; a [`StoreKind::Relay`] store
//! keeps changes by their headers and never loads a document to store or
//! route one. The sync engine reads the log with [`Store::read_log`] and
//! stores a peer's batch with its cursor in one transaction with
//! [`Store::ingest`].
//!
//! A store file that fails its checksums is refused when opened
//! ([`StoreError::Damaged`]) and salvaged into a new store by
//! [`Store::repair`], which keeps the damaged file aside. A device that
//! signs two different changes as one is flagged and both are held
//! ([`Store::equivocations`]).
//!
//! What it is not: it does no networking, spawns no tasks and reads neither
//! the clock nor the OS random generator — time and randomness are arguments.
//!
//! ```
//! use fieldsync_case::CaseKind;
//! use fieldsync_identity::{CaseId, Timestamp};
//! use fieldsync_store::{NewCase, NewDevice, Store, StoreKind};
//!
//! let now = Timestamp::from_millis(1_700_000_000_000);
//! let store = Store::create_in_memory(NewDevice {
//!     seed: [1; 32], name: "rome-laptop", epoch: [2; 16], now, kind: StoreKind::Device,
//! })?;
//! let case = store.create_case(&NewCase {
//!     id: CaseId::from_bytes([3; 16]),
//!     kind: CaseKind::CulturalProperty,
//!     office: "rome",
//!     compartment: "antiquities",
//!     title: "Looted stele",
//! }, now)?;
//! store.edit_case(&case, now, "add note", |doc| doc.add_note(store.device().id(), now, "Seen at the port"))?;
//! assert_eq!(store.case_record(&case)?.notes.len(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

mod audit;
mod bundle;
mod cases;
mod custody;
mod equivocation;
mod error;
mod import;
mod ingest;
mod lease;
mod load;
mod migrations;
mod orders;
mod peers;
mod releases;
mod repair;
mod repair_scan;
mod rows;
mod seal;
mod store;
mod sync;
mod tables;
mod withdraw;

pub use audit::{AuditEvent, AuditKind, QuarantineEntry};
pub use bundle::{BUNDLE_MAGIC, BUNDLE_VERSION, BundleBody, BundleCase, MAX_BUNDLE_LEN};
pub use cases::{CaseListing, NewCase, SNAPSHOT_EVERY};
pub use equivocation::{Equivocation, equivocation_dependent_reason, equivocation_reason};
pub use error::{BundleError, SealError, StoreError};
pub use import::{ImportReport, VerifyReport, decode_bundle};
pub use ingest::{Ingest, IngestReport, MAX_PENDING_BYTES, MAX_PENDING_CHANGES, PendingLimits};
pub use lease::{CLOCK_TOLERANCE_MS, LeaseError, LeaseState};
pub use orders::{PendingWipe, WipeAcceptance, WipeDelivery};
pub use peers::{PeerRecord, StoredReceipt};
pub use repair::{RepairOptions, RepairReport};
pub use seal::{AeadSeal, PlainSeal, Seal};
pub use store::{LocalDevice, NewDevice, Store, StoreKind, StoreOptions};
pub use sync::{CaseHeads, Cursor, LogBatch, LogEntry, READ_LOG_SCAN_LIMIT};
pub use withdraw::{WithdrawReport, dependent_reason};
