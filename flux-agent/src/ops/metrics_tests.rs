//! Unit tests of the metrics (`metrics.rs`): events to counts, bounded labels, the latency
//! histogram's buckets, the feed and database families, the kernel counters' help text.

use std::{net::IpAddr, time::SystemTime};

use super::*;
use crate::{enforce::policy::ActionKind, pipeline::events::Observation};

/// A DNS response header with no question or records.
const RESPONSE: [u8; 12] = [0, 1, 0x81, 0x80, 0, 0, 0, 0, 0, 0, 0, 0];

fn dns(unsolicited: bool) -> Event {
    Event::Dns(Observation {
        ts: SystemTime::UNIX_EPOCH,
        iface: "eth0".into(),
        ifindex: 2,
        src: IpAddr::from([192, 0, 2, 53]),
        dst: IpAddr::from([192, 0, 2, 1]),
        sport: 53,
        dport: 40000,
        transport: Transport::Udp,
        vlan: Vec::new(),
        dns_len: 100,
        cap_len: 100,
        truncated: false,
        blocked: false,
        would_block: false,
        fragmented: false,
        unsolicited,
        msg: flux_detect::dns::parse_response(&RESPONSE, false).unwrap(),
    })
}

fn action(kind: ActionKind, action: Outcome, target_kind: Option<TargetKind>) -> Event {
    Event::from(Action {
        kind,
        ts: SystemTime::UNIX_EPOCH,
        domain: "flux.example".into(),
        action,
        target_kind,
        target: Some("192.0.2.7".into()),
        reason: String::new(),
    })
}

/// The value of the sample line `series` (name and labels as written) in `body`.
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

#[test]
fn events_become_counts_with_bounded_labels() {
    let m = Metrics::new();
    let mut sink = m.sink();
    for e in [
        dns(false),
        dns(false),
        dns(true),
        action(
            ActionKind::Block,
            Outcome::Blocked,
            Some(TargetKind::Domain),
        ),
        action(ActionKind::Block, Outcome::RateCapped, Some(TargetKind::Ip)),
        action(ActionKind::Guard, Outcome::Refused, Some(TargetKind::Ip)),
        action(ActionKind::Alert, Outcome::RateCapped, None),
    ] {
        sink.write(&e).unwrap();
    }
    let body = m.encode().unwrap();
    let s = |series| sample(&body, series);
    assert_eq!(
        s(r#"flux_dns_responses_total{transport="udp",solicited="yes"}"#),
        Some(2.0)
    );
    assert_eq!(
        s(r#"flux_dns_responses_total{transport="udp",solicited="no"}"#),
        Some(1.0)
    );
    assert_eq!(
        s(r#"flux_blocks_total{source="scorer",target_kind="domain",outcome="blocked"}"#),
        Some(1.0)
    );
    assert_eq!(s("flux_rate_cap_hits_total"), Some(1.0));
    assert_eq!(
        s(r#"flux_guard_refusals_total{target_kind="ip"}"#),
        Some(1.0)
    );
    assert_eq!(s("flux_alerts_total"), Some(1.0));
    assert!(
        body.contains("# TYPE flux_dns_responses_total counter\n"),
        "{body}"
    );
    assert!(body.contains(r#"flux_build_info{version=""#));
    // Never a domain or an address in a label.
    assert!(
        !body.contains("flux.example") && !body.contains("192.0.2."),
        "{body}"
    );
}

#[test]
fn latency_buckets_are_cumulative_and_end_at_the_count() {
    let m = Metrics::new();
    let s = m.scorer();
    s.observe(Duration::from_nanos(800));
    s.observe(Duration::from_micros(3));
    s.observe(Duration::from_micros(3));
    s.observe(Duration::from_secs(1));
    let body = m.encode().unwrap();
    let v = |series| sample(&body, series);
    assert_eq!(
        v(r#"flux_scorer_observe_seconds_bucket{le="1e-06"}"#),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        v(r#"flux_scorer_observe_seconds_bucket{le="5e-06"}"#),
        Some(3.0)
    );
    assert_eq!(
        v(r#"flux_scorer_observe_seconds_bucket{le="0.01"}"#),
        Some(3.0)
    );
    assert_eq!(
        v(r#"flux_scorer_observe_seconds_bucket{le="+Inf"}"#),
        Some(4.0)
    );
    assert_eq!(v("flux_scorer_observe_seconds_count"), Some(4.0));
    let sum = v("flux_scorer_observe_seconds_sum").unwrap();
    assert!((sum - 1.0000068).abs() < 1e-9, "{sum}");
}

#[test]
fn feeds_db_errors_and_sink_drops() {
    let m = Metrics::new();
    let f = m.feed("abuse-ch");
    f.set_entries(1234);
    f.refreshed(
        false,
        std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    );
    crate::enforce::record::note_failure(&flux_state::StateError::Invalid {
        path: "state.db".into(),
        what: "a test".into(),
    });
    m.add_sink_drops(vec![("events".into(), Arc::new(AtomicU64::new(7)))]);
    let body = m.encode().unwrap();
    let v = |series| sample(&body, series);
    assert_eq!(v(r#"flux_feed_entries{feed="abuse-ch"}"#), Some(1234.0));
    assert_eq!(
        v(r#"flux_feed_refreshes_total{feed="abuse-ch",result="error"}"#),
        Some(1.0)
    );
    assert_eq!(
        v(r#"flux_feed_last_refresh_success{feed="abuse-ch"}"#),
        Some(0.0)
    );
    assert_eq!(
        v(r#"flux_feed_last_refresh_timestamp_seconds{feed="abuse-ch"}"#),
        Some(1.7e9)
    );
    // Process-wide: other tests of this binary may have counted too.
    assert!(v(r#"flux_db_errors_total{kind="other"}"#).is_some_and(|n| n >= 1.0));
    assert!(v(r#"flux_db_errors_total{kind="full"}"#).is_some());
    assert_eq!(v(r#"flux_events_dropped_total{sink="events"}"#), Some(7.0));
    for name in REPORTED_ON_USE {
        assert!(
            body.contains(&format!("# TYPE {name} ")),
            "{name} missing:\n{body}"
        );
    }
    // A removed feed's series go away.
    m.forget_feed("abuse-ch");
    let after = m.encode().unwrap();
    assert!(!after.contains("abuse-ch"), "{after}");
}

#[test]
fn enum_labelled_series_exist_at_zero_and_the_rest_only_once_reported() {
    let body = Metrics::new().encode().unwrap();
    let v = |series| sample(&body, series);
    assert_eq!(
        v(r#"flux_dns_responses_total{transport="tcp",solicited="no"}"#),
        Some(0.0)
    );
    assert_eq!(v(r#"flux_verdicts_total{level="flux"}"#), Some(0.0));
    assert_eq!(
        v(r#"flux_blocks_total{source="scorer",target_kind="cidr",outcome="failed"}"#),
        Some(0.0)
    );
    assert_eq!(
        v(r#"flux_guard_refusals_total{target_kind="ip"}"#),
        Some(0.0)
    );
    for name in REPORTED_ON_USE {
        assert!(!body.contains(name), "{name} before any report:\n{body}");
    }
}

#[test]
fn every_kernel_counter_has_a_help_line() {
    for c in KernelCounter::ALL {
        let h = kernel_help(c);
        assert!(
            h.len() > " (kernel, all CPUs)".len() + 10,
            "{}: {h}",
            c.name()
        );
        assert!(!h.contains('\n'));
    }
}

#[test]
fn blocklist_gauges_are_reset_by_each_count() {
    let m = Metrics::new();
    let body = m.encode().unwrap();
    let series = r#"flux_blocklist_entries{source="manual",target_kind="ip"}"#;
    assert_eq!(sample(&body, series), Some(0.0));
    m.blocklist()
        .set(&vec![("manual", "ip", 3), ("unknown", "cidr", 1)]);
    let body = m.encode().unwrap();
    assert_eq!(sample(&body, series), Some(3.0));
    let unknown = r#"flux_blocklist_entries{source="unknown",target_kind="cidr"}"#;
    assert_eq!(sample(&body, unknown), Some(1.0));
    // The next count without them sets the known pair back to 0.
    m.blocklist().set(&Vec::new());
    assert_eq!(sample(&m.encode().unwrap(), series), Some(0.0));
}

#[test]
fn fleet_counters_are_scraped_once_the_fleet_starts() {
    use crate::fleet::{fleet_stats::inc, trust_list::Reject};
    let m = Metrics::new();
    assert!(!m.encode().unwrap().contains("flux_fleet_"));
    let s = Arc::new(FleetStats::default());
    m.add_fleet(Arc::clone(&s));
    s.connected.store(true, Ordering::Relaxed);
    s.backlog.store(7, Ordering::Relaxed);
    s.received_obs.store(40, Ordering::Relaxed);
    for c in [&s.published, &s.published, &s.published, &s.sent, &s.sent] {
        inc(c);
    }
    inc(&s.sent_duplicates);
    for _ in 0..5 {
        inc(&s.received);
    }
    inc(&s.received_verdicts);
    inc(&s.received_verdicts);
    inc(&s.enforced);
    inc(&s.reports_only);
    inc(&s.reports_only);
    inc(&s.fleet_verdicts);
    s.reject(Reject::Replay);
    s.reject(Reject::BadSignature);
    s.reject(Reject::BadSignature);
    let body = m.encode().unwrap();
    let v = |series: &str| sample(&body, series);
    assert_eq!(v("flux_fleet_connected"), Some(1.0));
    assert_eq!(v("flux_fleet_publish_backlog"), Some(7.0));
    assert_eq!(v("flux_fleet_messages_published_total"), Some(3.0));
    assert_eq!(
        v(r#"flux_fleet_messages_acknowledged_total{result="stored"}"#),
        Some(2.0)
    );
    assert_eq!(
        v(r#"flux_fleet_messages_acknowledged_total{result="duplicate"}"#),
        Some(1.0)
    );
    assert_eq!(
        v(r#"flux_fleet_messages_received_total{kind="obs"}"#),
        Some(3.0)
    );
    assert_eq!(
        v(r#"flux_fleet_messages_received_total{kind="verdict"}"#),
        Some(2.0)
    );
    assert_eq!(v("flux_fleet_observations_received_total"), Some(40.0));
    assert_eq!(
        v(r#"flux_fleet_messages_rejected_total{reason="replay"}"#),
        Some(1.0)
    );
    assert_eq!(
        v(r#"flux_fleet_messages_rejected_total{reason="bad_signature"}"#),
        Some(2.0)
    );
    // Every reason is there from the start, at 0.
    for r in Reject::ALL {
        let series = format!(
            r#"flux_fleet_messages_rejected_total{{reason="{}"}}"#,
            r.as_str()
        );
        assert!(v(&series).is_some(), "{series} missing:\n{body}");
    }
    assert_eq!(
        v(r#"flux_fleet_verdict_decisions_total{decision="enforced"}"#),
        Some(1.0)
    );
    assert_eq!(
        v(r#"flux_fleet_verdict_decisions_total{decision="reported"}"#),
        Some(2.0)
    );
    assert_eq!(v("flux_fleet_verdicts_total"), Some(1.0));
    assert_eq!(v("flux_fleet_duplicates_dropped_total"), Some(0.0));
    // Each family is described once (HELP and TYPE), whatever its series.
    for fam in [
        "flux_fleet_connected",
        "flux_fleet_messages_rejected_total",
        "flux_fleet_messages_acknowledged_total",
    ] {
        assert_eq!(
            body.matches(&format!("# TYPE {fam} ")).count(),
            1,
            "{fam}:\n{body}"
        );
    }
}
