//! Runs one command: `init` here; every other command is an
//! [`AdminRequest`], executed in this process, or, while a server holds the
//! store, by that server over its control socket.

use std::path::PathBuf;

use anyhow::{Context as _, Result, anyhow, bail};
use fieldsync_identity::{Compartment, DeviceId, Role};
use fieldsync_server::admin::{
    AdminContext, AdminRequest, AdminResponse, Enrollment, error_line, execute,
};
use fieldsync_server::hq::{self, Setup};
use fieldsync_server::keys::DataDir;
use fieldsync_server::serve::{ConfigFile, ServeOptions};
use fieldsync_store::{RepairOptions, Store, StoreError, StoreKind};

use crate::cli::{AdminCommand, CaseCommand, Cli, Command, QuarantineCommand};

fn data_dir(cli_data: Option<PathBuf>) -> Result<PathBuf> {
    match cli_data {
        Some(d) => Ok(d),
        None => dirs::data_dir()
            .map(|d| d.join("fieldsync-server"))
            .ok_or_else(|| {
                anyhow!("no data directory: pass --data DIR or set FIELDSYNC_SERVER_DATA")
            }),
    }
}

pub(crate) fn run(cli: Cli) -> Result<()> {
    let dir = DataDir::new(data_dir(cli.data)?);
    match cli.command {
        Command::Init {
            name, office: true, ..
        } => {
            let relay = hq::init_office(&dir, &name).map_err(|e| anyhow!(error_line(&e)))?;
            println!("relay  {relay}");
            println!(
                "an office relay: enroll it at headquarters (enroll --device {relay} --role relay --read C,...), then serve --upstream HQ_ADDR --cert FILE"
            );
            Ok(())
        }
        Command::Init {
            name,
            compartments,
            days,
            office: false,
        } => init(&dir, name, &compartments, days),
        Command::Serve {
            listen,
            max_connections,
            cache_size_mib,
            config,
            upstream,
            cert,
        } => serve(
            &dir,
            listen.as_deref(),
            max_connections,
            cache_size_mib,
            config,
            upstream,
            cert,
        ),
        Command::Demo => crate::demo::run(),
        Command::Repair { json } => repair(&dir, json),
        Command::Admin(cmd) => {
            let response = admin(&dir, &request(cmd)?)?;
            print!("{}", response.output);
            Ok(())
        }
    }
}

fn serve(
    dir: &DataDir,
    listen: Option<&str>,
    max_connections: Option<usize>,
    cache_size_mib: Option<usize>,
    config: Option<PathBuf>,
    upstream: Option<String>,
    cert: Option<PathBuf>,
) -> Result<()> {
    let config = config.or_else(|| {
        let default = dir.root().join("server.toml");
        default.is_file().then_some(default)
    });
    let mut file = match &config {
        Some(path) => ConfigFile::read(path)?,
        None => ConfigFile::default(),
    };
    if cache_size_mib.is_some() {
        file.cache_size_mib = cache_size_mib;
    }
    let mut opts = ServeOptions::resolve(listen, max_connections, &file)?;
    if upstream.is_some() {
        opts.upstream = upstream;
    }
    opts.cert = cert.map(|c| std::path::absolute(&c).unwrap_or(c));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        fieldsync_server::serve::serve(
            dir,
            &opts,
            |r| {
                println!(
                    "relay {} serving on {} (QUIC over UDP, TLS over TCP)",
                    r.relay.short(),
                    r.addr
                );
                // Tests and scripts wait for this line.
                use std::io::Write as _;
                let _ = std::io::stdout().flush();
            },
            stop_signal(),
        )
        .await
    })?;
    println!("stopped");
    Ok(())
}

/// Salvages a damaged store into a new one (see `Store::repair`).
fn repair(dir: &DataDir, json: bool) -> Result<()> {
    let mut epoch = [0u8; 16];
    getrandom::fill(&mut epoch).map_err(|e| anyhow!("the OS random generator failed: {e}"))?;
    // The relay's certificate names its identity: a repair that must read
    // the raw file recognizes the relay key by it (at headquarters, where
    // the certificate can be checked here).
    let device = fieldsync_server::keys::read_hq_key(&dir.hq_key())
        .ok()
        .flatten()
        .and_then(|hq| {
            fieldsync_server::keys::read_certificate(&dir.relay_certificate(), &hq.public()).ok()
        })
        .map(|c| c.device());
    let how = RepairOptions {
        epoch,
        now: fieldsync_server::now(),
        device,
        kind: Some(StoreKind::Relay),
    };
    let report = Store::repair(&dir.store(), &how).map_err(|e| anyhow!(error_line(&e)))?;
    print!(
        "{}",
        fieldsync_view::repair(
            &report,
            "devices and offices",
            fieldsync_view::Format::json(json)
        )?
    );
    Ok(())
}

/// Ctrl-C, or SIGTERM on unix.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn compartments(list: &[String]) -> Result<Vec<Compartment>> {
    Ok(list
        .iter()
        .map(|c| c.trim().parse())
        .collect::<Result<_, _>>()?)
}

fn init(dir: &DataDir, name: String, list: &[String], days: u32) -> Result<()> {
    let name = name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 64 {
        bail!("relay name must be 1 to 64 characters");
    }
    let done = hq::init(
        dir,
        &Setup {
            name,
            compartments: compartments(list)?,
            days,
        },
    )
    .map_err(|e| anyhow!(error_line(&e)))?;
    println!("hq     {}", done.hq);
    println!("relay  {}", done.certificate.device());
    println!(
        "the headquarters root key is {}: keep it secret and back it up offline",
        done.dir.hq_key().display()
    );
    Ok(())
}

/// Turns parsed arguments into a request, checking names with the
/// identity crate's parsers (one-line errors, nothing changed).
fn request(cmd: AdminCommand) -> Result<AdminRequest> {
    Ok(match cmd {
        AdminCommand::Id { json } => AdminRequest::Id { json },
        AdminCommand::Enroll {
            device,
            name,
            office,
            role,
            read,
            write,
            days,
            lease_days,
            out,
        } => {
            let device: DeviceId = device
                .trim()
                .parse()
                .map_err(|e| anyhow!("--device '{device}': {e}"))?;
            let role: Role = role.trim().parse()?;
            let out = std::path::absolute(&out)
                .with_context(|| format!("cannot resolve --out {}", out.display()))?;
            AdminRequest::Enroll(Box::new(Enrollment {
                device,
                name,
                office,
                role,
                read: read.as_deref().map(compartments).transpose()?,
                write: write.as_deref().map(compartments).transpose()?,
                days,
                lease_days,
                out,
            }))
        }
        AdminCommand::Revoke { device, reason } => AdminRequest::Revoke { device, reason },
        AdminCommand::Wipe {
            device,
            valid_days,
            reason,
        } => AdminRequest::Wipe {
            device,
            days: valid_days,
            reason,
        },
        AdminCommand::Devices { json } => AdminRequest::Devices { json },
        AdminCommand::Cases { json } => AdminRequest::Cases { json },
        AdminCommand::Case(CaseCommand::Show { case, json }) => {
            AdminRequest::CaseShow { case, json }
        }
        AdminCommand::Case(CaseCommand::History { case, json }) => {
            AdminRequest::CaseHistory { case, json }
        }
        AdminCommand::Case(CaseCommand::Conflicts { case, json }) => {
            AdminRequest::CaseConflicts { case, json }
        }
        AdminCommand::Quarantine { json, action } => match action {
            None => AdminRequest::Quarantine { json },
            Some(QuarantineCommand::Release { id, reason }) => {
                AdminRequest::QuarantineRelease { id, reason }
            }
        },
    })
}

/// Executes `req` against the store, or through the control socket when a
/// running server holds the store.
fn admin(dir: &DataDir, req: &AdminRequest) -> Result<AdminResponse> {
    let path = dir.store();
    if !path.is_file() {
        bail!(
            "no server in {}: run `fieldsync-server init --name NAME` first",
            dir.root().display()
        );
    }
    match Store::open(&path) {
        Ok(store) => match AdminContext::load(&store, dir) {
            Ok(ctx) => execute(&ctx, req).map_err(|e| anyhow!(error_line(&e))),
            // An office relay not enrolled yet still has an id to give.
            Err(_)
                if matches!(req, AdminRequest::Id { .. }) && !dir.relay_certificate().exists() =>
            {
                let d = store.device();
                let output = if matches!(req, AdminRequest::Id { json: true }) {
                    format!(
                        "{}\n",
                        serde_json::to_string_pretty(&serde_json::json!({
                            "relay": d.id().to_string(),
                            "short": d.id().short(),
                            "name": d.name(),
                            "hq": null,
                            "headquarters": false,
                            "enrolled": false,
                        }))?
                    )
                } else {
                    format!(
                        "relay     {}\nname      {}\nenrolled  no: enroll this id at headquarters with --role relay, then serve --cert FILE\n",
                        d.id(),
                        d.name()
                    )
                };
                Ok(AdminResponse { output })
            }
            Err(e) => Err(anyhow!(error_line(&e))),
        },
        Err(StoreError::Busy { .. }) => through_server(dir, req),
        Err(e) => Err(e.into()),
    }
}

#[cfg(unix)]
fn through_server(dir: &DataDir, req: &AdminRequest) -> Result<AdminResponse> {
    use fieldsync_server::control::{ControlError, request};
    let socket = dir.control_socket();
    tracing::debug!(socket = %socket.display(), "the store is in use; asking the running server");
    match request(&socket, req) {
        Ok(response) => Ok(response),
        Err(ControlError::Connect { .. }) => bail!(
            "the store {} is in use by another process, and no server answers on {}; wait for that process to finish",
            dir.store().display(),
            socket.display()
        ),
        Err(e) => Err(e.into()),
    }
}

#[cfg(not(unix))]
fn through_server(dir: &DataDir, _req: &AdminRequest) -> Result<AdminResponse> {
    bail!(
        "the store {} is in use by another process; stop it and try again",
        dir.store().display()
    )
}
