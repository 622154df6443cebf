//! The `flux-agent` binary: argument parsing and dispatch only; the work is in the library.

mod cli;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    match cli::dispatch(args) {
        Ok(code) => code,
        Err(e) => {
            // One line, cause chain included, no backtrace: the message says what to do.
            eprintln!("flux-agent: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
