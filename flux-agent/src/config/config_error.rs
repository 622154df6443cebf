//! Errors of the configuration file: one line, `FILE:LINE:COLUMN: field "KEY": WHAT`, the
//! allowed values of a choice included. Positions come from the spans the toml crate keeps;
//! the field of a type error is the key whose value the span falls in.

use std::{ops::Range, path::PathBuf};

/// Why a configuration file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A fault at one place in the file.
    #[error("{}", self.line_text())]
    At {
        origin: String,
        line: usize,
        column: usize,
        /// The key involved, when known.
        field: Option<String>,
        message: String,
    },
    /// A fault of the file as a whole (two keys that exclude each other, a key that needs
    /// another).
    #[error("{origin}: {message}")]
    Whole { origin: String, message: String },
}

impl ConfigError {
    /// An error at byte `span` of `text`; `field` when the caller knows it, else the key the
    /// span falls under.
    pub fn at(
        origin: &str,
        text: &str,
        span: Range<usize>,
        field: Option<&str>,
        message: &str,
    ) -> Self {
        let (line, column) = line_column(text, span.start);
        // A quoted TOML key may hold any character, a newline included (`["e\nrat"]`, found
        // by the config_parse fuzzer): escaped, so the error stays one line.
        let field = field
            .map(str::to_owned)
            .or_else(|| key_before(text, span.start))
            .map(|f| f.escape_debug().to_string());
        ConfigError::At {
            origin: origin.to_owned(),
            line,
            column,
            field,
            message: one_line(message),
        }
    }

    fn line_text(&self) -> String {
        match self {
            ConfigError::At {
                origin,
                line,
                column,
                field,
                message,
            } => match field {
                Some(f) => format!("{origin}:{line}:{column}: field \"{f}\": {message}"),
                None => format!("{origin}:{line}:{column}: {message}"),
            },
            other => other.to_string(),
        }
    }

    /// The error as one JSON object (`config check --json`).
    pub fn to_json(&self) -> serde_json::Value {
        let mut doc = serde_json::json!({ "valid": false, "error": self.to_string() });
        if let ConfigError::At {
            line,
            column,
            field,
            ..
        } = self
        {
            doc["line"] = (*line).into();
            doc["column"] = (*column).into();
            doc["field"] = field.clone().into();
        }
        doc
    }
}

/// 1-based line and column (in characters) of byte `at` of `text`.
pub fn line_column(text: &str, at: usize) -> (usize, usize) {
    let at = floor_char_boundary(text, at.min(text.len()));
    let before = text.get(..at).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

fn floor_char_boundary(text: &str, mut at: usize) -> usize {
    while at > 0 && !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// The key of the `key = value` line at or above byte `at` (a value may span lines: an array).
fn key_before(text: &str, at: usize) -> Option<String> {
    let at = floor_char_boundary(text, at.min(text.len()));
    let head = text.get(..at)?;
    // The line holding `at`, then the lines above it, nearest first.
    let line_end = text
        .get(at..)
        .and_then(|t| t.find('\n'))
        .map_or(text.len(), |i| at + i);
    let current = text.get(head.rfind('\n').map_or(0, |i| i + 1)..line_end)?;
    std::iter::once(current)
        .chain(head.lines().rev().skip(1))
        .find_map(|l| {
            let (k, _) = l.split_once('=')?;
            let k = k.trim().trim_matches('"');
            (!k.is_empty()
                && k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
            .then(|| k.to_owned())
        })
}

/// The first line of `message`, its trailing period and space dropped; the rest joined on `; `
/// so that nothing is lost and the error stays one line.
fn one_line(message: &str) -> String {
    let parts: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_and_fields() {
        let text = "# c\nforce = true\nresolvers = [\n  \"x\",\n]\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 12), (2, 9));
        let at = text.find("\"x\"").unwrap();
        assert_eq!(key_before(text, at).as_deref(), Some("resolvers"));
        let e = ConfigError::at("f.toml", text, 12..16, None, "bad\nthing\n");
        assert_eq!(e.to_string(), "f.toml:2:9: field \"force\": bad; thing");
        assert_eq!(e.to_json()["line"], 2);
        assert_eq!(e.to_json()["field"], "force");
        // A key holding a newline (the config_parse fuzzer's crash input) stays one line.
        let e = ConfigError::at(
            "f.toml",
            "[\"e\\nrat\"] ",
            1..8,
            Some("e\nrat"),
            "unknown key",
        );
        assert_eq!(e.to_string(), "f.toml:1:2: field \"e\\nrat\": unknown key");
        assert_eq!(e.to_string().lines().count(), 1);
        // Past the end or inside a character: no panic.
        assert_eq!(line_column("é", 1), (1, 1));
        assert_eq!(line_column("a", 99), (1, 2));
    }
}
