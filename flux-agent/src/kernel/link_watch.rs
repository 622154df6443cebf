//! Link events: an rtnetlink socket subscribed to the link group (`RTNLGRP_LINK`), so the agent
//! hears at once when an interface is removed or added (`RTM_DELLINK` / `RTM_NEWLINK`).
//!
//! The messages are not interpreted here: any link event, and a lost one (the socket buffer
//! overran, `ENOBUFS`), only says "look again", and [`iface_states`](crate::kernel::iface_states)
//! looks at the interfaces by name. That keeps a missed or reordered event harmless.
//!
//! Built on netlink-sys (already used for requests in `netlink_route`) and tokio's `AsyncFd`;
//! rtnetlink's own event stream would bring a second netlink stack for one subscription.
//! May touch: one netlink socket; changes nothing.

use std::io;

use netlink_sys::{Socket, protocols::NETLINK_ROUTE};
use tokio::io::{Interest, unix::AsyncFd};

/// `RTNLGRP_LINK` (include/uapi/linux/rtnetlink.h): the multicast group of link changes.
const RTNLGRP_LINK: u32 = 1;

/// Largest datagram read at once: link messages are a few KiB each.
const RECV_BUF: usize = 64 * 1024;

/// A subscription to link events.
pub struct LinkWatch {
    socket: AsyncFd<Socket>,
    buf: Vec<u8>,
}

impl LinkWatch {
    /// Subscribes to link events in this process's network namespace.
    pub fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.add_membership(RTNLGRP_LINK)?;
        socket.set_non_blocking(true)?;
        // SAFETY: the Socket owns its fd and keeps it open, unchanged, until it is dropped,
        // which happens only through this AsyncFd.
        let socket = unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }
            .map_err(|e| io::Error::other(format!("register the netlink socket: {e}")))?;
        Ok(Self {
            socket,
            buf: Vec::with_capacity(RECV_BUF),
        })
    }

    /// Waits until a link changed (or events were lost), and drains what is queued.
    pub async fn changed(&mut self) -> io::Result<()> {
        loop {
            let mut guard = self.socket.readable().await?;
            let mut got = false;
            loop {
                self.buf.clear();
                match guard.get_inner().recv(&mut self.buf, 0) {
                    Ok(_) => got = true,
                    // Events were lost: the caller looks again anyway.
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => got = true,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        guard.clear_ready();
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
            if got {
                return Ok(());
            }
        }
    }
}
