//! The control socket (`flux_agent::control`): a client's request line as the agent reads it
//! (`parse_ask`: at most 4096 bytes, up to the first newline, valid UTF-8 or the connection
//! is dropped), the answer from a live scorer (`answer` for `explain`, the status report of
//! `pipeline::recent` for `{"status": true}`), and the reply line (`reply_line`), which the
//! client side (`parse_reply`, `parse_status`) must read back. The input is also given to
//! `parse_reply` and `parse_status` as if the agent had sent it.
//!
//! Checks: no panic; every reply is one JSON line; an explanation and a status report survive
//! the round trip.
#![no_main]

use std::{
    cell::RefCell,
    sync::Arc,
    time::{Duration, SystemTime},
};

use flux_agent::{
    control::{Ask, Reply, ResolverList, answer, parse_ask, parse_reply, parse_status, reply_line},
    pipeline::{flow::Counts, recent::Recent},
};
use flux_detect::{
    dns::{DnsFlags, DnsMessage, DnsRecord},
    enrich::Enricher,
    known_good::Allowlist,
    score::{Scorer, ScorerConfig},
};
use libfuzzer_sys::fuzz_target;

/// The agent's `MAX_REQUEST`.
const MAX_REQUEST: usize = 4096;

thread_local! {
    static SCORER: RefCell<Scorer> = RefCell::new(scorer_with_keys());
}

fuzz_target!(|data: &[u8]| {
    let _ = parse_reply(&String::from_utf8_lossy(data));
    let _ = parse_status(&String::from_utf8_lossy(data));
    let data = &data[..data.len().min(MAX_REQUEST)];
    let line = match data.iter().position(|&b| b == b'\n') {
        Some(i) => &data[..=i],
        None => data,
    };
    let Ok(line) = std::str::from_utf8(line) else {
        return;
    };
    let reply = match parse_ask(line) {
        Ok(Ask::Explain(req)) => Reply::Explanation(SCORER.with_borrow_mut(|s| answer(s, &req))),
        Ok(Ask::Status) => Reply::Status(Box::new(SCORER.with_borrow_mut(|s| {
            Recent::new().report(Some(s), &Counts::default(), SystemTime::now())
        }))),
        Ok(Ask::Resolvers) => Reply::Resolvers(ResolverList {
            resolvers: Vec::new(),
        }),
        Ok(Ask::State) => Reply::State(Default::default()),
        Err(refused) => refused,
    };
    let text = reply_line(&reply).expect("a reply serializes");
    assert_eq!(
        text.matches('\n').count(),
        1,
        "a reply over several lines: {text:?}"
    );
    let v: serde_json::Value = serde_json::from_str(&text).expect("the reply parses");
    match reply {
        Reply::Explanation(e) => {
            let back = parse_reply(&text).expect("the client reads the explanation");
            assert_eq!((back.name, back.key), (e.name, e.key));
        }
        Reply::Status(r) => {
            let back = parse_status(&text).expect("the client reads the status");
            assert_eq!(back, *r);
        }
        Reply::Error { error } => assert_eq!(v["error"], error),
        Reply::Resolvers(_) | Reply::State(_) => assert!(v.is_object()),
    }
});

/// A scorer that has seen a few names, so `answer` finds keys and re-scores them.
fn scorer_with_keys() -> Scorer {
    let mut s = Scorer::new(
        ScorerConfig::default(),
        Arc::new(Enricher::empty()),
        Arc::new(Allowlist::builtin()),
    );
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut out = Vec::new();
    for (i, name) in ["www.flux.example", "a.b.example.co.uk", "cdn.example.net"]
        .into_iter()
        .enumerate()
    {
        for round in 0..20u8 {
            let answers = (0..5u8)
                .map(|k| DnsRecord {
                    name: name.into(),
                    rtype: "A".into(),
                    rtype_code: 1,
                    ttl: 60,
                    target: None,
                    addr: Some([10 + round, k, i as u8, 1].into()),
                })
                .collect();
            let msg = DnsMessage {
                id: 1,
                qname: name.into(),
                qtype: "A".into(),
                rcode: flux_detect::dns::Rcode::NOERROR,
                flags: DnsFlags::default(),
                answers,
                authority: Vec::new(),
                additional: Vec::new(),
                edns_udp_size: None,
                incomplete: false,
            };
            s.observe(
                t0 + Duration::from_secs(u64::from(round) * 60),
                &msg,
                &mut out,
            );
        }
    }
    s
}
