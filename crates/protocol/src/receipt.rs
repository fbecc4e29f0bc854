//! Signed receipts: "relay R durably holds device D's log up to position N,
//! at time T". A device keeps them to answer "am I synced?"; headquarters
//! keeps them as a chain of custody across tiers.

use fieldsync_identity::{
    DecodeError, DeviceCertificate, DeviceId, Encoded, PublicKey, Record, Role, Signed, Timestamp,
    Verified, decode_signed, encode_signed,
};
use serde::{Deserialize, Serialize};

use crate::authority::Authority;

/// Receipt format version.
pub const RECEIPT_VERSION: u8 = 1;

/// What a relay signs when it acknowledges a peer's log.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ReceiptBody {
    /// Format version ([`RECEIPT_VERSION`]).
    pub version: u8,
    /// The relay that holds the changes (the signer).
    pub relay: PublicKey,
    /// The node whose log it holds.
    pub device: DeviceId,
    /// That node's log epoch.
    pub epoch: [u8; 16],
    /// Position in that log through which every change the relay may read is held durably.
    pub through: u64,
    /// The relay's time of the durable commit.
    pub at: Timestamp,
}

impl Record for ReceiptBody {
    const DOMAIN: &'static [u8] = b"fieldsync/receipt/v1";
    const WHAT: &'static str = "receipt";
    const MAX_LEN: usize = 512;

    fn check_signer(&self, signer: &PublicKey) -> Result<(), String> {
        if *signer == self.relay {
            Ok(())
        } else {
            Err("the receipt names another relay".into())
        }
    }
}

/// A verified receipt.
pub type Receipt = Verified<Encoded<ReceiptBody>>;

/// Encodes a signed receipt for the wire and the store.
pub fn encode_receipt(receipt: &Signed<Encoded<ReceiptBody>>) -> Vec<u8> {
    encode_signed(receipt)
}

/// Decodes and verifies a receipt's signature (the caller checks what it says).
pub fn verify_receipt(bytes: &[u8]) -> Result<Receipt, ReceiptError> {
    let signed = decode_signed::<ReceiptBody>(bytes).map_err(ReceiptError::Decode)?;
    let verified = signed
        .verify()
        .map_err(|e| ReceiptError::BadSignature(e.to_string()))?;
    if verified.payload().value().version != RECEIPT_VERSION {
        return Err(ReceiptError::Decode(DecodeError::UnsupportedVersion {
            what: "receipt",
            version: verified.payload().value().version,
        }));
    }
    Ok(verified)
}

/// A receipt could not be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiptError {
    /// It does not decode.
    #[error("malformed receipt: {0}")]
    Decode(DecodeError),
    /// Its signature does not verify.
    #[error("receipt signature does not verify: {0}")]
    BadSignature(String),
    /// It is signed by another relay than the peer, or for another log.
    #[error("receipt does not match this session: {0}")]
    Mismatch(String),
}

/// Relayed receipt format version.
pub const RELAYED_RECEIPT_VERSION: u8 = 1;

/// What an office relay signs to carry a receipt of the relay above it
/// (headquarters) down to a peer: "`upstream_receipt` (headquarters holds
/// my log through P) covers your log through `through`". The upstream
/// receipt and certificate travel whole, so the peer checks headquarters'
/// own signature; the mapping from the peer's log to the office's is the
/// office's word, signed, so a false one is attributable.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RelayedReceiptBody {
    /// Format version ([`RELAYED_RECEIPT_VERSION`]).
    pub version: u8,
    /// The relay that carries the receipt down (the signer).
    pub relay: PublicKey,
    /// The node whose log the statement is about.
    pub device: DeviceId,
    /// That node's log epoch.
    pub epoch: [u8; 16],
    /// Position in that log through which every change the carrying relay
    /// stored in its own log is covered by the upstream receipt.
    pub through: u64,
    /// The upstream relay's certificate (issued by headquarters); empty when
    /// an earlier relayed receipt of the same session carried it.
    pub upstream_certificate: Vec<u8>,
    /// The upstream relay's signed receipt for the carrying relay's log.
    pub upstream_receipt: Vec<u8>,
}

impl Record for RelayedReceiptBody {
    const DOMAIN: &'static [u8] = b"fieldsync/relayed-receipt/v1";
    const WHAT: &'static str = "relayed receipt";
    const MAX_LEN: usize = 4096;

    fn check_signer(&self, signer: &PublicKey) -> Result<(), String> {
        if *signer == self.relay {
            Ok(())
        } else {
            Err("the relayed receipt names another relay".into())
        }
    }
}

/// A relayed receipt that checked out: the upstream relay's certificate and
/// what its receipt, through the carrying relay, says of this node's log.
#[derive(Debug, Clone)]
pub struct RelayedReceipt {
    /// The relay that holds this node's changes (headquarters, usually).
    pub upstream: DeviceCertificate,
    /// This node's log position covered.
    pub through: u64,
    /// The upstream relay's time of its durable commit.
    pub at: Timestamp,
}

/// Encodes a signed relayed receipt.
pub fn encode_relayed_receipt(r: &Signed<Encoded<RelayedReceiptBody>>) -> Vec<u8> {
    encode_signed(r)
}

/// Verifies a relayed receipt that `carrier` (the session's peer, a relay)
/// sent this node (`me`, log epoch `epoch`): the carrier's signature, the
/// upstream relay's certificate (issued by headquarters, a relay, in good
/// standing at `now`; when the receipt does not carry it, `known` gives the
/// one this node holds for that relay), its signature on the inner receipt,
/// and that the inner receipt is about the carrier's log and the outer one
/// about ours.
pub fn verify_relayed_receipt(
    bytes: &[u8],
    authority: &Authority,
    carrier: &DeviceCertificate,
    me: DeviceId,
    epoch: [u8; 16],
    now: Timestamp,
    known: impl FnOnce(&DeviceId) -> Option<Vec<u8>>,
) -> Result<RelayedReceipt, ReceiptError> {
    let signed = decode_signed::<RelayedReceiptBody>(bytes).map_err(ReceiptError::Decode)?;
    let verified = signed
        .verify()
        .map_err(|e| ReceiptError::BadSignature(e.to_string()))?;
    let body = verified.payload().value();
    if body.version != RELAYED_RECEIPT_VERSION {
        return Err(ReceiptError::Decode(DecodeError::UnsupportedVersion {
            what: "relayed receipt",
            version: body.version,
        }));
    }
    if body.relay != *carrier.device().public_key() || body.device != me || body.epoch != epoch {
        return Err(ReceiptError::Mismatch(format!(
            "relayed receipt for {} signed by {}",
            body.device.short(),
            DeviceId::from_public_key(body.relay).short()
        )));
    }
    let inner = verify_receipt(&body.upstream_receipt)?;
    let inner = inner.payload().value();
    let cert_bytes = if body.upstream_certificate.is_empty() {
        let relay = DeviceId::from_public_key(inner.relay);
        known(&relay).ok_or_else(|| {
            ReceiptError::Mismatch(format!(
                "relayed receipt of relay {} without its certificate",
                relay.short()
            ))
        })?
    } else {
        body.upstream_certificate.clone()
    };
    let upstream = authority
        .check_certificate(&cert_bytes, now)
        .map_err(|e| ReceiptError::Mismatch(format!("upstream certificate: {e}")))?;
    if upstream.role() != Role::Relay {
        return Err(ReceiptError::Mismatch(format!(
            "upstream {} is not a relay",
            upstream.device().short()
        )));
    }
    if inner.relay != *upstream.device().public_key() || inner.device != carrier.device() {
        return Err(ReceiptError::Mismatch(format!(
            "upstream receipt for {} signed by {}",
            inner.device.short(),
            DeviceId::from_public_key(inner.relay).short()
        )));
    }
    Ok(RelayedReceipt {
        upstream,
        through: body.through,
        at: inner.at,
    })
}
