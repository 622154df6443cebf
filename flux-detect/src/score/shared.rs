//! Addresses of keys judged flux, remembered so that other domains resolving to the same bots
//! are suspected sooner (the shared-bot term of the model).

use super::{key_state::fingerprint, table::KeyTable};

pub use super::params::{INFRA_STABLE_DOMAINS, MAX_FLUX_IPS};

/// Bits in the membership filter: 256 KiB, small enough to stay in cache. Each address sets
/// two bits of one 64-bit word (a blocked Bloom filter: one memory access per probe). With the
/// table full about 5% of non-bots pass it (a single bit in 128 KiB let 22% through, and flux
/// keys keep adding the bots they show).
const FILTER_BITS: usize = 1 << 21;

/// One bot: the domain that showed it, and the distinct stable domains seen on it (0 marks a
/// free slot; a domain id of 0 is counted as 1, a negligible merge).
#[derive(Clone, Copy, Debug)]
struct Bot {
    owner: u32,
    stable_users: [u32; INFRA_STABLE_DOMAINS as usize],
}

impl Bot {
    fn infrastructure(&self) -> bool {
        self.stable_users.iter().all(|u| *u != 0)
    }
}

/// Flux addresses and the domain (id) that flagged each, with a bit filter in front: nearly
/// every address a rescore asks about is not a bot, and the filter answers that without
/// probing the (cache-cold) table.
pub struct FluxIps {
    table: KeyTable<[u8; 16], Bot>,
    filter: Box<[u64]>,
    /// Inserts since the filter was rebuilt; evicted addresses leave stale bits behind.
    inserts: usize,
    /// Addresses ever added: a different value means new bots since it was read.
    added: u64,
    /// Bots that turned out to be shared infrastructure, ever.
    infrastructure: u64,
}

impl Default for FluxIps {
    fn default() -> Self {
        Self {
            table: KeyTable::new(MAX_FLUX_IPS),
            filter: vec![0u64; FILTER_BITS / 64].into_boxed_slice(),
            inserts: 0,
            added: 0,
            infrastructure: 0,
        }
    }
}

/// The filter word of an address and the two bits it sets in it.
fn bit(ip: &[u8; 16]) -> (usize, u64) {
    bit_of(fingerprint(ip))
}

/// [`bit`] from the address's key fingerprint (`key_state::fingerprint`): a key asks the filter
/// about each of its addresses at every re-score, and it holds their fingerprints densely, so
/// the address's bytes are only put together for the few that pass.
fn bit_of(fp: u32) -> (usize, u64) {
    let h = u64::from(fp).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let word = (h >> 49) as usize; // the top 15 bits: 32,768 words
    let (a, b) = ((h >> 43) & 63, (h >> 37) & 63);
    (word, (1u64 << a) | (1u64 << b))
}

fn set_bit(filter: &mut [u64], ip: &[u8; 16]) {
    let (w, b) = bit(ip);
    if let Some(word) = filter.get_mut(w) {
        *word |= b;
    }
}

impl FluxIps {
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Remembers a bot and the domain that showed it. The first domain keeps it: a domain
    /// judged flux *because* it shares this bot must not take the bot over, or its own
    /// evidence would vanish at its next rescore (a key's own addresses prove nothing).
    pub fn insert(&mut self, ip: [u8; 16], owner: u32) {
        let bot = Bot {
            owner,
            stable_users: [0; INFRA_STABLE_DOMAINS as usize],
        };
        if self.insert_bot(ip, bot) {
            self.added += 1;
        }
    }

    /// Adds a bot unless the address is one already (the first owner keeps it); whether it
    /// was added.
    fn insert_bot(&mut self, ip: [u8; 16], bot: Bot) -> bool {
        let (_, created, _) = self.table.get_or_insert_with(ip, || bot);
        if !created {
            return false;
        }
        self.inserts += 1;
        if self.inserts > MAX_FLUX_IPS {
            // Every entry has been replaced at least once since the last rebuild: drop the
            // stale bits so the filter keeps filtering.
            self.filter.fill(0);
            for ip in self.table.keys() {
                set_bit(&mut self.filter, ip);
            }
            self.inserts = 0;
        }
        set_bit(&mut self.filter, &ip);
        true
    }

    /// Every bot, least recently added first, for snapshots: (address, owner domain id, the
    /// stable domains seen on it, 0 for none yet).
    pub(super) fn bots_oldest_first(&self) -> impl Iterator<Item = (&[u8; 16], u32, &[u32])> {
        self.table
            .entries_oldest_first()
            .into_iter()
            .map(|(ip, bot)| (ip, bot.owner, &bot.stable_users[..]))
    }

    /// Puts back a bot as a snapshot held it (`stable_users` beyond the table's slots are
    /// ignored). Counts nothing: [`Self::set_counters`] restores the counters. Whether it was
    /// added (false: the address was a bot already).
    pub(super) fn restore_bot(&mut self, ip: [u8; 16], owner: u32, stable_users: &[u32]) -> bool {
        let mut bot = Bot {
            owner,
            stable_users: [0; INFRA_STABLE_DOMAINS as usize],
        };
        for (slot, u) in bot.stable_users.iter_mut().zip(stable_users) {
            *slot = *u;
        }
        self.insert_bot(ip, bot)
    }

    /// The counters a snapshot keeps: addresses ever added, bots found to be infrastructure.
    pub(super) fn counters(&self) -> (u64, u64) {
        (self.added, self.infrastructure)
    }

    /// Sets the counters of [`Self::counters`] (after a restore).
    pub(super) fn set_counters(&mut self, added: u64, infrastructure: u64) {
        self.added = added;
        self.infrastructure = infrastructure;
    }

    /// Bots that turned into shared infrastructure, ever: while 0, a key can trust what the
    /// table told it about an address before.
    pub fn infrastructure_found(&self) -> u64 {
        self.infrastructure
    }

    /// Addresses ever added (see [`Scorer`](super::Scorer)'s sweep of watched keys).
    pub fn added(&self) -> u64 {
        self.added
    }

    /// The domain id that flagged this address, if it is a bot (not an address that turned
    /// out to be shared infrastructure).
    pub fn owner(&self, ip: &[u8; 16]) -> Option<u32> {
        if !self.may_hold(ip) {
            return None;
        }
        self.table
            .peek(ip)
            .filter(|bot| !bot.infrastructure())
            .map(|bot| bot.owner)
    }

    /// A domain with a stable answer resolves to this address (if it is a bot): after
    /// [`INFRA_STABLE_DOMAINS`] of them it is shared infrastructure and no longer a bot.
    pub fn note_stable_user(&mut self, ip: &[u8; 16], user: u32) {
        if !self.may_hold(ip) {
            return;
        }
        let user = user.max(1);
        if let Some(bot) = self.table.peek_mut(ip)
            && user != bot.owner
            && !bot.stable_users.contains(&user)
            && let Some(slot) = bot.stable_users.iter_mut().find(|u| **u == 0)
        {
            *slot = user;
            if bot.infrastructure() {
                self.infrastructure += 1;
            }
        }
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// What the filter says: false means the address is certainly not in the table.
    fn may_hold(&self, ip: &[u8; 16]) -> bool {
        self.may_hold_fingerprint(fingerprint(ip))
    }

    /// [`Self::may_hold`] for the address whose `key_state::fingerprint` is `fp`.
    pub(super) fn may_hold_fingerprint(&self, fp: u32) -> bool {
        let (w, b) = bit_of(fp);
        self.filter.get(w).is_some_and(|word| word & b == b)
    }

    /// Whether an address is a bot that turned out to be shared infrastructure.
    pub fn is_infrastructure(&self, ip: &[u8; 16]) -> bool {
        self.table.peek(ip).is_some_and(Bot::infrastructure)
    }

    /// Bytes of the table and the filter.
    pub fn heap_bytes(&self) -> usize {
        self.table.table_bytes() + self.filter.len() * size_of::<u64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_owners_and_filters_the_rest() {
        let mut f = FluxIps::default();
        assert!(f.is_empty());
        let a = [1u8; 16];
        let b = [2u8; 16];
        f.insert(a, 7);
        assert_eq!(f.owner(&a), Some(7));
        assert_eq!(f.owner(&b), None);
        assert_eq!(f.len(), 1);
        f.insert(a, 9);
        assert_eq!(f.owner(&a), Some(7), "the first owner keeps a bot");
    }

    #[test]
    fn rebuilt_filter_keeps_live_entries() {
        let mut f = FluxIps::default();
        for i in 0..(MAX_FLUX_IPS as u32 + 10) {
            let mut ip = [0u8; 16];
            ip[..4].copy_from_slice(&i.to_le_bytes());
            f.insert(ip, i);
        }
        let mut last = [0u8; 16];
        last[..4].copy_from_slice(&(MAX_FLUX_IPS as u32 + 9).to_le_bytes());
        assert_eq!(f.owner(&last), Some(MAX_FLUX_IPS as u32 + 9));
        assert_eq!(f.len(), MAX_FLUX_IPS, "bounded: 10 evicted");
        // After the rebuild the filter still lets every live entry through.
        for &ip in f.table.keys() {
            assert!(f.owner(&ip).is_some());
        }
    }
}
