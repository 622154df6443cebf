//! flux-detect: everything that decides, and nothing that touches the kernel.
//!
//! What lives here, and builds and tests on stable Rust without nightly or bpf-linker:
//! - [`dns`]: DNS wire bytes to a [`dns::DnsMessage`] (hickory-proto does the names);
//! - [`capture_file`]: pcap and pcapng files to DNS messages, walking frames by the kernel's
//!   rules, which [`frame_spec`] (tests and the `frame-spec` feature) writes down once for both;
//! - [`enrich`]: address to ASN, organisation and country from offline databases;
//! - [`resolver_logs`]: Zeek `dns.log` rows and dnstap messages (Frame Streams) to the same
//!   DNS messages, for sources that logged responses rather than captured them;
//! - [`known_good`]: the known-good list (CDNs, clouds, pools) that is never enforced;
//! - [`score`]: the fast-flux scorer. **This is where a verdict is made.**
//! - [`timestamp`]: the one timestamp format of events (RFC 3339, UTC, microseconds).
//!
//! What it may touch: files it is told to read, and memory. No sockets, no maps, no kernel; the
//! agent (`flux-agent`) feeds it and acts on what it says.

pub mod capture_file;
pub mod dns;
pub mod enrich;
#[cfg(any(test, feature = "frame-spec"))]
pub mod frame_spec;
pub mod known_good;
pub mod resolver_logs;
pub mod score;
pub mod timestamp;
