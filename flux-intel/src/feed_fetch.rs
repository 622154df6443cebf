//! Getting a feed's bytes: read a file, or fetch a URL over HTTP(S) with a conditional request
//! (`If-None-Match` with the last `ETag`, `If-Modified-Since` with the last `Last-Modified`),
//! a size limit and a timeout. Returns [`Fetched::NotModified`], or the body with the validators
//! to send next time, or a typed [`FetchError`] (unreachable, timeout, HTTP status, truncated,
//! too large). Touches the network and the file named, nothing else.
//!
//! The client is `ureq` (blocking, rustls with the Mozilla roots compiled in): a feed refresh is
//! one request every few minutes or hours, which a blocking call on its own thread does well,
//! without the agent taking on an async HTTP stack (hyper, reqwest) for it; rustls needs no
//! system OpenSSL; ureq enforces `Content-Length` (a body that ends early is an error, so a
//! truncated download is never parsed as a shorter feed), has a body size limit, a global
//! timeout, and gzip.

use std::{
    io::Read as _,
    path::{Path, PathBuf},
    time::Duration,
};

use ureq::http::{StatusCode, header};

/// Longest a whole fetch (connect, headers, body) may take by default: a large feed on a slow
/// link is tens of megabytes, minutes at worst; longer is a stuck server.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// Largest body (or file) read by default: a 1,000,000-domain list is about 25 MB and a MISP
/// export of as many attributes a few hundred; beyond this a feed is a mistake or an attack on
/// the agent's memory.
pub const DEFAULT_MAX_BYTES: u64 = 512 * 1024 * 1024;

/// Redirects followed (a feed URL moved to a CDN is common; a loop is not).
const MAX_REDIRECTS: u32 = 5;

/// Where a feed comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Path(PathBuf),
    Url(String),
}

impl Source {
    /// `http://…` and `https://…` are URLs, anything else a path.
    pub fn parse(s: &str) -> Source {
        let lower = s.get(..8).unwrap_or(s).to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            Source::Url(s.to_owned())
        } else {
            Source::Path(PathBuf::from(s))
        }
    }

    /// The file name or URL path (its extension is a format hint).
    pub fn file_name(&self) -> Option<String> {
        match self {
            Source::Path(p) => p.file_name().map(|n| n.to_string_lossy().into_owned()),
            Source::Url(u) => u
                .split(['?', '#'])
                .next()
                .and_then(|p| p.rsplit('/').next())
                .filter(|n| !n.is_empty())
                .map(str::to_owned),
        }
    }
}

/// How to fetch, and what the last fetch returned.
#[derive(Clone, Debug)]
pub struct FetchOptions {
    pub timeout: Duration,
    pub max_bytes: u64,
    /// The `ETag` of the last successful fetch.
    pub etag: Option<String>,
    /// The `Last-Modified` of the last successful fetch.
    pub last_modified: Option<String>,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            timeout: DEFAULT_TIMEOUT,
            max_bytes: DEFAULT_MAX_BYTES,
            etag: None,
            last_modified: None,
        }
    }
}

/// A fetch's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fetched {
    /// 304: the feed has not changed since the validators given.
    NotModified,
    Body {
        bytes: Vec<u8>,
        /// Validators to send next time (none for a file).
        etag: Option<String>,
        last_modified: Option<String>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{source_name} is larger than the limit of {limit} bytes")]
    TooLarge { source_name: String, limit: u64 },
    #[error("{url} is not a URL this client can fetch: {detail}")]
    BadUrl { url: String, detail: String },
    #[error("{url} is unreachable: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("{url} did not answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("{url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("the download of {url} was cut short: {detail}")]
    Truncated { url: String, detail: String },
}

/// Reads a file or fetches a URL.
pub fn fetch(source: &Source, options: &FetchOptions) -> Result<Fetched, FetchError> {
    match source {
        Source::Path(path) => read_file(path, options.max_bytes),
        Source::Url(url) => fetch_url(url, options),
    }
}

fn read_file(path: &Path, max_bytes: u64) -> Result<Fetched, FetchError> {
    let read = |source| FetchError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read)?;
    let mut bytes = Vec::new();
    // One byte past the limit tells a file at the limit from a larger one.
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(read)?;
    if bytes.len() as u64 > max_bytes {
        return Err(FetchError::TooLarge {
            source_name: path.display().to_string(),
            limit: max_bytes,
        });
    }
    Ok(Fetched::Body {
        bytes,
        etag: None,
        last_modified: None,
    })
}

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_redirects(MAX_REDIRECTS)
        .user_agent(concat!("flux-agent/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

fn fetch_url(url: &str, options: &FetchOptions) -> Result<Fetched, FetchError> {
    let mut request = agent(options.timeout).get(url);
    if let Some(etag) = &options.etag {
        request = request.header(header::IF_NONE_MATCH, etag);
    }
    if let Some(lm) = &options.last_modified {
        request = request.header(header::IF_MODIFIED_SINCE, lm);
    }
    let mut response = request.call().map_err(|e| request_error(url, options, e))?;
    let status = response.status();
    if status == StatusCode::NOT_MODIFIED {
        return Ok(Fetched::NotModified);
    }
    if status != StatusCode::OK {
        return Err(FetchError::Status {
            url: url.to_owned(),
            status: status.as_u16(),
        });
    }
    let text = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (etag, last_modified) = (text(header::ETAG), text(header::LAST_MODIFIED));
    let declared = response.body().content_length();
    let bytes = response
        .body_mut()
        .with_config()
        .limit(options.max_bytes)
        .read_to_vec()
        .map_err(|e| body_error(url, options, e))?;
    // ureq already refuses a body shorter than its Content-Length; checked again here so a
    // truncated feed can never reach the parser whatever the client does.
    if let Some(declared) = declared
        && declared != bytes.len() as u64
    {
        return Err(FetchError::Truncated {
            url: url.to_owned(),
            detail: format!("{} of the {declared} bytes announced", bytes.len()),
        });
    }
    Ok(Fetched::Body {
        bytes,
        etag,
        last_modified,
    })
}

/// An error before the response's headers: the server could not be reached or did not answer.
fn request_error(url: &str, options: &FetchOptions, e: ureq::Error) -> FetchError {
    match e {
        ureq::Error::Timeout(_) => FetchError::Timeout {
            url: url.to_owned(),
            timeout: options.timeout,
        },
        ureq::Error::BadUri(detail) => FetchError::BadUrl {
            url: url.to_owned(),
            detail,
        },
        ureq::Error::Http(e) => FetchError::BadUrl {
            url: url.to_owned(),
            detail: e.to_string(),
        },
        other => FetchError::Unreachable {
            url: url.to_owned(),
            detail: other.to_string(),
        },
    }
}

/// An error while reading the body: the connection ended early, or the body is too large.
fn body_error(url: &str, options: &FetchOptions, e: ureq::Error) -> FetchError {
    match e {
        ureq::Error::Timeout(_) => FetchError::Timeout {
            url: url.to_owned(),
            timeout: options.timeout,
        },
        ureq::Error::BodyExceedsLimit(limit) => FetchError::TooLarge {
            source_name: url.to_owned(),
            limit,
        },
        other => FetchError::Truncated {
            url: url.to_owned(),
            detail: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources() {
        assert_eq!(
            Source::parse("HTTPS://x.example/a.csv"),
            Source::Url("HTTPS://x.example/a.csv".into())
        );
        assert_eq!(
            Source::parse("/etc/feeds/a.netset"),
            Source::Path("/etc/feeds/a.netset".into())
        );
        assert_eq!(
            Source::parse("http://x.example/dir/list.netset?k=1").file_name(),
            Some("list.netset".into())
        );
        assert_eq!(Source::parse("http://x.example/").file_name(), None);
        assert_eq!(
            Source::parse("feeds/a.csv").file_name(),
            Some("a.csv".into())
        );
    }

    #[test]
    fn files_with_a_limit() {
        let path = std::env::temp_dir().join(format!("flux-intel-fetch-{}", std::process::id()));
        std::fs::write(&path, b"a.example\n").unwrap();
        let source = Source::Path(path.clone());
        let got = fetch(&source, &FetchOptions::default()).unwrap();
        assert!(matches!(got, Fetched::Body { ref bytes, .. } if bytes == b"a.example\n"));
        let small = FetchOptions {
            max_bytes: 10,
            ..FetchOptions::default()
        };
        assert!(fetch(&source, &small).is_ok());
        let smaller = FetchOptions {
            max_bytes: 9,
            ..FetchOptions::default()
        };
        assert!(matches!(
            fetch(&source, &smaller),
            Err(FetchError::TooLarge { limit: 9, .. })
        ));
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(
            fetch(&source, &small),
            Err(FetchError::Read { .. })
        ));
    }
}
