//! Worlds the scenarios share: a headquarters root, relays on real redb
//! files, devices, cases with history, and the same cases as plain
//! Automerge documents for the per-document baseline.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use automerge::AutoCommit;
use fieldsync_case::{CaseKind, Field, decode_change};
use fieldsync_identity::{CaseId, DeviceCertificate, HqRoot, Role, SecretKey};
use fieldsync_node::{Node, NodeConfig, now};
use fieldsync_protocol::NodeRole;
use fieldsync_store::{NewCase, NewDevice, Store, StoreKind};
use fieldsync_transport::{Connection, Connector, Identity, PeerPolicy, TransportSettings};

use crate::net::issue;

/// The compartment every case of the shared worlds lives in.
pub const COMPARTMENT: &str = "general";

/// A headquarters root from a fixed seed (runs are repeatable).
pub fn hq() -> HqRoot {
    HqRoot::from_secret(SecretKey::from_seed(&[201; 32]))
}

/// A relay's store on a real redb file under `dir`.
pub fn relay_store(dir: &Path, name: &str, seed: u8) -> Result<Store> {
    Ok(Store::create(
        &dir.join(name),
        NewDevice {
            seed: [seed; 32],
            name,
            epoch: [seed; 16],
            now: now(),
            kind: StoreKind::Relay,
        },
    )?)
}

/// A device's store in memory (its medium is not what the network
/// scenarios measure), from a seed derived from `n`.
pub fn device_store(n: u64) -> Result<Store> {
    let mut seed = [7u8; 32];
    seed[..8].copy_from_slice(&n.to_le_bytes());
    let mut epoch = [7u8; 16];
    epoch[..8].copy_from_slice(&n.to_le_bytes());
    Ok(Store::create_in_memory(NewDevice {
        seed,
        name: &format!("device-{n}"),
        epoch,
        now: now(),
        kind: StoreKind::Device,
    })?)
}

/// A started node for `store` with a certificate for `role` over
/// `compartments`, and its transport identity.
pub fn start_node(
    hq: &HqRoot,
    store: Store,
    serial: u64,
    role: Role,
    compartments: &[&str],
) -> Result<(Node, Identity)> {
    let cert: DeviceCertificate = issue(hq, store.device().id(), serial, role, compartments)?;
    let identity = Identity::new(store.device().secret_key())?;
    let node_role = if role == Role::Relay {
        NodeRole::Relay
    } else {
        NodeRole::Device
    };
    let node = Node::start(store, NodeConfig::new(node_role, cert, hq.public()))?;
    Ok((node, identity))
}

/// A client endpoint for `identity` with the default settings.
pub fn connector(identity: &Identity) -> Result<Connector> {
    Ok(Connector::new(
        identity,
        TransportSettings::default(),
        PeerPolicy::accept_any(),
    )?)
}

/// Connects, backing off while the relay turns handshakes away (it
/// refuses beyond its limit of handshakes in progress), for up to 20 s.
pub async fn connect_retrying(connector: &Connector, addr: SocketAddr) -> Result<Connection> {
    let mut wait = Duration::from_millis(20);
    loop {
        match connector.connect(addr).await {
            Ok(c) => return Ok(c),
            Err(e) if wait < Duration::from_secs(10) => {
                eprintln!("retrying a connection after: {e}");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            Err(e) => return Err(e).context("connecting to the relay"),
        }
    }
}

/// The id of case `i` of a world (fixed, so runs are repeatable).
pub fn case_id(i: usize) -> CaseId {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&(i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
    id[8..].copy_from_slice(&(i as u64).to_le_bytes());
    CaseId::from_bytes(id)
}

/// Creates `d` cases in `store`, each with a triage edit and `history`
/// notes (so `2 + history` signed changes a case, counting the creation).
pub fn make_cases(store: &Store, d: usize, history: usize) -> Result<Vec<CaseId>> {
    make_cases_in(store, COMPARTMENT, 0..d, history)
}

/// Creates cases `range` (ids from [`case_id`]) in `store`, in
/// `compartment`, each with a triage edit and `history` notes.
pub fn make_cases_in(
    store: &Store,
    compartment: &str,
    range: std::ops::Range<usize>,
    history: usize,
) -> Result<Vec<CaseId>> {
    let me = store.device().id();
    let mut cases = Vec::with_capacity(range.len());
    for i in range {
        let id = store.create_case(
            &NewCase {
                id: case_id(i),
                kind: CaseKind::CriminalInvestigation,
                office: "rome",
                compartment,
                title: &format!("case {i}"),
            },
            now(),
        )?;
        store.edit_case(&id, now(), "triage", |doc| {
            doc.set_field(Field::Status, "active")?;
            doc.set_field(Field::Priority, "high")?;
            doc.set_field(
                Field::Summary,
                "Container flagged at the port; manifest under review.",
            )
        })?;
        for n in 0..history {
            store.edit_case(&id, now(), "note", |doc| {
                doc.add_note(
                    me,
                    now(),
                    &format!("observation {n}: vehicle seen at the north gate"),
                )
            })?;
        }
        cases.push(id);
    }
    Ok(cases)
}

/// One Automerge document per case, built from the store's signed changes
/// (so both paths hold exactly the same history).
pub fn docs_of(store: &Store, cases: &[CaseId]) -> Result<Vec<AutoCommit>> {
    cases
        .iter()
        .map(|c| {
            let changes = store
                .case_envelopes(c)?
                .iter()
                .map(|e| Ok(decode_change(e)?.payload().change().clone()))
                .collect::<Result<Vec<automerge::Change>>>()?;
            let mut d = AutoCommit::new();
            d.apply_changes(changes)?;
            Ok(d)
        })
        .collect()
}
