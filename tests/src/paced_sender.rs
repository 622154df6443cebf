//! A raw-frame sender for the benches and tests: whole Ethernet frames written to one interface
//! through an `AF_PACKET` socket, paced in `sendmmsg` batches at a given rate ([`send_paced`]),
//! or each once ([`send_once`], the attack tests' frames). It lives here, beside
//! the lab it sends into, and touches nothing but the socket it opens (in the calling thread's
//! network namespace). Also the thread CPU clock the benches read a generator's cost with.
//!
//! Why hand-written and not tcpreplay or trafgen: the bench needs a generator that costs the
//! shared two cores as little as possible and sends many different frames (a zone's worth of DNS
//! answers), paced, while its own CPU time is read. tcpreplay's pacing spins a core at these
//! rates; trafgen sends one configured frame shape. A batch of 64 frames per `sendmmsg` and a
//! sleep to the next batch's due time cost about 2 µs of this thread's CPU a frame here, which
//! includes the receive side's XDP and stack when the kernel runs them in its softirq.

use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};

/// Frames per `sendmmsg`. Why 64: at 200,000 frames a second a batch is due every 320 µs,
/// above the VM's sleep granularity (tens of µs), so the pacing holds; a smaller batch means
/// more syscalls and wakeups for the same rate, a larger one longer bursts into the receiver's
/// queue (veth's is 256 frames with XDP on its peer).
pub const BATCH: usize = 64;

/// What one paced send did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sent {
    /// Frames the kernel accepted.
    pub frames: u64,
    /// Frames the socket refused (`ENOBUFS`, `EAGAIN`): offered, never sent.
    pub refused: u64,
    /// Wall time of the send.
    pub secs: f64,
    /// The sending thread's CPU time (user and system, which includes what the kernel did on
    /// the way out: veth's transmit, and the receive side when it ran in this thread's softirq).
    pub cpu_secs: f64,
}

/// Sends `frames` (cycled, in order) out of `ifname` at `rate` frames a second (0: as fast as
/// the socket takes them) for `dur`, or until `stop` is set: the batches due within `dur`, each
/// at its due time or, after a stall, at once (late, never dropped). Runs in the calling
/// thread, which must be in the interface's namespace.
pub fn send_paced(
    ifname: &str,
    frames: &[Vec<u8>],
    rate: u64,
    dur: Duration,
    stop: &AtomicBool,
) -> anyhow::Result<Sent> {
    ensure!(!frames.is_empty(), "no frames to send");
    let sock = open(ifname)?;
    let mut sent = Sent::default();
    let cpu0 = thread_cpu_ns();
    let t0 = Instant::now();
    let mut next = 0usize;
    let mut offered = 0u64;
    let mut iov: Vec<libc::iovec> = Vec::with_capacity(BATCH);
    // SAFETY: an all-zero mmsghdr is valid (null pointers, zero lengths); filled below.
    let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH];
    while !stop.load(Ordering::Relaxed) {
        if rate > 0 {
            // The batch is due when the frames offered so far have had their time. Paced, the
            // send ends with the last batch due within `dur`, however late it goes out.
            let due = Duration::from_secs_f64(offered as f64 / rate as f64);
            if due >= dur {
                break;
            }
            if let Some(wait) = due.checked_sub(t0.elapsed()) {
                std::thread::sleep(wait);
            }
        } else if t0.elapsed() >= dur {
            break;
        }
        iov.clear();
        for _ in 0..BATCH {
            let f = &frames[next];
            next = (next + 1) % frames.len();
            iov.push(libc::iovec {
                iov_base: f.as_ptr() as *mut libc::c_void,
                iov_len: f.len(),
            });
        }
        for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
            m.msg_len = 0;
        }
        offered += BATCH as u64;
        // A partial send stops at the first frame the kernel refused; sending the rest again
        // either sends them or returns that frame's error, so no error is mistaken for a full
        // buffer.
        let mut off = 0usize;
        while off < BATCH {
            let rest = &mut msgs[off..];
            // SAFETY: `rest` holds headers each pointing at one iovec of `iov`, which point
            // into `frames`; all outlive the call, and the kernel only reads them.
            let n = unsafe {
                libc::sendmmsg(
                    sock.as_raw_fd(),
                    rest.as_mut_ptr(),
                    rest.len() as libc::c_uint,
                    0,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if !matches!(e.raw_os_error(), Some(libc::ENOBUFS | libc::EAGAIN)) {
                    return Err(e).context(format!("sendmmsg on {ifname}"));
                }
            }
            if n <= 0 {
                sent.refused += (BATCH - off) as u64;
                break;
            }
            sent.frames += n as u64;
            off += n as usize;
        }
    }
    sent.secs = t0.elapsed().as_secs_f64();
    sent.cpu_secs = (thread_cpu_ns() - cpu0) * 1e-9;
    Ok(sent)
}

/// Sends each of `frames` once, in order, out of `ifname` (the calling thread's namespace must
/// hold it): what anyone on the link can put on the wire, with any addresses. Fails on the first
/// frame the socket does not take whole.
pub fn send_once(ifname: &str, frames: &[Vec<u8>]) -> anyhow::Result<()> {
    let sock = open(ifname)?;
    for (i, f) in frames.iter().enumerate() {
        // SAFETY: `f` outlives the call and the length is its own; the socket is bound to the
        // interface, so no address is needed.
        let n = unsafe { libc::send(sock.as_raw_fd(), f.as_ptr().cast(), f.len(), 0) };
        ensure!(
            n == f.len() as isize,
            "send of frame {i} on {ifname}: {}",
            io::Error::last_os_error()
        );
    }
    Ok(())
}

/// A paced send ([`send_paced`]) on a thread of its own in a namespace. Dropping it stops and
/// joins the sender, so an error in whoever started it never leaves a sender running.
pub struct Background {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<anyhow::Result<Sent>>>,
}

impl Background {
    /// Starts sending `frames` out of `ifname` of `ns` at `rate` for `dur` (as [`send_paced`]).
    pub fn start(
        ns: &crate::Netns,
        ifname: &str,
        frames: Arc<Vec<Vec<u8>>>,
        rate: u64,
        dur: Duration,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, ifname) = (Arc::clone(&stop), ifname.to_owned());
        let thread = ns.spawn_in(move || send_paced(&ifname, &frames, rate, dur, &flag));
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Whether the send has ended (its time is up, or it failed).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Waits for the send to end by itself and says what it did.
    pub fn wait(mut self) -> anyhow::Result<Sent> {
        self.join()
    }

    /// Stops the send now and says what it did.
    pub fn stop(mut self) -> anyhow::Result<Sent> {
        self.stop.store(true, Ordering::Relaxed);
        self.join()
    }

    fn join(&mut self) -> anyhow::Result<Sent> {
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| anyhow::anyhow!("the sender thread panicked"))?,
            None => anyhow::bail!("the sender was already joined"),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A raw packet socket bound to `ifname` that sends whole frames past the qdisc and receives
/// nothing (protocol 0).
fn open(ifname: &str) -> anyhow::Result<OwnedFd> {
    let c = CString::new(ifname).context("interface name")?;
    // SAFETY: if_nametoindex reads a NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(c.as_ptr()) };
    ensure!(ifindex != 0, "no interface {ifname} in this namespace");
    // SAFETY: plain socket(2); the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    ensure!(
        fd >= 0,
        "AF_PACKET socket: {} (needs CAP_NET_RAW)",
        io::Error::last_os_error()
    );
    // SAFETY: a fresh fd this function owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an all-zero sockaddr_ll is valid; the fields set are the ones bind reads.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: bind with a sockaddr_ll of its own size.
    let rc = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    ensure!(rc == 0, "bind to {ifname}: {}", io::Error::last_os_error());
    let one: libc::c_int = 1;
    // SAFETY: setsockopt with an int it reads. Past the qdisc: the bench measures the
    // receiver, and a qdisc would only add the sender's cost and its own queue.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_QDISC_BYPASS,
            (&one as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    ensure!(
        rc == 0,
        "PACKET_QDISC_BYPASS on {ifname}: {}",
        io::Error::last_os_error()
    );
    Ok(sock)
}

/// This thread's user and system CPU time so far, in ns (0 if the clock cannot be read).
pub fn thread_cpu_ns() -> f64 {
    // SAFETY: an all-zero timespec is valid; clock_gettime fills it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: a valid clock id and a pointer to a timespec.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return 0.0;
    }
    ts.tv_sec as f64 * 1e9 + ts.tv_nsec as f64
}
