//! The fleet detects sooner together (issue 17): three agents in three namespaces, each with
//! its own dnsmasq serving the rotating flux zone to it alone, one lookup per agent per TTL,
//! over a real nats-server with JetStream. No agent's own scorer reaches `flux` in the test's
//! time; the fleet scorer does, names the three agents, and every agent enforces the block.
//! A lone agent (no fleet) doing the same lookups shows how much later it gets there.
//! Afterwards each agent's `explain --json` names the agents whose evidence made the fleet
//! verdict and says it was enforced, and its metrics endpoint shows the fleet's traffic.

use std::time::{Duration, Instant};

use flux_tests::{
    nats_lab::{FLUX_TTL_SECS, FleetMember, METRICS_ADDR, NatsLab, wait_until},
    privileged,
};
use serde_json::Value;

const TTL: Duration = Duration::from_secs(FLUX_TTL_SECS);

fn is_fleet_verdict(e: &Value) -> bool {
    e["type"] == "verdict"
        && e["reasons"]
            .as_array()
            .is_some_and(|r| r.iter().any(|x| x["feature"] == "fleet"))
}

fn flux_verdicts(m: &FleetMember, fleet: bool) -> Vec<Value> {
    m.agent
        .events()
        .into_iter()
        .filter(|e| e["type"] == "verdict" && e["level"] == "flux" && is_fleet_verdict(e) == fleet)
        .collect()
}

#[test]
fn three_agents_detect_together_what_none_sees_alone() {
    if !privileged() {
        return;
    }
    let lab = NatsLab::start(&["a1", "a2", "a3"]);
    let members: Vec<FleetMember> = ["a1", "a2", "a3"]
        .iter()
        .map(|id| FleetMember::start(&lab, id, &["--metrics", METRICS_ADDR]))
        .collect();
    for m in &members {
        wait_until(
            &format!("{} connected", m.id),
            Duration::from_secs(30),
            || m.fleet_stats()["connected"] == true,
            || m.agent.log(),
        );
    }
    // A lone agent, same zone, same lookups, no fleet.
    let lone = FleetMember::start_with(&lab, "a1", &[], false);

    // TTL 1: one lookup each, each agent seeing its own five addresses.
    let t0 = Instant::now();
    for (i, m) in members.iter().enumerate() {
        m.lookup(i as u32);
    }
    lone.lookup(0);
    for m in &members {
        wait_until(
            &format!("a fleet flux verdict on {}", m.id),
            Duration::from_secs(20),
            || !flux_verdicts(m, true).is_empty(),
            || format!("{:#?}\n{}", m.agent.events(), m.agent.log()),
        );
    }
    let fleet_flux = t0.elapsed();
    // It names the three agents whose evidence made it.
    let v = &flux_verdicts(&members[0], true)[0];
    for id in ["a1", "a2", "a3"] {
        let label = format!("fleet_agent:{id}");
        assert!(
            v["reasons"]
                .as_array()
                .is_some_and(|r| r.iter().any(|x| x["feature"] == label.as_str())),
            "{id} not named: {v}"
        );
    }
    flux_tests::events_schema::assert_events_match_schema(&members[0].agent.events());

    // TTL 2: the second lookup each; the fleet's fourth answer passes the block gate, and the
    // fleet quorum holds (two other agents) on every agent.
    std::thread::sleep(TTL.saturating_sub(t0.elapsed()));
    for (i, m) in members.iter().enumerate() {
        m.lookup(3 + i as u32);
    }
    lone.lookup(1);
    for m in &members {
        wait_until(
            &format!("the fleet block on {}", m.id),
            Duration::from_secs(20),
            || m.blocked(),
            || format!("{:#?}\n{}", m.agent.events(), m.agent.log()),
        );
        assert!(
            m.agent.events().iter().any(|e| e["type"] == "block"
                && e["action"] == "blocked"
                && e["target_kind"] == "domain"),
            "{}: no block event",
            m.id
        );
    }
    let fleet_block = t0.elapsed();
    // No agent's own scorer reached flux: two answers each.
    for m in &members {
        assert!(
            flux_verdicts(m, false).is_empty(),
            "{} reached flux alone: {:#?}",
            m.id,
            flux_verdicts(m, false)
        );
    }
    assert!(
        flux_verdicts(&lone, false).is_empty(),
        "the lone agent is not flux yet"
    );
    assert!(!lone.blocked());

    // The lone agent goes on, one lookup per TTL, until it gets there alone.
    let mut lookups = 2u32;
    let lone_flux = loop {
        std::thread::sleep(TTL);
        lone.lookup(lookups);
        lookups += 1;
        if !flux_verdicts(&lone, false).is_empty() {
            break t0.elapsed();
        }
        assert!(
            lookups < 12,
            "the lone agent never reached flux: {}",
            lone.agent.log()
        );
    };
    let mut lone_block = None;
    for _ in 0..6 {
        if lone.blocked() {
            lone_block = Some(t0.elapsed());
            break;
        }
        std::thread::sleep(TTL);
        lone.lookup(lookups);
        lookups += 1;
    }
    println!(
        "FIGURES fleet: flux after {:.1}s (1 lookup per agent), blocked on all 3 after {:.1}s \
         (2 lookups per agent); lone agent: flux after {:.1}s ({} lookups), blocked after {:?}; \
         TTL {}s",
        fleet_flux.as_secs_f64(),
        fleet_block.as_secs_f64(),
        lone_flux.as_secs_f64(),
        lookups,
        lone_block.map(|d| format!("{:.1}s", d.as_secs_f64())),
        FLUX_TTL_SECS
    );
    assert!(lone_flux > fleet_flux + TTL, "the fleet was not sooner");
    for m in &members {
        let s = m.fleet_stats();
        println!("FIGURES {}: {s}", m.id);
        assert!(m.counter("received_obs") >= 4, "{s}");
        assert!(m.counter("enforced") > 0, "{s}");
    }

    // `explain` shows the fleet verdict, the agents whose evidence made it, and that it was
    // enforced here.
    for m in &members {
        let e = m.explain("www.fluxy.test");
        let f = &e["fleet"];
        assert_eq!(f["agent"], m.id.as_str(), "{e:#}");
        assert_eq!(f["level"], "flux", "{e:#}");
        let agents: Vec<&str> = f["agents"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for id in ["a1", "a2", "a3"] {
            assert!(agents.contains(&id), "{}: {id} not named: {e:#}", m.id);
        }
        assert_eq!(f["other_agents"], 2, "{e:#}");
        assert_eq!(f["decision"], "enforced", "{e:#}");
        // The text form says the same.
        let o = flux_tests::pin_cli(Some(&m.link.client), &m.pin, &["explain", "www.fluxy.test"]);
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            text.contains(&format!("fleet ({} here): flux", m.id))
                && text.contains("evidence from 3 agent(s)")
                && text.contains("enforced (--fleet-action block)"),
            "{text}"
        );
        println!(
            "FIGURES explain on {}: fleet {} score {} agents {:?}: {} ({})",
            m.id, f["level"], f["score"], agents, f["decision"], f["why"]
        );
    }
    // The metrics endpoint shows the fleet's traffic (docs/fleet.md, Metrics).
    for m in &members {
        let page = m.scrape();
        for series in [
            "flux_fleet_connected",
            "flux_fleet_messages_published_total",
            r#"flux_fleet_messages_acknowledged_total{result="stored"}"#,
            r#"flux_fleet_messages_received_total{kind="obs"}"#,
            "flux_fleet_observations_received_total",
            "flux_fleet_verdicts_total",
            r#"flux_fleet_verdict_decisions_total{decision="enforced"}"#,
        ] {
            let v = flux_tests::nats_lab::metric_in(&page, series);
            assert!(
                v.is_some_and(|v| v > 0.0),
                "{}: {series} = {v:?}\n{page}",
                m.id
            );
        }
        assert_eq!(
            flux_tests::nats_lab::metric_in(
                &page,
                r#"flux_fleet_messages_rejected_total{reason="bad_signature"}"#
            ),
            Some(0.0),
            "{page}"
        );
    }
}
