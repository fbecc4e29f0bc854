//! Hand-carried bundles: signed changes on a USB stick.
//!
//! A bundle file is `FSBUNDLE` followed by a signed record (see
//! [`fieldsync_identity::encode_signed`]) whose body lists cases, each with
//! its signed genesis and its signed changes in causal order. The exporting
//! device signs the whole body, so one altered byte anywhere is caught before
//! anything is decoded further; every change also carries its author's
//! signature, verified on import whoever exported the bundle.

use fieldsync_identity::{PublicKey, Record, Timestamp};
use serde::{Deserialize, Serialize};

/// The first bytes of every bundle file.
pub const BUNDLE_MAGIC: &[u8; 8] = b"FSBUNDLE";

/// Largest bundle accepted, in bytes.
pub const MAX_BUNDLE_LEN: usize = 512 << 20;

/// Bundle format version written by this build.
pub const BUNDLE_VERSION: u8 = 1;

/// The signed body of a bundle.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct BundleBody {
    /// Format version ([`BUNDLE_VERSION`]).
    pub version: u8,
    /// The exporting device (must be the signer).
    pub exporter: PublicKey,
    /// When it was exported.
    pub created_at: Timestamp,
    /// The cases it carries.
    pub cases: Vec<BundleCase>,
}

/// One case in a bundle.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct BundleCase {
    /// The signed genesis envelope.
    pub genesis: Vec<u8>,
    /// Signed change envelopes, dependencies first.
    pub changes: Vec<Vec<u8>>,
}

impl Record for BundleBody {
    const DOMAIN: &'static [u8] = b"fieldsync/bundle/v1";
    const WHAT: &'static str = "bundle";
    const MAX_LEN: usize = MAX_BUNDLE_LEN;

    fn check_signer(&self, signer: &PublicKey) -> Result<(), String> {
        if *signer == self.exporter {
            Ok(())
        } else {
            Err("the bundle names another exporter".to_owned())
        }
    }
}
