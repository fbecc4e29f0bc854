//! Command-line arguments.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// FieldSync field agent: case files that work with no network at all.
/// Every edit is signed by this device and durable when the command returns.
#[derive(Parser, Debug)]
#[command(name = "fieldsync-agent", version, about, long_about = None)]
pub(crate) struct Cli {
    /// Data directory (default: $FIELDSYNC_DATA, then the platform data directory).
    #[arg(long, global = true, env = "FIELDSYNC_DATA", value_name = "DIR")]
    pub(crate) data: Option<PathBuf>,

    /// Unlock the store with this key file instead of a passphrase (at
    /// least 32 random bytes; `init` creates it if missing). Without it,
    /// the passphrase comes from $FIELDSYNC_PASSPHRASE, else a prompt.
    #[arg(long, global = true, env = "FIELDSYNC_KEY_FILE", value_name = "PATH")]
    pub(crate) key_file: Option<PathBuf>,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Create the store, encrypted at rest, and this device's key; prints
    /// the device id. Asks for a new passphrase twice (or takes
    /// $FIELDSYNC_PASSPHRASE, or --key-file).
    Init {
        /// A name for this device, e.g. "rome-laptop-2".
        #[arg(long)]
        name: String,
        /// Default office for new cases.
        #[arg(long)]
        office: Option<String>,
        /// Default compartment for new cases.
        #[arg(long)]
        compartment: Option<String>,
    },
    /// Show this device's id, name and store.
    Id {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Work with cases.
    #[command(subcommand)]
    Case(CaseCommand),
    /// Write a signed change bundle (for USB hand-carry). No CASE means all cases.
    Export {
        /// Cases to export (ids or unique prefixes).
        cases: Vec<String>,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Import a bundle: every signature is verified before anything is stored.
    Import {
        /// The bundle file.
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Re-verify every stored signature.
    Verify {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show the audit trail of this store.
    Audit {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Install the certificate headquarters issued for this device, and the relays to sync with.
    Enroll {
        /// The certificate file from `fieldsync-server enroll`.
        #[arg(long, value_name = "FILE")]
        cert: PathBuf,
        /// A relay address, HOST:PORT; repeat for several, tried in order.
        #[arg(long = "relay", value_name = "ADDR", required = true)]
        relays: Vec<String>,
    },
    /// Connect to a relay, push and pull, print a summary and exit.
    Sync {
        /// Stay up: sync whenever a relay is reachable, with live updates.
        #[arg(long)]
        watch: bool,
        /// Give up a one-shot sync after this many seconds.
        #[arg(long, default_value_t = 300, value_name = "SECONDS")]
        timeout: u64,
    },
    /// Pending changes, relays and receipts: what is safe where.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Salvage a damaged store file into a new store (unlocking it first);
    /// the damaged file is kept aside, unchanged.
    Repair {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Destroy the store's key so that nothing on this device can be read
    /// again (crypto-shred). Needs no passphrase; asks to type "wipe".
    Wipe {
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum CaseCommand {
    /// Create a case; prints its id.
    New {
        /// Kind: criminal-investigation, cultural-property, visa-security,
        /// biometric-encounter, personnel-recovery, visitor-vetting.
        #[arg(long)]
        kind: String,
        /// Title.
        #[arg(long)]
        title: String,
        /// Owning office (default: the one given at init).
        #[arg(long)]
        office: Option<String>,
        /// Compartment (default: the one given at init, else "general").
        #[arg(long)]
        compartment: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Set a field: title, status, priority or summary.
    Set {
        /// Case id or unique prefix.
        case: String,
        /// Field name.
        field: String,
        /// New value.
        value: String,
    },
    /// Append a note.
    Note {
        /// Case id or unique prefix.
        case: String,
        /// The note.
        text: String,
    },
    /// Show the merged record.
    Show {
        /// Case id or unique prefix.
        case: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List cases.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Every change, with its device, time and what it changed.
    History {
        /// Case id or unique prefix.
        case: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Fields holding concurrent values, with the device behind each.
    Conflicts {
        /// Case id or unique prefix.
        case: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Edit the summary text.
    #[command(subcommand)]
    Summary(SummaryCommand),
    /// Subjects: people and organisations in the case.
    #[command(subcommand)]
    Subject(SubjectCommand),
    /// Evidence items and their custody trail.
    #[command(subcommand)]
    Evidence(EvidenceCommand),
    /// Tasks.
    #[command(subcommand)]
    Task(TaskCommand),
    /// Link this case to another.
    Link {
        /// Case id or unique prefix.
        case: String,
        /// The other case (full id, or a prefix of a case on this device).
        other: String,
        /// How they relate.
        #[arg(long, default_value = "related")]
        relation: String,
    },
    /// Remove a link.
    Unlink {
        /// Case id or unique prefix.
        case: String,
        /// The other case.
        other: String,
    },
    /// Record an attachment reference (BLAKE3 hash, name, size, media type) for a file.
    Attach {
        /// Case id or unique prefix.
        case: String,
        /// The file.
        file: PathBuf,
        /// Name to record (default: the file name).
        #[arg(long)]
        name: Option<String>,
        /// Media type (default: guessed from the extension).
        #[arg(long)]
        media_type: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum SummaryCommand {
    /// Replace the whole text (concurrent edits still merge by character).
    Set {
        /// Case id or unique prefix.
        case: String,
        /// The new text.
        text: String,
    },
    /// Append text.
    Append {
        /// Case id or unique prefix.
        case: String,
        /// Text to append.
        text: String,
    },
    /// Insert text at a character position.
    Insert {
        /// Case id or unique prefix.
        case: String,
        /// Character position (0 = start).
        pos: usize,
        /// Text to insert.
        text: String,
    },
    /// Delete characters at a position.
    Delete {
        /// Case id or unique prefix.
        case: String,
        /// Character position (0 = start).
        pos: usize,
        /// How many characters.
        len: usize,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum SubjectCommand {
    /// Add a subject; prints its id.
    Add {
        /// Case id or unique prefix.
        case: String,
        /// Name.
        #[arg(long)]
        name: String,
        /// Role in the case (suspect, witness, victim, ...).
        #[arg(long)]
        role: Option<String>,
        /// Nationality.
        #[arg(long)]
        nationality: Option<String>,
        /// Identifier as KIND=VALUE (repeatable), e.g. passport=X123.
        #[arg(long = "identifier", value_name = "KIND=VALUE")]
        identifiers: Vec<String>,
    },
    /// Set a subject field: name, role or nationality.
    Set {
        /// Case id or unique prefix.
        case: String,
        /// Subject id or unique prefix.
        subject: String,
        /// Field.
        field: String,
        /// Value.
        value: String,
    },
    /// Remove a subject.
    Remove {
        /// Case id or unique prefix.
        case: String,
        /// Subject id or unique prefix.
        subject: String,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum EvidenceCommand {
    /// Add an evidence item; prints its id.
    Add {
        /// Case id or unique prefix.
        case: String,
        /// Description.
        #[arg(long)]
        description: String,
        /// Where it was found.
        #[arg(long)]
        found_at: Option<String>,
    },
    /// Append a custody trail entry.
    Custody {
        /// Case id or unique prefix.
        case: String,
        /// Evidence id or unique prefix.
        evidence: String,
        /// What happened (seized, transferred, sealed, examined...).
        #[arg(long)]
        action: String,
        /// Who holds it now.
        #[arg(long)]
        holder: Option<String>,
        /// Where it is now.
        #[arg(long)]
        location: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum TaskCommand {
    /// Add a task; prints its id.
    Add {
        /// Case id or unique prefix.
        case: String,
        /// What to do.
        text: String,
        /// Who does it.
        #[arg(long)]
        assignee: Option<String>,
    },
    /// Mark a task done (or not done with --undo).
    Done {
        /// Case id or unique prefix.
        case: String,
        /// Task id or unique prefix.
        task: String,
        /// Mark it not done.
        #[arg(long)]
        undo: bool,
    },
    /// Assign a task (no ASSIGNEE clears it).
    Assign {
        /// Case id or unique prefix.
        case: String,
        /// Task id or unique prefix.
        task: String,
        /// Who does it.
        assignee: Option<String>,
    },
}
