//! Peers that must not get in: refused keys (both ways), wrong ALPN, and
//! certificates that do not carry an ed25519 key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use fieldsync_transport::{Listener, PeerPolicy, Protocols, TransportError};
use rustls::SignatureScheme;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::sign::{CertifiedKey, Signer, SigningKey};

const QUIC_AND_TCP: Protocols = Protocols {
    quic: true,
    tcp: true,
};
const TCP_ONLY: Protocols = Protocols {
    quic: false,
    tcp: true,
};

/// A policy that refuses everything and counts how often it was asked.
fn refuse_all() -> (PeerPolicy, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let policy = PeerPolicy::from_fn(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
        Err("device is not enrolled".to_owned())
    });
    (policy, calls)
}

/// Counts calls and accepts.
fn counting() -> (PeerPolicy, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let policy = PeerPolicy::from_fn(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
        Ok(())
    });
    (policy, calls)
}

async fn accept_yields_nothing(listener: &Listener) {
    let accepted = tokio::time::timeout(Duration::from_millis(500), listener.accept()).await;
    assert!(accepted.is_err(), "accept yielded {accepted:?}");
}

#[tokio::test]
async fn server_policy_refuses_the_client_key() {
    for protocols in [QUIC_AND_TCP, TCP_ONLY] {
        let (policy, calls) = refuse_all();
        let listener = listener(20, policy, protocols).await;
        let client = connector(21);
        // TLS 1.3: the server judges the client's certificate after the client
        // has finished; the refusal arrives by connect or by the first read.
        let err = bounded("refused session", async {
            let mut conn = client.connect(listener.local_addr()).await?;
            conn.read_frame().await
        })
        .await
        .unwrap_err();
        assert!(
            matches!(&err, TransportError::RejectedByPeer(m) if m.contains("access_denied")),
            "{protocols:?}: {err:?}"
        );
        assert!(err.to_string().contains("refused"), "{err}");
        accept_yields_nothing(&listener).await;
        assert!(calls.load(Ordering::SeqCst) >= 1);
    }
}

#[tokio::test]
async fn client_policy_refuses_the_server_key() {
    for protocols in [QUIC_AND_TCP, TCP_ONLY] {
        let listener = listener(22, PeerPolicy::accept_any(), protocols).await;
        let client = connector(23);
        let wrong = identity(99).public();
        let err = bounded(
            "connect",
            client.connect_pinned(listener.local_addr(), wrong),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&err, TransportError::Refused(m) if m.contains("expected device")),
            "{protocols:?}: {err:?}"
        );
        accept_yields_nothing(&listener).await;

        // The same client with a policy callback.
        let (policy, calls) = refuse_all();
        let err = bounded(
            "connect",
            client.connect_with_policy(listener.local_addr(), &policy),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&err, TransportError::Refused(m) if m == "device is not enrolled"),
            "{err:?}"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}

#[tokio::test]
async fn wrong_alpn_is_refused_over_quic() {
    let (policy, _) = counting();
    let listener = listener(24, policy, QUIC_AND_TCP).await;
    let endpoint = raw_quic_endpoint();
    let config = raw_quic_config(raw_client_config(&identity(25), b"other/1"));
    let connecting = endpoint
        .connect_with(config, listener.local_addr(), "127.0.0.1")
        .unwrap();
    let err = bounded("connect", connecting).await.unwrap_err();
    match &err {
        quinn::ConnectionError::ConnectionClosed(close) => {
            // 0x100 + no_application_protocol (120)
            assert_eq!(u64::from(close.error_code), 0x178, "{err}");
        }
        other => panic!("expected a CONNECTION_CLOSE, got {other:?}"),
    }
    accept_yields_nothing(&listener).await;
}

#[tokio::test]
async fn wrong_or_missing_alpn_is_refused_over_tcp() {
    let listener = listener(26, PeerPolicy::accept_any(), TCP_ONLY).await;
    let addr = listener.local_addr();
    let name = ServerName::IpAddress(addr.ip().into());

    let config = raw_client_config(&identity(27), b"other/1");
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let err = bounded(
        "TLS handshake",
        tokio_rustls::TlsConnector::from(config).connect(name.clone(), tcp),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("NoApplicationProtocol"), "{err}");

    // Plain TLS lets a client offer no ALPN at all; the listener drops it.
    let mut config = (*raw_client_config(&identity(27), b"")).clone();
    config.alpn_protocols.clear();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = bounded(
        "TLS handshake",
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .unwrap();
    let read = bounded("read", fieldsync_transport::read_frame(&mut tls)).await;
    assert!(!matches!(read, Ok(Some(_))), "{read:?}");
    accept_yields_nothing(&listener).await;
}

fn p256() -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["p256".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    (cert.der().clone(), der)
}

/// Waits for the outcome of a raw QUIC attempt the server should refuse:
/// either the handshake fails, or the connection is closed right after it.
async fn refusal(connecting: quinn::Connecting) -> quinn::ConnectionError {
    bounded("refusal", async {
        match connecting.await {
            Err(e) => e,
            Ok(conn) => conn.closed().await,
        }
    })
    .await
}

fn tls13_client() -> rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert> {
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(fieldsync_transport::danger::ServerKeyVerifier::new(
            PeerPolicy::accept_any(),
        ))
}

#[tokio::test]
async fn a_p256_client_certificate_is_refused() {
    let (policy, calls) = counting();
    let listener = listener(28, policy, QUIC_AND_TCP).await;
    let (cert, key) = p256();
    let mut config = tls13_client()
        .with_client_auth_cert(vec![cert], key)
        .unwrap();
    config.alpn_protocols = vec![fieldsync_transport::ALPN.to_vec()];
    let endpoint = raw_quic_endpoint();
    let connecting = endpoint
        .connect_with(
            raw_quic_config(Arc::new(config)),
            listener.local_addr(),
            "127.0.0.1",
        )
        .unwrap();
    // The server asks for ed25519 signatures only, so an honest P-256 client
    // has nothing it can present: the server requires a certificate.
    let err = refusal(connecting).await;
    assert!(
        matches!(&err, quinn::ConnectionError::ConnectionClosed(c) if u64::from(c.error_code) == 0x100 + 116),
        "{err:?}"
    );
    accept_yields_nothing(&listener).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "the policy never saw a key"
    );
}

/// A client key that claims to sign with ed25519 but presents a P-256
/// certificate, so that the server's verifier sees the P-256 certificate.
#[derive(Debug)]
struct LyingKey(Arc<dyn SigningKey>);

#[derive(Debug)]
struct LyingSigner(Box<dyn Signer>);

impl SigningKey for LyingKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        let inner = self
            .0
            .choose_scheme(&[SignatureScheme::ECDSA_NISTP256_SHA256])?;
        offered
            .contains(&SignatureScheme::ED25519)
            .then(|| Box::new(LyingSigner(inner)) as Box<dyn Signer>)
    }

    fn algorithm(&self) -> rustls::SignatureAlgorithm {
        rustls::SignatureAlgorithm::ED25519
    }
}

impl Signer for LyingSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        self.0.sign(message)
    }

    fn scheme(&self) -> SignatureScheme {
        SignatureScheme::ED25519
    }
}

#[derive(Debug)]
struct AlwaysPresent(Arc<CertifiedKey>);

impl rustls::client::ResolvesClientCert for AlwaysPresent {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[tokio::test]
async fn a_p256_certificate_posing_as_ed25519_is_refused_by_the_verifier() {
    let (policy, calls) = counting();
    let listener = listener(29, policy, QUIC_AND_TCP).await;
    let (cert, key) = p256();
    let signing = rustls::crypto::ring::sign::any_supported_type(&key).unwrap();
    let certified = CertifiedKey::new(vec![cert], Arc::new(LyingKey(signing)));
    let mut config =
        tls13_client().with_client_cert_resolver(Arc::new(AlwaysPresent(Arc::new(certified))));
    config.alpn_protocols = vec![fieldsync_transport::ALPN.to_vec()];
    let endpoint = raw_quic_endpoint();
    let connecting = endpoint
        .connect_with(
            raw_quic_config(Arc::new(config)),
            listener.local_addr(),
            "127.0.0.1",
        )
        .unwrap();
    let err = refusal(connecting).await;
    // 0x100 + bad_certificate (42): the `danger` verifier found no ed25519 key.
    assert!(
        matches!(&err, quinn::ConnectionError::ConnectionClosed(c) if u64::from(c.error_code) == 0x100 + 42),
        "{err:?}"
    );
    accept_yields_nothing(&listener).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "the policy never saw a key"
    );
}

#[tokio::test]
async fn accepted_keys_pass_the_policy_once_per_handshake() {
    let (policy, calls) = counting();
    let listener = listener(30, policy, QUIC_AND_TCP).await;
    let _echo = spawn_echo(listener.clone());
    let client = connector(31);
    for _ in 0..3 {
        let mut conn = bounded("connect", client.connect(listener.local_addr()))
            .await
            .unwrap();
        assert_eq!(ask(&mut conn, "ping").await, "ping");
        conn.close(0, "bye").await;
    }
    // No session resumption: every connection was a full handshake.
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}
