//! Plumbing shared by the node's integration tests: peers with real redb
//! files and certificates from a test headquarters, a relay served on
//! loopback, connectors.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use fieldsync_identity::{
    CERTIFICATE_VERSION, CertificateBody, Compartment, DeviceCertificate, HqRoot, Role, SecretKey,
    Timestamp,
};
use fieldsync_node::{Mode, Node, NodeConfig, now};
use fieldsync_protocol::NodeRole;
use fieldsync_store::{NewDevice, Store, StoreKind};
use fieldsync_transport::{Connector, Identity, Listener, PeerPolicy, TransportSettings};
use tempfile::TempDir;

/// A running node with its transport identity and certificate.
pub(crate) struct Peer {
    pub(crate) node: Node,
    pub(crate) identity: Identity,
    pub(crate) cert: DeviceCertificate,
}

/// What a peer's certificate grants.
#[derive(Clone, Copy)]
pub(crate) struct Grant<'a> {
    pub(crate) role: Role,
    pub(crate) office: &'a str,
    pub(crate) read: &'a [&'a str],
    pub(crate) write: &'a [&'a str],
}

/// A certificate from `hq` for the device of `store`, valid from an hour
/// ago for a day.
pub(crate) fn certify(
    hq: &HqRoot,
    store: &Store,
    serial: u64,
    grant: Grant<'_>,
) -> DeviceCertificate {
    let units = |names: &[&str]| -> Vec<Compartment> {
        names.iter().map(|u| Compartment::new(u).unwrap()).collect()
    };
    hq.issue(CertificateBody {
        version: CERTIFICATE_VERSION,
        serial,
        issuer: hq.public(),
        device: store.device().id(),
        name: format!("node-{serial}"),
        office: grant.office.into(),
        role: grant.role,
        read: units(grant.read),
        write: units(grant.write),
        not_before: Timestamp::from_millis(now().as_millis() - 3_600_000),
        not_after: Timestamp::from_millis(now().as_millis() + 86_400_000),
    })
    .unwrap()
}

/// A node on a new store file in `dir` (device or relay by the role), its
/// key from `seed`, certified by `hq` with serial `seed`; `config` may
/// change the node's configuration.
pub(crate) fn peer_with(
    dir: &TempDir,
    hq: &HqRoot,
    seed: u8,
    grant: Grant<'_>,
    config: impl FnOnce(NodeConfig) -> NodeConfig,
) -> Peer {
    let relay = grant.role == Role::Relay;
    let store = Store::create(
        &dir.path().join(format!("node-{seed}.redb")),
        NewDevice {
            seed: [seed; 32],
            name: &format!("node-{seed}"),
            epoch: [seed; 16],
            now: now(),
            kind: if relay {
                StoreKind::Relay
            } else {
                StoreKind::Device
            },
        },
    )
    .unwrap();
    let cert = certify(hq, &store, u64::from(seed), grant);
    let role = if relay {
        NodeRole::Relay
    } else {
        NodeRole::Device
    };
    let identity = Identity::new(&SecretKey::from_seed(&[seed; 32])).unwrap();
    let node = Node::start(
        store,
        config(NodeConfig::new(role, cert.clone(), hq.public())),
    )
    .unwrap();
    Peer {
        node,
        identity,
        cert,
    }
}

/// Serves `relay` on a loopback port, every connection a live session.
pub(crate) async fn serve(relay: &Peer) -> SocketAddr {
    let listener = Listener::bind(
        "127.0.0.1:0".parse().unwrap(),
        &relay.identity,
        &TransportSettings::default(),
        PeerPolicy::accept_any(),
    )
    .await
    .unwrap();
    let addr = listener.local_addr();
    let node = relay.node.clone();
    tokio::spawn(async move {
        while let Ok(conn) = listener.accept().await {
            let node = node.clone();
            tokio::spawn(async move { node.run_connection(conn, Mode::Live).await });
        }
    });
    addr
}

/// A connector with `p`'s identity and the default settings.
pub(crate) fn connector(p: &Peer) -> Connector {
    Connector::new(
        &p.identity,
        TransportSettings::default(),
        PeerPolicy::accept_any(),
    )
    .unwrap()
}
