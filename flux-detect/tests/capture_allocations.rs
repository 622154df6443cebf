//! `capture_file::read_file_each` allocates nothing per frame: replay parses each DNS message
//! where the reader lent it, and a copy per response was 4% of a replay's instructions. Its own
//! test binary, because it counts allocations with its own global allocator. Touches a
//! temporary file only.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    io::Write as _,
    path::PathBuf,
};

use flux_detect::capture_file::{DEFAULT_PORTS, ReadStats, read_file, read_file_each};

/// The system allocator, counting the allocations of the thread that asked for it
/// ([`counted`]): the test harness's other threads allocate meanwhile.
struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn note() {
    // `try_with`: a thread being torn down has no locals left, and is not being counted.
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        }
    });
}

// SAFETY: every call goes to `System` unchanged; the count touches only const-initialised
// thread-locals, which allocate nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The allocations `f` made on this thread.
fn counted(f: impl FnOnce()) -> u64 {
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|on| on.set(true));
    f();
    COUNTING.with(|on| on.set(false));
    ALLOCATIONS.with(|n| n.get())
}

/// An Ethernet frame holding a DNS response from port 53: `www.example.com A`, one address,
/// its last byte `i`.
fn response_frame(i: u8) -> Vec<u8> {
    let mut dns = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
    for label in ["www", "example", "com"] {
        dns.push(label.len() as u8);
        dns.extend_from_slice(label.as_bytes());
    }
    dns.extend_from_slice(&[0, 0, 1, 0, 1]);
    dns.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, i]);
    let udp_len = 8 + dns.len() as u16;
    let ip_len = 20 + udp_len;
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
    f.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0]);
    f[16..18].copy_from_slice(&ip_len.to_be_bytes());
    f.extend_from_slice(&[10, 0, 0, 53, 10, 0, 0, 1]);
    f.extend_from_slice(&[0, 53, 0x9c, 0x40]);
    f.extend_from_slice(&udp_len.to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&dns);
    f
}

/// A pcap file of `n` responses, removed when dropped.
struct Capture(PathBuf);

impl Capture {
    fn new(n: usize) -> Self {
        let path = std::env::temp_dir().join(format!(
            "flux-capture-allocations-{}-{n}.pcap",
            std::process::id()
        ));
        let mut out = Vec::new();
        out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        out.extend_from_slice(&[2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(&65_535u32.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
        for k in 0..n {
            let frame = response_frame(k as u8);
            let len = (frame.len() as u32).to_le_bytes();
            out.extend_from_slice(&(1_700_000_000 + k as u32).to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(&len);
            out.extend_from_slice(&len);
            out.extend_from_slice(&frame);
        }
        let mut file = std::fs::File::create(&path).expect("create the capture");
        file.write_all(&out).expect("write the capture");
        Self(path)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The allocations of reading `capture` with `read_file_each`, and the responses it lent.
fn lend(capture: &Capture) -> (u64, u64) {
    let mut stats = ReadStats::default();
    let mut seen = 0u64;
    let allocations = counted(|| {
        read_file_each(&capture.0, &DEFAULT_PORTS, &mut stats, |r| {
            seen += u64::from(r.payload.len() > 12);
        })
        .expect("read the capture");
    });
    (allocations, seen)
}

#[test]
fn lending_allocates_nothing_per_frame() {
    let (few, many) = (Capture::new(10), Capture::new(2_010));
    let (small, seen_small) = lend(&few);
    let (large, seen_large) = lend(&many);
    assert_eq!((seen_small, seen_large), (10, 2_010));
    // The reader's buffers and the file are the same whatever the length: 2,000 frames more
    // may not cost one allocation more (a copy per message costs 2,000).
    assert!(
        large <= small,
        "{small} allocations for 10 frames, {large} for 2,010"
    );
}

#[test]
fn lent_responses_are_the_copies_read_file_makes() {
    let capture = Capture::new(300);
    let mut stats = ReadStats::default();
    let mut lent = Vec::new();
    read_file_each(&capture.0, &DEFAULT_PORTS, &mut stats, |r| {
        lent.push(r.to_captured())
    })
    .expect("lend");
    let mut copied_stats = ReadStats::default();
    let mut copied = Vec::new();
    read_file(&capture.0, &DEFAULT_PORTS, &mut copied_stats, |d| {
        copied.push(d)
    })
    .expect("copy");
    assert_eq!(lent.len(), 300);
    assert_eq!(lent, copied);
    assert_eq!(stats, copied_stats);
    assert_eq!(lent[7].payload.last(), Some(&7));
}
