//! From a ring-buffer record to an [`Observation`] (the `dns` event): the kernel's metadata plus
//! the parsed message.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
    time::SystemTime,
};

use bytes::Bytes;
use flux_common::{
    AF_INET, AF_INET6, DnsEventHeader, EVENT_FLAG_TRUNCATED, IPPROTO_TCP, IPPROTO_UDP,
};

use flux_detect::dns::{ParseError, Transport, parse_response};

use crate::pipeline::events::Observation;

const HEADER_LEN: usize = size_of::<DnsEventHeader>();

/// One captured DNS response as the kernel delivered it: its message copied out of the ring
/// ([`Capture::from_record`]), or borrowed from it while the record is read
/// ([`Capture::in_record`], the live source's).
#[derive(Clone, Debug)]
pub struct Capture<D = Bytes> {
    pub header: DnsEventHeader,
    /// The captured message bytes (`header.cap_len` of them).
    pub data: D,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("record of {0} bytes is shorter than its header")]
    Short(usize),
    #[error("record claims {claimed} captured bytes but holds {held}")]
    BadCapLen { claimed: usize, held: usize },
    #[error("unknown address family {0}")]
    Family(u8),
    #[error("unknown transport {0}")]
    Transport(u8),
}

impl Capture {
    /// Validates and copies a raw ring-buffer record.
    pub fn from_record(rec: &[u8]) -> Result<Self, RecordError> {
        let c = Capture::in_record(rec)?;
        Ok(Capture {
            header: c.header,
            data: Bytes::copy_from_slice(c.data),
        })
    }
}

impl<'r> Capture<&'r [u8]> {
    /// Validates a raw ring-buffer record and borrows its message: no copy, for a reader that
    /// is done with it before the record goes back to the ring. The live source parses every
    /// record so; the copy [`Capture::from_record`] makes was 2.5% of its capture thread at
    /// 150,000 responses a second (`perf record` of `ringbuf-load`'s agent alone).
    pub fn in_record(rec: &'r [u8]) -> Result<Self, RecordError> {
        if rec.len() < HEADER_LEN {
            return Err(RecordError::Short(rec.len()));
        }
        // SAFETY: length checked; DnsEventHeader is Pod and read unaligned.
        let header: DnsEventHeader =
            unsafe { std::ptr::read_unaligned(rec.as_ptr().cast::<DnsEventHeader>()) };
        let cap = header.cap_len as usize;
        let held = rec.len() - HEADER_LEN;
        if cap > held {
            return Err(RecordError::BadCapLen { claimed: cap, held });
        }
        if header.family != AF_INET && header.family != AF_INET6 {
            return Err(RecordError::Family(header.family));
        }
        if header.transport != IPPROTO_UDP && header.transport != IPPROTO_TCP {
            return Err(RecordError::Transport(header.transport));
        }
        Ok(Self {
            header,
            data: &rec[HEADER_LEN..HEADER_LEN + cap],
        })
    }
}

impl<D: AsRef<[u8]>> Capture<D> {
    pub fn truncated(&self) -> bool {
        self.header.flags & EVENT_FLAG_TRUNCATED != 0
    }

    pub fn src(&self) -> IpAddr {
        addr(self.header.family, &self.header.src_addr)
    }

    pub fn dst(&self) -> IpAddr {
        addr(self.header.family, &self.header.dst_addr)
    }

    pub fn transport(&self) -> Transport {
        if self.header.transport == IPPROTO_TCP {
            Transport::Tcp
        } else {
            Transport::Udp
        }
    }

    pub fn vlans(&self) -> Vec<u16> {
        let n = (self.header.vlan_count as usize).min(self.header.vlan_ids.len());
        self.header.vlan_ids[..n].to_vec()
    }
}

fn addr(family: u8, raw: &[u8; 16]) -> IpAddr {
    if family == AF_INET {
        IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*raw))
    }
}

impl Observation {
    /// Parses a capture. `iface` is the name for `header.ifindex`.
    pub fn from_capture<D: AsRef<[u8]>>(
        c: &Capture<D>,
        ts: SystemTime,
        iface: Arc<str>,
    ) -> Result<Self, ParseError> {
        let msg = parse_response(c.data.as_ref(), c.truncated())?;
        Ok(Self {
            ts,
            iface,
            ifindex: c.header.ifindex,
            src: c.src(),
            dst: c.dst(),
            sport: c.header.src_port,
            dport: c.header.dst_port,
            transport: c.transport(),
            vlan: c.vlans(),
            dns_len: c.header.dns_len,
            cap_len: c.header.cap_len,
            truncated: c.truncated(),
            blocked: c.header.flags & flux_common::EVENT_FLAG_BLOCKED != 0,
            // Set by the live source in monitor mode (`pipeline::live`).
            would_block: false,
            fragmented: c.header.flags & flux_common::EVENT_FLAG_IP_FRAGMENT != 0,
            unsolicited: c.header.flags & flux_common::EVENT_FLAG_UNSOLICITED != 0,
            msg,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(cap: &[u8], claimed_cap: u16) -> Vec<u8> {
        let h = DnsEventHeader {
            ts_ns: 1,
            ifindex: 1,
            dns_len: cap.len() as u16,
            cap_len: claimed_cap,
            src_addr: [192, 0, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            dst_addr: [192, 0, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            src_port: 53,
            dst_port: 40000,
            vlan_ids: [7, 0],
            family: AF_INET,
            transport: IPPROTO_UDP,
            flags: 0,
            vlan_count: 1,
            reserved: 0,
        };
        // SAFETY: DnsEventHeader is Pod.
        let hb = unsafe {
            std::slice::from_raw_parts((&h as *const DnsEventHeader).cast::<u8>(), HEADER_LEN)
        };
        let mut v = hb.to_vec();
        v.extend_from_slice(cap);
        v
    }

    #[test]
    fn record_roundtrip_and_json_shape() {
        let msg = [
            0u8, 1, 0x81, 0x83, 0, 1, 0, 0, 0, 0, 0, 0, 3, b'F', b'o', b'o', 0, 0, 1, 0, 1,
        ];
        let c = Capture::from_record(&record(&msg, msg.len() as u16)).unwrap();
        assert_eq!(c.src().to_string(), "192.0.2.1");
        assert_eq!(c.vlans(), vec![7]);
        let o = Observation::from_capture(&c, SystemTime::UNIX_EPOCH, "eth0".into()).unwrap();
        let v = serde_json::to_value(crate::pipeline::events::Event::Dns(o)).unwrap();
        assert_eq!(v["type"], "dns");
        assert_eq!(v["ts"], "1970-01-01T00:00:00.000000Z");
        assert_eq!(v["qname"], "foo");
        assert_eq!(v["rcode"], "NXDOMAIN");
        assert_eq!(v["transport"], "udp");
        assert_eq!(v["truncated"], false);
        for k in [
            "iface",
            "src",
            "dst",
            "sport",
            "dport",
            "qtype",
            "answers",
            "authority",
            "additional",
        ] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
    }

    #[test]
    fn a_record_read_in_place_is_the_copied_one() {
        let msg = [
            0u8, 1, 0x81, 0x83, 0, 1, 0, 0, 0, 0, 0, 0, 3, b'F', b'o', b'o', 0, 0, 1, 0, 1,
        ];
        let rec = record(&msg, msg.len() as u16);
        let borrowed = Capture::in_record(&rec).unwrap();
        // The message is the record's own bytes, not a copy of them.
        assert!(std::ptr::eq(borrowed.data, &rec[HEADER_LEN..]));
        let copied = Capture::from_record(&rec).unwrap();
        let t = SystemTime::UNIX_EPOCH;
        let a = Observation::from_capture(&borrowed, t, "eth0".into()).unwrap();
        let b = Observation::from_capture(&copied, t, "eth0".into()).unwrap();
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            serde_json::to_string(&b).unwrap()
        );
        for bad in [&[0u8; 10][..], &record(&[0; 12], 500)] {
            assert_eq!(
                Capture::in_record(bad).unwrap_err(),
                Capture::from_record(bad).unwrap_err()
            );
        }
    }

    #[test]
    fn lying_records_are_rejected() {
        assert_eq!(
            Capture::from_record(&[0; 10]).unwrap_err(),
            RecordError::Short(10)
        );
        let r = record(&[0; 12], 500);
        assert!(matches!(
            Capture::from_record(&r),
            Err(RecordError::BadCapLen { .. })
        ));
    }
}
