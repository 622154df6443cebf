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

    /// Whether the address is IPv6 (not IPv4-mapped): the family of the record (AAAA) it came in.
    pub fn is_v6(&self) -> bool {
        v4_bits(&self.ip).is_none()
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

/// An address as a key stores it (`key_state::IpEntry`): 16 bytes where [`AddrInfo`] takes 28.
/// Most of what keys hold is IPv4, whose mapped prefix is 12 constant bytes; an IPv6 address
/// keeps its /48 hash here (all the features read of it) and its 16 bytes in the key's side
/// table, found through `v6`. Over a million keys of 1–4 addresses that is about 30 bytes a key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoredAddr {
    /// The IPv4 address (big-endian), or the [`AddrInfo::prefix`] of an IPv6 one.
    bits: u32,
    pub asn: u32,
    pub network: u32,
    pub country: [u8; 2],
    /// 0 for IPv4; for IPv6, 1 + the index of its bytes in the key's IPv6 table.
    v6: u8,
}

impl StoredAddr {
    /// The stored form of `a`; `v6_slot` is where the key keeps the bytes of an IPv6 address
    /// (ignored for IPv4).
    pub fn new(a: &AddrInfo, v6_slot: u8) -> Self {
        let (bits, v6) = match v4_bits(&a.ip) {
            Some(b) => (b, 0),
            None => (a.prefix(), v6_slot.saturating_add(1)),
        };
        Self {
            bits,
            asn: a.asn,
            network: a.network,
            country: a.country,
            v6,
        }
    }

    /// Whether the address is IPv6 (see [`AddrInfo::is_v6`]).
    pub fn is_v6(&self) -> bool {
        self.v6 != 0
    }

    /// Where the key keeps this IPv6 address's bytes; `None` for IPv4.
    pub fn v6_slot(&self) -> Option<usize> {
        usize::from(self.v6).checked_sub(1)
    }

    pub(crate) fn set_v6_slot(&mut self, slot: u8) {
        if self.v6 != 0 {
            self.v6 = slot.saturating_add(1);
        }
    }

    /// The address's 16 bytes (IPv4-mapped for IPv4); `v6` is the IPv6 address kept for it
    /// in the key's table.
    pub fn ip_bytes(&self, v6: Option<&[u8; 16]>) -> [u8; 16] {
        match (self.v6, v6) {
            (0, _) | (_, None) => std::net::Ipv4Addr::from(self.bits)
                .to_ipv6_mapped()
                .octets(),
            (_, Some(b)) => *b,
        }
    }

    /// Whether this is `ip`, whose [`v4_bits`] are `v4`: `Self::ip_bytes(v6) == *ip` (`v6` as
    /// there) without building the sixteen bytes of an IPv4 entry.
    pub fn is(&self, ip: &[u8; 16], v4: Option<u32>, v6: Option<&[u8; 16]>) -> bool {
        match (self.v6, v6) {
            (0, _) | (_, None) => v4 == Some(self.bits),
            (_, Some(b)) => b == ip,
        }
    }

    /// The whole [`AddrInfo`] back (`v6` as for [`Self::ip_bytes`]).
    pub fn info(&self, v6: Option<&[u8; 16]>) -> AddrInfo {
        AddrInfo {
            ip: self.ip_bytes(v6),
            asn: self.asn,
            network: self.network,
            country: self.country,
        }
    }

    /// [`AddrInfo::prefix`] without the address's bytes.
    pub fn prefix(&self) -> u32 {
        if self.v6 == 0 {
            self.bits >> 16
        } else {
            self.bits
        }
    }

    /// [`AddrInfo::subnet`] without the address's bytes.
    pub fn subnet(&self) -> u32 {
        if self.v6 == 0 {
            0x0100_0000 | self.bits >> 8
        } else {
            self.bits
        }
    }
}

/// The IPv4 address of an IPv4-mapped one, as a big-endian number; `None` for real IPv6.
pub(super) fn v4_bits(ip: &[u8; 16]) -> Option<u32> {
    match ip {
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a, b, c, d] => {
            Some(u32::from_be_bytes([*a, *b, *c, *d]))
        }
        _ => None,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The IPv4-mapped bytes of an entry's `bits`.
    fn b4(s: &StoredAddr) -> [u8; 16] {
        s.ip_bytes(None)
    }

    #[test]
    fn stored_address_gives_back_what_it_stored() {
        let v4 = AddrInfo {
            ip: AddrInfo::ip_bytes("198.51.100.7".parse().unwrap()),
            asn: 64_500,
            network: 9,
            country: *b"DE",
        };
        let v6 = AddrInfo {
            ip: AddrInfo::ip_bytes("2001:db8:1:2::7".parse().unwrap()),
            ..v4
        };
        // An AAAA record carrying an IPv4-mapped address is IPv4 here, as for AddrInfo.
        let mapped = AddrInfo {
            ip: AddrInfo::ip_bytes("::ffff:10.1.2.3".parse().unwrap()),
            ..v4
        };
        for a in [v4, v6, mapped] {
            let s = StoredAddr::new(&a, 3);
            let side = (s.v6_slot().is_some()).then_some(&a.ip);
            assert_eq!(s.info(side), a);
            assert_eq!(s.prefix(), a.prefix());
            assert_eq!(s.subnet(), a.subnet());
        }
        // `is` answers what comparing the whole bytes answers, for each against each.
        for a in [v4, v6, mapped] {
            let s = StoredAddr::new(&a, 3);
            let side = (s.v6_slot().is_some()).then_some(&a.ip);
            for b in [v4, v6, mapped] {
                assert_eq!(s.is(&b.ip, v4_bits(&b.ip), side), s.ip_bytes(side) == b.ip);
            }
            // An IPv6 entry whose side-table bytes are missing reads as its IPv4 form.
            assert_eq!(
                s.is(&b4(&s), Some(s.bits), None),
                s.ip_bytes(None) == b4(&s)
            );
        }
        assert_eq!(StoredAddr::new(&v4, 3).v6_slot(), None);
        assert_eq!(StoredAddr::new(&v6, 3).v6_slot(), Some(3));
        assert_eq!(StoredAddr::new(&mapped, 3).v6_slot(), None);
        assert_eq!(size_of::<StoredAddr>(), 16);
    }
}
