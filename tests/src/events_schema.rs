//! Checks events against the JSON contract, `docs/events.schema.json` (see `docs/events.md`).

use std::path::Path;

use serde_json::Value;

/// The schema, read from the repository.
pub fn schema() -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/events.schema.json");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Panics, naming the event and every violation, unless each of `events` matches the schema.
#[track_caller]
pub fn assert_events_match_schema(events: &[Value]) {
    let schema = schema();
    let v = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("docs/events.schema.json is a valid schema");
    for e in events {
        let errors: Vec<String> = v.iter_errors(e).map(|err| err.to_string()).collect();
        assert!(
            errors.is_empty(),
            "event does not match docs/events.schema.json: {errors:#?}\n{e}"
        );
    }
}
