//! Command-line arguments.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// FieldSync relay server: headquarters or office relay. Enrolls and revokes
/// devices, shows the merged cases, and releases quarantined changes.
#[derive(Parser, Debug)]
#[command(name = "fieldsync-server", version, about, long_about = None)]
pub(crate) struct Cli {
    /// Data directory (default: $FIELDSYNC_SERVER_DATA, then the platform data directory).
    #[arg(long, global = true, env = "FIELDSYNC_SERVER_DATA", value_name = "DIR")]
    pub(crate) data: Option<PathBuf>,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Create the headquarters root key, this relay's key and store; prints
    /// the headquarters public key.
    Init {
        /// A name for this relay, e.g. "hq-relay-1".
        #[arg(long)]
        name: String,
        /// Compartments this relay serves (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "general")]
        compartments: Vec<String>,
        /// Validity of the relay's certificate, in days.
        #[arg(long, default_value_t = 3650)]
        days: u32,
        /// An office relay: no headquarters key here; headquarters enrolls
        /// this relay's id (printed) with --role relay, and `serve --cert`
        /// installs that certificate.
        #[arg(long)]
        office: bool,
    },
    /// Serve devices over QUIC (UDP) and TLS over TCP on the same port, until
    /// interrupted (Ctrl-C or SIGTERM).
    Serve {
        /// Address to listen on (UDP and TCP) [default: 127.0.0.1:4433].
        #[arg(long, env = "FIELDSYNC_LISTEN", value_name = "ADDR")]
        listen: Option<String>,
        /// Connections served at once [default: 4096].
        #[arg(long, env = "FIELDSYNC_MAX_CONNECTIONS", value_name = "N")]
        max_connections: Option<usize>,
        /// The store's page cache, in MiB: the most of the store file kept
        /// in memory [default: 16].
        #[arg(long, env = "FIELDSYNC_CACHE_SIZE_MIB", value_name = "MIB")]
        cache_size_mib: Option<usize>,
        /// TOML config file [default: DIR/server.toml when it exists].
        #[arg(long, env = "FIELDSYNC_CONFIG", value_name = "FILE")]
        config: Option<PathBuf>,
        /// Office relays: headquarters' address; the log goes up and what
        /// this relay may read comes down whenever it is reachable.
        #[arg(long, env = "FIELDSYNC_UPSTREAM", value_name = "ADDR")]
        upstream: Option<String>,
        /// Office relays: the relay certificate headquarters issued, to install.
        #[arg(long, value_name = "FILE")]
        cert: Option<PathBuf>,
    },
    /// Run the field exercise on loopback in a temporary directory: headquarters,
    /// three devices, offline edits, a conflict, receipts, a revoked device refused.
    Demo,
    /// Salvage a store whose file is damaged (stop `serve` first): the
    /// damaged file is kept aside unchanged (DIR/store.redb.damaged), and
    /// every change that still verifies goes into a new store in its place.
    Repair {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Administrative commands; while `serve` runs they go to it over DIR/control.sock.
    #[command(flatten)]
    Admin(AdminCommand),
}

#[derive(Subcommand, Debug)]
pub(crate) enum AdminCommand {
    /// Show this relay's id (its relay key), name and headquarters key.
    Id {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Issue a device certificate and write it to a new file.
    Enroll {
        /// The device id (64 hex digits, as `fieldsync-agent id` shows it).
        #[arg(long)]
        device: String,
        /// Who holds the device.
        #[arg(long)]
        name: String,
        /// Its office.
        #[arg(long)]
        office: String,
        /// Role: field, supervisor, liaison or relay.
        #[arg(long)]
        role: String,
        /// Compartments it may read (comma-separated; default: its write
        /// set, or "general" when neither is given).
        #[arg(long, value_delimiter = ',', value_name = "C,...")]
        read: Option<Vec<String>>,
        /// Compartments it may write (comma-separated; default: its read
        /// set for field and supervisor, nothing for liaison and relay).
        #[arg(long, value_delimiter = ',', value_name = "C,...")]
        write: Option<Vec<String>>,
        /// Days of validity.
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// Offline lease: after N days without contact with a relay, the
        /// device keeps case data closed until it syncs again.
        #[arg(long, value_name = "N")]
        lease_days: Option<u16>,
        /// Where to write the certificate (a new file).
        #[arg(long)]
        out: PathBuf,
    },
    /// Revoke a device: what it signed beyond what this relay holds is quarantined.
    Revoke {
        /// Device id or unique prefix.
        device: String,
        /// Why.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Order a lost device wiped: relays carry the signed order to it, and
    /// it destroys its keys at its next contact (revoke it too).
    Wipe {
        /// Device id or unique prefix.
        #[arg(long)]
        device: String,
        /// Days the order stays valid.
        #[arg(long, default_value_t = 90, value_name = "N")]
        valid_days: u32,
        /// Why (kept in every audit log the order passes).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Enrolled and known devices: last contact, what this relay holds and still has to send.
    Devices {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the cases this relay holds.
    Cases {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Look at one case.
    #[command(subcommand)]
    Case(CaseCommand),
    /// Changes held back with their reasons; `quarantine release ID` lets one through.
    Quarantine {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        action: Option<QuarantineCommand>,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum CaseCommand {
    /// The merged record, as the agent shows it.
    Show {
        /// Case id or unique prefix.
        case: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Every change with its verified device.
    History {
        /// Case id or unique prefix.
        case: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Fields holding concurrent values, each with its device.
    Conflicts {
        /// Case id or unique prefix.
        case: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum QuarantineCommand {
    /// Release a held change under headquarters' signature: it is stored and forwarded.
    Release {
        /// The quarantine id (the first column of `quarantine`).
        id: u64,
        /// Why.
        #[arg(long)]
        reason: Option<String>,
    },
}
