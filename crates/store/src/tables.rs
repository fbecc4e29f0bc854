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
/// `kind` (1 byte: 0 device, 1 relay; see [`StoreKind`](crate::StoreKind)),
/// `epoch` (16 bytes: this log's epoch), `outbox-acked` (u64 LE: the highest log position any
/// peer has acknowledged; the outbox is the log after it), `pending` (postcard
/// `(u64, u64)`: number and total stored bytes of the rows in `pending-1`), `quarantine-last`
/// (u64 LE: the last quarantine id handed out, so released ids are never reused), `pending-limits`
/// (postcard [`PendingLimits`](crate::PendingLimits); absent: the defaults),
/// `revocations` (the signed revocation list bytes, verified by the caller),
/// `revocations-applied` (u64 LE: the sequence of the list whose withdrawals
/// [`Store::adopt_revocations`](crate::Store::adopt_revocations) applied; absent when the list
/// was stored without them), `setting/NAME` (UTF-8).
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta-1");

/// `cases-1`: case key → sealed postcard [`CaseRow`](crate::rows::CaseRow): the signed genesis
/// bytes, the listing summary (title, status, priority), the current heads, change count and
/// snapshot position.
pub(crate) const CASES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("cases-1");

/// `log-1`: log sequence number (u64, from 1, append-only) → sealed signed change envelope
/// (`fieldsync_case::encode_change`). The log is the order in which this node stored changes,
/// which respects causal order (a change is stored only after its dependencies). Keys are
/// sequential, so appends are cheap. A local change's signing counter is its log position.
///
/// A position is never removed or reused, and the head never moves back (a log position is a
/// peer's cursor, and on a device a local change's counter). A change *withdrawn* after it was
/// stored (a newly adopted revocation list puts it, or a change it depends on, beyond its
/// author's revocation point: `withdraw.rs`) keeps its position with a *tombstone* as value:
/// `[0] ‖ case id (16) ‖ change hash (32)` (a change envelope starts with its version, 1); the
/// change itself moves to `quarantine-1`. A withdrawal also removes the change's `changes-1` and
/// `reads-1` entries, in the same transaction. So the readers that go through those indexes
/// (case materialization, repair listings, bundle export, `has_change`, the compartment reader
/// `read_log_for_reader`) never meet a tombstone, and those that walk the log itself
/// (`read_log`/`read_log_for_peer` through their `Filler`, `verify_all`) skip it, advancing past
/// its position. The schema 3 step that fills `reads-1` never meets one (withdrawal came after).
/// [`Store::outbox_len`](crate::Store::outbox_len) counts positions, tombstones included.
pub(crate) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log-1");

/// `changes-1`: (case key, change hash: 32 bytes) → log sequence number. The index that makes
/// storing a change twice a no-op, and the list of a case's changes (a range scan over the case
/// key). A withdrawn change has no entry (it is in `quarantine-1`).
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

/// `pending-1`: (case key, change hash: 32 bytes) → sealed postcard
/// [`PendingRow`](crate::rows::PendingRow): a verified change whose dependencies are not stored
/// yet, with its case's signed genesis and its dependency hashes. Bounded by
/// [`MAX_PENDING_CHANGES`](crate::MAX_PENDING_CHANGES) and
/// [`MAX_PENDING_BYTES`](crate::MAX_PENDING_BYTES) (counted in `meta-1/pending`). A row leaves
/// the table when its dependencies arrive and it is stored in the log.
pub(crate) const PENDING: TableDefinition<(&[u8], &[u8]), &[u8]> =
    TableDefinition::new("pending-1");

/// `origins-1`: first log sequence number of a range → sealed postcard
/// [`Origin`](crate::sync::Origin): the log range `first..=last` was stored from
/// one peer's log (device id, epoch) in one ingest. A node never sends a peer
/// back what that peer sent it.
pub(crate) const ORIGINS: TableDefinition<u64, &[u8]> = TableDefinition::new("origins-1");

/// `cursors-1`: peer device id (32 bytes) → sealed postcard [`Cursor`](crate::Cursor): how far
/// this node has ingested that peer's log. Written in the transaction that stores the batch it
/// covers.
pub(crate) const CURSORS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("cursors-1");

/// `acks-1`: peer device id (32 bytes) → sealed u64 LE: the position in *this* node's log up to
/// which that peer has acknowledged everything. Never moves backwards.
pub(crate) const ACKS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("acks-1");

/// `receipts-1`: (relay device id: 32 bytes, receipt id: u64 from 1 per relay) → sealed postcard
/// [`StoredReceipt`](crate::StoredReceipt): the signed receipts relays gave this node.
pub(crate) const RECEIPTS: TableDefinition<(&[u8], u64), &[u8]> =
    TableDefinition::new("receipts-1");

/// `devices-1`: device id (32 bytes) → sealed postcard [`PeerRecord`](crate::PeerRecord): the
/// peers this node knows, with their certificate and last contact.
pub(crate) const DEVICES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("devices-1");

/// `releases-1`: (case key, change hash: 32 bytes) → sealed signed release (the bytes of a
/// `fieldsync_protocol::ReleaseBody` record, verified by the caller): the supervisor's or
/// headquarters' permission under which a change that failed authorization was stored. It is
/// sent with the change, so that every node can check it. Added in schema 2.
pub(crate) const RELEASES: TableDefinition<(&[u8], &[u8]), &[u8]> =
    TableDefinition::new("releases-1");

/// `reads-1`: (compartment key: 16 bytes from [`Seal::compartment_key`](crate::Seal::compartment_key),
/// log sequence number) → `()`: which log entries belong to cases of each compartment, so that
/// a session reads only the entries its peer may read, however much else the log holds.
/// Written with each log append; a withdrawn position's entry is removed. Added in schema 3
/// (filled from the log on upgrade).
pub(crate) const READS: TableDefinition<(&[u8], u64), ()> = TableDefinition::new("reads-1");

/// `custody-1`: (peer device id ‖ that peer's log epoch: 48 bytes, this node's log head after an
/// ingest from that peer) → sealed u64 LE: the peer's log position then held. Every change of
/// the peer's log through that position that this node stored is in this node's log at or
/// before the key's position (see `custody.rs`). Relays only; written in the ingest's
/// transaction when nothing is pending; pruned when an upstream relay's receipt covers it.
/// The key (that prefix ‖ `q`: 49 bytes, 0) holds the peer log's ceiling instead: the position
/// before the first batch of it that put a change in the quarantine. Added in schema 4.
pub(crate) const CUSTODY: TableDefinition<(&[u8], u64), &[u8]> = TableDefinition::new("custody-1");

/// `seqs-1`: (case key ‖ Automerge actor id (36 bytes for a FieldSync actor), the change's
/// sequence number among that actor's changes to the case) → change hash (32 bytes): the first
/// change stored with that actor and sequence number. A device that signs two different changes
/// under one actor and sequence number equivocates (see `equivocation.rs`). Written with each
/// log append; kept when a change is withdrawn. Added in schema 5 (filled from the log on
/// upgrade).
pub(crate) const SEQS: TableDefinition<(&[u8], u64), &[u8]> = TableDefinition::new("seqs-1");

/// `equivocations-1`: (case key, change hash: 32 bytes) → sealed postcard
/// [`EquivocationRow`](crate::equivocation::EquivocationRow): a change found to equivocate
/// (another change of its case has its actor and sequence number). Such a change is held in the
/// quarantine (unless released), and so is every change that depends on it. Added in schema 5.
pub(crate) const EQUIVOCATIONS: TableDefinition<(&[u8], &[u8]), &[u8]> =
    TableDefinition::new("equivocations-1");
