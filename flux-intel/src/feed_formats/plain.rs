//! Plain lists: one entry a line (a name, an address, a CIDR, or a URL whose host is taken),
//! `#` and `!` comments.

use super::{lines, text_line};
use crate::feed_set::Collector;

pub(super) fn parse(bytes: &[u8], c: &mut Collector) {
    for (n, raw) in lines(bytes) {
        let Some(line) = text_line(n, raw, &['!'], c) else {
            continue;
        };
        if line.split_whitespace().nth(1).is_some() {
            c.warn(n, format!("more than one entry on the line: {line:?}"));
            continue;
        }
        c.add_value(n, line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed_formats::FeedFormat;

    #[test]
    fn reads_plain() {
        let text = "! header\n# c\na.example\nB.Example. # c\nhxxp://c[.]example/x\n\
                    192.0.2.1\n198.51.100.0/24\n2001:db8::/32\n0.0.0.0 d.example\nnot valid\n\
                    bücher.example\n";
        let mut c = Collector::default();
        parse(text.as_bytes(), &mut c);
        let p = c.finish(FeedFormat::Plain).unwrap();
        let got: Vec<&str> = p.set.domains.iter().map(String::as_str).collect();
        assert_eq!(
            got,
            [
                "a.example",
                "b.example",
                "c.example",
                "xn--bcher-kva.example"
            ]
        );
        assert_eq!(p.set.ipv4.len(), 1);
        assert_eq!(p.set.cidrs.len(), 2);
        assert_eq!(p.entries, 7);
        let lines: Vec<usize> = p.warnings.iter().map(|w| w.line).collect();
        assert_eq!(lines, [9, 10]);
        assert!(p.set.url_hosts.contains("c.example"));
    }
}
