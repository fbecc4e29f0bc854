//! FieldSync vault: the field agent's data key at rest.
//!
//! What it is: the key management of an agent's data directory. A store
//! encrypted at rest has a random 32-byte *data key* (the store derives its
//! value key and its keyed-hash keys from it). The data key is kept only
//! wrapped, with XChaCha20-Poly1305, under a *key-encryption key* derived
//! either from a passphrase with Argon2id (by default m = 64 MiB, t = 3,
//! p = 1: [`KdfParams::DEFAULT`]) or from a key file of at least 32 random
//! bytes with BLAKE3. The wrapped key sits in a small versioned header
//! beside the store (`fieldsync.key`, layout in the `header` module),
//! written durably (temporary file, fsync, rename). A wrong passphrase is
//! one error, [`VaultError::WrongPassphrase`]; failed passphrases are
//! counted durably and, after a few, each attempt waits longer first
//! ([`Throttle`]).
//! [`shred`] destroys the key so the store can never be read again
//! (crypto-shred) and leaves a tombstone, so that later commands say
//! [`VaultError::StoreWiped`] instead of asking for a passphrase. Secrets
//! (passphrase, key file bytes, key-encryption key, data key) are zeroized
//! when dropped.
//!
//! What it is not: it does not encrypt values (the store's `AeadSeal`
//! does), prompt for passphrases (the agent does), or protect a store
//! against someone who can watch the unlocked agent's memory. Throttling
//! slows guessing through the agent only; a copied header is attacked
//! offline at the cost of Argon2id per guess. Relays do not use it:
//! headquarters and office relays are not encrypted at rest.
//!
//! ```
//! use fieldsync_vault::{Credential, KdfParams, Vault, VaultError, shred};
//! use fieldsync_identity::Timestamp;
//! use zeroize::Zeroizing;
//!
//! let dir = tempfile::tempdir()?;
//! let vault = Vault::new(dir.path()).with_kdf_params(KdfParams::DANGER_TEST_ONLY);
//! let right = Credential::passphrase(Zeroizing::new("correct horse".to_owned()));
//! let key = vault.create(&right)?;
//! let again = vault.unlock(&right, &mut |_, _| {})?;
//! assert_eq!(key.as_bytes(), again.as_bytes());
//!
//! let wrong = Credential::passphrase(Zeroizing::new("battery staple".to_owned()));
//! assert!(matches!(vault.unlock(&wrong, &mut |_, _| {}), Err(VaultError::WrongPassphrase { .. })));
//!
//! shred(dir.path(), "lost on a train", Timestamp::from_millis(1_700_000_000_000))?;
//! assert!(matches!(vault.unlock(&right, &mut |_, _| {}), Err(VaultError::StoreWiped { .. })));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

mod error;
mod files;
mod header;
mod kdf;
mod throttle;
mod vault;

pub use error::VaultError;
pub use header::LockKind;
pub use kdf::KdfParams;
pub use throttle::Throttle;
pub use vault::{
    ATTEMPTS_FILE, Credential, DataKey, KEY_HEADER_FILE, MIN_KEY_FILE_LEN, MIN_PASSPHRASE_CHARS,
    STORE_FILE, Shredded, TOMBSTONE_FILE, Vault, VaultState, create_key_file, shred,
};
