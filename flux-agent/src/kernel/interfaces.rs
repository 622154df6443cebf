//! Network interfaces: names, indices and the default-route interface (from the routing table
//! through [`netlink_route`], where `/proc/net/route` was parsed before).

use std::ffi::CString;

use crate::kernel::netlink_route::{self, DefaultRoute};

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

/// The interface of the IPv4 default route (lowest metric), else of the IPv6 one: unicast
/// routes of the main table, as `ip route` shows them, never the loopback.
pub fn default_route_interface() -> Option<String> {
    let routes = netlink_route::default_routes()
        .inspect_err(|e| log::debug!("cannot read the routing table: {e}"))
        .ok()?;
    pick_default(&routes, |i| Interface::by_index(i).map(|i| i.name))
}

/// The lowest-metric usable default route's interface name, IPv4 before IPv6.
fn pick_default(
    routes: &[DefaultRoute],
    name_of: impl Fn(u32) -> Option<String>,
) -> Option<String> {
    routes
        .iter()
        .filter(|r| r.unicast && r.table == netlink_route::RT_TABLE_MAIN)
        .filter_map(|r| {
            let name = name_of(r.oif?)?;
            (name != "lo").then_some((r.v6, r.metric, name))
        })
        .min()
        .map(|(_, _, name)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_route_choice() {
        let route = |v6, table, unicast, metric, oif| DefaultRoute {
            v6,
            table,
            unicast,
            metric,
            oif: Some(oif),
            gateways: Vec::new(),
        };
        let main = netlink_route::RT_TABLE_MAIN;
        let names = |i: u32| {
            ["lo", "eth0", "eth1", "wlan0", "vpn0"]
                .get(i as usize)
                .map(|s| s.to_string())
        };
        let routes = [
            route(false, main, true, 200, 2),
            route(false, main, true, 100, 1),
            route(false, 1000, true, 0, 4),
            route(false, main, false, 0, 4),
            route(true, main, true, 0, 3),
        ];
        assert_eq!(pick_default(&routes, names).as_deref(), Some("eth0"));
        assert_eq!(pick_default(&routes[2..], names).as_deref(), Some("wlan0"));
        let unreachable_v6 = [route(true, main, true, 0, 0), route(true, main, true, 9, 3)];
        assert_eq!(
            pick_default(&unreachable_v6, names).as_deref(),
            Some("wlan0")
        );
        assert_eq!(pick_default(&[], names), None);
    }

    #[test]
    fn loopback_resolves() {
        let lo = Interface::by_name("lo").unwrap();
        assert_eq!(Interface::by_index(lo.index).unwrap().name, "lo");
        assert!(Interface::by_name("no-such-if0").is_none());
    }
}
