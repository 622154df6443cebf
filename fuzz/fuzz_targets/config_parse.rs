//! The configuration file of `run` (`flux_agent::config::ConfigFile::parse`): bytes as a TOML
//! document of `RunConfig` keys.
//!
//! Checks: no panic; an error is one line (the one line `config check` prints) whose line
//! number is within the text; an accepted file serialises back to TOML that parses to the same
//! settings (round trip) and gives the same arguments.
#![no_main]

use flux_agent::config::ConfigFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match ConfigFile::parse("fuzz.toml", data) {
        Ok(f) => {
            let entries = f.config.entries();
            let text = toml::to_string(&f.config).expect("an accepted config serialises");
            let again = ConfigFile::parse("again.toml", text.as_bytes())
                .unwrap_or_else(|e| panic!("round trip refused: {e}\n{text}"));
            assert_eq!(again.config, f.config, "round trip changed the settings");
            let forms = |e: &[flux_agent::config::file_keys::Entry]| -> Vec<_> {
                e.iter().map(|e| (e.key, e.form.clone())).collect()
            };
            assert_eq!(forms(&again.config.entries()), forms(&entries));
        }
        Err(e) => {
            let line = e.to_string();
            assert!(
                !line.contains('\n'),
                "an error of more than one line: {line:?}"
            );
            if let flux_agent::config::ConfigError::At { line: n, .. } = e {
                let lines = data.iter().filter(|b| **b == b'\n').count() + 1;
                assert!(n >= 1 && n <= lines, "line {n} of a {lines}-line text");
            }
        }
    }
});
