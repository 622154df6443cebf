//! Interfaces come and go: the state of every interface the agent was asked to attach to
//! (attached, absent, failed), kept up to date from link events, and re-attaching when an
//! interface of the same name returns.
//!
//! When an interface is removed the kernel detaches our programs from it (their links stay
//! pinned, detached): that is logged, the interface is marked absent and its dead link pins are
//! removed. When an interface of that name appears again (a new ifindex) the XDP program, and
//! the TC egress program when this run loads it, are attached again: the same loaded programs
//! over the same pinned maps, so every block is enforced again at once. A re-attach that fails
//! is logged and shown as `failed`, and the agent keeps running.
//!
//! The states are written to a small JSON file beside the control socket
//! (`/run/flux-agent/<pin folder>.ifaces.json`, root only), which `flux-agent stats` reads while
//! the agent runs. Without a running agent, `stats` derives what it can from the link pins
//! ([`from_link_pins`]).
//!
//! May touch: the attachments of [`Loaded`] (netlink, bpffs) and that one state file.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    time::SystemTime,
};

use flux_detect::timestamp::rfc3339;
use log::{info, warn};
use serde::{Deserialize, Serialize};

use crate::{
    control::CONTROL_DIR,
    kernel::{
        interfaces::Interface,
        loader::{AttachMode, Hook, Loaded, XDP_LINK_PREFIX},
        xdp_owner,
    },
};

/// Where an interface stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Our programs are attached and enforcing.
    Attached,
    /// No interface of that name exists: nothing is enforced on it until it returns.
    Absent,
    /// It exists, but attaching failed (see `error`): nothing is enforced on it.
    Failed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Attached => "attached",
            State::Absent => "absent",
            State::Failed => "failed",
        }
    }
}

/// One interface's state, as `stats` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IfaceState {
    pub name: String,
    pub state: State,
    /// Its index when it exists.
    pub ifindex: Option<u32>,
    /// When it entered this state (RFC 3339), when known.
    pub since: Option<String>,
    /// Why attaching failed.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
}

/// The state file of the agent using `pin_dir`.
pub fn state_path(pin_dir: &Path) -> PathBuf {
    let name = pin_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "flux-agent".into());
    Path::new(CONTROL_DIR).join(format!("{name}.ifaces.json"))
}

/// The interfaces a run watches, and how to attach to them again.
pub struct IfaceStates {
    ifaces: Vec<IfaceState>,
    mode: AttachMode,
    force: bool,
    path: PathBuf,
}

impl IfaceStates {
    /// Starts from the interfaces `loaded` is attached to now.
    pub fn new(loaded: &Loaded, mode: AttachMode, force: bool) -> Self {
        let now = Some(now_text());
        let mut ifaces: Vec<IfaceState> = Vec::new();
        for a in loaded.attachments.iter().filter(|a| a.hook == Hook::Xdp) {
            ifaces.push(IfaceState {
                name: a.iface.name.clone(),
                state: State::Attached,
                ifindex: Some(a.iface.index),
                since: now.clone(),
                error: None,
            });
        }
        let s = Self {
            ifaces,
            mode,
            force,
            path: state_path(&loaded.pin_dir),
        };
        s.write();
        s
    }

    pub fn states(&self) -> &[IfaceState] {
        &self.ifaces
    }

    /// Looks at every watched interface by name and brings the attachments in line: marks the
    /// removed ones absent, attaches to the ones that came back. Returns whether anything
    /// changed.
    pub fn reconcile(&mut self, loaded: &mut Loaded) -> bool {
        let mut changed = false;
        for i in 0..self.ifaces.len() {
            let Some(st) = self.ifaces.get(i).cloned() else {
                continue;
            };
            let next = self.step(&st, Interface::by_name(&st.name), loaded);
            if let Some(next) = next
                && let Some(slot) = self.ifaces.get_mut(i)
            {
                *slot = next;
                changed = true;
            }
        }
        if changed {
            self.write();
        }
        changed
    }

    /// The next state of one interface, given what exists now; `None` when it stays.
    fn step(
        &self,
        st: &IfaceState,
        now: Option<Interface>,
        loaded: &mut Loaded,
    ) -> Option<IfaceState> {
        match (st.state, now) {
            (State::Attached, None) => {
                warn!(
                    "interface {} (ifindex {}) was removed: nothing is enforced on it until an \
                     interface of that name returns",
                    st.name,
                    st.ifindex.unwrap_or(0)
                );
                loaded.detach_iface(&st.name);
                Some(absent(&st.name))
            }
            (State::Failed, None) => Some(absent(&st.name)),
            // The same interface as before: nothing to do (a failed one is retried only when
            // its index changes, so a persistent failure is not retried on every link event).
            (State::Attached | State::Failed, Some(i)) if st.ifindex == Some(i.index) => None,
            (State::Attached, Some(i)) => {
                warn!(
                    "interface {} was replaced (ifindex {} -> {}) between two link events",
                    st.name,
                    st.ifindex.unwrap_or(0),
                    i.index
                );
                loaded.detach_iface(&st.name);
                Some(self.attach(&i, loaded))
            }
            (State::Absent | State::Failed, Some(i)) => Some(self.attach(&i, loaded)),
            (State::Absent, None) => None,
        }
    }

    /// Attaches to an interface that (re)appeared.
    fn attach(&self, iface: &Interface, loaded: &mut Loaded) -> IfaceState {
        let since = Some(now_text());
        match loaded.attach(iface, self.mode, self.force) {
            Ok(()) => {
                info!(
                    "interface {} is back (ifindex {}): attached again, enforcement resumes",
                    iface.name, iface.index
                );
                IfaceState {
                    name: iface.name.clone(),
                    state: State::Attached,
                    ifindex: Some(iface.index),
                    since,
                    error: None,
                }
            }
            Err(e) => {
                warn!(
                    "interface {} is back (ifindex {}) but attaching failed: {e}; nothing is \
                     enforced on it",
                    iface.name, iface.index
                );
                // Whatever half of it was attached goes: the state says "failed".
                loaded.detach_iface(&iface.name);
                IfaceState {
                    name: iface.name.clone(),
                    state: State::Failed,
                    ifindex: Some(iface.index),
                    since,
                    error: Some(e.to_string()),
                }
            }
        }
    }

    /// Writes the state file (atomically: a reader never sees half of it). Failing to is only
    /// logged: `stats` then falls back to the link pins.
    fn write(&self) {
        let write = || -> std::io::Result<()> {
            use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(CONTROL_DIR)?;
            let tmp = self.path.with_extension("json.tmp");
            let _ = std::fs::remove_file(&tmp);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&tmp)?;
            f.write_all(&serde_json::to_vec(&self.ifaces)?)?;
            std::fs::rename(&tmp, &self.path)
        };
        if let Err(e) = write() {
            warn!(
                "cannot write the interface states to {}: {e}",
                self.path.display()
            );
        }
    }

    /// Removes the state file (the agent is stopping).
    pub fn remove_file(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Now, as RFC 3339 text.
fn now_text() -> String {
    rfc3339(SystemTime::now()).to_string()
}

fn absent(name: &str) -> IfaceState {
    IfaceState {
        name: name.to_owned(),
        state: State::Absent,
        ifindex: None,
        since: Some(now_text()),
        error: None,
    }
}

/// The running agent's interface states, from its state file.
pub fn read_state_file(pin_dir: &Path) -> Option<Vec<IfaceState>> {
    let text = std::fs::read(state_path(pin_dir)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// What the link pins say without an agent: an XDP link whose interface is gone has index 0.
pub fn from_link_pins(pin_dir: &Path) -> Vec<IfaceState> {
    let mut out: Vec<IfaceState> = std::fs::read_dir(pin_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let file = e.file_name().to_string_lossy().into_owned();
            let name = file.strip_prefix(XDP_LINK_PREFIX)?.to_owned();
            let (state, ifindex, error) = match xdp_owner::xdp_link_ifindex(&e.path()) {
                Ok(0) => (State::Absent, None, None),
                Ok(i) => (State::Attached, Some(i), None),
                Err(err) => (State::Failed, None, Some(err.to_string())),
            };
            Some(IfaceState {
                name,
                state,
                ifindex,
                since: None,
                error,
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_serialize_as_stats_shows_them() {
        let st = IfaceState {
            name: "eth0".into(),
            state: State::Absent,
            ifindex: None,
            since: Some("2026-01-01T00:00:00.000Z".into()),
            error: None,
        };
        let v = serde_json::to_value(&st).unwrap();
        assert_eq!(v["state"], "absent");
        assert!(v["ifindex"].is_null());
        assert!(v.get("error").is_none());
        let back: IfaceState = serde_json::from_value(v).unwrap();
        assert_eq!(back, st);
        assert_eq!(State::Failed.as_str(), "failed");
    }

    #[test]
    fn state_file_is_named_after_the_pin_folder() {
        assert_eq!(
            state_path(Path::new("/sys/fs/bpf/flux-agent")),
            Path::new("/run/flux-agent/flux-agent.ifaces.json")
        );
    }
}
