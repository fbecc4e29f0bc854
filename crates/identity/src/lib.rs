//! FieldSync identities: device keys, HQ-signed device certificates,
//! revocation lists, and the `Signed<T>` → `Verified<T>` typestate.
//!
//! This crate does no IO: it reads no clock and no OS random generator.
//! Time ([`Timestamp`]) and key seeds are arguments.
//!
//! It is not a PKI toolkit: there is exactly one root (the headquarters key),
//! one kind of leaf (a device or relay certificate) and one revocation list.
//!
//! ```
//! use fieldsync_identity::{DeviceId, SecretKey};
//! let key = SecretKey::from_seed(&[42; 32]); // seed from a real RNG in practice
//! let device = DeviceId::from_public_key(key.public());
//! assert_eq!(device.short().len(), 8);
//! let actor = device.actor(0).to_bytes(); // the Automerge actor id of this device
//! assert_eq!(fieldsync_identity::ActorBinding::parse(&actor).unwrap().device, device);
//! ```
#![forbid(unsafe_code)]

mod error;
mod ids;
mod keys;
mod record;
mod signed;

pub use error::{BatchVerifyError, CertificateError, DecodeError, KeyError, VerifyError};
pub use ids::{ACTOR_LEN, ActorBinding, CaseId, DeviceId, SHORT_LEN, Timestamp};
pub use keys::{PUBLIC_KEY_LEN, PublicKey, SIGNATURE_LEN, SecretKey, Signature};
pub use record::{Encoded, Record, decode_signed, encode_signed};
pub use signed::{Signable, Signed, Verified, sign, verify_batch};
