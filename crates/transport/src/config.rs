//! rustls and quinn configurations: TLS 1.3 only, ring only, ALPN `fieldsync/1`,
//! mutual authentication by ed25519 keys, no 0-RTT, no session resumption.

use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{IdleTimeout, TransportConfig, VarInt, congestion};
use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::server::NoServerSessionStorage;
use rustls::{ClientConfig, ServerConfig};

use crate::ALPN;
use crate::danger::{ClientKeyVerifier, ServerKeyVerifier};
use crate::error::TransportError;
use crate::identity::Identity;
use crate::policy::PeerPolicy;
use crate::settings::{Congestion, TransportSettings};

/// Bytes buffered for one connection attempt before the accept loop takes it.
const INCOMING_BUFFER: u64 = 64 * 1024;
/// Bytes buffered for all connection attempts the accept loop has not taken.
const INCOMING_BUFFER_TOTAL: u64 = 8 * 1024 * 1024;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn config_error(e: impl std::fmt::Display) -> TransportError {
    TransportError::Config(e.to_string())
}

/// The server side, shared by the QUIC endpoint and the TCP acceptor.
pub(crate) fn server_tls(
    identity: &Identity,
    policy: PeerPolicy,
) -> Result<Arc<ServerConfig>, TransportError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_error)?
        .with_client_cert_verifier(ClientKeyVerifier::new(policy))
        .with_single_cert(identity.cert_chain(), identity.private_key())
        .map_err(config_error)?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    // No 0-RTT, no tickets, no resumption: every connection is a full
    // handshake, so every peer key goes through the verifier and the policy.
    config.max_early_data_size = 0;
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(NoServerSessionStorage {});
    Ok(Arc::new(config))
}

/// The client side for one connection attempt (the verifier records why it refused).
pub(crate) fn client_tls(
    identity: &Identity,
    verifier: Arc<ServerKeyVerifier>,
) -> Result<Arc<ClientConfig>, TransportError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_error)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(identity.cert_chain(), identity.private_key())
        .map_err(config_error)?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    config.enable_early_data = false;
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// QUIC timers and limits for field links.
pub(crate) fn transport_config(
    settings: &TransportSettings,
) -> Result<Arc<TransportConfig>, TransportError> {
    settings.validate()?;
    let idle = IdleTimeout::try_from(settings.idle_timeout).map_err(config_error)?;
    let mut config = TransportConfig::default();
    config
        .max_idle_timeout(Some(idle))
        .keep_alive_interval(Some(settings.keep_alive))
        .initial_rtt(settings.initial_rtt)
        .max_concurrent_bidi_streams(VarInt::from_u32(settings.max_concurrent_bidi_streams))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .stream_receive_window(VarInt::from_u32(settings.stream_receive_window))
        .receive_window(VarInt::from_u32(settings.connection_receive_window))
        .send_window(settings.send_window)
        .datagram_receive_buffer_size(None);
    let window = settings.initial_window;
    match settings.congestion {
        Congestion::Cubic => {
            let mut c = congestion::CubicConfig::default();
            c.initial_window(window);
            config.congestion_controller_factory(Arc::new(c));
        }
        Congestion::NewReno => {
            let mut c = congestion::NewRenoConfig::default();
            c.initial_window(window);
            config.congestion_controller_factory(Arc::new(c));
        }
        Congestion::Bbr => {
            let mut c = congestion::BbrConfig::default();
            c.initial_window(window);
            config.congestion_controller_factory(Arc::new(c));
        }
    }
    Ok(Arc::new(config))
}

pub(crate) fn quic_server(
    tls: Arc<ServerConfig>,
    settings: &TransportSettings,
) -> Result<quinn::ServerConfig, TransportError> {
    let crypto = QuicServerConfig::try_from(tls).map_err(config_error)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config
        .transport_config(transport_config(settings)?)
        // Field devices move between networks: follow them to new addresses.
        .migration(true)
        // Connection attempts waiting for the accept loop: it takes each at
        // once and refuses what exceeds `max_pending_handshakes`, so this
        // only bounds a burst the loop has not reached yet.
        .max_incoming(settings.max_pending_handshakes.saturating_mul(2))
        // No 0-RTT: a client sends little before the server answers.
        .incoming_buffer_size(INCOMING_BUFFER)
        .incoming_buffer_size_total(INCOMING_BUFFER_TOTAL);
    Ok(config)
}

pub(crate) fn quic_client(
    tls: Arc<ClientConfig>,
    transport: Arc<TransportConfig>,
) -> Result<quinn::ClientConfig, TransportError> {
    let crypto = QuicClientConfig::try_from(tls).map_err(config_error)?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport);
    Ok(config)
}
