//! Signed receipts: "relay R durably holds device D's log up to position N,
//! at time T". A device keeps them to answer "am I synced?"; headquarters
//! keeps them as a chain of custody across tiers.

use fieldsync_identity::{
    DecodeError, DeviceId, Encoded, PublicKey, Record, Signed, Timestamp, Verified, decode_signed,
    encode_signed,
};
use serde::{Deserialize, Serialize};

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
