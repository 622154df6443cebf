//! Unit tests of dnstap decoding (`resolver_logs::dnstap`): the protobuf round trip, the
//! message types used and skipped, hostile frames, and whole files.

use super::*;
use crate::{dns::parse_response, frame_spec::frame_builders::dns_answer};

fn response(kind: ResponseKind) -> DnstapResponse {
    DnstapResponse {
        kind,
        ts: Some(SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 123_000)),
        responder: Some("192.0.2.53".parse().unwrap()),
        responder_port: 53,
        querier: Some("2001:db8::7".parse().unwrap()),
        querier_port: 40_000,
        transport: Transport::Udp,
        message: dns_answer("flux.example", &[[198, 51, 100, 1], [203, 0, 113, 9]], 60),
    }
}

#[test]
fn round_trip_into_the_wire_parser() {
    for kind in [
        ResponseKind::Client,
        ResponseKind::Resolver,
        ResponseKind::Forwarder,
    ] {
        let r = response(kind);
        let got = decode(&encode_response(&r)).unwrap().unwrap();
        assert_eq!(got, r);
        let msg = parse_response(&got.message, false).unwrap();
        assert_eq!(&*msg.qname, "flux.example");
        assert_eq!(msg.answers.len(), 2);
    }
}

#[test]
fn queries_and_other_types_are_skipped() {
    // CLIENT_QUERY (5) with a query message only.
    let q = Dnstap {
        identity: Some(b"unbound".to_vec()),
        version: None,
        message: Some(DnstapMessage {
            r#type: Some(5),
            socket_family: Some(1),
            socket_protocol: Some(1),
            query_address: Some(vec![127, 0, 0, 1]),
            response_address: None,
            query_port: Some(5000),
            response_port: None,
            query_time_sec: Some(1),
            query_time_nsec: Some(0),
            response_time_sec: None,
            response_time_nsec: None,
            response_message: None,
        }),
        r#type: Some(1),
    }
    .encode_to_vec();
    assert_eq!(decode(&q), Ok(None));
    // A response without its bytes, and bytes that are not a protobuf.
    let mut m =
        Dnstap::decode(encode_response(&response(ResponseKind::Client)).as_slice()).unwrap();
    if let Some(inner) = m.message.as_mut() {
        inner.response_message = None;
    }
    assert_eq!(decode(&m.encode_to_vec()), Err(DnstapError::NoMessage));
    assert!(matches!(
        decode(&[0xff, 0xff, 0xff]),
        Err(DnstapError::Protobuf(_))
    ));
    let mut stats = DnstapStats::default();
    assert!(decode_counted(&q, &mut stats).is_none());
    assert!(decode_counted(&[0x0a, 0xff], &mut stats).is_none());
    assert_eq!((stats.frames, stats.other, stats.bad), (2, 1, 1));
}

#[test]
fn files() {
    let mut file = frame_streams::control_frame(ControlKind::Start, &[CONTENT_TYPE]);
    for kind in [ResponseKind::Client, ResponseKind::Resolver] {
        file.extend(frame_streams::data_frame(&encode_response(&response(kind))));
    }
    file.extend(frame_streams::data_frame(b"\x0a\xff"));
    let mut whole = file.clone();
    whole.extend(frame_streams::control_frame(ControlKind::Stop, &[]));
    let mut stats = DnstapStats::default();
    let mut got = Vec::new();
    read_file(&whole[..], &mut stats, |r| got.push(r.kind)).unwrap();
    assert_eq!(got, [ResponseKind::Client, ResponseKind::Resolver]);
    assert_eq!((stats.frames, stats.responses, stats.bad), (3, 2, 1));

    // Cut inside a frame: what came before is used, the stream is counted as broken.
    let cut = &file[..file.len() - 1];
    let mut stats = DnstapStats::default();
    let mut n = 0;
    read_file(cut, &mut stats, |_| n += 1).unwrap();
    assert_eq!((n, stats.bad_streams), (2, 1));

    // A huge length is refused before anything is allocated.
    let mut huge = frame_streams::control_frame(ControlKind::Start, &[CONTENT_TYPE]);
    huge.extend_from_slice(&u32::MAX.to_be_bytes());
    let mut stats = DnstapStats::default();
    read_file(&huge[..], &mut stats, |_| {}).unwrap();
    assert_eq!(stats.bad_streams, 1);

    // No START, or another content type.
    assert!(matches!(
        read_file(&frame_streams::data_frame(b"x")[..], &mut stats, |_| {}),
        Err(DnstapFileError::NoStart)
    ));
    let other = frame_streams::control_frame(ControlKind::Start, &[b"protobuf:other"]);
    assert!(matches!(
        read_file(&other[..], &mut stats, |_| {}),
        Err(DnstapFileError::ContentType)
    ));
}
