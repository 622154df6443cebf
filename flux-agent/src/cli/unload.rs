//! `flux-agent unload`: detach the programs the agent left enforcing and remove its pins.

use std::process::ExitCode;

use flux_agent::kernel::loader::{self, UnloadError};

use super::blocklist::JsonArgs;

pub fn unload(args: JsonArgs) -> anyhow::Result<ExitCode> {
    match loader::unload(&args.pin.pin_dir) {
        Ok(u) => {
            if args.json {
                out!("{}", serde_json::to_string(&u)?);
            } else {
                out!(
                    "detached {} program link(s), removed {} map pin(s) from {}",
                    u.links.len(),
                    u.maps,
                    args.pin.pin_dir.display()
                );
                if !u.left.is_empty() {
                    out!("left alone (not flux-agent's): {}", u.left.join(", "));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ UnloadError::NotLoaded(_)) => {
            if args.json {
                out!(
                    "{}",
                    serde_json::json!({ "loaded": false, "error": e.to_string() })
                );
            } else {
                eprintln!("flux-agent: {e}");
            }
            Ok(ExitCode::from(3))
        }
        Err(e) => Err(e.into()),
    }
}
