//! Error types of this crate, one per operation a caller branches on.

use fieldsync_identity::{DecodeError, KeyError, VerifyError};
use thiserror::Error;

use crate::change::ChangeHash;

/// Automerge panicked while working on bytes from outside; see [`guarded`](crate::guarded).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum GuardError {
    /// The operation panicked; the panic was caught.
    #[error("automerge panicked while {what}: {message}")]
    Panicked {
        /// The operation that panicked ("applying changes").
        what: &'static str,
        /// The panic message.
        message: String,
    },
}

/// Decoding a signed change envelope ([`decode_change`](crate::decode_change)) failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ChangeError {
    /// Fewer bytes than the fixed envelope header.
    #[error("signed change too short: {len} bytes, the header alone is {header}")]
    TooShort {
        /// Bytes received.
        len: usize,
        /// Size of the header.
        header: usize,
    },
    /// The envelope names a version this build does not know.
    #[error("unsupported signed change version {version}; upgrade this device")]
    UnsupportedVersion {
        /// The version byte found.
        version: u8,
    },
    /// The Automerge change is larger than [`MAX_CHANGE_LEN`](crate::MAX_CHANGE_LEN).
    #[error("change too large: {len} bytes (limit {limit})")]
    TooLarge {
        /// Size of the change bytes.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The signer field is not a usable ed25519 public key.
    #[error("signed change: bad signer key: {0}")]
    BadSigner(#[source] KeyError),
    /// The bytes after the header are not one uncompressed Automerge change chunk.
    #[error("signed change: not an automerge change: {detail}")]
    NotAChange {
        /// What is wrong with the chunk.
        detail: String,
    },
    /// Automerge rejected the change bytes.
    #[error("malformed automerge change: {detail}")]
    Malformed {
        /// Automerge's message.
        detail: String,
    },
    /// The change holds operations no case document is made of (rich-text
    /// marks, unknown actions); Automerge never sees it.
    #[error("the change holds {what}, which no case document is made of")]
    UnsupportedOperation {
        /// What the change holds.
        what: &'static str,
    },
    /// Automerge panicked while parsing the change; the panic was caught.
    #[error("automerge panicked while parsing a change: {message}")]
    AutomergePanic {
        /// The panic message.
        message: String,
    },
}

impl From<GuardError> for ChangeError {
    fn from(e: GuardError) -> Self {
        match e {
            GuardError::Panicked { message, .. } => Self::AutomergePanic { message },
        }
    }
}

/// An operation on a case (genesis, document, edit, read) failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CaseError {
    /// A value given to a mutator (or to the genesis) is not acceptable.
    #[error("invalid {field}: {reason}")]
    InvalidValue {
        /// The field being set.
        field: &'static str,
        /// Why the value was refused.
        reason: String,
    },
    /// A text names something that is not one of a fixed set of names.
    #[error("unknown {what} {name:?}; valid: {valid}")]
    UnknownName {
        /// What kind of name ("field", "subject field", "status").
        what: &'static str,
        /// The name given.
        name: String,
        /// The valid names, comma separated.
        valid: String,
    },
    /// A subject, evidence item, task, link or attachment that does not exist.
    #[error("no {kind} {id} in this case")]
    UnknownItem {
        /// "subject", "evidence", "task", "link" or "attachment".
        kind: &'static str,
        /// The id given.
        id: String,
    },
    /// An item with this id exists already.
    #[error("{kind} {id} already exists in this case")]
    DuplicateItem {
        /// "subject", "evidence" or "task".
        kind: &'static str,
        /// The id given.
        id: String,
    },
    /// The document lacks a part of the case schema (it was never initialized,
    /// or a peer wrote something else there).
    #[error("the document has no {missing}; is it an initialized case?")]
    NotACase {
        /// The missing part ("subjects map").
        missing: &'static str,
    },
    /// `init` on a document that is already a case.
    #[error("the document is already an initialized case")]
    AlreadyInitialized,
    /// Local edits are pending; `commit` (or `rollback`) them before this operation,
    /// which would otherwise seal them into a change that is never signed.
    #[error("uncommitted local edits are pending; commit or roll them back first")]
    UncommittedEdits,
    /// An earlier Automerge panic (or a refused commit) left this document
    /// in an unknown state; reload it from the store.
    #[error(
        "this case document is poisoned by an earlier automerge panic or refused commit; reload it from the store"
    )]
    Poisoned,
    /// The pending edits make one change larger than
    /// [`MAX_CHANGE_LEN`](crate::MAX_CHANGE_LEN): it could never be sent.
    /// Nothing is signed; the document is poisoned (reload it).
    #[error(
        "the edit makes a change of {len} bytes, over the limit of {limit}; make it in smaller edits"
    )]
    ChangeTooLarge {
        /// Size of the change Automerge made.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// Automerge panicked; the panic was caught (the document is now poisoned,
    /// except for a failed `load`, which leaves nothing behind).
    #[error(transparent)]
    Panicked(#[from] GuardError),
    /// [`CaseDoc::apply`](crate::CaseDoc::apply) refused a change before
    /// Automerge saw it; the document is as it was.
    #[error("change {} refused: {source}", hash.short())]
    Refused {
        /// The change's hash.
        hash: ChangeHash,
        /// Why it was refused.
        #[source]
        source: ChangeError,
    },
    /// Automerge returned an error.
    #[error("automerge failed while {op}: {source}")]
    Automerge {
        /// What was being done.
        op: &'static str,
        /// Automerge's error.
        #[source]
        source: Box<automerge::AutomergeError>,
    },
    /// Automerge committed local edits but did not hand back the change.
    #[error("automerge did not return the change it just committed")]
    CommitLost,
    /// A genesis record could not be encoded.
    #[error("case genesis: {0}")]
    Genesis(#[source] DecodeError),
    /// A genesis record failed verification.
    #[error("case genesis: {0}")]
    GenesisSignature(#[source] VerifyError),
}

/// Shorthand for wrapping an Automerge error with the operation that failed.
pub(crate) fn am(op: &'static str) -> impl FnOnce(automerge::AutomergeError) -> CaseError {
    move |source| CaseError::Automerge {
        op,
        source: Box::new(source),
    }
}
