//! The running agent's control socket, for commands that need its live state: `explain`
//! (`{"explain": NAME}`) and `blocklist add`, which asks for the resolvers the agent guards
//! (`{"resolvers": true}`, answered `{"resolvers": [ADDR, ...]}`); `stats` asks for the
//! database's failed writes (`{"state": true}`); `status` and `top` ask for the agent's pid,
//! uptime, counts, recent decisions and most suspicious keys (`{"status": true}`, answered
//! with a [`StatusReport`]).
//!
//! One request per connection: a JSON line in, a JSON line out. The socket sits in
//! `/run/flux-agent/`, named after the pin folder, so agents on different pin folders do not
//! collide; only root can reach it (the folder is 0700).
//!
//! Served off the capture path: [`serve`] accepts on its own task and gives every connection
//! its own task, which reads the request (with a timeout), sends it to the pipeline as a
//! [`Query`] over a channel, and writes the answer that comes back on the query's oneshot. The
//! capture loop only answers queries that are complete, from memory; a slow or silent client
//! holds up nobody but itself.
//!
//! May touch: its socket, and the scorer's state through the pipeline's answer.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::IpAddr,
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use log::warn;
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _},
    net::{UnixListener, UnixStream as TokioStream},
    sync::{mpsc, oneshot},
};

use crate::pipeline::events::Event;
pub use crate::pipeline::recent::StatusReport;
use flux_detect::score::{Scorer, registered_domain};

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

/// `{"resolvers": true}`: nothing else in the object.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolversRequest {
    resolvers: bool,
}

/// `{"state": true}`: nothing else in the object.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateRequest {
    state: bool,
}

/// `{"status": true}`: nothing else in the object.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusRequest {
    status: bool,
}

/// What a client asks.
#[derive(Debug)]
pub enum Ask {
    Explain(Request),
    /// The resolvers the agent's guard protects (configured and learnt).
    Resolvers,
    /// The state database's failed writes (`stats`).
    State,
    /// Pid, uptime, counts, recent decisions, top keys (`status`, `top`).
    Status,
}

/// The answer to [`Ask::Resolvers`].
#[derive(Debug, Serialize, Deserialize)]
pub struct ResolverList {
    pub resolvers: Vec<IpAddr>,
}

/// What the agent sends back: an explanation, the resolvers, or why there is none.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Reply {
    Explanation(Explanation),
    Resolvers(ResolverList),
    State(crate::enforce::record::RecordCounts),
    Status(Box<StatusReport>),
    Error { error: String },
}

impl Reply {
    pub fn error(why: impl Into<String>) -> Self {
        Reply::Error { error: why.into() }
    }
}

/// A request on its way to the pipeline, with where its answer goes.
#[derive(Debug)]
pub struct Query {
    pub request: Ask,
    pub reply: oneshot::Sender<Reply>,
}

/// How long a client has to send its request line, and to take the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a connection waits for the pipeline to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest request line read.
const MAX_REQUEST: u64 = 4096;

/// Binds the control socket; the agent runs without one (with a warning) if that fails.
pub fn listen(pin_dir: &Path) -> Option<UnixListener> {
    let path = socket_path(pin_dir);
    let bind = || -> std::io::Result<UnixListener> {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(CONTROL_DIR)?;
        // The pin-folder lock is held, so a socket left here is a crashed run's.
        let _ = std::fs::remove_file(&path);
        UnixListener::bind(&path)
    };
    match bind() {
        Ok(l) => Some(l),
        Err(e) => {
            warn!(
                "no control socket at {} ({e}); `flux-agent explain` will not reach this agent",
                path.display()
            );
            None
        }
    }
}

/// Accepts connections until the task is dropped; each is served on its own task, and its
/// request is sent to `queries`.
pub async fn serve(listener: UnixListener, queries: mpsc::Sender<Query>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(connection(stream, queries.clone()));
            }
            Err(e) => {
                warn!("control socket: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One client: a request line in (within [`CLIENT_TIMEOUT`]), the pipeline's answer out.
async fn connection(stream: TokioStream, queries: mpsc::Sender<Query>) {
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    let read = tokio::time::timeout(
        CLIENT_TIMEOUT,
        tokio::io::BufReader::new(r.take(MAX_REQUEST)).read_line(&mut line),
    )
    .await;
    if !matches!(read, Ok(Ok(n)) if n > 0) {
        return;
    }
    let reply = match parse_ask(&line) {
        Ok(request) => {
            let (tx, rx) = oneshot::channel();
            let asked = queries.send(Query { request, reply: tx }).await;
            match (asked, tokio::time::timeout(ANSWER_TIMEOUT, rx).await) {
                (Ok(()), Ok(Ok(reply))) => reply,
                _ => Reply::error("the agent did not answer"),
            }
        }
        Err(refused) => refused,
    };
    if let Some(text) = reply_line(&reply) {
        let _ = tokio::time::timeout(CLIENT_TIMEOUT, w.write_all(text.as_bytes())).await;
    }
}

/// A client's request line: the only bytes a client controls, read without the kernel or the
/// pipeline (so `fuzz/` fuzzes exactly this). A line that is not a request is answered with why.
pub fn parse_request(line: &str) -> Result<Request, Reply> {
    serde_json::from_str::<Request>(line).map_err(|e| Reply::error(e.to_string()))
}

/// A client's request line, any kind: `{"resolvers": true}`, `{"state": true}` or
/// `{"status": true}` exactly, or an `explain` request ([`parse_request`]).
pub fn parse_ask(line: &str) -> Result<Ask, Reply> {
    if let Ok(StatusRequest { status: true }) = serde_json::from_str::<StatusRequest>(line) {
        return Ok(Ask::Status);
    }
    if let Ok(StateRequest { state: true }) = serde_json::from_str::<StateRequest>(line) {
        return Ok(Ask::State);
    }
    match serde_json::from_str::<ResolversRequest>(line) {
        Ok(ResolversRequest { resolvers: true }) => Ok(Ask::Resolvers),
        _ => parse_request(line).map(Ask::Explain),
    }
}

/// The line sent back: one JSON object and a newline.
pub fn reply_line(reply: &Reply) -> Option<String> {
    let mut text = serde_json::to_string(reply).ok()?;
    text.push('\n');
    Some(text)
}

/// Client side: the agent's answer line.
pub fn parse_reply(line: &str) -> Result<Explanation, serde_json::Error> {
    serde_json::from_str(line)
}

/// The answer to `explain`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Explanation {
    /// The name asked about.
    pub name: String,
    /// The key that was found: the name itself, or its registered domain.
    pub key: Option<String>,
    /// The verdict as it stands now (re-scored at the time of asking), as its `verdict` event.
    pub verdict: Option<serde_json::Value>,
    /// The fleet scorer's view of the name (`run --fleet-url`): absent without a fleet or when
    /// the fleet holds nothing on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<Box<crate::fleet::fleet_explain::FleetView>>,
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
                verdict: serde_json::to_value(Event::Verdict(v)).ok(),
                fleet: None,
            };
        }
    }
    Explanation {
        name,
        key: None,
        verdict: None,
        fleet: None,
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
    let line = serde_json::to_string(req).map_err(|e| io_error(pin_dir, e.into()))?;
    let reply = exchange(pin_dir, &line)?;
    parse_reply(&reply).map_err(|e| io_error(pin_dir, e.into()))
}

/// Client side: the resolvers the agent on `pin_dir` guards (configured and learnt).
pub fn ask_resolvers(pin_dir: &Path) -> Result<Vec<IpAddr>, ControlError> {
    let line = serde_json::to_string(&ResolversRequest { resolvers: true })
        .map_err(|e| io_error(pin_dir, e.into()))?;
    let reply = exchange(pin_dir, &line)?;
    serde_json::from_str::<ResolverList>(&reply)
        .map(|l| l.resolvers)
        .map_err(|e| {
            // An agent that does not know the request answers with an error object.
            let why = serde_json::from_str::<serde_json::Value>(&reply)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or_else(|| e.to_string());
            ControlError::Io {
                socket: socket_path(pin_dir),
                reason: why,
            }
        })
}

/// Client side: the failed state-database writes of the agent on `pin_dir`.
pub fn ask_state(pin_dir: &Path) -> Result<crate::enforce::record::RecordCounts, ControlError> {
    let line = serde_json::to_string(&StateRequest { state: true })
        .map_err(|e| io_error(pin_dir, e.into()))?;
    let reply = exchange(pin_dir, &line)?;
    serde_json::from_str(&reply).map_err(|e| io_error(pin_dir, e.into()))
}

/// Client side: the status of the agent on `pin_dir` (pid, uptime, counts, recent decisions,
/// top keys). An agent too old to know the request answers with an error, returned as `Io`.
pub fn ask_status(pin_dir: &Path) -> Result<StatusReport, ControlError> {
    let line = serde_json::to_string(&StatusRequest { status: true })
        .map_err(|e| io_error(pin_dir, e.into()))?;
    let reply = exchange(pin_dir, &line)?;
    parse_status(&reply).map_err(|reason| ControlError::Io {
        socket: socket_path(pin_dir),
        reason,
    })
}

/// Client side: an answer line to `{"status": true}`, or the agent's error (or the parse
/// error) as text.
pub fn parse_status(line: &str) -> Result<StatusReport, String> {
    serde_json::from_str::<StatusReport>(line).map_err(|e| {
        serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_else(|| e.to_string())
    })
}

fn io_error(pin_dir: &Path, e: std::io::Error) -> ControlError {
    ControlError::Io {
        socket: socket_path(pin_dir),
        reason: e.to_string(),
    }
}

/// Sends one request line to the agent on `pin_dir` and returns its answer line.
fn exchange(pin_dir: &Path, request: &str) -> Result<String, ControlError> {
    let socket = socket_path(pin_dir);
    let io = |e: std::io::Error| io_error(pin_dir, e);
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
    let mut line = request.as_bytes().to_vec();
    line.push(b'\n');
    s.write_all(&line).map_err(io)?;
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply).map_err(io)?;
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines() {
        let req = parse_request("{\"explain\":\"Flux.Example.\"}\n").unwrap();
        assert_eq!(req.explain, "Flux.Example.");
        for junk in ["", "{}", "[1]", "{\"explain\":1}", "\u{0}"] {
            let Err(Reply::Error { error }) = parse_request(junk) else {
                panic!("{junk:?} accepted");
            };
            assert!(!error.is_empty());
        }
    }

    #[test]
    fn resolvers_request_is_exact() {
        assert!(matches!(
            parse_ask("{\"resolvers\":true}\n"),
            Ok(Ask::Resolvers)
        ));
        assert!(matches!(
            parse_ask("{\"explain\":\"x.test\"}"),
            Ok(Ask::Explain(r)) if r.explain == "x.test"
        ));
        for junk in [
            "{\"resolvers\":false}",
            "{\"resolvers\":true,\"x\":1}",
            "{}",
        ] {
            assert!(parse_ask(junk).is_err(), "{junk}");
        }
        let line = reply_line(&Reply::Resolvers(ResolverList {
            resolvers: vec!["192.0.2.53".parse().unwrap()],
        }))
        .unwrap();
        assert_eq!(line, "{\"resolvers\":[\"192.0.2.53\"]}\n");
    }

    #[test]
    fn status_request_is_exact_and_its_answer_reads_back() {
        assert!(matches!(parse_ask("{\"status\":true}\n"), Ok(Ask::Status)));
        assert!(matches!(parse_ask("{\"state\":true}"), Ok(Ask::State)));
        for junk in [
            "{\"status\":false}",
            "{\"status\":true,\"x\":1}",
            "{\"status\":1}",
        ] {
            assert!(parse_ask(junk).is_err(), "{junk}");
        }
        let rep = crate::pipeline::recent::Recent::new().report(
            None,
            &crate::pipeline::flow::Counts::default(),
            SystemTime::now(),
        );
        let line = reply_line(&Reply::Status(Box::new(rep.clone()))).unwrap();
        assert_eq!(line.matches('\n').count(), 1);
        assert_eq!(parse_status(&line).unwrap(), rep);
        assert_eq!(
            parse_status("{\"error\":\"unknown request\"}").unwrap_err(),
            "unknown request"
        );
    }

    #[test]
    fn reply_is_one_line_the_client_reads() {
        let reply = Reply::Explanation(Explanation {
            name: "a\nb".into(),
            key: None,
            verdict: None,
            fleet: None,
        });
        let line = reply_line(&reply).unwrap();
        assert_eq!(line.matches('\n').count(), 1);
        assert!(line.ends_with('\n'));
        assert_eq!(parse_reply(&line).unwrap().name, "a\nb");
        let err = reply_line(&Reply::error("no")).unwrap();
        assert_eq!(err, "{\"error\":\"no\"}\n");
    }
}
