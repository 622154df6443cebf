//! Who owns an interface's XDP hook, and how to take it back for `--force`.
//!
//! aya attaches with `XDP_FLAGS_UPDATE_IF_NOEXIST`/BPF links, so it never silently replaces
//! another tool's program; but to say *which* program is in the way, and to remove it on request,
//! we need the rtnetlink view of the device (legacy netlink attachments, as `ip link set xdp` and
//! xdp-loader make them) and the BPF link list (for link-based attachments, which netlink cannot
//! remove).

use std::{io, mem::size_of, os::fd::RawFd};

const IFLA_XDP: u16 = 43;
const IFLA_XDP_FD: u16 = 1;
const IFLA_XDP_ATTACHED: u16 = 2;
const IFLA_XDP_FLAGS: u16 = 3;
const IFLA_XDP_PROG_ID: u16 = 4;
const IFLA_XDP_DRV_PROG_ID: u16 = 5;
const IFLA_XDP_SKB_PROG_ID: u16 = 6;
const IFLA_XDP_HW_PROG_ID: u16 = 7;
const NLA_F_NESTED: u16 = 1 << 15;
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

struct Netlink(RawFd);

impl Drop for Netlink {
    fn drop(&mut self) {
        // SAFETY: we own the fd.
        unsafe { libc::close(self.0) };
    }
}

impl Netlink {
    fn open() -> io::Result<Self> {
        // SAFETY: plain socket(2).
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self(fd))
    }

    /// Sends one request and returns the first reply (or the kernel's error).
    fn request(&self, msg: &[u8]) -> io::Result<Vec<u8>> {
        // SAFETY: msg is a valid buffer for its length.
        let n = unsafe { libc::send(self.0, msg.as_ptr().cast(), msg.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; 32 * 1024];
        // SAFETY: buf is a valid writable buffer for its length.
        let n = unsafe { libc::recv(self.0, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        buf.truncate(n as usize);
        if buf.len() < 16 {
            return Err(io::Error::other("short netlink reply"));
        }
        let ty = u16::from_ne_bytes([buf[4], buf[5]]);
        if ty == libc::NLMSG_ERROR as u16 {
            let code = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
            if code != 0 {
                return Err(io::Error::from_raw_os_error(-code));
            }
        }
        Ok(buf)
    }
}

fn nlmsg(ty: u16, flags: u16, ifindex: u32, attrs: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(64);
    let len = 16 + size_of::<libc::ifinfomsg>() + attrs.len();
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&ty.to_ne_bytes());
    m.extend_from_slice(&(flags | libc::NLM_F_REQUEST as u16).to_ne_bytes());
    m.extend_from_slice(&1u32.to_ne_bytes()); // seq
    m.extend_from_slice(&0u32.to_ne_bytes()); // pid
    // ifinfomsg: family, pad, type, index, flags, change
    m.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]);
    m.extend_from_slice(&(ifindex as i32).to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(attrs);
    m
}

fn attr(ty: u16, payload: &[u8]) -> Vec<u8> {
    let len = 4 + payload.len();
    let mut a = Vec::with_capacity(len.next_multiple_of(4));
    a.extend_from_slice(&(len as u16).to_ne_bytes());
    a.extend_from_slice(&ty.to_ne_bytes());
    a.extend_from_slice(payload);
    a.resize(len.next_multiple_of(4), 0);
    a
}

/// Iterates `(type, payload)` over a netlink attribute block, stopping at anything malformed.
fn attrs(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let ty = u16::from_ne_bytes([buf[2], buf[3]]) & !NLA_F_NESTED;
        if len < 4 || len > buf.len() {
            return None;
        }
        let payload = &buf[4..len];
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
        Some((ty, payload))
    })
}

/// The id of the XDP program attached to `ifindex`, if any (any mode, any owner).
pub fn attached_prog_id(ifindex: u32) -> io::Result<Option<u32>> {
    let nl = Netlink::open()?;
    let reply = nl.request(&nlmsg(libc::RTM_GETLINK, 0, ifindex, &[]))?;
    let hdr = 16 + size_of::<libc::ifinfomsg>();
    let len =
        (u32::from_ne_bytes([reply[0], reply[1], reply[2], reply[3]]) as usize).min(reply.len());
    if len < hdr {
        return Err(io::Error::other("short RTM_NEWLINK reply"));
    }
    for (ty, payload) in attrs(&reply[hdr..len]) {
        if ty != IFLA_XDP {
            continue;
        }
        return Ok(xdp_prog_id(payload));
    }
    Ok(None)
}

/// The program id in an IFLA_XDP block. With programs in several modes at once the kernel sends
/// no IFLA_XDP_PROG_ID, only one id per mode, so those count too.
fn xdp_prog_id(block: &[u8]) -> Option<u32> {
    let mut attached = 0u8;
    let mut any_id = None;
    for (ty, p) in attrs(block) {
        match ty {
            IFLA_XDP_ATTACHED if !p.is_empty() => attached = p[0],
            IFLA_XDP_PROG_ID | IFLA_XDP_DRV_PROG_ID | IFLA_XDP_SKB_PROG_ID
            | IFLA_XDP_HW_PROG_ID
                if p.len() >= 4 =>
            {
                let id = u32::from_ne_bytes([p[0], p[1], p[2], p[3]]);
                if id != 0 && any_id.is_none() {
                    any_id = Some(id);
                }
            }
            _ => {}
        }
    }
    if attached == 0 { None } else { any_id }
}

/// Sets (or with `fd = -1` clears) a legacy netlink XDP attachment in the given mode.
pub fn netlink_set_xdp_fd(ifindex: u32, fd: RawFd, mode_flags: u32) -> io::Result<()> {
    let mut inner = attr(IFLA_XDP_FD, &fd.to_ne_bytes());
    inner.extend(attr(IFLA_XDP_FLAGS, &mode_flags.to_ne_bytes()));
    let xdp = attr(IFLA_XDP | NLA_F_NESTED, &inner);
    let nl = Netlink::open()?;
    nl.request(&nlmsg(
        libc::RTM_SETLINK,
        libc::NLM_F_ACK as u16,
        ifindex,
        &xdp,
    ))
    .map(|_| ())
}

// bpf(2) commands and attribute layouts used below (include/uapi/linux/bpf.h).
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_GET_FD_BY_ID: libc::c_long = 30;
const BPF_LINK_GET_NEXT_ID: libc::c_long = 31;
const BPF_LINK_DETACH: libc::c_long = 34;
const BPF_LINK_TYPE_XDP: u32 = 6;

fn bpf(cmd: libc::c_long, attr: &mut [u64; 16]) -> io::Result<i64> {
    // SAFETY: attr is a zero-padded 128-byte bpf_attr image, larger than every command used.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            size_of::<[u64; 16]>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r)
}

struct OwnedRaw(RawFd);
impl Drop for OwnedRaw {
    fn drop(&mut self) {
        // SAFETY: we own the fd.
        unsafe { libc::close(self.0) };
    }
}

/// BPF links of type XDP bound to `ifindex`, as `(link_id, fd)`.
fn xdp_links_on(ifindex: u32) -> io::Result<Vec<OwnedRaw>> {
    let mut out = Vec::new();
    let mut id = 0u32;
    loop {
        let mut a = [0u64; 16];
        a[0] = u64::from(id); // start_id
        match bpf(BPF_LINK_GET_NEXT_ID, &mut a) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => break,
            Err(e) => return Err(e),
        }
        id = (a[0] >> 32) as u32; // next_id
        let mut a = [0u64; 16];
        a[0] = u64::from(id); // link_id
        let fd = match bpf(BPF_LINK_GET_FD_BY_ID, &mut a) {
            Ok(fd) => OwnedRaw(fd as RawFd),
            Err(_) => continue, // gone meanwhile
        };
        // struct bpf_link_info { u32 type, id, prog_id; union (8-aligned) { xdp: { u32 ifindex } } }
        let mut info = [0u32; 32];
        let mut a = [0u64; 16];
        a[0] = u64::from(fd.0 as u32) | ((size_of::<[u32; 32]>() as u64) << 32);
        a[1] = info.as_mut_ptr() as u64;
        if bpf(BPF_OBJ_GET_INFO_BY_FD, &mut a).is_err() {
            continue;
        }
        if info[0] == BPF_LINK_TYPE_XDP && info[4] == ifindex {
            out.push(fd);
        }
    }
    Ok(out)
}

/// Removes every XDP program from `ifindex`: netlink attachments in both modes, then BPF links.
pub fn detach_all(ifindex: u32) -> io::Result<()> {
    for mode in [XDP_FLAGS_SKB_MODE, XDP_FLAGS_DRV_MODE] {
        match netlink_set_xdp_fd(ifindex, -1, mode) {
            // EBUSY: held by a BPF link, handled below.
            Ok(()) | Err(_) => {}
        }
    }
    for link in xdp_links_on(ifindex)? {
        let mut a = [0u64; 16];
        a[0] = u64::from(link.0 as u32);
        bpf(BPF_LINK_DETACH, &mut a)?;
    }
    match attached_prog_id(ifindex)? {
        None => Ok(()),
        Some(id) => Err(io::Error::other(format!("program {id} is still attached"))),
    }
}

/// Detaches the BPF link pinned at `path` now, whoever else holds it open (`BPF_LINK_DETACH`).
pub fn detach_pinned_link(path: &std::path::Path) -> io::Result<()> {
    const BPF_OBJ_GET: libc::c_long = 7;
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::other("path contains a NUL byte"))?;
    let mut a = [0u64; 16];
    a[0] = c.as_ptr() as u64; // pathname
    let fd = OwnedRaw(bpf(BPF_OBJ_GET, &mut a)? as RawFd);
    let mut a = [0u64; 16];
    a[0] = u64::from(fd.0 as u32);
    bpf(BPF_LINK_DETACH, &mut a).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attr_roundtrip_and_padding() {
        let a = attr(IFLA_XDP_FD, &(-1i32).to_ne_bytes());
        assert_eq!(a.len(), 8);
        let mut block = a.clone();
        block.extend(attr(IFLA_XDP_ATTACHED, &[1]));
        let got: Vec<_> = attrs(&block).collect();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1], (IFLA_XDP_ATTACHED, &[1u8][..]));
    }

    #[test]
    fn prog_id_found_in_any_mode() {
        let mut multi = attr(IFLA_XDP_ATTACHED, &[4]); // XDP_ATTACHED_MULTI
        multi.extend(attr(IFLA_XDP_SKB_PROG_ID, &7u32.to_ne_bytes()));
        multi.extend(attr(IFLA_XDP_DRV_PROG_ID, &9u32.to_ne_bytes()));
        assert_eq!(xdp_prog_id(&multi), Some(7));
        let mut single = attr(IFLA_XDP_ATTACHED, &[1]);
        single.extend(attr(IFLA_XDP_PROG_ID, &3u32.to_ne_bytes()));
        assert_eq!(xdp_prog_id(&single), Some(3));
        assert_eq!(xdp_prog_id(&attr(IFLA_XDP_ATTACHED, &[0])), None);
    }

    #[test]
    fn malformed_attr_block_stops() {
        assert_eq!(attrs(&[0xff, 0xff, 1, 0]).count(), 0);
        assert_eq!(attrs(&[2, 0]).count(), 0);
    }
}
