//! Reading the kernel counters from the pinned per-CPU map.

use std::path::Path;

use aya::maps::{Map, MapData, PerCpuArray};
use flux_common::{Counter, MAP_COUNTERS};
use serde::Serialize;

use crate::kernel::loader::lock_pin_dir;

#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error(
        "no flux-agent is loaded: {0} has no pinned counters (start one with `cargo xtask run`)"
    )]
    NotLoaded(String),
    #[error("cannot read pinned counters at {path}: {reason}")]
    Read { path: String, reason: String },
}

#[derive(Debug, Serialize)]
pub struct Stats {
    pub pin_dir: String,
    /// Whether an agent holds the pin folder now (pins can outlive a crashed agent).
    pub agent_running: bool,
    /// Counter name to the sum over CPUs, in [`Counter::ALL`] order.
    pub counters: Vec<(&'static str, u64)>,
}

/// Sums every counter over all CPUs.
pub fn read(pin_dir: &Path) -> Result<Stats, StatsError> {
    let path = pin_dir.join(MAP_COUNTERS);
    if !path.exists() {
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
    Ok(Stats {
        pin_dir: pin_dir.display().to_string(),
        agent_running,
        counters,
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
