//! Kernel and userspace agree: every frame of every capture in `../shared/datasets/pcaps` (and
//! the first frames of `real-benign/home-resolver.pcap.gz`) goes through the real XDP program
//! (BPF_PROG_TEST_RUN, `flux_tests::xdp_harness`) and through the file reader
//! (`flux_detect::capture_file::decode_frame_each`), and the two must say the same thing:
//! - frame by frame: captured, or which counter moved vs which `FrameError` the reader gave
//!   (the mapping is `flux_detect::frame_spec::Outcome`);
//! - per DNS response: addresses, ports, transport, VLAN ids, the message bytes (cut at
//!   `DNS_CAPTURE_MAX`, as the ring buffer does), `dns_len`/`cap_len`, the truncated flag, the
//!   question name (parsed on both sides) and its `domain_hash`, and whether the kernel could
//!   walk the question;
//! - blocking: with the question name (then its parent) on the domain blocklist, the kernel
//!   sinkholes or drops the reply exactly when userspace says the name is blockable (one
//!   question, walkable without compression, not the root); the NXDOMAIN it writes decodes, in
//!   the reader, to the same question.
//!
//! Frames the kernel never sees as they are in the file (other link types: converted to
//! Ethernet first; frames BPF_PROG_TEST_RUN refuses) and the documented snaplen difference
//! (`flux_detect::frame_spec`) are reported apart, never counted as agreements or disagreements.
//!
//! Skips (prints a line, passes) without `../shared/datasets`; needs root and BPF, and fails
//! rather than skips in CI. `FLUX_AGREE_HOME_FRAMES` sets how many home-resolver frames are
//! used (default 20,000; 0 for all).

use std::{
    borrow::Cow,
    collections::BTreeMap,
    fs::File,
    io::{BufRead as _, BufReader, Read},
    path::{Path, PathBuf},
    time::UNIX_EPOCH,
};

use aya::maps::HashMap as AyaHashMap;
use flux_agent::{enforce::maps, kernel::ring_records::Capture};
use flux_common::{
    BlockEntry, Counter, DNS_CAPTURE_MAX, DOMAIN_TEXT_LEN, DomainBlock, EVENT_FLAG_BLOCKED,
    MAP_BLOCKED_DOMAINS, MAX_NAME_WIRE, SOURCE_MANUAL, domain_hash,
};
use flux_detect::{
    capture_file::{CapturedDns, DEFAULT_PORTS, FrameError, decode_frame, decode_frame_each},
    dns::{Transport, parse_response},
    frame_spec::Outcome,
};
use flux_tests::{
    privileged,
    xdp_harness::{Harness, Ran, XDP_DROP, XDP_PASS},
};
use pcap_file::{
    DataLink,
    pcap::PcapReader,
    pcapng::{Block, PcapNgReader},
};

const HOME_RESOLVER_FRAMES: usize = 20_000;
/// The linear buffer BPF_PROG_TEST_RUN (and a driver) gives an XDP program without
/// multi-buffer support: a page less the headroom (256) and `skb_shared_info` (320). The rest
/// of a longer test frame goes into fragments the program does not read.
const XDP_LINEAR_MAX: usize = 4096 - 256 - 320;
/// Examples kept per class for the failure message.
const EXAMPLES: usize = 4;

fn datasets() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets");
    p.join("pcaps").is_dir().then_some(p)
}

// ---- reading frames ---------------------------------------------------------------------------

/// Calls `f(linktype, frame, orig_len)` for up to `limit` frames of a pcap or pcapng file,
/// gzip-compressed or not. A file that breaks off is read up to there; the reason is returned.
fn each_frame(path: &Path, limit: usize, mut f: impl FnMut(u32, &[u8], u32)) -> Option<String> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) => return Some(format!("open: {e}")),
    };
    let mut buf = BufReader::new(file);
    let gz = buf.fill_buf().is_ok_and(|h| h.starts_with(&[0x1f, 0x8b]));
    let mut stream: Box<dyn Read> = if gz {
        Box::new(flate2::read::MultiGzDecoder::new(buf))
    } else {
        Box::new(buf)
    };
    let mut magic = [0u8; 4];
    if stream.read_exact(&mut magic).is_err() {
        return Some("shorter than a file header".into());
    }
    let stream = (&magic[..]).chain(stream);
    let mut n = 0usize;
    if u32::from_be_bytes(magic) == 0x0a0d_0d0a {
        let mut r = match PcapNgReader::new(stream) {
            Ok(r) => r,
            Err(e) => return Some(format!("pcapng header: {e}")),
        };
        while n < limit {
            let (iface, data, orig) = match r.next_block() {
                None => return None,
                Some(Err(e)) => return Some(format!("after {n} frames: {e}")),
                Some(Ok(Block::EnhancedPacket(p))) => {
                    (p.interface_id as usize, p.data.into_owned(), p.original_len)
                }
                Some(Ok(Block::Packet(p))) => (
                    usize::from(p.interface_id),
                    p.data.into_owned(),
                    p.original_len,
                ),
                Some(Ok(Block::SimplePacket(p))) => {
                    let keep = (p.original_len as usize).min(p.data.len());
                    (0, p.data[..keep].to_vec(), p.original_len)
                }
                Some(Ok(_)) => continue,
            };
            let Some(link) = r.interfaces().get(iface).map(|i| u32::from(i.linktype)) else {
                continue;
            };
            f(link, &data, orig);
            n += 1;
        }
    } else {
        let mut r = match PcapReader::new(stream) {
            Ok(r) => r,
            Err(e) => return Some(format!("pcap header: {e}")),
        };
        // The upper bits of the link-type field may carry FCS information.
        let link = u32::from(r.header().datalink) & 0xffff;
        while n < limit {
            match r.next_raw_packet() {
                None => return None,
                Some(Err(e)) => return Some(format!("after {n} frames: {e}")),
                Some(Ok(p)) => f(link, &p.data, p.orig_len),
            }
            n += 1;
        }
    }
    None
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// The frame as a NIC would hand it to XDP: Ethernet. `Err`: it cannot be converted (a link
/// type or family that carries no IP).
fn to_ethernet(link: u32, frame: &[u8]) -> Result<Cow<'_, [u8]>, &'static str> {
    let (ether_type, l3) = match link {
        1 => return Ok(Cow::Borrowed(frame)),
        113 if frame.len() >= 16 => (be16(frame, 14), &frame[16..]),
        276 if frame.len() >= 20 => (be16(frame, 0), &frame[20..]),
        101 | 12 | 228 | 229 => match frame.first().map(|b| b >> 4) {
            Some(4) => (0x0800, frame),
            Some(6) => (0x86dd, frame),
            _ => return Err("raw IP of no IP version"),
        },
        0 | 108 if frame.len() >= 4 => {
            let family = match u32::from_ne_bytes([frame[0], frame[1], frame[2], frame[3]]) {
                v if v > 0xffff => v.swap_bytes(),
                v => v,
            };
            match family {
                2 => (0x0800, &frame[4..]),
                10 | 24 | 28 | 30 => (0x86dd, &frame[4..]),
                _ => return Err("loopback frame of a non-IP family"),
            }
        }
        113 | 276 | 0 | 108 => return Err("shorter than its link header"),
        _ => return Err("link type not converted"),
    };
    let mut eth = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
    eth.extend_from_slice(&ether_type.to_be_bytes());
    eth.extend_from_slice(l3);
    Ok(Cow::Owned(eth))
}

/// Whether the IP header (behind at most two VLAN tags) claims more bytes than the frame holds:
/// a frame cut by the capture's snaplen.
fn ip_claims_more(f: &[u8]) -> bool {
    if f.len() < 14 {
        return false;
    }
    let (mut et, mut off) = (be16(f, 12), 14);
    for _ in 0..2 {
        if (et == 0x8100 || et == 0x88a8) && f.len() >= off + 4 {
            et = be16(f, off + 2);
            off += 4;
        }
    }
    match et {
        0x0800 if f.len() >= off + 4 => off + usize::from(be16(f, off + 2)) > f.len(),
        0x86dd if f.len() >= off + 6 => off + 40 + usize::from(be16(f, off + 4)) > f.len(),
        _ => false,
    }
}

/// VLAN tags in front of the network header, counted up to 8.
fn vlan_tags(f: &[u8]) -> usize {
    let mut n = 0;
    while n < 8 && f.len() >= 14 + 4 * n + 4 && matches!(be16(f, 12 + 4 * n), 0x8100 | 0x88a8) {
        n += 1;
    }
    n
}

/// The question name in wire form, walked by the kernel's rule (`xdp_verdict::forward`): one
/// question, labels of at most 63 bytes (so no compression pointer), the root's 0 within 255
/// bytes and within the message.
fn question_wire(msg: &[u8]) -> Option<&[u8]> {
    if msg.len() < 12 || be16(msg, 4) != 1 {
        return None;
    }
    let name = &msg[12..];
    let mut pos = 0;
    loop {
        let len = usize::from(*name.get(pos)?);
        if len == 0 {
            return (pos < MAX_NAME_WIRE).then(|| &name[..=pos]);
        }
        if len > 63 {
            return None;
        }
        pos += len + 1;
    }
}

// ---- the tally --------------------------------------------------------------------------------

#[derive(Default)]
struct Tally {
    frames: u64,
    /// Frames run through both sides.
    compared: u64,
    responses: u64,
    frame_agreements: u64,
    response_agreements: u64,
    /// Agreeing frames by outcome.
    outcomes: BTreeMap<String, u64>,
    /// Not run through the kernel, by reason.
    not_run: BTreeMap<String, u64>,
    /// Converted to Ethernet first, by link type.
    converted: BTreeMap<u32, u64>,
    /// Documented differences (frame_spec), by class.
    known: BTreeMap<String, u64>,
    /// Facts worth reporting that are neither agreement nor disagreement.
    notes: BTreeMap<String, u64>,
    disagree: BTreeMap<String, u64>,
    examples: BTreeMap<String, Vec<String>>,
    unreadable: Vec<String>,
    /// DNS responses the reader yielded, compared or not.
    reader_responses: u64,
    /// Frames read and responses compared, by dataset (`pcaps`, `real-benign`).
    by_set: BTreeMap<String, (u64, u64)>,
    /// The current frame in hex (FLUX_AGREE_HEX set), printed with each disagreement.
    hex: String,
    /// Blocking runs: names blocked, and how many the kernel judged as userspace did.
    block_runs: u64,
    block_agreements: u64,
}

impl Tally {
    fn disagree(&mut self, class: impl Into<String>, at: &str) {
        let class = class.into();
        if !self.hex.is_empty() {
            eprintln!("{class}: {}", self.hex);
        }
        *self.disagree.entry(class.clone()).or_default() += 1;
        let ex = self.examples.entry(class).or_default();
        if ex.len() < EXAMPLES {
            ex.push(at.to_owned());
        }
    }

    fn bump(map: &mut BTreeMap<String, u64>, class: impl Into<String>) {
        *map.entry(class.into()).or_default() += 1;
    }

    fn report(&self) -> String {
        let mut s = format!(
            "agree: {} frames read, {} run through both sides, {} agree ({} DNS responses \
             yielded by the reader, {} compared, {} agree; {} blocklist runs, {} agree)\n",
            self.frames,
            self.compared,
            self.frame_agreements,
            self.reader_responses,
            self.responses,
            self.response_agreements,
            self.block_runs,
            self.block_agreements
        );
        let mut section = |title: &str, m: &BTreeMap<String, u64>| {
            for (k, v) in m {
                s.push_str(&format!("agree: {title}: {k}: {v}\n"));
            }
        };
        section("outcome (both sides)", &self.outcomes);
        section("not run through the kernel", &self.not_run);
        section("known difference", &self.known);
        section("note", &self.notes);
        section("DISAGREEMENT", &self.disagree);
        for (k, (frames, responses)) in &self.by_set {
            s.push_str(&format!(
                "agree: {k}: {frames} frames, {responses} DNS responses compared\n"
            ));
        }
        for (k, v) in &self.converted {
            s.push_str(&format!(
                "agree: converted to Ethernet: link type {k}: {v}\n"
            ));
        }
        for u in &self.unreadable {
            s.push_str(&format!("agree: file ended early: {u}\n"));
        }
        s
    }
}

// ---- one frame --------------------------------------------------------------------------------

/// What the reader made of a frame.
struct ReaderSaw {
    msgs: Vec<CapturedDns>,
    err: Option<FrameError>,
}

impl ReaderSaw {
    /// In the spec's terms; `Err` for the reader's own outcomes (snaplen, link type).
    fn outcome(&self) -> Result<Outcome, FrameError> {
        if let Some(d) = self.msgs.first() {
            return Ok(Outcome::Captured {
                transport: d.transport,
                truncated: d.truncated,
                vlans: d.vlan.len(),
            });
        }
        match self.err {
            None => Ok(Outcome::NotOurs),
            Some(e) => Outcome::of_reader_error(e).ok_or(e),
        }
    }
}

/// The reader's outcome, in words.
fn show(r: Result<Outcome, FrameError>) -> String {
    match r {
        Ok(Outcome::Captured { truncated, .. }) => format!("captured (truncated: {truncated})"),
        Ok(o) => format!("{o:?}"),
        Err(e) => format!("{e:?}"),
    }
}

/// The kernel's outcome from the counters that moved.
fn kernel_outcome(ran: &Ran) -> Outcome {
    let moved = |c| ran.delta.iter().any(|(d, _)| *d == c);
    if moved(Counter::ResponsesCaptured) {
        let ev = ran.events.first();
        Outcome::Captured {
            transport: ev.map_or(Transport::Udp, Capture::transport),
            truncated: ev.is_some_and(Capture::truncated),
            vlans: ev.map_or(0, |e| e.vlans().len()),
        }
    } else if moved(Counter::Malformed) {
        Outcome::Malformed
    } else if moved(Counter::NonFirstFragments) {
        Outcome::NonFirstFragment
    } else if moved(Counter::TcpNotWholeMessage) {
        Outcome::TcpNotWholeMessage
    } else if moved(Counter::NotDnsResponse) {
        Outcome::NotDnsResponse
    } else if moved(Counter::Ipv6ExtTooDeep) {
        Outcome::Ipv6ExtTooDeep
    } else if moved(Counter::VlanTooDeep) {
        Outcome::VlanTooDeep
    } else {
        Outcome::NotOurs
    }
}

struct Checker {
    h: Harness,
    maps: maps::Maps,
    t: Tally,
}

impl Checker {
    fn frame(&mut self, link: u32, frame: &[u8], orig_len: u32, at: &str) {
        self.t.frames += 1;
        let mut msgs = Vec::new();
        let err = decode_frame_each(
            DataLink::from(link),
            frame,
            Some(orig_len),
            UNIX_EPOCH,
            &DEFAULT_PORTS,
            |d| msgs.push(d),
        )
        .err();
        self.t.reader_responses += msgs.len() as u64;
        let saw = ReaderSaw { msgs, err };
        let eth = match to_ethernet(link, frame) {
            Ok(eth) => eth,
            Err(why) => {
                Tally::bump(&mut self.t.not_run, why);
                return;
            }
        };
        if std::env::var_os("FLUX_AGREE_HEX").is_some() {
            let hex: String = eth.iter().map(|b| format!("{b:02x}")).collect();
            self.t.hex = format!(
                "{at}: orig_len {orig_len}, len {} (as Ethernet {}): {hex}",
                frame.len(),
                eth.len()
            );
        }
        if link != 1 {
            *self.t.converted.entry(link).or_default() += 1;
        }
        if eth.len() < 14 {
            Tally::bump(
                &mut self.t.not_run,
                "shorter than an Ethernet header (BPF_PROG_TEST_RUN refuses it; no NIC delivers it)",
            );
            return;
        }
        let ran = match self.h.try_run_out(&eth) {
            Ok(r) => r,
            Err(_) => {
                Tally::bump(
                    &mut self.t.not_run,
                    "BPF_PROG_TEST_RUN refuses the frame (larger than one page: an XDP \
                     program without multi-buffer never sees it)",
                );
                return;
            }
        };
        self.t.compared += 1;
        if vlan_tags(&eth) > 2 {
            Tally::bump(
                &mut self.t.notes,
                "more than two VLAN tags: not walked by either side (addresses never checked)",
            );
        }
        if ran.verdict != XDP_PASS
            || ran
                .events
                .iter()
                .any(|e| e.header.flags & EVENT_FLAG_BLOCKED != 0)
        {
            self.t.disagree("nothing blocked, yet not passed", at);
            return;
        }
        if ran.events.len() > 1 {
            self.t.disagree("more than one record for a frame", at);
            return;
        }
        let cut_in_file = orig_len as usize > frame.len();
        self.outcomes(&ran, saw, &eth, cut_in_file, at);
    }

    /// Compares what each side made of one frame; the responses both captured go on to
    /// [`Checker::response`].
    fn outcomes(&mut self, ran: &Ran, mut saw: ReaderSaw, eth: &[u8], cut_in_file: bool, at: &str) {
        let kernel = kernel_outcome(ran);
        let reader = saw.outcome();
        match (kernel, reader) {
            (Outcome::Captured { .. }, Ok(Outcome::Captured { .. })) => {
                self.t.responses += 1;
                if saw.msgs.len() > 1 {
                    Tally::bump(
                        &mut self.t.known,
                        "TCP segment with several messages: the reader yields each, the kernel \
                         the first (compared: the first)",
                    );
                }
                let ev = &ran.events[0];
                let first = saw.msgs.swap_remove(0);
                if self.response(ev, first, ran, eth, at) {
                    self.t.response_agreements += 1;
                    self.t.frame_agreements += 1;
                    Tally::bump(&mut self.t.outcomes, "captured");
                }
            }
            (Outcome::Malformed, Err(FrameError::SnaplenCut)) => Tally::bump(
                &mut self.t.known,
                "cut by the snaplen before the DNS header: kernel malformed, reader snaplen_cut",
            ),
            (Outcome::Malformed, r) if ip_claims_more(eth) => {
                let file = if cut_in_file {
                    "the file says cut"
                } else {
                    "the file says whole: the header lies"
                };
                Tally::bump(
                    &mut self.t.known,
                    format!(
                        "shorter than its IP header claims ({file}): kernel malformed, reader {}",
                        show(r)
                    ),
                )
            }
            (k, r) if eth.len() > XDP_LINEAR_MAX && Ok(k) != r => Tally::bump(
                &mut self.t.known,
                format!(
                    "larger than XDP's linear buffer ({XDP_LINEAR_MAX} bytes; a GRO-coalesced \
                     or jumbo capture no XDP program without multi-buffer sees): kernel {k:?}, \
                     reader {}",
                    show(r)
                ),
            ),
            (k, Ok(r)) if k == r => {
                self.t.frame_agreements += 1;
                Tally::bump(&mut self.t.outcomes, format!("{k:?}"));
            }
            (k, r) => {
                let r = show(r);
                self.t
                    .disagree(format!("outcome: kernel {k:?}, reader {r}"), at);
            }
        }
    }

    /// Compares one DNS response both sides captured, then the blocklist runs. `true` if all
    /// agree.
    fn response(
        &mut self,
        ev: &Capture,
        mut r: CapturedDns,
        ran: &Ran,
        eth: &[u8],
        at: &str,
    ) -> bool {
        let mut wrong: Vec<&str> = Vec::new();
        let whole = r.payload.clone();
        let reader_cut = r.truncated;
        r.cap_to(DNS_CAPTURE_MAX);
        let h = &ev.header;
        if ev.src() != r.src || ev.dst() != r.dst {
            wrong.push("addresses");
        }
        if (h.src_port, h.dst_port) != (r.sport, r.dport) {
            wrong.push("ports");
        }
        if ev.transport() != r.transport {
            wrong.push("transport");
        }
        if ev.vlans() != r.vlan {
            wrong.push("vlan ids");
        }
        if ev.data != r.payload {
            wrong.push("message bytes");
        }
        if usize::from(h.cap_len) != r.payload.len() {
            wrong.push("cap_len vs payload length");
        }
        let dns_len_ok = if reader_cut {
            usize::from(h.dns_len) > whole.len()
        } else {
            usize::from(h.dns_len) == whole.len()
        };
        if !dns_len_ok {
            wrong.push("dns_len");
        }
        if ev.truncated() != r.truncated {
            wrong.push("truncated flag");
        }
        let kq = parse_response(&ev.data, ev.truncated()).map(|m| m.qname);
        let rq = parse_response(&r.payload, r.truncated).map(|m| m.qname);
        if kq != rq {
            wrong.push("question name (parsed)");
        }
        let kw = question_wire(&ev.data);
        let rw = question_wire(&whole);
        if kw.map(domain_hash) != rw.map(domain_hash) {
            wrong.push("question name hash");
        }
        // The kernel walks the question in the packet; userspace's walk is `question_wire`.
        let unchecked = ran.delta.iter().any(|(c, _)| *c == Counter::QnameUnchecked);
        let one_question = whole.len() >= 12 && be16(&whole, 4) == 1;
        if unchecked != (one_question && rw.is_none()) {
            wrong.push("question walkable (qname_unchecked)");
        }
        // Userspace blocks a name by the hash of its normalized text: it must be the wire's.
        if let (Some(w), Ok(name)) = (rw, &rq)
            && maps::Target::domain(name).is_ok()
            && maps::domain_key(name) != Some(domain_hash(w))
        {
            wrong.push("hash of the parsed name vs of the wire name");
        }
        for w in &wrong {
            self.t.disagree(format!("response: {w}"), at);
        }
        let blocks_agree = self.block_runs(eth, &r, rw, rq.ok(), at);
        wrong.is_empty() && blocks_agree
    }

    /// Second runs with the name, then its parent, on the domain blocklist: blocked exactly when
    /// userspace says the name is blockable.
    fn block_runs(
        &mut self,
        eth: &[u8],
        r: &CapturedDns,
        wire: Option<&[u8]>,
        qname: Option<std::sync::Arc<str>>,
        at: &str,
    ) -> bool {
        let mut ok = true;
        match wire {
            Some([0]) => Tally::bump(&mut self.t.notes, "question is the root: never looked up"),
            Some(w) => {
                // The name, through the CLI's path when it takes the name, else by its hash.
                let via_maps = qname.as_deref().and_then(|q| maps::Target::domain(q).ok());
                ok &= self.blocked_run(eth, r, w, via_maps, true, at);
                let parent = &w[usize::from(w[0]) + 1..];
                if parent != [0] {
                    ok &= self.blocked_run(eth, r, parent, None, true, at);
                }
            }
            None => {
                // Not walkable in the kernel: a name userspace could still block must pass.
                if let Some(t) = qname.as_deref().and_then(|q| maps::Target::domain(q).ok()) {
                    Tally::bump(
                        &mut self.t.notes,
                        "question parsed but not walkable (compressed, or several): the \
                         kernel cannot block it",
                    );
                    let mut wire = [0u8; MAX_NAME_WIRE];
                    let n = flux_common::to_wire(&t.to_string(), &mut wire).unwrap_or(0);
                    ok &= self.blocked_run(eth, r, &wire[..n], Some(t), false, at);
                }
            }
        }
        ok
    }

    /// Blocks `wire` (through `enforce::maps` when `target` is given, else by its hash), runs
    /// the frame, checks the kernel blocks it iff `expect`, and unblocks.
    fn blocked_run(
        &mut self,
        eth: &[u8],
        r: &CapturedDns,
        wire: &[u8],
        target: Option<maps::Target>,
        expect: bool,
        at: &str,
    ) -> bool {
        let key = domain_hash(wire);
        match &target {
            Some(t) => {
                self.maps
                    .block(t, &maps::Spec::manual(None, "agree"))
                    .expect("block");
            }
            None => self
                .raw_domains()
                .insert(key, raw_block(), 0)
                .expect("insert"),
        }
        let ran = self.h.run_out(eth);
        match &target {
            Some(t) => {
                self.maps.unblock(t).expect("unblock");
            }
            None => self.raw_domains().remove(&key).expect("remove"),
        }
        self.t.block_runs += 1;
        let moved = |c| ran.delta.iter().any(|(d, _)| *d == c);
        let sinkholed = moved(Counter::SinkholedNxdomain);
        let dropped = moved(Counter::DropBlockedName);
        let flagged = ran
            .events
            .iter()
            .any(|e| e.header.flags & EVENT_FLAG_BLOCKED != 0);
        let blocked = sinkholed || dropped;
        let mut good = blocked == expect && flagged == expect;
        if !good {
            self.t.disagree(
                format!(
                    "blocklist: kernel blocked={blocked} flagged={flagged}, userspace says {expect}"
                ),
                at,
            );
        }
        if blocked && good {
            // UDP and whole: answered NXDOMAIN; TCP or a fragment cannot be cut: dropped.
            let cuttable = r.transport == Transport::Udp && !r.truncated;
            if sinkholed && ran.verdict == XDP_PASS {
                good &= self.check_nxdomain(&ran.out, r, at);
                Tally::bump(&mut self.t.notes, "blocked: answered NXDOMAIN");
            } else if dropped && ran.verdict == XDP_DROP {
                Tally::bump(
                    &mut self.t.notes,
                    if cuttable {
                        "blocked: dropped (the NXDOMAIN rewrite could not be made)"
                    } else {
                        "blocked: dropped (TCP, or a message not whole in the frame)"
                    },
                );
            } else {
                self.t
                    .disagree("blocklist: verdict does not match the counter", at);
                good = false;
            }
        }
        if good {
            self.t.block_agreements += 1;
        }
        good
    }

    /// The rewritten frame, read back by the file reader: an NXDOMAIN for the same question,
    /// between the same endpoints, with no records.
    fn check_nxdomain(&mut self, out: &[u8], r: &CapturedDns, at: &str) -> bool {
        let back = decode_frame(DataLink::ETHERNET, out, UNIX_EPOCH, &DEFAULT_PORTS);
        // The original may not parse (corrupt records); its question is compared as bytes.
        let good = match back {
            Ok(Some(d)) => {
                parse_response(&d.payload, false).is_ok_and(|m| {
                    m.rcode == flux_detect::dns::Rcode::NXDOMAIN
                        && m.answers.is_empty()
                        && m.authority.is_empty()
                        && m.additional.is_empty()
                }) && d.payload.get(..2) == r.payload.get(..2)
                    && question_wire(&d.payload).is_some()
                    && question_wire(&d.payload) == question_wire(&r.payload)
                    && (d.src, d.dst, d.sport, d.dport) == (r.src, r.dst, r.sport, r.dport)
            }
            _ => false,
        };
        if !good {
            self.t
                .disagree("blocklist: the NXDOMAIN written does not read back", at);
        }
        good
    }

    /// The domain blocklist written directly (by hash), with its occupancy slot set so that the
    /// kernel looks it up (`Maps`, which keeps the slot otherwise, is bypassed here).
    fn raw_domains(&mut self) -> AyaHashMap<&mut aya::maps::MapData, u64, DomainBlock> {
        self.h.mark_occupied(MAP_BLOCKED_DOMAINS);
        AyaHashMap::try_from(
            self.h
                .loaded
                .ebpf
                .map_mut(MAP_BLOCKED_DOMAINS)
                .expect("BLOCKED_DOMAINS"),
        )
        .expect("hash map")
    }
}

fn raw_block() -> DomainBlock {
    DomainBlock {
        entry: BlockEntry::new(SOURCE_MANUAL, 0),
        name: [0; DOMAIN_TEXT_LEN],
    }
}

#[test]
fn kernel_and_userspace_agree_on_every_captured_frame() {
    // Privilege first: in CI a missing BPF fails the test even where the datasets are absent.
    if !privileged() {
        return;
    }
    let Some(root) = datasets() else {
        eprintln!("SKIPPED: ../shared/datasets not present");
        return;
    };
    let mut h = Harness::new(&DEFAULT_PORTS);
    // The kernel walks a question name only while something needs it (a domain blocked, or
    // query matching): marked from the start, so that every frame's walk is compared, not only
    // those after the first block run.
    h.mark_occupied(MAP_BLOCKED_DOMAINS);
    let maps = h.maps();
    let mut c = Checker {
        h,
        maps,
        t: Tally::default(),
    };
    let home_limit = match std::env::var("FLUX_AGREE_HOME_FRAMES") {
        Ok(v) => match v.parse::<usize>() {
            Ok(0) => usize::MAX,
            Ok(n) => n,
            Err(_) => panic!("FLUX_AGREE_HOME_FRAMES={v}: not a number"),
        },
        Err(_) => HOME_RESOLVER_FRAMES,
    };
    let mut files: Vec<(PathBuf, usize)> = flux_tests::capture_files(&root.join("pcaps"))
        .into_iter()
        .map(|f| (f, usize::MAX))
        .collect();
    let home = root.join("real-benign/home-resolver.pcap.gz");
    if home.is_file() {
        files.push((home, home_limit));
    }
    for (path, limit) in &files {
        let name = path
            .strip_prefix(&root)
            .unwrap_or(path)
            .display()
            .to_string();
        let set = name.split('/').next().unwrap_or_default().to_owned();
        let (frames0, responses0) = (c.t.frames, c.t.responses);
        let mut i = 0u64;
        let end = each_frame(path, *limit, |link, frame, orig| {
            i += 1;
            c.frame(link, frame, orig, &format!("{name} frame {i}"));
        });
        let slot = c.t.by_set.entry(set).or_default();
        slot.0 += c.t.frames - frames0;
        slot.1 += c.t.responses - responses0;
        if let Some(why) = end {
            c.t.unreadable.push(format!("{name}: {why}"));
        }
    }
    let report = c.t.report();
    eprint!("{report}");
    let mut ex = String::new();
    for (class, list) in &c.t.examples {
        ex.push_str(&format!("{class}: {}\n", list.join("; ")));
    }
    assert!(
        c.t.disagree.is_empty(),
        "kernel and userspace disagree:\n{report}{ex}"
    );
    assert!(
        c.t.responses > 2000,
        "expected the datasets' ~2,000 responses and more, compared {}",
        c.t.responses
    );
}
