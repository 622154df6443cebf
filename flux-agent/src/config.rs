//! The configuration file of `flux-agent run` (`/etc/flux-agent/flux-agent.toml`, or
//! `run --config PATH`, or `$FLUX_AGENT_CONFIG`): every `run` option, one TOML key each, named
//! like the option's argument id (`block_action`, `dns_ports`, `state`); command-line flags
//! override it.
//!
//! - [`file_keys`]: [`RunConfig`], the keys and their TOML types (serde, unknown keys refused);
//!   each value keeps its span for the error messages.
//! - [`config_error`]: [`ConfigError`]: one line naming the file, line, column and field, with
//!   the allowed values of a choice.
//! - [`merge`]: checks every value with the `run` command's own clap parser (so the file and
//!   the flags accept exactly the same values), and turns the file into the arguments of the
//!   keys the command line did not give ([`merge::FileArgs`]).
//!
//! May touch: the file named (read only) and the clap description of `run` handed in. Starts
//! nothing; the binary (`cli/run.rs`, `cli/config_command.rs`) applies the result.

pub mod config_error;
pub mod file_keys;
pub mod merge;

pub use config_error::ConfigError;
pub use file_keys::RunConfig;
pub use merge::{ConfigFile, FileArgs};

/// Where `run` looks for its configuration when neither `--config` nor [`CONFIG_ENV`] names one.
/// A missing file there is no error (the built-in defaults apply); a named one must exist.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/flux-agent/flux-agent.toml";

/// The environment variable naming the configuration file (below `--config`, above the default
/// path).
pub const CONFIG_ENV: &str = "FLUX_AGENT_CONFIG";
