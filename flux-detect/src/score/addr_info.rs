//! What the scorer knows about one address (its network, country and prefixes), and the hash
//! the scorer's tables use for names. Built by the scorer's address lookup (`score.rs`); read by
//! the key state, the features and the shared-bot table. Touches nothing.

use std::net::IpAddr;

/// What the scorer knows about one address at the time it saw it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AddrInfo {
    /// IPv4 as IPv4-mapped IPv6.
    pub ip: [u8; 16],
    /// 0 when unknown.
    pub asn: u32,
    /// The organisation (AS-name family) or, without an ASN database, the /16 or /48;
    /// 0 when a database is loaded but does not know the address.
    pub network: u32,
    /// ISO country code, `[0, 0]` when unknown.
    pub country: [u8; 2],
}

impl AddrInfo {
    pub fn ip_bytes(ip: IpAddr) -> [u8; 16] {
        match ip {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        }
    }

    /// The address as a std address (IPv4-mapped ones as IPv4).
    pub fn to_ip(&self) -> IpAddr {
        let v6 = std::net::Ipv6Addr::from(self.ip);
        match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        }
    }

    /// The /16 of an IPv4 address or the /48 of an IPv6 one, as a hash.
    pub fn prefix(&self) -> u32 {
        let is_v4 =
            self.ip[..10].iter().all(|b| *b == 0) && self.ip[10] == 0xff && self.ip[11] == 0xff;
        if is_v4 {
            u32::from(self.ip[12]) << 8 | u32::from(self.ip[13])
        } else {
            fnv32(&self.ip[..6]) | 0x8000_0000
        }
    }

    /// The /24 of an IPv4 address (the /48 of an IPv6 one, as [`Self::prefix`]): the block a
    /// server farm or a CDN PoP sits in. Ordered as the prefixes are.
    pub fn subnet(&self) -> u32 {
        let p = self.prefix();
        if p & 0x8000_0000 != 0 {
            p
        } else {
            0x0100_0000 | p << 8 | u32::from(self.ip[14])
        }
    }

    /// The [`Self::prefix`] of a [`Self::subnet`]; monotonic, so sorted blocks give sorted
    /// prefixes.
    pub fn prefix_of_subnet(block: u32) -> u32 {
        if block & 0x8000_0000 != 0 {
            block
        } else {
            (block >> 8) & 0xffff
        }
    }
}

pub fn fnv32(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}
