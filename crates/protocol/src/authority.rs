//! Who may do what: certificates checked against the headquarters root and
//! the revocation list, and each change authorized before it is stored.

use std::collections::BTreeMap;

use fieldsync_case::{ChangePayload, Genesis, VerifiedChange};
use fieldsync_identity::{
    ActorBinding, Compartment, DeviceCertificate, DeviceId, PublicKey, RevocationList, Timestamp,
};

use crate::error::SessionError;

/// The trust anchor and the current revocation list.
#[derive(Debug, Clone)]
pub struct Authority {
    hq: PublicKey,
    revocations: Option<RevocationList>,
}

impl Authority {
    /// Trusts certificates issued by `hq`.
    pub fn new(hq: PublicKey, revocations: Option<RevocationList>) -> Self {
        Self { hq, revocations }
    }

    /// The headquarters key.
    pub fn hq(&self) -> &PublicKey {
        &self.hq
    }

    /// The current revocation list.
    pub fn revocations(&self) -> Option<&RevocationList> {
        self.revocations.as_ref()
    }

    /// Sequence number of the current revocation list (0: none).
    pub fn revocations_seq(&self) -> u64 {
        self.revocations
            .as_ref()
            .map_or(0, RevocationList::sequence)
    }

    /// Adopts `list` if it is newer than the current one; returns whether it was.
    pub fn adopt(&mut self, list: RevocationList) -> bool {
        let newer = self
            .revocations
            .as_ref()
            .is_none_or(|cur| list.supersedes(cur));
        if newer {
            self.revocations = Some(list);
        }
        newer
    }

    /// Parses a certificate and checks issuer, validity at `now` and revocation.
    pub fn check_certificate(
        &self,
        bytes: &[u8],
        now: Timestamp,
    ) -> Result<DeviceCertificate, SessionError> {
        let cert = DeviceCertificate::from_bytes(bytes, &self.hq)
            .map_err(|e| SessionError::Certificate(e.to_string()))?;
        self.check_standing(&cert, now)?;
        Ok(cert)
    }

    /// Checks validity at `now` and revocation of a parsed certificate.
    pub fn check_standing(
        &self,
        cert: &DeviceCertificate,
        now: Timestamp,
    ) -> Result<(), SessionError> {
        match &self.revocations {
            Some(list) => cert.check(now, list),
            None => cert.check_valid_at(now),
        }
        .map_err(|e| SessionError::Certificate(e.to_string()))
    }

    /// Authorizes a verified change of the case `genesis` by its author's
    /// certificate. `Err` carries the reason it goes to quarantine.
    pub fn authorize(
        &self,
        genesis: &Genesis,
        change: &VerifiedChange,
        certs: &BTreeMap<DeviceId, DeviceCertificate>,
    ) -> Result<(), String> {
        let author = change.device();
        let cert = certs
            .get(&author)
            .ok_or_else(|| format!("no certificate is known for device {}", author.short()))?;
        let p: &ChangePayload = change.payload();
        let role = cert.role();
        if !role.can_author_changes() {
            return Err(format!(
                "device {} has role {role}, which may not write",
                author.short()
            ));
        }
        let compartment =
            Compartment::new(&genesis.compartment).map_err(|e| format!("case compartment: {e}"))?;
        if !cert.can_write(&compartment) {
            return Err(format!(
                "device {} may not write compartment {compartment}",
                author.short()
            ));
        }
        // Validity at the time the change says it was made (offline devices
        // deliver days later); revocation is judged by the revocation point.
        let made = Timestamp::from_millis(p.change().timestamp().saturating_mul(1000));
        let body = cert.body();
        if made < body.not_before || made > body.not_after {
            return Err(format!(
                "change made at {made}, outside certificate validity ({} to {})",
                body.not_before, body.not_after
            ));
        }
        if let Some(list) = &self.revocations {
            let incarnation = p.actor().map_or(0, |a: ActorBinding| a.incarnation);
            // The same reason a node gives when it withdraws a change it
            // stored before it learned of the revocation.
            if let Some(reason) = list
                .change_status(&author, incarnation, p.counter())
                .quarantine_reason(&author)
            {
                return Err(reason);
            }
        }
        Ok(())
    }

    /// Whether `cert` may read the case of `genesis`.
    pub fn may_read(cert: &DeviceCertificate, genesis: &Genesis) -> bool {
        Self::may_read_compartment(cert, &genesis.compartment)
    }

    /// Whether `cert` may read the cases of `compartment`.
    pub fn may_read_compartment(cert: &DeviceCertificate, compartment: &str) -> bool {
        Compartment::new(compartment).is_ok_and(|c| cert.can_read(&c))
    }
}
