//! Unit tests of the Zeek `dns.log` reader (`resolver_logs::zeek`): both formats, the vector
//! fields, the header's markers, duplicates, bad rows, and the real WRCCDC sample when the
//! shared datasets are present.

use std::path::PathBuf;

use super::*;

const HEADER: &str = "#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tdns\n#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\ttrans_id\trtt\tquery\tqclass\tqclass_name\tqtype\tqtype_name\trcode\trcode_name\tAA\tTC\tRD\tRA\tZ\tanswers\tTTLs\trejected\n#types\ttime\tstring\taddr\tport\taddr\tport\tenum\tcount\tinterval\tstring\tcount\tstring\tcount\tstring\tcount\tstring\tbool\tbool\tbool\tbool\tcount\tvector[string]\tvector[interval]\tbool\n";

fn row(ts: &str, uid: &str, query: &str, rcode: &str, answers: &str, ttls: &str) -> String {
    format!(
        "{ts}\t{uid}\t10.47.1.100\t41772\t10.0.0.100\t53\tudp\t36329\t0.000870\t{query}\t1\tC_INTERNET\t1\tA\t{rcode}\t-\tF\tF\tT\tT\t0\t{answers}\t{ttls}\tF\n"
    )
}

fn read(text: &str) -> (Vec<ZeekDns>, ZeekStats) {
    let mut out = Vec::new();
    let mut stats = ZeekStats::default();
    read_zeek(text.as_bytes(), &mut stats, |d| out.push(d)).expect("read");
    (out, stats)
}

#[test]
fn tsv_row_with_cname_chain() {
    let text = format!(
        "{HEADER}{}",
        row(
            "1521911720.865716",
            "C1",
            "ISE.wrccdc.org",
            "0",
            "ise.wrccdc.cpp.edu,134.71.3.16,2001:db8::1",
            "2230.000000,41830.000000,60.4"
        )
    );
    let (out, stats) = read(&text);
    assert_eq!(stats.rows, 1);
    assert_eq!(stats.with_answers, 1);
    let d = out.first().expect("one response");
    assert_eq!(d.server, "10.0.0.100".parse::<IpAddr>().unwrap());
    assert_eq!((d.client_port, d.server_port), (41772, 53));
    let m = &d.msg;
    assert_eq!(&*m.qname, "ise.wrccdc.org");
    assert_eq!(m.qtype, "A");
    assert_eq!(m.id, 36329);
    assert!(m.flags.rd && m.flags.ra && !m.flags.aa);
    assert!(m.rcode.is_noerror());
    let got: Vec<(&str, &str, u32, Option<String>)> = m
        .answers
        .iter()
        .map(|r| (&*r.name, &*r.rtype, r.ttl, r.data().map(|c| c.into_owned())))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "ise.wrccdc.org",
                "CNAME",
                2230,
                Some("ise.wrccdc.cpp.edu".into())
            ),
            ("ise.wrccdc.cpp.edu", "A", 41830, Some("134.71.3.16".into())),
            ("ise.wrccdc.cpp.edu", "AAAA", 60, Some("2001:db8::1".into())),
        ]
    );
    assert!(m.authority.is_empty() && m.additional.is_empty());
    let secs = d.ts.duration_since(SystemTime::UNIX_EPOCH).unwrap();
    assert_eq!(secs.as_micros(), 1_521_911_720_865_716);
}

#[test]
fn empty_unset_and_no_response() {
    let text = format!(
        "{HEADER}{}{}{}",
        row("1.0", "C1", "gone.example", "3", "(empty)", "(empty)"),
        row("2.0", "C2", "noreply.example", "-", "-", "-"),
        row("3.0", "C3", "nodata.example", "0", "-", "-"),
    );
    let (out, stats) = read(&text);
    assert_eq!(stats.rows, 3);
    assert_eq!(stats.no_response, 1);
    assert_eq!(stats.responses, 2);
    assert_eq!(stats.with_answers, 0);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].msg.rcode, Rcode::NXDOMAIN);
    assert!(out[0].msg.answers.is_empty() && out[1].msg.answers.is_empty());
}

#[test]
fn duplicates_within_the_window_are_dropped() {
    let a = row("100.000001", "C1", "x.example", "0", "192.0.2.1", "60.0");
    let a2 = row("100.000003", "C1", "x.example", "0", "192.0.2.1", "60.0");
    // The same answer to another connection, and the same row much later: both kept.
    let b = row("100.000004", "C2", "x.example", "0", "192.0.2.1", "60.0");
    let a3 = row("105.0", "C1", "x.example", "0", "192.0.2.1", "60.0");
    let (out, stats) = read(&format!("{HEADER}{a}{a2}{b}{a3}"));
    assert_eq!(stats.duplicates, 1);
    assert_eq!(out.len(), 3);
}

#[test]
fn custom_separators_and_escapes() {
    let text = "#separator \\x7c\n#set_separator|;\n#empty_field|EMPTY\n#unset_field|NONE\n#fields|ts|id.orig_h|id.resp_h|query|qtype|rcode|answers|TTLs\n1.5|10.0.0.1|10.0.0.2|a\\x7cb.example|1|0|198.51.100.1;198.51.100.2|30;31\n2.5|10.0.0.1|10.0.0.2|c.example|1|0|EMPTY|NONE\n";
    let (out, stats) = read(text);
    assert_eq!(stats.bad_rows, 0, "{stats:?}");
    assert_eq!(&*out[0].msg.qname, "a|b.example");
    assert_eq!(out[0].msg.answers.len(), 2);
    assert_eq!(out[0].msg.answers[1].ttl, 31);
    assert!(out[1].msg.answers.is_empty());
}

#[test]
fn json_rows() {
    let text = concat!(
        r#"{"ts":1521911720.865716,"uid":"C1","id.orig_h":"10.47.1.100","id.orig_p":41772,"id.resp_h":"10.0.0.100","id.resp_p":53,"proto":"udp","trans_id":7,"query":"www.example.com","qtype":1,"qtype_name":"A","rcode":0,"AA":false,"TC":false,"RD":true,"RA":true,"answers":["cdn.example.net","192.0.2.7"],"TTLs":[300.0,20.0]}"#,
        "\n",
        r#"{"ts":"2018-03-24T17:15:20.865716Z","uid":"C2","id":{"orig_h":"fd00::1","orig_p":5,"resp_h":"fd00::53","resp_p":53},"proto":"tcp","query":"ns.example","qtype":2,"rcode":0,"answers":["a.ns.example."],"TTLs":[3600]}"#,
        "\n",
        r#"{"ts":3.0,"query":"broken"#,
        "\n",
    );
    let (out, stats) = read(text);
    assert_eq!(stats.rows, 3);
    assert_eq!(stats.bad_rows, 1);
    assert_eq!(out.len(), 2);
    let m = &out[0].msg;
    assert_eq!(&*m.answers[1].name, "cdn.example.net");
    assert_eq!(m.answers[1].ttl, 20);
    assert_eq!(out[1].transport, Transport::Tcp);
    assert_eq!(out[1].msg.answers[0].rtype, "NS");
    assert_eq!(
        out[1].msg.answers[0].target.as_deref(),
        Some("a.ns.example")
    );
}

#[test]
fn hostile_input_is_counted_not_fatal() {
    let long = "x".repeat(MAX_LINE + 10);
    let bad = format!(
        "{HEADER}{long}\n1.0\tC1\n{}",
        row("1.5e3", "C9", "q.example", "0", "192.0.2.1", "1")
    );
    let good = row("2.0", "C2", "ok.example", "0", "192.0.2.2", "5");
    let (out, stats) = read(&format!("{bad}{good}"));
    assert_eq!(out.len(), 1);
    assert_eq!(stats.bad_rows, 3, "{stats:?}");
    // Not one good row: not a dns.log (another JSON log, say).
    let mut st = ZeekStats::default();
    assert!(read_zeek(bad.as_bytes(), &mut st, |_| {}).is_err());
    assert!(read_zeek(&b"{\"type\":\"verdict\"}\n{}\n"[..], &mut st, |_| {}).is_err());
    // TSV rows without a header are not a dns.log.
    assert!(read_zeek(&b"1.0\tx\n"[..], &mut st, |_| {}).is_err());
    // Neither is a #fields without `query`.
    assert!(read_zeek(&b"#fields\tts\tuid\n"[..], &mut st, |_| {}).is_err());
}

/// The real WRCCDC 2018 sample: 53,615 rows, 39,682 with answers, each response logged twice.
#[test]
fn real_wrccdc_sample() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/datasets/zeek-logs/dns.log.gz");
    if !path.exists() {
        eprintln!("SKIPPED: {} is absent", path.display());
        return;
    }
    let r = crate::resolver_logs::open(&path).expect("open");
    let mut stats = ZeekStats::default();
    let mut answers = 0u64;
    let mut cnames = 0u64;
    read_zeek(r, &mut stats, |d| {
        answers += d.msg.answers.len() as u64;
        cnames += d
            .msg
            .answers
            .iter()
            .filter(|r| r.rtype_code == TYPE_CNAME)
            .count() as u64;
    })
    .expect("read");
    eprintln!("{stats:?} answers={answers} cnames={cnames}");
    assert_eq!(stats.rows, 53_615);
    assert_eq!(stats.bad_rows, 0);
    assert_eq!(stats.no_response, 9_497);
    // 44,118 rows with a reply: 22,049 are the second copy of a response logged twice.
    assert_eq!(stats.duplicates, 22_049);
    assert_eq!(stats.responses, 22_069);
    // 39,682 rows with answers are 19,849 responses.
    assert_eq!(stats.with_answers, 19_849);
    assert!(cnames > 0);
}
