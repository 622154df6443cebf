//! Batched reads and writes of the blocklist hash maps (`BPF_MAP_LOOKUP_BATCH`,
//! `BPF_MAP_UPDATE_BATCH`): every key of a million-entry map in a few hundred syscalls (a feed's
//! room check), and the start-up restore's writes after a reboot.
//!
//! Hand-written bpf(2): aya 0.14 (pinned) has no batch calls. Hash maps only: the kernel's LPM
//! tries have no batch operations, so CIDR entries keep the one-at-a-time path.
//!
//! May touch: the maps it is given, nothing else.

use std::{
    io,
    mem::{MaybeUninit, size_of},
    os::fd::{AsFd as _, AsRawFd as _},
};

use aya::{Pod, maps::MapData};

// bpf(2) commands and flags (include/uapi/linux/bpf.h).
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;

/// Entries a syscall carries. 4,096 keeps each call's buffers small (a few hundred KB for the
/// largest value) while making a million entries 245 calls; the kernel's own per-call work is
/// per entry, so larger batches gain nothing more.
pub const BATCH: usize = 4096;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Runs `cmd`; on return `attr.count` holds how many elements the kernel processed, error or
/// not.
fn bpf(cmd: libc::c_long, attr: &mut BatchAttr) -> io::Result<()> {
    // SAFETY: `attr` is a complete `batch` attribute whose pointers the callers keep valid for
    // `count` elements of the map's key and value sizes; the kernel reads at most `size`
    // bytes of it and zero-extends the rest of `bpf_attr`.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            size_of::<BatchAttr>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn fd_of(map: &MapData) -> u32 {
    map.fd().as_fd().as_raw_fd().unsigned_abs()
}

/// Writes each `(key, value)`, `BATCH` to a syscall, over whatever the map holds for the key
/// (the kernel's batch update takes no `BPF_NOEXIST`: callers that must keep an existing entry
/// read the keys first, [`keys`]). Returns how many were written; a map that fills up stops
/// the writing with the kernel's error (`E2BIG`), the entries before it written: the callers
/// check the room first.
pub fn update<K: Pod, V: Pod>(map: &MapData, keys: &[K], values: &[V]) -> io::Result<usize> {
    if keys.len() != values.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "as many values as keys",
        ));
    }
    let mut written = 0;
    for (k, v) in keys.chunks(BATCH).zip(values.chunks(BATCH)) {
        let mut attr = BatchAttr {
            keys: k.as_ptr() as u64,
            values: v.as_ptr() as u64,
            count: k.len() as u32,
            map_fd: fd_of(map),
            ..BatchAttr::default()
        };
        let r = bpf(BPF_MAP_UPDATE_BATCH, &mut attr);
        written += attr.count as usize;
        r?;
    }
    Ok(written)
}

/// Every key of a hash map, `BATCH` to a syscall (with their values, which the kernel copies
/// out too and are dropped).
pub fn keys<K: Pod, V: Pod>(map: &MapData) -> io::Result<Vec<K>> {
    let mut out: Vec<K> = Vec::new();
    // Written by the kernel into their spare capacity; never read but through it.
    let mut key_buf: Vec<K> = Vec::with_capacity(BATCH);
    let mut value_buf: Vec<V> = Vec::with_capacity(BATCH);
    // The position token: a bucket index for hash maps (4 bytes); 8 leaves room.
    let (mut token_in, mut token_out) = (0u64, 0u64);
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                std::ptr::from_ref(&token_in) as u64
            },
            out_batch: std::ptr::from_mut(&mut token_out) as u64,
            keys: key_buf.as_mut_ptr() as u64,
            values: value_buf.as_mut_ptr() as u64,
            count: BATCH as u32,
            map_fd: fd_of(map),
            ..BatchAttr::default()
        };
        let r = bpf(BPF_MAP_LOOKUP_BATCH, &mut attr);
        let n = (attr.count as usize).min(BATCH);
        // SAFETY: the kernel wrote `n` complete keys at the start of the buffer.
        out.extend(
            key_buf.spare_capacity_mut()[..n]
                .iter()
                .map(|k: &MaybeUninit<K>| unsafe { k.assume_init_read() }),
        );
        match r {
            Ok(()) => {
                token_in = token_out;
                first = false;
            }
            // The end of the map (the last call may carry keys, taken above).
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(out),
            Err(e) => return Err(e),
        }
    }
}
