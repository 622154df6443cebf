//! The benches' paced raw-frame sender (`flux_tests::paced_sender`, which `ringbuf-load`'s
//! agent-alone half drives), on a real veth pair: the frames it writes to `b0` arrive whole at
//! a socket behind `a0`, in the order given and cycling, and it never sends faster than asked.
//! A sender that sent malformed frames, skipped or reordered them, or ignored the rate would
//! make that half's figures wrong without failing it.

use std::{
    net::{Ipv4Addr, UdpSocket},
    sync::atomic::AtomicBool,
    time::Duration,
};

use flux_tests::{
    CLIENT_V4, Link, SERVER_V4,
    frames::udp4_between,
    paced_sender::{BATCH, send_paced},
    privileged,
};

const PORT: u16 = 40_099;

/// Frames from the server's port 53 to the client's `PORT`, payload `i` as four bytes, with the
/// link's real MACs.
fn frames(link: &Link, n: u32) -> Vec<Vec<u8>> {
    let (src, dst): (Ipv4Addr, Ipv4Addr) = (SERVER_V4.parse().unwrap(), CLIENT_V4.parse().unwrap());
    let (dst_mac, src_mac) = (link.client_mac("a0"), link.server_mac("b0"));
    (0..n)
        .map(|i| {
            let mut f = udp4_between(src.octets(), 53, dst.octets(), PORT, &i.to_be_bytes());
            f[..6].copy_from_slice(&dst_mac);
            f[6..12].copy_from_slice(&src_mac);
            f
        })
        .collect()
}

#[test]
fn frames_arrive_whole_in_order_and_never_faster_than_asked() {
    if !privileged() {
        return;
    }
    let link = Link::new();
    // 100 distinct frames, cycled: a batch of 64 wraps around the list.
    let list = frames(&link, 100);
    // The sink reads as the frames come (a socket buffer would overflow), until a second
    // passes with none.
    let sink = link.client.run_in(|| {
        let s = UdpSocket::bind((CLIENT_V4, PORT)).expect("bind the sink");
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        s
    });
    let reader = link.client.spawn_in(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while let Ok(n) = sink.recv(&mut buf) {
            got.push(buf[..n].to_vec());
        }
        got
    });
    const RATE: u64 = 5_000;
    const SECS: f64 = 0.2;
    let sent = link.server.run_in(move || {
        send_paced(
            "b0",
            &list,
            RATE,
            Duration::from_secs_f64(SECS),
            &AtomicBool::new(false),
        )
        .expect("send")
    });
    // Never faster than asked: at most the batches due within the time.
    let due = (RATE as f64 * SECS) as u64;
    assert!(
        sent.frames <= due.div_ceil(BATCH as u64) * BATCH as u64,
        "{} frames in {SECS} s at {RATE}/s",
        sent.frames
    );
    // And it sends: a loaded machine can delay batches, never drop them (they are sent late).
    assert!(sent.frames >= due / 2, "only {} frames sent", sent.frames);
    assert_eq!(sent.refused, 0);
    assert!(sent.cpu_secs > 0.0);

    // Every frame arrived whole (the kernel checked the IPv4 and UDP checksums on the way up),
    // in the order given, cycling through the list, and nothing more.
    let got = reader.join().expect("reader");
    assert_eq!(got.len() as u64, sent.frames);
    for (i, payload) in got.iter().enumerate() {
        assert_eq!(payload, &((i % 100) as u32).to_be_bytes(), "frame {i}");
    }
}

#[test]
fn a_missing_interface_is_one_clear_error() {
    if !privileged() {
        return;
    }
    let e = send_paced(
        "flux-no-such0",
        &[vec![0u8; 60]],
        1,
        Duration::from_millis(10),
        &AtomicBool::new(false),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "no interface flux-no-such0 in this namespace"
    );
    let e = send_paced("lo", &[], 1, Duration::ZERO, &AtomicBool::new(false)).unwrap_err();
    assert_eq!(e.to_string(), "no frames to send");
}
