//! Plumbing the network benchmarks share: certificates for test worlds and
//! a relay node served on loopback.

use std::net::SocketAddr;

use fieldsync_identity::{
    CERTIFICATE_VERSION, CertificateBody, CertificateError, Compartment, DeviceCertificate,
    DeviceId, HqRoot, Role, Timestamp,
};
use fieldsync_node::{Mode, Node, now};
use fieldsync_transport::{Identity, Listener, PeerPolicy, TransportError, TransportSettings};

/// A number from the environment variable `name`, or `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A certificate for `device` with `role`, reading (and, unless a liaison
/// or relay, writing) `compartments`, valid from an hour ago for a day.
pub fn issue(
    hq: &HqRoot,
    device: DeviceId,
    serial: u64,
    role: Role,
    compartments: &[&str],
) -> Result<DeviceCertificate, CertificateError> {
    let read = compartments
        .iter()
        .map(|c| Compartment::new(c))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertificateError::Invalid(e.to_string()))?;
    let write = if role.can_author_changes() {
        read.clone()
    } else {
        Vec::new()
    };
    hq.issue(CertificateBody {
        version: CERTIFICATE_VERSION,
        serial,
        issuer: hq.public(),
        device,
        name: format!("node-{serial}"),
        office: "rome".into(),
        role,
        read,
        write,
        not_before: Timestamp::from_millis(now().as_millis() - 3_600_000),
        not_after: Timestamp::from_millis(now().as_millis() + 86_400_000),
    })
}

/// Serves `relay` on a loopback port, every connection a live session;
/// returns the address. Call inside a tokio runtime.
pub async fn serve_relay(relay: &Node, identity: &Identity) -> Result<SocketAddr, TransportError> {
    let listener = Listener::bind(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        identity,
        &TransportSettings::default(),
        PeerPolicy::accept_any(),
    )
    .await?;
    let addr = listener.local_addr();
    let node = relay.clone();
    tokio::spawn(async move {
        while let Ok(conn) = listener.accept().await {
            let node = node.clone();
            tokio::spawn(async move { node.run_connection(conn, Mode::Live).await });
        }
    });
    Ok(addr)
}
