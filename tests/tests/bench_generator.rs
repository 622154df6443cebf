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
    privileged, with_macs,
};

const PORT: u16 = 40_099;

/// Frames from the server's port 53 to the client's `PORT`, payload `i` as four bytes, with the
/// link's real MACs.
fn frames(link: &Link, n: u32) -> Vec<Vec<u8>> {
    let (src, dst): (Ipv4Addr, Ipv4Addr) = (SERVER_V4.parse().unwrap(), CLIENT_V4.parse().unwrap());
    let (dst_mac, src_mac) = (link.client_mac("a0"), link.server_mac("b0"));
    (0..n)
        .map(|i| {
            let f = udp4_between(src.octets(), 53, dst.octets(), PORT, &i.to_be_bytes());
            with_macs(f, dst_mac, src_mac)
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
        // Room for every frame even if the reader is not scheduled for the whole send (a
        // loaded CI machine): 8 MiB, past the default limit, which root may do.
        let bytes: libc::c_int = 8 << 20;
        // SAFETY: setsockopt on an open socket with an int it reads.
        let rc = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&s),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&bytes as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
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
    // Paced, it sends exactly the batches due within the time (1,000 frames' time at 5,000 a
    // second: batches 0 to 15 are due before 0.2 s), late after a stall but never dropped.
    let batches = (RATE as f64 * SECS / BATCH as f64).ceil() as u64;
    assert_eq!(sent.frames, batches * BATCH as u64);
    // And never faster than asked: the last batch was not sent before it was due. A sender
    // that ignored the rate would be done in about a millisecond.
    let last_due = ((batches - 1) * BATCH as u64) as f64 / RATE as f64;
    assert!(
        sent.secs >= last_due,
        "{} frames in {:.4} s, the last due at {last_due:.4} s",
        sent.frames,
        sent.secs
    );
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
