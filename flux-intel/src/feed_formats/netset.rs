//! FireHOL netsets and other address lists: one IPv4/IPv6 address, CIDR, or `FIRST-LAST` range
//! a line; `#` and `;` comments (Spamhaus DROP writes `1.2.3.0/24 ; SBL123`). A name is a
//! warning.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Subnets, Ipv6Subnets};

use super::{lines, text_line};
use crate::{
    feed_set::Collector,
    indicator::{Indicator, parse_net},
};

/// Subnets one range may become. Any IPv4 range is at most 62 CIDRs; an IPv6 one can be ~250,
/// and a line must not become hundreds of entries (write such a range as CIDRs).
const MAX_RANGE_NETS: usize = 64;

pub(super) fn parse(bytes: &[u8], c: &mut Collector) {
    for (n, raw) in lines(bytes) {
        let Some(line) = text_line(n, raw, &[';'], c) else {
            continue;
        };
        let entry = line.split(';').next().unwrap_or_default().trim();
        if entry.split_whitespace().nth(1).is_some() {
            c.warn(n, format!("more than one entry on the line: {line:?}"));
            continue;
        }
        match parse_entry(entry) {
            Ok(list) => list.into_iter().for_each(|i| c.add(i, false)),
            Err(msg) => c.warn(n, msg),
        }
    }
}

/// True if `s` is an address, a CIDR or a range (for auto-detection).
pub(super) fn is_address_entry(s: &str) -> bool {
    parse_entry(s).is_ok()
}

fn parse_entry(entry: &str) -> Result<Vec<Indicator>, String> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Ok(vec![Indicator::Addr(ip)]);
    }
    if let Some((a, b)) = entry.split_once('-') {
        return range(a.trim(), b.trim());
    }
    if entry.contains('/') {
        return parse_net(entry).map(|i| vec![i]).map_err(|_| bad(entry));
    }
    Err(bad(entry))
}

fn bad(entry: &str) -> String {
    format!("not an address, CIDR or range: {entry:?}")
}

fn range(a: &str, b: &str) -> Result<Vec<Indicator>, String> {
    let nets: Vec<IpNet> = match (a.parse::<IpAddr>(), b.parse::<IpAddr>()) {
        (Ok(IpAddr::V4(a)), Ok(IpAddr::V4(b))) if a <= b => Ipv4Subnets::new(a, b, 0)
            .take(MAX_RANGE_NETS + 1)
            .map(IpNet::V4)
            .collect(),
        (Ok(IpAddr::V6(a)), Ok(IpAddr::V6(b))) if a <= b => Ipv6Subnets::new(a, b, 0)
            .take(MAX_RANGE_NETS + 1)
            .map(IpNet::V6)
            .collect(),
        _ => return Err(format!("not a valid range: {a}-{b}")),
    };
    if nets.len() > MAX_RANGE_NETS {
        return Err(format!(
            "range {a}-{b} is more than {MAX_RANGE_NETS} CIDRs; write it as CIDRs"
        ));
    }
    Ok(nets
        .into_iter()
        .map(|n| {
            if n.prefix_len() == n.max_prefix_len() {
                Indicator::Addr(n.addr())
            } else {
                Indicator::Net(n)
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed_formats::FeedFormat;

    #[test]
    fn reads_netset() {
        let text = "#\n# firehol\n0.0.0.0/8\n1.10.16.0/20 ; SBL256894\n192.0.2.7\n\
                    192.0.2.9/32\n2001:db8::/48\n10.0.0.0-10.0.0.255\n10.1.0.1-10.1.0.2\n\
                    evil.example\n10.0.0.0/40\n9.9.9.9-1.1.1.1\n";
        let mut c = Collector::default();
        parse(text.as_bytes(), &mut c);
        let p = c.finish(FeedFormat::Netset).unwrap();
        let nets: Vec<String> = p.set.cidrs.iter().map(|n| n.to_string()).collect();
        assert_eq!(
            nets,
            ["0.0.0.0/8", "1.10.16.0/20", "10.0.0.0/24", "2001:db8::/48"]
        );
        let addrs: Vec<String> = p.set.ipv4.iter().map(|a| a.to_string()).collect();
        assert_eq!(addrs, ["10.1.0.1", "10.1.0.2", "192.0.2.7", "192.0.2.9"]);
        let lines: Vec<usize> = p.warnings.iter().map(|w| w.line).collect();
        assert_eq!(lines, [10, 11, 12]);
        assert!(range("::1", "ffff::").is_err());
        assert_eq!(range("0.0.0.1", "255.255.255.254").map(|v| v.len()), Ok(62));
    }
}
