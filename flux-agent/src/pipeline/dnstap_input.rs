//! dnstap as a source of the pipeline: a resolver's own log of the responses it sent and
//! received, live over a unix socket (`run --dnstap-socket PATH`) or from a file (`replay
//! FILE.dnstap`). The response bytes go through the same wire parser as captured packets, and
//! the observations through the same scorer and enforcer ([`crate::pipeline::flow`]).
//!
//! Live: the agent is the Frame Streams *reader*, the server side of the socket. A resolver
//! (unbound's `dnstap-socket-path`, Knot Resolver, BIND's `dnstap-output unix`) connects and
//! does the bidirectional handshake: READY (offering `protobuf:dnstap.Dnstap`) -> ACCEPT ->
//! START -> data frames -> STOP -> FINISH. Each connection is a task; observations reach the
//! pipeline's loop through a bounded channel, so a fast resolver waits on the agent rather than
//! the agent queueing without limit (the resolver's dnstap writer drops on its side, counted
//! there).
//!
//! Marking: every dnstap observation has `iface: "dnstap"` and `ifindex: 0`, and is never
//! `unsolicited`: the resolver logged a response to a query it sent (RESOLVER/FORWARDER) or
//! answered (CLIENT), so it is solicited by construction and bypasses the XDP query matching.
//!
//! Hostile input: whatever connects to the socket may write anything. Frames are bounded
//! ([`dnstap::MAX_FRAME`]), connections are capped ([`MAX_CONNECTIONS`]) and must finish the
//! handshake within [`HANDSHAKE_TIMEOUT`]; every bad frame, message and DNS payload is counted
//! and skipped, and a connection whose framing breaks is closed. The socket is created mode
//! 0660 (owner and group: let the resolver's user in with the group).
//!
//! May touch: the socket file it is given (created, and removed at exit), the file being
//! replayed, and the pipeline.

use std::{
    net::{IpAddr, Ipv4Addr},
    os::unix::fs::{FileTypeExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use anyhow::Context as _;
use flux_detect::{
    dns::{DnsMessage, parse_response},
    resolver_logs::{
        self,
        dnstap::{self, DnstapResponse, DnstapStats},
        frame_streams::{self, Control, ControlKind, FrameError},
    },
};
use log::{debug, info, warn};
use serde::Serialize;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{UnixListener, UnixStream},
    sync::mpsc,
};

use crate::pipeline::{events::Observation, flow::Pipeline};

/// The `iface` of every observation from dnstap.
pub const DNSTAP_IFACE: &str = "dnstap";

/// Resolvers open one connection each (unbound: one per dnstap thread); more than this at once
/// is not a resolver. Extra connections are closed at once and counted.
pub const MAX_CONNECTIONS: usize = 16;

/// A writer that connects and does not finish the READY/ACCEPT/START handshake within this
/// is closed: a slot is not held by a silent peer.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Observations waiting for the pipeline. Big enough for a burst between two polls of the
/// loop; past it the connection tasks wait (backpressure to the resolver).
pub const CHANNEL_DEPTH: usize = 4096;

/// Socket file mode: the owner (the agent) and its group (a resolver's user added to it).
const SOCKET_MODE: u32 = 0o660;

/// [`DNSTAP_IFACE`], one text shared by every observation (as the live source shares each
/// interface's name) instead of a copy made for each.
fn dnstap_iface() -> std::sync::Arc<str> {
    static IFACE: std::sync::LazyLock<std::sync::Arc<str>> =
        std::sync::LazyLock::new(|| DNSTAP_IFACE.into());
    IFACE.clone()
}

/// The observation of a dnstap response whose bytes parsed to `msg`.
pub fn observation(resp: &DnstapResponse, msg: DnsMessage, ts: SystemTime) -> Observation {
    let len = u16::try_from(resp.message.len()).unwrap_or(u16::MAX);
    let unspecified = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    Observation {
        ts,
        iface: dnstap_iface(),
        ifindex: 0,
        src: resp.responder.unwrap_or(unspecified),
        dst: resp.querier.unwrap_or(unspecified),
        sport: resp.responder_port,
        dport: resp.querier_port,
        transport: resp.transport,
        vlan: Vec::new(),
        dns_len: len,
        cap_len: len,
        truncated: false,
        blocked: false,
        would_block: false,
        fragmented: false,
        // Logged by the resolver that asked or answered: solicited by construction.
        unsolicited: false,
        msg,
    }
}

/// What the live dnstap source saw; logged at exit.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LiveStats {
    #[serde(flatten)]
    pub dnstap: DnstapStats,
    /// Response bytes the DNS parser rejected.
    pub malformed_dns: u64,
    pub connections: u64,
    /// Connections closed at once: over [`MAX_CONNECTIONS`].
    pub refused_connections: u64,
    /// Connections that did not complete the handshake (timeout, wrong content type, bad
    /// control frame).
    pub failed_handshakes: u64,
}

/// The live source: the listening socket and its accept task.
pub struct DnstapServer {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
    pub stats: Arc<Mutex<LiveStats>>,
}

impl DnstapServer {
    /// Listens on `path` (a stale socket left there is replaced; any other file is refused) and
    /// sends every response's observation to `tx`.
    pub fn start(path: &Path, tx: mpsc::Sender<Observation>) -> anyhow::Result<Self> {
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            anyhow::ensure!(
                meta.file_type().is_socket(),
                "--dnstap-socket {}: a file that is not a socket is in the way",
                path.display()
            );
            std::fs::remove_file(path)
                .with_context(|| format!("remove the old socket {}", path.display()))?;
        }
        let listener = UnixListener::bind(path)
            .with_context(|| format!("listen on the dnstap socket {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
            .with_context(|| format!("set the mode of {}", path.display()))?;
        let stats = Arc::new(Mutex::new(LiveStats::default()));
        let task = tokio::spawn(accept_loop(listener, tx, Arc::clone(&stats)));
        info!("dnstap: listening on {}", path.display());
        Ok(Self {
            path: path.to_owned(),
            task,
            stats,
        })
    }

    /// Stops accepting, closes the connections, removes the socket file; returns the counts.
    pub fn stop(self) -> LiveStats {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
        let s = lock(&self.stats).clone();
        info!(
            "dnstap: {} connections, {} frames, {} responses ({} malformed), {} other messages, \
             {} bad messages, {} broken streams",
            s.connections,
            s.dnstap.frames,
            s.dnstap.responses,
            s.malformed_dns,
            s.dnstap.other,
            s.dnstap.bad,
            s.dnstap.bad_streams
        );
        s
    }
}

fn lock(s: &Mutex<LiveStats>) -> std::sync::MutexGuard<'_, LiveStats> {
    s.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn accept_loop(
    listener: UnixListener,
    tx: mpsc::Sender<Observation>,
    stats: Arc<Mutex<LiveStats>>,
) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let accepted = listener.accept().await;
        // Reap the finished connection tasks first, so their slots are free.
        while conns.try_join_next().is_some() {}
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                warn!("dnstap: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if conns.len() >= MAX_CONNECTIONS {
            lock(&stats).refused_connections += 1;
            warn!("dnstap: over {MAX_CONNECTIONS} connections; closing the new one");
            continue;
        }
        lock(&stats).connections += 1;
        let (tx, stats) = (tx.clone(), Arc::clone(&stats));
        conns.spawn(async move {
            match connection(stream, &tx, &stats).await {
                Ok(()) => debug!("dnstap: writer finished"),
                Err(e) => {
                    lock(&stats).dnstap.bad_streams += 1;
                    warn!("dnstap: connection closed: {e}");
                }
            }
        });
    }
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("handshake: {0}")]
    Handshake(&'static str),
    #[error("handshake timed out")]
    Timeout,
    #[error("the pipeline stopped")]
    Closed,
}

/// One writer: handshake, data frames until STOP (or the peer hangs up), FINISH.
async fn connection(
    mut s: UnixStream,
    tx: &mpsc::Sender<Observation>,
    stats: &Mutex<LiveStats>,
) -> Result<(), ConnError> {
    let mut buf = Vec::new();
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&mut s, &mut buf)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            lock(stats).failed_handshakes += 1;
            return Err(e);
        }
        Err(_) => {
            lock(stats).failed_handshakes += 1;
            return Err(ConnError::Timeout);
        }
    }
    loop {
        match read_frame(&mut s, &mut buf).await? {
            None => return Ok(()),
            Some(None) => {
                let resp = dnstap::decode_counted(&buf, &mut lock(stats).dnstap);
                let Some(resp) = resp else { continue };
                match parse_response(&resp.message, false) {
                    Ok(msg) => {
                        let ts = resp.ts.unwrap_or_else(SystemTime::now);
                        let obs = observation(&resp, msg, ts);
                        tx.send(obs).await.map_err(|_| ConnError::Closed)?;
                    }
                    Err(e) => {
                        lock(stats).malformed_dns += 1;
                        debug!("dnstap: malformed DNS response: {e}");
                    }
                }
            }
            Some(Some(c)) if c.kind == ControlKind::Stop => {
                let finish = frame_streams::control_frame(ControlKind::Finish, &[]);
                let _ = s.write_all(&finish).await;
                return Ok(());
            }
            // Any other control frame in the data phase is ignored.
            Some(Some(_)) => {}
        }
    }
}

/// READY (must offer dnstap) -> ACCEPT -> START (must be dnstap if it names a type). A writer
/// that opens with START (unidirectional Frame Streams, as some tools write to a socket) is
/// taken as it is.
async fn handshake(s: &mut UnixStream, buf: &mut Vec<u8>) -> Result<(), ConnError> {
    let ready = match read_frame(s, buf).await? {
        Some(Some(c)) if c.kind == ControlKind::Ready => c,
        Some(Some(c)) if c.kind == ControlKind::Start && c.offers(dnstap::CONTENT_TYPE) => {
            return Ok(());
        }
        None => return Err(ConnError::Handshake("peer closed during the handshake")),
        _ => return Err(ConnError::Handshake("expected READY or START")),
    };
    if !ready.offers(dnstap::CONTENT_TYPE) {
        return Err(ConnError::Handshake(
            "READY does not offer protobuf:dnstap.Dnstap",
        ));
    }
    let accept = frame_streams::control_frame(ControlKind::Accept, &[dnstap::CONTENT_TYPE]);
    s.write_all(&accept)
        .await
        .map_err(|e| ConnError::Frame(e.into()))?;
    let start = expect_control(s, buf, ControlKind::Start).await?;
    if !start.offers(dnstap::CONTENT_TYPE) {
        return Err(ConnError::Handshake("START names another content type"));
    }
    Ok(())
}

async fn expect_control(
    s: &mut UnixStream,
    buf: &mut Vec<u8>,
    kind: ControlKind,
) -> Result<Control, ConnError> {
    match read_frame(s, buf).await? {
        Some(Some(c)) if c.kind == kind => Ok(c),
        None => Err(ConnError::Handshake("peer closed during the handshake")),
        _ => Err(ConnError::Handshake("unexpected frame")),
    }
}

/// The async twin of [`frame_streams::read_frame`], with the same checks: `None` at a clean
/// end of stream, `Some(None)` a data frame (in `buf`), `Some(Some(c))` a control frame.
async fn read_frame(
    s: &mut UnixStream,
    buf: &mut Vec<u8>,
) -> Result<Option<Option<Control>>, FrameError> {
    let mut prefix = [0u8; 4];
    match s.read_exact(&mut prefix).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    buf.clear();
    if let Some(len) = frame_streams::data_len(prefix, dnstap::MAX_FRAME)? {
        buf.resize(len, 0);
        read_exact(s, buf).await?;
        return Ok(Some(None));
    }
    read_exact(s, &mut prefix).await?;
    let len = frame_streams::control_len(prefix)?;
    buf.resize(len, 0);
    read_exact(s, buf).await?;
    Ok(Some(Some(frame_streams::parse_control(buf)?)))
}

async fn read_exact(s: &mut UnixStream, out: &mut [u8]) -> Result<(), FrameError> {
    s.read_exact(out)
        .await
        .map(|_| ())
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => FrameError::Truncated,
            _ => FrameError::Io(e),
        })
}

/// Replays a dnstap file (gzip-compressed or not) into `p`. A response without a time takes
/// the previous one's (the file's clock). Bad frames and messages are counted in `stats`, DNS
/// payloads the parser rejects in `malformed`; only a file that is not dnstap is an error.
pub fn replay_file(
    path: &Path,
    stats: &mut DnstapStats,
    malformed: &mut u64,
    p: &mut Pipeline<'_>,
) -> Result<(), String> {
    let r =
        resolver_logs::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut last_ts = SystemTime::UNIX_EPOCH;
    dnstap::read_file(r, stats, |resp| {
        match parse_response(&resp.message, false) {
            Ok(msg) => {
                let ts = resp.ts.unwrap_or(last_ts);
                last_ts = ts;
                p.observe(observation(&resp, msg, ts));
            }
            Err(e) => {
                *malformed += 1;
                debug!("{}: malformed DNS response in dnstap: {e}", path.display());
            }
        }
    })
    .map_err(|e| format!("{}: {e}", path.display()))
}

/// The next observation from the live source, or never without one.
pub async fn next(rx: &mut Option<mpsc::Receiver<Observation>>) -> Option<Observation> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flux_detect::{dns::Transport, resolver_logs::dnstap::ResponseKind};

    /// A response for `a.example` A 192.0.2.1 (TTL 60).
    fn wire() -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
        m.extend_from_slice(b"\x01a\x07example\x00\x00\x01\x00\x01");
        m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
        m
    }

    fn frame() -> Vec<u8> {
        let r = DnstapResponse {
            kind: ResponseKind::Resolver,
            ts: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            responder: Some("192.0.2.53".parse().unwrap()),
            responder_port: 53,
            querier: Some("192.0.2.1".parse().unwrap()),
            querier_port: 4000,
            transport: Transport::Udp,
            message: wire(),
        };
        frame_streams::data_frame(&dnstap::encode_response(&r))
    }

    async fn control(s: &mut UnixStream) -> Control {
        let mut buf = Vec::new();
        match read_frame(s, &mut buf).await {
            Ok(Some(Some(c))) => c,
            other => panic!("expected a control frame: {other:?}"),
        }
    }

    #[tokio::test]
    async fn handshake_data_and_hostile_writers() {
        let dir = std::env::temp_dir().join(format!("fx-dnstap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.sock");
        let (tx, mut rx) = mpsc::channel(16);
        let server = DnstapServer::start(&path, tx).unwrap();
        let ct: &[u8] = dnstap::CONTENT_TYPE;

        // A well-behaved writer: READY, ACCEPT, START, a response, garbage, STOP, FINISH.
        let mut s = UnixStream::connect(&path).await.unwrap();
        s.write_all(&frame_streams::control_frame(
            ControlKind::Ready,
            &[b"x", ct],
        ))
        .await
        .unwrap();
        let accept = control(&mut s).await;
        assert_eq!(accept.kind, ControlKind::Accept);
        assert_eq!(accept.content_types, vec![ct.to_vec()]);
        s.write_all(&frame_streams::control_frame(ControlKind::Start, &[ct]))
            .await
            .unwrap();
        s.write_all(&frame()).await.unwrap();
        s.write_all(&frame_streams::data_frame(b"\x0a\xff"))
            .await
            .unwrap();
        s.write_all(&frame_streams::control_frame(ControlKind::Stop, &[]))
            .await
            .unwrap();
        assert_eq!(control(&mut s).await.kind, ControlKind::Finish);
        let obs = rx.recv().await.unwrap();
        assert_eq!(&*obs.iface, DNSTAP_IFACE);
        assert!(!obs.unsolicited);
        assert_eq!(&*obs.msg.qname, "a.example");
        assert_eq!(obs.src, "192.0.2.53".parse::<IpAddr>().unwrap());

        // A writer that skips the handshake, one offering another type, one with a huge
        // frame: each is closed, nothing reaches the pipeline.
        for bytes in [
            frame(),
            frame_streams::control_frame(ControlKind::Ready, &[b"protobuf:other"]),
        ] {
            let mut s = UnixStream::connect(&path).await.unwrap();
            s.write_all(&bytes).await.unwrap();
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest).await;
            assert!(rest.is_empty(), "no ACCEPT for a bad writer");
        }
        let mut s = UnixStream::connect(&path).await.unwrap();
        s.write_all(&frame_streams::control_frame(ControlKind::Start, &[ct]))
            .await
            .unwrap();
        s.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest).await;
        assert!(rx.try_recv().is_err());

        let st = server.stop();
        assert_eq!(st.connections, 4);
        assert_eq!(st.failed_handshakes, 2);
        assert_eq!(st.dnstap.responses, 1);
        assert_eq!(st.dnstap.bad, 1);
        assert_eq!(st.dnstap.bad_streams, 3);
        assert!(!path.exists(), "socket removed");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
