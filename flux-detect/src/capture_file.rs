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
//! Files are streamed (pcap-file's readers over a buffered reader), never loaded whole. The
//! per-frame path allocates nothing: [`read_file_each`] lends each message where it lies in the
//! reader's buffer ([`CapturedRef`]); [`read_file`] copies it into a [`CapturedDns`].
//!
//! Layout: this file holds the public API (records, counters, errors, entry points);
//! `capture_file/capture_formats.rs` the pcap and pcapng containers, `capture_file/frame_walk.rs`
//! the frame walk, `capture_file/capture_file_tests.rs` the unit tests. May touch: the files it
//! is told to read, nothing else.

#[cfg(test)]
mod capture_file_tests;
mod capture_formats;
mod frame_walk;

use std::{
    fs::File,
    io::{self, BufRead, BufReader, Read},
    net::IpAddr,
    path::{Path, PathBuf},
    time::SystemTime,
};

use bytes::Bytes;
use flux_common::{MAX_IPV6_EXT_HEADERS, MAX_VLAN_TAGS};
use pcap_file::DataLink;
use serde::Serialize;

use crate::dns::Transport;
use capture_formats::{FileReader, read_up_to, stream_error};
use frame_walk::{Link, Skip, decode};

/// The source ports `replay` treats as DNS unless told otherwise: DNS, mDNS and LLMNR
/// ([`flux_common::DEFAULT_DNS_PORTS`], the kernel's default too).
pub use flux_common::DEFAULT_DNS_PORTS as DEFAULT_PORTS;

/// One DNS response found in a capture file, its VLAN ids held as `V` and its message as `P`:
/// owned ([`CapturedDns`]) or lent from the reader's buffer ([`CapturedRef`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Captured<V, P> {
    /// The packet's timestamp from the file.
    pub ts: SystemTime,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub transport: Transport,
    /// VLAN ids (12 bits), outermost first.
    pub vlan: V,
    /// The DNS message (TCP: one whole message, without its 2-byte length prefix).
    pub payload: P,
    /// The frame holds less of the message than its headers claim (snaplen), or it is the first
    /// fragment of a fragmented IP datagram.
    pub truncated: bool,
}

/// A response with its own copy of the message, to keep ([`read_file`]).
pub type CapturedDns = Captured<Vec<u16>, Bytes>;

/// A response lent where it lies in the reader's buffer, for readers that parse it and let it
/// go ([`read_file_each`]): replay's per-response copy of the message, an allocation and a
/// `memcpy` the parser then read again, was 4% of a replay.
pub type CapturedRef<'a> = Captured<&'a [u16], &'a [u8]>;

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

impl CapturedRef<'_> {
    /// An owned copy, to keep past the callback.
    pub fn to_captured(&self) -> CapturedDns {
        CapturedDns {
            ts: self.ts,
            src: self.src,
            dst: self.dst,
            sport: self.sport,
            dport: self.dport,
            transport: self.transport,
            vlan: self.vlan.to_vec(),
            payload: Bytes::copy_from_slice(self.payload),
            truncated: self.truncated,
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
    /// Frames with more VLAN tags than the kernel captures.
    pub vlan_too_deep: u64,
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
            FrameError::VlanTooDeep => &mut self.vlan_too_deep,
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
    #[error("more than {MAX_VLAN_TAGS} VLAN tags")]
    VlanTooDeep,
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
    mut f: impl FnMut(CapturedDns),
) -> Result<(), CapError> {
    read_file_each(path, ports, stats, |r| f(r.to_captured()))
}

/// [`read_file`], each response lent ([`CapturedRef`]) rather than copied: for a reader that
/// is done with it when the callback returns.
pub fn read_file_each(
    path: &Path,
    ports: &[u16],
    stats: &mut ReadStats,
    f: impl FnMut(CapturedRef<'_>),
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
        read_reader_each(
            flate2::read::MultiGzDecoder::new(buf),
            path,
            ports,
            stats,
            f,
        )
    } else {
        read_reader_each(buf, path, ports, stats, f)
    }
}

/// [`read_file`] for an already opened, uncompressed stream; `name` is used in errors only.
pub fn read_reader<R: Read>(
    reader: R,
    name: &Path,
    ports: &[u16],
    stats: &mut ReadStats,
    mut f: impl FnMut(CapturedDns),
) -> Result<(), CapError> {
    read_reader_each(reader, name, ports, stats, |r| f(r.to_captured()))
}

/// [`read_reader`], each response lent ([`CapturedRef`]).
pub fn read_reader_each<R: Read>(
    mut reader: R,
    name: &Path,
    ports: &[u16],
    stats: &mut ReadStats,
    mut f: impl FnMut(CapturedRef<'_>),
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
    let mut owned = |r: CapturedRef<'_>| f(r.to_captured());
    match decode(link, frame, known_cut, ts, ports, &mut owned) {
        Ok(()) | Err(Skip::NotOurs) => Ok(()),
        Err(Skip::Frame(e)) => Err(e),
    }
}
