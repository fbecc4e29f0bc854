//! Errors of the store, one enum per operation family.

use std::path::PathBuf;

use fieldsync_case::{CaseError, ChangeError};
use fieldsync_identity::{DecodeError, VerifyError};
use thiserror::Error;

/// A stored value could not be opened by the configured [`Seal`](crate::Seal).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SealError {
    /// The value carries a format tag this build does not know.
    #[error("value in {table} has unknown format tag {tag}")]
    UnknownFormat {
        /// Table of the value.
        table: String,
        /// The tag found.
        tag: u8,
    },
    /// The value is empty (not even a tag).
    #[error("empty value in {table}")]
    Empty {
        /// Table of the value.
        table: String,
    },
    /// The store is encrypted at rest and was opened without its key.
    #[error("this store is encrypted; it needs its key")]
    StoreEncrypted,
    /// The store is not encrypted at rest and was opened with a key.
    #[error("this store is not encrypted at rest; open it without a key")]
    StoreNotEncrypted,
    /// The key given does not open this store (it is another store's).
    #[error("this key does not open this store; it belongs to another store")]
    WrongKey,
    /// An encrypted value failed authentication: it was altered, or moved
    /// from another row or table.
    #[error(
        "a value in {table} fails its authentication: it was altered or moved from another row"
    )]
    Tampered {
        /// Table of the value.
        table: String,
    },
    /// A value stored in the clear inside an encrypted store.
    #[error("a value in {table} is not encrypted, in an encrypted store: it was planted")]
    Unsealed {
        /// Table of the value.
        table: String,
    },
}

/// A store operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// There is no store at this path.
    #[error("no store at {}; run `fieldsync-agent init --name NAME` first", path.display())]
    NotInitialized {
        /// Where the store was looked for.
        path: PathBuf,
    },
    /// `create` found a store already there.
    #[error("a store already exists at {}; it was left untouched", path.display())]
    AlreadyExists {
        /// The existing store.
        path: PathBuf,
    },
    /// Another process has the store open.
    #[error("the store at {} is in use by another process; wait for it to finish", path.display())]
    Busy {
        /// The store.
        path: PathBuf,
    },
    /// The database file could not be opened or created.
    #[error("cannot open the store at {}: {source}", path.display())]
    Open {
        /// The store.
        path: PathBuf,
        /// redb's error.
        #[source]
        source: redb::DatabaseError,
    },
    /// A database operation failed.
    #[error("store operation '{op}' failed: {source}")]
    Db {
        /// The operation that failed.
        op: &'static str,
        /// redb's error.
        #[source]
        source: redb::Error,
    },
    /// The disk is full: the operation was not written, nothing of it is
    /// kept. Reads still work; the handle refuses writes until the store is
    /// reopened (with space freed).
    #[error(
        "the disk is full: '{op}' was not written (nothing of it is kept); free some space and reopen the store (reads still work)"
    )]
    DiskFull {
        /// The operation that failed.
        op: &'static str,
        /// redb's error.
        #[source]
        source: redb::Error,
    },
    /// The store file fails its checksums or its structure is broken: it was
    /// damaged outside FieldSync (a disk fault, a bad copy). It is refused
    /// as it is; nothing in it was changed or deleted.
    #[error(
        "the store file {} is damaged ({detail}); nothing was changed or deleted. Run `repair` (`fieldsync-agent repair` or `fieldsync-server repair`): it keeps the damaged file aside and salvages what it can read into a new store",
        path.display()
    )]
    Damaged {
        /// The store file.
        path: PathBuf,
        /// What redb found.
        detail: String,
    },
    /// A commit failed earlier; this handle refuses writes until the store is reopened.
    #[error("a commit failed earlier; the store refuses writes until it is reopened")]
    Poisoned,
    /// The store was written by a newer build.
    #[error(
        "the store has schema {found}, this build supports up to {supported}; upgrade fieldsync"
    )]
    UnsupportedSchema {
        /// Schema found in the file.
        found: u32,
        /// Highest schema this build knows.
        supported: u32,
    },
    /// A stored value could not be decoded.
    #[error("the store is corrupt: {what}; run `fieldsync-agent verify`")]
    Corrupt {
        /// What could not be decoded.
        what: String,
    },
    /// A stored value could not be opened.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// No case matches.
    #[error("no case matches '{query}'; `case list` shows the cases on this device")]
    UnknownCase {
        /// What was asked for.
        query: String,
    },
    /// More than one case matches a prefix.
    #[error("'{query}' matches {} cases ({}); give more digits", candidates.len(), candidates.join(", "))]
    AmbiguousCase {
        /// What was asked for.
        query: String,
        /// Short ids of the matching cases.
        candidates: Vec<String>,
    },
    /// A case with this id exists already.
    #[error("case {case} exists already")]
    CaseExists {
        /// The case id.
        case: String,
    },
    /// The case document refused an edit or could not be read.
    #[error(transparent)]
    Case(#[from] CaseError),
    /// Signing a local change failed.
    #[error("signing a local change failed: {0}")]
    Sign(#[from] VerifyError),
    /// A record could not be encoded.
    #[error("encoding failed: {0}")]
    Encode(#[from] DecodeError),
    /// No quarantine entry has this id (released already, or never there).
    #[error("no quarantine entry {id}; the quarantine list shows the held changes")]
    UnknownQuarantine {
        /// The id asked for.
        id: u64,
    },
}

impl StoreError {
    pub(crate) fn db(op: &'static str) -> impl FnOnce(redb::Error) -> StoreError {
        move |source| match &source {
            redb::Error::Io(e) if e.kind() == std::io::ErrorKind::StorageFull => {
                StoreError::DiskFull { op, source }
            }
            _ => StoreError::Db { op, source },
        }
    }

    pub(crate) fn corrupt(what: impl Into<String>) -> StoreError {
        StoreError::Corrupt { what: what.into() }
    }
}

/// Importing a bundle or ingesting a sync batch failed. Nothing of it was stored.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BundleError {
    /// The file does not start with the bundle magic.
    #[error("not a FieldSync bundle (bad magic bytes)")]
    NotABundle,
    /// The bundle is larger than allowed.
    #[error("bundle too large: {len} bytes (limit {limit})")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The bundle structure could not be decoded.
    #[error("malformed bundle: {0}")]
    Malformed(DecodeError),
    /// The exporter's signature over the whole bundle does not verify: some byte was altered.
    #[error("bundle signature does not verify: the bundle was altered or damaged in transit")]
    BadBundleSignature(VerifyError),
    /// A genesis record could not be decoded or verified.
    #[error("case {case}: bad genesis record: {detail}")]
    BadGenesis {
        /// Position or id of the case.
        case: String,
        /// What is wrong.
        detail: String,
    },
    /// A change could not be decoded.
    #[error("case {case}, change {index}: {error}")]
    BadChange {
        /// The case.
        case: String,
        /// Position of the change in the case's list.
        index: usize,
        /// What is wrong.
        error: ChangeError,
    },
    /// A change's signature or signer binding does not verify.
    #[error("case {case}, change {index}: {error}")]
    BadChangeSignature {
        /// The case.
        case: String,
        /// Position of the change in the case's list.
        index: usize,
        /// What is wrong.
        error: VerifyError,
    },
    /// A change is signed for another case than the one it is filed under.
    #[error("case {case}, change {index}: signed for case {signed_for}")]
    WrongCase {
        /// The case it is filed under.
        case: String,
        /// Position of the change.
        index: usize,
        /// The case its signature names.
        signed_for: String,
    },
    /// The bundle carries a different genesis for a case this store already holds.
    #[error("case {case}: the bundle's genesis differs from the stored one")]
    GenesisConflict {
        /// The case.
        case: String,
    },
    /// Some changes depend on changes neither in the bundle nor in the store.
    #[error(
        "case {case}: {count} changes depend on changes that are neither in the bundle nor on this device"
    )]
    MissingDependencies {
        /// The case.
        case: String,
        /// How many changes could not be placed.
        count: usize,
    },
    /// Holding this batch's changes that wait for their dependencies would take
    /// the pending table over its limits; nothing of the batch was stored.
    #[error(
        "too many changes wait for their dependencies (limits: {changes} changes, {} MiB); nothing of this batch was stored: repair the missing cases first",
        bytes >> 20
    )]
    PendingFull {
        /// The limit on changes held ([`PendingLimits::changes`](crate::PendingLimits::changes)).
        changes: u64,
        /// The limit on bytes held ([`PendingLimits::bytes`](crate::PendingLimits::bytes)).
        bytes: u64,
    },
    /// Automerge failed (or panicked) applying the bundle's changes; the case is unchanged.
    #[error("case {case}: applying the changes failed: {error}")]
    Apply {
        /// The case.
        case: String,
        /// What went wrong.
        error: CaseError,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Whether an error is an I/O failure of the storage (after which the store is poisoned).
pub(crate) trait StorageFailure {
    /// True for I/O failures of the underlying storage.
    fn is_storage_failure(&self) -> bool;
}

impl StorageFailure for StoreError {
    fn is_storage_failure(&self) -> bool {
        matches!(
            self,
            StoreError::Db {
                source: redb::Error::Io(_) | redb::Error::Corrupted(_) | redb::Error::PreviousIo,
                ..
            } | StoreError::DiskFull { .. }
        )
    }
}

impl StorageFailure for BundleError {
    fn is_storage_failure(&self) -> bool {
        matches!(self, BundleError::Store(e) if e.is_storage_failure())
    }
}
