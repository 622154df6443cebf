//! Per-CPU scratch memory, and the hand-off between the two stages of the program.
//!
//! Stage one (`main.rs::locate`) parses down to the DNS header and writes a [`Located`] here.
//! Stage two (`main.rs::respond`) reads it back. The verifier does not track values through map
//! memory, so every parse path (VLAN tags, IPv4 options, each depth of IPv6 extension headers,
//! UDP or TCP) arrives at stage two as the same state, and the name walk with its loops is
//! verified once instead of once per path.

use aya_ebpf::{macros::map, maps::PerCpuArray};
use flux_common::QueryKey;

/// Bytes of scratch: the TC egress program's copy of a query's question name; in XDP, the UDP
/// checksum input of a rewritten response (pseudo-header, UDP header, DNS header and question:
/// at most 40 + 8 + 12 + 255 + 4, rounded up).
pub const SCRATCH_LEN: usize = 512;

/// A DNS response found in the packet. Offsets are from the start of the frame.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Located {
    pub family: u8,
    pub protocol: u8,
    /// The first fragment of a fragmented datagram.
    pub first_fragment: u8,
    pub vlan_count: u8,
    pub vlan_ids: [u16; 2],
    pub src_port: u16,
    pub dst_port: u16,
    pub qdcount: u16,
    /// The DNS transaction id.
    pub txid: u16,
    pub l3_off: u16,
    pub l4_off: u16,
    pub dns_off: u16,
    /// Length the transport claims for the message.
    pub claimed_len: u16,
    /// Bytes of it actually present in this packet.
    pub present_len: u16,
    /// Non-zero: the frame is not addressed to this host (`queries::to_host`). Only worked out
    /// with query matching on (the only reader); 0 otherwise.
    pub not_for_host: u8,
    /// Explicit padding (the struct stays free of implicit holes).
    pub reserved: u8,
}

#[repr(C)]
pub struct Scratch {
    pub bytes: [u8; SCRATCH_LEN],
    /// Wire length of the question name last walked.
    pub name_len: u64,
    /// One bit per byte offset of that name that starts a label.
    pub label_starts: [u64; 4],
    /// Non-zero: a pass over that name met a byte it could not read (`xdp_verdict.rs`).
    pub name_unreadable: u64,
    /// Non-zero: the reply matched no recorded query (set by stage two before the name
    /// verdict, read back by the record writer).
    pub unsolicited: u64,
    /// The name verdict's findings, kept here rather than in registers so that the label loop
    /// carries no state the verifier would branch on: non-zero when a label is allowed ...
    pub name_allowed: u64,
    /// ... and when a live block covers the name, then `name_block_hash` is the deepest one's.
    pub name_blocked: u64,
    pub name_block_hash: u64,
    pub located: Located,
    /// The query a reply is matched to. In map memory since the key was 40 bytes, which did
    /// not fit next to the name walk on the BPF stack; at 16 it might, untried.
    pub key: QueryKey,
}

/// Too big for the 512-byte BPF stack next to everything else, so it lives in a map. Slot 0
/// is XDP's, slot 1 the TC egress program's: XDP runs in softirq and TC egress with bottom
/// halves off, so neither interrupts the other on one CPU, but separate slots make that
/// nobody's assumption.
#[map]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(2, 0);

/// XDP's scratch.
#[inline(always)]
pub fn scratch() -> Option<*mut Scratch> {
    SCRATCH.get_ptr_mut(0)
}

/// The TC egress program's scratch.
#[inline(always)]
pub fn egress_scratch() -> Option<*mut Scratch> {
    SCRATCH.get_ptr_mut(1)
}

/// `x`, hidden from LLVM. Where LLVM can prove an index in range it drops the bounds check and
/// folds the index into pointer arithmetic the verifier cannot follow (a map-value pointer plus
/// one bounded scalar minus another). Passed through an `asm!` block, the value is opaque to
/// LLVM, so the check stays and the verifier sees the bound right next to the access.
///
/// The block is one register move onto itself (an empty template leaves a line-info entry on
/// no instruction, which the kernel refuses): the value stays in its register, and the
/// verifier keeps its bounds and id. It replaced a volatile store and load through the stack,
/// which put a store-to-load forwarding on the dependency chain of every use (each step of the
/// message copy and the name walks).
#[inline(always)]
pub fn opaque<T: Opaque>(x: T) -> T {
    x.hide()
}

/// The types [`opaque`] takes: whole 64-bit registers. (A `u32` comes back to be widened into
/// another register before its check, and the verifier does not carry that check back to the
/// register the value is then used from.)
pub trait Opaque: Copy {
    fn hide(self) -> Self;
}

macro_rules! opaque_in_register {
    ($($t:ty),*) => {$(
        impl Opaque for $t {
            #[inline(always)]
            fn hide(mut self) -> Self {
                // SAFETY: a move of the register onto itself: no memory is touched.
                unsafe {
                    core::arch::asm!("{0} = {0}", inout(reg) self, options(pure, nomem, nostack, preserves_flags))
                };
                self
            }
        }
    )*};
}
opaque_in_register!(u64, usize);
