//! Headquarters-signed device certificates: who a device is, its role, which
//! compartments it may read and write, and for how long.
//!
//! A [`DeviceCertificate`] only exists verified: it is made by
//! [`HqRoot::issue`] or by [`DeviceCertificate::from_bytes`], which checks
//! the signature, the issuer and the body's rules. Time and revocation are
//! checked separately, by [`DeviceCertificate::check`].

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::access::{Compartment, Role};
use crate::error::{CertificateError, DecodeError, VerifyError};
use crate::ids::{DeviceId, Timestamp};
use crate::keys::{PUBLIC_KEY_LEN, PublicKey, SIGNATURE_LEN, SecretKey};
use crate::record::{Encoded, Record, decode_signed, encode_signed};
use crate::revocation::RevocationList;
use crate::signed::{Signed, Verified, sign};

/// The newest [`CertificateBody::version`] this build writes and reads.
/// Version 2 adds the offline lease ([`DeviceCertificate::offline_lease_days`]).
pub const CERTIFICATE_VERSION: u8 = 2;
/// The oldest [`CertificateBody::version`] this build reads (and writes, for
/// a certificate without a lease, so that older builds read it too).
/// A version-1 certificate has no offline lease.
pub const MIN_CERTIFICATE_VERSION: u8 = 1;
/// The first version that can carry an offline lease.
const LEASE_SINCE: u8 = 2;

/// Longest `name` or `office`, in characters.
const LABEL_MAX: usize = 256;
/// First line of the text form.
const PEM_BEGIN: &str = "-----BEGIN FIELDSYNC CERTIFICATE-----";
/// Last line of the text form.
const PEM_END: &str = "-----END FIELDSYNC CERTIFICATE-----";
/// Bytes per line of the text form (64 hex digits).
const PEM_LINE_BYTES: usize = 32;

/// Short human form of a key, as for a device.
pub(crate) fn short(key: &PublicKey) -> String {
    DeviceId::from_public_key(*key).short()
}

/// What headquarters certifies about a device. Build one and pass it to
/// [`HqRoot::issue`], which sorts and deduplicates `read` and `write` and
/// checks the rules documented on each field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateBody {
    /// Format version: [`MIN_CERTIFICATE_VERSION`] to [`CERTIFICATE_VERSION`]
    /// (an offline lease needs version 2).
    pub version: u8,
    /// Headquarters' serial number of this certificate.
    pub serial: u64,
    /// The headquarters key that signs it.
    pub issuer: PublicKey,
    /// The device (its key) being certified.
    pub device: DeviceId,
    /// Who holds the device: 1 to 256 characters, no control characters.
    pub name: String,
    /// The office it belongs to: 1 to 256 characters, no control characters.
    pub office: String,
    /// Its role.
    pub role: Role,
    /// Compartments it may read (sorted, no duplicates).
    pub read: Vec<Compartment>,
    /// Compartments it may write (sorted, no duplicates, each also in
    /// `read`; empty for a liaison).
    pub write: Vec<Compartment>,
    /// Start of validity (inclusive).
    pub not_before: Timestamp,
    /// End of validity (inclusive); later than `not_before`.
    pub not_after: Timestamp,
}

/// The signed content of a certificate: the body, and from version 2 on
/// the offline lease after it.
///
/// The encoding of a version-1 certificate is the body alone (postcard,
/// field by field), exactly as builds before version 2 wrote it, so their
/// signatures still verify; a version-2 certificate appends the lease
/// (`Option<u16>`). The version, the body's first field, says which.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CertificateRecord {
    body: CertificateBody,
    offline_lease_days: Option<u16>,
}

impl Serialize for CertificateRecord {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error as _, SerializeTuple as _};
        if self.body.version < LEASE_SINCE {
            if self.offline_lease_days.is_some() {
                return Err(S::Error::custom(
                    "a version-1 certificate cannot carry an offline lease",
                ));
            }
            return self.body.serialize(s);
        }
        let mut t = s.serialize_tuple(2)?;
        t.serialize_element(&self.body)?;
        t.serialize_element(&self.offline_lease_days)?;
        t.end()
    }
}

impl<'de> Deserialize<'de> for CertificateRecord {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = CertificateRecord;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a certificate body, then its lease from version 2 on")
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<CertificateRecord, A::Error> {
                use serde::de::Error as _;
                let body: CertificateBody = seq
                    .next_element()?
                    .ok_or_else(|| A::Error::invalid_length(0, &self))?;
                if body.version > CERTIFICATE_VERSION {
                    // What follows is unknown; `decode_record` names the version.
                    return Err(A::Error::custom("unsupported certificate version"));
                }
                let offline_lease_days = if body.version >= LEASE_SINCE {
                    seq.next_element()?
                        .ok_or_else(|| A::Error::invalid_length(1, &self))?
                } else {
                    None
                };
                Ok(CertificateRecord {
                    body,
                    offline_lease_days,
                })
            }
        }
        d.deserialize_tuple(2, Fields)
    }
}

/// Decodes a signed certificate record; a record of a version newer than
/// this build knows is [`DecodeError::UnsupportedVersion`].
fn decode_record(bytes: &[u8]) -> Result<Signed<Encoded<CertificateRecord>>, DecodeError> {
    decode_signed::<CertificateRecord>(bytes).map_err(|e| {
        // The record follows the envelope; the version is its first byte.
        let version = bytes.get(1 + PUBLIC_KEY_LEN + SIGNATURE_LEN).copied();
        match (e, version) {
            (DecodeError::Malformed { .. }, Some(v)) if v > CERTIFICATE_VERSION => {
                DecodeError::UnsupportedVersion {
                    what: CertificateRecord::WHAT,
                    version: v,
                }
            }
            (e, _) => e,
        }
    })
}

impl Record for CertificateRecord {
    const DOMAIN: &'static [u8] = b"fieldsync/certificate/v1";
    const WHAT: &'static str = "certificate";
    const MAX_LEN: usize = 16 * 1024;

    fn check_signer(&self, signer: &PublicKey) -> Result<(), String> {
        if *signer == self.body.issuer {
            Ok(())
        } else {
            Err(format!(
                "the certificate names issuer {}",
                short(&self.body.issuer)
            ))
        }
    }
}

impl CertificateRecord {
    /// Checks every rule of a certificate (not time, not revocation).
    fn validate(&self) -> Result<(), CertificateError> {
        self.body.validate()?;
        match self.offline_lease_days {
            Some(_) if self.body.version < LEASE_SINCE => Err(CertificateError::Invalid(
                "an offline lease needs a version-2 certificate".into(),
            )),
            Some(0) => Err(CertificateError::Invalid(
                "an offline lease is at least one day".into(),
            )),
            _ => Ok(()),
        }
    }
}

impl CertificateBody {
    /// Checks every rule of a body (not time, not revocation).
    fn validate(&self) -> Result<(), CertificateError> {
        let invalid = |msg: String| Err(CertificateError::Invalid(msg));
        if !(MIN_CERTIFICATE_VERSION..=CERTIFICATE_VERSION).contains(&self.version) {
            return Err(DecodeError::UnsupportedVersion {
                what: CertificateRecord::WHAT,
                version: self.version,
            }
            .into());
        }
        check_label("name", &self.name)?;
        check_label("office", &self.office)?;
        if !self.read.is_sorted_by(|a, b| a < b) || !self.write.is_sorted_by(|a, b| a < b) {
            return invalid("compartment lists are not sorted or contain duplicates".into());
        }
        if let Some(c) = self
            .write
            .iter()
            .find(|c| self.read.binary_search(c).is_err())
        {
            return invalid(format!(
                "write access to compartment {c} without read access; writing implies reading, add it to the read set"
            ));
        }
        if self.role == Role::Liaison && !self.write.is_empty() {
            return invalid("a liaison reads only; its write set must be empty".into());
        }
        if self.not_after <= self.not_before {
            return invalid(format!(
                "validity ends ({}) before it starts ({})",
                self.not_after, self.not_before
            ));
        }
        Ok(())
    }
}

/// Checks `name` or `office`.
fn check_label(field: &str, value: &str) -> Result<(), CertificateError> {
    let problem = if value.trim().is_empty() {
        "is empty"
    } else if value.chars().count() > LABEL_MAX {
        "is longer than 256 characters"
    } else if value.chars().any(char::is_control) {
        "contains control characters"
    } else {
        return Ok(());
    };
    Err(CertificateError::Invalid(format!("{field} {problem}")))
}

fn from_verify_error(e: VerifyError) -> CertificateError {
    match e {
        VerifyError::BadSignature { .. } => CertificateError::BadSignature,
        VerifyError::SignerMismatch { signer, reason } => {
            CertificateError::Invalid(format!("signed by {signer}, but {reason}"))
        }
    }
}

/// The headquarters root key: the one key that issues device certificates
/// and revocation lists. Its `Debug` prints only the public key.
#[derive(Clone)]
pub struct HqRoot {
    key: SecretKey,
}

impl HqRoot {
    /// Wraps the headquarters root secret key.
    pub fn from_secret(key: SecretKey) -> Self {
        Self { key }
    }

    /// The root public key, which every device and relay is configured with.
    pub fn public(&self) -> PublicKey {
        self.key.public()
    }

    pub(crate) fn secret(&self) -> &SecretKey {
        &self.key
    }

    /// Signs a record headquarters vouches for (a quarantine release, for
    /// one). Each record kind has its own signing domain, so a signature
    /// made here can never pass for a certificate or a revocation list.
    pub fn sign<T: crate::Signable>(&self, payload: T) -> Result<crate::Verified<T>, VerifyError> {
        sign(payload, &self.key)
    }

    /// Issues a certificate without an offline lease. Sorts and deduplicates
    /// the compartment lists, then checks the body's rules; `body.issuer`
    /// must be [`HqRoot::public`].
    pub fn issue(&self, body: CertificateBody) -> Result<DeviceCertificate, CertificateError> {
        self.issue_with_lease(body, None)
    }

    /// Issues a certificate as [`HqRoot::issue`] does, with an offline lease
    /// of `offline_lease_days` (1 or more; the body must be version 2): the
    /// device refuses to open case data after that many days without
    /// contact with a relay (see [`DeviceCertificate::offline_lease_days`]).
    pub fn issue_with_lease(
        &self,
        mut body: CertificateBody,
        offline_lease_days: Option<u16>,
    ) -> Result<DeviceCertificate, CertificateError> {
        if body.issuer != self.public() {
            return Err(CertificateError::Invalid(format!(
                "the body names issuer {}, but this headquarters key is {}; set issuer to HqRoot::public()",
                short(&body.issuer),
                short(&self.public())
            )));
        }
        for list in [&mut body.read, &mut body.write] {
            list.sort();
            list.dedup();
        }
        let record = CertificateRecord {
            body,
            offline_lease_days,
        };
        record.validate()?;
        let encoded = Encoded::new(record)?;
        let verified = sign(encoded, &self.key).map_err(from_verify_error)?;
        Ok(DeviceCertificate(std::sync::Arc::new(verified)))
    }
}

impl fmt::Debug for HqRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HqRoot({})", self.public())
    }
}

/// The office written into the headquarters relay's own certificate.
pub const HQ_OFFICE: &str = "headquarters";

/// A device certificate whose signature, issuer and rules have been checked.
/// Cheap to clone (shared): sessions and maps hold many copies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceCertificate(std::sync::Arc<Verified<Encoded<CertificateRecord>>>);

impl DeviceCertificate {
    /// Decodes and verifies a certificate issued by `hq`: the signature, the
    /// issuer and the body's rules. It does not check time or revocation;
    /// see [`DeviceCertificate::check`].
    pub fn from_bytes(bytes: &[u8], hq: &PublicKey) -> Result<Self, CertificateError> {
        let signed = decode_record(bytes)?;
        if signed.signer() != hq {
            return Err(CertificateError::ForeignIssuer {
                issuer: short(signed.signer()),
            });
        }
        let verified = signed.verify().map_err(from_verify_error)?;
        verified.payload().value().validate()?;
        Ok(Self(std::sync::Arc::new(verified)))
    }

    /// The exact signed bytes, for storing and sending.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode_signed(self.0.as_signed())
    }

    /// The text form for handing a certificate to a device: hex, 64 digits
    /// a line, between `BEGIN` and `END FIELDSYNC CERTIFICATE` lines.
    pub fn to_pem_like(&self) -> String {
        let bytes = self.to_bytes();
        let mut out = String::with_capacity(bytes.len() * 2 + bytes.len() / 16 + 80);
        out.push_str(PEM_BEGIN);
        out.push('\n');
        for chunk in bytes.chunks(PEM_LINE_BYTES) {
            out.push_str(&hex::encode(chunk));
            out.push('\n');
        }
        out.push_str(PEM_END);
        out.push('\n');
        out
    }

    /// Parses the text form written by [`DeviceCertificate::to_pem_like`]
    /// (surrounding whitespace, indentation and CRLF line ends are
    /// accepted), then verifies as [`DeviceCertificate::from_bytes`].
    pub fn from_pem_like(text: &str, hq: &PublicKey) -> Result<Self, CertificateError> {
        Self::from_bytes(&Self::pem_like_bytes(text)?, hq)
    }

    /// Parses the text form and verifies it against the issuer it names:
    /// for a device being enrolled, which learns the headquarters key from
    /// the certificate headquarters handed it (compare it with the key
    /// `fieldsync-server init` printed). Returns the certificate; its
    /// [`issuer`](DeviceCertificate::issuer) is the headquarters key.
    pub fn from_pem_like_trusting_issuer(text: &str) -> Result<Self, CertificateError> {
        let bytes = Self::pem_like_bytes(text)?;
        let signed = decode_record(&bytes)?;
        let issuer = signed.payload().value().body.issuer;
        Self::from_bytes(&bytes, &issuer)
    }

    fn pem_like_bytes(text: &str) -> Result<Vec<u8>, CertificateError> {
        let bad = |detail: String| DecodeError::BadText {
            what: "certificate",
            detail,
        };
        let inner = text
            .trim()
            .strip_prefix(PEM_BEGIN)
            .ok_or_else(|| bad(format!("it does not start with the line {PEM_BEGIN}")))?
            .strip_suffix(PEM_END)
            .ok_or_else(|| {
                bad(format!(
                    "it does not end with the line {PEM_END}; was it cut short?"
                ))
            })?;
        let mut digits = String::with_capacity(inner.len());
        for (n, line) in inner.lines().enumerate() {
            let line = line.trim();
            if let Some(c) = line.chars().find(|c| !c.is_ascii_hexdigit()) {
                let detail =
                    format!("line {n} after BEGIN contains {c:?}, which is not a hex digit");
                return Err(bad(detail).into());
            }
            digits.push_str(line);
        }
        if digits.is_empty() {
            return Err(bad("there is nothing between the BEGIN and END lines".into()).into());
        }
        Ok(hex::decode(&digits)
            .map_err(|_| bad("odd number of hex digits; a digit is missing".into()))?)
    }

    /// Checks that the certificate is valid at `now` (validity bounds are inclusive).
    pub fn check_valid_at(&self, now: Timestamp) -> Result<(), CertificateError> {
        let body = self.body();
        if now < body.not_before {
            return Err(CertificateError::NotYetValid {
                device: body.device.short(),
                not_before: body.not_before.to_string(),
            });
        }
        if now > body.not_after {
            return Err(CertificateError::Expired {
                device: body.device.short(),
                not_after: body.not_after.to_string(),
            });
        }
        Ok(())
    }

    /// Checks that the certificate may be used at `now`: the device is not
    /// on `revocations` (which must come from the same headquarters), and
    /// `now` is within its validity.
    pub fn check(
        &self,
        now: Timestamp,
        revocations: &RevocationList,
    ) -> Result<(), CertificateError> {
        if revocations.issuer() != self.issuer() {
            return Err(CertificateError::ForeignRevocationList {
                issuer: short(revocations.issuer()),
                expected: short(self.issuer()),
            });
        }
        if let Some(entry) = revocations.is_revoked(&self.device()) {
            return Err(CertificateError::Revoked {
                device: self.device().short(),
                since: entry.revoked_at.to_string(),
                reason: entry.reason.clone(),
            });
        }
        self.check_valid_at(now)
    }

    /// The verified body: compartments, validity and all other fields.
    pub fn body(&self) -> &CertificateBody {
        &self.0.payload().value().body
    }

    /// The offline lease, in days (version-2 certificates only; `None`:
    /// no lease). A device whose certificate carries one keeps case data
    /// closed once that many days have passed without contact with a relay,
    /// until it syncs again.
    pub fn offline_lease_days(&self) -> Option<u16> {
        self.0.payload().value().offline_lease_days
    }

    /// The certified device.
    pub fn device(&self) -> DeviceId {
        self.body().device
    }

    /// The headquarters key that issued it.
    pub fn issuer(&self) -> &PublicKey {
        &self.body().issuer
    }

    /// Headquarters' serial number.
    pub fn serial(&self) -> u64 {
        self.body().serial
    }

    /// Who holds the device.
    pub fn name(&self) -> &str {
        &self.body().name
    }

    /// The office the device belongs to.
    pub fn office(&self) -> &str {
        &self.body().office
    }

    /// The device's role.
    pub fn role(&self) -> Role {
        self.body().role
    }

    /// Whether this is the headquarters relay's certificate: a relay
    /// certified for the office [`HQ_OFFICE`]. Headquarters' receipts are
    /// the ones a device counts as "safe at headquarters".
    pub fn is_headquarters_relay(&self) -> bool {
        self.role() == Role::Relay && self.office() == HQ_OFFICE
    }

    /// Whether the device may read `compartment`.
    pub fn can_read(&self, compartment: &Compartment) -> bool {
        self.body().read.binary_search(compartment).is_ok()
    }

    /// Whether the device may author changes in `compartment`: its role
    /// authors changes and the compartment is in its write set.
    pub fn can_write(&self, compartment: &Compartment) -> bool {
        self.role().can_author_changes() && self.body().write.binary_search(compartment).is_ok()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// 2026-11-24T06:00:00Z, a fixed "now".
    pub(crate) const T0: Timestamp = Timestamp::from_millis(1_795_500_000_000);

    pub(crate) fn hq() -> HqRoot {
        HqRoot::from_secret(SecretKey::from_seed(&[0xA5; 32]))
    }

    pub(crate) fn other_hq() -> HqRoot {
        HqRoot::from_secret(SecretKey::from_seed(&[0x5A; 32]))
    }

    /// `bytes` behind a well-formed envelope, so that the body decoder sees them.
    pub(crate) fn behind_envelope(hq: &PublicKey, bytes: &[u8]) -> Vec<u8> {
        [&[1][..], hq.as_bytes(), &[0; 64], bytes].concat()
    }

    pub(crate) fn device(n: u8) -> DeviceId {
        DeviceId::from_public_key(SecretKey::from_seed(&[n; 32]).public())
    }

    fn c(name: &str) -> Compartment {
        name.parse().unwrap()
    }

    pub(crate) fn body(hq: &HqRoot, role: Role) -> CertificateBody {
        CertificateBody {
            version: CERTIFICATE_VERSION,
            serial: 7,
            issuer: hq.public(),
            device: device(1),
            name: "R. Alvarez".into(),
            office: "Rome attaché".into(),
            role,
            read: vec![
                c("visa-screening"),
                c("cultural-property"),
                c("visa-screening"),
            ],
            write: vec![c("visa-screening")],
            not_before: T0,
            not_after: T0.plus_days(365),
        }
    }

    fn invalid(result: Result<DeviceCertificate, CertificateError>) -> String {
        match result {
            Err(CertificateError::Invalid(msg)) => msg,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    /// Signs a body as HQ without `issue`'s normalizing and checks.
    fn sign_raw(hq: &HqRoot, body: CertificateBody) -> Vec<u8> {
        sign_record(hq, body, None)
    }

    /// Signs a body and lease as HQ without `issue`'s checks.
    fn sign_record(hq: &HqRoot, body: CertificateBody, lease: Option<u16>) -> Vec<u8> {
        let record = CertificateRecord {
            body,
            offline_lease_days: lease,
        };
        let signed = sign(Encoded::new(record).unwrap(), hq.secret()).unwrap();
        encode_signed(signed.as_signed())
    }

    #[test]
    fn issue_round_trip() {
        let hq = hq();
        let cert = hq.issue(body(&hq, Role::Field)).unwrap();
        assert_eq!(
            cert.body().read,
            [c("cultural-property"), c("visa-screening")]
        );
        assert_eq!(
            (cert.device(), cert.serial(), cert.role()),
            (device(1), 7, Role::Field)
        );
        assert_eq!((cert.name(), cert.office()), ("R. Alvarez", "Rome attaché"));
        assert!(cert.can_read(&c("cultural-property")) && !cert.can_write(&c("cultural-property")));
        assert!(cert.can_write(&c("visa-screening")) && !cert.can_read(&c("finance")));
        let back = DeviceCertificate::from_bytes(&cert.to_bytes(), &hq.public()).unwrap();
        assert_eq!(back, cert);
        assert_eq!(back.to_bytes(), cert.to_bytes());
        // A relay may carry a write set, but it authors nothing.
        let relay = hq.issue(body(&hq, Role::Relay)).unwrap();
        assert!(!relay.can_write(&c("visa-screening")));
        assert!(format!("{hq:?}").starts_with("HqRoot("));
    }

    #[test]
    fn pem_like_round_trip_and_errors() {
        let hq = hq();
        let cert = hq.issue(body(&hq, Role::Supervisor)).unwrap();
        let text = cert.to_pem_like();
        assert!(text.starts_with("-----BEGIN FIELDSYNC CERTIFICATE-----\n"));
        assert!(text.ends_with("-----END FIELDSYNC CERTIFICATE-----\n"));
        assert!(text.lines().all(|l| l.len() <= 64));
        assert_eq!(
            DeviceCertificate::from_pem_like(&text, &hq.public()),
            Ok(cert.clone())
        );
        // Enrollment: the device learns the headquarters key from the file;
        // a signature that does not verify under the named issuer is refused.
        let trusted = DeviceCertificate::from_pem_like_trusting_issuer(&text).unwrap();
        assert_eq!(trusted.issuer(), &hq.public());
        let mut forged = text.clone().into_bytes();
        let at = forged.len() - 40; // inside the signature's hex digits
        forged[at] = if forged[at] == b'0' { b'1' } else { b'0' };
        assert!(
            DeviceCertificate::from_pem_like_trusting_issuer(std::str::from_utf8(&forged).unwrap())
                .is_err()
        );
        let messy = format!("\n\n  {}  \n", text.replace('\n', "\r\n  "));
        assert_eq!(
            DeviceCertificate::from_pem_like(&messy, &hq.public()),
            Ok(cert)
        );
        let err = |t: &str| match DeviceCertificate::from_pem_like(t, &hq.public()) {
            Err(CertificateError::Decode(DecodeError::BadText { detail, .. })) => detail,
            other => panic!("expected BadText, got {other:?}"),
        };
        assert!(err("hello").contains("BEGIN"));
        assert!(err(&text[..text.len() / 2]).contains("cut short"));
        assert!(err(&text.replacen('a', "g", 1)).contains("'g'"));
        assert!(err(&text.replacen('\n', "\n0", 1)).contains("odd number"));
        assert!(err(&format!("{PEM_BEGIN}\n{PEM_END}")).contains("nothing"));
    }

    #[test]
    fn foreign_issuer() {
        let other = other_hq();
        let cert = other.issue(body(&other, Role::Field)).unwrap();
        let err = DeviceCertificate::from_bytes(&cert.to_bytes(), &hq().public()).unwrap_err();
        assert!(
            matches!(err, CertificateError::ForeignIssuer { .. }),
            "{err}"
        );
        assert!(invalid(hq().issue(body(&other, Role::Field))).contains("issuer"));
    }

    #[test]
    fn any_damage_is_detected() {
        let hq = hq();
        let bytes = hq.issue(body(&hq, Role::Field)).unwrap().to_bytes();
        for i in 0..bytes.len() {
            for mask in [0x01, 0x10, 0x80] {
                let mut bad = bytes.clone();
                bad[i] ^= mask;
                let result = DeviceCertificate::from_bytes(&bad, &hq.public());
                assert!(
                    result.is_err(),
                    "flipping {mask:#x} at byte {i} went unnoticed"
                );
            }
        }
        for len in 0..bytes.len() {
            assert!(DeviceCertificate::from_bytes(&bytes[..len], &hq.public()).is_err());
        }
        let err = DeviceCertificate::from_bytes(&bytes[..90], &hq.public()).unwrap_err();
        assert!(
            err.to_string().starts_with("malformed certificate"),
            "{err}"
        );
    }

    #[test]
    fn validity_period() {
        let hq = hq();
        let cert = hq.issue(body(&hq, Role::Field)).unwrap();
        let short = device(1).short();
        let before = cert.check_valid_at(Timestamp::from_millis(T0.as_millis() - 1));
        assert!(
            matches!(&before, Err(CertificateError::NotYetValid { device, .. }) if *device == short)
        );
        assert_eq!(cert.check_valid_at(T0), Ok(()));
        assert_eq!(cert.check_valid_at(cert.body().not_after), Ok(()));
        let after = cert.check_valid_at(Timestamp::from_millis(
            cert.body().not_after.as_millis() + 1,
        ));
        let msg = after.unwrap_err().to_string();
        assert!(
            msg.contains(&short) && msg.contains("expired") && msg.contains("re-enroll"),
            "{msg}"
        );
        let mut b = body(&hq, Role::Field);
        b.not_after = b.not_before;
        assert!(invalid(hq.issue(b)).contains("validity"));
    }

    #[test]
    fn body_rules() {
        let hq = hq();
        assert!(invalid(hq.issue(body(&hq, Role::Liaison))).contains("liaison"));
        let mut liaison = body(&hq, Role::Liaison);
        liaison.write.clear();
        let liaison = hq.issue(liaison).unwrap();
        assert!(liaison.can_read(&c("visa-screening")) && !liaison.can_write(&c("visa-screening")));
        let mut b = body(&hq, Role::Field);
        b.write.push(c("finance"));
        let msg = invalid(hq.issue(b));
        assert!(msg.contains("finance") && msg.contains("read"), "{msg}");
        for (name, office) in [("", "Rome"), ("R.\u{7}", "Rome"), ("R.", "  ")] {
            let mut b = body(&hq, Role::Field);
            (b.name, b.office) = (name.into(), office.into());
            invalid(hq.issue(b));
        }
        for version in [0, 3] {
            let mut b = body(&hq, Role::Field);
            b.version = version;
            let err = hq.issue(b).unwrap_err();
            assert!(matches!(
                err,
                CertificateError::Decode(DecodeError::UnsupportedVersion { version: v, .. }) if v == version
            ));
        }
    }

    #[test]
    fn version_2_carries_an_offline_lease() {
        let hq = hq();
        let cert = hq
            .issue_with_lease(body(&hq, Role::Field), Some(14))
            .unwrap();
        assert_eq!(cert.offline_lease_days(), Some(14));
        assert_eq!(cert.body().version, 2);
        let back = DeviceCertificate::from_bytes(&cert.to_bytes(), &hq.public()).unwrap();
        assert_eq!(back, cert);
        assert_eq!(back.offline_lease_days(), Some(14));
        let text = cert.to_pem_like();
        let back = DeviceCertificate::from_pem_like_trusting_issuer(&text).unwrap();
        assert_eq!(back.offline_lease_days(), Some(14));
        // Version 2 without a lease is one byte longer than version 1.
        let plain2 = hq.issue(body(&hq, Role::Field)).unwrap();
        assert_eq!(plain2.offline_lease_days(), None);
        let mut b1 = body(&hq, Role::Field);
        b1.version = 1;
        let plain1 = hq.issue(b1).unwrap();
        assert_eq!(plain1.to_bytes().len() + 1, plain2.to_bytes().len());
        assert_eq!(cert.to_bytes().len(), plain2.to_bytes().len() + 1);
        // Every bit of the lease is covered by the signature.
        let bytes = cert.to_bytes();
        for i in bytes.len() - 3..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert!(DeviceCertificate::from_bytes(&bad, &hq.public()).is_err());
        }
    }

    #[test]
    fn version_1_still_verifies_and_has_no_lease() {
        let hq = hq();
        let mut b = body(&hq, Role::Field);
        b.version = MIN_CERTIFICATE_VERSION;
        b.read.sort();
        b.read.dedup();
        // Bytes as builds before version 2 wrote them: the body alone, by
        // the derived encoding, under the same signing domain.
        let old = {
            let signed = sign(Encoded::new(V1(b.clone())).unwrap(), hq.secret()).unwrap();
            encode_signed(signed.as_signed())
        };
        let cert = DeviceCertificate::from_bytes(&old, &hq.public()).unwrap();
        assert_eq!(cert.offline_lease_days(), None);
        assert_eq!(cert.body(), &b);
        assert_eq!(
            cert.to_bytes(),
            old,
            "a version-1 certificate keeps its bytes"
        );
        assert_eq!(hq.issue(b.clone()).unwrap().to_bytes(), old);
        // A lease cannot be added to a version-1 certificate, nor be zero days.
        let err = hq.issue_with_lease(b.clone(), Some(7)).unwrap_err();
        assert!(invalid(Err(err)).contains("version-2"));
        assert!(invalid(hq.issue_with_lease(body(&hq, Role::Field), Some(0))).contains("one day"));
        // Nor smuggled in: a version-1 body followed by lease bytes.
        let mut smuggled = old.clone();
        smuggled.extend_from_slice(&[1, 7]);
        assert!(DeviceCertificate::from_bytes(&smuggled, &hq.public()).is_err());
        // A version-2 certificate cut before its lease does not decode.
        let mut b2 = b.clone();
        b2.version = 2;
        let cut = {
            let signed = sign(Encoded::new(V1(b2)).unwrap(), hq.secret()).unwrap();
            encode_signed(signed.as_signed())
        };
        let err = DeviceCertificate::from_bytes(&cut, &hq.public()).unwrap_err();
        assert!(
            matches!(err, CertificateError::Decode(DecodeError::Malformed { .. })),
            "{err}"
        );
        // A future version is refused by name.
        let mut b3 = b;
        b3.version = 3;
        let err = DeviceCertificate::from_bytes(&sign_record(&hq, b3, None), &hq.public());
        assert!(matches!(
            err,
            Err(CertificateError::Decode(DecodeError::UnsupportedVersion {
                version: 3,
                ..
            }))
        ));
    }

    /// A certificate body encoded as builds before version 2 did.
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    struct V1(CertificateBody);

    impl Record for V1 {
        const DOMAIN: &'static [u8] = CertificateRecord::DOMAIN;
        const WHAT: &'static str = "certificate";
        const MAX_LEN: usize = CertificateRecord::MAX_LEN;
    }

    #[test]
    fn a_signed_version_2_record_with_a_zero_lease_is_refused() {
        let hq = hq();
        let mut b = body(&hq, Role::Field);
        b.read.sort();
        b.read.dedup();
        let bytes = sign_record(&hq, b, Some(0));
        assert!(invalid(DeviceCertificate::from_bytes(&bytes, &hq.public())).contains("one day"));
    }

    #[test]
    fn decoding_checks_the_rules_even_when_hq_signed() {
        let hq = hq();
        let unsorted = body(&hq, Role::Field); // read is unsorted, with a duplicate
        let result = DeviceCertificate::from_bytes(&sign_raw(&hq, unsorted), &hq.public());
        assert!(invalid(result).contains("sorted"));
        let mut liaison = body(&hq, Role::Liaison);
        liaison.read = vec![c("cultural-property"), c("visa-screening")];
        let result = DeviceCertificate::from_bytes(&sign_raw(&hq, liaison), &hq.public());
        assert!(invalid(result).contains("liaison"));
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_input_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let hq = hq().public();
            prop_assert!(DeviceCertificate::from_bytes(&bytes, &hq).is_err());
            let text = format!("{PEM_BEGIN}\n{}\n{PEM_END}", hex::encode(&bytes));
            prop_assert!(DeviceCertificate::from_pem_like(&text, &hq).is_err());
            let _ = DeviceCertificate::from_pem_like(&String::from_utf8_lossy(&bytes), &hq);
            prop_assert!(DeviceCertificate::from_bytes(&behind_envelope(&hq, &bytes), &hq).is_err());
        }

        #[test]
        fn random_damage_never_yields_a_certificate(edits in proptest::collection::vec((any::<usize>(), 1u8..), 1..8)) {
            let hq = hq();
            let good = hq.issue(body(&hq, Role::Field)).unwrap().to_bytes();
            let mut bytes = good.clone();
            for (at, mask) in edits {
                let i = at % bytes.len();
                bytes[i] ^= mask;
            }
            prop_assume!(bytes != good); // two edits may cancel out
            prop_assert!(DeviceCertificate::from_bytes(&bytes, &hq.public()).is_err());
        }
    }
}
