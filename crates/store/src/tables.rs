//! Every redb table of a FieldSync store, with its key and value layout.
//!
//! Names carry a version (`"changes-1"`): a layout change gets a new name
//! and a step in `migrations.rs`. "Case key" is the 16-byte key a case is
//! stored under, produced by [`Seal::case_key`](crate::Seal::case_key) (the
//! case id itself with the plain seal; a keyed hash once stores are
//! encrypted). Values marked *sealed* pass through [`Seal`](crate::Seal).

use redb::TableDefinition;

/// `meta-1`: setting name → sealed value.
/// Keys: `schema` (u32 LE), `device` (postcard [`DeviceRecord`](crate::store::DeviceRecord)),
/// `counter` (u64 LE: the next device signing counter), `epoch` (16 bytes: this log's epoch),
/// `next-seq` (u64 LE: the next log sequence number).
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta-1");

/// `cases-1`: case key → sealed postcard [`CaseRow`](crate::rows::CaseRow): the signed genesis
/// bytes, the listing summary (title, status, priority), change count, snapshot position.
pub(crate) const CASES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("cases-1");

/// `log-1`: log sequence number (u64, from 1, append-only) → sealed signed change envelope
/// (`fieldsync_case::encode_change`). The log is the order in which this node stored changes;
/// keys are sequential, so appends are cheap.
pub(crate) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log-1");

/// `changes-1`: (case key, change hash: 32 bytes) → log sequence number. The index that makes
/// storing a change twice a no-op.
pub(crate) const CHANGES: TableDefinition<(&[u8], &[u8]), u64> = TableDefinition::new("changes-1");

/// `case-log-1`: (case key, per-case index from 0) → log sequence number. A case's changes in
/// the order they were stored, which respects causal order (a change is stored only after its
/// dependencies).
pub(crate) const CASE_LOG: TableDefinition<(&[u8], u64), u64> = TableDefinition::new("case-log-1");

/// `heads-1`: case key → sealed concatenation of the case's current head hashes (32 bytes each,
/// sorted).
pub(crate) const HEADS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("heads-1");

/// `snapshots-1`: case key → sealed postcard [`Snapshot`](crate::rows::Snapshot): a compacted
/// Automerge document covering the case's first `upto` changes.
pub(crate) const SNAPSHOTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("snapshots-1");

/// `outbox-1`: log sequence number → (). Changes stored here that no relay has acknowledged yet.
pub(crate) const OUTBOX: TableDefinition<u64, ()> = TableDefinition::new("outbox-1");

/// `quarantine-1`: quarantine id (u64, from 1) → sealed postcard
/// [`QuarantineEntry`](crate::QuarantineEntry): a validly signed change that is held, never
/// applied or forwarded, with its reason.
pub(crate) const QUARANTINE: TableDefinition<u64, &[u8]> = TableDefinition::new("quarantine-1");

/// `audit-1`: audit sequence number (u64, from 1) → sealed postcard
/// [`AuditEvent`](crate::AuditEvent).
pub(crate) const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit-1");
