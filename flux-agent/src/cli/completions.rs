//! `flux-agent completions SHELL` (a shell completion script, clap_complete) and the hidden
//! `flux-agent manpages DIR` (roff manual pages, clap_mangen), both generated from the clap
//! definition the binary parses, so they never drift from it. `cargo xtask package` runs them
//! with the release binary and puts their output into the .deb.
//!
//! May touch: stdout, and the folder `manpages` is given (it writes `*.1` files there).

use std::{io::Write as _, path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::CommandFactory as _;

use super::Cli;

/// The command name the scripts complete (the installed binary's name).
const BIN_NAME: &str = "flux-agent";

#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to write a completion script for, on stdout.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, clap::Args)]
pub struct ManpagesArgs {
    /// Folder to write flux-agent.1 and one page per subcommand into (flux-agent-run.1, ...);
    /// created if missing.
    #[arg(value_name = "DIR")]
    pub out_dir: PathBuf,
}

/// The completion script for `shell`. Rendered into memory first: clap_complete panics on a
/// write error, and stdout may be a closed pipe.
pub fn script(shell: clap_complete::Shell) -> Vec<u8> {
    let mut cmd = completable();
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, BIN_NAME, &mut buf);
    buf
}

/// The command line as completion offers it: [`Cli`] without its hidden subcommands and
/// arguments, which clap_complete would list (it ignores `hide`). clap has no way to remove a
/// subcommand, so the root is built again from the visible parts.
fn completable() -> clap::Command {
    let full = Cli::command();
    clap::Command::new(BIN_NAME)
        .version(env!("CARGO_PKG_VERSION"))
        .args(full.get_arguments().filter(|a| !a.is_hide_set()).cloned())
        .subcommands(full.get_subcommands().filter(|s| !s.is_hide_set()).cloned())
}

pub fn completions(args: CompletionsArgs) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    out.write_all(&script(args.shell))?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

pub fn manpages(args: ManpagesArgs) -> anyhow::Result<ExitCode> {
    let dir = &args.out_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("write the manual pages into {}", dir.display()))?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shell_gets_a_script_naming_the_binary_and_its_subcommands() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let s = String::from_utf8(script(shell)).unwrap();
            assert!(s.contains(BIN_NAME), "{shell}");
            for sub in ["run", "blocklist", "explain", "completions"] {
                assert!(s.contains(sub), "{shell} script lacks {sub}");
            }
            // The hidden page generator is not offered.
            assert!(!s.contains("manpages"), "{shell}");
        }
    }

    #[test]
    fn one_page_for_the_command_and_each_visible_subcommand() {
        let dir = std::env::temp_dir().join(format!("flux-manpages-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        manpages(ManpagesArgs {
            out_dir: dir.clone(),
        })
        .unwrap();
        let top = std::fs::read_to_string(dir.join("flux-agent.1")).unwrap();
        assert!(
            top.starts_with(".ie"),
            "not roff: {}",
            &top[..40.min(top.len())]
        );
        assert!(top.contains("DNS fast flux"));
        let run = std::fs::read_to_string(dir.join("flux-agent-run.1")).unwrap();
        assert!(run.contains("events"));
        assert!(!dir.join("flux-agent-manpages.1").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
