//! From the file to `run`'s arguments: [`ConfigFile`] parses a file into a [`RunConfig`],
//! checks every value with the clap value parser of the option it sets (the `run` command is
//! handed in: the library does not know the binary's parser), and turns the keys the command
//! line did not give into arguments ([`FileArgs`]) that the binary parses after its own, so a
//! flag always wins and both accept exactly the same values.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
};

use crate::config::{
    ConfigError,
    file_keys::{ArgForm, Entry, RunConfig},
};

/// A parsed configuration file with its text (for the positions of later errors).
#[derive(Clone, Debug)]
pub struct ConfigFile {
    /// How errors name the file (its path as given).
    pub origin: String,
    pub path: Option<PathBuf>,
    pub config: RunConfig,
    text: String,
}

/// The arguments a file adds to a command line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileArgs {
    /// `--long=value` / `--long`, to parse after the command line's own arguments.
    pub args: Vec<OsString>,
    /// Argument ids the file set (and the command line did not).
    pub from_file: Vec<&'static str>,
    /// Keys of the file the command line overrode: `(key, why)`.
    pub overridden: Vec<(&'static str, String)>,
}

impl ConfigFile {
    /// Reads and parses `path` (types and unknown keys; values are checked by [`Self::check`]).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut f = Self::parse(&path.display().to_string(), &bytes)?;
        f.path = Some(path.to_owned());
        Ok(f)
    }

    /// Parses `bytes`, a TOML document; `origin` names it in errors.
    pub fn parse(origin: &str, bytes: &[u8]) -> Result<Self, ConfigError> {
        let text = std::str::from_utf8(bytes).map_err(|e| {
            let lossy = String::from_utf8_lossy(bytes);
            let (line, column) =
                super::config_error::line_column(&lossy, e.valid_up_to().min(lossy.len()));
            ConfigError::At {
                origin: origin.to_owned(),
                line,
                column,
                field: None,
                message: "not UTF-8 (a TOML file is UTF-8 text)".into(),
            }
        })?;
        let config: RunConfig = toml::from_str(text).map_err(|e| syntax_error(origin, text, &e))?;
        Ok(Self {
            origin: origin.to_owned(),
            path: None,
            config,
            text: text.to_owned(),
        })
    }

    /// Checks every value with the value parser of its option in `run` (the clap command of
    /// `flux-agent run`), and that no two keys set exclude each other.
    pub fn check(&self, run: &clap::Command) -> Result<(), ConfigError> {
        let entries = self.config.entries();
        for e in &entries {
            self.check_entry(run, e)?;
        }
        let set: Vec<&Entry> = entries.iter().filter(|e| is_set(&e.form)).collect();
        for (i, later) in set.iter().enumerate() {
            if let Some(earlier) = set
                .iter()
                .take(i)
                .find(|earlier| conflict(run, earlier.arg, later.arg))
            {
                return Err(self.error(
                    later,
                    &format!("cannot be used with \"{}\" (both are set)", earlier.key),
                ));
            }
        }
        Ok(())
    }

    fn check_entry(&self, run: &clap::Command, e: &Entry) -> Result<(), ConfigError> {
        let arg = find(run, e.arg).ok_or_else(|| {
            self.error(
                e,
                "this build of flux-agent has no such run option (a defect)",
            )
        })?;
        let ArgForm::Values(values) = &e.form else {
            return Ok(());
        };
        let Some(long) = arg.get_long() else {
            return Ok(());
        };
        for v in values {
            // clap parses one value only as part of a command line (its value parsers are not
            // public on their own): `run --long=VALUE`, which no other option can contradict.
            let one = [run.get_name().to_owned(), format!("--{long}={v}")];
            if let Err(err) = run.clone().try_get_matches_from(one) {
                return Err(self.error(e, &value_message(arg, v, &err)));
            }
        }
        Ok(())
    }

    /// The arguments the file adds to a command line on which `given(arg id)` says which
    /// options were given (they win, and so do the ones they exclude). Checks the file first.
    pub fn args(
        &self,
        run: &clap::Command,
        given: impl Fn(&str) -> bool,
    ) -> Result<FileArgs, ConfigError> {
        self.check(run)?;
        let given_ids: Vec<String> = run
            .get_arguments()
            .map(|a| a.get_id().to_string())
            .filter(|id| given(id))
            .collect();
        let mut out = FileArgs::default();
        for e in self.config.entries() {
            if given(e.arg) {
                out.overridden
                    .push((e.key, "given on the command line".into()));
                continue;
            }
            if let Some(flag) = given_ids.iter().find(|g| conflict(run, g, e.arg)) {
                out.overridden
                    .push((e.key, format!("excluded by {flag} on the command line")));
                continue;
            }
            let Some(long) = find(run, e.arg).and_then(|a| a.get_long()) else {
                continue;
            };
            match &e.form {
                ArgForm::Flag(false) => {}
                ArgForm::Flag(true) => out.args.push(format!("--{long}").into()),
                ArgForm::Values(vs) => out
                    .args
                    .extend(vs.iter().map(|v| OsString::from(format!("--{long}={v}")))),
            }
            out.from_file.push(e.arg);
        }
        Ok(out)
    }

    fn error(&self, e: &Entry, message: &str) -> ConfigError {
        ConfigError::at(
            &self.origin,
            &self.text,
            e.span.clone(),
            Some(e.key),
            message,
        )
    }
}

/// Whether a key's value asks for anything (`false` and `[]` do not).
fn is_set(form: &ArgForm) -> bool {
    match form {
        ArgForm::Flag(b) => *b,
        ArgForm::Values(v) => !v.is_empty(),
    }
}

fn find<'a>(run: &'a clap::Command, id: &str) -> Option<&'a clap::Arg> {
    run.get_arguments().find(|a| a.get_id() == id)
}

/// Whether the options `a` and `b` exclude each other (clap records it on one side only).
fn conflict(run: &clap::Command, a: &str, b: &str) -> bool {
    let (Some(x), Some(y)) = (find(run, a), find(run, b)) else {
        return false;
    };
    run.get_arg_conflicts_with(x)
        .iter()
        .any(|c| c.get_id() == b)
        || run
            .get_arg_conflicts_with(y)
            .iter()
            .any(|c| c.get_id() == a)
}

/// What is wrong with value `v`: the allowed values of a choice, else the parser's reason.
fn value_message(arg: &clap::Arg, v: &str, err: &clap::Error) -> String {
    let choices: Vec<String> = arg
        .get_possible_values()
        .iter()
        .filter(|p| !p.is_hide_set())
        .map(|p| p.get_name().to_owned())
        .collect();
    if !choices.is_empty() {
        return format!(
            "unknown value \"{v}\", expected one of {}",
            choices.join(", ")
        );
    }
    match std::error::Error::source(err) {
        Some(why) => format!("invalid value \"{v}\": {why}"),
        None => format!("invalid value \"{v}\""),
    }
}

/// A TOML syntax, type or unknown-key error at its place.
fn syntax_error(origin: &str, text: &str, e: &toml::de::Error) -> ConfigError {
    let msg = e.message();
    let span = e.span().unwrap_or(0..0);
    if let Some(rest) = msg.strip_prefix("unknown field `")
        && let Some((key, _)) = rest.split_once('`')
    {
        let hint = closest_key(key).map_or_else(
            || " (`flux-agent config show` lists every key)".to_owned(),
            |k| format!(", did you mean \"{k}\"?"),
        );
        return ConfigError::at(origin, text, span, Some(key), &format!("unknown key{hint}"));
    }
    ConfigError::at(origin, text, span, None, msg)
}

/// The key within [`MAX_TYPO_DISTANCE`] edits of `key`, if any (a typo's suggestion).
fn closest_key(key: &str) -> Option<&'static str> {
    RunConfig::KEYS
        .iter()
        .map(|(k, _)| (edit_distance(k, key), *k))
        .filter(|(d, _)| *d <= MAX_TYPO_DISTANCE)
        .min()
        .map(|(_, k)| k)
}

/// Edits within which an unknown key is taken for a typo of a known one: two catches a swapped
/// or doubled letter and `-` for `_`, without suggesting unrelated short keys.
const MAX_TYPO_DISTANCE: usize = 2;

/// Levenshtein distance (hand-written: a dozen lines, for one suggestion).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev.get(j).copied().unwrap_or(0) + usize::from(ca != *cb);
            let del = prev.get(j + 1).copied().unwrap_or(0) + 1;
            let ins = cur.get(j).copied().unwrap_or(0) + 1;
            cur.push(sub.min(del).min(ins));
        }
        prev = cur;
    }
    prev.last().copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, ArgAction, Command};

    /// A small stand-in for `run`: a choice, a switch pair that excludes each other, a list
    /// and a value with its own parser.
    fn run_cmd() -> Command {
        let mut c = Command::new("run")
            .arg(
                Arg::new("block_action")
                    .long("block-action")
                    .value_parser(["nxdomain", "drop"]),
            )
            .arg(
                Arg::new("monitor")
                    .long("monitor")
                    .action(ArgAction::SetTrue),
            )
            .arg(
                Arg::new("no_auto_block")
                    .long("no-auto-block")
                    .action(ArgAction::SetTrue)
                    .conflicts_with("monitor"),
            )
            .arg(
                Arg::new("dns_ports")
                    .long("dns-port")
                    .action(ArgAction::Append)
                    .value_parser(clap::value_parser!(u16)),
            )
            .arg(
                Arg::new("block_ttl")
                    .long("block-ttl")
                    .value_parser(|s: &str| humantime::parse_duration(s)),
            );
        c.build();
        c
    }

    fn err(text: &str) -> String {
        match ConfigFile::parse("f.toml", text.as_bytes()).and_then(|f| f.check(&run_cmd())) {
            Ok(()) => panic!("accepted: {text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn errors_name_line_column_field_and_choices() {
        assert_eq!(
            err("# x\n\nblock_acton = \"drop\"\n"),
            "f.toml:3:1: field \"block_acton\": unknown key, did you mean \"block_action\"?"
        );
        assert_eq!(
            err("max_keys = \"many\"\n"),
            "f.toml:1:12: field \"max_keys\": invalid type: string \"many\", expected u64"
        );
        assert_eq!(
            err("monitor = true\nblock_action = \"blok\"\n"),
            "f.toml:2:16: field \"block_action\": unknown value \"blok\", expected one of \
             nxdomain, drop"
        );
        assert_eq!(
            err("block_ttl = \"soon\"\n"),
            "f.toml:1:13: field \"block_ttl\": invalid value \"soon\": expected number at 0"
        );
        assert_eq!(
            err("dns_ports = [\n  53,\n  70000,\n]\n"),
            "f.toml:3:3: field \"dns_ports\": invalid value: integer `70000`, expected u16"
        );
        assert_eq!(
            err("monitor = true\nno_auto_block = true\n"),
            "f.toml:2:17: field \"no_auto_block\": cannot be used with \"monitor\" (both are set)"
        );
        assert!(err("= 1").starts_with("f.toml:1:1: "), "{}", err("= 1"));
        assert!(err("force = tru").starts_with("f.toml:1:9: field \"force\": "));
        let e = ConfigFile::parse("f.toml", b"force = \xff").unwrap_err();
        assert_eq!(
            e.to_string(),
            "f.toml:1:9: not UTF-8 (a TOML file is UTF-8 text)"
        );
        assert_eq!(err("zzz = 1"), err("zzz = 1").lines().next().unwrap());
        assert!(err("zzz = 1").contains("config show"));
    }

    #[test]
    fn the_command_line_wins() {
        let f = ConfigFile::parse(
            "f.toml",
            b"block_action = \"drop\"\nmonitor = true\ndns_ports = [53, 5353]\n",
        )
        .unwrap();
        let cmd = run_cmd();
        let a = f.args(&cmd, |_| false).unwrap();
        assert_eq!(
            a.args,
            [
                "--dns-port=53",
                "--dns-port=5353",
                "--monitor",
                "--block-action=drop"
            ]
            .map(OsString::from)
        );
        assert_eq!(a.from_file, ["dns_ports", "monitor", "block_action"]);
        // `--dns-port` and `--no-auto-block` given: the file's ports and its monitor (which
        // --no-auto-block excludes) give way.
        let a = f
            .args(&cmd, |id| id == "dns_ports" || id == "no_auto_block")
            .unwrap();
        assert_eq!(a.args, ["--block-action=drop"].map(OsString::from));
        assert_eq!(a.overridden.len(), 2);
        assert_eq!(a.overridden[0].0, "dns_ports");
        assert_eq!(a.overridden[1].0, "monitor");
        assert!(a.overridden[1].1.contains("no_auto_block"));
    }

    #[test]
    fn distances() {
        assert_eq!(edit_distance("", "ab"), 2);
        assert_eq!(edit_distance("force", "froce"), 2);
        assert_eq!(closest_key("no-db"), Some("no_db"));
        assert_eq!(closest_key("zzzzzzzz"), None);
    }
}
