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
            eprintln!("flux-agent: error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, as `{:#}` prints them, but a cause whose text the
/// line already holds is left out: a library error that names its source in its own message
/// (`cannot open events file F: Permission denied`) would otherwise say it twice.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot open events file F: {source}")]
    struct Open {
        #[source]
        source: std::io::Error,
    }

    #[test]
    fn a_cause_already_in_the_message_is_said_once() {
        let io = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let e = anyhow::Error::new(Open { source: io }).context("start");
        assert_eq!(
            one_line(&e),
            "start: cannot open events file F: permission denied"
        );
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(one_line(&plain), format!("{plain:#}"));
    }
}
