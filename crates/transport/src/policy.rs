//! [`PeerPolicy`]: which ed25519 keys this node agrees to talk to.

use std::fmt;
use std::sync::Arc;

use fieldsync_identity::{DeviceId, PublicKey};

/// The callback type behind a [`PeerPolicy`].
pub type PolicyFn = dyn Fn(&PublicKey) -> Result<(), String> + Send + Sync;

/// Decides whether a peer's ed25519 key is acceptable, during the TLS handshake.
///
/// The default accepts every key: the FieldSync protocol checks the peer's
/// headquarters-signed certificate in its first message, so the transport only
/// needs to know *which* key it talks to. Pin a key when the caller already
/// knows whom it dials (a relay's key), to fail before any session starts.
///
/// The callback sees the key from the peer's certificate before the TLS
/// signature that proves possession has been checked; the handshake fails
/// unless that signature then verifies. Keep the callback a pure decision.
#[derive(Clone)]
pub struct PeerPolicy(Arc<PolicyFn>);

impl PeerPolicy {
    /// Accepts every ed25519 key.
    pub fn accept_any() -> Self {
        Self(Arc::new(|_| Ok(())))
    }

    /// Accepts exactly `expected`.
    pub fn pinned(expected: PublicKey) -> Self {
        Self(Arc::new(move |key| {
            if *key == expected {
                Ok(())
            } else {
                Err(format!(
                    "expected device {}, got device {}",
                    DeviceId::from_public_key(expected).short(),
                    DeviceId::from_public_key(*key).short()
                ))
            }
        }))
    }

    /// Uses a callback: `Ok(())` accepts, `Err(reason)` refuses.
    pub fn from_fn(f: impl Fn(&PublicKey) -> Result<(), String> + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// Applies the policy to `key`.
    pub fn check(&self, key: &PublicKey) -> Result<(), String> {
        (self.0)(key)
    }
}

impl Default for PeerPolicy {
    fn default() -> Self {
        Self::accept_any()
    }
}

impl From<Arc<PolicyFn>> for PeerPolicy {
    fn from(f: Arc<PolicyFn>) -> Self {
        Self(f)
    }
}

impl fmt::Debug for PeerPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PeerPolicy(..)")
    }
}
