//! rtnetlink requests over netlink-sys, messages built and parsed by netlink-packet-route: the
//! link attributes `xdp_owner` reads and writes, and the default routes that `interfaces` and
//! the enforcement guard need. One short-lived socket per request; nothing here is cached.

use std::{io, net::IpAddr};

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteType},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// Largest datagram read at once. A kernel dump part is at most 32 KiB.
const RECV_BUF: usize = 64 * 1024;

/// Sends `msg` with `flags` (besides `NLM_F_REQUEST`) and returns the replies: every part of a
/// dump (`NLM_F_DUMP`) up to its end, else the first reply; an ACK (`NLM_F_ACK`) is an empty
/// list. A NACK is the kernel's error.
pub fn request(msg: RouteNetlinkMessage, flags: u16) -> io::Result<Vec<RouteNetlinkMessage>> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | flags;
    header.sequence_number = 1;
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    socket.send(&buf, 0)?;

    let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
    let mut out = Vec::new();
    let mut rx: Vec<u8> = Vec::with_capacity(RECV_BUF);
    loop {
        rx.clear();
        let n = socket.recv(&mut rx, libc::MSG_TRUNC)?;
        if n > rx.len() {
            return Err(io::Error::other(format!(
                "netlink reply of {n} bytes does not fit {RECV_BUF}"
            )));
        }
        let mut at = 0;
        while at < rx.len() {
            let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rx[at..])
                .map_err(|e| io::Error::other(format!("bad netlink reply: {e}")))?;
            let len = reply.header.length as usize;
            if len < 16 {
                return Err(io::Error::other("short netlink reply"));
            }
            at += len.next_multiple_of(4);
            match reply.payload {
                NetlinkPayload::InnerMessage(m) => {
                    out.push(m);
                    if !dump {
                        return Ok(out);
                    }
                }
                NetlinkPayload::Error(e) => match e.code {
                    Some(_) => return Err(e.to_io()),
                    None => return Ok(out),
                },
                NetlinkPayload::Done(_) => return Ok(out),
                _ => {}
            }
        }
    }
}

/// One default route (destination prefix length 0), of any table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DefaultRoute {
    pub v6: bool,
    pub table: u32,
    /// Unicast: it forwards (not an unreachable, blackhole or prohibit route).
    pub unicast: bool,
    /// The route's metric (`RTA_PRIORITY`), 0 if it has none.
    pub metric: u32,
    /// Output interface: the route's own, else its first next hop's.
    pub oif: Option<u32>,
    /// Next-hop addresses: the route's gateway and every multipath next hop's.
    pub gateways: Vec<IpAddr>,
}

/// The default routes of both families, IPv4 first.
pub fn default_routes() -> io::Result<Vec<DefaultRoute>> {
    let mut out = Vec::new();
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let mut m = RouteMessage::default();
        m.header.address_family = family;
        for reply in request(RouteNetlinkMessage::GetRoute(m), NLM_F_DUMP)? {
            if let RouteNetlinkMessage::NewRoute(r) = reply
                && r.header.destination_prefix_length == 0
            {
                out.push(default_route(&r));
            }
        }
    }
    Ok(out)
}

fn default_route(r: &RouteMessage) -> DefaultRoute {
    let mut d = DefaultRoute {
        v6: r.header.address_family == AddressFamily::Inet6,
        table: u32::from(r.header.table),
        unicast: r.header.kind == RouteType::Unicast,
        metric: 0,
        oif: None,
        gateways: Vec::new(),
    };
    let gateway = |a: &RouteAttribute| match a {
        RouteAttribute::Gateway(RouteAddress::Inet(v4)) => Some(IpAddr::V4(*v4)),
        RouteAttribute::Gateway(RouteAddress::Inet6(v6)) => Some(IpAddr::V6(*v6)),
        _ => None,
    };
    for a in &r.attributes {
        match a {
            RouteAttribute::Table(t) => d.table = *t,
            RouteAttribute::Priority(p) => d.metric = *p,
            RouteAttribute::Oif(i) => d.oif = Some(*i),
            RouteAttribute::MultiPath(hops) => {
                d.oif = d.oif.or(hops.first().map(|h| h.interface_index));
                d.gateways.extend(
                    hops.iter()
                        .flat_map(|h| h.attributes.iter().filter_map(gateway)),
                );
            }
            other => d.gateways.extend(gateway(other)),
        }
    }
    d.gateways.retain(|g| !g.is_unspecified());
    d
}

/// The main routing table's id, where `/proc/net/route` and `ip route` look.
pub const RT_TABLE_MAIN: u32 = RouteHeader::RT_TABLE_MAIN as u32;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_route_fields() {
        let mut m = RouteMessage::default();
        m.header.table = RouteHeader::RT_TABLE_MAIN;
        m.header.kind = RouteType::Unicast;
        m.attributes = vec![
            RouteAttribute::Gateway(RouteAddress::Inet("10.0.2.1".parse().unwrap())),
            RouteAttribute::Oif(2),
            RouteAttribute::Priority(100),
        ];
        assert_eq!(
            default_route(&m),
            DefaultRoute {
                v6: false,
                table: RT_TABLE_MAIN,
                unicast: true,
                metric: 100,
                oif: Some(2),
                gateways: vec!["10.0.2.1".parse().unwrap()],
            }
        );
        m.header.kind = RouteType::Unreachable;
        m.attributes = vec![RouteAttribute::Table(1000)];
        let d = default_route(&m);
        assert!(!d.unicast && d.gateways.is_empty() && d.table == 1000);
    }

    /// The real routing table: whatever it holds, the dump parses.
    #[test]
    fn dumps_the_routing_table() {
        default_routes().unwrap();
    }
}
