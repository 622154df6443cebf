//! Addresses no bot can sit on: first-party content networks and addresses that are not
//! routable. Read by the features (`first_party_ips`) and the model's `forged_or_fronted` rule;
//! touches nothing else.
//!
//! Flux needs machines the operator controls (compromised hosts, rented servers). Nobody can
//! rent a server in the networks below, so an address there in a rotating name's answers is a
//! decoy, a forgery or a front, never a bot. Most serve only their owner's own services; two
//! kinds also front other people's sites, chosen by Host/SNI (Google's front ends for App
//! Engine and Firebase custom domains, Akamai's edges for its customers): a flux operator with
//! such a property can hand out one of their addresses and still reach his victims, so for him
//! the `forged_or_fronted` excuse costs a property there, not lost lookups (review of round
//! 26; splitting "fronting" from first-party networks is open). Networks that rent machines to
//! anyone (AWS, Azure, GCP customer space, Linode, OVH, ...) are deliberately absent, however
//! large. Kept short on purpose: each entry is an ASN whose address space is its owner's own
//! front ends, checked against the ASN database. The same list keeps these addresses out of
//! blocks and out of the bot table (`score.rs`), so a flux name cannot get a shared front
//! blocked.

use std::net::IpAddr;

/// First-party content networks: (ASN, who). Chosen because they are the ones path-injected
/// censorship answers use most (on the real resolver traffic: Dropbox, Twitter and Facebook
/// are 60 of 100 forged addresses), plus the big first-party front ends of the same kind.
pub const FIRST_PARTY_ASNS: &[(u32, &str)] = &[
    (32934, "Meta (Facebook, Instagram, WhatsApp)"),
    (13414, "Twitter / X"),
    (35995, "Twitter / X"),
    (19679, "Dropbox"),
    (
        15169,
        "Google first-party front ends (Cloud customers are AS396982)",
    ),
    (36040, "YouTube (Google)"),
    (714, "Apple"),
    (6185, "Apple"),
    (2906, "Netflix"),
    (40027, "Netflix"),
    // Issue 12, isp-cache (round 26): the vendors' own cache networks beside the caches they
    // embed in access ISPs. A content name steered between caches falls back to the vendor's
    // own; no one can rent a server there (Akamai's rentable cloud is Linode's AS63949, not
    // these). Akamai's edges serve their customers' sites, so a name answered from them is
    // fronted, which is what the rule excuses; an operator with an Akamai property gets the
    // excuse at no cost in lookups, as one with a Google front-end property already could
    // (module documentation), so these lines make it no cheaper than it was.
    (32590, "Valve (Steam content servers)"),
    (20940, "Akamai edge servers"),
    (16625, "Akamai edge servers"),
];

/// Whether an address is in a first-party content network (by its ASN) or is an IPv4 address
/// not routable on the Internet (private, loopback, link-local, shared, documentation,
/// multicast, reserved 240/4, unspecified): either way no bot can answer there.
pub fn first_party(asn: u32, ip: IpAddr) -> bool {
    first_party_network(asn) || !routable(ip)
}

/// Whether an ASN is one of [`FIRST_PARTY_ASNS`].
pub fn first_party_network(asn: u32) -> bool {
    asn != 0 && FIRST_PARTY_ASNS.iter().any(|(a, _)| *a == asn)
}

fn routable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || a == 0
                || a >= 240
                // 100.64.0.0/10, carrier-grade NAT.
                || (a == 100 && (64..128).contains(&b)))
        }
        // Unroutable IPv6 is not counted: a flux name that also publishes `AAAA ::1` loses
        // nothing (clients fall back to IPv4 at once), so it would be a free excuse.
        IpAddr::V6(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_party_and_unroutable_addresses() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(first_party(32934, ip("157.240.7.8")), "Facebook");
        assert!(first_party(19679, ip("108.160.167.30")), "Dropbox");
        assert!(
            !first_party(16509, ip("122.248.226.57")),
            "AWS rents machines"
        );
        assert!(!first_party(4134, ip("59.24.3.173")), "an eyeball ISP");
        assert!(
            first_party(32590, ip("155.133.248.10")),
            "Valve's own caches"
        );
        assert!(first_party(20940, ip("23.32.1.1")), "an Akamai edge");
        assert!(
            !first_party(63949, ip("172.104.1.1")),
            "Akamai's cloud (Linode) rents machines"
        );
        assert!(first_party(0, ip("243.185.187.39")), "reserved 240/4");
        assert!(first_party(0, ip("127.0.0.1")), "a sinkhole");
        assert!(first_party(0, ip("10.1.2.3")));
        assert!(first_party(0, ip("100.64.1.1")));
        assert!(!first_party(0, ip("100.128.1.1")));
        assert!(
            !first_party(0, ip("::1")),
            "an AAAA ::1 costs an operator nothing"
        );
        assert!(!first_party(0, ip("2a00:1450::1")));
    }
}
