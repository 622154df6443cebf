//! dnsmasq configuration lines that block names: `server=/d1/d2/` (answered locally, so
//! NXDOMAIN), `local=/d/`, and `address=/d/` with or without a sink address (`0.0.0.0`, `::`,
//! `#`, or any other: the name is the entry). Skipped with a warning: `server=/d/UPSTREAM`
//! (forwarding, not blocking), `/#/` (every name), and any other directive. `#` comments.

use super::{lines, text_line};
use crate::feed_set::Collector;

pub(super) fn parse(bytes: &[u8], c: &mut Collector) {
    for (n, raw) in lines(bytes) {
        let Some(line) = text_line(n, raw, &[], c) else {
            continue;
        };
        if let Err(msg) = directive(n, line, c) {
            c.warn(n, format!("{msg}: {line:?}"));
        }
    }
}

fn directive(n: usize, line: &str, c: &mut Collector) -> Result<(), &'static str> {
    let (key, value) = line.split_once('=').ok_or("not a dnsmasq directive")?;
    let key = key.trim();
    if !matches!(key, "server" | "local" | "address") {
        return Err("directive that blocks nothing skipped");
    }
    let rest = value
        .trim()
        .strip_prefix('/')
        .ok_or("expected /domain/ after the directive")?;
    let (domains, target) = rest
        .rsplit_once('/')
        .ok_or("expected /domain/ after the directive")?;
    let target = target.trim();
    if key != "address" && !target.is_empty() {
        return Err("forwards to an upstream server, not a block");
    }
    if domains.is_empty() {
        return Err("no domain");
    }
    for domain in domains.split('/') {
        if domain == "#" {
            c.warn(n, "`#` (every name) skipped");
            continue;
        }
        c.add_name(n, domain);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed_formats::FeedFormat;

    #[test]
    fn reads_dnsmasq() {
        let text = "# c\nserver=/a.example/\nlocal=/b.example/c.example/\n\
                    address=/d.example/0.0.0.0\naddress=/e.example/::\naddress=/f.example/\n\
                    server=/g.example/1.1.1.1\nserver=/#/\ncache-size=100\nserver=1.1.1.1\n\
                    address=/bad..example/\n";
        let mut c = Collector::default();
        parse(text.as_bytes(), &mut c);
        let p = c.finish(FeedFormat::Dnsmasq).unwrap();
        let got: Vec<&str> = p.set.domains.iter().map(String::as_str).collect();
        assert_eq!(
            got,
            [
                "a.example",
                "b.example",
                "c.example",
                "d.example",
                "e.example",
                "f.example"
            ]
        );
        let lines: Vec<usize> = p.warnings.iter().map(|w| w.line).collect();
        assert_eq!(lines, [7, 8, 9, 10, 11]);
    }
}
