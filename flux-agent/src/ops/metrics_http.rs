//! The `/metrics` endpoint: a small HTTP/1 server (hyper 1) on **a thread of its own** with its
//! own single-threaded tokio runtime, so encoding a scrape and reading the kernel counters never
//! run on the thread that drains the ring buffer.
//!
//! Only `GET /metrics` is answered (200, the Prometheus text format); anything else gets 404. A
//! request's head is bounded ([`MAX_REQUEST_BYTES`]) and must arrive within
//! [`HEADER_TIMEOUT`]; at most [`MAX_CONNECTIONS`] connections are served at once and each lives
//! at most [`CONNECTION_LIFETIME`]; a request body is never read.
//!
//! hyper rather than a hand-written parser: HTTP/1 framing (pipelining, chunked bodies, header
//! limits) is easy to get subtly wrong, and hyper with only its `server` and `http1` features,
//! plus hyper-util's tokio glue, adds no router or middleware stack. The agent already runs
//! tokio, so there is no second async runtime either.
//!
//! May touch: the listening socket it is given, and [`Metrics::encode`]. Nothing else.

use std::{
    convert::Infallible, io, net::SocketAddr, sync::Arc, thread::JoinHandle, time::Duration,
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Incoming, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use log::{debug, warn};
use tokio::sync::{Semaphore, oneshot};

use crate::ops::metrics::Metrics;

/// The one path served.
pub const PATH: &str = "/metrics";

/// Largest request head (request line and headers) read: hyper's minimum buffer, 8 KiB, which a
/// Prometheus scrape (about 300 bytes of headers) fits many times over. Past it hyper answers
/// 431 and closes.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;

/// A request head must arrive within this: a client that trickles bytes holds a connection slot
/// for no longer. Prometheus sends its whole request at once.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections served at once; more are closed at accept. Prometheus keeps one per target;
/// the margin covers a few curl users and an HA pair of Prometheus servers.
pub const MAX_CONNECTIONS: usize = 16;

/// A kept-alive connection is closed after this, so a slot always comes back.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(300);

/// After a failed accept (out of file descriptors), wait this long before the next one instead
/// of spinning on the error.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// `--metrics ADDR`, bound before anything is loaded, and the metrics it will serve.
pub struct MetricsEndpoint {
    pub listener: std::net::TcpListener,
    pub metrics: Metrics,
}

impl MetricsEndpoint {
    /// Binds `addr`; a busy or forbidden address fails here, before the run attaches anything.
    pub fn bind(addr: SocketAddr, metrics: Metrics) -> io::Result<Self> {
        Ok(Self {
            listener: std::net::TcpListener::bind(addr)?,
            metrics,
        })
    }
}

/// The running endpoint. Dropping it stops the server and waits for its thread.
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// The address it listens on (the port, when it was asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Serves `metrics` on `listener` (bound by the caller, so a busy port fails the start before
/// anything is loaded) until the returned server is dropped.
pub fn spawn(listener: std::net::TcpListener, metrics: Metrics) -> io::Result<MetricsServer> {
    let addr = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (stop, stopped) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("metrics http".into())
        .spawn(move || {
            rt.block_on(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => serve(l, metrics, stopped).await,
                    Err(e) => warn!("metrics endpoint: cannot listen: {e}"),
                }
            });
        })?;
    Ok(MetricsServer {
        addr,
        stop: Some(stop),
        thread: Some(thread),
    })
}

async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    mut stopped: oneshot::Receiver<()>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut stopped => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    debug!("metrics endpoint: accept: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            debug!("metrics endpoint: {MAX_CONNECTIONS} connections open; closing {peer}");
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = service_fn(move |req| {
                let r = respond(&metrics, &req);
                async move { Ok::<_, Infallible>(r) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_REQUEST_BYTES)
                .serve_connection(TokioIo::new(stream), service);
            // Past its lifetime the connection is dropped, closing it.
            if let Ok(Err(e)) = tokio::time::timeout(CONNECTION_LIFETIME, conn).await {
                debug!("metrics endpoint: {peer}: {e}");
            }
        });
    }
}

/// The answer to one request.
fn respond(metrics: &Metrics, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET || req.uri().path() != PATH {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: only GET /metrics is served\n",
        );
    }
    match metrics.encode() {
        Ok(body) => Response::builder()
            .header(
                hyper::header::CONTENT_TYPE,
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            )
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "")),
        Err(_) => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encode the metrics\n",
        ),
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    r
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};

    use super::*;

    fn server() -> MetricsServer {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        spawn(l, Metrics::new()).unwrap()
    }

    /// Sends `request` raw and returns the whole answer (the server closes after it).
    fn exchange(s: &MetricsServer, request: &[u8]) -> String {
        let mut c = std::net::TcpStream::connect(s.addr()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // The server may close before an oversized request is all written.
        let _ = c.write_all(request);
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn get_metrics_is_the_only_thing_served() {
        let s = server();
        let ok = exchange(
            &s,
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(
            ok.contains("content-type: text/plain; version=0.0.4"),
            "{ok}"
        );
        assert!(
            ok.contains("# TYPE flux_dns_responses_total counter"),
            "{ok}"
        );
        for req in [
            &b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"[..],
            b"GET /metricsx HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
        ] {
            let r = exchange(&s, req);
            assert!(r.starts_with("HTTP/1.1 404"), "{r}");
        }
    }

    #[test]
    fn an_oversized_request_head_is_refused() {
        let s = server();
        let mut req = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: ".to_vec();
        req.extend(std::iter::repeat_n(b'a', 4 * MAX_REQUEST_BYTES));
        req.extend(b"\r\n\r\n");
        let r = exchange(&s, &req);
        assert!(!r.starts_with("HTTP/1.1 200"), "{r}");
        // And the server still answers the next client.
        let ok = exchange(
            &s,
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    }
}
