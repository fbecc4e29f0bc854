//! Helpers shared by the transport tests: identities, fast settings, an echo server.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fieldsync_identity::SecretKey;
use fieldsync_transport::danger::ServerKeyVerifier;
use fieldsync_transport::{
    Connection, Connector, Identity, Listener, PeerPolicy, Protocols, TransportSettings,
};
use tokio::task::JoinHandle;

/// Every test step is bounded by this.
pub const STEP: Duration = Duration::from_secs(15);

pub fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

pub fn identity(seed: u8) -> Identity {
    Identity::new(&SecretKey::from_seed(&[seed; 32])).unwrap()
}

/// Default settings with a short QUIC wait so that fallback tests are quick.
pub fn settings() -> TransportSettings {
    TransportSettings {
        quic_connect_timeout: Duration::from_millis(700),
        tcp_connect_timeout: Duration::from_secs(3),
        handshake_timeout: Duration::from_secs(5),
        ..TransportSettings::default()
    }
}

/// Runs `f` and fails the test if it takes longer than [`STEP`].
pub async fn bounded<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(STEP, f)
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than {STEP:?}"))
}

pub async fn listener(seed: u8, policy: PeerPolicy, protocols: Protocols) -> Arc<Listener> {
    Arc::new(
        Listener::bind_with(loopback(), &identity(seed), &settings(), policy, protocols)
            .await
            .unwrap(),
    )
}

pub fn connector(seed: u8) -> Connector {
    Connector::bind(
        loopback(),
        &identity(seed),
        settings(),
        PeerPolicy::accept_any(),
    )
    .unwrap()
}

/// Accepts connections and echoes frames; `peer?`, `addr?` and `kind?`
/// are answered with the server's view of the connection.
pub fn spawn_echo(listener: Arc<Listener>) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok(conn) = listener.accept().await {
            tokio::spawn(echo(conn));
        }
    })
}

async fn echo(mut conn: Connection) {
    while let Ok(Some(frame)) = conn.read_frame().await {
        let reply = match frame.as_slice() {
            b"peer?" => conn.peer().to_string().into_bytes(),
            b"addr?" => conn.remote_addr().to_string().into_bytes(),
            b"kind?" => conn.kind().to_string().into_bytes(),
            _ => frame,
        };
        if conn.write_frame(&reply).await.is_err() {
            break;
        }
    }
}

/// Sends `question`, returns the reply as text.
pub async fn ask(conn: &mut Connection, question: &str) -> String {
    bounded("a round trip", async {
        conn.write_frame(question.as_bytes()).await.unwrap();
        String::from_utf8(conn.read_frame().await.unwrap().unwrap()).unwrap()
    })
    .await
}

/// A plain rustls client configuration with `identity`'s certificate, the
/// crate's server verifier (any key) and the given ALPN.
pub fn raw_client_config(identity: &Identity, alpn: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(ServerKeyVerifier::new(PeerPolicy::accept_any()))
    .with_client_auth_cert(identity.cert_chain(), identity.private_key())
    .unwrap();
    config.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(config)
}

/// A bare quinn client endpoint on loopback.
pub fn raw_quic_endpoint() -> quinn::Endpoint {
    quinn::Endpoint::client(loopback()).unwrap()
}

/// A quinn client configuration around a rustls one.
pub fn raw_quic_config(tls: Arc<rustls::ClientConfig>) -> quinn::ClientConfig {
    quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap(),
    ))
}
