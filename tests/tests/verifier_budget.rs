//! The verifier's work on the programs the agent loads, on the real kernel: the instructions it
//! walked (`verified_insns` of `bpf_prog_info`) for `flux_xdp` and `flux_egress`, in every
//! configuration that changes which code the verifier walks (the `.rodata` settings it prunes
//! by: query matching off, marked or dropped; the block action; monitor mode; how many DNS
//! ports the port loop is bounded by), must stay within [`BUDGET`].
//!
//! Why a budget and not only "it loads": the kernel refuses a program past
//! [`COMPLEXITY_LIMIT`] instructions walked, and how many a program needs depends on the
//! verifier's pruning, which differs between kernels. A change that doubles the walk (one more
//! path through the parse, a helper's result live across a loop) still loads here and could
//! fail on the kernel an operator runs. The untagged IPv4 way (`front_door`) added a path
//! through the rest of stage one and took the walk from 270,192 instructions to 408,203 with
//! the defaults; this test makes the next such change show its cost. It prints every count, so
//! CI's log carries the figures.

use aya::programs::{SchedClassifier, Xdp};
use flux_agent::kernel::loader::{BlockAction, LoadOptions, QueryMatch};
use flux_common::{MAX_DNS_PORTS, PROG_EGRESS, PROG_XDP};
use flux_tests::{privileged, xdp_harness::Harness};

/// The kernel's limit on instructions walked for a privileged program
/// (`BPF_COMPLEXITY_LIMIT_INSNS`, since Linux 5.2).
const COMPLEXITY_LIMIT: u32 = 1_000_000;

/// A guard against growth, not a proven margin. On Linux 6.18 (2026-12-07) the worst
/// configuration walks 506,962 instructions (eight DNS ports with query matching; 408,203 with
/// the defaults), already past half the limit, the room a kernel whose verifier walks twice as
/// much would need. What older verifiers need is not known (no older kernel runs here).
/// 600,000 fails a change the size of the untagged IPv4 way (`front_door`, which took the
/// defaults from 270,192 to 408,203) before a second one reaches the limit.
const BUDGET: u32 = 600_000;
const _: () = assert!(BUDGET < COMPLEXITY_LIMIT);

/// Instructions the verifier walked for `name` in the loaded object.
fn walked(h: &Harness, name: &str) -> u32 {
    let prog = h
        .loaded
        .ebpf
        .program(name)
        .unwrap_or_else(|| panic!("{name}"));
    let info = match prog {
        aya::programs::Program::Xdp(p) => Xdp::info(p),
        aya::programs::Program::SchedClassifier(p) => SchedClassifier::info(p),
        _ => panic!("{name}: not an XDP or TC program"),
    }
    .unwrap_or_else(|e| panic!("{name}: bpf_prog_info: {e}"));
    info.verified_instruction_count()
        .unwrap_or_else(|| panic!("{name}: the kernel reports no verified_insns"))
}

#[test]
fn every_configuration_stays_within_the_verifier_budget() {
    if !privileged() {
        return;
    }
    // The most DNS ports an operator can give, each a different loop bound to the verifier.
    let all_ports: Vec<u16> = (0..MAX_DNS_PORTS as u16).map(|i| 53 + i).collect();
    let configs: [(&str, LoadOptions); 7] = [
        ("default", LoadOptions::default()),
        (
            "queries marked",
            LoadOptions {
                queries: QueryMatch::Mark,
                ..Default::default()
            },
        ),
        (
            "queries dropped, blocks dropped",
            LoadOptions {
                queries: QueryMatch::Drop,
                block_action: BlockAction::Drop,
                ..Default::default()
            },
        ),
        (
            "monitor",
            LoadOptions {
                monitor: true,
                queries: QueryMatch::Mark,
                ..Default::default()
            },
        ),
        (
            "every DNS port",
            LoadOptions {
                dns_ports: all_ports.clone(),
                ..Default::default()
            },
        ),
        (
            "every DNS port, queries marked",
            LoadOptions {
                dns_ports: all_ports,
                queries: QueryMatch::Mark,
                ..Default::default()
            },
        ),
        (
            "egress",
            LoadOptions {
                egress: true,
                ..Default::default()
            },
        ),
    ];
    let mut over = Vec::new();
    for (what, opts) in configs {
        // The TC program is loaded only where it is attached.
        let mut progs = vec![PROG_XDP];
        if opts.wants_egress() {
            progs.push(PROG_EGRESS);
        }
        let h = Harness::load(opts);
        for name in progs {
            let n = walked(&h, name);
            eprintln!("verifier: {name}, {what}: {n} instructions walked (budget {BUDGET})");
            if n > BUDGET {
                over.push(format!("{name}, {what}: {n}"));
            }
        }
    }
    assert!(
        over.is_empty(),
        "past the verifier budget of {BUDGET}: {over:?}"
    );
}
