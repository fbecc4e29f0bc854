//! `demo`: a complete field exercise on loopback, in a temporary directory,
//! with the real parts: headquarters serving over QUIC, three enrolled
//! devices with their own stores and endpoints, offline edits that
//! conflict, reconnection, the merged record, receipts, a revoked
//! device refused, and an attaché office relay that serves its two devices
//! through an uplink outage and then forwards everything to headquarters.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use fieldsync_case::{CaseKind, ChangeHash, Priority, Status};
use fieldsync_identity::{CaseId, DeviceCertificate, DeviceId};
use fieldsync_node::{ConnOutcome, Mode, Node, NodeConfig};
use fieldsync_protocol::NodeRole;
use fieldsync_server::admin::{AdminContext, AdminRequest, Enrollment, error_line, execute};
use fieldsync_server::hq::{self, Setup};
use fieldsync_server::keys::{self, DataDir};
use fieldsync_server::serve::{ConfigFile, Running, ServeError, ServeOptions};
use fieldsync_store::{NewCase, NewDevice, Store, StoreKind};
use fieldsync_transport::{Connector, Identity, PeerPolicy, TransportError, TransportSettings};
use fieldsync_view::{DeviceNames, Format};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// One enrolled device of the exercise.
struct Device {
    label: &'static str,
    node: Node,
    connector: Connector,
    id: DeviceId,
}

/// A relay served in this process (headquarters or the office).
struct Relay {
    /// The address it listens on.
    addr: SocketAddr,
    /// Its engine, for reading its store.
    node: Node,
    /// Tells `serve` to stop.
    stop: oneshot::Sender<()>,
    /// The `serve` task.
    task: JoinHandle<Result<()>>,
}

impl Relay {
    /// Stops serving, as Ctrl-C would: sessions closed, store flushed and closed.
    async fn stop(self) -> Result<()> {
        let _ = self.stop.send(());
        self.task.await?
    }
}

/// Headquarters while it serves: its data directory (for enrollment), its
/// relay, and its public key.
struct Headquarters {
    dir: DataDir,
    relay: Relay,
    key: fieldsync_identity::PublicKey,
}

/// How long the exercise waits for a relay to hear from another.
const PATIENCE: Duration = Duration::from_secs(30);

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
        let store = new_device_store(root, label)?;
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
                lease_days: None,
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
    let headquarters = Headquarters {
        relay: start_relay(
            &dir,
            ServeOptions::resolve(Some("127.0.0.1:0"), None, &ConfigFile::default())?,
        )
        .await?,
        dir: dir.clone(),
        key: init.hq,
    };
    let (addr, hq_node) = (headquarters.relay.addr, headquarters.relay.node.clone());
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
        report(d, HQ, sync(d, addr).await?);
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
        report(d, HQ, sync(d, addr).await?);
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
    report(rome, HQ, sync(rome, addr).await?);

    let office = office_exercise(root, &headquarters, &mut names, case, rome, supervisor).await?;

    headquarters.relay.stop().await?;
    for d in devices.iter().chain(&office) {
        d.node.shutdown().await;
    }
    Ok(())
}

/// Steps 10 to 15: an attaché office relay in Rome, enrolled by
/// headquarters for the relay role, serves two devices through an uplink
/// outage; when the uplink returns, headquarters receives everything,
/// verified and attributed to its devices, and the office's devices receive
/// what headquarters did meanwhile. Returns the office's devices, for the
/// caller to shut down.
async fn office_exercise(
    root: &Path,
    hq: &Headquarters,
    names: &mut DeviceNames,
    case: CaseId,
    rome: &Device,
    supervisor: &Device,
) -> Result<Vec<Device>> {
    say(
        "10. The attaché office in Rome sets up its own relay; headquarters enrolls it and two office devices",
    );
    let office_dir = DataDir::new(root.join("office-rome"));
    let relay_id =
        hq::init_office(&office_dir, "rome-office-relay").map_err(|e| anyhow!(error_line(&e)))?;
    let office_cert = root.join("office-rome.cert");
    let general = vec!["general".parse()?];
    let relay_label = "Rome office relay";
    enroll_at(
        hq,
        relay_id,
        relay_label,
        "relay",
        Some(general),
        &office_cert,
    )
    .await?;
    names.insert(relay_id, relay_label);
    println!(
        "   {relay_label:<21} {} enrolled as relay for compartment general (the office's own relay)",
        relay_id.short()
    );
    let mut devices = Vec::new();
    for (label, who) in [
        ("Rome desk", "analyst, Rome office"),
        ("Rome handheld", "field agent, Rome office"),
    ] {
        let store = new_device_store(root, label)?;
        let id = store.device().id();
        let out = root.join(format!("{}.cert", id.short()));
        enroll_at(hq, id, label, "field", None, &out).await?;
        let cert = keys::read_certificate(&out, &hq.key)?;
        println!("   {label:<21} {} enrolled as field ({who})", id.short());
        names.insert(id, label);
        devices.push(start_device(label, store, cert, hq.key)?);
    }
    let [desk, handheld] = &devices[..] else {
        bail!("two office devices expected");
    };

    say("11. The office relay serves its devices, with its uplink to headquarters");
    let mut opts = ServeOptions::resolve(
        Some("127.0.0.1:0"),
        None,
        &ConfigFile {
            upstream: Some(hq.relay.addr.to_string()),
            ..ConfigFile::default()
        },
    )?;
    opts.cert = Some(office_cert);
    let office = start_relay(&office_dir, opts).await?;
    let office_addr = office.addr;
    let hq_heads = hq
        .relay
        .node
        .with_engine(move |e| e.store().case_record(&case).map(|r| r.heads))
        .await??;
    let took = wait_until_held(
        &office.node,
        case,
        &hq_heads,
        "the office relay receives the case from headquarters",
    )
    .await?;
    println!(
        "   {relay_label:<21} listening on {office_addr}, uplink to headquarters at {}",
        hq.relay.addr
    );
    println!(
        "   {relay_label:<21} received case {} from headquarters in {} ms",
        case.short(),
        took.as_millis()
    );
    for d in [desk, handheld] {
        sync_and_report(d, (OFFICE, office_addr), case, &hq_heads, "the case").await?;
    }

    say(
        "12. The uplink fails; the office relay keeps serving, and its devices keep working through it",
    );
    office.stop().await?;
    let office = start_relay(
        &office_dir,
        ServeOptions::resolve(Some(&office_addr.to_string()), None, &ConfigFile::default())?,
    )
    .await?;
    println!(
        "   {relay_label:<21} restarted on {office_addr} without its uplink: headquarters is out of reach"
    );
    let (desk_id, now) = (desk.id, fieldsync_server::now());
    let desk_note = edit(
        desk,
        case,
        "note: \"Dealer's warehouse found in Trastevere.\"",
        move |d| d.add_note(desk_id, now, "Dealer's warehouse found in Trastevere."),
    )
    .await?;
    sync_and_report(desk, (OFFICE, office_addr), case, &[], "").await?;
    sync_and_report(
        handheld,
        (OFFICE, office_addr),
        case,
        &[desk_note],
        "Rome desk's note",
    )
    .await?;
    let (handheld_id, now) = (handheld.id, fieldsync_server::now());
    let handheld_note = edit(
        handheld,
        case,
        "note: \"Two trucks with Mexican plates at the warehouse.\"",
        move |d| {
            d.add_note(
                handheld_id,
                now,
                "Two trucks with Mexican plates at the warehouse.",
            )
        },
    )
    .await?;
    sync_and_report(handheld, (OFFICE, office_addr), case, &[], "").await?;
    sync_and_report(
        desk,
        (OFFICE, office_addr),
        case,
        &[handheld_note],
        "Rome handheld's note",
    )
    .await?;
    let from_office = [desk_note, handheld_note];

    say(
        "13. Meanwhile at headquarters: the supervisor acts, and nothing of the office's work arrives",
    );
    let (supervisor_id, now) = (supervisor.id, fieldsync_server::now());
    let from_hq = [edit(
        supervisor,
        case,
        "status active; note: \"Mexican customs asked to hold the container.\"",
        move |d| {
            d.set_status(Status::Active)?;
            d.add_note(
                supervisor_id,
                now,
                "Mexican customs asked to hold the container.",
            )
        },
    )
    .await?];
    report(supervisor, HQ, sync(supervisor, hq.relay.addr).await?);
    let (held, named) = {
        let hashes = from_office.to_vec();
        let office_ids = [desk.id, handheld.id];
        hq.relay
            .node
            .with_engine(move |e| {
                let s = e.store();
                let mut held = 0;
                for h in &hashes {
                    held += usize::from(s.has_change(&case, h)?);
                }
                let named = s
                    .case_history(&case)?
                    .iter()
                    .filter(|h| h.device.is_some_and(|d| office_ids.contains(&d)))
                    .count();
                Ok::<_, anyhow::Error>((held, named))
            })
            .await??
    };
    if held != 0 || named != 0 {
        bail!(
            "headquarters holds {held} of the office's changes ({named} in its history) while the uplink is down"
        );
    }
    println!(
        "   headquarters holds none of the office's {} new changes: its history of the case names neither Rome desk nor Rome handheld",
        from_office.len()
    );

    say(
        "14. The uplink returns: headquarters receives the office's changes, each verified and attributed",
    );
    office.stop().await?;
    let opts = ServeOptions::resolve(
        Some(&office_addr.to_string()),
        None,
        &ConfigFile {
            upstream: Some(hq.relay.addr.to_string()),
            ..ConfigFile::default()
        },
    )?;
    let office = start_relay(&office_dir, opts).await?;
    let start = Instant::now();
    wait_until_held(
        &hq.relay.node,
        case,
        &from_office,
        "headquarters receives the office's changes",
    )
    .await?;
    wait_until_held(
        &office.node,
        case,
        &from_hq,
        "the office relay receives headquarters' change",
    )
    .await?;
    println!(
        "   {relay_label:<21} restarted on {office_addr} with its uplink: it and headquarters hold each other's changes after {} ms",
        start.elapsed().as_millis()
    );
    let ids = [desk.id, handheld.id];
    let (history, carried, verified) = {
        let new: Vec<ChangeHash> = from_office.iter().chain(&from_hq).copied().collect();
        hq.relay
            .node
            .with_engine(move |e| {
                let s = e.store();
                let history: Vec<_> = s
                    .case_history(&case)?
                    .into_iter()
                    .filter(|h| new.contains(&h.hash))
                    .collect();
                let mut carried = Vec::new();
                for id in ids {
                    carried.push(s.peer(&id)?.and_then(|p| p.carried_by));
                }
                let verified = s.verify_all(fieldsync_server::now())?;
                Ok::<_, anyhow::Error>((history, carried, verified))
            })
            .await??
    };
    println!(
        "   -- headquarters' history since the uplink failed (each change verified against its device's signature)"
    );
    print!(
        "{}",
        indent(&fieldsync_view::history(&history, names, Format::Text)?)
    );
    if history.len() != from_office.len() + from_hq.len() {
        bail!("headquarters' history lacks some of the changes made during the outage");
    }
    if carried.iter().all(|c| *c == Some(relay_id)) {
        println!(
            "   Rome desk and Rome handheld never reached headquarters themselves: relay {} ({relay_label}) carried their changes",
            relay_id.short()
        );
    } else {
        let say = |c: &Option<DeviceId>| c.map_or("nobody".to_owned(), |d| names.label(&d));
        println!(
            "   headquarters records Rome desk's changes as carried by {}, Rome handheld's by {}",
            carried.first().map_or("nobody".to_owned(), say),
            carried.get(1).map_or("nobody".to_owned(), say)
        );
    }
    println!(
        "   headquarters re-verifies every stored signature: {} change(s) of {} case(s), {}",
        verified.changes,
        verified.cases,
        if verified.problems.is_empty() {
            "all valid".to_owned()
        } else {
            verified.problems.join("; ")
        }
    );
    if !verified.problems.is_empty() {
        bail!("headquarters holds a change that does not verify");
    }

    say("15. The office's devices receive what headquarters did meanwhile; everyone converges");
    for d in [desk, handheld] {
        sync_and_report(
            d,
            (OFFICE, office_addr),
            case,
            &from_hq,
            "the supervisor's status and note",
        )
        .await?;
    }
    for d in [supervisor, rome] {
        sync_and_report(
            d,
            (HQ, hq.relay.addr),
            case,
            &from_office,
            "the office's two notes",
        )
        .await?;
    }
    let record = hq
        .relay
        .node
        .with_engine(move |e| e.store().case_record(&case))
        .await??;
    let mut same = true;
    for d in [desk, handheld, supervisor, rome] {
        let r = d
            .node
            .with_engine(move |e| e.store().case_record(&case))
            .await??;
        same &= r == record;
    }
    println!(
        "   headquarters and every device in service hold the same merged record ({} notes, status {}): {}",
        record.notes.len(),
        record.status,
        if same { "yes" } else { "NO" }
    );
    if !same {
        bail!("the office's devices and headquarters did not converge");
    }
    office.stop().await?;
    Ok(devices)
}

/// Enrolls `device` at headquarters, for the Rome office, while
/// headquarters serves: the request runs on its engine thread, as
/// `fieldsync-server enroll` does through the control socket. The
/// certificate is written to `out`.
async fn enroll_at(
    hq: &Headquarters,
    device: DeviceId,
    name: &str,
    role: &str,
    read: Option<Vec<fieldsync_identity::Compartment>>,
    out: &Path,
) -> Result<()> {
    let dir = hq.dir.clone();
    let request = AdminRequest::Enroll(Box::new(Enrollment {
        device,
        name: name.into(),
        office: "rome".into(),
        role: role.parse()?,
        read,
        write: None,
        days: 30,
        lease_days: None,
        out: out.to_owned(),
    }));
    hq.relay
        .node
        .with_engine(move |e| {
            AdminContext::load(e.store(), &dir)
                .and_then(|ctx| execute(&ctx, &request))
                .map(|_| ())
                .map_err(|e| error_line(&e))
        })
        .await?
        .map_err(|e| anyhow!(e))
}

/// Serves the relay in `dir` with `opts` on this runtime, as `serve` does;
/// returns once it listens (and its uplink, if any, is dialing).
///
/// A relay restarted in the same process on the port it just left may find
/// the port still held for a moment (the stopped relay's QUIC connections
/// drain before their socket is released), so a port already in use is
/// tried again for a few seconds.
async fn start_relay(dir: &DataDir, opts: ServeOptions) -> Result<Relay> {
    let start = Instant::now();
    loop {
        match try_start_relay(dir, opts.clone()).await {
            Err(e) if port_in_use(&e) && start.elapsed() < Duration::from_secs(5) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            result => return result,
        }
    }
}

/// Whether `e` is a listening port still in use.
fn port_in_use(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<ServeError>(),
        Some(ServeError::Transport(TransportError::Bind { source, .. }))
            if source.kind() == std::io::ErrorKind::AddrInUse
    )
}

/// One attempt of [`start_relay`].
async fn try_start_relay(dir: &DataDir, opts: ServeOptions) -> Result<Relay> {
    let (ready_tx, ready_rx) = oneshot::channel::<(SocketAddr, Node)>();
    let (stop, stop_rx) = oneshot::channel::<()>();
    let dir = dir.clone();
    let task = tokio::spawn(async move {
        fieldsync_server::serve::serve(
            &dir,
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
    match ready_rx.await {
        Ok((addr, node)) => Ok(Relay {
            addr,
            node,
            stop,
            task,
        }),
        // `serve` gave up before listening: its error says why.
        Err(_) => {
            task.await??;
            bail!("the relay stopped before it listened")
        }
    }
}

/// A new device store in `root`, named after `label`.
fn new_device_store(root: &Path, label: &str) -> Result<Store> {
    Ok(Store::create(
        &root.join(format!("{}.redb", label.replace(' ', "-").to_lowercase())),
        NewDevice {
            seed: random()?,
            name: label,
            epoch: random()?,
            now: fieldsync_server::now(),
            kind: StoreKind::Device,
        },
    )?)
}

/// Whether `node` holds every change of `case` in `hashes`.
async fn holds(node: &Node, case: CaseId, hashes: &[ChangeHash]) -> Result<bool> {
    let hashes = hashes.to_vec();
    node.with_engine(move |e| {
        for h in &hashes {
            if !e.store().has_change(&case, h)? {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await?
}

/// Waits until `node` holds every change of `case` in `hashes` (a relay
/// hearing from another in the background); returns how long it took.
async fn wait_until_held(
    node: &Node,
    case: CaseId,
    hashes: &[ChangeHash],
    what: &str,
) -> Result<Duration> {
    let start = Instant::now();
    while !holds(node, case, hashes).await? {
        if start.elapsed() > PATIENCE {
            bail!("{what}: not within {} s", PATIENCE.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(start.elapsed())
}

/// Syncs `d` with the relay at `addr` and prints one line; when `expect` is
/// not empty, checks that `d` now holds those changes of `case` and says it
/// received `what`. A failed sync fails the exercise.
async fn sync_and_report(
    d: &Device,
    (relay, addr): (&str, SocketAddr),
    case: CaseId,
    expect: &[ChangeHash],
    what: &str,
) -> Result<()> {
    let outcome = sync(d, addr).await?;
    if let Some(e) = outcome.error {
        bail!("{}: sync with {relay} failed: {e}", d.label);
    }
    if expect.is_empty() {
        report(d, relay, outcome);
        return Ok(());
    }
    if !holds(&d.node, case, expect).await? {
        bail!(
            "{}: synced with {relay} but did not receive {what}",
            d.label
        );
    }
    println!(
        "   {:<21} synced with {relay} over QUIC: received {what}",
        d.label
    );
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

/// The relay a device syncs with, as the exercise names it.
const HQ: &str = "headquarters";
/// See [`HQ`].
const OFFICE: &str = "the office relay";

fn report(d: &Device, relay: &str, o: ConnOutcome) {
    match o.error {
        None => println!("   {:<21} synced with {relay} over QUIC", d.label),
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
) -> Result<ChangeHash> {
    let hash = d
        .node
        .with_engine(move |e| e.store().edit_case(&case, fieldsync_server::now(), what, f))
        .await??
        .ok_or_else(|| anyhow!("{}: the edit \"{what}\" changed nothing", d.label))?;
    println!("   {:<21} {what}", d.label);
    Ok(hash)
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("   {l}\n")).collect()
}

fn short_key(hex: &str) -> String {
    hex.chars().take(16).collect::<String>() + "…"
}
