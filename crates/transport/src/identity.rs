//! [`Identity`]: a node's ed25519 device key as a TLS certificate and private key.

use std::fmt;

use fieldsync_identity::{DeviceId, PublicKey, SecretKey};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ED25519};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use zeroize::Zeroizing;

use crate::danger::public_key_from_cert;
use crate::error::TransportError;

/// The PKCS#8 v2 (RFC 5958 / RFC 8410) DER header of an ed25519 private key,
/// up to the 32 seed bytes.
const PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x53, // SEQUENCE, 83 bytes
    0x02, 0x01, 0x01, // INTEGER 1 (v2: the public key is included)
    0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, // AlgorithmIdentifier: Ed25519
    0x04, 0x22, 0x04, 0x20, // OCTET STRING { OCTET STRING, 32 bytes }
];
/// Between the seed and the public key: `[1] BIT STRING`, 0 unused bits.
const PKCS8_PUBLIC_PREFIX: [u8; 5] = [0xa1, 0x23, 0x03, 0x21, 0x00];

/// Encodes an ed25519 seed and its public key as PKCS#8 v2 DER.
fn pkcs8_der(seed: &[u8; 32], public: &[u8; 32]) -> Zeroizing<Vec<u8>> {
    let mut der = Zeroizing::new(Vec::with_capacity(85));
    der.extend_from_slice(&PKCS8_PREFIX);
    der.extend_from_slice(seed);
    der.extend_from_slice(&PKCS8_PUBLIC_PREFIX);
    der.extend_from_slice(public);
    der
}

/// This node's TLS identity: a self-signed X.509 certificate that carries
/// its ed25519 device key, and that key in PKCS#8 form.
///
/// The certificate is only an envelope for the key (see [`crate::danger`]):
/// its name is `fieldsync <device>` and its dates are rcgen's defaults.
#[derive(Clone)]
pub struct Identity {
    public: PublicKey,
    cert: CertificateDer<'static>,
    key: Zeroizing<Vec<u8>>,
}

impl Identity {
    /// Builds the certificate for `secret`.
    pub fn new(secret: &SecretKey) -> Result<Self, TransportError> {
        let public = secret.public();
        let key = pkcs8_der(&secret.to_seed(), public.as_bytes());
        let key_pair = KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(key.as_slice()),
            &PKCS_ED25519,
        )
        .map_err(|e| TransportError::Identity(format!("ed25519 key rejected: {e}")))?;
        let mut params = CertificateParams::new(Vec::<String>::new())
            .map_err(|e| TransportError::Identity(e.to_string()))?;
        let mut name = DistinguishedName::new();
        name.push(
            DnType::CommonName,
            format!("fieldsync {}", DeviceId::from_public_key(public).short()),
        );
        params.distinguished_name = name;
        let cert = params
            .self_signed(&key_pair)
            .map_err(|e| TransportError::Identity(format!("cannot sign the certificate: {e}")))?
            .der()
            .clone();
        // The peer will read the key back from the certificate: make sure it can.
        if public_key_from_cert(&cert).ok() != Some(public) {
            return Err(TransportError::Identity(
                "the generated certificate does not carry the device key".to_owned(),
            ));
        }
        Ok(Self { public, cert, key })
    }

    /// The ed25519 public key the certificate carries.
    pub fn public(&self) -> PublicKey {
        self.public
    }

    /// The device id of that key.
    pub fn device(&self) -> DeviceId {
        DeviceId::from_public_key(self.public)
    }

    /// The self-signed certificate, DER.
    pub fn certificate_der(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The certificate chain to present: the one self-signed certificate.
    pub fn cert_chain(&self) -> Vec<CertificateDer<'static>> {
        vec![self.cert.clone()]
    }

    /// A copy of the private key, PKCS#8 DER, for a rustls configuration.
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.to_vec()))
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("device", &self.device())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn certificate_carries_the_device_key() {
        let secret = SecretKey::from_seed(&[9; 32]);
        let id = Identity::new(&secret).unwrap();
        assert_eq!(id.public(), secret.public());
        assert_eq!(
            public_key_from_cert(id.certificate_der()).unwrap(),
            secret.public()
        );
        assert_eq!(id.cert_chain().len(), 1);
        assert!(!format!("{id:?}").contains("key:"));
    }

    #[test]
    fn pkcs8_layout() {
        let der = pkcs8_der(&[1; 32], &[2; 32]);
        assert_eq!(der.len(), 85);
        assert_eq!(usize::from(der[1]) + 2, der.len());
    }
}
