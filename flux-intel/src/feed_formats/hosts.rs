//! hosts files: `ADDRESS NAME [NAME...]`, `#` comments. The names are the entries; the address
//! they point at (usually 0.0.0.0 or 127.0.0.1, the sink) is not. The machine's own entries
//! (`localhost`, `broadcasthost`, `ip6-*`) are skipped.

use std::net::IpAddr;

use super::{lines, text_line};
use crate::feed_set::Collector;

pub(super) fn parse(bytes: &[u8], c: &mut Collector) {
    for (n, raw) in lines(bytes) {
        let Some(line) = text_line(n, raw, &[], c) else {
            continue;
        };
        let mut tokens = line.split_whitespace();
        let Some(first) = tokens.next() else {
            continue;
        };
        if first.parse::<IpAddr>().is_err() {
            c.warn(n, format!("expected `ADDRESS NAME...`, got {first:?}"));
            continue;
        }
        let mut names = 0;
        for name in tokens {
            names += 1;
            c.add_name(n, name);
        }
        if names == 0 {
            c.warn(n, format!("address {first} without a name"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed_formats::FeedFormat;

    #[test]
    fn reads_hosts() {
        let text = "# Title: x\n127.0.0.1 localhost\n::1 ip6-localhost ip6-loopback\n\
                    0.0.0.0 0.0.0.0\n0.0.0.0 Evil.Example\t# c\n0.0.0.0 a.example b[.]example\n\
                    0.0.0.0\nnot-an-address x.example\n0.0.0.0 bad_name!.example\n";
        let mut c = Collector::default();
        parse(text.as_bytes(), &mut c);
        let p = c.finish(FeedFormat::Hosts).unwrap();
        let got: Vec<&str> = p.set.domains.iter().map(String::as_str).collect();
        assert_eq!(got, ["a.example", "b.example", "evil.example"]);
        let lines: Vec<usize> = p.warnings.iter().map(|w| w.line).collect();
        assert_eq!(lines, [7, 8, 9]);
        assert!(p.set.ipv4.is_empty());
    }
}
