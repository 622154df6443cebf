//! Reading the kernel counters from the pinned per-CPU map, and whether the pins are the
//! attached program's maps.

use std::path::Path;

use aya::maps::{Map, MapData, PerCpuArray};
use flux_common::{Counter, MAP_COUNTERS};
use serde::Serialize;

use crate::kernel::{
    iface_states::{self, IfaceState},
    loader::lock_pin_dir,
    map_identity::{self, Replaced},
    pins::pin_exists,
};

#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error(
        "no flux-agent is loaded: {0} has no pinned counters (start one with `cargo xtask run`)"
    )]
    NotLoaded(String),
    #[error("cannot read pinned counters at {path}: {reason}")]
    Read { path: String, reason: String },
    #[error(transparent)]
    Pin(#[from] crate::kernel::pins::PinError),
}

#[derive(Debug, Serialize)]
pub struct Stats {
    pub pin_dir: String,
    /// Whether an agent holds the pin folder now (pins can outlive a crashed agent).
    pub agent_running: bool,
    /// Counter name to the sum over CPUs, in [`Counter::ALL`] order.
    pub counters: Vec<(&'static str, u64)>,
    /// Pins that are not the maps the attached program uses (`map_identity`).
    pub replaced: Vec<Replaced>,
    /// Every interface and whether it is attached: the running agent's view, else what the
    /// link pins say (without `since`).
    pub interfaces: Vec<IfaceState>,
}

/// Sums every counter over all CPUs.
pub fn read(pin_dir: &Path) -> Result<Stats, StatsError> {
    let path = pin_dir.join(MAP_COUNTERS);
    if !pin_exists(&path)? {
        return Err(StatsError::NotLoaded(pin_dir.display().to_string()));
    }
    let err = |reason: String| StatsError::Read {
        path: path.display().to_string(),
        reason,
    };
    let data = MapData::from_pin(&path).map_err(|e| err(e.to_string()))?;
    let map: PerCpuArray<_, u64> =
        PerCpuArray::try_from(Map::PerCpuArray(data)).map_err(|e| err(e.to_string()))?;
    let mut counters = Vec::with_capacity(Counter::COUNT);
    for c in Counter::ALL {
        let values = map.get(&(c as u32), 0).map_err(|e| err(e.to_string()))?;
        counters.push((c.name(), values.iter().sum()));
    }
    // If we can take the lock, nobody holds it.
    let agent_running = matches!(lock_pin_dir(pin_dir), Ok(None));
    let interfaces = agent_running
        .then(|| iface_states::read_state_file(pin_dir))
        .flatten()
        .unwrap_or_else(|| iface_states::from_link_pins(pin_dir));
    Ok(Stats {
        interfaces,
        pin_dir: pin_dir.display().to_string(),
        agent_running,
        counters,
        replaced: map_identity::replaced(pin_dir)?,
    })
}

impl Stats {
    pub fn get(&self, c: Counter) -> u64 {
        self.counters
            .iter()
            .find(|(n, _)| *n == c.name())
            .map_or(0, |(_, v)| *v)
    }
}
