//! `farmctl`, the command-line client of the broker's gRPC API for scripts and admins (see `farmctl --help`).
//!
//! A client of `farm-proto` only: it shares no code with the broker library, so it can
//! talk to any broker that speaks farm.v1.

mod cli;
mod client;
mod commands;
mod error;
mod output;
mod sessions;
mod table;

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    // Usage errors exit 2 here, with clap's message.
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("farmctl: cannot start the async runtime: {error}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(text) => write_stdout(&text),
        Err(error) => {
            eprintln!("farmctl: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

/// Writes the result; a closed pipe (`farmctl devices | head -1`) is not an error.
fn write_stdout(text: &str) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("farmctl: cannot write the output: {error}");
            ExitCode::from(1)
        }
    }
}
