//! AdBlock / AdGuard lists as DNS blockers read them: `||domain^` blocks the name and its
//! subdomains. Also read: `||domain` without `^`, a trailing `|`, the options that still block
//! the whole name (`$important`, `$all`, `$document`, `$popup`, `$third-party`), and the bare
//! `domain` and hosts-style lines AdGuard DNS accepts. Skipped with a warning: exceptions
//! (`@@`: a feed only adds entries), rules on paths or with wildcards, regular expressions,
//! cosmetic rules (`##`) and any other option (`$script`, `$dnstype=`, `$client=`, `$badfilter`:
//! the rule does not block the whole name). `!` comments and the `[Adblock Plus]` header.

use std::net::IpAddr;

use super::{lines, text_line};
use crate::feed_set::Collector;

/// Options under which a `||domain^` rule still blocks every lookup of the name.
const BLOCKING_OPTIONS: &[&str] = &[
    "important",
    "all",
    "document",
    "doc",
    "popup",
    "third-party",
    "3p",
];

pub(super) fn parse(bytes: &[u8], c: &mut Collector) {
    for (n, raw) in lines(bytes) {
        let Some(line) = text_line(n, raw, &['!', '['], c) else {
            continue;
        };
        if let Err(msg) = rule(n, line, c) {
            c.warn(n, format!("{msg}: {line:?}"));
        }
    }
}

fn rule(n: usize, line: &str, c: &mut Collector) -> Result<(), &'static str> {
    if line.starts_with("@@") {
        return Err("exception rule skipped (a feed only adds entries)");
    }
    if ["##", "#@#", "#?#", "#$#", "#%#"]
        .iter()
        .any(|m| line.contains(m))
    {
        return Err("cosmetic rule skipped");
    }
    if line.len() > 1 && line.starts_with('/') && line.ends_with('/') {
        return Err("regular-expression rule skipped");
    }
    let Some(body) = line.strip_prefix("||") else {
        return bare(n, line, c);
    };
    let (body, options) = match body.split_once('$') {
        Some((b, o)) => (b, Some(o)),
        None => (body, None),
    };
    if let Some(options) = options {
        let blocks = options
            .split(',')
            .all(|o| BLOCKING_OPTIONS.contains(&o.trim().to_ascii_lowercase().as_str()));
        if !blocks {
            return Err("rule with options that do not block the whole name skipped");
        }
    }
    let body = body.strip_suffix('|').unwrap_or(body);
    let body = body.strip_suffix('^').unwrap_or(body);
    if body.contains(['/', '*', '^', '|', '?', '=']) {
        return Err("rule on a path or with a wildcard skipped");
    }
    c.add_value(n, body);
    Ok(())
}

/// A line without `||`: a bare name or address, or a hosts-style line.
fn bare(n: usize, line: &str, c: &mut Collector) -> Result<(), &'static str> {
    if line.contains(['|', '^', '$', '*', '/']) {
        return Err("rule that does not name a whole domain skipped");
    }
    let mut tokens = line.split_whitespace();
    let first = tokens.next().unwrap_or_default();
    let rest: Vec<&str> = tokens.collect();
    if rest.is_empty() {
        c.add_value(n, first);
    } else if first.parse::<IpAddr>().is_ok() {
        rest.iter().for_each(|name| {
            c.add_name(n, name);
        });
    } else {
        return Err("not a rule");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed_formats::FeedFormat;

    #[test]
    fn reads_abp() {
        let text = "[Adblock Plus 2.0]\n! Title: x\n||a.example^\n||B.example^$important\n\
                    ||c.example^|\n||d.example\nbare.example\n0.0.0.0 hosts.example\n\
                    ||192.0.2.1^\n@@||good.example^\n||x.example^$script\n||y.example/ads^\n\
                    ||*.z.example^\nexample.org##.banner\n/ads[0-9]+/\n||w.example^$dnstype=AAAA\n";
        let mut c = Collector::default();
        parse(text.as_bytes(), &mut c);
        let p = c.finish(FeedFormat::Abp).unwrap();
        let got: Vec<&str> = p.set.domains.iter().map(String::as_str).collect();
        assert_eq!(
            got,
            [
                "a.example",
                "b.example",
                "bare.example",
                "c.example",
                "d.example",
                "hosts.example"
            ]
        );
        assert_eq!(p.set.ipv4.len(), 1);
        let lines: Vec<usize> = p.warnings.iter().map(|w| w.line).collect();
        assert_eq!(lines, [10, 11, 12, 13, 14, 15, 16]);
        assert!(
            p.warnings[0].message.contains("exception"),
            "{:?}",
            p.warnings
        );
    }
}
