//! The running agent's control socket, for commands that need its live state (`explain`).
//!
//! One request per connection: a JSON line in, a JSON line out. The socket sits in
//! `/run/flux-agent/`, named after the pin folder, so agents on different pin folders do not
//! collide; only root can reach it (the folder is 0700).

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize};

use flux_detect::score::{Scorer, Verdict, registered_domain};

/// Where the control sockets live.
pub const CONTROL_DIR: &str = "/run/flux-agent";

/// The control socket of the agent using `pin_dir`.
pub fn socket_path(pin_dir: &Path) -> PathBuf {
    let name = pin_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "flux-agent".into());
    Path::new(CONTROL_DIR).join(format!("{name}.sock"))
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    pub explain: String,
}

/// The answer to `explain`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Explanation {
    /// The name asked about.
    pub name: String,
    /// The key that was found: the name itself, or its registered domain.
    pub key: Option<String>,
    /// The verdict as it stands now (re-scored at the time of asking).
    pub verdict: Option<serde_json::Value>,
}

/// Answers one request from the scorer's state.
pub fn answer(scorer: &mut Scorer, req: &Request) -> Explanation {
    let name = req.explain.trim_end_matches('.').to_ascii_lowercase();
    let now = SystemTime::now();
    let mut candidates = vec![name.clone()];
    if let Some(d) = registered_domain(&name)
        && d != name
    {
        candidates.push(d.to_owned());
    }
    for key in candidates {
        if let Some(v) = scorer.explain(&key, now) {
            return Explanation {
                name,
                key: Some(key),
                verdict: serde_json::to_value::<&Verdict>(&v).ok(),
            };
        }
    }
    Explanation {
        name,
        key: None,
        verdict: None,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(
        "no agent is running for {} ({} is missing); explain needs the live scorer, start it \
         with `flux-agent run`",
        .pin_dir.display(),
        .socket.display()
    )]
    NotRunning { pin_dir: PathBuf, socket: PathBuf },
    #[error("talking to the agent on {}: {reason}", .socket.display())]
    Io { socket: PathBuf, reason: String },
}

/// Client side: sends one request to the agent on `pin_dir` and reads the answer.
pub fn ask(pin_dir: &Path, req: &Request) -> Result<Explanation, ControlError> {
    let socket = socket_path(pin_dir);
    let io = |e: std::io::Error| ControlError::Io {
        socket: socket.clone(),
        reason: e.to_string(),
    };
    let mut s = match UnixStream::connect(&socket) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(ControlError::NotRunning {
                pin_dir: pin_dir.to_owned(),
                socket,
            });
        }
        Err(e) => return Err(io(e)),
    };
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(io)?;
    let mut line = serde_json::to_vec(req).map_err(|e| io(e.into()))?;
    line.push(b'\n');
    s.write_all(&line).map_err(io)?;
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply).map_err(io)?;
    serde_json::from_str(&reply).map_err(|e| io(e.into()))
}
