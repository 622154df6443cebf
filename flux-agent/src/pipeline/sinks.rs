//! The sinks the agent subscribes to the bus today: the events file (`--events`, JSON lines or
//! readable lines) and the readable log. Each is a [`Sink`] on its own thread
//! ([`crate::pipeline::bus`]), so neither can stall the capture.
//!
//! Every event prints once: verdicts, blocks, guards and alerts go to the log; the readable
//! events format (stdout by default) carries only the `dns` lines beside it. The JSON events
//! file is the machine contract and carries everything.

use std::io::{self, Write};

use crate::pipeline::{
    bus::Sink,
    events::{Event, EventKind},
};

/// How `--events` is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventFormat {
    /// One JSON object per line, every event (`docs/events.md`).
    Json,
    /// One readable line per DNS response; the decisions are in the log.
    Human,
}

impl EventFormat {
    /// The events this format carries.
    pub fn kinds(self) -> &'static [EventKind] {
        match self {
            EventFormat::Json => &EventKind::ALL,
            EventFormat::Human => &[EventKind::Dns],
        }
    }
}

/// The events file or stdout.
pub struct EventsWriter<W> {
    out: W,
    format: EventFormat,
}

impl<W: Write + Send + 'static> EventsWriter<W> {
    pub fn new(out: W, format: EventFormat) -> Self {
        Self { out, format }
    }
}

impl<W: Write + Send + 'static> Sink for EventsWriter<W> {
    fn write(&mut self, e: &Event) -> io::Result<()> {
        write_event(&mut self.out, self.format, e)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// One event as one line in `format`.
pub fn write_event(w: &mut impl Write, format: EventFormat, e: &Event) -> io::Result<()> {
    match format {
        EventFormat::Json => {
            serde_json::to_writer(&mut *w, e)?;
            w.write_all(b"\n")
        }
        EventFormat::Human => writeln!(w, "{e}"),
    }
}

/// The readable log line of every decision (verdicts, blocks, guards, alerts).
pub struct LogSink;

impl LogSink {
    pub const KINDS: [EventKind; 4] = EventKind::DECISIONS;
}

impl Sink for LogSink {
    fn write(&mut self, e: &Event) -> io::Result<()> {
        log::log!(e.log_level(), "{e}");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::enforce::policy::{Action, ActionKind, Outcome};

    #[test]
    fn json_and_human_lines() {
        let e = Event::from(Action {
            kind: ActionKind::Block,
            ts: SystemTime::UNIX_EPOCH,
            domain: "flux.example".into(),
            action: Outcome::Blocked,
            target_kind: None,
            target: None,
            reason: "fast flux".into(),
        });
        let mut out = Vec::new();
        write_event(&mut out, EventFormat::Json, &e).unwrap();
        write_event(&mut out, EventFormat::Human, &e).unwrap();
        let text = String::from_utf8(out).unwrap();
        let mut lines = text.lines();
        assert_eq!(
            lines.next().unwrap(),
            r#"{"type":"block","ts":"1970-01-01T00:00:00.000000Z","domain":"flux.example","action":"blocked","reason":"fast flux"}"#
        );
        assert!(lines.next().unwrap().contains("block  blocked"));
        assert_eq!(EventFormat::Human.kinds(), &[EventKind::Dns]);
    }
}
