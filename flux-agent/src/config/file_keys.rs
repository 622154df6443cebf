//! The keys of the configuration file and their TOML types: [`RunConfig`], one optional field
//! per `run` option, named like the option's clap argument id. Values keep their byte span in
//! the file ([`toml::Spanned`], ignored by `==`), so a value the `run` parser refuses is
//! reported at its line and column ([`crate::config::merge`]).
//!
//! Choices (`xdp_mode`, `block_action`), durations (`block_ttl`), sizes and addresses are TOML
//! strings checked by the same clap value parser as the flag, not serde enums: one parser, one
//! set of accepted spellings and one list of allowed values for both.

use std::ops::Range;

use serde::{Deserialize, Serialize};
use toml::Spanned;

/// How a key becomes command-line arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArgForm {
    /// A switch (`force = true` is `--force`; `false` gives nothing).
    Flag(bool),
    /// One argument per value (`dns_ports = [53, 5353]` is `--dns-port=53 --dns-port=5353`).
    Values(Vec<String>),
}

/// A TOML value type a key may hold.
pub trait FileValue: Sized {
    fn arg_form(&self) -> ArgForm;
    /// The value from clap's raw strings of the effective setting (`config show`); `None` when
    /// they do not fit (an unset option).
    fn from_raw(raw: &[String]) -> Option<Self>;
}

impl FileValue for bool {
    fn arg_form(&self) -> ArgForm {
        ArgForm::Flag(*self)
    }
    fn from_raw(raw: &[String]) -> Option<Self> {
        raw.first().and_then(|s| s.parse().ok())
    }
}

impl FileValue for String {
    fn arg_form(&self) -> ArgForm {
        ArgForm::Values(vec![self.clone()])
    }
    fn from_raw(raw: &[String]) -> Option<Self> {
        raw.first().cloned()
    }
}

macro_rules! numeric_value {
    ($($t:ty),*) => {$(
        impl FileValue for $t {
            fn arg_form(&self) -> ArgForm {
                ArgForm::Values(vec![self.to_string()])
            }
            fn from_raw(raw: &[String]) -> Option<Self> {
                raw.first().and_then(|s| s.replace('_', "").parse().ok())
            }
        }
    )*};
}
numeric_value!(u16, u32, u64);

impl<T: FileValue> FileValue for Vec<T> {
    fn arg_form(&self) -> ArgForm {
        let mut out = Vec::new();
        for v in self {
            if let ArgForm::Values(vs) = v.arg_form() {
                out.extend(vs);
            }
        }
        ArgForm::Values(out)
    }
    fn from_raw(raw: &[String]) -> Option<Self> {
        raw.iter()
            .map(|r| T::from_raw(std::slice::from_ref(r)))
            .collect()
    }
}

/// A size in bytes: a TOML integer (`104857600`) or a string with a unit (`"100MiB"`), as
/// `--events-max-size` takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Size {
    Bytes(u64),
    Text(String),
}

impl FileValue for Size {
    fn arg_form(&self) -> ArgForm {
        ArgForm::Values(vec![match self {
            Size::Bytes(n) => n.to_string(),
            Size::Text(s) => s.clone(),
        }])
    }
    fn from_raw(raw: &[String]) -> Option<Self> {
        let s = raw.first()?;
        Some(
            s.parse()
                .map_or_else(|_| Size::Text(s.clone()), Size::Bytes),
        )
    }
}

impl Serialize for Size {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Size::Bytes(n) => s.serialize_u64(*n),
            Size::Text(t) => s.serialize_str(t),
        }
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a size: bytes, or a string such as \"100MiB\"")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Size, E> {
                Ok(Size::Bytes(n))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Size, E> {
                u64::try_from(n)
                    .map(Size::Bytes)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Size, E> {
                Ok(Size::Text(s.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

/// One key set in a file: its name, the clap argument it stands for, where its value is, and
/// the value as arguments and as TOML.
#[derive(Clone, Debug)]
pub struct Entry {
    pub key: &'static str,
    pub arg: &'static str,
    pub span: Range<usize>,
    pub form: ArgForm,
    pub value: toml::Value,
}

macro_rules! run_config {
    ($( $(#[$doc:meta])* $key:ident : $ty:ty => $arg:literal, )*) => {
        /// The configuration file: every `run` option, each optional (an absent key leaves the
        /// flag's default). Field names are the file's keys.
        #[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
        #[serde(deny_unknown_fields)]
        pub struct RunConfig {
            $(
                $(#[$doc])*
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $key: Option<Spanned<$ty>>,
            )*
        }

        impl RunConfig {
            /// Every key with the clap argument id of the `run` option it sets.
            pub const KEYS: &[(&str, &str)] = &[$((stringify!($key), $arg)),*];

            /// The keys set, in the order of [`RunConfig::KEYS`].
            pub fn entries(&self) -> Vec<Entry> {
                let mut out = Vec::new();
                $(
                    if let Some(v) = &self.$key {
                        out.push(Entry {
                            key: stringify!($key),
                            arg: $arg,
                            span: v.span(),
                            form: v.get_ref().arg_form(),
                            // Every key's type serialises to TOML (tested); an integer past
                            // i64 cannot come from a TOML file.
                            value: toml::Value::try_from(v.get_ref())
                                .unwrap_or_else(|_| toml::Value::String(String::new())),
                        });
                    }
                )*
                out
            }

            /// The settings clap's raw values describe, key by key (`config show`): `raw` gives
            /// the raw strings of an argument id, `None` when unset.
            pub fn from_raw(raw: impl Fn(&str) -> Option<Vec<String>>) -> Self {
                Self {
                    $(
                        $key: raw($arg)
                            .and_then(|r| <$ty as FileValue>::from_raw(&r))
                            .map(|v| Spanned::new(0..0, v)),
                    )*
                }
            }
        }
    };
}

run_config! {
    /// Interfaces to attach to (`--iface`).
    ifaces: Vec<String> => "ifaces",
    /// The events file (`--events`), `-` for stdout.
    events: String => "events",
    /// Rotation size of the events file (`--events-max-size`).
    events_max_size: Size => "events_max_size",
    /// Rotated events files kept (`--events-keep`).
    events_keep: u32 => "events_keep",
    /// native, skb or auto (`--xdp-mode`).
    xdp_mode: String => "xdp_mode",
    force: bool => "force",
    dns_ports: Vec<u16> => "dns_ports",
    monitor: bool => "monitor",
    no_auto_block: bool => "no_auto_block",
    block_ttl: String => "block_ttl",
    max_blocks_per_minute: u32 => "max_blocks_per_minute",
    resolvers: Vec<String> => "resolvers",
    egress: bool => "egress",
    drop_unsolicited: bool => "drop_unsolicited",
    accept_unsolicited: bool => "accept_unsolicited",
    block_action: String => "block_action",
    dnstap_socket: String => "dnstap_socket",
    no_xdp: bool => "no_xdp",
    metrics: String => "metrics",
    max_blocked_ips: u32 => "max_blocked_ips",
    max_blocked_cidrs: u32 => "max_blocked_cidrs",
    max_blocked_domains: u32 => "max_blocked_domains",
    /// The fleet's NATS server (`--fleet-url`, docs/fleet.md).
    fleet_url: String => "fleet_url",
    fleet_creds: String => "fleet_creds",
    fleet_key: String => "fleet_key",
    fleet_trust: String => "fleet_trust",
    /// block or report (`--fleet-action`).
    fleet_action: String => "fleet_action",
    pin_dir: String => "pin_dir",
    asn_db: Vec<String> => "asn_db",
    geo_db: Vec<String> => "geo_db",
    db_dir: String => "db_dir",
    no_db: bool => "no_db",
    allowlist: Vec<String> => "allowlist",
    no_default_allowlist: bool => "no_default_allowlist",
    max_keys: u64 => "max_keys",
    block_hold: String => "block_hold",
    /// The state database (`--state`).
    state: String => "state_path",
    no_state: bool => "no_state",
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_become_arguments_and_come_back() {
        let c: RunConfig = toml::from_str(
            "dns_ports = [53, 5353]\nforce = true\nevents_max_size = \"100M\"\n\
             max_keys = 1_000\nstate = \"/tmp/s.db\"\n",
        )
        .unwrap();
        let e = c.entries();
        let keys: Vec<_> = e.iter().map(|e| (e.key, e.arg)).collect();
        assert_eq!(
            keys,
            [
                ("events_max_size", "events_max_size"),
                ("force", "force"),
                ("dns_ports", "dns_ports"),
                ("max_keys", "max_keys"),
                ("state", "state_path"),
            ]
        );
        assert_eq!(e[2].form, ArgForm::Values(vec!["53".into(), "5353".into()]));
        assert_eq!(e[1].form, ArgForm::Flag(true));
        assert_eq!(e[0].form, ArgForm::Values(vec!["100M".into()]));
        assert_eq!(e[3].form, ArgForm::Values(vec!["1000".into()]));
        // Spans point at the value in the text.
        assert_eq!(c.force.as_ref().map(|f| f.span()), Some(31..35));

        let text = toml::to_string(&c).unwrap();
        let again: RunConfig = toml::from_str(&text).unwrap();
        assert_eq!(again, c);

        let raw = |id: &str| match id {
            "dns_ports" => Some(vec!["53".to_owned()]),
            "events_max_size" => Some(vec!["4096".to_owned()]),
            "force" => Some(vec!["false".to_owned()]),
            _ => None,
        };
        let r = RunConfig::from_raw(raw);
        assert_eq!(r.dns_ports.map(|s| s.into_inner()), Some(vec![53]));
        assert_eq!(
            r.events_max_size.map(|s| s.into_inner()),
            Some(Size::Bytes(4096))
        );
        assert_eq!(r.force.map(|s| s.into_inner()), Some(false));
        assert!(r.block_ttl.is_none());
    }

    #[test]
    fn a_size_is_bytes_or_text_never_negative() {
        #[derive(Deserialize)]
        struct S {
            s: Size,
        }
        assert_eq!(toml::from_str::<S>("s = 12").unwrap().s, Size::Bytes(12));
        assert_eq!(
            toml::from_str::<S>("s = '1G'").unwrap().s,
            Size::Text("1G".into())
        );
        assert!(toml::from_str::<S>("s = -1").is_err());
        assert!(toml::from_str::<S>("s = true").is_err());
    }
}
