//! Error types of this crate, one per operation a caller branches on.

use thiserror::Error;

/// Parsing or using a key or signature failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The bytes are not a point on the ed25519 curve.
    #[error("invalid ed25519 public key")]
    InvalidPublicKey,
    /// The key is of small order; a signature by it proves nothing.
    #[error("weak (small-order) ed25519 public key")]
    WeakPublicKey,
    /// A fixed-size value had the wrong length.
    #[error("{what}: expected {expected} bytes, got {got}")]
    WrongLength {
        /// What was being parsed.
        what: &'static str,
        /// The required length.
        expected: usize,
        /// The length that arrived.
        got: usize,
    },
    /// A text form could not be parsed.
    #[error("not a valid {what}: expected {expected}")]
    BadText {
        /// What was being parsed.
        what: &'static str,
        /// What the text should look like.
        expected: &'static str,
    },
    /// The signature does not verify under this key and domain.
    #[error("signature does not verify")]
    BadSignature,
}

/// Verifying a [`Signed`](crate::Signed) value failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The signature does not verify over the payload's signed bytes.
    #[error("bad signature by {signer}")]
    BadSignature {
        /// Short form of the claimed signer.
        signer: String,
    },
    /// The signature is valid, but the signer is not the payload's author
    /// (for a change: its Automerge actor does not belong to the signing device).
    #[error("signer {signer} is not the author of this payload: {reason}")]
    SignerMismatch {
        /// Short form of the signer.
        signer: String,
        /// Why the payload names someone else.
        reason: String,
    },
}

/// A batch verification failed; `index` names the first failing item.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("item {index} of the batch: {error}")]
pub struct BatchVerifyError {
    /// Position of the first item that failed.
    pub index: usize,
    /// Why it failed.
    pub error: VerifyError,
}

/// Checking a device certificate failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CertificateError {
    /// The certificate's signature does not verify.
    #[error("certificate signature does not verify")]
    BadSignature,
    /// The certificate was issued by another key than this headquarters' root.
    #[error("certificate issued by {issuer}, not by this headquarters")]
    ForeignIssuer {
        /// Short form of the issuing key.
        issuer: String,
    },
    /// The certificate is not valid yet.
    #[error("certificate is not valid before {not_before}")]
    NotYetValid {
        /// Start of validity.
        not_before: String,
    },
    /// The certificate has expired.
    #[error("certificate expired on {not_after}; ask headquarters to re-enroll this device")]
    Expired {
        /// End of validity.
        not_after: String,
    },
    /// The device is revoked.
    #[error("device {device} is revoked (since {since}); ask headquarters to re-enroll")]
    Revoked {
        /// Short device id.
        device: String,
        /// When it was revoked.
        since: String,
    },
    /// The certificate bytes could not be decoded.
    #[error("malformed certificate: {0}")]
    Malformed(String),
    /// A field of the certificate is out of range.
    #[error("invalid certificate: {0}")]
    Invalid(String),
}

/// Decoding a signed record (certificate, revocation list) failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The bytes are not a valid encoding.
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
        /// The decoder's message.
        detail: String,
    },
    /// The encoding names a version this build does not know.
    #[error("unsupported {what} version {version}")]
    UnsupportedVersion {
        /// What was being decoded.
        what: &'static str,
        /// The version found.
        version: u8,
    },
    /// The record is larger than allowed.
    #[error("{what} too large: {len} bytes (limit {limit})")]
    TooLarge {
        /// What was being decoded.
        what: &'static str,
        /// Its size.
        len: usize,
        /// The limit.
        limit: usize,
    },
}
