//! FieldSync identities: device keys, HQ-signed device certificates,
//! revocation lists, and the `Signed<T>` → `Verified<T>` typestate.
//!
//! This crate does no IO: it reads no clock and no OS random generator.
//! Time ([`Timestamp`]) and key seeds are arguments.
//!
//! It is not a PKI toolkit: there is exactly one root (the headquarters key),
//! one kind of leaf (a device or relay certificate), one revocation list, and
//! wipe orders ([`WipeOrder`]) that tell one lost device to destroy its keys.
//!
//! ```
//! use fieldsync_identity::{DeviceId, SecretKey};
//! let key = SecretKey::from_seed(&[42; 32]); // seed from a real RNG in practice
//! let device = DeviceId::from_public_key(key.public());
//! assert_eq!(device.short().len(), 8);
//! let actor = device.actor(0).to_bytes(); // the Automerge actor id of this device
//! assert_eq!(fieldsync_identity::ActorBinding::parse(&actor).unwrap().device, device);
//! ```
//!
//! Headquarters issues certificates and revocation lists; devices and relays
//! check them against the headquarters public key and a time they supply:
//!
//! ```
//! use fieldsync_identity::*;
//! let hq = HqRoot::from_secret(SecretKey::from_seed(&[1; 32]));
//! let device = DeviceId::from_public_key(SecretKey::from_seed(&[2; 32]).public());
//! let now: Timestamp = "2026-11-28T15:12:11Z".parse().unwrap();
//! let visa: Compartment = "visa-screening".parse().unwrap();
//! let cert = hq.issue(CertificateBody {
//!     version: CERTIFICATE_VERSION, serial: 1, issuer: hq.public(), device,
//!     name: "R. Alvarez".into(), office: "Rome".into(), role: Role::Field,
//!     read: vec![visa.clone()], write: vec![visa.clone()],
//!     not_before: now, not_after: now.plus_days(365),
//! }).unwrap();
//! let text = cert.to_pem_like(); // hand this file to the device
//! let cert = DeviceCertificate::from_pem_like(&text, &hq.public()).unwrap();
//! assert!(cert.can_write(&visa));
//!
//! let list = hq.revoke(None, Revocation::new(device, now, "lost").accepting(0, 41), now).unwrap();
//! let list = RevocationList::from_bytes(&list.to_bytes(), &hq.public()).unwrap();
//! assert!(matches!(cert.check(now, &list), Err(CertificateError::Revoked { .. })));
//! assert_eq!(list.change_status(&device, 0, 41), ChangeStanding::Good);
//! ```
#![forbid(unsafe_code)]

mod access;
mod cert;
mod error;
mod ids;
mod keys;
mod record;
mod revocation;
mod signed;
mod wipe;

pub use access::{Compartment, Role};
pub use cert::{
    CERTIFICATE_VERSION, CertificateBody, DeviceCertificate, HQ_OFFICE, HqRoot,
    MIN_CERTIFICATE_VERSION,
};
pub use error::{
    BatchVerifyError, CertificateError, DecodeError, KeyError, NameError, RevocationError,
    VerifyError, WipeOrderError,
};
pub use ids::{ACTOR_LEN, ActorBinding, CaseId, DeviceId, SHORT_LEN, Timestamp};
pub use keys::{PUBLIC_KEY_LEN, PublicKey, SIGNATURE_LEN, SecretKey, Signature};
pub use record::{Encoded, Record, decode_signed, encode_signed};
pub use revocation::{
    AcceptedPoint, ChangeStanding, REVOCATION_LIST_VERSION, Revocation, RevocationList,
    RevocationListBody,
};
pub use signed::{Signable, Signed, Verified, sign, verify_batch};
pub use wipe::{
    MAX_WIPE_ORDER_DAYS, MAX_WIPE_ORDER_LEN, MAX_WIPE_REASON, WIPE_ORDER_VERSION, WipeOrder,
    WipeOrderBody,
};
