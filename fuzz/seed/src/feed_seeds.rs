//! Seeds of the `feed_parse` target: pieces of the real feed samples of `DATASETS/feeds/`
//! (every format there), cut small so libFuzzer mutates them quickly, and hand-written samples
//! of the formats no dataset has (dnsmasq `address=`, ABP options, IDN, defanged URLs, STIX OR
//! patterns). Each input is `[options byte][feed]` as `fuzz_targets/feed_parse.rs` reads it.

use std::path::Path;

use serde_json::{Value, json};

/// Lines of a text feed per seed.
const LINES_PER_SEED: usize = 40;
/// Seeds taken from each text file (its first lines, then evenly spread chunks).
const CHUNKS_PER_FILE: usize = 4;
/// Records of a JSON feed (MISP attributes, STIX objects) per seed.
const RECORDS_PER_SEED: usize = 12;

/// Options byte: CSV column by header, no file name (`auto` decides from the content alone).
const PLAIN_OPTIONS: u8 = 0;

fn with_options(options: u8, feed: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(feed.len() + 1);
    v.push(options);
    v.extend_from_slice(feed);
    v
}

/// Every seed from the feed samples under `dir` (nothing if it is absent).
pub fn from_datasets(dir: &Path, add: &mut dyn FnMut(&[u8])) {
    let Ok(subdirs) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files = Vec::new();
    for sub in subdirs.flatten() {
        if let Ok(entries) = std::fs::read_dir(sub.path()) {
            files.extend(entries.flatten().map(|e| e.path()));
        }
    }
    files.sort();
    for file in files {
        let Ok(bytes) = std::fs::read(&file) else {
            continue;
        };
        if bytes.trim_ascii_start().starts_with(b"{") {
            json_seeds(&bytes, add);
        } else {
            text_seeds(&bytes, add);
        }
    }
}

fn text_seeds(bytes: &[u8], add: &mut dyn FnMut(&[u8])) {
    let lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
    let stride = (lines.len() / CHUNKS_PER_FILE).max(1);
    for start in (0..lines.len()).step_by(stride).take(CHUNKS_PER_FILE) {
        let end = (start + LINES_PER_SEED).min(lines.len());
        let chunk = lines.get(start..end).unwrap_or_default().join(&b'\n');
        add(&with_options(PLAIN_OPTIONS, &chunk));
    }
}

/// A small valid document of the same kind: a MISP event or a STIX bundle of a few records.
fn json_seeds(bytes: &[u8], add: &mut dyn FnMut(&[u8])) {
    let Ok(doc) = serde_json::from_slice::<Value>(bytes) else {
        return;
    };
    let misp = doc["response"][0]["Event"]["Attribute"].as_array();
    let stix = doc["objects"].as_array();
    let small = if let Some(attrs) = misp {
        let head: Vec<&Value> = attrs.iter().take(RECORDS_PER_SEED).collect();
        json!({"response": [{"Event": {"info": "seed", "Attribute": head}}]})
    } else if let Some(objects) = stix {
        let head: Vec<&Value> = objects.iter().take(RECORDS_PER_SEED).collect();
        json!({"type": "bundle", "id": "bundle--seed", "objects": head})
    } else {
        return;
    };
    if let Ok(text) = serde_json::to_vec(&small) {
        add(&with_options(PLAIN_OPTIONS, &text));
    }
}

/// Samples of what the datasets lack.
pub fn hand_written(add: &mut dyn FnMut(&[u8])) {
    for (options, feed) in [
        (
            0,
            "127.0.0.1 localhost\n0.0.0.0 Evil.Example. bücher.example # c\n::1 ip6-localhost\n",
        ),
        (
            0,
            "! Title\n||a.example^$important\n@@||b.example^\n||c.example/x^\nd.example##.ad\n",
        ),
        (
            0,
            "server=/a.example/b.example/\naddress=/c.example/0.0.0.0\nlocal=/d.example/\nserver=/#/\n",
        ),
        (
            0,
            "hxxps://evil[.]example[:]8443/x\n192.0.2.1\n198.51.100.0/24\n2001:db8::/32\n",
        ),
        (1, "type,ioc\ndomain,a[.]example\nurl,http://b.example/\n"),
        (6, "# netset\n10.0.0.0-10.0.0.255\n192.0.2.7/32 ; SBL1\n"),
        (
            0,
            r#"{"Event":{"Attribute":[{"type":"domain|ip","value":"a.example|192.0.2.1"},{"type":"ip-dst|port","value":"192.0.2.2|443"}],"Object":[{"Attribute":[{"type":"hostname","value":"b.example"}]}]}}"#,
        ),
        (
            0,
            r#"{"type":"bundle","objects":[{"type":"indicator","id":"indicator--1","pattern":"[domain-name:value = 'a.example' OR ipv4-addr:value ISSUBSET '10.0.0.0/8'] OR [url:value = 'http://x.example/it\\'s']"}]}"#,
        ),
    ] {
        add(&with_options(options, feed.as_bytes()));
    }
}
