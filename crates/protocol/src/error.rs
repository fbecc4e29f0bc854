//! Session errors. Each names what went wrong and maps to the close code
//! sent to the peer; none takes the process down.

use fieldsync_store::{BundleError, StoreError};
use thiserror::Error;

use crate::receipt::ReceiptError;
use crate::wire::{CloseCode, WireError};

/// A sync session failed (and is closed).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The peer speaks no version this build accepts.
    #[error(
        "peer speaks protocol {version} (accepts from {min}); this build speaks {ours} (accepts from {our_min})"
    )]
    Version {
        /// The peer's version.
        version: u16,
        /// The oldest version the peer accepts.
        min: u16,
        /// Our version.
        ours: u16,
        /// The oldest version we accept.
        our_min: u16,
    },
    /// A certificate was refused.
    #[error("certificate refused: {0}")]
    Certificate(String),
    /// The peer may not hold this kind of session (e.g. device to device,
    /// or a relay certificate claiming to be a device).
    #[error("session not allowed: {0}")]
    NotAllowed(String),
    /// A frame or message did not decode.
    #[error("bad frame from peer: {0}")]
    Wire(#[from] WireError),
    /// The peer sent a message out of turn or with inconsistent content.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The peer sent a change or genesis whose signature does not verify.
    #[error("forged or corrupt data from peer: {0}")]
    Forgery(String),
    /// The peer exceeded a limit.
    #[error("limit exceeded: {0}")]
    Limit(String),
    /// A receipt from the peer was refused.
    #[error(transparent)]
    Receipt(#[from] ReceiptError),
    /// The local store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// Storing the peer's batch failed.
    #[error("storing the peer's changes failed: {0}")]
    Ingest(#[from] BundleError),
    /// The peer closed the session.
    #[error("peer closed the session ({code:?}): {reason}")]
    PeerClosed {
        /// The peer's close code.
        code: CloseCode,
        /// The peer's reason.
        reason: String,
    },
    /// The session is closed; nothing more can be done with it.
    #[error("the session is closed")]
    Closed,
}

impl SessionError {
    /// The close code sent to the peer for this error.
    pub fn close_code(&self) -> CloseCode {
        match self {
            SessionError::Version { .. } => CloseCode::Version,
            SessionError::Certificate(_) | SessionError::NotAllowed(_) => CloseCode::Certificate,
            SessionError::Wire(_) | SessionError::Protocol(_) | SessionError::Receipt(_) => {
                CloseCode::Protocol
            }
            SessionError::Forgery(_) => CloseCode::Forgery,
            SessionError::Limit(_) | SessionError::Ingest(BundleError::PendingFull { .. }) => {
                CloseCode::Limit
            }
            SessionError::Store(_) | SessionError::Ingest(_) => CloseCode::Storage,
            SessionError::PeerClosed { .. } | SessionError::Closed => CloseCode::Done,
        }
    }
}
