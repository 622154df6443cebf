//! Wire headers and a bounds-checked cursor over the XDP packet.
//!
//! Every read goes through [`Packet::ptr_at`], which checks `offset + size_of::<T>()` against
//! `data_end` right before handing out the pointer, which is the form the verifier accepts.

use core::mem::size_of;

use aya_ebpf::programs::XdpContext;

/// Offsets past this are not followed; keeps the verifier's range tracking small and bounded.
pub const MAX_HEADER_OFFSET: usize = 512;

/// Where a question name may start, at most, with room to spare: the DNS header is found within
/// [`MAX_HEADER_OFFSET`] (`main.rs::locate`), and the name follows its 12 bytes. A name starting
/// later is not walked.
pub const MAX_NAME_BASE: usize = 1024;

/// A mask that keeps every offset up to [`MAX_NAME_BASE`] as it is.
const NAME_BASE_MASK: usize = 0x7ff;
const _: () = assert!(MAX_NAME_BASE <= NAME_BASE_MASK && (NAME_BASE_MASK + 1).is_power_of_two());

/// Masks of [`Packet::word_at`]'s offsets: every DNS header offset up to
/// [`MAX_HEADER_OFFSET`] kept as it is, and every word of a record's message (all below 2 KiB).
const COPY_BASE_MASK: usize = 0x3ff;
pub const COPY_INDEX_MASK: usize = 0x7ff;
const _: () = assert!(MAX_HEADER_OFFSET <= COPY_BASE_MASK);

/// One 8-byte load (`BPF_LDX | BPF_DW`) from `at`, whatever its alignment. Written in assembly
/// because LLVM's BPF backend lowers a Rust unaligned read (`read_unaligned`) to eight byte
/// loads, shifts and ors, and a plain read of a misaligned `*const u64` is undefined behaviour
/// in Rust; the kernel itself accepts a misaligned load from packet or ring-buffer memory
/// (the program is not loaded with `BPF_F_STRICT_ALIGNMENT`).
#[inline(always)]
pub fn load_u64(at: usize) -> u64 {
    let v: u64;
    // SAFETY: the caller has checked `at..at + 8` against the memory's end; the instruction
    // reads those eight bytes and touches nothing else.
    unsafe {
        core::arch::asm!(
            "{0} = *(u64 *)({1} + 0)",
            out(reg) v,
            in(reg) at,
            options(readonly, nostack, preserves_flags),
        )
    };
    v
}

/// One 8-byte store (`BPF_STX | BPF_DW`) of `v` at `at`, whatever its alignment: see
/// [`load_u64`].
#[inline(always)]
pub fn store_u64(at: usize, v: u64) {
    // SAFETY: the caller has checked `at..at + 8` against the memory's end; the instruction
    // writes those eight bytes and touches nothing else.
    unsafe {
        core::arch::asm!(
            "*(u64 *)({0} + 0) = {1}",
            in(reg) at,
            in(reg) v,
            options(nostack, preserves_flags),
        )
    };
}

/// Bytes moved by one [`Packet::copy_block`]: four words under one bounds check.
pub const BLOCK_BYTES: usize = 32;

pub struct Packet {
    start: usize,
    end: usize,
}

impl Packet {
    #[inline(always)]
    pub fn new(ctx: &XdpContext) -> Self {
        Self {
            start: ctx.data(),
            end: ctx.data_end(),
        }
    }

    /// Bytes in the linear packet buffer.
    #[inline(always)]
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// A pointer to a `T` at `offset`, or `None` if the packet is too short.
    #[inline(always)]
    pub fn ptr_at<T>(&self, offset: usize) -> Option<*const T> {
        if offset > MAX_HEADER_OFFSET {
            return None;
        }
        let start = self.start + offset;
        if start + size_of::<T>() > self.end {
            return None;
        }
        Some(start as *const T)
    }

    /// The byte at `base + i`, or `None` past the packet: the question name read in place.
    /// `base` is at most [`MAX_NAME_BASE`] (the caller checks it) and `i` below 256; both are
    /// masked here, where the pointer is made, so that the verifier sees the offset's bound
    /// whatever LLVM did with the checks.
    #[inline(always)]
    pub fn byte_at(&self, base: usize, i: usize) -> Option<u8> {
        let at = self.start + (base & NAME_BASE_MASK) + (i & 0xff);
        // The end of the byte, opaque: LLVM would turn `at + 1 > end` into `at >= end`, from
        // which the verifier learns no readable range (a packet pointer's range comes from
        // its offset past the checked one, 0 here).
        if crate::scratch::opaque(at + 1) > self.end {
            return None;
        }
        // SAFETY: inside the packet, checked just above against `data_end`.
        Some(unsafe { *(at as *const u8) })
    }

    /// The eight bytes at `base + i`, in one load whatever their alignment ([`load_u64`]), or
    /// `None` past the packet: a word of the message copied into its record
    /// (`main.rs::copy_words`). `base` is at most [`MAX_HEADER_OFFSET`] and `i` below
    /// [`COPY_INDEX_MASK`]` + 1`. Both are masked where the pointer is made, so that the
    /// offset is bounded whatever the caller checked; with `copy_words`' checks LLVM proves the
    /// masks redundant and drops them, and the verifier takes the bounds from those checks. The
    /// word's end is checked through `opaque`, as in [`Self::byte_at`], for the same reason.
    #[inline(always)]
    pub fn word_at(&self, base: usize, i: usize) -> Option<u64> {
        let at = self.start + (base & COPY_BASE_MASK) + (i & COPY_INDEX_MASK);
        if crate::scratch::opaque(at + 8) > self.end {
            return None;
        }
        Some(load_u64(at))
    }

    /// Copies the [`BLOCK_BYTES`] at `base + i` in the packet to `dst`, four 8-byte loads and
    /// stores in one `asm!` block, under one check of the block's end against `data_end`: the
    /// verifier learns a 32-byte range from it, and the four loads sit at constant
    /// displacements inside it. `false` past the packet. `base` and `i` are masked as in
    /// [`Self::word_at`]; `dst..dst + 32` must be writable (the caller's bound, which the
    /// verifier checks again at each store).
    ///
    /// Per word that is a quarter of `word_at`'s check, address arithmetic and loop step: the
    /// message copy spent a third of a 210-byte response's program time in its word loop.
    #[inline(always)]
    pub fn copy_block(&self, base: usize, i: usize, dst: usize) -> bool {
        let at = self.start + (base & COPY_BASE_MASK) + (i & COPY_INDEX_MASK);
        if crate::scratch::opaque(at + BLOCK_BYTES) > self.end {
            return false;
        }
        // SAFETY: `at..at + 32` is inside the packet, checked just above; `dst..dst + 32` is
        // the caller's. The temporary is an `out` operand, so never one of the inputs.
        unsafe {
            core::arch::asm!(
                "{t} = *(u64 *)({src} + 0)",
                "*(u64 *)({dst} + 0) = {t}",
                "{t} = *(u64 *)({src} + 8)",
                "*(u64 *)({dst} + 8) = {t}",
                "{t} = *(u64 *)({src} + 16)",
                "*(u64 *)({dst} + 16) = {t}",
                "{t} = *(u64 *)({src} + 24)",
                "*(u64 *)({dst} + 24) = {t}",
                src = in(reg) at,
                dst = in(reg) dst,
                t = out(reg) _,
                options(nostack, preserves_flags),
            )
        };
        true
    }

    /// A writable pointer to a `T` at `offset`, with the same checks.
    #[inline(always)]
    pub fn ptr_at_mut<T>(&self, offset: usize) -> Option<*mut T> {
        self.ptr_at::<T>(offset).map(|p| p as *mut T)
    }
}

#[repr(C)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    /// Network byte order.
    pub ether_type: u16,
}

#[repr(C)]
pub struct VlanHdr {
    pub tci: u16,
    pub ether_type: u16,
}

#[repr(C)]
pub struct Ipv4Hdr {
    pub version_ihl: u8,
    pub tos: u8,
    pub tot_len: u16,
    pub id: u16,
    pub frag_off: u16,
    pub ttl: u8,
    pub protocol: u8,
    pub check: u16,
    pub src: [u8; 4],
    pub dst: [u8; 4],
}

pub const IP_MF: u16 = 0x2000;
pub const IP_OFFSET_MASK: u16 = 0x1fff;

#[repr(C)]
pub struct Ipv6Hdr {
    pub version_tc_flow: u32,
    pub payload_len: u16,
    pub next_header: u8,
    pub hop_limit: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
}

/// The first two bytes every IPv6 extension header shares.
#[repr(C)]
pub struct Ipv6ExtHdr {
    pub next_header: u8,
    pub hdr_ext_len: u8,
}

#[repr(C)]
pub struct Ipv6FragHdr {
    pub next_header: u8,
    pub reserved: u8,
    /// Offset (13 bits, in 8-octet units) << 3 | M flag; network byte order.
    pub frag_off_m: u16,
    pub identification: u32,
}

#[repr(C)]
pub struct UdpHdr {
    pub source: u16,
    pub dest: u16,
    pub len: u16,
    pub check: u16,
}

#[repr(C)]
pub struct TcpHdr {
    pub source: u16,
    pub dest: u16,
    pub seq: u32,
    pub ack_seq: u32,
    /// Data offset in the high nibble.
    pub doff_res: u8,
    pub flags: u8,
    pub window: u16,
    pub check: u16,
    pub urg_ptr: u16,
}

#[repr(C)]
pub struct DnsHdr {
    pub id: u16,
    pub flags: u16,
    pub qdcount: u16,
    pub ancount: u16,
    pub nscount: u16,
    pub arcount: u16,
}

/// The 2-byte length prefix of a DNS message over TCP.
#[repr(C)]
pub struct TcpDnsLen {
    pub len: u16,
}
