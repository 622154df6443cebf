//! DNS responses from what a resolver or a sensor logged rather than from packets: Zeek's
//! `dns.log` (TSV or JSON) and dnstap (protobuf messages in Frame Streams). Each source yields
//! the same [`crate::dns::DnsMessage`] the wire parser makes, so the scorer and the enforcer
//! cannot tell them from captured packets.
//!
//! - [`zeek`]: `dns.log` rows to messages (answers and TTLs only: Zeek logs no authority or
//!   additional section);
//! - [`frame_streams`]: the Frame Streams container (data and control frames), sans-I/O, for
//!   the live socket and for files;
//! - [`dnstap`]: the dnstap protobuf, the response messages in it handed to the wire parser.
//!
//! [`sniff`] tells which kind of input a file is, by content. May touch: the bytes and files it
//! is given, nothing else.

pub mod dnstap;
pub mod frame_streams;
pub mod zeek;

use std::{
    fs::File,
    io::{self, BufRead, BufReader, Read},
    path::Path,
};

/// What an input file holds, by its first bytes (after gzip, if compressed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputKind {
    /// pcap or pcapng, or anything unrecognised (the capture reader then names the problem).
    Capture,
    /// Zeek `dns.log`, TSV (`#separator` header) or JSON (one object per line).
    Zeek,
    /// A dnstap file: unidirectional Frame Streams.
    Dnstap,
}

/// How many bytes [`sniff`] looks at: enough for a Frame Streams START frame with its content
/// type, and for Zeek's first header line.
const SNIFF_BYTES: usize = 64;

/// Tells the kind of `head`, the first bytes of a (decompressed) file.
pub fn kind_of(head: &[u8]) -> InputKind {
    if head.starts_with(b"#separator") || head.starts_with(b"{") {
        InputKind::Zeek
    } else if frame_streams::is_stream_start(head) {
        InputKind::Dnstap
    } else {
        InputKind::Capture
    }
}

/// Opens `path`, gzip-compressed or not (by its magic bytes), as a buffered stream.
pub fn open(path: &Path) -> io::Result<Box<dyn BufRead>> {
    let mut buf = BufReader::with_capacity(256 * 1024, File::open(path)?);
    let gz = buf.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    Ok(if gz {
        Box::new(BufReader::with_capacity(
            256 * 1024,
            flate2::read::MultiGzDecoder::new(buf),
        ))
    } else {
        Box::new(buf)
    })
}

/// The kind of the file at `path`, by content ([`kind_of`]).
pub fn sniff(path: &Path) -> io::Result<InputKind> {
    let mut r = open(path)?;
    let mut head = [0u8; SNIFF_BYTES];
    let mut n = 0;
    while n < head.len() {
        let Some(rest) = head.get_mut(n..) else { break };
        match r.read(rest) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // A gzip stream broken early: let the reader that follows report it.
            Err(_) => break,
        }
    }
    Ok(kind_of(head.get(..n).unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_by_content() {
        assert_eq!(
            kind_of(b"#separator \\x09\n#set_separator\t,"),
            InputKind::Zeek
        );
        assert_eq!(kind_of(b"{\"ts\":1.5,\"query\":\"a\"}"), InputKind::Zeek);
        assert_eq!(kind_of(&[0xd4, 0xc3, 0xb2, 0xa1]), InputKind::Capture);
        assert_eq!(kind_of(b""), InputKind::Capture);
        let start = frame_streams::control_frame(
            frame_streams::ControlKind::Start,
            &[dnstap::CONTENT_TYPE],
        );
        assert_eq!(kind_of(&start), InputKind::Dnstap);
    }
}
