//! BPF_PROG_TEST_RUN harness: the real, verified `flux_xdp` (and `flux_egress`) programs loaded
//! into a pin folder of their own, one frame run at a time, with the counters that moved and
//! the ring-buffer records written. Shared by `tests/tests/xdp_test_run.rs` (crafted frames)
//! and `tests/tests/kernel_userspace_agree.rs` (every frame of the shared captures). Touches
//! only the maps and programs of the object it loads.

use aya::{
    TestRunOptions,
    maps::{
        Array as AyaArray, HashMap as AyaHashMap, MapData, PerCpuArray, RingBuf, lpm_trie::LpmTrie,
    },
    programs::{SchedClassifier, TestRun as _, Xdp},
};
use flux_agent::{
    enforce::maps,
    kernel::loader::{LoadOptions, Loaded},
    kernel::ring_records::Capture,
};
use flux_common::{
    BlockEntry, Counter, DnsEventHeader, DropCacheSlot, FRONT_NAMES_SLOTS, FRONT_V4_SLOTS,
    MAP_BLOCKED_CIDR_V4, MAP_BLOCKED_DOMAINS, MAP_BLOCKED_V4, MAP_DROP_CACHE_V4, MAP_FRONT_NAMES,
    MAP_FRONT_V4, MAP_OCCUPANCY, MAP_VERDICT_GEN, Occupied, PROG_EGRESS, PROG_XDP, RECORD_SIZES,
    VERDICT_GEN_STEP, drop_cache_slot,
};

use crate::{PinDir, load_with_ring};

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
/// `TC_ACT_UNSPEC`, which tcx reads as `TCX_NEXT`: the packet goes on.
pub const TC_NEXT: u32 = -1i32 as u32;
pub const TC_SHOT: u32 = 2;

/// The loaded object, its ring buffer, and the pin folder removed on drop.
pub struct Harness {
    pub loaded: Loaded,
    ring: RingBuf<MapData>,
    _pin: PinDir,
}

/// One BPF_PROG_TEST_RUN: the verdict, the counters that changed, the records emitted, and the
/// frame as the program left it.
pub struct Ran {
    pub verdict: u32,
    pub delta: Vec<(Counter, u64)>,
    pub events: Vec<Capture>,
    pub out: Vec<u8>,
}

impl Harness {
    /// Loads with the default options and the DNS source ports `ports`.
    pub fn new(ports: &[u16]) -> Self {
        Self::load(LoadOptions {
            dns_ports: ports.to_vec(),
            ..Default::default()
        })
    }

    /// Loads as the agent runs by default: every reply matched to the query that left for it,
    /// and marked unsolicited when none did (`QueryMatch::Mark`).
    pub fn matching_queries() -> Self {
        Self::load(LoadOptions {
            queries: flux_agent::kernel::loader::QueryMatch::Mark,
            ..Default::default()
        })
    }

    /// Loads with `opts` into a pin folder of its own.
    pub fn load(opts: LoadOptions) -> Self {
        let pin = PinDir::new();
        let (loaded, ring) = load_with_ring(LoadOptions {
            pin_dir: pin.0.clone(),
            ..opts
        })
        .expect("load flux-ebpf");
        Self {
            loaded,
            ring,
            _pin: pin,
        }
    }

    /// Every counter, summed over the CPUs.
    pub fn counters(&self) -> [u64; Counter::COUNT] {
        let mut out = [0u64; Counter::COUNT];
        for c in Counter::ALL {
            out[c as usize] = crate::kernel_counter(&self.loaded.ebpf, c).expect("read COUNTERS");
        }
        out
    }

    /// Runs one frame; returns the verdict, the counters that changed, and the records emitted.
    pub fn run(&mut self, frame: &[u8]) -> (u32, Vec<(Counter, u64)>, Vec<Capture>) {
        let r = self.run_out(frame);
        (r.verdict, r.delta, r.events)
    }

    /// Asserts PASS, exactly `expect` beside packets_seen, and returns the records.
    #[track_caller]
    pub fn check(&mut self, name: &str, frame: &[u8], expect: &[Counter]) -> Vec<Capture> {
        let (verdict, delta, events) = self.run(frame);
        assert_eq!(verdict, XDP_PASS, "{name}: verdict");
        let mut want: Vec<(Counter, u64)> = vec![(Counter::PacketsSeen, 1)];
        want.extend(expect.iter().map(|c| (*c, 1)));
        want.sort_by_key(|(c, _)| *c as u32);
        assert_eq!(delta, want, "{name}: counters");
        let captured = expect.contains(&Counter::ResponsesCaptured);
        assert_eq!(events.len(), usize::from(captured), "{name}: records");
        events
    }

    /// Sets the occupancy slot of map `name` (`flux_common::MAP_OCCUPANCY`), so that the kernel
    /// looks it up. The raw map handles below bypass `Maps`, which keeps the slots otherwise; a
    /// slot set over an empty map only costs a lookup.
    ///
    /// A raw write to an IPv4 blocklist also turns the front filter off (its ready word to 0,
    /// `flux_common::MAP_FRONT_V4`): those writes set no filter bits, and the kernel must then
    /// look every address up. Opening `Maps` ([`Harness::maps`]) fills it and turns it on again.
    /// A raw write to the domain blocklist does the same to the domain filter
    /// (`flux_common::MAP_FRONT_NAMES`).
    ///
    /// Every raw handle also advances the verdict generation (`flux_common::MAP_VERDICT_GEN`),
    /// as `Maps` does after its writes, so that no drop the kernel cached before the write is
    /// trusted after it. Taken before the write, not after: the tests run one frame at a time,
    /// so no packet runs between the two.
    /// Writes front filter `map` (one value of `N` words) all zero: not ready, no bits. The
    /// value is built on the heap (2 MiB for the IPv4 filter).
    fn turn_front_off<const N: usize>(&mut self, map: &str) {
        let zero: Box<[u64; N]> = vec![0u64; N]
            .into_boxed_slice()
            .try_into()
            .expect("N words");
        let mut front: AyaArray<&mut MapData, [u64; N]> =
            AyaArray::try_from(self.loaded.ebpf.map_mut(map).expect(map)).expect(map);
        // By reference: by value the 2 MiB would be copied through the stack.
        front
            .set(0, zero.as_ref(), 0)
            .expect("turn the front filter off");
    }

    pub fn mark_occupied(&mut self, name: &str) {
        self.advance_generation();
        if name == MAP_BLOCKED_V4 || name == MAP_BLOCKED_CIDR_V4 {
            self.turn_front_off::<{ FRONT_V4_SLOTS as usize }>(MAP_FRONT_V4);
        } else if name == MAP_BLOCKED_DOMAINS {
            self.turn_front_off::<{ FRONT_NAMES_SLOTS as usize }>(MAP_FRONT_NAMES);
        }
        let Some(slot) = Occupied::of_map(name) else {
            return;
        };
        let mut slots: AyaArray<&mut MapData, u32> = AyaArray::try_from(
            self.loaded
                .ebpf
                .map_mut(MAP_OCCUPANCY)
                .expect(MAP_OCCUPANCY),
        )
        .expect(MAP_OCCUPANCY);
        slots.set(slot as u32, 1, 0).expect("set occupancy slot");
    }

    /// Advances the verdict generation by a read and a write (the raw maps' way; `Maps` adds
    /// through an mmap).
    pub fn advance_generation(&mut self) {
        let mut generation: AyaArray<&mut MapData, u64> = AyaArray::try_from(
            self.loaded
                .ebpf
                .map_mut(MAP_VERDICT_GEN)
                .expect(MAP_VERDICT_GEN),
        )
        .expect(MAP_VERDICT_GEN);
        let g = generation.get(&0, 0).expect("read the generation");
        generation
            .set(0, g + VERDICT_GEN_STEP, 0)
            .expect("advance the generation");
    }

    /// The hits of the exact IPv4 block on `addr`: the entry's, and the drops the drop cache
    /// (`flux_common::MAP_DROP_CACHE_V4`) made for it on every CPU that its entry does not count
    /// yet. Only `addr`'s own slot is read: the cache is direct-mapped (`drop_cache_slot`), and
    /// reading all 1,024 slots, a syscall each, made a test that asks after every frame take
    /// minutes. A program that kept an address's hits in another slot would show them lost.
    pub fn v4_hits(&mut self, addr: [u8; 4]) -> u64 {
        let entry = AyaHashMap::<_, [u8; 4], BlockEntry>::try_from(
            self.loaded.ebpf.map(MAP_BLOCKED_V4).expect(MAP_BLOCKED_V4),
        )
        .expect(MAP_BLOCKED_V4)
        .get(&addr, 0)
        .expect("the address is blocked")
        .hits;
        let cache: PerCpuArray<_, DropCacheSlot> = PerCpuArray::try_from(
            self.loaded
                .ebpf
                .map(MAP_DROP_CACHE_V4)
                .expect(MAP_DROP_CACHE_V4),
        )
        .expect(MAP_DROP_CACHE_V4);
        let pending: u64 = cache
            .get(&drop_cache_slot(addr), 0)
            .expect("read the drop cache")
            .iter()
            .filter(|s| s.addr == addr)
            .map(|s| u64::from(s.pending))
            .sum();
        entry + pending
    }

    /// An exact-address blocklist of the loaded object (its occupancy slot set).
    pub fn blocked<K: aya::Pod>(&mut self, name: &str) -> AyaHashMap<&mut MapData, K, BlockEntry> {
        self.mark_occupied(name);
        AyaHashMap::try_from(self.loaded.ebpf.map_mut(name).expect(name)).expect(name)
    }

    /// A CIDR trie (blocked or allowed) of the loaded object (its occupancy slot set).
    pub fn trie<K: aya::Pod, V: aya::Pod>(&mut self, name: &str) -> LpmTrie<&mut MapData, K, V> {
        self.mark_occupied(name);
        LpmTrie::try_from(self.loaded.ebpf.map_mut(name).expect(name)).expect(name)
    }

    /// The pinned blocklists, as the CLI and the enforcer open them.
    pub fn maps(&self) -> maps::Maps {
        maps::Maps::open(&self.loaded.pin_dir).expect("open pinned maps")
    }

    /// Runs one frame through the program.
    pub fn run_out(&mut self, frame: &[u8]) -> Ran {
        self.try_run_out(frame).expect("BPF_PROG_TEST_RUN")
    }

    /// [`Harness::run_out`], returning the kernel's refusal (a frame under 14 bytes, or larger
    /// than one page holds) instead of panicking. Records already in the ring are drained.
    pub fn try_run_out(&mut self, frame: &[u8]) -> Result<Ran, aya::programs::ProgramError> {
        let before = self.counters();
        let res = self.test_run(PROG_XDP, frame, 1);
        let delta = counter_delta(&before, &self.counters());
        let mut events = Vec::new();
        while let Some(item) = self.ring.next() {
            let c = Capture::from_record(&item).expect("well-formed record");
            // The kernel reserves the smallest record size that holds the captured message.
            let need = size_of::<DnsEventHeader>() + usize::from(c.header.cap_len);
            let size = RECORD_SIZES.into_iter().find(|s| *s >= need);
            assert_eq!(Some(item.len()), size, "record size for {need} bytes");
            events.push(c);
        }
        let (verdict, out) = res?;
        Ok(Ran {
            verdict,
            delta,
            events,
            out,
        })
    }

    /// One BPF_PROG_TEST_RUN of `frame`, `repeat` times, through the XDP program `prog`
    /// (loaded first if it is not yet: the floor programs): its verdict and the frame as the
    /// program left it. The ring is left to the caller.
    fn test_run(
        &mut self,
        prog: &str,
        frame: &[u8],
        repeat: u32,
    ) -> Result<(u32, Vec<u8>), aya::programs::ProgramError> {
        let program: &mut Xdp = self
            .loaded
            .ebpf
            .program_mut(prog)
            .expect("program")
            .try_into()
            .expect("xdp");
        if program.fd().is_err() {
            program.load()?;
        }
        let mut out = vec![0u8; frame.len() + 256];
        let res = program.test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat,
            ..TestRunOptions::default()
        })?;
        out.truncate(res.data_size_out as usize);
        Ok((res.return_value, out))
    }

    /// Runs one frame through the XDP program `prog` of the object: its verdict and the frame
    /// as the program left it.
    pub fn test_run_out(&mut self, prog: &str, frame: &[u8]) -> (u32, Vec<u8>) {
        self.test_run(prog, frame, 1).expect("BPF_PROG_TEST_RUN")
    }

    /// Runs one frame through another XDP program of the object, `prog` (the benchmarks' floor
    /// programs): its verdict and the ring-buffer records it wrote, raw (a floor's record is no
    /// capture).
    pub fn run_prog(&mut self, prog: &str, frame: &[u8]) -> (u32, Vec<Vec<u8>>) {
        self.run_prog_repeat(prog, frame, 1)
    }

    /// [`Harness::run_prog`], the frame run `repeat` times in one test run (at most what the
    /// ring holds of its records).
    pub fn run_prog_repeat(
        &mut self,
        prog: &str,
        frame: &[u8],
        repeat: u32,
    ) -> (u32, Vec<Vec<u8>>) {
        let (verdict, _) = self
            .test_run(prog, frame, repeat)
            .expect("BPF_PROG_TEST_RUN");
        let mut records = Vec::new();
        while let Some(item) = self.ring.next() {
            records.push(item.to_vec());
        }
        (verdict, records)
    }

    /// Runs one frame through the TC egress program: its verdict and the counters that moved.
    pub fn run_egress(&mut self, frame: &[u8]) -> (u32, Vec<(Counter, u64)>) {
        let before = self.counters();
        let prog: &mut SchedClassifier = self
            .loaded
            .ebpf
            .program_mut(PROG_EGRESS)
            .expect("egress program loaded")
            .try_into()
            .expect("classifier");
        let res = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                ..TestRunOptions::default()
            })
            .expect("BPF_PROG_TEST_RUN");
        let delta = counter_delta(&before, &self.counters());
        (res.return_value, delta)
    }
}

/// The counters that moved between two readings, and by how much.
pub fn counter_delta(
    before: &[u64; Counter::COUNT],
    after: &[u64; Counter::COUNT],
) -> Vec<(Counter, u64)> {
    Counter::ALL
        .iter()
        .filter(|c| after[**c as usize] != before[**c as usize])
        .map(|c| (*c, after[*c as usize] - before[*c as usize]))
        .collect()
}
