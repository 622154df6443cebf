//! Who owns an interface's XDP hook, and how to take it back for `--force`.
//!
//! aya attaches with `XDP_FLAGS_UPDATE_IF_NOEXIST`/BPF links, so it never silently replaces
//! another tool's program; but to say *which* program is in the way, and to remove it on request,
//! we need the rtnetlink view of the device (legacy netlink attachments, as `ip link set xdp` and
//! xdp-loader make them) and the BPF link list (for link-based attachments, which netlink cannot
//! remove), and whether a program in the way is another flux-agent's.

use std::{
    io,
    mem::size_of,
    os::fd::RawFd,
    path::{Path, PathBuf},
};

use aya::programs::links::{FdLink, PinnedLink};
use flux_common::PROG_XDP;

use netlink_packet_core::NLM_F_ACK;
use netlink_packet_route::{
    RouteNetlinkMessage,
    link::{LinkAttribute, LinkMessage, LinkXdp, XdpAttached},
};

use crate::kernel::{loader::XDP_LINK_PREFIX, netlink_route};

// XDP attach modes (include/uapi/linux/if_link.h); netlink-packet-route has no names for them.
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// The id of the XDP program attached to `ifindex`, if any (any mode, any owner).
pub fn attached_prog_id(ifindex: u32) -> io::Result<Option<u32>> {
    let mut msg = LinkMessage::default();
    msg.header.index = ifindex;
    let reply = netlink_route::request(RouteNetlinkMessage::GetLink(msg), 0)?;
    let Some(RouteNetlinkMessage::NewLink(link)) = reply.into_iter().next() else {
        return Err(io::Error::other("short RTM_NEWLINK reply"));
    };
    Ok(link
        .attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Xdp(xdp) => Some(xdp_prog_id(xdp)),
            _ => None,
        })
        .flatten())
}

/// How XDP program(s) are attached to `ifindex` (`native`, `skb`, `hw`, `multiple`), and the
/// id of one, or `None` when nothing is attached (for `flux-agent status`).
pub fn attached_xdp(ifindex: u32) -> io::Result<Option<(&'static str, u32)>> {
    let mut msg = LinkMessage::default();
    msg.header.index = ifindex;
    let reply = netlink_route::request(RouteNetlinkMessage::GetLink(msg), 0)?;
    let Some(RouteNetlinkMessage::NewLink(link)) = reply.into_iter().next() else {
        return Err(io::Error::other("short RTM_NEWLINK reply"));
    };
    Ok(link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Xdp(xdp) => {
            let id = xdp_prog_id(xdp)?;
            let mode = xdp.iter().find_map(|a| match a {
                LinkXdp::Attached(XdpAttached::Driver) => Some("native"),
                LinkXdp::Attached(XdpAttached::SocketBuffer) => Some("skb"),
                LinkXdp::Attached(XdpAttached::Hardware) => Some("hw"),
                LinkXdp::Attached(XdpAttached::Multiple) => Some("multiple"),
                _ => None,
            })?;
            Some((mode, id))
        }
        _ => None,
    }))
}

/// The program id in an IFLA_XDP block. With programs in several modes at once the kernel sends
/// no IFLA_XDP_PROG_ID, only one id per mode, so those count too.
fn xdp_prog_id(block: &[LinkXdp]) -> Option<u32> {
    let mut attached = false;
    let mut any_id = None;
    for a in block {
        match a {
            LinkXdp::Attached(how) => attached = *how != XdpAttached::None,
            LinkXdp::ProgId(id)
            | LinkXdp::DrvProgId(id)
            | LinkXdp::SkbProgId(id)
            | LinkXdp::HwProgId(id)
                if *id != 0 && any_id.is_none() =>
            {
                any_id = Some(*id);
            }
            _ => {}
        }
    }
    if attached { any_id } else { None }
}

/// Sets (or with `fd = -1` clears) a legacy netlink XDP attachment in the given mode.
pub fn netlink_set_xdp_fd(ifindex: u32, fd: RawFd, mode_flags: u32) -> io::Result<()> {
    let mut msg = LinkMessage::default();
    msg.header.index = ifindex;
    msg.attributes.push(LinkAttribute::Xdp(vec![
        LinkXdp::Fd(fd),
        LinkXdp::Flags(mode_flags),
    ]));
    netlink_route::request(RouteNetlinkMessage::SetLink(msg), NLM_F_ACK).map(|_| ())
}

/// Whether XDP program `prog_id` is another flux-agent's (`flux_xdp`), and then the pin folder
/// that holds its link, when one under bpffs does (`None` inside: a flux-agent that did not pin,
/// such as a benchmark). `None` outside: someone else's program.
pub fn other_flux_agent(prog_id: u32, bpffs: &Path) -> Option<Option<PathBuf>> {
    let info = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == prog_id)?;
    if info.name_as_str() != Some(PROG_XDP) {
        return None;
    }
    Some(folder_linking(prog_id, bpffs, PIN_SEARCH_DEPTH))
}

/// How deep under bpffs pin folders are looked for (`/sys/fs/bpf/a/b` is depth 2): pin folders
/// are one or two levels down in practice, and the walk stays short.
const PIN_SEARCH_DEPTH: u32 = 3;

/// The folder under `dir` (down to `depth` levels) holding an XDP link pin to `prog_id`.
fn folder_linking(prog_id: u32, dir: &Path, depth: u32) -> Option<PathBuf> {
    let mut subdirs = Vec::new();
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            subdirs.push(path);
        } else if name.starts_with(XDP_LINK_PREFIX)
            && let Ok(link) = PinnedLink::from_pin(&path)
            && FdLink::from(link)
                .info()
                .is_ok_and(|i| i.program_id() == prog_id)
        {
            return Some(dir.to_owned());
        }
    }
    if depth == 0 {
        return None;
    }
    subdirs
        .iter()
        .find_map(|d| folder_linking(prog_id, d, depth - 1))
}

/// The interface index of the XDP link pinned at `path`: 0 once its interface is gone (the
/// kernel keeps the link, detached). aya's `LinkInfo` has no accessor for it.
pub fn xdp_link_ifindex(path: &Path) -> io::Result<u32> {
    const BPF_OBJ_GET: libc::c_long = 7;
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::other("path contains a NUL byte"))?;
    let mut a = [0u64; 16];
    a[0] = c.as_ptr() as u64; // pathname
    let fd = OwnedRaw(bpf(BPF_OBJ_GET, &mut a)? as RawFd);
    let info = link_info(&fd)?;
    if info[0] != BPF_LINK_TYPE_XDP {
        return Err(io::Error::other("not an XDP link"));
    }
    Ok(info[4])
}

/// `struct bpf_link_info { u32 type, id, prog_id; union (8-aligned) { xdp: { u32 ifindex } } }`
/// of the link `fd`, as u32 words.
fn link_info(fd: &OwnedRaw) -> io::Result<[u32; 32]> {
    let mut info = [0u32; 32];
    let mut a = [0u64; 16];
    a[0] = u64::from(fd.0 as u32) | ((size_of::<[u32; 32]>() as u64) << 32);
    a[1] = info.as_mut_ptr() as u64;
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut a)?;
    Ok(info)
}

// The bpf(2) part stays hand-written: aya 0.14 (pinned) has no call to list every BPF link of
// the system or to detach one by fd (`BPF_LINK_DETACH`), which `--force` and unload need.
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
        let Ok(info) = link_info(&fd) else {
            continue;
        };
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
pub fn detach_pinned_link(path: &Path) -> io::Result<()> {
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
    fn prog_id_found_in_any_mode() {
        let multi = [
            LinkXdp::Attached(XdpAttached::Multiple),
            LinkXdp::SkbProgId(7),
            LinkXdp::DrvProgId(9),
        ];
        assert_eq!(xdp_prog_id(&multi), Some(7));
        let single = [LinkXdp::Attached(XdpAttached::Driver), LinkXdp::ProgId(3)];
        assert_eq!(xdp_prog_id(&single), Some(3));
        assert_eq!(xdp_prog_id(&[LinkXdp::Attached(XdpAttached::None)]), None);
        assert_eq!(xdp_prog_id(&[LinkXdp::ProgId(3)]), None, "not attached");
    }

    /// The loopback's link message parses; nothing attached there in a test run.
    #[test]
    fn reads_the_loopback() {
        attached_prog_id(1).unwrap();
    }
}
