//! `demo`: a complete field exercise on loopback, in a temporary directory,
//! with the real parts: headquarters serving over QUIC, three enrolled
//! devices with their own stores and endpoints, offline edits that
//! conflict, reconnection, the merged record, receipts, and a revoked
//! device refused.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use fieldsync_case::{CaseKind, Priority};
use fieldsync_identity::{CaseId, DeviceCertificate, DeviceId};
use fieldsync_node::{ConnOutcome, Mode, Node, NodeConfig};
use fieldsync_protocol::NodeRole;
use fieldsync_server::admin::{AdminContext, AdminRequest, Enrollment, error_line, execute};
use fieldsync_server::hq::{self, Setup};
use fieldsync_server::keys::{self, DataDir};
use fieldsync_server::serve::{Running, ServeOptions};
use fieldsync_store::{NewCase, NewDevice, Store, StoreKind};
use fieldsync_transport::{Connector, Identity, PeerPolicy, TransportSettings};
use fieldsync_view::{DeviceNames, Format};
use tokio::sync::oneshot;

/// One enrolled device of the exercise.
struct Device {
    label: &'static str,
    node: Node,
    connector: Connector,
    id: DeviceId,
}

fn say(step: &str) {
    println!();
    println!("== {step}");
}

fn random<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| anyhow!("the OS random generator failed: {e}"))?;
    Ok(b)
}

/// A temporary directory removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn run() -> Result<()> {
    let scratch = Scratch(
        std::env::temp_dir().join(format!("fieldsync-demo-{}", hex::encode(random::<6>()?))),
    );
    std::fs::create_dir_all(&scratch.0)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(exercise(&scratch.0))?;
    println!();
    println!("The exercise is over; its temporary directory is removed.");
    Ok(())
}

async fn exercise(root: &Path) -> Result<()> {
    println!(
        "FieldSync field exercise, on this machine only (127.0.0.1), in {}",
        root.display()
    );

    say("1. Headquarters sets up its relay");
    let dir = DataDir::new(root.join("hq"));
    let init = hq::init(
        &dir,
        &Setup {
            name: "hq-relay".into(),
            compartments: vec!["general".parse()?],
            days: 30,
        },
    )
    .map_err(|e| anyhow!(error_line(&e)))?;
    println!("   headquarters key {}", short_key(&init.hq.to_string()));
    println!(
        "   relay key        {} (certified by headquarters for the relay role)",
        init.certificate.device().short()
    );

    say("2. Three devices create their keys; headquarters enrolls them");
    let mut names = DeviceNames::new();
    let mut certs = Vec::new();
    for (label, who, office, role) in [
        ("Rome laptop", "attaché, Rome", "rome", "field"),
        (
            "Mexico City handheld",
            "field agent, Mexico City",
            "mexico-city",
            "field",
        ),
        (
            "Supervisor desk",
            "supervisor, headquarters",
            "headquarters",
            "supervisor",
        ),
    ] {
        let store = Store::create(
            &root.join(format!("{}.redb", label.replace(' ', "-").to_lowercase())),
            NewDevice {
                seed: random()?,
                name: label,
                epoch: random()?,
                now: fieldsync_server::now(),
                kind: StoreKind::Device,
            },
        )?;
        let id = store.device().id();
        let out = root.join(format!("{}.cert", id.short()));
        let hq_store = Store::open(&dir.store())?;
        let ctx = AdminContext::load(&hq_store, &dir).map_err(|e| anyhow!(error_line(&e)))?;
        execute(
            &ctx,
            &AdminRequest::Enroll(Box::new(Enrollment {
                device: id,
                name: label.into(),
                office: office.into(),
                role: role.parse()?,
                read: None,
                write: None,
                days: 30,
                out: out.clone(),
            })),
        )
        .map_err(|e| anyhow!(error_line(&e)))?;
        drop(hq_store);
        let cert = keys::read_certificate(&out, &init.hq)?;
        println!("   {label:<21} {} enrolled as {role} ({who})", id.short());
        names.insert(id, label);
        certs.push((label, store, cert));
    }

    say("3. Headquarters starts serving (QUIC over UDP, TLS over TCP as fallback)");
    let (ready_tx, ready_rx) = oneshot::channel::<(SocketAddr, Node)>();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let serve_dir = dir.clone();
    let server = tokio::spawn(async move {
        let opts = ServeOptions::resolve(Some("127.0.0.1:0"), None, &Default::default())?;
        fieldsync_server::serve::serve(
            &serve_dir,
            &opts,
            move |r: &Running| {
                let _ = ready_tx.send((r.addr, r.node.clone()));
            },
            async {
                let _ = stop_rx.await;
            },
        )
        .await
        .map_err(anyhow::Error::from)
    });
    let (addr, hq_node) = ready_rx
        .await
        .map_err(|_| anyhow!("headquarters did not start"))?;
    println!("   listening on {addr}");

    let mut devices = Vec::new();
    for (label, store, cert) in certs {
        devices.push(start_device(label, store, cert, init.hq)?);
    }
    let [rome, mexico, supervisor] = &devices[..] else {
        bail!("three devices expected");
    };

    say("4. Rome opens a case and syncs; Mexico City and the supervisor sync and receive it");
    let case = rome
        .node
        .with_engine(|e| {
            let case = e.store().create_case(
                &NewCase {
                    id: CaseId::from_bytes(random()?),
                    kind: CaseKind::CulturalProperty,
                    office: "rome",
                    compartment: "general",
                    title: "Stele trafficking, Port of Veracruz",
                },
                fieldsync_server::now(),
            )?;
            e.store()
                .edit_case(&case, fieldsync_server::now(), "summary", |d| {
                    d.splice_summary(0, 0, "A Mayan stele offered for sale. ")
                })?;
            Ok::<_, anyhow::Error>(case)
        })
        .await??;
    println!(
        "   case {} \"Stele trafficking, Port of Veracruz\"",
        case.short()
    );
    for d in [rome, mexico, supervisor] {
        report(d, sync(d, addr).await?);
    }

    say("5. The link drops. Offline, both field devices edit the same case");
    edit(
        rome,
        case,
        "priority high; summary: \"Buyer identified in Rome.\"",
        |d| {
            d.set_priority(Priority::High)?;
            let len = d.summary_text()?.chars().count();
            d.splice_summary(len, 0, "Buyer identified in Rome. ")
        },
    )
    .await?;
    edit(
        mexico,
        case,
        "priority urgent; summary: \"Container leaves Friday.\"",
        |d| {
            d.set_priority(Priority::Urgent)?;
            let len = d.summary_text()?.chars().count();
            d.splice_summary(len, 0, "Container leaves Friday. ")
        },
    )
    .await?;
    for d in [rome, mexico] {
        let pending = d.node.with_engine(|e| e.store().outbox_len()).await??;
        println!("   {:<21} {pending} change(s) waiting for a link", d.label);
    }

    say("6. The link returns: each device syncs (Rome twice, to receive Mexico City's edit)");
    for d in [rome, mexico, rome, supervisor] {
        report(d, sync(d, addr).await?);
    }

    say("7. Headquarters' merged record: every edit kept, the conflict shown with both devices");
    let (record, conflicts, history) = hq_node
        .with_engine(move |e| {
            let s = e.store();
            Ok::<_, anyhow::Error>((
                s.case_record(&case)?,
                s.case_conflicts(&case)?,
                s.case_history(&case)?,
            ))
        })
        .await??;
    print!(
        "{}",
        indent(&fieldsync_view::record(&record, &names, Format::Text)?)
    );
    if conflicts.is_empty() {
        bail!("the concurrent edits should show as a conflict");
    }
    println!("   -- history (each change verified against its device's signature)");
    print!(
        "{}",
        indent(&fieldsync_view::history(&history, &names, Format::Text)?)
    );
    let same = {
        let mut all_same = true;
        for d in [rome, mexico, supervisor] {
            let r = d
                .node
                .with_engine(move |e| e.store().case_record(&case))
                .await??;
            all_same &= r == record;
        }
        all_same
    };
    println!(
        "   every device holds the same merged record: {}",
        if same { "yes" } else { "NO" }
    );
    if !same {
        bail!("the devices did not converge");
    }

    say("8. Receipts: what each device can prove headquarters holds");
    for d in [rome, mexico, supervisor] {
        let (head, receipt) = d
            .node
            .with_engine(|e| {
                let s = e.store();
                Ok::<_, anyhow::Error>((
                    s.log_head()?,
                    s.receipts()?.into_iter().max_by_key(|r| r.through),
                ))
            })
            .await??;
        match receipt {
            Some(r) => println!(
                "   {:<21} receipt signed by relay {}: holds this device's log through #{} of {head}, at {}",
                d.label,
                r.relay.short(),
                r.through,
                r.at
            ),
            None => println!("   {:<21} no receipt (nothing of its own to send)", d.label),
        }
    }

    say("9. The Mexico City handheld is reported lost: headquarters revokes it");
    let lost = mexico.id;
    let hq_dir = dir.clone();
    let out = hq_node
        .with_engine(move |e| {
            let dir = hq_dir;
            let r = AdminContext::load(e.store(), &dir).and_then(|ctx| {
                execute(
                    &ctx,
                    &AdminRequest::Revoke {
                        device: lost.to_string(),
                        reason: Some("reported lost in transit".into()),
                    },
                )
            });
            e.revocations_changed();
            r.map_err(|e| error_line(&e))
        })
        .await?
        .map_err(|e| anyhow!(e))?;
    print!("{}", indent(&out.output));
    let refused = sync(mexico, addr).await?;
    match refused.error {
        Some(e) => println!("   the handheld tries to sync and is refused: {e}"),
        None => bail!("the revoked handheld was not refused"),
    }
    report(rome, sync(rome, addr).await?);

    let _ = stop_tx.send(());
    server.await??;
    for d in &devices {
        d.node.shutdown().await;
    }
    Ok(())
}

fn start_device(
    label: &'static str,
    store: Store,
    cert: DeviceCertificate,
    hq: fieldsync_identity::PublicKey,
) -> Result<Device> {
    let identity = Identity::new(store.device().secret_key())?;
    let id = store.device().id();
    let node = Node::start(store, NodeConfig::new(NodeRole::Device, cert, hq))?;
    let connector = Connector::new(
        &identity,
        TransportSettings::default(),
        PeerPolicy::accept_any(),
    )?;
    Ok(Device {
        label,
        node,
        connector,
        id,
    })
}

async fn sync(d: &Device, addr: SocketAddr) -> Result<ConnOutcome> {
    let conn = d.connector.connect(addr).await?;
    tokio::time::timeout(
        Duration::from_secs(60),
        d.node.run_connection(conn, Mode::UntilSynced),
    )
    .await
    .map_err(|_| anyhow!("{}: sync did not finish within 60 s", d.label))
}

fn report(d: &Device, o: ConnOutcome) {
    match o.error {
        None => println!("   {:<21} synced with headquarters over QUIC", d.label),
        Some(e) => println!("   {:<21} sync failed: {e}", d.label),
    }
}

async fn edit(
    d: &Device,
    case: CaseId,
    what: &'static str,
    f: impl FnOnce(&mut fieldsync_case::CaseDoc) -> Result<(), fieldsync_case::CaseError>
    + Send
    + 'static,
) -> Result<()> {
    d.node
        .with_engine(move |e| {
            e.store()
                .edit_case(&case, fieldsync_server::now(), what, f)
                .map(|_| ())
        })
        .await??;
    println!("   {:<21} {what}", d.label);
    Ok(())
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("   {l}\n")).collect()
}

fn short_key(hex: &str) -> String {
    hex.chars().take(16).collect::<String>() + "…"
}
