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
/// `epoch` (16 bytes: this log's epoch), `outbox-acked` (u64 LE: the log position up to which
/// a relay has acknowledged everything; the outbox is the log after it), `setting/NAME` (UTF-8).
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta-1");

/// `cases-1`: case key → sealed postcard [`CaseRow`](crate::rows::CaseRow): the signed genesis
/// bytes, the listing summary (title, status, priority), the current heads, change count and
/// snapshot position.
pub(crate) const CASES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("cases-1");

/// `log-1`: log sequence number (u64, from 1, append-only) → sealed signed change envelope
/// (`fieldsync_case::encode_change`). The log is the order in which this node stored changes,
/// which respects causal order (a change is stored only after its dependencies). Keys are
/// sequential, so appends are cheap. A local change's signing counter is its log position.
pub(crate) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log-1");

/// `changes-1`: (case key, change hash: 32 bytes) → log sequence number. The index that makes
/// storing a change twice a no-op, and the list of a case's changes (a range scan over the case
/// key).
pub(crate) const CHANGES: TableDefinition<(&[u8], &[u8]), u64> = TableDefinition::new("changes-1");

/// `snapshots-1`: case key → sealed postcard [`Snapshot`](crate::rows::Snapshot): a compacted
/// Automerge document holding the case's changes up to the row's `snapshot_seq`.
pub(crate) const SNAPSHOTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("snapshots-1");

/// `quarantine-1`: quarantine id (u64, from 1) → sealed postcard
/// [`QuarantineEntry`](crate::QuarantineEntry): a validly signed change that is held, never
/// applied or forwarded, with its reason.
pub(crate) const QUARANTINE: TableDefinition<u64, &[u8]> = TableDefinition::new("quarantine-1");

/// `audit-1`: audit sequence number (u64, from 1) → sealed postcard
/// [`AuditEvent`](crate::AuditEvent).
pub(crate) const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit-1");
