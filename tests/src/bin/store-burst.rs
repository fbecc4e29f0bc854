//! Crash-test writer: makes local edits in a loop and prints the number of
//! each edit on stdout the moment `edit_case` has returned (that is, once the
//! edit is durable). The crash test kills this process with SIGKILL at a
//! random moment and checks that every printed edit survived.
//!
//! Usage: `store-burst STORE CASE FIRST`
#![forbid(unsafe_code)]

use std::io::Write as _;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use fieldsync_identity::{CaseId, Timestamp};
use fieldsync_store::Store;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, path, case, first] = args.as_slice() else {
        anyhow::bail!("usage: store-burst STORE CASE FIRST");
    };
    let store = Store::open(std::path::Path::new(path))?;
    let case: CaseId = case.parse()?;
    let first: u64 = first.parse()?;
    let me = store.device().id();
    let mut stdout = std::io::stdout().lock();
    for i in first.. {
        let now = Timestamp::from_millis(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)?,
        );
        let text = format!("burst {i}");
        store.edit_case(&case, now, "add note", |doc| doc.add_note(me, now, &text))?;
        writeln!(stdout, "{i}")?;
        stdout.flush()?;
    }
    Ok(())
}
