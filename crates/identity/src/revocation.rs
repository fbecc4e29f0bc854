//! Revocation lists: headquarters' signed, numbered list of revoked devices.
//!
//! Each entry records how far the device's work was accepted before it was
//! revoked ([`AcceptedPoint`]), so that changes it signed earlier still stand
//! and everything after is flagged ([`ChangeStanding`]). A device's key is
//! revoked for good: re-enrolling means a new key and a new certificate.

use serde::{Deserialize, Serialize};

use crate::cert::{HqRoot, short};
use crate::error::{DecodeError, RevocationError, VerifyError};
use crate::ids::{DeviceId, Timestamp};
use crate::keys::PublicKey;
use crate::record::{Encoded, Record, decode_signed, encode_signed};
use crate::signed::{Verified, sign};

/// The [`RevocationListBody::version`] this build writes and reads.
pub const REVOCATION_LIST_VERSION: u8 = 1;

/// Longest revocation reason, in characters.
const REASON_MAX: usize = 1024;

/// Changes a device signed at `incarnation` with a signing counter of at
/// most `through_counter` were accepted before it was revoked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AcceptedPoint {
    /// The device incarnation (see [`ActorBinding`](crate::ActorBinding)).
    pub incarnation: u32,
    /// The last accepted signing counter of that incarnation.
    pub through_counter: u64,
}

/// One revoked device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// The revoked device.
    pub device: DeviceId,
    /// When headquarters revoked it.
    pub revoked_at: Timestamp,
    /// Why, for people: 1 to 1024 characters, no control characters.
    pub reason: String,
    /// How far its work was accepted, per incarnation (sorted by
    /// incarnation, at most one point each). Changes of an incarnation not
    /// listed here are all beyond the revocation point.
    pub accepted: Vec<AcceptedPoint>,
}

impl Revocation {
    /// A revocation that accepts nothing the device signed (add points with
    /// [`Revocation::accepting`]).
    pub fn new(device: DeviceId, revoked_at: Timestamp, reason: impl Into<String>) -> Self {
        Self {
            device,
            revoked_at,
            reason: reason.into(),
            accepted: Vec::new(),
        }
    }

    /// Accepts the changes of `incarnation` up to and including `through_counter`.
    pub fn accepting(mut self, incarnation: u32, through_counter: u64) -> Self {
        self.accepted.push(AcceptedPoint {
            incarnation,
            through_counter,
        });
        self
    }

    /// The last accepted signing counter of `incarnation`, if any was accepted.
    pub fn accepted_through(&self, incarnation: u32) -> Option<u64> {
        self.accepted
            .binary_search_by_key(&incarnation, |p| p.incarnation)
            .ok()
            .and_then(|i| self.accepted.get(i))
            .map(|p| p.through_counter)
    }

    fn validate(&self) -> Result<(), RevocationError> {
        let device = self.device.short();
        let invalid = |what: &str| {
            Err(RevocationError::Invalid(format!(
                "entry for device {device}: {what}"
            )))
        };
        if self.reason.trim().is_empty() {
            return invalid("the reason is empty");
        }
        if self.reason.chars().count() > REASON_MAX || self.reason.chars().any(char::is_control) {
            return invalid(
                "the reason is longer than 1024 characters or contains control characters",
            );
        }
        if !self
            .accepted
            .is_sorted_by(|a, b| a.incarnation < b.incarnation)
        {
            return invalid("accepted points are out of order or name an incarnation twice");
        }
        Ok(())
    }
}

/// Whether a change signed by a device still stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChangeStanding {
    /// The device is not revoked, or the change was accepted before it was.
    Good,
    /// The device is revoked and the change is beyond the point up to which
    /// its work was accepted: quarantine it for a supervisor.
    BeyondRevocationPoint {
        /// When the device was revoked.
        revoked_at: Timestamp,
        /// Why.
        reason: String,
    },
}

impl ChangeStanding {
    /// Why a change of `author` with this standing is held back: the
    /// quarantine reason every node gives for a change beyond its author's
    /// revocation point (`None` for a change that stands).
    pub fn quarantine_reason(&self, author: &DeviceId) -> Option<String> {
        match self {
            ChangeStanding::Good => None,
            ChangeStanding::BeyondRevocationPoint { revoked_at, reason } => Some(format!(
                "device {} was revoked on {revoked_at} ({reason}); this change is beyond the revocation point",
                author.short()
            )),
        }
    }
}

/// The signed content of a revocation list. Built by [`HqRoot::revoke`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationListBody {
    /// Format version; must be [`REVOCATION_LIST_VERSION`].
    pub version: u8,
    /// The headquarters key that signs it.
    pub issuer: PublicKey,
    /// Grows by one with every new list; the higher sequence wins.
    pub sequence: u64,
    /// When headquarters issued it.
    pub issued_at: Timestamp,
    /// The revoked devices, sorted by device, each once.
    pub entries: Vec<Revocation>,
}

impl Record for RevocationListBody {
    const DOMAIN: &'static [u8] = b"fieldsync/revocations/v1";
    const WHAT: &'static str = "revocation list";
    const MAX_LEN: usize = 4 * 1024 * 1024;

    fn check_signer(&self, signer: &PublicKey) -> Result<(), String> {
        if *signer == self.issuer {
            Ok(())
        } else {
            Err(format!("the list names issuer {}", short(&self.issuer)))
        }
    }
}

impl RevocationListBody {
    /// The entry of `device`, if it is revoked (see [`RevocationList::is_revoked`]).
    pub fn is_revoked(&self, device: &DeviceId) -> Option<&Revocation> {
        let i = self
            .entries
            .binary_search_by_key(device, |e| e.device)
            .ok()?;
        self.entries.get(i)
    }

    /// Whether a change `device` signed at `incarnation` with signing counter
    /// `counter` still stands under this list (see [`RevocationList::change_status`]).
    pub fn change_status(
        &self,
        device: &DeviceId,
        incarnation: u32,
        counter: u64,
    ) -> ChangeStanding {
        match self.is_revoked(device) {
            None => ChangeStanding::Good,
            Some(entry) => match entry.accepted_through(incarnation) {
                Some(through) if counter <= through => ChangeStanding::Good,
                _ => ChangeStanding::BeyondRevocationPoint {
                    revoked_at: entry.revoked_at,
                    reason: entry.reason.clone(),
                },
            },
        }
    }

    fn validate(&self) -> Result<(), RevocationError> {
        if self.version != REVOCATION_LIST_VERSION {
            return Err(DecodeError::UnsupportedVersion {
                what: Self::WHAT,
                version: self.version,
            }
            .into());
        }
        if !self.entries.is_sorted_by(|a, b| a.device < b.device) {
            return Err(RevocationError::Invalid(
                "entries are out of order or name a device twice".into(),
            ));
        }
        self.entries.iter().try_for_each(Revocation::validate)
    }
}

/// A revocation list whose signature, issuer and rules have been checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevocationList(Verified<Encoded<RevocationListBody>>);

impl RevocationList {
    /// An empty list (sequence 0) signed by `hq`, for a fresh deployment.
    pub fn empty(hq: &HqRoot, now: Timestamp) -> Result<Self, RevocationError> {
        hq.sign_revocations(RevocationListBody {
            version: REVOCATION_LIST_VERSION,
            issuer: hq.public(),
            sequence: 0,
            issued_at: now,
            entries: Vec::new(),
        })
    }

    /// Decodes and verifies a list issued by `hq`: signature, issuer and rules.
    pub fn from_bytes(bytes: &[u8], hq: &PublicKey) -> Result<Self, RevocationError> {
        let signed = decode_signed::<RevocationListBody>(bytes)?;
        if signed.signer() != hq {
            return Err(RevocationError::ForeignIssuer {
                issuer: short(signed.signer()),
            });
        }
        let verified = signed.verify().map_err(from_verify_error)?;
        verified.payload().value().validate()?;
        Ok(Self(verified))
    }

    /// The exact signed bytes, for storing and sending.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode_signed(self.0.as_signed())
    }

    /// The verified body.
    pub fn body(&self) -> &RevocationListBody {
        self.0.payload().value()
    }

    /// The headquarters key that issued it.
    pub fn issuer(&self) -> &PublicKey {
        &self.body().issuer
    }

    /// Its sequence number.
    pub fn sequence(&self) -> u64 {
        self.body().sequence
    }

    /// When it was issued.
    pub fn issued_at(&self) -> Timestamp {
        self.body().issued_at
    }

    /// The revoked devices, sorted by device.
    pub fn entries(&self) -> &[Revocation] {
        &self.body().entries
    }

    /// Whether this list replaces `other`: same issuer, higher sequence.
    pub fn supersedes(&self, other: &RevocationList) -> bool {
        self.issuer() == other.issuer() && self.sequence() > other.sequence()
    }

    /// The entry of `device`, if it is revoked.
    pub fn is_revoked(&self, device: &DeviceId) -> Option<&Revocation> {
        self.body().is_revoked(device)
    }

    /// Whether a change `device` signed at `incarnation` with signing counter
    /// `counter` still stands under this list.
    pub fn change_status(
        &self,
        device: &DeviceId,
        incarnation: u32,
        counter: u64,
    ) -> ChangeStanding {
        self.body().change_status(device, incarnation, counter)
    }
}

fn from_verify_error(e: VerifyError) -> RevocationError {
    match e {
        VerifyError::BadSignature { .. } => RevocationError::BadSignature,
        VerifyError::SignerMismatch { signer, reason } => {
            RevocationError::Invalid(format!("signed by {signer}, but {reason}"))
        }
    }
}

impl HqRoot {
    /// An empty revocation list (sequence 0); see [`RevocationList::empty`].
    pub fn empty_revocations(&self, now: Timestamp) -> Result<RevocationList, RevocationError> {
        RevocationList::empty(self, now)
    }

    /// Issues the list that follows `previous` (or the first list, sequence
    /// 1, when there is none) with `entry` added. Revoking a device again
    /// replaces its entry. `entry.accepted` is sorted by incarnation; naming
    /// an incarnation twice is an error.
    pub fn revoke(
        &self,
        previous: Option<&RevocationList>,
        mut entry: Revocation,
        now: Timestamp,
    ) -> Result<RevocationList, RevocationError> {
        entry.accepted.sort();
        entry.validate()?;
        let (sequence, mut entries) = match previous {
            None => (1, Vec::new()),
            Some(prev) if *prev.issuer() != self.public() => {
                return Err(RevocationError::ForeignIssuer {
                    issuer: short(prev.issuer()),
                });
            }
            Some(prev) => {
                let sequence = prev.sequence().checked_add(1).ok_or_else(|| {
                    RevocationError::Invalid("the sequence number is exhausted".into())
                })?;
                (sequence, prev.entries().to_vec())
            }
        };
        match entries.binary_search_by_key(&entry.device, |e| e.device) {
            Ok(i) => entries[i] = entry,
            Err(i) => entries.insert(i, entry),
        }
        self.sign_revocations(RevocationListBody {
            version: REVOCATION_LIST_VERSION,
            issuer: self.public(),
            sequence,
            issued_at: now,
            entries,
        })
    }

    fn sign_revocations(
        &self,
        body: RevocationListBody,
    ) -> Result<RevocationList, RevocationError> {
        body.validate()?;
        let encoded = Encoded::new(body)?;
        let verified = sign(encoded, self.secret()).map_err(from_verify_error)?;
        Ok(RevocationList(verified))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Role;
    use crate::cert::tests::{T0, behind_envelope, body, device, hq, other_hq};
    use crate::error::CertificateError;
    use proptest::prelude::*;

    fn later(days: u32) -> Timestamp {
        T0.plus_days(days)
    }

    fn entry(n: u8, day: u32, reason: &str) -> Revocation {
        Revocation::new(device(n), later(day), reason)
    }

    #[test]
    fn empty_list_round_trip() {
        let hq = hq();
        let list = RevocationList::empty(&hq, T0).unwrap();
        assert_eq!((list.sequence(), list.issued_at()), (0, T0));
        assert!(list.entries().is_empty());
        assert_eq!(
            RevocationList::from_bytes(&list.to_bytes(), &hq.public()),
            Ok(list.clone())
        );
        assert_eq!(hq.empty_revocations(T0), Ok(list.clone()));
        assert_eq!(list.change_status(&device(1), 0, 1), ChangeStanding::Good);
    }

    #[test]
    fn sequence_and_supersedes() {
        let hq = hq();
        let empty = hq.empty_revocations(T0).unwrap();
        let l1 = hq.revoke(None, entry(3, 1, "lost"), later(1)).unwrap();
        let l2 = hq
            .revoke(Some(&l1), entry(2, 2, "seized"), later(2))
            .unwrap();
        assert_eq!((l1.sequence(), l2.sequence()), (1, 2));
        assert!(l1.supersedes(&empty) && l2.supersedes(&l1) && l2.supersedes(&empty));
        assert!(!l1.supersedes(&l2) && !l2.supersedes(&l2));
        assert!(l2.entries().is_sorted_by(|a, b| a.device < b.device));
        // Revoking again replaces the entry.
        let l3 = hq
            .revoke(Some(&l2), entry(3, 3, "compromised"), later(3))
            .unwrap();
        assert_eq!((l3.sequence(), l3.entries().len()), (3, 2));
        assert_eq!(
            l3.is_revoked(&device(3)).map(|e| e.reason.as_str()),
            Some("compromised")
        );
        assert!(l3.is_revoked(&device(4)).is_none());
        assert_eq!(
            RevocationList::from_bytes(&l3.to_bytes(), &hq.public()),
            Ok(l3.clone())
        );
        // Lists of another headquarters neither supersede nor serve as a base.
        let foreign = other_hq().revoke(None, entry(2, 0, "x"), T0).unwrap();
        assert!(!l3.supersedes(&foreign) && !foreign.supersedes(&empty));
        let err = hq.revoke(Some(&foreign), entry(5, 0, "x"), T0).unwrap_err();
        assert!(matches!(err, RevocationError::ForeignIssuer { .. }));
        let err = RevocationList::from_bytes(&foreign.to_bytes(), &hq.public()).unwrap_err();
        assert!(
            matches!(err, RevocationError::ForeignIssuer { .. }),
            "{err}"
        );
    }

    #[test]
    fn change_status_at_and_beyond_the_point() {
        let revoked = entry(1, 30, "laptop stolen")
            .accepting(2, 5)
            .accepting(0, 10);
        let list = hq().revoke(None, revoked, later(30)).unwrap();
        assert_eq!(
            list.is_revoked(&device(1)).unwrap().accepted_through(0),
            Some(10)
        );
        let beyond = ChangeStanding::BeyondRevocationPoint {
            revoked_at: later(30),
            reason: "laptop stolen".into(),
        };
        let status = |inc, counter| list.change_status(&device(1), inc, counter);
        for (inc, counter) in [(0, 0), (0, 10), (2, 5)] {
            assert_eq!(status(inc, counter), ChangeStanding::Good);
        }
        assert_eq!(status(0, 11), beyond);
        assert_eq!(status(2, 6), beyond);
        assert_eq!(
            status(1, 0),
            beyond,
            "an unlisted incarnation is beyond the point"
        );
        assert_eq!(status(3, 0), beyond);
        assert_eq!(
            list.change_status(&device(2), 0, u64::MAX),
            ChangeStanding::Good
        );
    }

    #[test]
    fn bad_entries_are_refused() {
        let hq = hq();
        let twice = entry(1, 0, "lost").accepting(1, 4).accepting(1, 9);
        let err = hq.revoke(None, twice, T0).unwrap_err();
        assert!(err.to_string().contains("incarnation twice"), "{err}");
        for reason in ["", "  ", "line\nbreak"] {
            let err = hq.revoke(None, entry(1, 0, reason), T0).unwrap_err();
            assert!(err.to_string().contains(&device(1).short()), "{err}");
        }
        // A list HQ signed with entries out of order still fails to decode.
        let mut entries = vec![entry(1, 0, "a"), entry(2, 0, "b")];
        entries.sort_by_key(|e| std::cmp::Reverse(e.device));
        let (issuer, sequence, issued_at) = (hq.public(), 1, T0);
        let body = RevocationListBody {
            version: 1,
            issuer,
            sequence,
            issued_at,
            entries,
        };
        let signed = sign(Encoded::new(body).unwrap(), hq.secret()).unwrap();
        let err = RevocationList::from_bytes(&encode_signed(signed.as_signed()), &issuer);
        assert!(matches!(err, Err(RevocationError::Invalid(_))), "{err:?}");
    }

    #[test]
    fn certificate_check_against_the_list() {
        let hq = hq();
        let cert = hq.issue(body(&hq, Role::Field)).unwrap();
        let empty = hq.empty_revocations(T0).unwrap();
        assert_eq!(cert.check(later(1), &empty), Ok(()));
        let expired = cert.check(later(400), &empty);
        assert!(matches!(expired, Err(CertificateError::Expired { .. })));
        let list = hq
            .revoke(Some(&empty), entry(1, 2, "lost"), later(2))
            .unwrap();
        let err = cert.check(later(3), &list).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, CertificateError::Revoked { .. }));
        assert!(
            msg.contains(&device(1).short()) && msg.contains(&later(2).to_string()),
            "{msg}"
        );
        assert!(msg.contains("re-enroll"), "{msg}");
        let foreign = other_hq().empty_revocations(T0).unwrap();
        let err = cert.check(later(1), &foreign);
        assert!(matches!(
            err,
            Err(CertificateError::ForeignRevocationList { .. })
        ));
    }

    #[test]
    fn any_damage_is_detected() {
        let hq = hq();
        let bytes = hq
            .revoke(None, entry(1, 0, "lost").accepting(0, 3), T0)
            .unwrap()
            .to_bytes();
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x04;
            assert!(
                RevocationList::from_bytes(&bad, &hq.public()).is_err(),
                "byte {i}"
            );
        }
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let hq = hq().public();
            prop_assert!(RevocationList::from_bytes(&bytes, &hq).is_err());
            prop_assert!(RevocationList::from_bytes(&behind_envelope(&hq, &bytes), &hq).is_err());
        }
    }
}
