//! The allowlist maps copied into memory, to check many targets at once: a feed of a million
//! entries asked the kernel once per address and once per label of each name (about four
//! million map-lookup syscalls, seconds of system time); one read of the allowlist maps,
//! usually a few hundred entries, answers the same questions from memory. Read-only: built by
//! [`super::maps::Maps::allow_snapshot`], touches nothing.

use std::{
    collections::{BTreeSet, HashSet},
    net::IpAddr,
};

use super::maps::domain_key;

/// The allowlist as it was when copied: domain keys (the kernel's hash of the wire name) and
/// networks by prefix length.
#[derive(Debug, Default)]
pub struct AllowSnapshot {
    domains: HashSet<u64>,
    v4: HashSet<(u8, [u8; 4])>,
    v6: HashSet<(u8, [u8; 16])>,
    /// The prefix lengths present, longest first: an address is looked up once per length.
    v4_lens: BTreeSet<u8>,
    v6_lens: BTreeSet<u8>,
}

/// `data` with every bit past `len` cleared.
fn masked<const N: usize>(data: [u8; N], len: u8) -> [u8; N] {
    let mut out = data;
    for (i, b) in out.iter_mut().enumerate() {
        let first_bit = i * 8;
        let keep = usize::from(len).saturating_sub(first_bit).min(8);
        *b &= if keep == 0 { 0 } else { 0xffu8 << (8 - keep) };
    }
    out
}

impl AllowSnapshot {
    pub(super) fn add_domain(&mut self, key: u64) {
        self.domains.insert(key);
    }

    pub(super) fn add_v4(&mut self, len: u8, data: [u8; 4]) {
        let len = len.min(32);
        self.v4.insert((len, masked(data, len)));
        self.v4_lens.insert(len);
    }

    pub(super) fn add_v6(&mut self, len: u8, data: [u8; 16]) {
        let len = len.min(128);
        self.v6.insert((len, masked(data, len)));
        self.v6_lens.insert(len);
    }

    /// Whether `name` or a parent domain is allowed (what `Maps::domain_allowed` asks the map).
    pub fn domain_allowed(&self, name: &str) -> bool {
        if self.domains.is_empty() {
            return false;
        }
        let mut rest = name;
        loop {
            if domain_key(rest).is_some_and(|k| self.domains.contains(&k)) {
                return true;
            }
            match rest.split_once('.') {
                Some((_, parent)) => rest = parent,
                None => return false,
            }
        }
    }

    /// Whether an allowed network holds `ip` (what `Maps::address_allowed` asks the map).
    pub fn address_allowed(&self, ip: &IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => {
                let data = a.octets();
                self.v4_lens
                    .iter()
                    .any(|&len| self.v4.contains(&(len, masked(data, len))))
            }
            IpAddr::V6(a) => {
                let data = a.octets();
                self.v6_lens
                    .iter()
                    .any(|&len| self.v6.contains(&(len, masked(data, len))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_and_parent_domains_match_as_the_maps_do() {
        let mut s = AllowSnapshot::default();
        s.add_v4(24, [192, 0, 2, 99]);
        s.add_v4(32, [198, 51, 100, 7]);
        s.add_v6(
            48,
            [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9],
        );
        s.add_domain(domain_key("example.com").unwrap());
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(s.address_allowed(&ip("192.0.2.1")));
        assert!(!s.address_allowed(&ip("192.0.3.1")));
        assert!(s.address_allowed(&ip("198.51.100.7")));
        assert!(!s.address_allowed(&ip("198.51.100.8")));
        assert!(s.address_allowed(&ip("2001:db8:1::42")));
        assert!(!s.address_allowed(&ip("2001:db8:2::42")));
        assert!(s.domain_allowed("www.example.com"));
        assert!(s.domain_allowed("example.com"));
        assert!(!s.domain_allowed("example.org"));
        assert!(!s.domain_allowed("badexample.com"));
        assert!(!AllowSnapshot::default().address_allowed(&ip("192.0.2.1")));
    }

    #[test]
    fn masking_keeps_only_the_prefix() {
        assert_eq!(masked([255, 255, 255, 255], 20), [255, 255, 240, 0]);
        assert_eq!(masked([255, 255, 255, 255], 0), [0, 0, 0, 0]);
        assert_eq!(masked([1, 2, 3, 4], 32), [1, 2, 3, 4]);
    }
}
