//! The pin folder: which maps flux-agent pins there, and whether what is there is really ours.
//!
//! The expected layout of every pinned map (type, key and value size, capacity) is read from the
//! compiled eBPF object itself, so it cannot drift from the kernel side. A pin under one of our
//! names that does not match (another tool's map, an older flux-agent with a different record
//! layout, something that is not a map) is reported, never silently reused: reusing it would make
//! the kernel read the wrong layout, or the load fail with a bare errno.

use std::path::{Path, PathBuf};

use aya::maps::MapData;
use aya_obj::maps::PinningType;
use flux_common::MAP_EVENTS;

use crate::EBPF_OBJECT;

/// One pinned map as the object defines it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    pub name: String,
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error(
        "{path} is not a flux-agent map of this version ({what}); it may belong to another tool \
         or an older flux-agent. Move it away or run `flux-agent unload --pin-dir {dir}`",
        path = .path.display(),
        dir = .path.parent().map(Path::display).map(|d| d.to_string()).unwrap_or_default()
    )]
    Foreign { path: PathBuf, what: String },
    #[error(
        "nothing is loaded: {path} does not exist (start the agent with `flux-agent run`)",
        path = .0.display()
    )]
    NotLoaded(PathBuf),
    #[error("cannot open pin {path}: {reason}", path = .path.display())]
    Open { path: PathBuf, reason: String },
    #[error(
        "permission denied: {path} can only be read by root (or with CAP_BPF); try `sudo \
         flux-agent ...`",
        path = .0.display()
    )]
    PermissionDenied(PathBuf),
    #[error(transparent)]
    Replaced(#[from] crate::kernel::map_identity::Replaced),
    #[error("cannot check which maps the attached program uses ({0}); refusing to use the pins")]
    Identity(String),
    #[error("cannot read the eBPF object's map definitions: {0}")]
    Object(String),
}

/// Every map the object pins by name.
pub fn expected() -> Result<Vec<Expected>, PinError> {
    let obj = aya_obj::Object::parse(EBPF_OBJECT).map_err(|e| PinError::Object(e.to_string()))?;
    let mut out: Vec<Expected> = obj
        .maps
        .iter()
        .filter(|(_, m)| m.pinning() == PinningType::ByName)
        .map(|(name, m)| Expected {
            name: name.clone(),
            map_type: m.map_type(),
            key_size: m.key_size(),
            value_size: m.value_size(),
            max_entries: m.max_entries(),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The names of every map the object pins (none if the object cannot be read, which `load`
/// reports on its own).
pub fn names() -> Vec<String> {
    expected()
        .map(|e| e.into_iter().map(|e| e.name).collect())
        .unwrap_or_default()
}

/// The definition of one pinned map by name.
pub fn expected_map(name: &str) -> Result<Expected, PinError> {
    expected()?
        .into_iter()
        .find(|e| e.name == name)
        .ok_or_else(|| PinError::Object(format!("no pinned map {name} in the object")))
}

/// What differs between a pinned map and its definition, or `None` when it matches. The ring
/// buffer's size is a run-time option, so only its type is compared.
pub fn mismatch(exp: &Expected, data: &MapData) -> Option<String> {
    match data.info() {
        Ok(info) => layout_mismatch(exp, &info),
        Err(e) => Some(format!("not a readable BPF map: {e}")),
    }
}

/// [`mismatch`] on a map's info already read.
fn layout_mismatch(exp: &Expected, info: &aya::maps::MapInfo) -> Option<String> {
    let found_type = info.map_type().map(|t| t as u32).unwrap_or(u32::MAX);
    let mut diffs = Vec::new();
    if found_type != exp.map_type {
        diffs.push(format!("map type {found_type}, expected {}", exp.map_type));
    }
    if exp.name != MAP_EVENTS {
        // A resizable blocklist may have been loaded with another capacity (`run
        // --max-blocked-*`); the map-id check (`map_identity`) still tells ours from another's.
        let resizable = flux_common::RESIZABLE_MAPS.contains(&exp.name.as_str());
        for (what, found, want) in [
            ("key size", info.key_size(), exp.key_size),
            ("value size", info.value_size(), exp.value_size),
            ("capacity", info.max_entries(), exp.max_entries),
        ] {
            if found != want && !(resizable && what == "capacity" && found > 0) {
                diffs.push(format!("{what} {found}, expected {want}"));
            }
        }
    }
    (!diffs.is_empty()).then(|| diffs.join(", "))
}

/// Whether `path` exists. Unlike `Path::exists`, a folder we may not look into (bpffs is 0700)
/// is "permission denied", never "nothing is loaded".
pub fn pin_exists(path: &Path) -> Result<bool, PinError> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            Err(PinError::PermissionDenied(path.to_owned()))
        }
        Err(e) => Err(PinError::Open {
            path: path.to_owned(),
            reason: e.to_string(),
        }),
    }
}

/// Opens the pinned map `name` in `pin_dir` and checks it against the object, and against the
/// map the attached program really uses ([`map_identity`](crate::kernel::map_identity)).
pub fn open(pin_dir: &Path, name: &str) -> Result<MapData, PinError> {
    let data = open_unchecked_identity(pin_dir, name)?;
    crate::kernel::map_identity::check(pin_dir, name, &data)?;
    Ok(data)
}

/// [`open`] without the identity check: the layout only.
pub fn open_unchecked_identity(pin_dir: &Path, name: &str) -> Result<MapData, PinError> {
    let path = pin_dir.join(name);
    if !pin_exists(&path)? {
        return Err(PinError::NotLoaded(path));
    }
    let data = MapData::from_pin(&path).map_err(|e| match e {
        aya::maps::MapError::SyscallError(ref s)
            if s.io_error.raw_os_error() == Some(libc::EACCES)
                || s.io_error.raw_os_error() == Some(libc::EPERM) =>
        {
            PinError::PermissionDenied(path.clone())
        }
        other => PinError::Foreign {
            path: path.clone(),
            what: format!("cannot be opened as a map: {other}"),
        },
    })?;
    if let Some(what) = mismatch(&expected_map(name)?, &data) {
        return Err(PinError::Foreign { path, what });
    }
    Ok(data)
}

/// Checks every existing pin under one of our names before a load reuses it: its layout, and
/// that it is the map the program still attached from this folder uses. A map of
/// [`REPLACEABLE_MAPS`](flux_common::REPLACEABLE_MAPS) with another layout is unpinned instead
/// ([`replace_older_layout`]), and the load creates this version's.
pub fn check_folder(pin_dir: &Path) -> Result<(), PinError> {
    let in_use = crate::kernel::map_identity::InUse::of(pin_dir)?;
    for exp in expected()? {
        let path = pin_dir.join(&exp.name);
        if pin_exists(&path)? && !replace_older_layout(&path, &exp)? {
            let data = open_unchecked_identity(pin_dir, &exp.name)?;
            in_use.check(&path, &exp.name, &data)?;
        }
    }
    Ok(())
}

fn is_front_filter(name: &str) -> bool {
    name == flux_common::MAP_FRONT_V4 || name == flux_common::MAP_FRONT_NAMES
}

/// Turns off a front filter of the older layout (an array of 8-byte words, the ready word
/// last) before its pin goes: a program still attached keeps reading it, and once it is
/// unpinned nothing can set its bits, so a block written after (if this load then fails) would
/// sit behind a clear bit. Off, that program looks every address up. `false` when the map is
/// not that layout or the write fails.
fn turn_off_old_front(data: MapData, info: &aya::maps::MapInfo) -> bool {
    if info.value_size() != 8 || info.max_entries() == 0 {
        return false;
    }
    let ready = info.max_entries() - 1;
    let Ok(mut words) = aya::maps::Array::<MapData, u64>::try_from(aya::maps::Map::Array(data))
    else {
        return false;
    };
    words.set(ready, 0, 0).is_ok()
}

/// Unpins `path` when it is a replaceable map ([`flux_common::REPLACEABLE_MAPS`]) of another
/// layout, saying so in one line; `true` when it did. Anything else is left for the usual
/// checks: a pin that is not a map, a map of the same layout (which the identity check judges),
/// any other name. The attached program keeps its own reference to the old map until the load
/// takes over from it, so nothing it uses goes away.
fn replace_older_layout(path: &Path, exp: &Expected) -> Result<bool, PinError> {
    if !flux_common::REPLACEABLE_MAPS.contains(&exp.name.as_str()) {
        return Ok(false);
    }
    let Ok(data) = MapData::from_pin(path) else {
        return Ok(false);
    };
    // A map whose info cannot be read is not replaced: the usual checks refuse it.
    let Ok(info) = data.info() else {
        return Ok(false);
    };
    let Some(what) = layout_mismatch(exp, &info) else {
        return Ok(false);
    };
    if is_front_filter(&exp.name) && !turn_off_old_front(data, &info) {
        // Not the older layout this knows how to turn off: the usual checks refuse it.
        return Ok(false);
    }
    std::fs::remove_file(path).map_err(|e| PinError::Open {
        path: path.to_owned(),
        reason: format!("cannot unpin an older layout ({what}): {e}"),
    })?;
    let lost = if exp.name == flux_common::MAP_QUERIES {
        "the queries in flight it held are forgotten (their replies arrive unsolicited)"
    } else {
        "the new map is filled from the blocklists at open"
    };
    log::warn!(
        "{}: not this version's layout ({what}; an older flux-agent's, say): replaced by \
         this version's map, and {lost}",
        path.display()
    );
    Ok(true)
}
