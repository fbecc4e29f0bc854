//! The agent's network commands: enroll, sync, status.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use fieldsync_identity::{DeviceCertificate, DeviceId, Role, decode_signed};
use fieldsync_node::{
    Backoff, DialEvent, Dialer, Mode, Node, NodeConfig, NodeEvent, NodeEventKind,
};
use fieldsync_protocol::{Event, NodeRole, RelayedReceiptBody};
use fieldsync_store::{LeaseState, Store};
use fieldsync_transport::{Connector, Identity, PeerPolicy, TransportSettings};
use serde::Serialize;
use tokio::sync::broadcast;

use crate::commands::now;

/// Settings written by `enroll`.
const CERT: &str = "enroll/certificate";
const RELAYS: &str = "enroll/relays";

/// What `enroll` stored: the certificate (which names headquarters' key)
/// and the relays to try, in order.
struct Enrollment {
    cert: DeviceCertificate,
    relays: Vec<String>,
}

fn enrollment(store: &Store) -> Result<Enrollment> {
    let text = store.setting(CERT)?.ok_or_else(|| {
        anyhow!("this device is not enrolled: run `fieldsync-agent enroll --cert FILE --relay ADDR` with the certificate headquarters issued")
    })?;
    let cert = DeviceCertificate::from_pem_like_trusting_issuer(&text)
        .context("the stored certificate no longer parses; enroll again")?;
    let relays = store
        .setting(RELAYS)?
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    Ok(Enrollment { cert, relays })
}

/// Refuses to go on when this device's offline lease has run out (or its
/// clock was set back): case data stays closed until the next sync. A
/// device that is not enrolled, or whose certificate carries no lease, is
/// never refused.
pub(crate) fn check_lease(store: &Store) -> Result<()> {
    let Some(text) = store.setting(CERT)? else {
        return Ok(());
    };
    let cert = DeviceCertificate::from_pem_like_trusting_issuer(&text)
        .context("the stored certificate no longer parses; enroll again")?;
    store.check_lease(&cert, now())?;
    Ok(())
}

/// A wipe order headquarters signed for this device arrived: the session
/// closed, the order is stored as pending; the caller destroys the keys.
#[derive(Debug)]
pub(crate) struct WipeOrdered {
    /// The order's nonce (hex) and headquarters' reason.
    pub(crate) nonce: String,
    pub(crate) reason: String,
}

/// `enroll --cert FILE --relay ADDR...`
pub(crate) fn enroll(store: &Store, cert_file: &Path, relays: &[String]) -> Result<()> {
    if relays.is_empty() {
        bail!("give at least one relay address: --relay HOST:PORT");
    }
    for r in relays {
        if r.contains(',') || r.trim().is_empty() || !r.contains(':') {
            bail!("relay address {r:?} is not HOST:PORT");
        }
    }
    let text = std::fs::read_to_string(cert_file)
        .with_context(|| format!("cannot read {}", cert_file.display()))?;
    let cert = DeviceCertificate::from_pem_like_trusting_issuer(&text)
        .with_context(|| format!("{} is not a FieldSync certificate", cert_file.display()))?;
    let me = store.device().id();
    if cert.device() != me {
        bail!(
            "this certificate is for device {}, but this device is {}; ask headquarters for a certificate for {}",
            cert.device().short(),
            me.short(),
            me
        );
    }
    if cert.role() == Role::Relay {
        bail!(
            "this is a relay certificate; a device needs a field, supervisor or liaison certificate"
        );
    }
    cert.check_valid_at(now())?;
    store.set_setting(CERT, &cert.to_pem_like())?;
    store.set_setting(RELAYS, &relays.join(","))?;
    let body = cert.body();
    println!(
        "enrolled {} ({}) as {}, office {}",
        body.name,
        me.short(),
        body.role,
        body.office
    );
    println!("headquarters key {}", hex::encode(cert.issuer().as_bytes()));
    println!("reads {}; writes {}", list(&body.read), list(&body.write));
    println!("valid until {}", body.not_after);
    println!("relays {}", relays.join(", "));
    Ok(())
}

fn plural(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// A byte count for people: `512 B`, `1.2 KB`, `3.4 MB` (powers of 1000).
fn size(bytes: u64) -> String {
    match bytes {
        0..1_000 => format!("{bytes} B"),
        1_000..1_000_000 => format!("{:.1} KB", bytes as f64 / 1e3),
        _ => format!("{:.1} MB", bytes as f64 / 1e6),
    }
}

fn list<T: std::fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        return "nothing".into();
    }
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

async fn resolve(relays: &[String]) -> Result<Vec<SocketAddr>> {
    let mut out = Vec::new();
    for r in relays {
        match tokio::net::lookup_host(r.as_str()).await {
            Ok(addrs) => out.extend(addrs),
            Err(e) => tracing::warn!(relay = %r, error = %e, "cannot resolve"),
        }
    }
    if out.is_empty() {
        bail!("cannot resolve any relay address ({})", relays.join(", "));
    }
    Ok(out)
}

/// Counts what a session did, from the node's events.
#[derive(Debug, Default, Serialize)]
struct Tally {
    received: usize,
    quarantined: usize,
    acknowledged_through: u64,
    receipts: usize,
    /// How far a relay above the one this session is with holds this
    /// device's log, from the receipts that relay carried down.
    upstream_through: Option<u64>,
    /// A wipe order for this device arrived.
    #[serde(skip)]
    wipe: Option<WipeOrdered>,
}

impl Tally {
    fn add(&mut self, ev: &NodeEvent) {
        if let NodeEventKind::Session(e) = &ev.kind {
            match e {
                Event::Stored { report, .. } => {
                    self.received += report.stored;
                    self.quarantined += report.quarantined;
                }
                Event::Acknowledged { through, receipt } => {
                    self.acknowledged_through = self.acknowledged_through.max(*through);
                    self.receipts += usize::from(*receipt);
                }
                Event::RelayedReceipt { through, .. } => {
                    self.upstream_through = self.upstream_through.max(Some(*through));
                }
                Event::WipeOrdered { order } => {
                    self.wipe = Some(WipeOrdered {
                        nonce: order.nonce_hex()[..8].to_owned(),
                        reason: order.reason().to_owned(),
                    });
                }
                _ => {}
            }
        }
    }

    fn drain(&mut self, rx: &mut broadcast::Receiver<NodeEvent>) {
        while let Ok(ev) = rx.try_recv() {
            self.add(&ev);
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    // One worker: the agent holds one connection at a time, and the engine
    // runs on a thread of its own (each worker costs stack and an allocator arena).
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn start(store: Store, e: &Enrollment) -> Result<(Node, Connector)> {
    let identity = Identity::new(store.device().secret_key())?;
    let cfg = NodeConfig::new(NodeRole::Device, e.cert.clone(), *e.cert.issuer());
    let node = Node::start(store, cfg).context("cannot start the sync engine")?;
    let connector = Connector::new(
        &identity,
        TransportSettings::default(),
        PeerPolicy::accept_any(),
    )?;
    Ok((node, connector))
}

/// `sync`: connect to the first relay that answers, exchange logs, exit.
/// Returns the wipe order headquarters sent this device, if one came: the
/// caller destroys the keys (the store is closed by then).
pub(crate) fn sync(store: Store, timeout: Duration) -> Result<Option<WipeOrdered>> {
    let e = enrollment(&store)?;
    let pending_before = store.outbox_len()?;
    runtime()?.block_on(async move {
        let (node, connector) = start(store, &e)?;
        let addrs = resolve(&e.relays).await?;
        let dialer = Dialer::new(node.clone(), connector, addrs, Backoff::default());
        let (addr, conn) = dialer.connect_once(None).await.map_err(|err| {
            anyhow!("cannot reach any relay ({}): {err}; nothing is lost, run sync again when a link is up", e.relays.join(", "))
        })?;
        let transport = conn.kind();
        let mut rx = node.subscribe();
        let outcome = tokio::time::timeout(timeout, node.run_connection(conn, Mode::UntilSynced)).await;
        let mut tally = Tally::default();
        tally.drain(&mut rx);
        let pending_after = node
            .with_engine(|en| en.store().outbox_len())
            .await
            .map_err(|_| anyhow!("the sync engine stopped"))??;
        node.shutdown().await;
        if let Some(wipe) = tally.wipe.take() {
            return Ok(Some(wipe));
        }
        let outcome = outcome.map_err(|_| {
            anyhow!("sync did not finish within {} s; everything stored so far is kept, run sync again", timeout.as_secs())
        })?;
        if let Some(err) = outcome.error {
            bail!("sync with {addr} failed: {err}");
        }
        println!(
            "synced with relay {} at {addr} over {transport}, {} up / {} down",
            outcome.peer.short(),
            size(outcome.bytes_sent),
            size(outcome.bytes_received)
        );
        println!(
            "  sent {}, received {}{}",
            plural(pending_before.saturating_sub(pending_after), "change"),
            tally.received,
            if tally.quarantined > 0 {
                format!(", {} held in quarantine", tally.quarantined)
            } else {
                String::new()
            }
        );
        if pending_after == 0 {
            println!("  every change on this device is held by the relay (signed receipt kept)");
        } else {
            println!("  {pending_after} changes not yet acknowledged; run sync again");
        }
        if let Some(through) = tally.upstream_through {
            println!("  headquarters holds this device's changes through #{through} (its receipt, carried by the relay)");
        }
        Ok(None)
    })
}

/// `sync --watch`: stay connected, syncing whenever a relay is reachable,
/// until interrupted.
/// Returns the wipe order headquarters sent this device, if one came.
pub(crate) fn watch(store: Store) -> Result<Option<WipeOrdered>> {
    let e = enrollment(&store)?;
    runtime()?.block_on(async move {
        let (node, connector) = start(store, &e)?;
        // Names are looked up at every attempt: a device that starts
        // watching while offline finds its relays once a link appears.
        let dialer = Dialer::resolving(node.clone(), connector, e.relays.clone(), Backoff::default());
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let (ev_tx, mut ev_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut node_events = node.subscribe();
        let dialing = tokio::spawn(dialer.run(stop_rx, ev_tx));
        println!("watching: syncing with {} whenever reachable (Ctrl-C stops)", e.relays.join(", "));
        // One listener for the whole run: a Ctrl-C that arrives while an
        // event is being handled is not lost between two `select!`s.
        let interrupted = tokio::signal::ctrl_c();
        tokio::pin!(interrupted);
        let mut wipe = None;
        loop {
            tokio::select! {
                _ = &mut interrupted => break,
                Some(ev) = ev_rx.recv() => match ev {
                    DialEvent::Connected { addr, transport } => println!("connected to {addr} over {transport}"),
                    DialEvent::Unreachable { error } => println!("no relay reachable: {error}"),
                    DialEvent::SessionEnded(o) => match o.error {
                        Some(err) => println!("session ended: {err}"),
                        None => println!("session ended"),
                    },
                    DialEvent::Waiting { delay } => println!("next attempt in {:.1} s", delay.as_secs_f64()),
                    _ => {}
                },
                Ok(ev) = node_events.recv() => match ev.kind {
                    NodeEventKind::Synced => println!("synced with relay {}", ev.peer.short()),
                    NodeEventKind::Session(Event::Stored { report, .. }) if report.stored > 0 => {
                        println!("received {} changes", report.stored);
                    }
                    NodeEventKind::Session(Event::RelayedReceipt { upstream, through, .. }) => {
                        println!("relay {} holds this device's changes through #{through} (receipt carried by {})", upstream.short(), ev.peer.short());
                    }
                    NodeEventKind::Session(Event::WipeOrdered { order }) => {
                        wipe = Some(WipeOrdered { nonce: order.nonce_hex()[..8].to_owned(), reason: order.reason().to_owned() });
                        break;
                    }
                    _ => {}
                },
            }
        }
        let _ = stop_tx.send(true);
        let _ = dialing.await;
        node.shutdown().await;
        if wipe.is_none() {
            println!("stopped");
        }
        Ok(wipe)
    })
}

#[derive(Serialize)]
struct RelayStatus {
    device: String,
    name: String,
    office: String,
    headquarters: bool,
    last_contact: String,
    receipt_through: Option<u64>,
    receipt_at: Option<String>,
    /// The relay that carried this relay's receipt down, when it did not
    /// acknowledge to this device itself.
    receipt_via: Option<String>,
    holds_everything: bool,
}

/// How far one tier holds this device's log.
#[derive(Serialize)]
struct Safe {
    /// The relay (name) whose receipt says so.
    relay: String,
    /// Log position held through.
    through: u64,
    /// The relay's time of its durable commit.
    at: String,
    /// The relay that carried the receipt down, if another one did.
    via: Option<String>,
    /// Whether that is every change of this device's log.
    everything: bool,
}

#[derive(Serialize)]
struct Status {
    device: String,
    enrolled: bool,
    relays: Vec<String>,
    log_head: u64,
    pending: u64,
    relays_seen: Vec<RelayStatus>,
    /// The office relay holding the most of this device's log.
    safe_at_office: Option<Safe>,
    /// Headquarters' hold on this device's log, first-hand or carried
    /// down by an office.
    safe_at_headquarters: Option<Safe>,
    /// The latest time a relay acknowledged every change this device had.
    synced_up_to: Option<String>,
    /// The offline lease of this device's certificate (absent when not enrolled).
    lease: Option<LeaseState>,
    /// The last session in which a relay accepted this device.
    last_relay_contact: Option<String>,
}

/// The relay that carried a receipt down, if `bytes` is a relayed receipt.
fn carrier(bytes: &[u8]) -> Option<DeviceId> {
    decode_signed::<RelayedReceiptBody>(bytes)
        .ok()
        .map(|r| DeviceId::from_public_key(r.payload().value().relay))
}

/// `status [--json]`.
pub(crate) fn status(store: &Store, as_json: bool) -> Result<()> {
    let enrolled = enrollment(store).ok();
    let head = store.log_head()?;
    let pending = store.outbox_len()?;
    let hq = enrolled.as_ref().map(|e| *e.cert.issuer());
    let mut names = std::collections::BTreeMap::new();
    let mut relays = Vec::new();
    for (device, rec) in store.peers()? {
        let Some(hq) = hq else { break };
        let Ok(cert) = DeviceCertificate::from_bytes(&rec.certificate, &hq) else {
            continue;
        };
        names.insert(device, cert.name().to_owned());
        if cert.role() == Role::Relay {
            relays.push((device, rec, cert));
        }
    }
    let mut relays_seen = Vec::new();
    let mut safe_at_office: Option<Safe> = None;
    let mut safe_at_headquarters: Option<Safe> = None;
    for (device, rec, cert) in relays {
        let receipt = store.latest_receipt(&device)?;
        // A relay known only from another's word shows once it holds something.
        if rec.carried_by.is_some() && receipt.is_none() {
            continue;
        }
        let via = receipt
            .as_ref()
            .and_then(|r| carrier(&r.bytes))
            .map(|c| names.get(&c).cloned().unwrap_or_else(|| c.short()));
        if let Some(r) = &receipt {
            let safe = Safe {
                relay: cert.name().to_owned(),
                through: r.through,
                at: r.at.to_string(),
                via: via.clone(),
                everything: r.through >= head,
            };
            let tier = if cert.is_headquarters_relay() {
                &mut safe_at_headquarters
            } else {
                &mut safe_at_office
            };
            if tier.as_ref().is_none_or(|t| t.through < safe.through) {
                *tier = Some(safe);
            }
        }
        relays_seen.push(RelayStatus {
            device: device.to_string(),
            name: cert.name().to_owned(),
            office: cert.body().office.clone(),
            headquarters: cert.is_headquarters_relay(),
            last_contact: rec.last_contact.to_string(),
            receipt_through: receipt.as_ref().map(|r| r.through),
            receipt_at: receipt.as_ref().map(|r| r.at.to_string()),
            receipt_via: via,
            holds_everything: receipt.as_ref().is_some_and(|r| r.through >= head),
        });
    }
    let synced_up_to = store
        .receipts()?
        .iter()
        .filter(|r| r.through >= head)
        .map(|r| r.at)
        .max()
        .map(|t| t.to_string());
    let lease = match &enrolled {
        Some(e) => Some(store.lease_state(&e.cert, now())?),
        None => None,
    };
    let last_relay_contact = store.last_relay_contact()?.map(|t| t.to_string());
    let status = Status {
        lease,
        last_relay_contact,
        device: store.device().id().to_string(),
        enrolled: enrolled.is_some(),
        relays: enrolled.map(|e| e.relays).unwrap_or_default(),
        log_head: head,
        pending,
        relays_seen,
        safe_at_office,
        safe_at_headquarters,
        synced_up_to,
    };
    if as_json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    println!("device    {}", status.device);
    if !status.enrolled {
        println!("enrolled  no (run fieldsync-agent enroll --cert FILE --relay ADDR)");
    } else {
        println!("relays    {}", status.relays.join(", "));
    }
    println!(
        "pending   {} changes not yet acknowledged by a relay",
        status.pending
    );
    for r in &status.relays_seen {
        let held = match (&r.receipt_through, &r.receipt_at) {
            (Some(_), Some(at)) if r.holds_everything => {
                format!("holds every change (receipt {at})")
            }
            (Some(t), Some(at)) => format!("holds changes through #{t} (receipt {at})"),
            _ => "no receipt yet".into(),
        };
        let via = r
            .receipt_via
            .as_ref()
            .map(|v| format!(", carried by {v}"))
            .unwrap_or_default();
        println!(
            "relay     {} ({}, {}): last contact {}; {held}{via}",
            r.name,
            &r.device[..8],
            r.office,
            r.last_contact
        );
    }
    for (tier, safe) in [
        ("office", &status.safe_at_office),
        ("headquarters", &status.safe_at_headquarters),
    ] {
        let line = match safe {
            Some(s) if s.everything => format!("every change ({}, receipt {})", s.relay, s.at),
            Some(s) => format!(
                "changes through #{} of #{} ({}, receipt {})",
                s.through, status.log_head, s.relay, s.at
            ),
            None if tier == "office" && !status.relays_seen.iter().any(|r| !r.headquarters) => {
                "no office relay seen".into()
            }
            None => "nothing yet".into(),
        };
        let via = safe
            .as_ref()
            .and_then(|s| s.via.as_ref())
            .map(|v| format!(", carried by {v}"))
            .unwrap_or_default();
        println!("safe at {tier:<13}{line}{via}");
    }
    match &status.synced_up_to {
        Some(t) => println!("synced    up to {t}"),
        None if status.log_head == 0 => println!("synced    nothing to sync yet"),
        None => println!("synced    not yet: no relay holds every change of this device"),
    }
    let contact = status.last_relay_contact.as_deref().unwrap_or("never");
    match &status.lease {
        None | Some(LeaseState::Unleased) => {}
        Some(LeaseState::Ok {
            lease_days,
            expires_at,
            remaining_ms,
            ..
        }) => println!(
            "lease     {lease_days} days offline; {:.1} days left (case data closes {expires_at} unless this device syncs); last contact {contact}",
            *remaining_ms as f64 / 86_400_000.0
        ),
        Some(LeaseState::Expired {
            lease_days, since, ..
        }) => println!(
            "lease     ran out {since} ({lease_days} days offline): case data is closed until the next sync; last contact {contact}"
        ),
        Some(LeaseState::ClockSetBack { latest_seen, .. }) => println!(
            "lease     this machine's clock is behind the latest time seen ({latest_seen}): case data is closed until the clock is right or the next sync"
        ),
    }
    Ok(())
}
