//! Wipe orders: headquarters' signed instruction to one device to destroy
//! its key material (crypto-shred), obeyed at its next contact with a relay.
//!
//! An order names the device (its key), a random nonce, when it was issued
//! and until when it may be obeyed. It is signed with the headquarters root
//! key, under its own signing domain, so no other record's signature can
//! pass for one. Relays carry orders without being able to make one.
//!
//! A device obeys an order only when [`WipeOrder::check_for`] accepts it:
//! signed by its own headquarters, for this device, not expired, and issued
//! after the device's current certificate started (an order issued before a
//! device was re-enrolled is void). Whether its nonce was handled already
//! (a replay) is the store's to say.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::cert::{DeviceCertificate, HqRoot, short};
use crate::error::{DecodeError, VerifyError, WipeOrderError};
use crate::ids::{DeviceId, Timestamp};
use crate::keys::PublicKey;
use crate::record::{Encoded, Record, decode_signed, encode_signed};
use crate::signed::{Verified, sign};

/// The [`WipeOrderBody::version`] this build writes and reads.
pub const WIPE_ORDER_VERSION: u8 = 1;
/// Longest reason of a wipe order, in characters.
pub const MAX_WIPE_REASON: usize = 256;
/// Largest encoded wipe order, in bytes (envelope included): what a relay
/// or device accepts at most from the wire.
pub const MAX_WIPE_ORDER_LEN: usize = 1 + 32 + 64 + WipeOrderBody::MAX_LEN;
/// Longest validity of a wipe order, in days.
pub const MAX_WIPE_ORDER_DAYS: u32 = 3650;

/// What headquarters orders: device `device` destroys its key material.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WipeOrderBody {
    /// Format version; must be [`WIPE_ORDER_VERSION`].
    pub version: u8,
    /// The headquarters key that signs it.
    pub issuer: PublicKey,
    /// The device that must wipe itself.
    pub device: DeviceId,
    /// 16 random bytes: the order's identity; a device obeys a nonce once.
    pub nonce: [u8; 16],
    /// When headquarters issued it.
    pub issued_at: Timestamp,
    /// The last moment it may be obeyed (inclusive); later than `issued_at`.
    pub expires_at: Timestamp,
    /// Why, for the audit logs: 1 to 256 characters, no control characters.
    pub reason: String,
}

impl Record for WipeOrderBody {
    const DOMAIN: &'static [u8] = b"fieldsync/wipe-order/v1";
    const WHAT: &'static str = "wipe order";
    const MAX_LEN: usize = 2048;

    fn check_signer(&self, signer: &PublicKey) -> Result<(), String> {
        if *signer == self.issuer {
            Ok(())
        } else {
            Err(format!("the order names issuer {}", short(&self.issuer)))
        }
    }
}

impl WipeOrderBody {
    fn validate(&self) -> Result<(), WipeOrderError> {
        if self.version != WIPE_ORDER_VERSION {
            return Err(DecodeError::UnsupportedVersion {
                what: Self::WHAT,
                version: self.version,
            }
            .into());
        }
        let invalid = |msg: &str| Err(WipeOrderError::Invalid(msg.to_owned()));
        if self.reason.trim().is_empty() {
            return invalid("the reason is empty");
        }
        if self.reason.chars().count() > MAX_WIPE_REASON
            || self.reason.chars().any(char::is_control)
        {
            return invalid(
                "the reason is longer than 256 characters or contains control characters",
            );
        }
        if self.expires_at <= self.issued_at {
            return invalid("it expires before it is issued");
        }
        Ok(())
    }
}

/// A wipe order whose signature, issuer and rules have been checked.
/// Cheap to clone (shared).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WipeOrder(Arc<Verified<Encoded<WipeOrderBody>>>);

impl WipeOrder {
    /// Decodes and verifies an order issued by `hq`: signature, issuer and
    /// rules. Neither the device, nor time, nor replay is checked here (see
    /// [`WipeOrder::check_for`] and [`WipeOrder::check_time`]).
    pub fn from_bytes(bytes: &[u8], hq: &PublicKey) -> Result<Self, WipeOrderError> {
        if bytes.len() > MAX_WIPE_ORDER_LEN {
            return Err(DecodeError::TooLarge {
                what: WipeOrderBody::WHAT,
                len: bytes.len(),
                limit: MAX_WIPE_ORDER_LEN,
            }
            .into());
        }
        let signed = decode_signed::<WipeOrderBody>(bytes)?;
        if signed.signer() != hq {
            return Err(WipeOrderError::ForeignIssuer {
                issuer: short(signed.signer()),
            });
        }
        let verified = signed.verify().map_err(from_verify_error)?;
        verified.payload().value().validate()?;
        Ok(Self(Arc::new(verified)))
    }

    /// The exact signed bytes, for storing and sending.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode_signed(self.0.as_signed())
    }

    /// The verified body.
    pub fn body(&self) -> &WipeOrderBody {
        self.0.payload().value()
    }

    /// The device ordered to wipe itself.
    pub fn device(&self) -> DeviceId {
        self.body().device
    }

    /// The order's nonce.
    pub fn nonce(&self) -> [u8; 16] {
        self.body().nonce
    }

    /// The nonce in hex (32 digits), as logs and listings show it.
    pub fn nonce_hex(&self) -> String {
        hex::encode(self.body().nonce)
    }

    /// When it was issued.
    pub fn issued_at(&self) -> Timestamp {
        self.body().issued_at
    }

    /// Until when it may be obeyed (inclusive).
    pub fn expires_at(&self) -> Timestamp {
        self.body().expires_at
    }

    /// Headquarters' reason.
    pub fn reason(&self) -> &str {
        &self.body().reason
    }

    /// Checks that the order has not expired at `now` (relays stop carrying
    /// an expired order; a device ignores one).
    pub fn check_time(&self, now: Timestamp) -> Result<(), WipeOrderError> {
        if now > self.expires_at() {
            return Err(WipeOrderError::Expired {
                device: self.device().short(),
                expired_at: self.expires_at().to_string(),
            });
        }
        Ok(())
    }

    /// Checks that the device holding `cert` must obey this order at `now`:
    /// the order is for that device and from its headquarters, has not
    /// expired, and was issued after the certificate started (an order
    /// issued before the device's current enrollment is void). The caller
    /// checks the nonce against those already handled.
    pub fn check_for(
        &self,
        cert: &DeviceCertificate,
        now: Timestamp,
    ) -> Result<(), WipeOrderError> {
        if self.device() != cert.device() {
            return Err(WipeOrderError::NotForThisDevice {
                device: self.device().short(),
                this: cert.device().short(),
            });
        }
        if self.body().issuer != *cert.issuer() {
            return Err(WipeOrderError::ForeignIssuer {
                issuer: short(&self.body().issuer),
            });
        }
        self.check_time(now)?;
        let not_before = cert.body().not_before;
        if self.issued_at() < not_before {
            return Err(WipeOrderError::IssuedBeforeCertificate {
                issued_at: self.issued_at().to_string(),
                not_before: not_before.to_string(),
            });
        }
        Ok(())
    }
}

fn from_verify_error(e: VerifyError) -> WipeOrderError {
    match e {
        VerifyError::BadSignature { .. } => WipeOrderError::BadSignature,
        VerifyError::SignerMismatch { signer, reason } => {
            WipeOrderError::Invalid(format!("signed by {signer}, but {reason}"))
        }
    }
}

impl HqRoot {
    /// Orders `device` to wipe itself: an order with `nonce` (16 random
    /// bytes from the caller), issued at `now`, valid for `days` days (1 to
    /// [`MAX_WIPE_ORDER_DAYS`]).
    pub fn order_wipe(
        &self,
        device: DeviceId,
        nonce: [u8; 16],
        now: Timestamp,
        days: u32,
        reason: &str,
    ) -> Result<WipeOrder, WipeOrderError> {
        if !(1..=MAX_WIPE_ORDER_DAYS).contains(&days) {
            return Err(WipeOrderError::Invalid(format!(
                "an order is valid for 1 to {MAX_WIPE_ORDER_DAYS} days, not {days}"
            )));
        }
        let body = WipeOrderBody {
            version: WIPE_ORDER_VERSION,
            issuer: self.public(),
            device,
            nonce,
            issued_at: now,
            expires_at: now.plus_days(days),
            reason: reason.trim().to_owned(),
        };
        body.validate()?;
        let encoded = Encoded::new(body)?;
        let verified = sign(encoded, self.secret()).map_err(from_verify_error)?;
        Ok(WipeOrder(Arc::new(verified)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Role;
    use crate::cert::tests::{T0, behind_envelope, body, device, hq, other_hq};
    use crate::keys::SecretKey;
    use proptest::prelude::*;

    fn order(hq: &HqRoot, n: u8, days: u32) -> WipeOrder {
        hq.order_wipe(
            device(n),
            [n; 16],
            T0.plus_days(1),
            days,
            "laptop stolen in Naples",
        )
        .unwrap()
    }

    #[test]
    fn sign_and_verify_round_trip() {
        let hq = hq();
        let o = order(&hq, 1, 30);
        let back = WipeOrder::from_bytes(&o.to_bytes(), &hq.public()).unwrap();
        assert_eq!(back, o);
        assert_eq!(back.to_bytes(), o.to_bytes());
        assert_eq!((back.device(), back.nonce()), (device(1), [1; 16]));
        assert_eq!(back.issued_at(), T0.plus_days(1));
        assert_eq!(back.expires_at(), T0.plus_days(31));
        assert_eq!(back.reason(), "laptop stolen in Naples");
        assert_eq!(back.nonce_hex(), "01".repeat(16));
        assert!(o.to_bytes().len() <= MAX_WIPE_ORDER_LEN);
        let cert = hq.issue(body(&hq, Role::Field)).unwrap();
        assert_eq!(o.check_for(&cert, T0.plus_days(2)), Ok(()));
        // The last moment is included.
        assert_eq!(o.check_for(&cert, o.expires_at()), Ok(()));
    }

    #[test]
    fn forged_orders_are_refused() {
        let hq = hq();
        let bytes = order(&hq, 1, 30).to_bytes();
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x08;
            assert!(
                WipeOrder::from_bytes(&bad, &hq.public()).is_err(),
                "flipping byte {i} went unnoticed"
            );
        }
        // A signature over the same body by another key.
        let mut wrong_signature = bytes.clone();
        wrong_signature[33..97].copy_from_slice(
            SecretKey::from_seed(&[9; 32])
                .sign_with_domain(WipeOrderBody::DOMAIN, &bytes[97..])
                .as_bytes(),
        );
        assert_eq!(
            WipeOrder::from_bytes(&wrong_signature, &hq.public()),
            Err(WipeOrderError::BadSignature)
        );
        // Another headquarters' order.
        let other = other_hq();
        let foreign = order(&other, 1, 30).to_bytes();
        let err = WipeOrder::from_bytes(&foreign, &hq.public()).unwrap_err();
        assert!(matches!(err, WipeOrderError::ForeignIssuer { .. }), "{err}");
        // A signature made for another record kind (a certificate body's
        // domain) over these bytes does not verify as an order.
        let mut cross = bytes.clone();
        cross[33..97].copy_from_slice(
            hq.secret()
                .sign_with_domain(b"fieldsync/certificate/v1", &bytes[97..])
                .as_bytes(),
        );
        assert_eq!(
            WipeOrder::from_bytes(&cross, &hq.public()),
            Err(WipeOrderError::BadSignature)
        );
        // A headquarters-signed order naming another issuer.
        let mut b = order(&hq, 1, 30).body().clone();
        b.issuer = other.public();
        let body = Encoded::new(b).unwrap();
        let signature = hq
            .secret()
            .sign_with_domain(WipeOrderBody::DOMAIN, body.bytes());
        let bytes = [
            &[1][..],
            hq.public().as_bytes(),
            signature.as_bytes(),
            body.bytes(),
        ]
        .concat();
        let err = WipeOrder::from_bytes(&bytes, &hq.public());
        assert!(matches!(err, Err(WipeOrderError::Invalid(_))), "{err:?}");
    }

    #[test]
    fn expired_wrong_device_and_older_than_the_certificate() {
        let hq = hq();
        let cert = hq.issue(body(&hq, Role::Field)).unwrap(); // device(1), from T0
        let o = order(&hq, 1, 30);
        let late = Timestamp::from_millis(o.expires_at().as_millis() + 1);
        let err = o.check_for(&cert, late).unwrap_err();
        assert!(matches!(err, WipeOrderError::Expired { .. }));
        assert!(err.to_string().contains("expired"), "{err}");
        assert!(o.check_time(late).is_err() && o.check_time(T0).is_ok());
        let foreign = order(&hq, 2, 30);
        let err = foreign.check_for(&cert, T0.plus_days(2)).unwrap_err();
        assert!(
            matches!(&err, WipeOrderError::NotForThisDevice { device, this }
                if *device == crate::cert::tests::device(2).short() && *this == cert.device().short()),
            "{err}"
        );
        // Issued before the certificate: void for this enrollment.
        let old = hq
            .order_wipe(
                device(1),
                [7; 16],
                Timestamp::from_millis(T0.as_millis() - 1),
                30,
                "lost",
            )
            .unwrap();
        let err = old.check_for(&cert, T0.plus_days(1)).unwrap_err();
        assert!(
            matches!(err, WipeOrderError::IssuedBeforeCertificate { .. }),
            "{err}"
        );
        // An order of another headquarters for a device of this one.
        let other = other_hq();
        let stray = other
            .order_wipe(device(1), [8; 16], T0.plus_days(1), 30, "lost")
            .unwrap();
        let err = stray.check_for(&cert, T0.plus_days(2)).unwrap_err();
        assert!(matches!(err, WipeOrderError::ForeignIssuer { .. }), "{err}");
    }

    #[test]
    fn rules_and_size_limits() {
        let hq = hq();
        for days in [0, MAX_WIPE_ORDER_DAYS + 1] {
            let err = hq
                .order_wipe(device(1), [1; 16], T0, days, "lost")
                .unwrap_err();
            assert!(matches!(err, WipeOrderError::Invalid(_)), "{err}");
        }
        for reason in ["", "   ", "a\nb"] {
            let err = hq
                .order_wipe(device(1), [1; 16], T0, 1, reason)
                .unwrap_err();
            assert!(matches!(err, WipeOrderError::Invalid(_)), "{err}");
        }
        let long = "é".repeat(MAX_WIPE_REASON + 1);
        assert!(hq.order_wipe(device(1), [1; 16], T0, 1, &long).is_err());
        // The longest reason fits the record limit.
        let longest = "é".repeat(MAX_WIPE_REASON);
        let o = hq.order_wipe(device(1), [1; 16], T0, 1, &longest).unwrap();
        assert!(o.to_bytes().len() <= MAX_WIPE_ORDER_LEN);
        // Oversized input is refused before it is parsed.
        let huge = vec![1u8; MAX_WIPE_ORDER_LEN + 1];
        let err = WipeOrder::from_bytes(&huge, &hq.public()).unwrap_err();
        assert!(
            matches!(err, WipeOrderError::Decode(DecodeError::TooLarge { .. })),
            "{err}"
        );
        for len in 0..o.to_bytes().len() {
            assert!(WipeOrder::from_bytes(&o.to_bytes()[..len], &hq.public()).is_err());
        }
        // A body of an unknown version is refused by name.
        let mut b = o.body().clone();
        b.version = 2;
        let signed = sign(Encoded::new(b).unwrap(), hq.secret()).unwrap();
        let err = WipeOrder::from_bytes(&encode_signed(signed.as_signed()), &hq.public());
        assert!(matches!(
            err,
            Err(WipeOrderError::Decode(DecodeError::UnsupportedVersion {
                version: 2,
                ..
            }))
        ));
        // HQ-signed, but expiring before it is issued.
        let mut b = o.body().clone();
        b.expires_at = b.issued_at;
        let signed = sign(Encoded::new(b).unwrap(), hq.secret()).unwrap();
        let err = WipeOrder::from_bytes(&encode_signed(signed.as_signed()), &hq.public());
        assert!(matches!(err, Err(WipeOrderError::Invalid(_))), "{err:?}");
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let hq = hq().public();
            prop_assert!(WipeOrder::from_bytes(&bytes, &hq).is_err());
            prop_assert!(WipeOrder::from_bytes(&behind_envelope(&hq, &bytes), &hq).is_err());
        }
    }
}
