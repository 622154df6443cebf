//! The fleet's security (issue 17), on a real nats-server and real agents:
//! - a forged message (bad signature, unknown agent, another agent's id) and a replayed one are
//!   rejected and counted by reason;
//! - a client without credentials cannot publish, and an agent cannot publish on another
//!   agent's subjects (the server refuses; the stream holds nothing);
//! - one compromised agent alone never blocks a name on another agent (the fleet quorum), and
//!   a second agent's evidence is what lets the block through.

use std::{path::Path, time::Duration};

use flux_agent::fleet::envelope::{
    AddrRec, Envelope, Kind, ObsBatch, ObsRec, Sequencer, generate_signing_key, read_signing_key,
};
use flux_tests::{
    nats_lab::{FleetMember, METRICS_ADDR, NatsLab, wait_until},
    privileged,
};

/// Round `r` of the flux zone as agent-side observations: five fresh addresses.
fn flux_obs(r: u32) -> ObsRec {
    ObsRec {
        ts: flux_agent::fleet::envelope::now_ms() / 1000,
        chain: vec!["www.fluxy.test".into()],
        ttl: 5,
        addrs: (0..5u32)
            .map(|i| AddrRec {
                ip: format!("10.{}.{}.7", 100 + r * 5 + i, i + 1)
                    .parse()
                    .unwrap(),
                asn: 0,
            })
            .collect(),
        ns: Vec::new(),
        fp: u64::from(r),
    }
}

fn batch(rec: ObsRec) -> String {
    serde_json::to_string(&ObsBatch {
        obs: vec![rec],
        sampled: false,
    })
    .unwrap()
}

/// Signs `body` as `id` with the key file `key` and publishes it with `creds`' user.
fn send_signed(lab: &NatsLab, seq: &mut Sequencer, id: &str, key: &Path, body: String) {
    let k = read_signing_key(key).unwrap();
    let bytes = Envelope::sign(&k, id, seq.next_seq(), Kind::Obs, body).to_bytes();
    lab.publish_as(Some(&lab.agent(id).creds), &format!("flux.obs.{id}"), bytes)
        .unwrap_or_else(|e| panic!("{id} may publish on its own subject: {e}"));
}

#[test]
fn forged_and_replayed_messages_are_rejected_and_counted() {
    if !privileged() {
        return;
    }
    let lab = NatsLab::start(&["a1", "a2"]);
    let a1 = FleetMember::start(&lab, "a1", &["--metrics", METRICS_ADDR]);
    wait_until(
        "a1 connected",
        Duration::from_secs(30),
        || a1.fleet_stats()["connected"] == true,
        || a1.agent.log(),
    );

    // Someone with broker access (the lab's admin) forges a2's messages with another key.
    let stranger = generate_signing_key().unwrap();
    let forged = Envelope::sign(&stranger, "a2", 1, Kind::Obs, batch(flux_obs(0))).to_bytes();
    lab.publish_as(None, "flux.obs.a2", forged).unwrap();
    // An agent nobody trusts.
    let unknown = Envelope::sign(&stranger, "zz", 1, Kind::Obs, batch(flux_obs(0))).to_bytes();
    lab.publish_as(None, "flux.obs.zz", unknown).unwrap();
    // a2's real message on a2's subject, claiming to be a1's: a subject mismatch.
    let k2 = read_signing_key(&lab.agent("a2").key).unwrap();
    let misplaced = Envelope::sign(&k2, "a1", 2, Kind::Obs, batch(flux_obs(0))).to_bytes();
    lab.publish_as(None, "flux.obs.a2", misplaced).unwrap();
    // A genuine a2 message, then the same bytes again (a replay).
    let genuine = Envelope::sign(&k2, "a2", 10, Kind::Obs, batch(flux_obs(1))).to_bytes();
    lab.publish_as(Some(&lab.agent("a2").creds), "flux.obs.a2", genuine.clone())
        .unwrap();
    lab.publish_as(None, "flux.obs.a2", genuine).unwrap();
    // Garbage.
    lab.publish_as(None, "flux.obs.a2", b"{\"v\":1}".to_vec())
        .unwrap();

    wait_until(
        "every forgery counted",
        Duration::from_secs(20),
        || {
            a1.rejected("bad_signature") >= 1
                && a1.rejected("unknown_agent") >= 1
                && a1.rejected("subject_mismatch") >= 1
                && a1.rejected("replay") >= 1
                && a1.rejected("malformed") >= 1
        },
        || format!("{}\n{}", a1.fleet_stats(), a1.agent.log()),
    );
    let s = a1.fleet_stats();
    println!("FIGURES forged/replayed: {s}");
    assert_eq!(
        a1.counter("received_obs"),
        1,
        "only the genuine one is used: {s}"
    );
    assert_eq!(a1.rejected("bad_signature"), 1, "{s}");
    assert_eq!(a1.rejected("replay"), 1, "{s}");
    // `stats --json` shows them too.
    let out = flux_tests::pin_cli_ok(Some(&a1.link.client), &a1.pin, &["stats", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["fleet"]["received_obs"], 1, "{v}");
    // And the metrics endpoint, by reason.
    let page = a1.scrape();
    let m = |series: &str| flux_tests::nats_lab::metric_in(&page, series);
    for why in [
        "bad_signature",
        "unknown_agent",
        "subject_mismatch",
        "replay",
        "malformed",
    ] {
        let series = format!(r#"flux_fleet_messages_rejected_total{{reason="{why}"}}"#);
        assert_eq!(
            m(&series),
            Some(a1.rejected(why) as f64),
            "{series}\n{page}"
        );
    }
    assert_eq!(
        m(r#"flux_fleet_messages_received_total{kind="obs"}"#),
        Some(1.0),
        "{page}"
    );
    assert_eq!(
        m("flux_fleet_observations_received_total"),
        Some(1.0),
        "{page}"
    );
    assert_eq!(m("flux_fleet_connected"), Some(1.0), "{page}");
}

#[test]
fn without_credentials_nothing_is_published() {
    if !privileged() {
        return;
    }
    let lab = NatsLab::start(&["a1", "a2"]);
    let k1 = read_signing_key(&lab.agent("a1").key).unwrap();
    let msg = |seq| Envelope::sign(&k1, "a1", seq, Kind::Obs, batch(flux_obs(0))).to_bytes();
    // No credentials: the server does not let the client in.
    let e = lab
        .publish_as(Some(Path::new("")), "flux.obs.a1", msg(1))
        .expect_err("a client without credentials published");
    println!("no credentials: {e}");
    // a1's credentials on a2's subject: refused.
    let e = lab
        .publish_as(Some(&lab.agent("a1").creds), "flux.obs.a2", msg(2))
        .expect_err("a1 published on a2's subject");
    println!("a1 on a2's subject: {e}");
    assert_eq!(lab.stream_count("flux.obs.a2"), 0);
    // The same user on its own subject: taken (the refusals above are the permissions').
    lab.publish_as(Some(&lab.agent("a1").creds), "flux.obs.a1", msg(3))
        .expect("a1 may publish on its own subject");
    assert_eq!(lab.stream_count("flux.obs.a1"), 1);
    assert_eq!(lab.stream_count("flux.obs.a2"), 0);
}

#[test]
fn one_compromised_agent_alone_never_blocks_on_another() {
    if !privileged() {
        return;
    }
    let lab = NatsLab::start(&["a1", "a2", "a3"]);
    let a1 = FleetMember::start(&lab, "a1", &[]);
    wait_until(
        "a1 connected",
        Duration::from_secs(30),
        || a1.fleet_stats()["connected"] == true,
        || a1.agent.log(),
    );
    // a2 is compromised: it sends, validly signed on its own subject, as much flux evidence
    // for www.fluxy.test as it likes, and a1 looks the name up itself too.
    let mut seq = Sequencer::default();
    for r in 0..8 {
        send_signed(
            &lab,
            &mut seq,
            "a2",
            &lab.agent("a2").key.clone(),
            batch(flux_obs(r)),
        );
    }
    a1.lookup(20);
    let fleet_flux = |e: &serde_json::Value| {
        e["type"] == "verdict"
            && e["level"] == "flux"
            && e["reasons"]
                .as_array()
                .is_some_and(|r| r.iter().any(|x| x["feature"] == "fleet"))
    };
    let v = a1.agent.wait_event("a fleet flux verdict", fleet_flux);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !a1.blocked(),
        "a2 alone made a1 block: {:#?}",
        a1.agent.events()
    );
    let events = a1.agent.events();
    assert!(
        events
            .iter()
            .filter(|e| fleet_flux(e))
            .all(|e| e["block"] == false),
        "{events:#?}"
    );
    assert!(
        events.iter().any(|e| fleet_flux(e)
            && e["block_gate"]
                .as_str()
                .is_some_and(|g| g.contains("quorum"))),
        "the quorum is what held it: {v}"
    );
    assert!(!events.iter().any(|e| e["type"] == "block"), "{events:#?}");
    assert!(a1.counter("reports_only") >= 1);

    // A second, independent agent's evidence: now two other agents back it, and a1 blocks.
    for r in 10..13 {
        send_signed(
            &lab,
            &mut seq,
            "a3",
            &lab.agent("a3").key.clone(),
            batch(flux_obs(r)),
        );
    }
    wait_until(
        "the block once two other agents back it",
        Duration::from_secs(20),
        || a1.blocked(),
        || format!("{:#?}\n{}", a1.agent.events(), a1.agent.log()),
    );
}
