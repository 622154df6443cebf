//! Drop throughput on a veth pair (`cargo xtask bench`): flux_xdp's blocked-address drop against
//! an nftables set holding the same blocklist, with the same trafgen traffic, in the same run.
//!
//! trafgen in the `server` namespace sends 60-byte UDP frames from random sources in
//! 10.200.0.0/16 over the veth pair; every source is in a 100,000-address blocklist. On the
//! `client` side either flux_xdp (native XDP on the veth) or an nftables `netdev` ingress chain
//! (the earliest nftables hook, a hash set of the same 100,000 addresses) drops them. Rounds
//! alternate between the two so that drift on a noisy machine hits both alike.
//!
//! On a veth pair the receive side runs in the sender's context, so the rate trafgen reaches is
//! what one CPU does sending and dropping: a cheaper drop shows as more packets per second.
//! A third case, the no-op XDP program in front of the same nftables drop, prices what veth
//! charges for running any XDP program on frames the stack sent (it copies each into an XDP
//! buffer with 256 bytes of headroom). `FLUX_BENCH_XDP_SKB=1` uses generic XDP instead.

use std::{io::Write as _, net::Ipv4Addr, process::Command, time::Instant};

use anyhow::{Context as _, bail, ensure};
use aya::{
    maps::PerCpuArray,
    programs::{Xdp, XdpMode},
};
use flux_agent::{
    enforce::maps::{Maps, Spec, Target},
    kernel::loader::{LoadOptions, load},
};
use flux_common::{Counter, MAP_COUNTERS, PROG_XDP, PROG_XDP_NOOP};
use flux_tests::{CLIENT_V4, Link, Netns, PinDir, TempDir};

/// Entries in both blocklists.
const BLOCKED: u32 = 100_000;
/// The first blocked address; trafgen's sources are the first 65,536 of them.
const FIRST: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 0);
const PACKETS: u64 = 2_000_000;
const ROUNDS: usize = 3;

fn main() -> anyhow::Result<()> {
    ensure!(
        flux_tests::privileged(),
        "the veth benchmark needs root (BPF, namespaces)"
    );
    for tool in ["trafgen", "nft"] {
        ensure!(
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()?
                .status
                .success(),
            "{tool} is missing; `cargo xtask setup` installs it"
        );
    }
    let link = Link::new();
    let dir = TempDir::new();
    let conf = dir.0.join("udp.trafgen");
    std::fs::write(&conf, trafgen_config(&link))?;
    nft_setup(&link.client, &dir)?;

    let pin = PinDir::new();
    let pin_dir = pin.0.clone();
    let client = link.client.path();
    let server_conf = conf.clone();
    let server = link.server.path();
    // XDP is attached from a thread inside the client namespace (the ifindex is looked up there).
    let rates = link
        .client
        .run_in(move || -> anyhow::Result<[Vec<f64>; 3]> {
            let mut loaded = load(&LoadOptions {
                pin_dir: pin_dir.clone(),
                ..Default::default()
            })?;
            let mut maps = Maps::open(&pin_dir)?;
            let start = Instant::now();
            for i in 0..BLOCKED {
                let ip = Ipv4Addr::from(u32::from(FIRST) + i);
                maps.block(&Target::Ip(ip.into()), &Spec::manual(None, "bench"))?;
            }
            eprintln!(
                "  ({BLOCKED} map entries written in {:.1?})",
                start.elapsed()
            );
            let ifindex = flux_agent::kernel::interfaces::Interface::by_name("a0")
                .context("a0 in the client namespace")?
                .index;
            {
                let noop: &mut Xdp = loaded
                    .ebpf
                    .program_mut(PROG_XDP_NOOP)
                    .context("no no-op program")?
                    .try_into()?;
                noop.load()?;
            }
            let mode = if std::env::var_os("FLUX_BENCH_XDP_SKB").is_some() {
                XdpMode::Skb
            } else {
                XdpMode::Driver
            };
            let mut rates: [Vec<f64>; 3] = Default::default();
            for round in 0..ROUNDS {
                for (case, xdp_prog) in [Some(PROG_XDP), None, Some(PROG_XDP_NOOP)]
                    .into_iter()
                    .enumerate()
                {
                    let attached = match xdp_prog {
                        Some(name) => {
                            let prog: &mut Xdp = loaded
                                .ebpf
                                .program_mut(name)
                                .with_context(|| format!("no {name}"))?
                                .try_into()?;
                            Some((name, prog.attach_to_if_index(ifindex, mode)?))
                        }
                        None => None,
                    };
                    let (xdp_before, nft_before) = (xdp_drops(&loaded.ebpf)?, nft_drops(&client)?);
                    let (sent, secs) = trafgen(&server, &server_conf)?;
                    let (by_xdp, by_nft) = (
                        xdp_drops(&loaded.ebpf)? - xdp_before,
                        nft_drops(&client)? - nft_before,
                    );
                    // Each frame must have been dropped by the filter under test, or the case
                    // measured something other than the drop.
                    let (who, dropped, other) = if xdp_prog == Some(PROG_XDP) {
                        ("flux_xdp", by_xdp, by_nft)
                    } else {
                        ("nftables", by_nft, by_xdp)
                    };
                    ensure!(
                        dropped >= sent * 99 / 100 && other == 0,
                        "{who}: {sent} frames sent, {dropped} dropped, {other} dropped elsewhere"
                    );
                    rates[case].push(dropped as f64 / secs);
                    if let Some((name, id)) = attached {
                        let prog: &mut Xdp = loaded
                            .ebpf
                            .program_mut(name)
                            .with_context(|| format!("no {name}"))?
                            .try_into()?;
                        prog.detach(id)?;
                    }
                }
                eprintln!(
                    "  round {}: flux_xdp {}, nftables {}, no-op XDP + nftables {}",
                    round + 1,
                    pps(rates[0][round]),
                    pps(rates[1][round]),
                    pps(rates[2][round]),
                );
            }
            drop(maps);
            loaded.unpin_maps();
            Ok(rates)
        })?;
    let [x, n, noop] = rates.map(|r| median(&r));
    println!(
        "veth drop throughput, {PACKETS} 60-byte UDP frames per round, {BLOCKED} blocked \
         addresses, median of {ROUNDS} rounds"
    );
    println!("{:<44} {:>12}", "flux_xdp (native XDP, hash map)", pps(x));
    println!(
        "{:<44} {:>12}",
        "nftables (netdev ingress, hash set)",
        pps(n)
    );
    println!("{:<44} {:>11.2}x", "ratio flux_xdp / nftables", x / n);
    println!(
        "{:<44} {:>12}",
        "no-op XDP program + nftables (veth XDP cost)",
        pps(noop)
    );
    Ok(())
}

/// The frame trafgen repeats: Ethernet to a0, IPv4 from a random 10.200.x.y to the client, UDP
/// to port 9 with 18 bytes of payload (60 bytes in all), IPv4 checksum computed per packet.
fn trafgen_config(link: &Link) -> String {
    let hex = |m: [u8; 6]| {
        m.iter()
            .map(|b| format!("0x{b:02x}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let dst = CLIENT_V4.replace('.', ", ");
    let [a, b, ..] = FIRST.octets();
    format!(
        "{{\n  {}, {},\n  0x08, 0x00,\n  0x45, 0x00, 0x00, 0x2e, 0x00, 0x00, 0x40, 0x00,\n  \
         0x40, 0x11, csumip(14, 33),\n  {a}, {b}, drnd(2),\n  {dst},\n  \
         0x9c, 0x40, 0x00, 0x09, 0x00, 0x1a, 0x00, 0x00,\n  fill(0x61, 18),\n}}\n",
        hex(link.client_mac("a0")),
        hex(link.server_mac("b0")),
    )
}

/// Sends [`PACKETS`] frames from b0 on one CPU; returns how many left and the seconds it took.
fn trafgen(server: &std::path::Path, conf: &std::path::Path) -> anyhow::Result<(u64, f64)> {
    // Ask rtnetlink through `ip`: nsenter keeps the host's /sys, where b0 is not visible.
    let tx = || -> anyhow::Result<u64> {
        let out = Command::new("nsenter")
            .arg(format!("--net={}", server.display()))
            .args(["--", "ip", "-s", "-j", "link", "show", "dev", "b0"])
            .output()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        v[0]["stats64"]["tx"]["packets"]
            .as_u64()
            .context("tx packets of b0")
    };
    let before = tx()?;
    let start = Instant::now();
    let out = Command::new("nsenter")
        .arg(format!("--net={}", server.display()))
        .args([
            "--", "taskset", "-c", "1", "trafgen", "--dev", "b0", "--conf",
        ])
        .arg(conf)
        .args([
            "--cpus",
            "1",
            "--num",
            &PACKETS.to_string(),
            "--no-sock-mem",
            "--notouch-irq",
            "--no-cpu-stats",
        ])
        .output()
        .context("run trafgen")?;
    let secs = start.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("trafgen failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok((tx()? - before, secs))
}

fn xdp_drops(ebpf: &aya::Ebpf) -> anyhow::Result<u64> {
    let map: PerCpuArray<_, u64> =
        PerCpuArray::try_from(ebpf.map(MAP_COUNTERS).context("COUNTERS")?)?;
    Ok(map.get(&(Counter::DropBlockedSrc as u32), 0)?.iter().sum())
}

/// The nftables baseline: the same 100,000 addresses in a hash set, matched on the source at
/// netdev ingress of a0.
fn nft_setup(client: &Netns, dir: &TempDir) -> anyhow::Result<()> {
    let path = dir.0.join("blocked.nft");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
    writeln!(
        f,
        "table netdev fluxbench {{\n  set blocked {{ type ipv4_addr; size {}; }}\n  \
         chain in {{ type filter hook ingress device \"a0\" priority -500; \
         ip saddr @blocked counter drop; }}\n}}",
        BLOCKED * 2
    )?;
    for chunk in (0..BLOCKED).collect::<Vec<_>>().chunks(10_000) {
        let list: Vec<String> = chunk
            .iter()
            .map(|i| Ipv4Addr::from(u32::from(FIRST) + i).to_string())
            .collect();
        writeln!(
            f,
            "add element netdev fluxbench blocked {{ {} }}",
            list.join(", ")
        )?;
    }
    drop(f);
    let out = client.exec(&["nft", "-f", path.to_str().context("utf-8 path")?]);
    ensure!(
        out.status.success(),
        "nft -f: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn nft_drops(client: &std::path::Path) -> anyhow::Result<u64> {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", client.display()))
        .args(["--", "nft", "list", "chain", "netdev", "fluxbench", "in"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split("counter packets ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no counter in: {text}"))
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

fn pps(r: f64) -> String {
    format!("{:.2} Mpps", r / 1e6)
}
