//! XDP cost per packet with BPF_PROG_TEST_RUN (`cargo xtask bench`).
//!
//! The no-op program from the same object is measured in the same run as the baseline. DNS cases
//! run in batches that fit the ring buffer, draining it between batches, so every packet pays
//! for a real reserve + copy + submit instead of the cheaper ring-full path. Cases: pass, the
//! NXDOMAIN rewrite, and a blocked-address drop with 100,000 and 1,000,000 map entries.

use std::time::Duration;

use std::{net::Ipv4Addr, time::Instant};

use aya::{
    TestRunOptions,
    maps::{MapData, RingBuf},
    programs::{TestRun as _, Xdp},
};
use flux_agent::{
    enforce::maps::{Maps, Spec, Target},
    kernel::loader::{LoadOptions, Loaded},
};
use flux_common::{MAX_BLOCKED_IPS, PROG_XDP, PROG_XDP_NOOP, RING_BUF_BYTES};
use flux_tests::frames::{SRC4, dns_response, udp4};

fn main() -> anyhow::Result<()> {
    let repeat: u32 = std::env::args()
        .skip_while(|a| a != "--repeat")
        .nth(1)
        .map(|r| r.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let pin = flux_tests::PinDir::new();
    let (mut loaded, mut ring) = flux_tests::load_with_ring(LoadOptions {
        pin_dir: pin.0.clone(),
        ..Default::default()
    })?;
    {
        let noop: &mut Xdp = loaded
            .ebpf
            .program_mut(PROG_XDP_NOOP)
            .ok_or_else(|| anyhow::anyhow!("no {PROG_XDP_NOOP}"))?
            .try_into()?;
        noop.load()?;
    }

    let non_dns = udp4(443, &[0u8; 64]);
    let dns200 = udp4(53, &dns_response(200 - 8 - 20 - 14));
    let dns1400 = udp4(53, &dns_response(1400 - 8 - 20 - 14));
    let mut bench = Bench {
        loaded: &mut loaded,
        ring: &mut ring,
        repeat,
    };

    println!("BPF_PROG_TEST_RUN, {repeat} repetitions per case, kernel-reported ns per packet");
    println!(
        "{:<48} {:>6} {:>11} {:>11}",
        "case", "bytes", "flux_xdp", "no-op"
    );
    for (name, frame) in [
        ("pass: non-DNS UDP", &non_dns),
        ("pass: 200-byte DNS response", &dns200),
        ("pass: 1,400-byte DNS response", &dns1400),
    ] {
        bench.case(name, frame)?;
    }

    // The question name of the test responses (x.test) blocked: answered NXDOMAIN in place.
    // Repetitions after the first see the frame already cut after its question, so they measure
    // the name walk, the header edits and the checksum, not the tail move.
    let pin_dir = bench.loaded.pin_dir.clone();
    let mut maps = Maps::open(&pin_dir)?;
    let x = Target::domain("x.test")?;
    maps.block(&x, &Spec::manual(None, "bench"))?;
    bench.case("NXDOMAIN rewrite: 200-byte response", &dns200)?;
    bench.case("NXDOMAIN rewrite: 1,400-byte response", &dns1400)?;
    maps.unblock(&x)?;

    // Blocked source address, with the exact-address map holding 100,000 and then 1,000,000
    // entries; the pass case beside it pays the same two lookups, missing.
    let src = Ipv4Addr::from(SRC4);
    let mut filled = 0u32;
    for (label, n) in [("100,000", 100_000u32), ("1,000,000", MAX_BLOCKED_IPS)] {
        let start = Instant::now();
        while filled < n - 1 {
            // Addresses from 10.0.0.0 up: never the frame's own.
            let ip = Ipv4Addr::from(0x0a00_0000 + filled);
            maps.block(&Target::Ip(ip.into()), &Spec::manual(None, "bench"))?;
            filled += 1;
        }
        maps.block(&Target::Ip(src.into()), &Spec::manual(None, "bench"))?;
        eprintln!("  ({n} entries written in {:.1?})", start.elapsed());
        bench.case(&format!("blocked-IP drop, {label} entries"), &dns200)?;
        maps.unblock(&Target::Ip(src.into()))?;
        bench.case(&format!("pass, {label} entries (miss)"), &dns200)?;
    }
    drop(maps);
    loaded.unpin_maps();
    Ok(())
}

struct Bench<'a> {
    loaded: &'a mut Loaded,
    ring: &'a mut RingBuf<MapData>,
    repeat: u32,
}

impl Bench<'_> {
    /// Prints one row: `frame` through flux_xdp and through the no-op program.
    fn case(&mut self, name: &str, frame: &[u8]) -> anyhow::Result<()> {
        // Records per batch: half the ring, so a batch never sees it full.
        let batch = (RING_BUF_BYTES / 2048 / 2).min(self.repeat);
        let mut ns = [0f64; 2];
        for (i, prog_name) in [PROG_XDP, PROG_XDP_NOOP].iter().enumerate() {
            let prog: &mut Xdp = self
                .loaded
                .ebpf
                .program_mut(prog_name)
                .ok_or_else(|| anyhow::anyhow!("no {prog_name}"))?
                .try_into()?;
            let mut total = Duration::ZERO;
            let mut done = 0u32;
            while done < self.repeat {
                let n = batch.min(self.repeat - done);
                let mut out = vec![0u8; frame.len() + 256];
                let r = prog.test_run(TestRunOptions {
                    data_in: Some(frame),
                    data_out: Some(&mut out),
                    repeat: n,
                    ..TestRunOptions::default()
                })?;
                // duration is the per-repetition average.
                total += r.duration * n;
                done += n;
                while self.ring.next().is_some() {}
            }
            ns[i] = total.as_nanos() as f64 / f64::from(self.repeat);
        }
        println!(
            "{name:<48} {:>6} {:>8.1} ns {:>8.1} ns",
            frame.len(),
            ns[0],
            ns[1]
        );
        Ok(())
    }
}
