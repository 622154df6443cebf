//! Writes the fuzz corpora from the shared datasets, read at run time (nothing from them is kept
//! in the repository): `flux-fuzz-seed DATASETS CORPUS_DIR` (`cargo xtask fuzz --seed` runs it).
//!
//! Into `CORPUS_DIR/TARGET/`, one file per input named by a hash of its bytes (so seeding twice
//! adds nothing):
//! - `dns_parse`: the DNS responses of `pcaps/**` and a sample of `real-benign/home-resolver`;
//! - `capture_reader`: the capture files of `pcaps/**` up to 64 KiB, whole;
//! - `frame_decode`: frames of the pcap files (every DNS one, a sample of the rest), each behind
//!   the link-type byte `fuzz_targets/frame_decode.rs` reads;
//! - `event_json`: the DNS responses as ring-buffer records (header, then message);
//! - `scorer_feed`: each capture's responses in order as one input, and runs of the resolver's;
//! - `scorer_snapshot`: the snapshot body of a scorer fed each of those runs;
//! - `control_request`, `allowlist_text`: a few hand-written lines (no dataset has them);
//! - `config_parse`: the packaged `dist/flux-agent.toml` and a few hand-written files;
//! - `feed_parse`: pieces of the feed samples of `feeds/**` and hand-written ones
//!   (`feed_seeds.rs`).

mod feed_seeds;

use std::{
    collections::hash_map::DefaultHasher,
    fs::File,
    hash::{Hash as _, Hasher as _},
    io::{BufReader, Read},
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::SystemTime,
};

use anyhow::{Context as _, bail};
use flux_common::{
    AF_INET, AF_INET6, DNS_CAPTURE_MAX, DnsEventHeader, EVENT_FLAG_TRUNCATED, IPPROTO_TCP,
    IPPROTO_UDP,
};
use flux_detect::{
    capture_file::{CapturedDns, DEFAULT_PORTS, ReadStats, decode_frame, read_file},
    dns::{Transport, parse_response},
    enrich::Enricher,
    known_good::Allowlist,
    score::{Scorer, ScorerConfig},
};
use pcap_file::pcap::PcapReader;

/// Link types in the order `frame_decode` picks them by its first byte.
const LINKS: [u32; 10] = [1, 113, 276, 101, 12, 228, 229, 0, 108, 105];
/// DNS responses taken from the home resolver capture (every `RESOLVER_STRIDE`-th).
const RESOLVER_SAMPLE: usize = 3000;
const RESOLVER_STRIDE: usize = 20;
/// Whole capture files above this are left out of `capture_reader` (libFuzzer's `-max_len`).
const MAX_FILE: u64 = 64 * 1024;
/// Frames that are not DNS responses, kept per file for `frame_decode`.
const OTHER_FRAMES_PER_FILE: usize = 8;
/// Responses per `scorer_feed` input.
const FEED_RUN: usize = 64;

fn main() -> anyhow::Result<()> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [datasets, corpus] = args.as_slice() else {
        bail!("usage: flux-fuzz-seed DATASETS CORPUS_DIR");
    };
    let pcaps = datasets.join("pcaps");
    if !pcaps.is_dir() {
        bail!(
            "{} is not a folder: no datasets to seed from",
            pcaps.display()
        );
    }
    let mut out = Corpus::new(corpus)?;
    let mut files = Vec::new();
    walk(&pcaps, &mut files)?;
    files.sort();
    for file in &files {
        seed_file(file, &mut out);
    }
    let resolver = datasets.join("real-benign/home-resolver.pcap.gz");
    if resolver.is_file() {
        seed_resolver(&resolver, &mut out);
    }
    out.hand_written()?;
    let mut add_feed = |bytes: &[u8]| out.add("feed_parse", bytes);
    feed_seeds::from_datasets(&datasets.join("feeds"), &mut add_feed);
    feed_seeds::hand_written(&mut add_feed);
    out.report();
    Ok(())
}

/// Every capture file under `dir`.
fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            walk(&path, files)?;
        } else if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.contains(".pcap"))
        {
            files.push(path);
        }
    }
    Ok(())
}

fn seed_file(file: &Path, out: &mut Corpus) {
    if let Ok(meta) = std::fs::metadata(file)
        && meta.len() <= MAX_FILE
        && let Ok(bytes) = std::fs::read(file)
    {
        out.add("capture_reader", &bytes);
    }
    let mut responses = Vec::new();
    let mut stats = ReadStats::default();
    // A file the reader refuses still gave its whole bytes above.
    let _ = read_file(file, &DEFAULT_PORTS, &mut stats, |d| responses.push(d));
    out.responses(&responses);
    seed_frames(file, out);
}

/// The pcap (not pcapng) files' frames, behind `frame_decode`'s link-type byte.
fn seed_frames(file: &Path, out: &mut Corpus) {
    let Ok(f) = File::open(file) else { return };
    let mut head = [0u8; 2];
    let gz = File::open(file)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && head == [0x1f, 0x8b];
    let reader: Box<dyn Read> = if gz {
        Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(f)))
    } else {
        Box::new(BufReader::new(f))
    };
    let Ok(mut pcap) = PcapReader::new(reader) else {
        return;
    };
    let datalink = pcap.header().datalink;
    let linktype = u32::from(datalink);
    let Some(pick) = LINKS.iter().position(|&l| l == linktype) else {
        return;
    };
    let mut others = 0;
    while let Some(Ok(p)) = pcap.next_packet() {
        let dns = matches!(
            decode_frame(
                datalink,
                &p.data,
                SystemTime::UNIX_EPOCH,
                &[53, 5353, 5355, 8053]
            ),
            Ok(Some(_))
        );
        if !dns {
            if others >= OTHER_FRAMES_PER_FILE {
                continue;
            }
            others += 1;
        }
        let mut input = vec![pick as u8, 0];
        input.extend_from_slice(&p.data);
        out.add("frame_decode", &input);
    }
}

/// A sample of the home resolver's responses: every `RESOLVER_STRIDE`-th.
fn seed_resolver(file: &Path, out: &mut Corpus) {
    let mut responses = Vec::new();
    let mut seen = 0usize;
    let mut stats = ReadStats::default();
    let _ = read_file(file, &DEFAULT_PORTS, &mut stats, |d| {
        seen += 1;
        if seen % RESOLVER_STRIDE == 0 && responses.len() < RESOLVER_SAMPLE {
            responses.push(d);
        }
    });
    out.responses(&responses);
}

struct Corpus {
    root: PathBuf,
    written: std::collections::BTreeMap<&'static str, usize>,
}

impl Corpus {
    fn new(root: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(root).with_context(|| format!("create {}", root.display()))?;
        Ok(Self {
            root: root.to_owned(),
            written: Default::default(),
        })
    }

    /// Writes one input, named by its hash; an input already there is left alone.
    fn add(&mut self, target: &'static str, bytes: &[u8]) {
        let dir = self.root.join(target);
        let mut h = DefaultHasher::new();
        bytes.hash(&mut h);
        let path = dir.join(format!("seed-{:016x}", h.finish()));
        if path.exists() {
            return;
        }
        let wrote = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, bytes));
        match wrote {
            Ok(()) => *self.written.entry(target).or_default() += 1,
            Err(e) => eprintln!("flux-fuzz-seed: {}: {e}", path.display()),
        }
    }

    /// One capture's responses: each message, each as a ring-buffer record, and the run of them
    /// for the scorer.
    fn responses(&mut self, responses: &[CapturedDns]) {
        for d in responses {
            self.add("dns_parse", &d.payload);
            self.add("event_json", &record(d));
        }
        for run in responses.chunks(FEED_RUN) {
            let mut feed = Vec::new();
            let mut last = run.first().map(|d| d.ts);
            for d in run {
                let step = last
                    .and_then(|l| d.ts.duration_since(l).ok())
                    .map_or(0, |s| s.as_secs());
                last = Some(d.ts);
                feed.push(if step < 128 {
                    step as u8
                } else {
                    0x80 | (step / 60).min(127) as u8
                });
                let len = d.payload.len().min(usize::from(u16::MAX));
                feed.extend_from_slice(&(len as u16).to_be_bytes());
                feed.extend_from_slice(&d.payload[..len]);
            }
            self.add("scorer_feed", &feed);
            self.snapshot_of(run);
        }
    }

    /// The snapshot body (`Snapshot::body_bytes`, which the target frames) of a scorer fed one
    /// run of responses.
    fn snapshot_of(&mut self, run: &[CapturedDns]) {
        let mut scorer = Scorer::new(
            ScorerConfig::default(),
            Arc::new(Enricher::empty()),
            Arc::new(Allowlist::builtin()),
        );
        let mut out = Vec::new();
        for d in run {
            if let Ok(msg) = parse_response(&d.payload, false) {
                scorer.observe(d.ts, &msg, &mut out);
            }
        }
        if scorer.stats().keys_tracked == 0 {
            return;
        }
        match scorer.snapshot().body_bytes() {
            Ok(body) => self.add("scorer_snapshot", &body),
            Err(e) => eprintln!("flux-fuzz-seed: scorer snapshot: {e}"),
        }
    }

    fn hand_written(&mut self) -> anyhow::Result<()> {
        for line in [
            "{\"explain\":\"www.flux.example\"}\n",
            "{\"explain\":\"FLUX.EXAMPLE.\"}\n",
            "{\"explain\":\"a.b.example.co.uk\"}",
            "{\"explain\":\"\"}\n",
            "{\"explain\":\"\\u0000\\n\"}\n",
            "{\"name\":\"x\",\"key\":null,\"verdict\":null}\n",
            "{\"error\":\"no\"}\n",
        ] {
            self.add("control_request", line.as_bytes());
        }
        for text in [
            "example.com\n# comment\nAS13335\n192.0.2.0/24\n2001:db8::/32\n",
            "cdn.example.net. # trailing\n10.0.0.1\nas64500\n",
            "bad entry\n",
        ] {
            self.add("allowlist_text", text.as_bytes());
        }
        for text in [
            include_str!("../../../dist/flux-agent.toml"),
            "ifaces = [\"eth0\"]\nevents_max_size = 1048576\nblock_action = \"drop\"\n",
            "dns_ports = [\n  53,\n  5353,\n]\nmonitor = true\nevents_max_size = \"100M\"\n",
            "block_acton = \"drop\"\n",
            "max_keys = \"many\"\n",
        ] {
            self.add("config_parse", text.as_bytes());
        }
        Ok(())
    }

    fn report(&self) {
        for (target, n) in &self.written {
            eprintln!(
                "flux-fuzz-seed: {n} new inputs in {}",
                self.root.join(target).display()
            );
        }
    }
}

/// A response as the kernel's ring-buffer record would carry it.
fn record(d: &CapturedDns) -> Vec<u8> {
    let mut c = d.clone();
    c.cap_to(DNS_CAPTURE_MAX);
    let (family, src, dst) = match (c.src, c.dst) {
        (IpAddr::V4(s), IpAddr::V4(t)) => (AF_INET, pad(&s.octets()), pad(&t.octets())),
        (s, t) => (AF_INET6, v6(s), v6(t)),
    };
    let mut vlan_ids = [0u16; 2];
    for (slot, id) in vlan_ids.iter_mut().zip(&c.vlan) {
        *slot = *id;
    }
    let header = DnsEventHeader {
        ts_ns: 1,
        ifindex: 2,
        dns_len: d.payload.len().min(usize::from(u16::MAX)) as u16,
        cap_len: c.payload.len() as u16,
        src_addr: src,
        dst_addr: dst,
        src_port: c.sport,
        dst_port: c.dport,
        vlan_ids,
        family,
        transport: match c.transport {
            Transport::Udp => IPPROTO_UDP,
            Transport::Tcp => IPPROTO_TCP,
        },
        flags: if c.truncated { EVENT_FLAG_TRUNCATED } else { 0 },
        vlan_count: c.vlan.len().min(2) as u8,
        reserved: 0,
    };
    // SAFETY: DnsEventHeader is repr(C) with explicit padding (no uninitialised bytes): the
    // kernel writes it to the ring buffer the same way.
    let bytes = unsafe {
        std::slice::from_raw_parts(
            (&raw const header).cast::<u8>(),
            size_of::<DnsEventHeader>(),
        )
    };
    let mut rec = bytes.to_vec();
    rec.extend_from_slice(&c.payload);
    rec
}

fn pad(v4: &[u8; 4]) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..4].copy_from_slice(v4);
    a
}

fn v6(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}
