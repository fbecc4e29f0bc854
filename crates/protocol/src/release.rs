//! Releasing a quarantined change: a record signed by headquarters or by a
//! supervisor who may write the case's compartment, naming the one change it
//! lets through. The release travels with the change, so every node that
//! would quarantine it on its own checks the same signature and applies it
//! instead: a release is as verifiable as the change itself.

use std::collections::BTreeMap;

use fieldsync_case::{ChangeHash, Genesis, VerifiedChange, VerifiedGenesis, decode_change};
use fieldsync_identity::{
    CaseId, Compartment, DecodeError, DeviceCertificate, DeviceId, Encoded, PublicKey, Record,
    Signed, Timestamp, Verified, decode_signed, encode_signed, verify_batch,
};
use fieldsync_store::{Ingest, IngestReport, PeerRecord, QuarantineEntry, Store};
use serde::{Deserialize, Serialize};

use crate::authority::Authority;
use crate::error::SessionError;

/// Release format version.
pub const RELEASE_VERSION: u8 = 1;

/// Longest reason a release may give, in bytes.
pub const MAX_RELEASE_REASON: usize = 1024;

/// What a supervisor (or headquarters) signs to let one quarantined change through.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ReleaseBody {
    /// Format version ([`RELEASE_VERSION`]).
    pub version: u8,
    /// The case of the change.
    pub case: CaseId,
    /// The Automerge hash of the change released.
    pub change: [u8; 32],
    /// The device that signed the change.
    pub author: DeviceId,
    /// Who releases it: the headquarters key or a supervisor's device key (the signer).
    pub released_by: PublicKey,
    /// Why, in the releaser's words.
    pub reason: String,
    /// When, by the releaser's clock.
    pub at: Timestamp,
}

impl Record for ReleaseBody {
    const DOMAIN: &'static [u8] = b"fieldsync/release/v1";
    const WHAT: &'static str = "quarantine release";
    const MAX_LEN: usize = 256 + MAX_RELEASE_REASON;

    fn check_signer(&self, signer: &PublicKey) -> Result<(), String> {
        if *signer != self.released_by {
            return Err("the release names another releaser".into());
        }
        if self.reason.len() > MAX_RELEASE_REASON {
            return Err(format!(
                "the reason is {} bytes, over {MAX_RELEASE_REASON}",
                self.reason.len()
            ));
        }
        Ok(())
    }
}

/// A release whose signature verified (who may release is [`Authority::check_release`]'s question).
pub type Release = Verified<Encoded<ReleaseBody>>;

/// The body that releases the quarantined `entry`, for `released_by` to sign.
///
/// Fails with [`SessionError::Protocol`] when the entry's change does not decode.
pub fn release_body(
    entry: &QuarantineEntry,
    released_by: PublicKey,
    reason: &str,
    now: Timestamp,
) -> Result<Encoded<ReleaseBody>, SessionError> {
    let change = decode_change(&entry.change)
        .map_err(|e| SessionError::Protocol(format!("quarantined change: {e}")))?;
    Encoded::new(ReleaseBody {
        version: RELEASE_VERSION,
        case: entry.case,
        change: change.payload().hash().0,
        author: entry.signer,
        released_by,
        reason: reason.to_owned(),
        at: now,
    })
    .map_err(|e| SessionError::Protocol(format!("release: {e}")))
}

/// Encodes a signed release for the wire and the store.
pub fn encode_release(release: &Signed<Encoded<ReleaseBody>>) -> Vec<u8> {
    encode_signed(release)
}

/// Decodes a release and verifies its signature.
pub fn verify_release(bytes: &[u8]) -> Result<Release, SessionError> {
    let signed = decode_signed::<ReleaseBody>(bytes)
        .map_err(|e| SessionError::Forgery(format!("quarantine release: {e}")))?;
    let verified = signed
        .verify()
        .map_err(|e| SessionError::Forgery(format!("quarantine release: {e}")))?;
    let version = verified.payload().value().version;
    if version != RELEASE_VERSION {
        return Err(SessionError::Forgery(format!(
            "quarantine release: {}",
            DecodeError::UnsupportedVersion {
                what: "quarantine release",
                version,
            }
        )));
    }
    Ok(verified)
}

impl Authority {
    /// Whether `release` may let `change` of the case `genesis` through: it
    /// names that change, and its signer is headquarters, or a supervisor
    /// certified (by a certificate in `certs`, valid when the release was
    /// made and not revoked since before it) to write the case's compartment.
    /// `Err` says why not.
    pub fn check_release(
        &self,
        release: &ReleaseBody,
        genesis: &Genesis,
        change: &VerifiedChange,
        certs: &BTreeMap<DeviceId, DeviceCertificate>,
    ) -> Result<(), String> {
        if release.case != genesis.case
            || release.change != change.payload().hash().0
            || release.author != change.device()
        {
            return Err("the release names another change".into());
        }
        if release.released_by == *self.hq() {
            return Ok(());
        }
        let by = DeviceId::from_public_key(release.released_by);
        let cert = certs
            .get(&by)
            .ok_or_else(|| format!("no certificate is known for releaser {}", by.short()))?;
        if !cert.role().can_release_quarantine() {
            return Err(format!(
                "releaser {} has role {}, which may not release quarantine",
                by.short(),
                cert.role()
            ));
        }
        let compartment =
            Compartment::new(&genesis.compartment).map_err(|e| format!("case compartment: {e}"))?;
        if !cert.can_write(&compartment) {
            return Err(format!(
                "releaser {} may not write compartment {compartment}",
                by.short()
            ));
        }
        cert.check_valid_at(release.at)
            .map_err(|e| format!("releaser certificate: {e}"))?;
        if let Some(entry) = self.revocations().and_then(|l| l.is_revoked(&by))
            && entry.revoked_at <= release.at
        {
            return Err(format!(
                "releaser {} was revoked on {} ({})",
                by.short(),
                entry.revoked_at,
                entry.reason
            ));
        }
        Ok(())
    }
}

/// Releases quarantine entry `id` of `store` with the signed `release`: checks
/// the release against the entry's change, then stores the change with the
/// release and removes the entry, in one durable transaction. From then on
/// the change is forwarded with its release, and every node that checks the
/// release applies it.
///
/// `certs` holds the certificates known to the caller (the releaser's among
/// them when a supervisor signed). A change whose dependencies are missing
/// waits in pending, as any other.
pub fn apply_release(
    store: &Store,
    authority: &Authority,
    id: u64,
    release: &[u8],
    certs: &BTreeMap<DeviceId, DeviceCertificate>,
    now: Timestamp,
) -> Result<IngestReport, SessionError> {
    let entry = store.quarantine_entry(id)?;
    let verified = verify_release(release)?;
    let genesis = decode_signed::<Genesis>(&entry.genesis)
        .map_err(|e| SessionError::Protocol(format!("quarantined genesis: {e}")))
        .and_then(|s| {
            fieldsync_case::verify_genesis(s)
                .map_err(|e| SessionError::Protocol(format!("quarantined genesis: {e}")))
        })?;
    let change = decode_change(&entry.change)
        .map_err(|e| SessionError::Protocol(format!("quarantined change: {e}")))?;
    let change = verify_batch(vec![change])
        .map_err(|e| SessionError::Protocol(format!("quarantined change: {}", e.error)))?
        .pop()
        .ok_or_else(|| SessionError::Protocol("quarantined change vanished".into()))?;
    authority
        .check_release(
            verified.payload().value(),
            genesis.payload().value(),
            &change,
            certs,
        )
        .map_err(SessionError::NotAllowed)?;
    let body = verified.payload().value();
    let mut ingest = released_ingest(genesis, change, release.to_vec());
    // The releaser's certificate is kept with the release: a stored release
    // is never without the certificate that lets others check it.
    if body.released_by != *authority.hq() {
        let by = DeviceId::from_public_key(body.released_by);
        let known = store.peers()?.iter().any(|(d, _)| *d == by);
        if let Some(cert) = certs.get(&by).filter(|_| !known) {
            ingest.peers.push((
                by,
                PeerRecord {
                    certificate: cert.to_bytes(),
                    last_contact: now,
                    carried_by: None,
                },
            ));
        }
    }
    Ok(store.ingest(ingest, now)?)
}

/// The ingest that stores one released change with its release (which
/// also removes the change from the quarantine).
fn released_ingest(genesis: VerifiedGenesis, change: VerifiedChange, release: Vec<u8>) -> Ingest {
    let case = change.payload().case();
    let hash: ChangeHash = change.payload().hash();
    Ingest {
        cases: vec![(genesis, vec![change])],
        releases: vec![(case, hash, release)],
        ..Ingest::default()
    }
}
