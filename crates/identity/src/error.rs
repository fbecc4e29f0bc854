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

/// Issuing, decoding or checking a device certificate failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CertificateError {
    /// The certificate's signature does not verify: it was altered or damaged.
    #[error(
        "certificate signature does not verify; the certificate was altered or damaged, ask headquarters for a fresh copy"
    )]
    BadSignature,
    /// The certificate was issued by another key than this headquarters' root.
    #[error(
        "certificate issued by {issuer}, not by this headquarters; was the device enrolled elsewhere?"
    )]
    ForeignIssuer {
        /// Short form of the issuing key.
        issuer: String,
    },
    /// The certificate is not valid yet.
    #[error(
        "certificate of device {device} is not valid before {not_before}; check this machine's clock"
    )]
    NotYetValid {
        /// Short device id.
        device: String,
        /// Start of validity.
        not_before: String,
    },
    /// The certificate has expired.
    #[error(
        "certificate of device {device} expired on {not_after}; ask headquarters to re-enroll this device"
    )]
    Expired {
        /// Short device id.
        device: String,
        /// End of validity.
        not_after: String,
    },
    /// The device is revoked.
    #[error("device {device} is revoked (since {since}: {reason}); ask headquarters to re-enroll")]
    Revoked {
        /// Short device id.
        device: String,
        /// When it was revoked.
        since: String,
        /// Headquarters' reason.
        reason: String,
    },
    /// The revocation list given to check a certificate comes from another
    /// headquarters key than the certificate.
    #[error(
        "the revocation list was issued by {issuer}, not by the certificate's headquarters {expected}; load the list of the same headquarters"
    )]
    ForeignRevocationList {
        /// Short form of the list's issuer.
        issuer: String,
        /// Short form of the certificate's issuer.
        expected: String,
    },
    /// The certificate bytes or text could not be decoded.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A field of the certificate breaks a rule (write without read, a
    /// liaison with write rights, an empty validity period, ...).
    #[error("invalid certificate: {0}")]
    Invalid(String),
}

/// Decoding, checking or building a revocation list failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RevocationError {
    /// The list's signature does not verify: it was altered or damaged.
    #[error(
        "revocation list signature does not verify; the list was altered or damaged, fetch it again from headquarters"
    )]
    BadSignature,
    /// The list was issued by another key than this headquarters' root.
    #[error(
        "revocation list issued by {issuer}, not by this headquarters; ignore it and fetch the list from headquarters"
    )]
    ForeignIssuer {
        /// Short form of the issuing key.
        issuer: String,
    },
    /// The list bytes could not be decoded.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A field of the list breaks a rule (entries out of order, a device
    /// listed twice, an exhausted sequence number, ...).
    #[error("invalid revocation list: {0}")]
    Invalid(String),
}

/// A wipe order could not be issued, decoded or obeyed. The message is the
/// reason a device or relay records in its audit log when it ignores one.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum WipeOrderError {
    /// The order's signature does not verify: it is forged or damaged.
    #[error("wipe order signature does not verify: the order is forged or damaged")]
    BadSignature,
    /// The order was signed by another key than this headquarters' root.
    #[error("wipe order signed by {issuer}, not by this device's headquarters")]
    ForeignIssuer {
        /// Short form of the signing key.
        issuer: String,
    },
    /// The order is for another device.
    #[error("wipe order for device {device}, not for this device ({this})")]
    NotForThisDevice {
        /// Short id of the device the order names.
        device: String,
        /// Short id of this device.
        this: String,
    },
    /// The order's validity has ended.
    #[error("wipe order for device {device} expired on {expired_at}")]
    Expired {
        /// Short id of the device the order names.
        device: String,
        /// When it expired.
        expired_at: String,
    },
    /// This device has handled an order with this nonce already.
    #[error("wipe order {nonce} was handled already: a replay")]
    Replayed {
        /// The order's nonce, in hex.
        nonce: String,
    },
    /// The order was issued before this device's current certificate
    /// started: it was meant for an earlier enrollment.
    #[error(
        "wipe order issued on {issued_at}, before this device's certificate (valid from {not_before}): a replay of an order for an earlier enrollment"
    )]
    IssuedBeforeCertificate {
        /// When the order was issued.
        issued_at: String,
        /// When the device's certificate starts.
        not_before: String,
    },
    /// The order bytes could not be decoded.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A field of the order breaks a rule (empty reason, expiry before issue, ...).
    #[error("invalid wipe order: {0}")]
    Invalid(String),
}

/// A role or compartment name could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum NameError {
    /// The text is not one of the role names.
    #[error("unknown role {got:?}; valid roles are field, supervisor, liaison, relay")]
    UnknownRole {
        /// The text that was given (shortened when long).
        got: String,
    },
    /// The text is not a valid compartment name.
    #[error(
        "invalid compartment name {got:?}: {reason}; use 1 to 64 characters of a-z, 0-9, '.', '_' and '-', starting with a letter or digit"
    )]
    BadCompartment {
        /// The text that was given (shortened when long).
        got: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
}

/// The start of `text`, for echoing untrusted input in an error message.
pub(crate) fn excerpt(text: &str) -> String {
    const MAX_CHARS: usize = 40;
    let mut out: String = text.chars().take(MAX_CHARS).collect();
    if text.chars().nth(MAX_CHARS).is_some() {
        out.push('…');
    }
    out
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
    /// A text form (such as a certificate file) could not be parsed.
    #[error("not a valid {what} text: {detail}")]
    BadText {
        /// What was being parsed.
        what: &'static str,
        /// What is wrong with it.
        detail: String,
    },
}
