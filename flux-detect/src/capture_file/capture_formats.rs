//! The capture-file containers: pcap and pcapng records to link-layer frames with their
//! timestamps (pcapng `if_tsresol`/`if_tsoffset` included), and a file that breaks off.
//! Hands each frame to [`super::frame_walk`]; touches only the stream it is given.

use std::{
    io::{self, Read},
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use pcap_file::{
    Endianness, PcapError, TsResolution,
    pcap::PcapReader,
    pcapng::{PcapNgReader, blocks::interface_description::InterfaceDescriptionOption},
};

use super::{
    CapError, CapturedRef, FrameError, ReadStats,
    frame_walk::{Link, Skip, decode},
};

/// Largest pcap record accepted; anything larger is taken as a corrupt record header.
const MAX_RECORD: u32 = 256 * 1024;

pub(super) const PCAPNG_SHB: u32 = 0x0a0d_0d0a;
pub(super) const PCAPNG_IDB: u32 = 1;
pub(super) const PCAPNG_PB: u32 = 2;
pub(super) const PCAPNG_SPB: u32 = 3;
pub(super) const PCAPNG_EPB: u32 = 6;

pub(super) struct FileReader<'a> {
    pub(super) name: &'a Path,
    pub(super) ports: &'a [u16],
    pub(super) stats: &'a mut ReadStats,
    pub(super) frames_read: u64,
}

/// A pcapng interface: what its packets need for decoding.
#[derive(Clone, Copy)]
struct Iface {
    link: Link,
    snaplen: u32,
    tsresol: u8,
    tsoffset: i64,
}

impl FileReader<'_> {
    fn frame(
        &mut self,
        link: Link,
        data: &[u8],
        orig_len: u32,
        ts: SystemTime,
        f: &mut impl FnMut(CapturedRef<'_>),
    ) {
        self.frames_read += 1;
        self.stats.frames += 1;
        let known_cut = orig_len as usize > data.len();
        let stats = &mut *self.stats;
        let res = decode(
            link,
            data,
            known_cut,
            ts,
            self.ports,
            &mut |d: CapturedRef<'_>| {
                stats.dns_responses += 1;
                stats.truncated_responses += u64::from(d.truncated);
                f(d)
            },
        );
        if let Err(Skip::Frame(e)) = res {
            self.stats.count(e);
        }
    }

    /// Frame-level problems are counted; this handles the file breaking off.
    fn broken(&mut self, e: PcapError) -> Result<(), CapError> {
        let reason = match e {
            PcapError::IoError(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                "the file ends in the middle of a record".to_owned()
            }
            PcapError::IoError(e)
                if !matches!(
                    e.kind(),
                    io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput
                ) =>
            {
                return Err(CapError::Io {
                    path: self.name.to_owned(),
                    source: e,
                });
            }
            e => format!("{e}"),
        };
        self.corrupt(reason)
    }

    fn corrupt(&mut self, reason: String) -> Result<(), CapError> {
        if self.frames_read == 0 {
            return Err(CapError::Corrupt {
                path: self.name.to_owned(),
                reason,
            });
        }
        log::warn!(
            "{}: stopped after {} frames: {reason}",
            self.name.display(),
            self.frames_read
        );
        self.stats.truncated_files += 1;
        Ok(())
    }

    fn header_error(&self, e: PcapError) -> CapError {
        match e {
            PcapError::IoError(e)
                if !matches!(
                    e.kind(),
                    io::ErrorKind::UnexpectedEof
                        | io::ErrorKind::InvalidData
                        | io::ErrorKind::InvalidInput
                ) =>
            {
                CapError::Io {
                    path: self.name.to_owned(),
                    source: e,
                }
            }
            e => CapError::Corrupt {
                path: self.name.to_owned(),
                reason: format!("bad file header: {e}"),
            },
        }
    }

    pub(super) fn pcap(
        &mut self,
        r: impl Read,
        f: &mut impl FnMut(CapturedRef<'_>),
    ) -> Result<(), CapError> {
        let mut r = PcapReader::new(r).map_err(|e| self.header_error(e))?;
        self.stats.files += 1;
        let header = r.header();
        // The upper bits of the link-type field may carry FCS information.
        let link = Link::from_linktype(u32::from(header.datalink) & 0xffff);
        let nano = header.ts_resolution == TsResolution::NanoSecond;
        let max_record = header.snaplen.max(MAX_RECORD);
        while let Some(p) = r.next_raw_packet() {
            let p = match p {
                Ok(p) => p,
                Err(e) => return self.broken(e),
            };
            if p.incl_len > max_record {
                let reason = format!("a record claims {} bytes", p.incl_len);
                return self.corrupt(reason);
            }
            let frac = if nano {
                u64::from(p.ts_frac)
            } else {
                u64::from(p.ts_frac) * 1000
            };
            let ts = Duration::from_secs(u64::from(p.ts_sec)) + Duration::from_nanos(frac);
            self.frame(link, &p.data, p.orig_len, epoch_plus(ts), f);
        }
        Ok(())
    }

    pub(super) fn pcapng(
        &mut self,
        r: impl Read,
        f: &mut impl FnMut(CapturedRef<'_>),
    ) -> Result<(), CapError> {
        let mut r = PcapNgReader::new(r).map_err(|e| self.header_error(e))?;
        self.stats.files += 1;
        let mut big = r.section().endianness == Endianness::Big;
        let mut ifaces: Vec<Iface> = Vec::new();
        // Simple Packet Blocks carry no timestamp: they get the last one seen.
        let mut last_ts = UNIX_EPOCH;
        loop {
            let block = match r.next_raw_block() {
                None => return Ok(()),
                Some(Ok(b)) => b,
                Some(Err(e)) => return self.broken(e),
            };
            let body: &[u8] = &block.body;
            let rd32 = |b: &[u8], at: usize| {
                let v = [b[at], b[at + 1], b[at + 2], b[at + 3]];
                if big {
                    u32::from_be_bytes(v)
                } else {
                    u32::from_le_bytes(v)
                }
            };
            // (interface, timestamp units, captured length, original length, data offset)
            let (iface_id, raw_ts, cap_len, orig_len, data_off) = match block.type_ {
                PCAPNG_EPB if body.len() >= 20 => (
                    rd32(body, 0) as usize,
                    Some((u64::from(rd32(body, 4)) << 32) | u64::from(rd32(body, 8))),
                    rd32(body, 12) as usize,
                    rd32(body, 16),
                    20,
                ),
                PCAPNG_PB if body.len() >= 20 => {
                    let id = if big {
                        u16::from_be_bytes([body[0], body[1]])
                    } else {
                        u16::from_le_bytes([body[0], body[1]])
                    };
                    (
                        id as usize,
                        Some((u64::from(rd32(body, 4)) << 32) | u64::from(rd32(body, 8))),
                        rd32(body, 12) as usize,
                        rd32(body, 16),
                        20,
                    )
                }
                PCAPNG_SPB if body.len() >= 4 => {
                    let orig = rd32(body, 0);
                    let mut cap = (orig as usize).min(body.len() - 4);
                    if let Some(i) = ifaces.first().filter(|i| i.snaplen != 0) {
                        cap = cap.min(i.snaplen as usize);
                    }
                    (0, None, cap, orig, 4)
                }
                PCAPNG_EPB | PCAPNG_PB | PCAPNG_SPB => {
                    self.stats.frames += 1;
                    self.stats
                        .count(FrameError::Malformed("packet block too short"));
                    continue;
                }
                PCAPNG_SHB | PCAPNG_IDB => {
                    drop(block);
                    big = r.section().endianness == Endianness::Big;
                    ifaces = r.interfaces().iter().map(Iface::from_idb).collect();
                    continue;
                }
                _ => continue,
            };
            let Some(iface) = ifaces.get(iface_id).copied() else {
                self.stats.frames += 1;
                self.stats
                    .count(FrameError::Malformed("packet of an undeclared interface"));
                continue;
            };
            let Some(data) = body.get(data_off..data_off + cap_len) else {
                self.stats.frames += 1;
                self.stats
                    .count(FrameError::Malformed("captured length exceeds the block"));
                continue;
            };
            if let Some(raw) = raw_ts {
                last_ts = iface.timestamp(raw);
            }
            self.frame(iface.link, data, orig_len, last_ts, f);
        }
    }
}

impl Iface {
    fn from_idb(
        idb: &pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionBlock,
    ) -> Self {
        let mut i = Iface {
            link: Link::from_linktype(idb.linktype.into()),
            snaplen: idb.snaplen,
            tsresol: 6,
            tsoffset: 0,
        };
        for o in &idb.options {
            match o {
                InterfaceDescriptionOption::IfTsResol(r) => i.tsresol = *r,
                // A signed number of seconds in the spec; pcap-file reads it unsigned.
                InterfaceDescriptionOption::IfTsOffset(s) => i.tsoffset = *s as i64,
                _ => {}
            }
        }
        i
    }

    /// A timestamp in this interface's units (if_tsresol) since its offset (if_tsoffset).
    fn timestamp(&self, raw: u64) -> SystemTime {
        let raw = u128::from(raw);
        let exp = u32::from(self.tsresol & 0x7f);
        let nanos: u128 = if self.tsresol & 0x80 != 0 {
            (raw * 1_000_000_000) >> exp.min(127)
        } else if exp <= 9 {
            raw * 10u128.pow(9 - exp)
        } else {
            10u128.checked_pow(exp - 9).map_or(0, |d| raw / d)
        };
        let secs = u64::try_from(nanos / 1_000_000_000).unwrap_or(u64::MAX);
        let d = Duration::new(secs, (nanos % 1_000_000_000) as u32);
        let off = Duration::from_secs(self.tsoffset.unsigned_abs());
        let base = if self.tsoffset >= 0 {
            UNIX_EPOCH.checked_add(off)
        } else {
            UNIX_EPOCH.checked_sub(off)
        };
        base.and_then(|b| b.checked_add(d)).unwrap_or(UNIX_EPOCH)
    }
}

fn epoch_plus(d: Duration) -> SystemTime {
    UNIX_EPOCH.checked_add(d).unwrap_or(UNIX_EPOCH)
}

/// Reads until `buf` is full or the stream ends; returns how many bytes were read.
pub(super) fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

pub(super) fn stream_error(name: &Path, e: io::Error) -> CapError {
    match e.kind() {
        // flate2's errors for a corrupt gzip stream.
        io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput => CapError::Corrupt {
            path: name.to_owned(),
            reason: format!("gzip: {e}"),
        },
        _ => CapError::Io {
            path: name.to_owned(),
            source: e,
        },
    }
}
