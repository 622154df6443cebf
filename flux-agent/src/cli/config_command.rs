//! `flux-agent config check|show`, and how `run` finds its configuration file and merges it
//! under its command line (used by `cli/run.rs` at start and on SIGHUP).
//!
//! Named `config_command.rs`, not `config.rs`: the library's `config.rs` holds the file format,
//! and no two files in the tree share a name.

use std::{
    collections::BTreeMap,
    ffi::OsString,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Context as _;
use clap::{CommandFactory as _, FromArgMatches as _, parser::ValueSource};
use flux_agent::config::{CONFIG_ENV, ConfigError, ConfigFile, DEFAULT_CONFIG_PATH, RunConfig};

use super::{Cli, run::RunArgs};

#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub command: ConfigCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum ConfigCommand {
    /// Validate a configuration file without starting anything (status 1 and one line naming
    /// the file, line, column and key if it is wrong).
    Check(CheckArgs),
    /// The settings `run` would use: the file's, else the built-in defaults, each marked with
    /// where it came from (as TOML, or one JSON document with --json).
    Show(ShowArgs),
}

impl ConfigCommand {
    pub fn json(&self) -> bool {
        match self {
            ConfigCommand::Check(a) => a.json,
            ConfigCommand::Show(a) => a.json,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The file. Default: $FLUX_AGENT_CONFIG, else /etc/flux-agent/flux-agent.toml.
    pub path: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// The file. Default: $FLUX_AGENT_CONFIG, else /etc/flux-agent/flux-agent.toml if it exists.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

pub fn config(args: ConfigArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        ConfigCommand::Check(a) => check(a),
        ConfigCommand::Show(a) => show(a),
    }
}

/// The configuration file `run` uses: `--config`, else `$FLUX_AGENT_CONFIG` (both must
/// exist), else the default path if it exists; `None`: the built-in defaults alone.
pub fn config_path(flag: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = flag {
        return Some(p.to_owned());
    }
    if let Some(p) = std::env::var_os(CONFIG_ENV).filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let default = Path::new(DEFAULT_CONFIG_PATH);
    default.exists().then(|| default.to_owned())
}

/// The clap command of `flux-agent run`, built (its getters are complete).
pub fn run_command() -> clap::Command {
    let mut cmd = Cli::command();
    cmd.build();
    cmd.find_subcommand("run")
        .cloned()
        .unwrap_or_else(|| clap::Command::new("run"))
}

/// `run`'s options after the file: the parsed arguments, the raw value of every option (for
/// `config show` and for what a reload changed), and what the file set.
pub struct Merged {
    pub args: RunArgs,
    pub raw: BTreeMap<String, Vec<String>>,
    pub sources: BTreeMap<String, Source>,
    pub overridden: Vec<(&'static str, String)>,
}

/// Where an effective setting came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    CommandLine,
    File,
    Default,
    Unset,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::CommandLine => "command line",
            Source::File => "file",
            Source::Default => "default",
            Source::Unset => "unset",
        }
    }
}

/// Parses `argv` (a whole `flux-agent run ...` command line, already accepted once) with the
/// keys of `file` it does not give appended.
pub fn merge(argv: &[OsString], file: Option<&ConfigFile>) -> anyhow::Result<Merged> {
    let given = run_matches(argv).context("re-read the command line")?;
    let run = run_command();
    let file_args = match file {
        Some(f) => f.args(&run, |id| {
            given.value_source(id) == Some(ValueSource::CommandLine)
        })?,
        None => Default::default(),
    };
    let mut full = argv.to_vec();
    full.extend(file_args.args.iter().cloned());
    let m = run_matches(&full).map_err(|e| {
        let origin = file.map_or("configuration", |f| f.origin.as_str());
        ConfigError::Whole {
            origin: origin.to_owned(),
            message: one_line(&e),
        }
    })?;
    let mut raw = BTreeMap::new();
    let mut sources = BTreeMap::new();
    for arg in run.get_arguments() {
        let id = arg.get_id().as_str();
        let values: Option<Vec<String>> = m.try_get_raw(id).ok().flatten().map(|vs| {
            vs.map(|v| v.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        });
        let source = if file_args.from_file.contains(&id) {
            Source::File
        } else {
            match m.value_source(id) {
                Some(ValueSource::CommandLine) => Source::CommandLine,
                Some(_) => Source::Default,
                None => Source::Unset,
            }
        };
        sources.insert(id.to_owned(), source);
        if let Some(v) = values {
            raw.insert(id.to_owned(), v);
        }
    }
    let args = RunArgs::from_arg_matches(&m).map_err(|e| anyhow::anyhow!(one_line(&e)))?;
    Ok(Merged {
        args,
        raw,
        sources,
        overridden: file_args.overridden,
    })
}

/// The `run` subcommand's matches of a full command line.
fn run_matches(argv: &[OsString]) -> Result<clap::ArgMatches, clap::Error> {
    let mut m = Cli::command().try_get_matches_from(argv)?;
    match m.remove_subcommand() {
        Some((name, sub)) if name == "run" => Ok(sub),
        _ => Err(clap::Error::raw(
            clap::error::ErrorKind::MissingSubcommand,
            "not a `run` command line",
        )),
    }
}

/// A clap error as one line (its usage and help hints dropped).
fn one_line(e: &clap::Error) -> String {
    e.to_string()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more"))
        .map(|l| l.strip_prefix("error: ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Loads `path` and checks it as `run` would take it (values, keys that exclude or need
/// each other).
pub fn load_checked(path: &Path) -> anyhow::Result<ConfigFile> {
    let file = ConfigFile::load(path)?;
    merge(&base_argv(), Some(&file))?;
    Ok(file)
}

fn base_argv() -> Vec<OsString> {
    vec!["flux-agent".into(), "run".into()]
}

fn check(a: CheckArgs) -> anyhow::Result<ExitCode> {
    let path = a
        .path
        .clone()
        .or_else(|| config_path(None))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
    match load_checked(&path) {
        Ok(file) => {
            let keys = file.config.entries().len();
            if a.json {
                let doc = serde_json::json!({
                    "valid": true, "file": path.display().to_string(), "keys": keys,
                });
                out!("{doc}");
            } else {
                let s = if keys == 1 { "" } else { "s" };
                out!("{}: valid ({keys} key{s} set)", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) if a.json => {
            let mut doc = match e.downcast_ref::<ConfigError>() {
                Some(c) => c.to_json(),
                None => serde_json::json!({ "valid": false, "error": format!("{e:#}") }),
            };
            doc["file"] = path.display().to_string().into();
            out!("{doc}");
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(e),
    }
}

fn show(a: ShowArgs) -> anyhow::Result<ExitCode> {
    let path = config_path(a.config.as_deref());
    let file = path.as_deref().map(load_checked).transpose()?;
    let m = merge(&base_argv(), file.as_ref())?;
    let effective = RunConfig::from_raw(|id| m.raw.get(id).cloned());
    let entries = effective.entries();
    let value_of = |key: &str| entries.iter().find(|e| e.key == key);
    let source_of = |arg: &str| m.sources.get(arg).copied().unwrap_or(Source::Unset);
    let file_name = path.as_ref().map(|p| p.display().to_string());
    if a.json {
        let settings: serde_json::Map<String, serde_json::Value> = RunConfig::KEYS
            .iter()
            .map(|(key, arg)| {
                let value = value_of(key).map_or(serde_json::Value::Null, |e| {
                    serde_json::to_value(&e.value).unwrap_or_default()
                });
                let source = source_of(arg).as_str();
                (
                    (*key).to_owned(),
                    serde_json::json!({ "value": value, "source": source }),
                )
            })
            .collect();
        out!(
            "{}",
            serde_json::json!({ "file": file_name, "settings": settings })
        );
        return Ok(ExitCode::SUCCESS);
    }
    out!(
        "# Effective settings of `flux-agent run` (file: {})",
        file_name.as_deref().unwrap_or("none")
    );
    for (key, arg) in RunConfig::KEYS {
        let source = source_of(arg);
        match value_of(key) {
            Some(e) => out!("{key} = {}  # {}", e.value, source.as_str()),
            None => out!("# {key} is unset"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The packaged default file (`dist/`, installed as /etc/flux-agent/flux-agent.toml).
    const PACKAGED: &str = include_str!("../../../dist/flux-agent.toml");

    /// Keys the packaged file sets apart from the built-in defaults, on purpose: the events
    /// file the packaged logrotate rotates (without it the unit's journal gets a line per DNS
    /// response), and the metrics endpoint on loopback (issue 16: "127.0.0.1:9580 in the
    /// packaged config").
    const PACKAGED_DIFFERENCES: &[&str] = &["events", "metrics"];

    /// `run` arguments that are not settings: `--config` names the file itself.
    const NOT_IN_FILE: &[&str] = &["help", "config"];

    #[test]
    fn every_run_option_has_a_key() {
        let run = run_command();
        let ids: BTreeSet<String> = run
            .get_arguments()
            .map(|a| a.get_id().to_string())
            .filter(|id| !NOT_IN_FILE.contains(&id.as_str()))
            .collect();
        let keys: BTreeSet<String> = RunConfig::KEYS
            .iter()
            .map(|(_, arg)| (*arg).to_owned())
            .collect();
        assert_eq!(
            ids, keys,
            "a run option without a configuration key, or the reverse"
        );
    }

    /// The packaged file with every `# key = value` line uncommented.
    fn uncommented() -> String {
        PACKAGED
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest)
                    if rest.split_once(" = ").is_some_and(|(k, _)| {
                        !k.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                    }) =>
                {
                    rest
                }
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn the_packaged_file_parses_and_differs_from_the_defaults_only_where_documented() {
        let f = ConfigFile::parse("dist/flux-agent.toml", PACKAGED.as_bytes()).unwrap();
        let set: Vec<&str> = f.config.entries().iter().map(|e| e.key).collect();
        assert_eq!(set, PACKAGED_DIFFERENCES);
        let packaged = merge(&base_argv(), Some(&f)).unwrap();
        let builtin = merge(&base_argv(), None).unwrap();
        let ids: BTreeSet<&String> = packaged.raw.keys().chain(builtin.raw.keys()).collect();
        for id in ids {
            if packaged.raw.get(id) != builtin.raw.get(id) {
                let key = RunConfig::KEYS
                    .iter()
                    .find(|(_, a)| a == id)
                    .map(|(k, _)| *k);
                assert!(
                    key.is_some_and(|k| PACKAGED_DIFFERENCES.contains(&k)),
                    "{id}: packaged {:?}, built in {:?}",
                    packaged.raw.get(id),
                    builtin.raw.get(id)
                );
            }
        }
        assert_eq!(packaged.raw["metrics"], ["127.0.0.1:9580"]);
    }

    #[test]
    fn the_packaged_file_documents_every_key_at_its_default() {
        let text = uncommented();
        let f = ConfigFile::parse("uncommented", text.as_bytes()).unwrap();
        f.check(&run_command()).unwrap();
        let documented: BTreeSet<&str> = f.config.entries().iter().map(|e| e.key).collect();
        let all: BTreeSet<&str> = RunConfig::KEYS.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            documented, all,
            "every key is in the packaged file, commented"
        );
        // Where clap has a default, the commented value is that default.
        let builtin = merge(&base_argv(), None).unwrap();
        let defaults = RunConfig::from_raw(|id| {
            (builtin.sources.get(id) == Some(&Source::Default))
                .then(|| builtin.raw.get(id).cloned())
                .flatten()
        })
        .entries();
        assert!(defaults.len() > 15, "{defaults:?}");
        for d in defaults {
            let doc = f.config.entries().into_iter().find(|e| e.key == d.key);
            assert_eq!(
                doc.map(|e| e.value),
                Some(d.value.clone()),
                "{}: the packaged file says otherwise than the built-in default",
                d.key
            );
        }
    }

    fn argv(args: &[&str]) -> Vec<OsString> {
        ["flux-agent", "run"]
            .iter()
            .chain(args)
            .map(OsString::from)
            .collect()
    }

    #[test]
    fn flags_override_the_file_and_defaults_do_not() {
        let f = ConfigFile::parse(
            "f.toml",
            b"block_ttl = \"2h\"\nmonitor = true\nmax_keys = 5000\ndns_ports = [5353]\n",
        )
        .unwrap();
        let m = merge(&argv(&[]), Some(&f)).unwrap();
        assert_eq!(m.args.block_ttl, std::time::Duration::from_secs(7200));
        assert!(m.args.monitor);
        assert_eq!(m.args.scoring.max_keys, 5000);
        assert_eq!(m.args.dns_ports, [5353]);
        assert_eq!(m.sources["block_ttl"], Source::File);
        assert_eq!(m.sources["block_hold"], Source::Default);

        let m = merge(
            &argv(&["--block-ttl", "1h", "--no-auto-block", "--dns-port", "53"]),
            Some(&f),
        )
        .unwrap();
        assert_eq!(m.args.block_ttl, std::time::Duration::from_secs(3600));
        assert!(
            !m.args.monitor,
            "--no-auto-block excludes the file's monitor"
        );
        assert!(m.args.no_auto_block);
        assert_eq!(
            m.args.scoring.max_keys, 5000,
            "not on the command line: the file's"
        );
        assert_eq!(m.args.dns_ports, [53]);
        assert_eq!(m.sources["block_ttl"], Source::CommandLine);
        let overridden: Vec<&str> = m.overridden.iter().map(|(k, _)| *k).collect();
        assert_eq!(overridden, ["dns_ports", "monitor", "block_ttl"]);
    }

    #[test]
    fn a_file_contradicting_itself_is_one_line() {
        let f = ConfigFile::parse("f.toml", b"no_xdp = true\n").unwrap();
        let e = merge(&argv(&[]), Some(&f)).err().unwrap().to_string();
        assert_eq!(
            e,
            "f.toml: the following required arguments were not provided: --dnstap-socket <PATH>"
        );
    }
}
