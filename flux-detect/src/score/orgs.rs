//! Organisations: ASNs grouped by AS name, so one company's several ASNs count as one network
//! (Amazon's 16509 and 14618, Akamai's 20940 and 16625). Read by the scorer when it first meets
//! an ASN; the word lists are in `params.rs`.

use super::{
    addr_info::fnv32,
    params::{ORG_ALIASES, ORG_GENERIC_WORDS},
};

/// Marks an ASN that has no name: its organisation is the ASN itself.
const UNNAMED: u32 = 0x8000_0000;
/// The bits of a name's hash an organisation id keeps, so it never looks like [`UNNAMED`]
/// (nor like the /16 stand-in of a scorer without a database, `0x4000_0000 | prefix`).
const NAMED_MASK: u32 = 0x3fff_ffff;

/// An organisation id from an AS name: its first word, or its first two when the first is a
/// country or a generic word ([`ORG_GENERIC_WORDS`]), or an alias ([`ORG_ALIASES`]).
pub fn org_id(asn: u32, as_name: Option<&str>) -> u32 {
    let Some(name) = as_name else {
        return asn | UNNAMED;
    };
    let lower = name.to_ascii_lowercase();
    let mut words = lower
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty());
    let Some(first) = words.next() else {
        return asn | UNNAMED;
    };
    let key = match ORG_ALIASES.iter().find(|(w, _)| *w == first) {
        Some((_, alias)) => (*alias).to_owned(),
        None if ORG_GENERIC_WORDS.contains(&first) => match words.next() {
            Some(second) => format!("{first} {second}"),
            None => first.to_owned(),
        },
        None => first.to_owned(),
    };
    fnv32(key.as_bytes()) & NAMED_MASK
}
