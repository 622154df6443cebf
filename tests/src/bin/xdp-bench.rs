//! XDP cost per packet with BPF_PROG_TEST_RUN (`cargo xtask bench`).
//!
//! The no-op program from the same object is measured in the same run as the baseline. DNS cases
//! run in batches that fit the ring buffer, draining it between batches, so every packet pays
//! for a real reserve + copy + submit instead of the cheaper ring-full path.

use std::time::Duration;

use aya::{
    TestRunOptions,
    maps::RingBuf,
    programs::{TestRun as _, Xdp},
};
use flux_agent::loader::{self, LoadOptions};
use flux_common::{MAP_EVENTS, PROG_XDP, PROG_XDP_NOOP, RING_BUF_BYTES};
use flux_tests::frames::{dns_response, udp4};

fn main() -> anyhow::Result<()> {
    let repeat: u32 = std::env::args()
        .skip_while(|a| a != "--repeat")
        .nth(1)
        .map(|r| r.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let pin = flux_tests::PinDir::new();
    let mut loaded = loader::load(&LoadOptions {
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
    let mut ring = RingBuf::try_from(
        loaded
            .ebpf
            .take_map(MAP_EVENTS)
            .ok_or_else(|| anyhow::anyhow!("no EVENTS"))?,
    )?;

    let non_dns = udp4(443, &[0u8; 64]);
    let dns200 = udp4(53, &dns_response(200 - 8 - 20 - 14));
    let dns1400 = udp4(53, &dns_response(1400 - 8 - 20 - 14));
    let cases: [(&str, &[u8]); 3] = [
        ("non-DNS UDP frame", &non_dns),
        ("200-byte DNS response frame", &dns200),
        ("1,400-byte DNS response frame", &dns1400),
    ];
    // Records per batch: half the ring, so a batch never sees it full.
    let batch = (RING_BUF_BYTES / 2048 / 2).min(repeat);

    println!("BPF_PROG_TEST_RUN, {repeat} repetitions per case, kernel-reported ns per packet");
    println!(
        "{:<32} {:>8} {:>14} {:>14}",
        "frame", "bytes", "flux_xdp", "no-op"
    );
    for (name, frame) in cases {
        let mut ns = [0f64; 2];
        for (i, prog_name) in [PROG_XDP, PROG_XDP_NOOP].iter().enumerate() {
            let prog: &mut Xdp = loaded
                .ebpf
                .program_mut(prog_name)
                .ok_or_else(|| anyhow::anyhow!("no {prog_name}"))?
                .try_into()?;
            let mut total = Duration::ZERO;
            let mut done = 0u32;
            while done < repeat {
                let n = batch.min(repeat - done);
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
                while ring.next().is_some() {}
            }
            ns[i] = total.as_nanos() as f64 / f64::from(repeat);
        }
        println!(
            "{name:<32} {:>8} {:>11.1} ns {:>11.1} ns",
            frame.len(),
            ns[0],
            ns[1]
        );
    }
    loaded.unpin_maps();
    Ok(())
}
