//! The occupancy slots (`flux_common::MAP_OCCUPANCY`): which blocklist maps may hold entries, so
//! that the kernel skips the lookups of the empty ones. [`Maps`] keeps them right here, on
//! every insert, removal and open; nothing else in the agent writes them.
//!
//! The invariant (see `MAP_OCCUPANCY`): a map holding an entry has a non-zero slot. A slot is set
//! after the insert it covers; after a removal that leaves the map empty the slot is cleared and
//! the map looked at again, and set back if an entry arrived in between. Two writers (the agent
//! and `flux-agent blocklist`) can therefore never leave entries behind a 0 slot; at worst a slot
//! stays set over an empty map until the next removal, which only costs the kernel a lookup.
//!
//! May touch: the pinned OCCUPANCY map (written), and the blocklist maps of [`Maps`] (read, to
//! see whether they are empty).

use std::path::Path;

use aya::maps::{Array, Map, MapData};
use flux_common::{MAP_OCCUPANCY, Occupied};

use super::{BlocklistError, Maps, Target, map_err, v4};
use crate::kernel::pins::{self, PinError};

/// The pinned occupancy slots, or none when the folder's program predates them (it looks every
/// map up, so there is nothing to keep).
pub(super) struct Occupancy(Option<Array<MapData, u32>>);

impl Occupancy {
    pub(super) fn open(pin_dir: &Path) -> Result<Self, BlocklistError> {
        match pins::open(pin_dir, MAP_OCCUPANCY) {
            Ok(data) => Array::try_from(Map::Array(data))
                .map(|a| Self(Some(a)))
                .map_err(map_err("open", MAP_OCCUPANCY)),
            Err(PinError::NotLoaded(_)) => Ok(Self(None)),
            Err(e) => Err(e.into()),
        }
    }

    fn set(&mut self, slot: Occupied, occupied: bool) -> Result<(), BlocklistError> {
        match &mut self.0 {
            Some(a) => a
                .set(slot as u32, u32::from(occupied), 0)
                .map_err(map_err("update", MAP_OCCUPANCY)),
            None => Ok(()),
        }
    }

    /// The slot as the kernel reads it; `None` when there are no slots.
    fn get(&self, slot: Occupied) -> Result<Option<bool>, BlocklistError> {
        match &self.0 {
            Some(a) => a
                .get(&(slot as u32), 0)
                .map(|v| Some(v != 0))
                .map_err(map_err("read", MAP_OCCUPANCY)),
            None => Ok(None),
        }
    }
}

/// Which of a target's maps: its blocklist or its allowlist.
#[derive(Clone, Copy)]
pub(super) enum List {
    Blocked,
    Allowed,
}

/// The slot of the map that holds `t` in `list`. An address is allowed as a host-length CIDR.
pub(super) fn slot_of(t: &Target, list: List) -> Occupied {
    let is_v4 = match t {
        Target::Ip(ip) | Target::Cidr(ip, _) => v4(ip).is_some(),
        Target::Domain(_) => {
            return match list {
                List::Blocked => Occupied::BlockedDomains,
                List::Allowed => Occupied::AllowedDomains,
            };
        }
    };
    match (t, list, is_v4) {
        (Target::Ip(_), List::Blocked, true) => Occupied::BlockedV4,
        (Target::Ip(_), List::Blocked, false) => Occupied::BlockedV6,
        (_, List::Blocked, true) => Occupied::BlockedCidrV4,
        (_, List::Blocked, false) => Occupied::BlockedCidrV6,
        (_, List::Allowed, true) => Occupied::AllowedCidrV4,
        (_, List::Allowed, false) => Occupied::AllowedCidrV6,
    }
}

impl Maps {
    /// Whether the map behind `slot` holds no entry. A read error counts as "not empty": the
    /// slot then stays set, the safe side.
    pub(super) fn map_empty(&self, slot: Occupied) -> bool {
        fn none<T, E>(mut keys: impl Iterator<Item = Result<T, E>>) -> bool {
            keys.next().is_none()
        }
        match slot {
            Occupied::BlockedV4 => none(self.v4.keys()),
            Occupied::BlockedV6 => none(self.v6.keys()),
            Occupied::BlockedCidrV4 => none(self.cidr4.keys()),
            Occupied::BlockedCidrV6 => none(self.cidr6.keys()),
            Occupied::AllowedCidrV4 => none(self.allow4.keys()),
            Occupied::AllowedCidrV6 => none(self.allow6.keys()),
            Occupied::BlockedDomains => none(self.domains.keys()),
            Occupied::AllowedDomains => none(self.allow_domains.keys()),
        }
    }

    /// Whether both IPv4 blocklists are empty (read errors count as not empty).
    pub(super) fn v4_maps_empty(&self) -> bool {
        self.map_empty(Occupied::BlockedV4) && self.map_empty(Occupied::BlockedCidrV4)
    }

    /// At open: sets the slot of every map that holds entries. Pins from a run whose slots were
    /// lost (or never written) are made right before anything relies on them. Never clears:
    /// clearing is [`Maps::settle`]'s, after a removal. A failure is logged, not returned: a
    /// reader without write access (`explain`, `top`) still opens the maps, and every writer
    /// sets the slot of what it inserts anyway.
    pub(super) fn mark_occupied(&mut self) {
        for slot in Occupied::ALL {
            if !self.map_empty(slot)
                && let Err(e) = self.occupancy.set(slot, true)
            {
                log::warn!("cannot mark {} as holding entries: {e}", slot.map_name());
            }
        }
    }

    /// After an insert of `t` into `list`: its map's slot is set, and for an IPv4 or domain
    /// block its front-filter bits (`front_filter.rs`).
    pub(super) fn mark(&mut self, t: &Target, list: List) -> Result<(), BlocklistError> {
        if let List::Blocked = list {
            self.cover(t)?;
        }
        self.occupancy.set(slot_of(t, list), true)
    }

    /// After a removal of `t` from `list`: if its map is now empty the slot is cleared, then the
    /// map is looked at again and the slot set back if another writer inserted meanwhile.
    pub(super) fn settle(&mut self, t: &Target, list: List) -> Result<(), BlocklistError> {
        let slot = slot_of(t, list);
        if !self.map_empty(slot) {
            return Ok(());
        }
        self.occupancy.set(slot, false)?;
        if !self.map_empty(slot) {
            self.occupancy.set(slot, true)?;
        }
        Ok(())
    }

    /// Each slot as the kernel reads it (`None` when the loaded program has none): for tests and
    /// diagnostics.
    pub fn occupancy(&self) -> Result<Vec<(Occupied, Option<bool>)>, BlocklistError> {
        Occupied::ALL
            .into_iter()
            .map(|s| self.occupancy.get(s).map(|v| (s, v)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_has_the_slot_of_the_map_it_is_written_to() {
        let ip4 = Target::ip("192.0.2.1").unwrap();
        let ip6 = Target::ip("2001:db8::1").unwrap();
        let net4 = Target::cidr("192.0.2.0/24").unwrap();
        let net6 = Target::cidr("2001:db8::/32").unwrap();
        let dom = Target::domain("flux.test").unwrap();
        let b = |t: &Target| slot_of(t, List::Blocked);
        let a = |t: &Target| slot_of(t, List::Allowed);
        assert_eq!(b(&ip4), Occupied::BlockedV4);
        assert_eq!(b(&ip6), Occupied::BlockedV6);
        assert_eq!(b(&net4), Occupied::BlockedCidrV4);
        assert_eq!(b(&net6), Occupied::BlockedCidrV6);
        assert_eq!(b(&dom), Occupied::BlockedDomains);
        // Maps::allow writes an address as a host-length CIDR.
        assert_eq!(a(&ip4), Occupied::AllowedCidrV4);
        assert_eq!(a(&ip6), Occupied::AllowedCidrV6);
        assert_eq!(a(&net4), Occupied::AllowedCidrV4);
        assert_eq!(a(&dom), Occupied::AllowedDomains);
    }
}
