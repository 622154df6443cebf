//! `flux-agent replay` on resolver logs: Zeek `dns.log` (the real WRCCDC sample when the shared
//! datasets are present, and generated TSV and JSON) and dnstap files, told apart from pcap by
//! content. The same rotation written as Zeek rows, as dnstap frames and as a pcap must give the
//! same verdict: every source goes through the same scorer.

use flux_detect::{
    dns::Transport,
    frame_spec::frame_builders::dns_answer,
    resolver_logs::{
        dnstap::{self, DnstapResponse, ResponseKind},
        frame_streams::{self, ControlKind},
    },
};
use flux_tests::*;
use serde_json::Value;

/// Rounds of the generated rotation, 30 s apart (the TTL).
const ROUNDS: u32 = 20;
const T0: u64 = 1_700_000_000;

/// Round `r`'s flux answer: five fresh addresses, each in its own /16.
fn flux_addrs(r: u32) -> Vec<[u8; 4]> {
    (0..5u32)
        .map(|i| [10, (100 + r * 5 + i) as u8, (i + 1) as u8, 7])
        .collect()
}

const CDN: [[u8; 4]; 2] = [[198, 51, 100, 10], [198, 51, 100, 11]];

fn dotted(a: &[u8; 4]) -> String {
    format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3])
}

fn replay(file: &std::path::Path) -> (Vec<Value>, Value) {
    let (lines, summary) = flux_tests::replay_json(file, &["--no-db"]);
    flux_tests::events_schema::assert_events_match_schema(&lines);
    (lines, summary)
}

/// The last level of every domain that got a verdict.
fn levels(lines: &[Value]) -> std::collections::BTreeMap<String, String> {
    lines
        .iter()
        .filter(|l| l["type"] == "verdict")
        .map(|l| {
            (
                l["domain"].as_str().unwrap_or("").to_owned(),
                l["level"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

fn zeek_tsv() -> String {
    let mut t = String::from(
        "#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tdns\n#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\ttrans_id\tquery\tqtype\tqtype_name\trcode\tanswers\tTTLs\n",
    );
    for r in 0..ROUNDS {
        let ts = T0 + u64::from(r) * 30;
        for (q, addrs) in [
            ("www.fluxy.test", flux_addrs(r)),
            ("edge.cdnish.test", CDN.to_vec()),
        ] {
            let answers: Vec<String> = addrs.iter().map(dotted).collect();
            let ttls: Vec<&str> = addrs.iter().map(|_| "30.000000").collect();
            // Each response twice, microseconds apart, as a doubled sensor logs it.
            for us in [1, 3] {
                t.push_str(&format!(
                    "{ts}.00000{us}\tC{r}{q}\t192.0.2.1\t40000\t192.0.2.53\t53\tudp\t{r}\t{q}\t1\tA\t0\t{}\t{}\n",
                    answers.join(","),
                    ttls.join(",")
                ));
            }
        }
    }
    t
}

fn zeek_json() -> String {
    let mut t = String::new();
    for r in 0..ROUNDS {
        let ts = T0 + u64::from(r) * 30;
        for (q, addrs) in [
            ("www.fluxy.test", flux_addrs(r)),
            ("edge.cdnish.test", CDN.to_vec()),
        ] {
            let row = serde_json::json!({
                "ts": ts as f64 + 0.000001, "uid": format!("C{r}{q}"),
                "id.orig_h": "192.0.2.1", "id.orig_p": 40000,
                "id.resp_h": "192.0.2.53", "id.resp_p": 53, "proto": "udp",
                "trans_id": r, "query": q, "qtype": 1, "qtype_name": "A", "rcode": 0,
                "answers": addrs.iter().map(dotted).collect::<Vec<_>>(),
                "TTLs": addrs.iter().map(|_| 30.0).collect::<Vec<_>>(),
            });
            t.push_str(&format!("{row}\n"));
        }
    }
    t
}

fn dnstap_file() -> Vec<u8> {
    let mut f = frame_streams::control_frame(ControlKind::Start, &[dnstap::CONTENT_TYPE]);
    for r in 0..ROUNDS {
        let ts = std::time::UNIX_EPOCH + std::time::Duration::from_secs(T0 + u64::from(r) * 30);
        for (q, addrs) in [
            ("www.fluxy.test", flux_addrs(r)),
            ("edge.cdnish.test", CDN.to_vec()),
        ] {
            let resp = DnstapResponse {
                kind: ResponseKind::Client,
                ts: Some(ts),
                responder: Some("192.0.2.53".parse().unwrap()),
                responder_port: 53,
                querier: Some("192.0.2.1".parse().unwrap()),
                querier_port: 40000,
                transport: Transport::Udp,
                message: dns_answer(q, &addrs, 30),
            };
            f.extend(frame_streams::data_frame(&dnstap::encode_response(&resp)));
        }
    }
    f.extend(frame_streams::control_frame(ControlKind::Stop, &[]));
    f
}

#[test]
fn generated_zeek_and_dnstap_give_the_same_verdicts() {
    let dir = TempDir::new();
    let tsv = dir.0.join("dns.log");
    let json = dir.0.join("dns-json.log");
    let tap = dir.0.join("resolver.dnstap");
    std::fs::write(&tsv, zeek_tsv()).unwrap();
    std::fs::write(&json, zeek_json()).unwrap();
    std::fs::write(&tap, dnstap_file()).unwrap();

    let (tsv_lines, s) = replay(&tsv);
    assert_eq!(s["zeek_rows"], u64::from(ROUNDS) * 4);
    assert_eq!(s["zeek_duplicates"], u64::from(ROUNDS) * 2, "{s}");
    assert_eq!(s["parsed"], u64::from(ROUNDS) * 2, "{s}");
    assert_eq!(s["failed_files"], serde_json::json!([]));
    let want = levels(&tsv_lines);
    let flux: Vec<&String> = want
        .iter()
        .filter(|(_, l)| *l == "flux")
        .map(|(d, _)| d)
        .collect();
    assert!(
        flux.iter().any(|d| d.ends_with("fluxy.test")),
        "the rotating name is flux from Zeek rows: {want:?}"
    );
    assert!(
        !want
            .iter()
            .any(|(d, l)| d.contains("cdnish") && l != "benign"),
        "{want:?}"
    );

    let (json_lines, s) = replay(&json);
    assert_eq!(s["zeek_rows"], u64::from(ROUNDS) * 2);
    assert_eq!(
        levels(&json_lines),
        want,
        "JSON rows: the same verdicts as TSV"
    );

    let (tap_lines, s) = replay(&tap);
    assert_eq!(s["dnstap_responses"], u64::from(ROUNDS) * 2, "{s}");
    assert_eq!(s["malformed"], 0);
    assert_eq!(
        levels(&tap_lines),
        want,
        "dnstap: the same verdicts as Zeek"
    );

    // gzip-compressed, still told by content.
    let gz = dir.0.join("dns.log.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut enc, zeek_tsv().as_bytes()).unwrap();
    std::fs::write(&gz, enc.finish().unwrap()).unwrap();
    let (gz_lines, _) = replay(&gz);
    assert_eq!(levels(&gz_lines), want);
}

/// The real WRCCDC 2018 `dns.log`: 53,615 rows, 39,682 with answers, each response logged
/// twice. Duplicates are dropped, so the scorer sees each response once.
#[test]
fn real_zeek_sample() {
    let Some(path) = dataset("zeek-logs/dns.log.gz") else {
        return;
    };
    let (_, s) = replay(&path);
    eprintln!("{s}");
    assert_eq!(s["zeek_rows"], 53_615);
    assert_eq!(s["zeek_bad_rows"], 0);
    assert_eq!(s["zeek_no_response"], 9_497);
    assert_eq!(s["zeek_duplicates"], 22_049);
    assert_eq!(s["zeek_with_answers"], 19_849);
    assert_eq!(s["parsed"], 22_069);
    assert!(s["scorer"]["scored"].as_u64().unwrap() > 10_000, "{s}");
}
