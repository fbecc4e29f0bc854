//! `fieldsync-agent`: the field binary. Parses arguments, opens the store,
//! runs one command, and turns any error into one clear line and exit code 1.
#![forbid(unsafe_code)]
// A command-line binary answers on stdout; libraries never print.
#![allow(clippy::print_stdout)]

mod cli;
mod commands;
mod net;
mod print;
mod unlock;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FIELDSYNC_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    // Panics inside Automerge are caught by the case guard and become named
    // errors; keep their default report out of the user's terminal.
    std::panic::set_hook(Box::new(|info| {
        tracing::debug!(%info, "panic");
    }));
    match std::panic::catch_unwind(|| commands::run(cli)) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("unknown panic");
            eprintln!("internal error (please report): {msg}");
            ExitCode::from(101)
        }
    }
}
