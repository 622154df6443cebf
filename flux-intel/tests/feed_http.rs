//! `feed_fetch` against real HTTP servers on loopback, never the Internet: a small server of the
//! test's own (ETag, 304, a body cut short of its Content-Length, a cut chunked body, 404, a slow
//! answer, a large body), and Python's `http.server` (Last-Modified / If-Modified-Since).

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    time::Duration,
};

use flux_intel::{
    ParseOptions,
    feed_fetch::{FetchError, FetchOptions, Fetched, Source, fetch},
    parse_feed,
};

const ETAG: &str = "\"v1\"";
const FEED: &str = "# test feed\na.example\nb.example\n192.0.2.1\n";

/// Starts the test's server on a free loopback port; it serves until the test process ends.
fn serve() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || answer(stream));
        }
    });
    format!("http://127.0.0.1:{port}")
}

fn answer(mut stream: TcpStream) {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    reader.read_line(&mut request_line).unwrap();
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_owned();
    let mut if_none_match = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("if-none-match")
        {
            if_none_match = Some(v.trim().to_owned());
        }
    }
    let ok = |body: &str, extra: &str| {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
            body.len()
        )
    };
    let response = match path.as_str() {
        "/feed.txt" if if_none_match.as_deref() == Some(ETAG) => {
            "HTTP/1.1 304 Not Modified\r\nConnection: close\r\n\r\n".to_owned()
        }
        "/feed.txt" => ok(FEED, &format!("ETag: {ETAG}\r\n")),
        // Announces 100 bytes, sends 10 and closes: a download cut short.
        "/short" => {
            "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\na.example\n"
                .to_owned()
        }
        // A chunked body whose last chunk never comes.
        "/chunked-cut" => {
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
                           a\r\na.example\n\r\n"
                .to_owned()
        }
        "/big" => ok(&"x.example\n".repeat(200), ""),
        "/slow" => {
            std::thread::sleep(Duration::from_secs(3));
            ok(FEED, "")
        }
        _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned(),
    };
    let _ = stream.write_all(response.as_bytes());
    let _ = stream.flush();
}

fn get(url: &str, options: &FetchOptions) -> Result<Fetched, FetchError> {
    fetch(&Source::parse(url), options)
}

#[test]
fn etag_round_trip() {
    let base = serve();
    let url = format!("{base}/feed.txt");
    let Fetched::Body { bytes, etag, .. } = get(&url, &FetchOptions::default()).unwrap() else {
        panic!("expected a body");
    };
    assert_eq!(bytes, FEED.as_bytes());
    assert_eq!(etag.as_deref(), Some(ETAG));
    let parsed = parse_feed(&bytes, &ParseOptions::default()).unwrap();
    assert_eq!(parsed.set.len(), 3);
    let again = FetchOptions {
        etag,
        ..FetchOptions::default()
    };
    assert_eq!(get(&url, &again).unwrap(), Fetched::NotModified);
    let stale = FetchOptions {
        etag: Some("\"v0\"".into()),
        ..FetchOptions::default()
    };
    assert!(matches!(get(&url, &stale).unwrap(), Fetched::Body { .. }));
}

#[test]
fn fatal_problems_are_typed() {
    let base = serve();
    let opts = FetchOptions::default();
    let err = get(&format!("{base}/short"), &opts).unwrap_err();
    assert!(matches!(err, FetchError::Truncated { .. }), "{err}");
    let err = get(&format!("{base}/chunked-cut"), &opts).unwrap_err();
    assert!(matches!(err, FetchError::Truncated { .. }), "{err}");
    let err = get(&format!("{base}/nope"), &opts).unwrap_err();
    assert!(
        matches!(err, FetchError::Status { status: 404, .. }),
        "{err}"
    );
    let small = FetchOptions {
        max_bytes: 1000,
        ..FetchOptions::default()
    };
    let err = get(&format!("{base}/big"), &small).unwrap_err();
    assert!(
        matches!(err, FetchError::TooLarge { limit: 1000, .. }),
        "{err}"
    );
    assert!(get(&format!("{base}/big"), &opts).is_ok());
    let quick = FetchOptions {
        timeout: Duration::from_millis(500),
        ..FetchOptions::default()
    };
    let err = get(&format!("{base}/slow"), &quick).unwrap_err();
    assert!(matches!(err, FetchError::Timeout { .. }), "{err}");
    // A port nobody listens on.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let err = get(&format!("http://127.0.0.1:{port}/x"), &opts).unwrap_err();
    assert!(matches!(err, FetchError::Unreachable { .. }), "{err}");
}

/// Python's `http.server`, stopped on drop.
struct PyServer(Child);

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn if_modified_since_with_python_http_server() {
    let dir = std::env::temp_dir().join(format!("flux-intel-http-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("list.netset"), "# x\n10.0.0.0/8\n192.0.2.1\n").unwrap();
    let child = Command::new("python3")
        .args([
            "-u",
            "-m",
            "http.server",
            "0",
            "--bind",
            "127.0.0.1",
            "--directory",
        ])
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let mut child = match child {
        Ok(c) => PyServer(c),
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("skipped: no python3 ({e})");
            return;
        }
        Err(e) => panic!("python3: {e}"),
    };
    // "Serving HTTP on 127.0.0.1 port 41234 (http://127.0.0.1:41234/) ..."
    let mut out = BufReader::new(child.0.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let port: u16 = line
        .split_whitespace()
        .skip_while(|w| *w != "port")
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    let url = format!("http://127.0.0.1:{port}/list.netset");
    let Fetched::Body {
        bytes,
        last_modified,
        ..
    } = get(&url, &FetchOptions::default()).unwrap()
    else {
        panic!("expected a body");
    };
    let options = ParseOptions {
        file_name: Source::parse(&url).file_name(),
        ..ParseOptions::default()
    };
    let parsed = parse_feed(&bytes, &options).unwrap();
    assert_eq!(parsed.format, flux_intel::FeedFormat::Netset);
    assert_eq!(parsed.set.len(), 2);
    assert!(last_modified.is_some());
    let again = FetchOptions {
        last_modified,
        ..FetchOptions::default()
    };
    assert_eq!(get(&url, &again).unwrap(), Fetched::NotModified);
    let old = FetchOptions {
        last_modified: Some("Thu, 01 Jan 1998 00:00:00 GMT".into()),
        ..FetchOptions::default()
    };
    assert!(matches!(get(&url, &old).unwrap(), Fetched::Body { .. }));
    drop(child);
    let mut rest = String::new();
    let _ = out.read_to_string(&mut rest);
    std::fs::remove_dir_all(&dir).unwrap();
}
