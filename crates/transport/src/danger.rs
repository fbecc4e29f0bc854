//! Certificate verifiers that replace the web PKI with ed25519 keys.
//!
//! This module is named `danger` (after rustls' own `dangerous()` builders)
//! because it turns off everything a web PKI verifier checks: no chain, no
//! trust anchors, no names, no validity dates. What it checks instead:
//!
//! 1. the peer sent exactly one certificate;
//! 2. its SubjectPublicKeyInfo is an ed25519 key (anything else is refused
//!    with [`TransportError::PeerKey`]);
//! 3. the [`PeerPolicy`] accepts that key ([`TransportError::Refused`]);
//! 4. the TLS 1.3 `CertificateVerify` signature verifies under that key with
//!    the `ed25519` scheme; TLS 1.2 signatures are refused.
//!
//! The certificate is only an envelope for the key, as with raw public keys
//! (RFC 7250): the handshake signature proves that the peer holds the secret
//! key, and the FieldSync protocol then checks the headquarters-signed device
//! certificate in its first message.
//!
//! Both verifiers remember why they refused a peer, so that the connecting
//! side can report [`TransportError::Refused`] or [`TransportError::PeerKey`]
//! instead of a bare TLS error.

use std::sync::{Arc, Mutex, PoisonError};

use fieldsync_identity::{DeviceId, PublicKey};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, PeerMisbehaved, SignatureScheme,
};

use crate::error::TransportError;
use crate::policy::PeerPolicy;

/// DER prefix of an ed25519 SubjectPublicKeyInfo (RFC 8410): `SEQUENCE {
/// SEQUENCE { OID 1.3.101.112 }, BIT STRING (0 unused bits) }`, followed by
/// the 32 key bytes.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Extracts the ed25519 public key from a DER X.509 certificate.
///
/// Fails with [`TransportError::PeerKey`] when the certificate does not parse
/// or carries any other kind of key. The certificate's own signature, names
/// and dates are not looked at.
pub fn public_key_from_cert(cert: &CertificateDer<'_>) -> Result<PublicKey, TransportError> {
    let parsed = ParsedCertificate::try_from(cert)
        .map_err(|e| TransportError::PeerKey(format!("not a valid X.509 certificate: {e}")))?;
    let spki = parsed.subject_public_key_info();
    let key = spki
        .as_ref()
        .strip_prefix(ED25519_SPKI_PREFIX.as_slice())
        .filter(|key| key.len() == 32)
        .ok_or_else(|| {
            TransportError::PeerKey(
                "the certificate's key is not ed25519 (FieldSync peers are identified by \
                 their ed25519 device key)"
                    .to_owned(),
            )
        })?;
    PublicKey::from_slice(key)
        .map_err(|e| TransportError::PeerKey(format!("invalid ed25519 key: {e}")))
}

/// Extracts the ed25519 key from a peer's certificate list, which must hold exactly one certificate.
pub fn peer_key_from_certs(certs: &[CertificateDer<'_>]) -> Result<PublicKey, TransportError> {
    match certs {
        [cert] => public_key_from_cert(cert),
        [] => Err(TransportError::PeerKey(
            "the peer presented no certificate".to_owned(),
        )),
        more => Err(TransportError::PeerKey(format!(
            "expected exactly one self-signed certificate, got {}",
            more.len()
        ))),
    }
}

/// Why a verifier refused a peer (the rustls error loses this).
#[derive(Debug, Clone)]
enum Rejection {
    PeerKey(String),
    Refused(String),
}

/// The part shared by the client and server verifiers.
#[derive(Debug)]
struct KeyCheck {
    policy: PeerPolicy,
    algorithms: WebPkiSupportedAlgorithms,
    rejection: Mutex<Option<Rejection>>,
}

impl KeyCheck {
    fn new(policy: PeerPolicy) -> Self {
        Self {
            policy,
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
            rejection: Mutex::new(None),
        }
    }

    fn reject(&self, rejection: Rejection) {
        *self
            .rejection
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(rejection);
    }

    fn rejection(&self) -> Option<TransportError> {
        let guard = self
            .rejection
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        guard.as_ref().map(|r| match r {
            Rejection::PeerKey(m) => TransportError::PeerKey(m.clone()),
            Rejection::Refused(m) => TransportError::Refused(m.clone()),
        })
    }

    /// Steps 1–3: one certificate, an ed25519 key, accepted by the policy.
    fn check_certificate(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<PublicKey, rustls::Error> {
        if !intermediates.is_empty() {
            let msg = format!(
                "expected exactly one self-signed certificate, got {}",
                intermediates.len() + 1
            );
            tracing::info!(reason = %msg, "refusing peer certificate");
            self.reject(Rejection::PeerKey(msg));
            return Err(CertificateError::BadEncoding.into());
        }
        let key = match public_key_from_cert(end_entity) {
            Ok(key) => key,
            Err(e) => {
                tracing::info!(reason = %e, "refusing peer certificate");
                self.reject(Rejection::PeerKey(e.to_string()));
                return Err(CertificateError::BadEncoding.into());
            }
        };
        if let Err(reason) = self.policy.check(&key) {
            let device = DeviceId::from_public_key(key).short();
            tracing::info!(peer = %device, %reason, "policy refused peer key");
            self.reject(Rejection::Refused(reason));
            // Sent to the peer as `access_denied`, without our reason text.
            return Err(CertificateError::ApplicationVerificationFailure.into());
        }
        Ok(key)
    }

    /// Step 4: the TLS 1.3 handshake signature, ed25519 only.
    fn verify_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if dss.scheme != SignatureScheme::ED25519 {
            return Err(PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme.into());
        }
        // The certificate was checked in `check_certificate`; check again that
        // it is ed25519 so this function stands on its own.
        if let Err(e) = public_key_from_cert(cert) {
            self.reject(Rejection::PeerKey(e.to_string()));
            return Err(CertificateError::BadEncoding.into());
        }
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }
}

fn tls12_refused() -> rustls::Error {
    rustls::Error::General("TLS 1.2 signatures are refused: FieldSync speaks TLS 1.3 only".into())
}

/// Verifies a server's certificate on the connecting side. See the module docs.
#[derive(Debug)]
pub struct ServerKeyVerifier(KeyCheck);

impl ServerKeyVerifier {
    /// A verifier applying `policy` to the server's key.
    pub fn new(policy: PeerPolicy) -> Arc<Self> {
        Arc::new(Self(KeyCheck::new(policy)))
    }

    /// Why this verifier refused the server, if it did.
    pub fn rejection(&self) -> Option<TransportError> {
        self.0.rejection()
    }
}

impl ServerCertVerifier for ServerKeyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.0.check_certificate(end_entity, intermediates)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// Verifies a client's certificate on the accepting side; client authentication is mandatory.
#[derive(Debug)]
pub struct ClientKeyVerifier(KeyCheck);

impl ClientKeyVerifier {
    /// A verifier applying `policy` to each client's key.
    pub fn new(policy: PeerPolicy) -> Arc<Self> {
        Arc::new(Self(KeyCheck::new(policy)))
    }

    /// Why this verifier last refused a client, if it did. A listener
    /// shares one verifier among all clients, so this is only a hint there.
    pub fn rejection(&self) -> Option<TransportError> {
        self.0.rejection()
    }
}

impl ClientCertVerifier for ClientKeyVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0.check_certificate(end_entity, intermediates)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use fieldsync_identity::SecretKey;
    use rustls::pki_types::UnixTime;

    use super::*;
    use crate::Identity;

    fn identity(seed: u8) -> Identity {
        Identity::new(&SecretKey::from_seed(&[seed; 32])).unwrap()
    }

    fn p256_cert() -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let params = rcgen::CertificateParams::new(vec!["p256".to_owned()]).unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn extracts_the_ed25519_key() {
        let id = identity(7);
        assert_eq!(
            public_key_from_cert(id.certificate_der()).unwrap(),
            SecretKey::from_seed(&[7; 32]).public()
        );
    }

    #[test]
    fn rejects_other_key_types_and_garbage() {
        assert!(matches!(
            public_key_from_cert(&p256_cert()),
            Err(TransportError::PeerKey(m)) if m.contains("not ed25519")
        ));
        let garbage = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
        assert!(matches!(
            public_key_from_cert(&garbage),
            Err(TransportError::PeerKey(_))
        ));
        assert!(matches!(
            peer_key_from_certs(&[]),
            Err(TransportError::PeerKey(_))
        ));
    }

    #[test]
    fn verifier_checks_chain_length_key_type_and_policy() {
        let good = identity(1);
        let other = identity(2);
        let verifier = ClientKeyVerifier::new(PeerPolicy::pinned(good.public()));
        let now = UnixTime::now();

        assert!(
            verifier
                .verify_client_cert(good.certificate_der(), &[], now)
                .is_ok()
        );
        assert!(verifier.rejection().is_none());

        let err = verifier
            .verify_client_cert(other.certificate_der(), &[], now)
            .unwrap_err();
        assert_eq!(
            err,
            rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
        );
        assert!(matches!(
            verifier.rejection(),
            Some(TransportError::Refused(_))
        ));

        let err = verifier
            .verify_client_cert(&p256_cert(), &[], now)
            .unwrap_err();
        assert_eq!(
            err,
            rustls::Error::InvalidCertificate(CertificateError::BadEncoding)
        );
        assert!(matches!(
            verifier.rejection(),
            Some(TransportError::PeerKey(_))
        ));

        let chain = [other.certificate_der().clone()];
        assert!(
            verifier
                .verify_client_cert(good.certificate_der(), &chain, now)
                .is_err()
        );
        assert!(verifier.supported_verify_schemes() == vec![SignatureScheme::ED25519]);
    }
}
