//! Reading capture files offline (`flux-agent replay FILE...`): pcap and pcapng, gzip-compressed
//! or not, streamed frame by frame, each frame decoded the way the XDP program decodes it.
//!
//! The frame rules are those of `flux-ebpf/src/main.rs` and [`flux_common::is_plausible_response`]:
//! up to two VLAN tags, IPv4 (options, fragments) or IPv6 (a bounded extension-header walk), UDP
//! or TCP from a configured source port, and a plausible DNS response header. Where a file can say
//! more than a live packet can, the differences are:
//! - link types other than Ethernet (Linux SLL/SLL2, raw IP, BSD loopback) are unwrapped first;
//! - a frame shorter than its IP header claims is still reported, flagged `truncated`, where the
//!   kernel (which always sees whole frames) would call it malformed: in a file that is a frame
//!   cut by the snaplen, or a first fragment of which only the start was kept, even when the file
//!   does not record the wire length (nDPI's `badpackets.pcap` is 86 such frames);
//! - a TCP segment holding several whole DNS messages yields each of them (the kernel takes the
//!   first); a message that continues in a later segment is still not reassembled;
//! - the message is not cut at [`flux_common::DNS_CAPTURE_MAX`]: use [`CapturedDns::cap_to`] to
//!   see exactly what the ring buffer would have carried.
//!
//! Files are streamed (pcap-file's readers over a buffered reader), never loaded whole, and the
//! per-frame path allocates nothing but the [`Bytes`] of each DNS message yielded.

use std::{
    fs::File,
    io::{self, BufRead, BufReader, Read},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use flux_common::{DNS_HEADER_LEN, MAX_IPV6_EXT_HEADERS, is_plausible_response};
use pcap_file::{
    DataLink, Endianness, PcapError, TsResolution,
    pcap::PcapReader,
    pcapng::{PcapNgReader, blocks::interface_description::InterfaceDescriptionOption},
};
use serde::Serialize;

use crate::dns::Transport;

/// The source ports `replay` treats as DNS unless told otherwise: DNS, mDNS and LLMNR.
pub const DEFAULT_PORTS: [u16; 3] = [53, 5353, 5355];

/// One DNS response found in a capture file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapturedDns {
    /// The packet's timestamp from the file.
    pub ts: SystemTime,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub transport: Transport,
    /// VLAN ids (12 bits), outermost first.
    pub vlan: Vec<u16>,
    /// The DNS message (TCP: one whole message, without its 2-byte length prefix).
    pub payload: Bytes,
    /// The frame holds less of the message than its headers claim (snaplen), or it is the first
    /// fragment of a fragmented IP datagram.
    pub truncated: bool,
}

impl CapturedDns {
    /// Cuts the message to at most `max` bytes, as the ring buffer does
    /// ([`flux_common::DNS_CAPTURE_MAX`]), and flags it truncated if that removed anything.
    pub fn cap_to(&mut self, max: usize) {
        if self.payload.len() > max {
            self.payload.truncate(max);
            self.truncated = true;
        }
    }
}

/// What reading one or more files found. Pass the same value to several [`read_file`] calls to
/// sum over them.
#[derive(Default, Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReadStats {
    /// Capture files opened (pcap or pcapng header read). Serialized as `files_opened` so it
    /// does not collide with the replay summary's `files` (files given).
    #[serde(rename = "files_opened")]
    pub files: u64,
    /// Files that ended early: a record cut short or a corrupt block after at least one frame.
    /// What came before was used.
    pub truncated_files: u64,
    /// Frames (packet records) read.
    pub frames: u64,
    /// DNS responses yielded (a TCP segment may hold several).
    pub dns_responses: u64,
    /// Of those, how many were flagged `truncated`.
    pub truncated_responses: u64,
    /// From a DNS port but not a plausible DNS response (or shorter than a DNS header).
    pub not_dns: u64,
    /// Frames whose headers are impossible, or missing from a frame the file says is whole.
    pub malformed_frames: u64,
    /// Frames of a link type this reader does not decode.
    pub unsupported_link: u64,
    /// Non-first IP fragments (skipped, as the kernel does).
    pub non_first_fragments: u64,
    /// DNS-over-TCP segments (or their tails) that do not hold a whole message.
    pub tcp_partial: u64,
    /// IPv6 packets with more extension headers than the kernel walks.
    pub ipv6_ext_too_deep: u64,
    /// Frames cut by the capture's snaplen before a whole DNS header.
    pub snaplen_cut: u64,
}

impl ReadStats {
    /// Counts one skipped frame (or the skipped rest of one).
    pub fn count(&mut self, e: FrameError) {
        let slot = match e {
            FrameError::UnsupportedLink(_) => &mut self.unsupported_link,
            FrameError::Malformed(_) => &mut self.malformed_frames,
            FrameError::NonFirstFragment => &mut self.non_first_fragments,
            FrameError::TcpPartial => &mut self.tcp_partial,
            FrameError::NotDns => &mut self.not_dns,
            FrameError::Ipv6ExtTooDeep => &mut self.ipv6_ext_too_deep,
            FrameError::SnaplenCut => &mut self.snaplen_cut,
        };
        *slot += 1;
    }
}

/// Why a whole file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CapError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not a pcap or pcapng file (gzip-compressed or not)", path.display())]
    NotACapture { path: PathBuf },
    #[error("{} is corrupt: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
}

/// Why a frame (or, for a TCP segment, the rest of it) yielded no DNS response. Frames that are
/// simply not DNS from a configured port are not errors: [`decode_frame`] returns `Ok(None)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("link type {0} is not supported")]
    UnsupportedLink(u32),
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
    #[error("non-first IP fragment")]
    NonFirstFragment,
    #[error("DNS-over-TCP segment without a whole message")]
    TcpPartial,
    #[error("not a plausible DNS response")]
    NotDns,
    #[error("IPv6 extension-header chain longer than {MAX_IPV6_EXT_HEADERS}")]
    Ipv6ExtTooDeep,
    #[error("frame cut by the snaplen before the DNS header")]
    SnaplenCut,
}

/// Streams every frame of a pcap or pcapng file, gzip-compressed or not (recognised by its magic
/// bytes, not its name), calling `f` for each DNS response from one of `ports`.
///
/// Frames that cannot be decoded are counted in `stats` and skipped. A file that breaks off (a
/// record cut short, a corrupt block) is read up to that point and counted in
/// `stats.truncated_files`; it is an error only if not even one frame could be read.
pub fn read_file(
    path: &Path,
    ports: &[u16],
    stats: &mut ReadStats,
    f: impl FnMut(CapturedDns),
) -> Result<(), CapError> {
    let file = File::open(path).map_err(|source| CapError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut buf = BufReader::with_capacity(256 * 1024, file);
    let head = buf.fill_buf().map_err(|source| CapError::Io {
        path: path.to_owned(),
        source,
    })?;
    if head.starts_with(&[0x1f, 0x8b]) {
        read_reader(
            flate2::read::MultiGzDecoder::new(buf),
            path,
            ports,
            stats,
            f,
        )
    } else {
        read_reader(buf, path, ports, stats, f)
    }
}

/// [`read_file`] for an already opened, uncompressed stream; `name` is used in errors only.
pub fn read_reader<R: Read>(
    mut reader: R,
    name: &Path,
    ports: &[u16],
    stats: &mut ReadStats,
    mut f: impl FnMut(CapturedDns),
) -> Result<(), CapError> {
    let mut magic = [0u8; 4];
    let n = read_up_to(&mut reader, &mut magic).map_err(|e| stream_error(name, e))?;
    let stream = (&magic[..n]).chain(reader);
    let mut file = FileReader {
        name,
        ports,
        stats,
        frames_read: 0,
    };
    match (n, u32::from_be_bytes(magic)) {
        (4, 0xa1b2_c3d4 | 0xd4c3_b2a1 | 0xa1b2_3c4d | 0x4d3c_b2a1) => file.pcap(stream, &mut f),
        (4, 0x0a0d_0d0a) => file.pcapng(stream, &mut f),
        _ => Err(CapError::NotACapture {
            path: name.to_owned(),
        }),
    }
}

/// Decodes one link-layer frame. A frame shorter than its IP header claims (a snaplen) yields
/// what it holds, flagged `truncated`. `Ok(None)`: not DNS from `ports`.
///
/// A TCP segment holding several messages yields the first; [`decode_frame_each`] yields all.
pub fn decode_frame(
    linktype: DataLink,
    frame: &[u8],
    ts: SystemTime,
    ports: &[u16],
) -> Result<Option<CapturedDns>, FrameError> {
    let mut first = None;
    let res = decode_frame_each(linktype, frame, None, ts, ports, |d| {
        if first.is_none() {
            first = Some(d);
        }
    });
    match (first, res) {
        (Some(d), _) => Ok(Some(d)),
        (None, Ok(())) => Ok(None),
        (None, Err(e)) => Err(e),
    }
}

/// Decodes one frame and calls `f` for every DNS message in it. `orig_len` is the frame's length
/// on the wire if known: a frame known to be cut that ends before the DNS header counts as
/// [`FrameError::SnaplenCut`] rather than malformed. The error, if any, says why the frame, or
/// the rest of it after the messages yielded, was skipped.
pub fn decode_frame_each(
    linktype: DataLink,
    frame: &[u8],
    orig_len: Option<u32>,
    ts: SystemTime,
    ports: &[u16],
    mut f: impl FnMut(CapturedDns),
) -> Result<(), FrameError> {
    let known_cut = orig_len.is_some_and(|o| o as usize > frame.len());
    let link = Link::from_linktype(linktype.into());
    match decode(link, frame, known_cut, ts, ports, &mut f) {
        Ok(()) | Err(Skip::NotOurs) => Ok(()),
        Err(Skip::Frame(e)) => Err(e),
    }
}

// ---------------------------------------------------------------------------------------------
// File formats
// ---------------------------------------------------------------------------------------------

/// Largest pcap record accepted; anything larger is taken as a corrupt record header.
const MAX_RECORD: u32 = 256 * 1024;

const PCAPNG_SHB: u32 = 0x0a0d_0d0a;
const PCAPNG_IDB: u32 = 1;
const PCAPNG_PB: u32 = 2;
const PCAPNG_SPB: u32 = 3;
const PCAPNG_EPB: u32 = 6;

struct FileReader<'a> {
    name: &'a Path,
    ports: &'a [u16],
    stats: &'a mut ReadStats,
    frames_read: u64,
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
        f: &mut impl FnMut(CapturedDns),
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
            &mut |d: CapturedDns| {
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

    fn pcap(&mut self, r: impl Read, f: &mut impl FnMut(CapturedDns)) -> Result<(), CapError> {
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

    fn pcapng(&mut self, r: impl Read, f: &mut impl FnMut(CapturedDns)) -> Result<(), CapError> {
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
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
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

fn stream_error(name: &Path, e: io::Error) -> CapError {
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

// ---------------------------------------------------------------------------------------------
// Frames: the XDP program's walk
// ---------------------------------------------------------------------------------------------

// Hand-written rather than etherparse's lax slicing (`LaxSlicedPacket`), which is already a
// dev-dependency for building test frames. This walk must be the kernel's, counter for counter,
// and etherparse walks differently in each place that matters here:
// - VLAN: it takes more than the two tags the XDP program walks;
// - IPv6: it parses a fixed set of extension headers (at most one of each kind, no Mobility
//   header), not a generic chain bounded by `MAX_IPV6_EXT_HEADERS`, so `ipv6_ext_too_deep` and
//   the hop-by-hop/routing/AH/mobility cases would count differently;
// - fragments: it hands over no transport header for any fragment, where the kernel reads the
//   UDP header of a first fragment (flagged truncated);
// - snaplen-cut frames: its "incomplete" payloads do not say which header the cut fell in, which
//   the `snaplen_cut`/`malformed_frames` split needs;
// - link types: no Linux SLL2 and no BSD loopback (NULL/LOOP).
// What is left is a few bounds-checked reads per header; the frame rules (and the counters they
// feed) are checked against all of ../shared/datasets/pcaps by tests/tests/datasets.rs.

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;

const IPPROTO_UDP: u8 = 17;
const IPPROTO_TCP: u8 = 6;
const IPV6_HOP_BY_HOP: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_AH: u8 = 51;
const IPV6_DEST_OPTS: u8 = 60;
const IPV6_MOBILITY: u8 = 135;

/// Link types, resolved once per file or interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    Ethernet,
    LinuxSll,
    LinuxSll2,
    /// IPv4 or IPv6, told apart by the version nibble.
    RawIp,
    RawIpv4,
    RawIpv6,
    /// BSD loopback: 4-byte address family in the capturing host's byte order.
    Null,
    /// OpenBSD loopback: the same in network byte order.
    Loop,
    Unsupported(u32),
}

impl Link {
    fn from_linktype(lt: u32) -> Link {
        match lt {
            1 => Link::Ethernet,
            113 => Link::LinuxSll,
            276 => Link::LinuxSll2,
            // LINKTYPE_RAW, and DLT_RAW as some systems write it.
            101 | 12 => Link::RawIp,
            228 => Link::RawIpv4,
            229 => Link::RawIpv6,
            0 => Link::Null,
            108 => Link::Loop,
            other => Link::Unsupported(other),
        }
    }
}

enum Skip {
    /// Not DNS from a configured port (or not IP at all): nothing to count.
    NotOurs,
    Frame(FrameError),
}

impl From<FrameError> for Skip {
    fn from(e: FrameError) -> Self {
        Skip::Frame(e)
    }
}

fn malformed(why: &'static str) -> Skip {
    Skip::Frame(FrameError::Malformed(why))
}

/// A header is missing from the frame: the snaplen's doing if the frame was cut, else malformed.
fn short(cut: bool, why: &'static str) -> Skip {
    if cut {
        Skip::Frame(FrameError::SnaplenCut)
    } else {
        malformed(why)
    }
}

#[inline(always)]
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// The network layer as the transport parse needs it.
struct L3 {
    src: IpAddr,
    dst: IpAddr,
    protocol: u8,
    /// Offset of the L4 header in the frame.
    l4_off: usize,
    /// L4 bytes the IP header claims.
    l4_len: usize,
    first_fragment: bool,
    /// The frame holds less than the IP header claims.
    cut: bool,
}

fn decode(
    link: Link,
    frame: &[u8],
    known_cut: bool,
    ts: SystemTime,
    ports: &[u16],
    f: &mut impl FnMut(CapturedDns),
) -> Result<(), Skip> {
    let (mut ether_type, mut off, walk_vlans) = match link {
        Link::Ethernet => {
            if frame.len() < 14 {
                return Err(short(known_cut, "shorter than an Ethernet header"));
            }
            (be16(frame, 12), 14, true)
        }
        Link::LinuxSll => {
            if frame.len() < 16 {
                return Err(short(known_cut, "shorter than a Linux SLL header"));
            }
            (be16(frame, 14), 16, true)
        }
        Link::LinuxSll2 => {
            if frame.len() < 20 {
                return Err(short(known_cut, "shorter than a Linux SLL2 header"));
            }
            (be16(frame, 0), 20, true)
        }
        Link::RawIp | Link::RawIpv4 | Link::RawIpv6 => {
            let Some(&first) = frame.first() else {
                return Err(malformed("empty frame"));
            };
            let et = match (first >> 4, link) {
                (4, Link::RawIp | Link::RawIpv4) => ETH_P_IP,
                (6, Link::RawIp | Link::RawIpv6) => ETH_P_IPV6,
                _ => return Err(malformed("raw IP frame of the wrong IP version")),
            };
            (et, 0, false)
        }
        Link::Null | Link::Loop => {
            if frame.len() < 4 {
                return Err(short(known_cut, "shorter than a loopback header"));
            }
            let b = [frame[0], frame[1], frame[2], frame[3]];
            // NULL is in the capturing host's byte order, unknown here: a family fits in 16 bits.
            let family = match u32::from_ne_bytes(b) {
                v if v > 0xffff => v.swap_bytes(),
                v => v,
            };
            let et = match family {
                2 => ETH_P_IP,
                // AF_INET6 on the BSDs, Darwin, and Linux.
                10 | 24 | 28 | 30 => ETH_P_IPV6,
                _ => return Err(Skip::NotOurs),
            };
            (et, 4, false)
        }
        Link::Unsupported(lt) => return Err(FrameError::UnsupportedLink(lt).into()),
    };

    // Up to two tags, as the kernel walks them.
    let mut vlan_ids = [0u16; 2];
    let mut vlan_count = 0;
    while walk_vlans && vlan_count < 2 && matches!(ether_type, ETH_P_8021Q | ETH_P_8021AD) {
        if frame.len() < off + 4 {
            return Err(short(known_cut, "VLAN tag cut short"));
        }
        vlan_ids[vlan_count] = be16(frame, off) & 0x0fff;
        ether_type = be16(frame, off + 2);
        vlan_count += 1;
        off += 4;
    }

    let l3 = match ether_type {
        ETH_P_IP => ipv4(frame, off, known_cut)?,
        ETH_P_IPV6 => ipv6(frame, off, known_cut)?,
        _ => return Err(Skip::NotOurs),
    };
    // The L4 bytes present: up to what the IP header claims (Ethernet padding is not payload).
    let l4_end = frame.len().min(l3.l4_off + l3.l4_len);
    let l4 = &frame[l3.l4_off.min(l4_end)..l4_end];
    let cut = l3.cut;

    let meta = |sport, dport, transport, payload: &[u8], truncated| CapturedDns {
        ts,
        src: l3.src,
        dst: l3.dst,
        sport,
        dport,
        transport,
        vlan: vlan_ids[..vlan_count].to_vec(),
        payload: Bytes::copy_from_slice(payload),
        truncated,
    };

    match l3.protocol {
        IPPROTO_UDP => {
            if l4.len() < 8 {
                return Err(short(cut, "UDP header cut short"));
            }
            let sport = be16(l4, 0);
            if !ports.contains(&sport) {
                return Err(Skip::NotOurs);
            }
            let udp_len = be16(l4, 4) as usize;
            if udp_len < 8 {
                return Err(malformed("UDP length below 8"));
            }
            // Only the first fragment of a datagram may carry less than its UDP length says.
            if udp_len > l3.l4_len && !l3.first_fragment {
                return Err(malformed("UDP length exceeds the IP payload"));
            }
            let claimed = udp_len - 8;
            if claimed < DNS_HEADER_LEN {
                return Err(FrameError::NotDns.into());
            }
            let msg = &l4[8..l4.len().min(udp_len)];
            if msg.len() < DNS_HEADER_LEN {
                return Err(short(cut, "DNS header cut short"));
            }
            if !is_plausible_response(be16(msg, 2), be16(msg, 4)) {
                return Err(FrameError::NotDns.into());
            }
            let truncated = msg.len() < claimed || l3.first_fragment;
            f(meta(sport, be16(l4, 2), Transport::Udp, msg, truncated));
            Ok(())
        }
        IPPROTO_TCP => {
            if l4.len() < 20 {
                return Err(short(cut, "TCP header cut short"));
            }
            let sport = be16(l4, 0);
            if !ports.contains(&sport) {
                return Err(Skip::NotOurs);
            }
            let dport = be16(l4, 2);
            let doff = ((l4[12] >> 4) as usize) * 4;
            if doff < 20 || doff > l3.l4_len {
                return Err(malformed("TCP data offset out of range"));
            }
            let claimed = l3.l4_len - doff;
            if claimed == 0 {
                // Handshake, ACKs, FIN: ordinary TCP, nothing to count.
                return Err(Skip::NotOurs);
            }
            if l3.first_fragment {
                return Err(FrameError::TcpPartial.into());
            }
            let Some(seg) = l4.get(doff..) else {
                return Err(short(cut, "TCP options cut short"));
            };
            // Each whole message: a 2-byte length, then the message.
            let mut pos = 0;
            while pos < claimed {
                if claimed - pos < 2 + DNS_HEADER_LEN {
                    return Err(FrameError::TcpPartial.into());
                }
                if seg.len() < pos + 2 {
                    return Err(FrameError::SnaplenCut.into());
                }
                let len = be16(seg, pos) as usize;
                let start = pos + 2;
                let end = start + len;
                if end > claimed {
                    // Continues in later segments: stream reassembly is not done here either.
                    return Err(FrameError::TcpPartial.into());
                }
                if len < DNS_HEADER_LEN {
                    return Err(FrameError::NotDns.into());
                }
                if seg.len() < start + DNS_HEADER_LEN {
                    return Err(FrameError::SnaplenCut.into());
                }
                if !is_plausible_response(be16(seg, start + 2), be16(seg, start + 4)) {
                    return Err(FrameError::NotDns.into());
                }
                let present = end.min(seg.len());
                f(meta(
                    sport,
                    dport,
                    Transport::Tcp,
                    &seg[start..present],
                    present < end,
                ));
                pos = end;
            }
            Ok(())
        }
        _ => Err(Skip::NotOurs),
    }
}

fn ipv4(frame: &[u8], off: usize, known_cut: bool) -> Result<L3, Skip> {
    let Some(h) = frame.get(off..off + 20) else {
        return Err(short(known_cut, "IPv4 header cut short"));
    };
    if h[0] >> 4 != 4 {
        return Err(malformed("IPv4 version is not 4"));
    }
    let ihl = ((h[0] & 0x0f) as usize) * 4;
    let tot_len = be16(h, 2) as usize;
    if ihl < 20 || tot_len < ihl {
        return Err(malformed("IPv4 header length out of range"));
    }
    let frame_cut = off + tot_len > frame.len();
    let frag = be16(h, 6);
    if frag & 0x1fff != 0 {
        return Err(FrameError::NonFirstFragment.into());
    }
    if frame.len() < off + ihl {
        return Err(short(true, "IPv4 options cut short"));
    }
    Ok(L3 {
        src: IpAddr::V4(Ipv4Addr::new(h[12], h[13], h[14], h[15])),
        dst: IpAddr::V4(Ipv4Addr::new(h[16], h[17], h[18], h[19])),
        protocol: h[9],
        l4_off: off + ihl,
        l4_len: tot_len - ihl,
        first_fragment: frag & 0x2000 != 0,
        cut: frame_cut,
    })
}

fn ipv6(frame: &[u8], off: usize, known_cut: bool) -> Result<L3, Skip> {
    let Some(h) = frame.get(off..off + 40) else {
        return Err(short(known_cut, "IPv6 header cut short"));
    };
    if h[0] >> 4 != 6 {
        return Err(malformed("IPv6 version is not 6"));
    }
    let payload_len = be16(h, 4) as usize;
    if payload_len == 0 {
        // Jumbogram or nothing at all: not a DNS response that can be sized.
        return Err(Skip::NotOurs);
    }
    let mut l4_off = off + 40;
    let payload_end = l4_off + payload_len;
    let frame_cut = payload_end > frame.len();
    let mut next = h[6];
    let mut first_fragment = false;
    let mut walked = 0;
    while walked < MAX_IPV6_EXT_HEADERS {
        match next {
            IPV6_FRAGMENT => {
                let Some(e) = frame.get(l4_off..l4_off + 8) else {
                    return Err(short(frame_cut, "IPv6 fragment header cut short"));
                };
                let fo = be16(e, 2);
                if fo >> 3 != 0 {
                    return Err(FrameError::NonFirstFragment.into());
                }
                first_fragment = fo & 1 != 0;
                next = e[0];
                l4_off += 8;
            }
            IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS | IPV6_MOBILITY | IPV6_AH => {
                let Some(e) = frame.get(l4_off..l4_off + 2) else {
                    return Err(short(frame_cut, "IPv6 extension header cut short"));
                };
                let len = e[1] as usize;
                let bytes = if next == IPV6_AH {
                    (len + 2) * 4
                } else {
                    (len + 1) * 8
                };
                next = e[0];
                l4_off += bytes;
            }
            _ => break,
        }
        if l4_off > payload_end {
            return Err(malformed("IPv6 extension headers exceed the payload"));
        }
        walked += 1;
    }
    if walked == MAX_IPV6_EXT_HEADERS {
        return Err(FrameError::Ipv6ExtTooDeep.into());
    }
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src.copy_from_slice(&h[8..24]);
    dst.copy_from_slice(&h[24..40]);
    Ok(L3 {
        src: IpAddr::V6(Ipv6Addr::from(src)),
        dst: IpAddr::V6(Ipv6Addr::from(dst)),
        protocol: next,
        l4_off,
        l4_len: payload_end - l4_off,
        first_fragment,
        cut: frame_cut,
    })
}

#[cfg(test)]
mod tests {
    use std::{
        fs,
        io::Write,
        sync::atomic::{AtomicU64, Ordering},
    };

    use etherparse::{LinuxSllPacketType, PacketBuilder};

    use super::*;

    // ---- building blocks -------------------------------------------------------------------

    /// A DNS response: one question, one A answer.
    fn response(id: u16) -> Vec<u8> {
        let mut m = id.to_be_bytes().to_vec();
        m.extend_from_slice(&[0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]);
        m.extend_from_slice(b"\x07example\x03com\x00\x00\x01\x00\x01");
        m.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
        m
    }

    fn query(id: u16) -> Vec<u8> {
        let mut m = response(id);
        m[2] = 0x01;
        m[3] = 0x00;
        m
    }

    /// A response padded with a TXT-ish tail to `len` bytes (the parse here only reads headers).
    fn big_response(len: usize) -> Vec<u8> {
        let mut m = response(7);
        m.resize(len, 0x61);
        m
    }

    const SRC4: [u8; 4] = [192, 0, 2, 53];
    const DST4: [u8; 4] = [198, 51, 100, 7];
    const SRC6: [u8; 16] = [
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x53,
    ];
    const DST6: [u8; 16] = [
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x07,
    ];

    fn udp4(sport: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ipv4(SRC4, DST4, 64)
            .udp(sport, 40000)
            .write(&mut v, payload)
            .unwrap();
        v
    }

    fn udp6(sport: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ipv6(SRC6, DST6, 64)
            .udp(sport, 40000)
            .write(&mut v, payload)
            .unwrap();
        v
    }

    fn tcp4(sport: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ipv4(SRC4, DST4, 64)
            .tcp(sport, 40000, 1, 65535)
            .ack(1)
            .write(&mut v, payload)
            .unwrap();
        v
    }

    /// Ethernet around an IP packet, with the given (TPID, VLAN id) tags.
    fn eth_tagged(tags: &[(u16, u16)], ip: &[u8]) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
        for (tpid, id) in tags {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&id.to_be_bytes());
        }
        let et: u16 = if ip[0] >> 4 == 6 { 0x86dd } else { 0x0800 };
        f.extend_from_slice(&et.to_be_bytes());
        f.extend_from_slice(ip);
        f
    }

    fn eth(ip: &[u8]) -> Vec<u8> {
        eth_tagged(&[], ip)
    }

    fn tcp_dns(msgs: &[&[u8]]) -> Vec<u8> {
        let mut p = Vec::new();
        for m in msgs {
            p.extend_from_slice(&(m.len() as u16).to_be_bytes());
            p.extend_from_slice(m);
        }
        p
    }

    // ---- files ---------------------------------------------------------------------------

    struct Tmp(PathBuf);

    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = fs::remove_file(&self.0);
        }
    }

    fn tmp(name: &str, bytes: &[u8]) -> Tmp {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "flux-capfile-{}-{}-{name}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        fs::write(&p, bytes).unwrap();
        Tmp(p)
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    struct Rec {
        ts: Duration,
        data: Vec<u8>,
        orig: u32,
    }

    fn rec(secs: u64, data: Vec<u8>) -> Rec {
        let orig = data.len() as u32;
        Rec {
            ts: Duration::from_secs(secs),
            data,
            orig,
        }
    }

    fn pcap(link: u32, nano: bool, big: bool, recs: &[Rec]) -> Vec<u8> {
        let w32 = |v: &mut Vec<u8>, x: u32| {
            v.extend_from_slice(&if big {
                x.to_be_bytes()
            } else {
                x.to_le_bytes()
            })
        };
        let w16 = |v: &mut Vec<u8>, x: u16| {
            v.extend_from_slice(&if big {
                x.to_be_bytes()
            } else {
                x.to_le_bytes()
            })
        };
        let mut v = Vec::new();
        w32(&mut v, if nano { 0xa1b2_3c4d } else { 0xa1b2_c3d4 });
        w16(&mut v, 2);
        w16(&mut v, 4);
        w32(&mut v, 0);
        w32(&mut v, 0);
        w32(&mut v, 65535);
        w32(&mut v, link);
        for r in recs {
            w32(&mut v, r.ts.as_secs() as u32);
            let frac = r.ts.subsec_nanos();
            w32(&mut v, if nano { frac } else { frac / 1000 });
            w32(&mut v, r.data.len() as u32);
            w32(&mut v, r.orig);
            v.extend_from_slice(&r.data);
        }
        v
    }

    /// pcapng blocks, in either byte order.
    struct Ng {
        out: Vec<u8>,
        big: bool,
    }

    impl Ng {
        fn new(big: bool) -> Self {
            let mut ng = Ng {
                out: Vec::new(),
                big,
            };
            ng.shb();
            ng
        }

        fn u16(&self, x: u16) -> [u8; 2] {
            if self.big {
                x.to_be_bytes()
            } else {
                x.to_le_bytes()
            }
        }

        fn u32(&self, x: u32) -> [u8; 4] {
            if self.big {
                x.to_be_bytes()
            } else {
                x.to_le_bytes()
            }
        }

        fn block(&mut self, ty: u32, body: &[u8]) {
            let pad = (4 - body.len() % 4) % 4;
            let len = (12 + body.len() + pad) as u32;
            let (t, l) = (self.u32(ty), self.u32(len));
            self.out.extend_from_slice(&t);
            self.out.extend_from_slice(&l);
            self.out.extend_from_slice(body);
            self.out.extend_from_slice(&[0, 0, 0][..pad]);
            self.out.extend_from_slice(&l);
        }

        fn shb(&mut self) {
            let mut b = self.u32(0x1a2b_3c4d).to_vec();
            b.extend_from_slice(&self.u16(1));
            b.extend_from_slice(&self.u16(0));
            b.extend_from_slice(&[0xff; 8]);
            self.block(PCAPNG_SHB, &b);
        }

        fn idb(&mut self, link: u16, snaplen: u32, tsresol: Option<u8>) {
            let mut b = self.u16(link).to_vec();
            b.extend_from_slice(&[0, 0]);
            b.extend_from_slice(&self.u32(snaplen));
            if let Some(r) = tsresol {
                b.extend_from_slice(&self.u16(9));
                b.extend_from_slice(&self.u16(1));
                b.extend_from_slice(&[r, 0, 0, 0]);
                b.extend_from_slice(&[0, 0, 0, 0]);
            }
            self.block(PCAPNG_IDB, &b);
        }

        fn epb(&mut self, iface: u32, ts: u64, data: &[u8]) {
            let mut b = self.u32(iface).to_vec();
            b.extend_from_slice(&self.u32((ts >> 32) as u32));
            b.extend_from_slice(&self.u32(ts as u32));
            b.extend_from_slice(&self.u32(data.len() as u32));
            b.extend_from_slice(&self.u32(data.len() as u32));
            b.extend_from_slice(data);
            b.resize(b.len() + (4 - data.len() % 4) % 4, 0);
            self.block(PCAPNG_EPB, &b);
        }

        fn spb(&mut self, data: &[u8]) {
            let mut b = self.u32(data.len() as u32).to_vec();
            b.extend_from_slice(data);
            self.block(PCAPNG_SPB, &b);
        }
    }

    fn read(t: &Tmp) -> (Result<(), CapError>, Vec<CapturedDns>, ReadStats) {
        let mut stats = ReadStats::default();
        let mut out = Vec::new();
        let r = read_file(&t.0, &DEFAULT_PORTS, &mut stats, |d| out.push(d));
        (r, out, stats)
    }

    fn at(secs: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    fn decode(link: u32, frame: &[u8]) -> Result<Option<CapturedDns>, FrameError> {
        decode_frame(DataLink::from(link), frame, UNIX_EPOCH, &DEFAULT_PORTS)
    }

    // ---- tests -----------------------------------------------------------------------------

    #[test]
    fn pcap_ethernet_udp_response() {
        let msg = response(0x1234);
        let recs = [
            Rec {
                ts: Duration::new(1_700_000_000, 123_456_000),
                data: eth(&udp4(53, &msg)),
                orig: 0,
            },
            rec(1, eth(&udp4(40000, &msg))), // not from a DNS port
            rec(2, eth(&udp4(53, &query(1)))),
        ]
        .map(|mut r| {
            r.orig = r.data.len() as u32;
            r
        });
        let t = tmp("eth.pcap", &pcap(1, false, false, &recs));
        let (r, out, stats) = read(&t);
        r.unwrap();
        assert_eq!(out.len(), 1);
        let d = &out[0];
        assert_eq!(d.ts, at(1_700_000_000, 123_456_000));
        assert_eq!(d.src, IpAddr::from(SRC4));
        assert_eq!(d.dst, IpAddr::from(DST4));
        assert_eq!((d.sport, d.dport), (53, 40000));
        assert_eq!(d.transport, Transport::Udp);
        assert!(d.vlan.is_empty());
        assert_eq!(&d.payload[..], &msg[..]);
        assert!(!d.truncated);
        assert_eq!(
            stats,
            ReadStats {
                files: 1,
                frames: 3,
                dns_responses: 1,
                not_dns: 1,
                ..Default::default()
            }
        );
    }

    #[test]
    fn pcap_nanosecond_big_endian() {
        let mut r = rec(0, eth(&udp6(5353, &response(1))));
        r.ts = Duration::new(1_600_000_000, 987_654_321);
        let t = tmp("ns.pcap", &pcap(1, true, true, &[r]));
        let (res, out, _) = read(&t);
        res.unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].ts, at(1_600_000_000, 987_654_321));
        assert_eq!(out[0].src, IpAddr::from(SRC6));
        assert_eq!(out[0].sport, 5353);
    }

    #[test]
    fn gzip_is_recognised_by_magic_not_name() {
        let file = pcap(1, false, false, &[rec(5, eth(&udp4(53, &response(9))))]);
        for (name, bytes) in [
            ("a.pcap", gz(&file)),
            ("b.pcap.gz", gz(&file)),
            ("c.gz", file.clone()),
        ] {
            let t = tmp(name, &bytes);
            let (r, out, stats) = read(&t);
            r.unwrap();
            assert_eq!(out.len(), 1, "{name}");
            assert_eq!(stats.frames, 1, "{name}");
        }
        // Concatenated gzip members are one stream.
        let (a, b) = file.split_at(40);
        let t = tmp("multi.gz", &[gz(a), gz(b)].concat());
        assert_eq!(read(&t).1.len(), 1);
    }

    #[test]
    fn every_supported_link_type() {
        let msg = response(3);
        let ip4 = udp4(53, &msg);
        let ip6 = udp6(53, &msg);
        let mut sll = Vec::new();
        PacketBuilder::linux_sll(LinuxSllPacketType::HOST, 6, [2, 0, 0, 0, 0, 1, 0, 0])
            .ipv4(SRC4, DST4, 64)
            .udp(53, 40000)
            .write(&mut sll, &msg)
            .unwrap();
        let mut sll2 = vec![0x08, 0x00, 0, 0, 0, 0, 0, 3, 0, 1, 0, 6];
        sll2.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0, 0]);
        sll2.extend_from_slice(&ip4);
        let mut sll2_v6 = sll2[..20].to_vec();
        sll2_v6[..2].copy_from_slice(&[0x86, 0xdd]);
        sll2_v6.extend_from_slice(&ip6);
        let with = |hdr: [u8; 4], ip: &[u8]| [&hdr[..], ip].concat();
        let cases: Vec<(u32, Vec<u8>, bool)> = vec![
            (1, eth(&ip4), false),
            (1, eth(&ip6), true),
            (113, sll, false),
            (276, sll2, false),
            (276, sll2_v6, true),
            (101, ip4.clone(), false),
            (101, ip6.clone(), true),
            (12, ip4.clone(), false),
            (228, ip4.clone(), false),
            (229, ip6.clone(), true),
            (0, with(2u32.to_le_bytes(), &ip4), false),
            (0, with(2u32.to_be_bytes(), &ip4), false),
            (0, with(30u32.to_le_bytes(), &ip6), true),
            (0, with(24u32.to_be_bytes(), &ip6), true),
            (108, with(2u32.to_be_bytes(), &ip4), false),
            (108, with(28u32.to_be_bytes(), &ip6), true),
        ];
        for (link, frame, v6) in &cases {
            let d = decode(*link, frame)
                .unwrap_or_else(|e| panic!("link {link}: {e}"))
                .unwrap_or_else(|| panic!("link {link}: nothing"));
            assert_eq!(&d.payload[..], &msg[..], "link {link}");
            assert_eq!(d.src.is_ipv6(), *v6, "link {link}");
            assert!(!d.truncated);
            // And through a file of that link type.
            let t = tmp(
                "link.pcap",
                &pcap(*link, false, false, &[rec(1, frame.clone())]),
            );
            let (r, out, _) = read(&t);
            r.unwrap();
            assert_eq!(out.len(), 1, "link {link} from a file");
        }
        // Wrong IP version for the link type, unknown family, unsupported link.
        assert!(matches!(decode(228, &ip6), Err(FrameError::Malformed(_))));
        assert!(matches!(decode(229, &ip4), Err(FrameError::Malformed(_))));
        assert_eq!(decode(0, &with(7u32.to_le_bytes(), &ip4)), Ok(None));
        assert_eq!(decode(105, &ip4), Err(FrameError::UnsupportedLink(105)));
        let t = tmp(
            "wifi.pcap",
            &pcap(105, false, false, &[rec(1, ip4.clone()), rec(2, ip4)]),
        );
        let (r, out, stats) = read(&t);
        r.unwrap();
        assert!(out.is_empty());
        assert_eq!((stats.frames, stats.unsupported_link), (2, 2));
    }

    #[test]
    fn vlan_tags() {
        let msg = response(4);
        let ip = udp4(53, &msg);
        // etherparse's own encoding of one 802.1Q tag.
        let mut one = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .single_vlan(etherparse::VlanId::try_new(11).unwrap())
            .ipv4(SRC4, DST4, 64)
            .udp(53, 40000)
            .write(&mut one, &msg)
            .unwrap();
        assert_eq!(decode(1, &one).unwrap().unwrap().vlan, vec![11]);
        let qinq = eth_tagged(&[(0x88a8, 0x2064), (0x8100, 0x00c8)], &ip);
        let d = decode(1, &qinq).unwrap().unwrap();
        assert_eq!(d.vlan, vec![100, 200]); // priority bits dropped
        assert_eq!(&d.payload[..], &msg[..]);
        // A third tag is more than the kernel walks: not ours.
        let three = eth_tagged(&[(0x88a8, 1), (0x8100, 2), (0x8100, 3)], &ip);
        assert_eq!(decode(1, &three), Ok(None));
    }

    #[test]
    fn ipv4_options_and_ipv6_extension_headers() {
        let msg = response(5);
        // IPv4 with 4 bytes of options (NOP NOP NOP EOL).
        let mut ip = udp4(53, &msg);
        ip[0] = 0x46;
        let tot = be16(&ip, 2) + 4;
        ip[2..4].copy_from_slice(&tot.to_be_bytes());
        ip.splice(20..20, [1, 1, 1, 0]);
        assert_eq!(&decode(101, &ip).unwrap().unwrap().payload[..], &msg[..]);

        // IPv6 with n Destination Options headers before UDP.
        let v6_ext = |n: usize, last: &[u8; 8]| {
            let mut ip = udp6(53, &msg);
            let mut exts = Vec::new();
            for i in 0..n {
                let next = if i + 1 == n { last[0] } else { IPV6_DEST_OPTS };
                let mut h = *last;
                h[0] = next;
                exts.extend_from_slice(&h);
            }
            if n > 0 {
                ip[6] = IPV6_DEST_OPTS;
            }
            let pl = be16(&ip, 4) + exts.len() as u16;
            ip[4..6].copy_from_slice(&pl.to_be_bytes());
            ip.splice(40..40, exts);
            ip
        };
        let padn = [IPPROTO_UDP, 0, 1, 4, 0, 0, 0, 0];
        for n in 0..MAX_IPV6_EXT_HEADERS {
            let d = decode(101, &v6_ext(n, &padn)).unwrap().unwrap();
            assert_eq!(&d.payload[..], &msg[..], "{n} extension headers");
        }
        assert_eq!(
            decode(101, &v6_ext(MAX_IPV6_EXT_HEADERS, &padn)),
            Err(FrameError::Ipv6ExtTooDeep)
        );
        // A Fragment header: first fragment (M=1, offset 0) and a later one.
        let mut first = v6_ext(1, &padn);
        first[6] = IPV6_FRAGMENT;
        first[40..48].copy_from_slice(&[IPPROTO_UDP, 0, 0, 1, 0, 0, 0, 9]);
        let d = decode(101, &first).unwrap().unwrap();
        assert!(d.truncated);
        first[42..44].copy_from_slice(&(185u16 << 3).to_be_bytes());
        assert_eq!(decode(101, &first), Err(FrameError::NonFirstFragment));
    }

    #[test]
    fn tcp_segments() {
        let (a, b) = (response(1), response(2));
        let two = tcp4(53, &tcp_dns(&[&a, &b]));
        let mut three = tcp_dns(&[&a, &b]);
        three.extend_from_slice(&[0x01, 0x00]); // a 256-byte message...
        three.extend_from_slice(&response(3)[..20]); // ...of which 20 bytes are here
        let partial = tcp4(53, &three[..30]); // the first message is not whole
        let mut query_in_stream = tcp_dns(&[&a]);
        query_in_stream.extend_from_slice(&tcp_dns(&[&query(9)]));
        let recs = [
            rec(1, eth(&two)),
            rec(2, eth(&tcp4(53, &three))),
            rec(3, eth(&partial)),
            rec(4, eth(&tcp4(53, &[]))), // a bare ACK
            rec(5, eth(&tcp4(53, &query_in_stream))),
            rec(6, eth(&tcp4(53, &tcp_dns(&[&a[..8], &a[..8]])))), // shorter than a header
        ];
        let t = tmp("tcp.pcap", &pcap(1, false, false, &recs));
        let (r, out, stats) = read(&t);
        r.unwrap();
        let ids: Vec<u16> = out.iter().map(|d| be16(&d.payload, 0)).collect();
        assert_eq!(ids, [1, 2, 1, 2, 1]);
        assert!(
            out.iter()
                .all(|d| d.transport == Transport::Tcp && !d.truncated)
        );
        assert_eq!(&out[0].payload[..], &a[..]);
        assert_eq!(stats.tcp_partial, 2); // the tail of frame 2, all of frame 3
        assert_eq!(stats.not_dns, 2); // the query after a response, the 8-byte "message"
        assert_eq!(stats.dns_responses, 5);
        // decode_frame yields the first message of a segment.
        assert_eq!(decode(1, &eth(&two)).unwrap().unwrap().payload, a);
        assert_eq!(decode(1, &eth(&partial)), Err(FrameError::TcpPartial));
    }

    #[test]
    fn ipv4_fragments() {
        let msg = big_response(3000);
        let whole = udp4(53, &msg);
        // First fragment: MF set, 1480 bytes of the UDP datagram.
        let mut first = whole[..20 + 1480].to_vec();
        first[2..4].copy_from_slice(&1500u16.to_be_bytes());
        first[6..8].copy_from_slice(&0x2000u16.to_be_bytes());
        // A later one: offset 1480/8, no UDP header.
        let mut later = whole[..20].to_vec();
        later.extend_from_slice(&whole[20 + 1480..20 + 2960]);
        later[2..4].copy_from_slice(&1500u16.to_be_bytes());
        later[6..8].copy_from_slice(&(0x2000u16 | 185).to_be_bytes());
        let t = tmp(
            "frag.pcap",
            &pcap(1, false, false, &[rec(1, eth(&first)), rec(2, eth(&later))]),
        );
        let (r, out, stats) = read(&t);
        r.unwrap();
        assert_eq!(out.len(), 1);
        assert!(out[0].truncated);
        assert_eq!(&out[0].payload[..], &msg[..1472]);
        assert_eq!(stats.non_first_fragments, 1);
        assert_eq!(stats.truncated_responses, 1);
    }

    #[test]
    fn snaplen_cut_frames() {
        let msg = big_response(400);
        let frame = eth(&udp4(53, &msg));
        let cut_at = |n: usize| Rec {
            ts: Duration::from_secs(1),
            data: frame[..n].to_vec(),
            orig: frame.len() as u32,
        };
        // Frames the file says are whole, but whose IP header claims more than they hold: taken
        // as cut all the same (a tool that did not record the wire length).
        let mut lying = frame.clone();
        let tot = be16(&lying, 16) + 100;
        lying[16..18].copy_from_slice(&tot.to_be_bytes());
        let short_whole = frame[..14 + 20 + 8 + 50].to_vec();
        let recs = [
            cut_at(14 + 20 + 8 + 30),          // 30 bytes of the message
            cut_at(14 + 20 + 8 + 5),           // not even a DNS header
            cut_at(14 + 10),                   // not even an IP header
            rec(2, lying.clone()),             // the UDP datagram is all there
            rec(3, short_whole),               // 50 bytes of it
            rec(4, frame[..14 + 10].to_vec()), // whole, and no IP header: malformed
        ];
        let t = tmp("snap.pcap", &pcap(1, false, false, &recs));
        let (r, out, stats) = read(&t);
        r.unwrap();
        let got: Vec<(usize, bool)> = out.iter().map(|d| (d.payload.len(), d.truncated)).collect();
        assert_eq!(got, [(30, true), (400, false), (50, true)]);
        assert_eq!(&out[0].payload[..], &msg[..30]);
        assert_eq!(stats.snaplen_cut, 2);
        assert_eq!(stats.malformed_frames, 1);
        // Without a wire length, decode_frame takes a short frame as cut.
        let d = decode(1, &frame[..14 + 20 + 8 + 30]).unwrap().unwrap();
        assert!(d.truncated);
        let d = decode(1, &lying).unwrap().unwrap();
        assert!(!d.truncated && d.payload == msg);
        // cap_to: what the ring buffer would carry.
        let mut d = decode(1, &frame).unwrap().unwrap();
        assert!(!d.truncated);
        d.cap_to(100);
        assert!(d.truncated && d.payload.len() == 100);
    }

    /// Deterministic pseudo-random bytes.
    fn lcg(seed: &mut u64) -> u8 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (*seed >> 33) as u8
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 42;
        let links = [1u32, 113, 276, 101, 228, 229, 0, 108];
        for link in links {
            let mut recs = Vec::new();
            for i in 0..500 {
                let len = i % 120;
                let mut f: Vec<u8> = (0..len).map(|_| lcg(&mut seed)).collect();
                // Steer some of them into the IP/UDP paths.
                if i % 3 == 0 && f.len() > 40 {
                    f[..14].copy_from_slice(&eth(&[0x45])[..14]);
                }
                let _ = decode(link, &f);
                recs.push(rec(1, f));
            }
            let t = tmp("garbage.pcap", &pcap(link, false, false, &recs));
            let (r, _, stats) = read(&t);
            r.unwrap();
            assert_eq!(stats.frames, 500);
            assert!(stats.malformed_frames > 0, "link {link}");
        }
        // Every truncation and every byte clobbered, of valid frames.
        let msg = response(6);
        let frames = [
            eth(&udp4(53, &msg)),
            eth(&udp6(53, &msg)),
            eth_tagged(&[(0x8100, 5)], &tcp4(53, &tcp_dns(&[&msg, &msg]))),
        ];
        for f in &frames {
            for n in 0..=f.len() {
                let _ = decode(1, &f[..n]);
                let _ = decode_frame_each(
                    DataLink::ETHERNET,
                    &f[..n],
                    Some(f.len() as u32),
                    UNIX_EPOCH,
                    &DEFAULT_PORTS,
                    |_| {},
                );
            }
            for i in 0..f.len() {
                for v in [0x00, 0xff, 0x80, 0x0f] {
                    let mut g = f.clone();
                    g[i] = v;
                    let _ = decode(1, &g);
                }
            }
        }
    }

    #[test]
    fn corrupt_and_truncated_files() {
        let good = pcap(1, false, false, &[rec(1, eth(&udp4(53, &response(1))))]);
        // A record header claiming 2 GB after one good record: keep what was read.
        let mut bad_rec = good.clone();
        bad_rec.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80, 0, 0, 0, 0x80]);
        bad_rec.extend_from_slice(&[0u8; 64]);
        let t = tmp("badrec.pcap", &bad_rec);
        let (r, out, stats) = read(&t);
        r.unwrap();
        assert_eq!((out.len(), stats.truncated_files), (1, 1));
        // The file ends mid-record.
        let mut cut = good.clone();
        cut.extend_from_slice(&good[24..good.len() - 10]);
        let t = tmp("cut.pcap.gz", &gz(&cut));
        let (r, out, stats) = read(&t);
        r.unwrap();
        assert_eq!((out.len(), stats.truncated_files), (1, 1));
        // Nothing readable at all.
        let t = tmp("nothing.pcap", &bad_rec[..24 + 16 + 4]);
        assert!(matches!(read(&t).0, Err(CapError::Corrupt { .. })));
        let t = tmp("header.pcap", &good[..10]);
        assert!(matches!(read(&t).0, Err(CapError::Corrupt { .. })));
        // pcapng: a block whose trailing length disagrees, after one good packet.
        let mut ng = Ng::new(false);
        ng.idb(1, 0, None);
        ng.epb(0, 1, &eth(&udp4(53, &response(2))));
        let mut bytes = ng.out.clone();
        let mut bad = Ng {
            out: Vec::new(),
            big: false,
        };
        bad.epb(0, 2, &eth(&udp4(53, &response(3))));
        let n = bad.out.len();
        bad.out[n - 4] ^= 0x40;
        bytes.extend_from_slice(&bad.out);
        let t = tmp("bad.pcapng", &bytes);
        let (r, out, stats) = read(&t);
        r.unwrap();
        assert_eq!((out.len(), stats.truncated_files), (1, 1));
        // A corrupt gzip stream.
        let mut z = gz(&good);
        let n = z.len();
        for b in &mut z[10..n - 8] {
            *b = !*b;
        }
        let t = tmp("bad.gz", &z);
        assert!(matches!(read(&t).0, Err(CapError::Corrupt { .. })));
    }

    #[test]
    fn not_a_capture() {
        for (name, bytes) in [
            ("text.pcap", b"hello, this is not a capture\n".to_vec()),
            ("empty.pcap", Vec::new()),
            ("ab.pcap", b"ab".to_vec()),
            ("text.gz", gz(b"not a capture either")),
        ] {
            let t = tmp(name, &bytes);
            assert!(
                matches!(read(&t).0, Err(CapError::NotACapture { .. })),
                "{name}"
            );
        }
        let mut stats = ReadStats::default();
        let missing = std::env::temp_dir().join("flux-capfile-does-not-exist.pcap");
        let e = read_file(&missing, &DEFAULT_PORTS, &mut stats, |_| {}).unwrap_err();
        assert!(matches!(e, CapError::Io { .. }));
        assert!(e.to_string().contains("flux-capfile-does-not-exist"));
    }

    #[test]
    fn pcapng_interfaces_blocks_and_timestamps() {
        let msg = response(8);
        let mut ng = Ng::new(false);
        ng.idb(1, 0, None); // 0: Ethernet, microseconds
        ng.idb(228, 0, Some(9)); // 1: raw IPv4, nanoseconds
        ng.idb(105, 0, None); // 2: 802.11, unsupported
        ng.idb(101, 0, Some(0x80 | 10)); // 3: raw IP, 1/1024 s
        ng.epb(0, 1_700_000_000_123_456, &eth(&udp4(53, &msg)));
        ng.block(4, &[0, 0, 0, 0]); // a Name Resolution Block: skipped
        ng.block(0x4000_0bad, &[1, 2, 3, 4, 5, 6, 7, 8]); // unknown: skipped
        ng.epb(1, 1_700_000_001_000_000_001, &udp4(53, &msg));
        ng.epb(2, 1, &[0u8; 40]);
        ng.epb(3, 1024 * 1_700_000_002 + 512, &udp6(53, &msg));
        ng.spb(&eth(&udp4(5355, &msg))); // interface 0, no timestamp
        ng.epb(7, 1, &eth(&udp4(53, &msg))); // no such interface
        // A second section, big-endian, with its own interfaces.
        let mut second = Ng::new(true);
        second.idb(113, 0, Some(3));
        let mut sll = Vec::new();
        PacketBuilder::linux_sll(LinuxSllPacketType::HOST, 6, [0; 8])
            .ipv4(SRC4, DST4, 64)
            .udp(53, 40000)
            .write(&mut sll, &msg)
            .unwrap();
        second.epb(0, 1_700_000_003_250, &sll);
        let bytes = [ng.out, second.out].concat();
        let t = tmp("multi.pcapng", &bytes);
        let (r, out, stats) = read(&t);
        r.unwrap();
        let ts: Vec<SystemTime> = out.iter().map(|d| d.ts).collect();
        assert_eq!(
            ts,
            [
                at(1_700_000_000, 123_456_000),
                at(1_700_000_001, 1),
                at(1_700_000_002, 500_000_000),
                at(1_700_000_002, 500_000_000), // the SPB: the last timestamp
                at(1_700_000_003, 250_000_000),
            ]
        );
        assert_eq!(out[3].sport, 5355);
        assert!(out.iter().all(|d| d.payload == msg));
        assert_eq!(stats.frames, 7);
        assert_eq!(stats.unsupported_link, 1);
        assert_eq!(stats.malformed_frames, 1);
        assert_eq!(stats.files, 1);
        // gzip-compressed pcapng too.
        let t = tmp("multi.pcapng.gz", &gz(&bytes));
        assert_eq!(read(&t).1, out);
    }

    #[test]
    fn custom_ports() {
        let f = eth(&udp4(8053, &response(1)));
        let t = tmp("ports.pcap", &pcap(1, false, false, &[rec(1, f.clone())]));
        let mut stats = ReadStats::default();
        let mut n = 0;
        read_file(&t.0, &[8053], &mut stats, |_| n += 1).unwrap();
        assert_eq!(n, 1);
        assert_eq!(decode(1, &f), Ok(None));
    }

    /// Throughput of `read_file` on a large synthetic file: run with
    /// `cargo test -p flux-agent --release --lib capfile -- --ignored --nocapture`.
    #[test]
    #[ignore = "a benchmark: run in release mode"]
    fn throughput() {
        const N: usize = 1_000_000;
        let frames = [
            eth(&udp4(53, &response(1))),
            eth_tagged(&[(0x8100, 10)], &udp6(53, &big_response(300))),
            eth(&tcp4(53, &tcp_dns(&[&response(2)]))),
            eth(&udp4(53, &big_response(120))),
        ];
        let mut v = pcap(1, false, false, &[]);
        for i in 0..N {
            let f = &frames[i % frames.len()];
            v.extend_from_slice(&(i as u32 / 1000).to_le_bytes());
            v.extend_from_slice(&(i as u32 % 1000).to_le_bytes());
            v.extend_from_slice(&(f.len() as u32).to_le_bytes());
            v.extend_from_slice(&(f.len() as u32).to_le_bytes());
            v.extend_from_slice(f);
        }
        for (name, bytes) in [("bench.pcap", v.clone()), ("bench.pcap.gz", gz(&v))] {
            let t = tmp(name, &bytes);
            let mut stats = ReadStats::default();
            let mut total = 0usize;
            let start = std::time::Instant::now();
            read_file(&t.0, &DEFAULT_PORTS, &mut stats, |d| {
                total += d.payload.len()
            })
            .unwrap();
            let secs = start.elapsed().as_secs_f64();
            assert_eq!(stats.dns_responses, N as u64);
            eprintln!(
                "{name}: {} MB, {N} frames in {secs:.3} s: {:.0} frames/s ({total} DNS bytes)",
                bytes.len() / 1_000_000,
                N as f64 / secs
            );
        }
    }
}
