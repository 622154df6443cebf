//! One indicator value as a feed writes it (a name, an address, a CIDR or a URL, possibly
//! defanged), made canonical: refanged, a URL's host taken, names lowercased, without the
//! trailing dot, IDN converted to A-labels (kept crate `idna`) and checked against the DNS's
//! label and length rules; networks truncated to their prefix, a /32 or /128 made an address.
//! Pure functions, used by every format parser; touches nothing else.

use std::{
    borrow::Cow,
    net::{IpAddr, Ipv4Addr},
};

use ipnet::IpNet;

/// One canonical indicator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Indicator {
    /// Lowercase A-labels, no trailing dot.
    Domain(String),
    Addr(IpAddr),
    /// Truncated to its prefix; never a single address.
    Net(IpNet),
}

/// Why a value was not taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reject {
    /// Hosts-file boilerplate (`localhost`, `broadcasthost`, `ip6-allnodes`, ...): skipped
    /// silently, every hosts file carries it.
    Boilerplate,
    /// Not a valid name, address or network: a warning.
    Invalid(String),
}

impl Reject {
    fn invalid(msg: impl Into<String>) -> Self {
        Reject::Invalid(msg.into())
    }
}

/// Names hosts files list for the machine itself, never as something to block.
pub const HOSTS_BOILERPLATE: &[&str] = &[
    "localhost",
    "localhost.localdomain",
    "local",
    "broadcasthost",
    "ip6-localhost",
    "ip6-loopback",
    "ip6-localnet",
    "ip6-mcastprefix",
    "ip6-allnodes",
    "ip6-allrouters",
    "ip6-allhosts",
    "0.0.0.0",
];

/// RFC 1035: a name is at most 253 characters written without its trailing dot.
pub const MAX_NAME_LEN: usize = 253;
/// RFC 1035: a label is 1 to 63 octets.
pub const MAX_LABEL_LEN: usize = 63;

/// Undoes the usual defanging: `[.]`, `(.)`, `{.}`, `[dot]`, `(dot)` for a dot, `[:]` for a
/// colon, `[://]`, and an `hxxp`/`hXXp` scheme (`hxxps`, too).
pub fn refang(s: &str) -> Cow<'_, str> {
    let scheme = s.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("hxxp"));
    if !scheme && !s.contains(['[', '(', '{']) {
        return Cow::Borrowed(s);
    }
    let mut out = if scheme {
        format!("http{}", s.get(4..).unwrap_or_default())
    } else {
        s.to_owned()
    };
    for (from, to) in [
        ("[://]", "://"),
        ("[.]", "."),
        ("(.)", "."),
        ("{.}", "."),
        ("[dot]", "."),
        ("(dot)", "."),
        ("[:]", ":"),
    ] {
        if out.contains(from) {
            out = out.replace(from, to);
        }
    }
    Cow::Owned(out)
}

/// Parses one value: a name, an address, a CIDR, or a URL (its host taken). The bool is true
/// when the value was a URL.
pub fn parse_indicator(raw: &str) -> Result<(Indicator, bool), Reject> {
    let value = refang(raw.trim());
    let value = value.as_ref();
    if value.is_empty() {
        return Err(Reject::invalid("empty value"));
    }
    if value.contains("://") {
        return url_host(value).map(|i| (i, true));
    }
    parse_host(value).map(|i| (i, false))
}

/// A name, address or CIDR (already refanged).
pub fn parse_host(value: &str) -> Result<Indicator, Reject> {
    let bare = value
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .unwrap_or(value);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(Indicator::Addr(ip));
    }
    if value.contains('/') {
        return parse_net(value);
    }
    normalize_domain(value).map(Indicator::Domain)
}

/// `ADDR/LEN`, truncated to the prefix; a full-length prefix is an address.
pub fn parse_net(value: &str) -> Result<Indicator, Reject> {
    let net: IpNet = value
        .parse()
        .map_err(|_| Reject::invalid(format!("not a host, address or CIDR: {value:?}")))?;
    let net = net.trunc();
    if net.prefix_len() == net.max_prefix_len() {
        return Ok(Indicator::Addr(net.addr()));
    }
    Ok(Indicator::Net(net))
}

/// The host of a URL: `scheme://[user@]host[:port][/path|?query|#fragment]`.
/// Hand-written rather than with the `url` crate: only the host is wanted, and a feed's URLs are
/// often not valid URLs past the host (spaces, raw Unicode in paths), which must not lose it.
pub fn url_host(url: &str) -> Result<Indicator, Reject> {
    let rest = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .trim_start_matches('/');
    let authority = rest.split(['/', '?', '#', '\\']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        let inner = v6
            .split_once(']')
            .map(|(h, _)| h)
            .ok_or_else(|| Reject::invalid(format!("bad IPv6 host in URL {url:?}")))?;
        return inner
            .parse::<IpAddr>()
            .map(Indicator::Addr)
            .map_err(|_| Reject::invalid(format!("bad IPv6 host in URL {url:?}")));
    } else {
        host_port.rsplit_once(':').map_or(host_port, |(h, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                host_port
            }
        })
    };
    if host.is_empty() {
        return Err(Reject::invalid(format!("URL without a host: {url:?}")));
    }
    parse_host(host)
}

/// Lowercase A-labels without the trailing dot, checked against the DNS's rules; hosts-file
/// boilerplate is [`Reject::Boilerplate`].
pub fn normalize_domain(name: &str) -> Result<String, Reject> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let name = if name.is_ascii() {
        name.to_ascii_lowercase()
    } else {
        idna::domain_to_ascii(name)
            .map_err(|_| Reject::invalid(format!("not a valid internationalized name: {name:?}")))?
    };
    if HOSTS_BOILERPLATE.contains(&name.as_str()) {
        return Err(Reject::Boilerplate);
    }
    check_name(&name)?;
    Ok(name)
}

/// RFC 1035 lengths; letters, digits, `-` (not at a label's ends) and `_` (service labels);
/// at least two labels (a feed entry that blocks a whole TLD is a mistake, and single names are
/// the local network's); the last label not all digits (that is a bad address, not a name).
fn check_name(name: &str) -> Result<(), Reject> {
    if name.is_empty() {
        return Err(Reject::invalid("empty name"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(Reject::invalid(format!(
            "name longer than {MAX_NAME_LEN} characters"
        )));
    }
    let mut labels = 0usize;
    let mut last = "";
    for label in name.split('.') {
        if label.is_empty() || label.len() > MAX_LABEL_LEN {
            return Err(Reject::invalid(format!(
                "name {name:?} has an empty label or one longer than {MAX_LABEL_LEN}"
            )));
        }
        let ok = label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !ok || label.starts_with('-') || label.ends_with('-') {
            return Err(Reject::invalid(format!("not a valid host name: {name:?}")));
        }
        labels += 1;
        last = label;
    }
    if labels < 2 {
        return Err(Reject::invalid(format!("single-label name {name:?}")));
    }
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Reject::invalid(format!(
            "not a name nor a valid address: {name:?}"
        )));
    }
    Ok(())
}

/// Addresses a hosts file points names at to block them (`0.0.0.0 ads.example`), or the loopback
/// entries every hosts file has: never entries themselves.
pub fn is_sink(ip: IpAddr) -> bool {
    ip.is_unspecified() || ip.is_loopback() || ip == IpAddr::V4(Ipv4Addr::BROADCAST)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(s: &str) -> Indicator {
        Indicator::Domain(s.into())
    }

    #[test]
    fn refangs() {
        assert_eq!(refang("evil[.]example(.)com"), "evil.example.com");
        assert_eq!(refang("hxxps://a[.]b[:]8080/x"), "https://a.b:8080/x");
        assert_eq!(refang("hXXp[://]a{.}b"), "http://a.b");
        assert_eq!(refang("a[dot]b(dot)c"), "a.b.c");
        assert!(matches!(refang("plain.example"), Cow::Borrowed(_)));
    }

    #[test]
    fn names_are_canonical() {
        let p = |s| parse_indicator(s).map(|(i, _)| i);
        assert_eq!(p(" Evil.Example.COM. "), Ok(domain("evil.example.com")));
        assert_eq!(p("wirtshauspost[.]at"), Ok(domain("wirtshauspost.at")));
        assert_eq!(p("bücher.example"), Ok(domain("xn--bcher-kva.example")));
        assert_eq!(p("_dmarc.example.org"), Ok(domain("_dmarc.example.org")));
        assert_eq!(p("localhost"), Err(Reject::Boilerplate));
        assert_eq!(p("localhost.localdomain"), Err(Reject::Boilerplate));
        for bad in [
            "com",
            "a..b",
            "-a.b",
            "a-.b",
            "a b.c",
            "1.2.3",
            "a.b/path",
            "",
            &format!("{}.com", "a".repeat(64)),
            &format!("{}com", "a.".repeat(127)),
        ] {
            assert!(matches!(p(bad), Err(Reject::Invalid(_))), "{bad:?}");
        }
    }

    #[test]
    fn addresses_networks_and_urls() {
        let p = |s| parse_indicator(s);
        assert_eq!(
            p("10.1.2.3"),
            Ok((Indicator::Addr("10.1.2.3".parse().unwrap()), false))
        );
        assert_eq!(
            p("10.1.2.3/24"),
            Ok((Indicator::Net("10.1.2.0/24".parse().unwrap()), false))
        );
        assert_eq!(
            p("10.1.2.3/32"),
            Ok((Indicator::Addr("10.1.2.3".parse().unwrap()), false))
        );
        assert_eq!(
            p("2001:db8::1/128"),
            Ok((Indicator::Addr("2001:db8::1".parse().unwrap()), false))
        );
        assert_eq!(
            p("[2001:db8::1]"),
            Ok((Indicator::Addr("2001:db8::1".parse().unwrap()), false))
        );
        assert_eq!(
            p("hxxps://user@Evil[.]Example:8443/a?b#c"),
            Ok((domain("evil.example"), true))
        );
        assert_eq!(
            p("http://[2001:db8::2]:80/x"),
            Ok((Indicator::Addr("2001:db8::2".parse().unwrap()), true))
        );
        assert_eq!(
            p("https://t.me/+5Vbys0CSGyU3YTY1"),
            Ok((domain("t.me"), true))
        );
        assert!(p("https:///x").is_err());
        assert!(p("10.0.0.0/33").is_err());
    }
}
