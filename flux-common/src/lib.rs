//! Everything the kernel programs and userspace both need to agree on, one definition each:
//! `flux-ebpf`, `flux-detect` and `flux-agent` use these, never a copy. `no_std`.
//!
//! - [`records`]: ring-buffer records and blocklist values;
//! - [`counter_table`]: the per-CPU counters, declared once;
//! - [`keys`]: map names, capacities and the domain-name hash;
//! - [`load_config`]: load-time configuration and symbol names;
//! - [`wire`]: ethertypes, protocol numbers, DNS header fields, record types, frame-walk bounds.
//!
//! Everything is re-exported at the root, so `flux_common::Counter` and
//! `flux_common::counter_table::Counter` are the same item.
#![no_std]

pub mod counter_table;
pub mod keys;
pub mod load_config;
pub mod records;
pub mod wire;

pub use counter_table::*;
pub use keys::*;
pub use load_config::*;
pub use records::*;
pub use wire::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_has_no_padding_and_record_is_2k() {
        // Sum of the fields: 8 + 4 + 2 + 2 + 16 + 16 + 2 + 2 + 4 + 4 + 4 = 64.
        assert_eq!(core::mem::size_of::<DnsEventHeader>(), 64);
        assert_eq!(core::mem::size_of::<DnsEvent>(), 2048);
        for (size, data) in RECORD_SIZES.iter().zip(RECORD_DATA) {
            assert_eq!(
                core::mem::size_of::<DnsRecord<{ RECORD_DATA[0] }>>(),
                RECORD_SIZES[0]
            );
            assert_eq!(*size, 64 + data);
        }
        assert_eq!(core::mem::size_of::<DnsRecord<{ RECORD_DATA[2] }>>(), 1024);
        assert_eq!(core::mem::size_of::<Config>(), 2 * MAX_DNS_PORTS + 4 * 5);
        assert_eq!(
            core::mem::size_of::<DomainBlock>(),
            core::mem::size_of::<BlockEntry>() + DOMAIN_TEXT_LEN
        );
    }

    #[test]
    fn query_records_have_no_padding() {
        assert_eq!(core::mem::size_of::<QueryKey>(), 8 + 2 + 2 + 2 + 1 + 1);
        assert_eq!(core::mem::size_of::<QuerySeen>(), 16);
    }

    #[test]
    fn host_mac_slots_have_no_padding_and_consecutive_interfaces_never_share_one() {
        assert_eq!(core::mem::size_of::<HostMacSlot>(), 8 + 4 + 4);
        let mut seen = [false; HOST_MAC_SLOT_COUNT as usize];
        for ifindex in 1000..1000 + HOST_MAC_SLOT_COUNT {
            let s = host_mac_slot(ifindex);
            assert!(!seen[s as usize], "{ifindex} shares slot {s}");
            seen[s as usize] = true;
        }
        assert!(host_mac_slot(u32::MAX) < HOST_MAC_SLOT_COUNT);
    }

    #[test]
    fn drop_cache_slots_have_no_padding_and_spread() {
        assert_eq!(core::mem::size_of::<DropCacheSlot>(), 8 + 8 + 4 + 4);
        assert!(DROP_CACHE_SLOTS.is_power_of_two());
        // Neighbouring addresses (one /24 of a flood) land in distinct slots, and every slot
        // index is in range.
        let mut seen = [false; DROP_CACHE_SLOTS as usize];
        for last in 0..=255u8 {
            let s = drop_cache_slot([198, 51, 100, last]);
            assert!(s < DROP_CACHE_SLOTS);
            assert!(!seen[s as usize], "{last} shares slot {s}");
            seen[s as usize] = true;
        }
        assert!(drop_cache_slot([255; 4]) < DROP_CACHE_SLOTS);
        assert_eq!(VERDICT_GEN_STEP & VERDICT_GEN_OFF, 0);
    }

    #[test]
    fn block_entry_has_no_padding() {
        assert_eq!(
            core::mem::size_of::<BlockEntry>(),
            8 + 8 + 4 + 2 + 1 + 1 + REASON_LEN
        );
        let e = BlockEntry::new(SOURCE_MANUAL, 100);
        assert!(e.active(99));
        assert!(!e.active(100));
        assert!(BlockEntry { expires_ns: 0, ..e }.active(u64::MAX));
    }

    fn hash_of(name: &str) -> u64 {
        let mut buf = [0u8; MAX_NAME_WIRE];
        let n = to_wire(name, &mut buf).unwrap();
        domain_hash(&buf[..n])
    }

    #[test]
    fn wire_format() {
        let mut buf = [0u8; MAX_NAME_WIRE];
        let n = to_wire("www.Example.com.", &mut buf).unwrap();
        assert_eq!(&buf[..n], b"\x03www\x07Example\x03com\x00");
        assert_eq!(to_wire(".", &mut buf), Some(1));
        assert_eq!(to_wire("a..b", &mut buf), None);
        let long = [b'a'; 64];
        assert_eq!(
            to_wire(core::str::from_utf8(&long).unwrap(), &mut buf),
            None
        );
        // 4 labels of 63 bytes: 4 * 64 + 1 = 257 bytes, over the limit.
        let label = core::str::from_utf8(&long[..63]).unwrap();
        let mut name = [0u8; 4 * 64];
        for i in 0..4 {
            name[i * 64..i * 64 + 63].copy_from_slice(label.as_bytes());
            if i < 3 {
                name[i * 64 + 63] = b'.';
            }
        }
        assert_eq!(
            to_wire(core::str::from_utf8(&name[..4 * 64 - 1]).unwrap(), &mut buf),
            None
        );
    }

    #[test]
    fn domain_hash_is_case_blind_and_yields_every_parent_in_one_pass() {
        assert_eq!(hash_of("WWW.Example.COM"), hash_of("www.example.com"));
        assert_ne!(hash_of("example.com"), hash_of("example.net"));
        // The backward pass over www.example.com passes through the hashes of example.com
        // and com exactly where their labels start.
        let mut buf = [0u8; MAX_NAME_WIRE];
        let n = to_wire("www.example.com", &mut buf).unwrap();
        let mut h = NAME_HASH_INIT;
        let mut seen = [0u64; 3];
        let mut k = 0;
        for i in (0..n).rev() {
            h = name_hash_step(h, buf[i]);
            if matches!(i, 0 | 4 | 12) {
                seen[k] = h;
                k += 1;
            }
        }
        assert_eq!(
            seen,
            [
                hash_of("com"),
                hash_of("example.com"),
                hash_of("www.example.com")
            ]
        );
    }

    #[test]
    fn occupancy_slots_are_dense_and_name_distinct_maps() {
        for (i, o) in Occupied::ALL.iter().enumerate() {
            assert_eq!(*o as usize, i);
            assert_eq!(Occupied::of_map(o.map_name()), Some(*o));
        }
        assert_eq!(Occupied::of_map(MAP_EVENTS), None);
    }

    #[test]
    fn front_filter_bits_cover_every_24_of_a_cidr() {
        assert_eq!(front_v4_bit([192, 0, 2, 53]), 0xc0_00_02);
        assert_eq!(front_word(0xc0_00_02), (0xc0_00_02 >> 6, 1 << 2));
        assert_eq!(front_word((FRONT_V4_WORDS << 6) - 1).0, FRONT_V4_WORDS - 1);
        assert_eq!(
            front_v4_span([192, 0, 2, 128], 25),
            (0xc0_00_02, 0xc0_00_02)
        );
        assert_eq!(front_v4_span([192, 0, 2, 0], 24), (0xc0_00_02, 0xc0_00_02));
        assert_eq!(front_v4_span([10, 1, 0, 0], 16), (0x0a_01_00, 0x0a_01_ff));
        assert_eq!(front_v4_span([10, 0, 0, 0], 8), (0x0a_00_00, 0x0a_ff_ff));
        assert_eq!(front_v4_span([0, 0, 0, 0], 0), (0, (1 << 24) - 1));
        assert_eq!(FRONT_V4_READY, FRONT_V4_SLOTS - 1);
    }

    #[test]
    fn counters_are_dense_and_named() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
            assert!(!c.name().is_empty());
        }
    }

    #[test]
    fn dns_port_lookup_respects_count() {
        let mut c = Config::DEFAULT;
        assert!(c.is_dns_port(53));
        assert!(!c.is_dns_port(0));
        c.dns_ports[1] = 5353;
        assert!(!c.is_dns_port(5353));
        c.dns_port_count = 2;
        assert!(c.is_dns_port(5353));
        // Every slot in use, and a count past the array: the last slot is still read, nothing
        // beyond it.
        c.dns_ports = [53, 5353, 853, 1053, 2053, 3053, 4053, 8053];
        c.dns_port_count = 8;
        assert!(c.is_dns_port(8053));
        assert!(!c.is_dns_port(9053));
        c.dns_port_count = u32::MAX;
        assert!(c.is_dns_port(8053));
        assert!(!c.is_dns_port(0));
        c.dns_port_count = 0;
        assert!(!c.is_dns_port(53));
    }

    #[test]
    fn plausible_response() {
        assert!(is_plausible_response(0x8180, 1));
        assert!(!is_plausible_response(0x0100, 1)); // a query
        assert!(!is_plausible_response(0x8180, 2));
        assert!(!is_plausible_response(0x8000 | (2 << 11), 1)); // STATUS opcode
        assert!(is_plausible_response(0x8000 | (5 << 11), 0)); // UPDATE response
    }
}
