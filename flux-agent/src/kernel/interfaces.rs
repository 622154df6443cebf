//! Network interfaces: names, indices and the default-route interface.

use std::{ffi::CString, fs};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub index: u32,
}

impl Interface {
    /// Resolves an interface by name; `None` if it does not exist.
    pub fn by_name(name: &str) -> Option<Self> {
        let c = CString::new(name).ok()?;
        // SAFETY: c is a valid C string.
        let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
        (index != 0).then(|| Self {
            name: name.to_owned(),
            index,
        })
    }

    /// Resolves an interface index to its name; `None` if it no longer exists.
    pub fn by_index(index: u32) -> Option<Self> {
        let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
        // SAFETY: buf holds IF_NAMESIZE bytes as if_indextoname requires.
        let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
        if p.is_null() {
            return None;
        }
        // SAFETY: if_indextoname wrote a NUL-terminated string into buf.
        let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
        Some(Self {
            name: name.to_string_lossy().into_owned(),
            index,
        })
    }
}

/// The interface of the IPv4 default route (lowest metric), else of the IPv6 one.
pub fn default_route_interface() -> Option<String> {
    if let Ok(table) = fs::read_to_string("/proc/net/route")
        && let Some(name) = default_v4(&table)
    {
        return Some(name);
    }
    fs::read_to_string("/proc/net/ipv6_route")
        .ok()
        .and_then(|t| default_v6(&t))
}

fn default_v4(table: &str) -> Option<String> {
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // Iface Destination Gateway Flags RefCnt Use Metric Mask ...
            if f.len() < 8 || f[1] != "00000000" || f[7] != "00000000" {
                return None;
            }
            let flags = u32::from_str_radix(f[3], 16).ok()?;
            (flags & 1 != 0).then(|| (f[6].parse::<u32>().unwrap_or(u32::MAX), f[0].to_owned()))
        })
        .min()
        .map(|(_, name)| name)
}

fn default_v6(table: &str) -> Option<String> {
    table
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // dest destlen src srclen nexthop metric refcnt use flags iface
            if f.len() < 10 || f[0] != "00000000000000000000000000000000" || f[1] != "00" {
                return None;
            }
            if f[9] == "lo" {
                return None;
            }
            Some((
                u32::from_str_radix(f[5], 16).unwrap_or(u32::MAX),
                f[9].to_owned(),
            ))
        })
        .min()
        .map(|(_, name)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_net_route() {
        let t = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                 eth1\t00000000\t0102A8C0\t0003\t0\t0\t200\t00000000\t0\t0\t0\n\
                 eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
                 eth0\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(default_v4(t).as_deref(), Some("eth0"));
        assert_eq!(default_v4("Iface\tDestination\n"), None);
    }

    #[test]
    fn parses_proc_net_ipv6_route() {
        let t = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003 wlan0\n\
                 00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200 lo\n";
        assert_eq!(default_v6(t).as_deref(), Some("wlan0"));
    }

    #[test]
    fn loopback_resolves() {
        let lo = Interface::by_name("lo").unwrap();
        assert_eq!(Interface::by_index(lo.index).unwrap().name, "lo");
        assert!(Interface::by_name("no-such-if0").is_none());
    }
}
