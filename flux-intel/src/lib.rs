//! Threat-intelligence feeds for flux-agent: the formats people publish them in, read into one
//! deduplicated set of names, addresses and networks, and fetching them from a file or a URL.
//! A library on stable Rust (no aya); the agent's `feed` commands and the state database use it.
//!
//! - [`feed_formats`]: the formats and `auto` detection; one module per format under
//!   `feed_formats/`.
//! - [`indicator`]: one value made canonical (defanged forms, URLs, IDN, validation).
//! - [`feed_set`]: the result ([`FeedSet`], [`Warning`]) and the fatal errors ([`FeedError`]).
//! - [`feed_fetch`]: a path, or a URL over HTTP(S) with `If-None-Match`/`If-Modified-Since`,
//!   a size limit and a timeout.
//! - `src/bin/feed-bench.rs`: parse time and memory of 1,000,000-entry feeds (`cargo xtask
//!   bench`).
//!
//! # Formats (`--format`)
//!
//! | name | what | example |
//! |---|---|---|
//! | `hosts` | `ADDRESS NAME...`; the names are the entries, `localhost`-style lines skipped | `0.0.0.0 evil.example` |
//! | `plain` | one name, address, CIDR or URL (its host) a line | `evil.example` |
//! | `abp` | AdBlock/AdGuard `\|\|name^`; whole-name options kept, exceptions, paths, cosmetic rules and other options skipped with a warning | `\|\|evil.example^$important` |
//! | `dnsmasq` | `server=/name/`, `local=/name/`, `address=/name/[sink]`; forwarding to an upstream skipped | `server=/evil.example/` |
//! | `csv` | a column (by `--column` number or header name, else by header name `ioc`, `indicator`, `value`, `domain`, ..., else the first holding an indicator); `,` `;` or tab detected | `ip;port;botnet` |
//! | `netset` | FireHOL and other address lists: addresses, CIDRs, `FIRST-LAST` ranges; `#` and `;` comments | `1.10.16.0/20 ; SBL1` |
//! | `misp` | event export `{"Event":…}`, search results `{"response":[{"Event":…}]}` or `{"response":{"Attribute":[…]}}`; types `domain`, `hostname`, `ip-src`, `ip-dst`, `ip-src\|port`, `ip-dst\|port`, `hostname\|port`, `domain\|ip`, `url` | |
//! | `stix` | 2.1 bundle; `indicator` patterns on `domain-name:value`, `ipv4-addr:value`, `ipv6-addr:value`, `url:value` (host), with `=`, `IN`, `ISSUBSET` (CIDR), joined by `OR`; `AND`/`FOLLOWEDBY` patterns skipped with a warning | `[domain-name:value = 'evil.example']` |
//!
//! Every value: defanged forms read (`[.]`, `(.)`, `{.}`, `[dot]`, `[:]`, `[://]`, `hxxp`);
//! names lowercased, trailing dot removed, IDN converted to A-labels, checked (RFC 1035 lengths,
//! letters/digits/`-`/`_`, two labels at least, not an all-digit TLD); a /32 or /128 is an
//! address; a network is truncated to its prefix.
//!
//! # `--format auto`
//!
//! From the content, the file name's extension only breaking a tie (the full rule is in
//! [`feed_formats`]): JSON is STIX when it holds a bundle's `objects`, MISP when it holds
//! `Event`, `response` or `Attribute`; a text feed's first 200 meaningful lines each vote
//! (`||…^` abp, `server=/` dnsmasq, `ADDRESS NAME` hosts, fields split by `,`/`;`/tab csv, a lone
//! address/CIDR netset, another lone token plain) and the most votes win.
//!
//! # Errors
//!
//! A bad line is a [`Warning`] with its line number and the rest loads. Fatal, as a
//! [`FeedError`]: an unknown format name, JSON that does not parse (`Truncated` when it ends
//! early), JSON of neither kind, a CSV column that does not exist, and a feed where nothing
//! parses. Fetching has its own typed errors ([`feed_fetch::FetchError`]).

pub mod feed_fetch;
pub mod feed_formats;
pub mod feed_set;
pub mod indicator;

pub use feed_formats::{CsvColumn, FeedFormat, FormatChoice, ParseOptions, parse_feed};
pub use feed_set::{FeedError, FeedSet, Parsed, Warning};
