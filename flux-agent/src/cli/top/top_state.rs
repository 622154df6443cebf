//! What `flux-agent top` shows and where the operator is in it, without a terminal: the last
//! status answer, rates from two samples, the sort column, the selected domain, and the mode
//! (the list, an explanation, a confirmation). Keys become [`Command`]s here; the loop in
//! `cli/top.rs` carries them out. Tested with ratatui's `TestBackend` in `top_view.rs`.
//!
//! May touch: nothing (pure state).

use std::time::Instant;

use flux_agent::pipeline::recent::{StatusReport, TopKey};
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// The table's sort column, cycled with `s`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sort {
    Score,
    Level,
    Responses,
    Domain,
}

impl Sort {
    pub const ALL: [Sort; 4] = [Sort::Score, Sort::Level, Sort::Responses, Sort::Domain];

    pub fn name(self) -> &'static str {
        match self {
            Sort::Score => "score",
            Sort::Level => "level",
            Sort::Responses => "responses",
            Sort::Domain => "domain",
        }
    }

    fn next(self) -> Sort {
        let i = Self::ALL.iter().position(|s| *s == self).unwrap_or(0);
        Self::ALL.get(i + 1).copied().unwrap_or(Sort::Score)
    }
}

/// A block or an unblock waiting for `y`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Block(String),
    Unblock(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    List,
    /// The explanation of a domain, as lines.
    Explain {
        domain: String,
        lines: Vec<String>,
    },
    Confirm(Change),
}

/// What a key asks the loop to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    None,
    Quit,
    Explain(String),
    Apply(Change),
}

/// The counters rates are computed from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    pub responses: u64,
    /// Packets the kernel dropped (blocked addresses, names, egress, unsolicited).
    pub drops: u64,
    /// Responses lost because the ring buffer was full.
    pub ring_lost: u64,
}

/// Per-second rates between the last two samples.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Rates {
    pub responses: f64,
    pub drops: f64,
    pub ring_lost: f64,
}

pub struct App {
    pub report: Option<StatusReport>,
    /// Why the last refresh failed (no agent, no answer).
    pub error: Option<String>,
    pub sample: Sample,
    pub rates: Rates,
    last: Option<(Instant, Sample)>,
    /// Blocks in the database by source (`scorer`, `manual`, `feed:NAME`), largest first.
    pub by_source: Vec<(String, u64)>,
    pub sort: Sort,
    /// The selected domain (kept across refreshes, whatever its row).
    pub selected: Option<String>,
    pub mode: Mode,
    /// The outcome of the last action, shown on the bottom line.
    pub message: Option<String>,
}

impl Default for App {
    fn default() -> Self {
        Self::new()
    }
}

impl App {
    pub fn new() -> Self {
        Self {
            report: None,
            error: None,
            sample: Sample::default(),
            rates: Rates::default(),
            last: None,
            by_source: Vec::new(),
            sort: Sort::Score,
            selected: None,
            mode: Mode::List,
            message: None,
        }
    }

    /// A new answer and counter sample taken at `at`.
    pub fn update(&mut self, report: Result<StatusReport, String>, sample: Sample, at: Instant) {
        match report {
            Ok(r) => {
                self.report = Some(r);
                self.error = None;
            }
            Err(e) => self.error = Some(e),
        }
        if let Some((t, prev)) = self.last {
            let secs = at.saturating_duration_since(t).as_secs_f64();
            if secs > 0.0 {
                let rate = |now: u64, before: u64| now.saturating_sub(before) as f64 / secs;
                self.rates = Rates {
                    responses: rate(sample.responses, prev.responses),
                    drops: rate(sample.drops, prev.drops),
                    ring_lost: rate(sample.ring_lost, prev.ring_lost),
                };
            }
        }
        self.sample = sample;
        self.last = Some((at, sample));
        if self.selected.is_none() {
            self.selected = self.rows().first().map(|k| k.domain.clone());
        }
    }

    /// The top keys in the current sort order.
    pub fn rows(&self) -> Vec<&TopKey> {
        let mut rows: Vec<&TopKey> = self
            .report
            .as_ref()
            .map(|r| r.top_keys.iter().collect())
            .unwrap_or_default();
        let level = |k: &TopKey| match k.level.as_str() {
            "flux" => 2,
            "suspicious" => 1,
            _ => 0,
        };
        rows.sort_by(|a, b| match self.sort {
            Sort::Score => b.score.total_cmp(&a.score),
            Sort::Level => level(b).cmp(&level(a)).then(b.score.total_cmp(&a.score)),
            Sort::Responses => b.responses.cmp(&a.responses),
            Sort::Domain => a.domain.cmp(&b.domain),
        });
        rows
    }

    /// The selected row's index in [`App::rows`].
    pub fn selected_index(&self) -> Option<usize> {
        let sel = self.selected.as_deref()?;
        self.rows().iter().position(|k| k.domain == sel)
    }

    fn move_selection(&mut self, down: bool) {
        let rows = self.rows();
        if rows.is_empty() {
            return;
        }
        let next = match self.selected_index() {
            None => 0,
            Some(i) if down => (i + 1).min(rows.len() - 1),
            Some(i) => i.saturating_sub(1),
        };
        self.selected = rows.get(next).map(|k| k.domain.clone());
    }

    /// One key press.
    pub fn on_key(&mut self, key: KeyEvent) -> Command {
        if key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL) {
            return Command::Quit;
        }
        match &self.mode {
            Mode::Confirm(change) => {
                let change = change.clone();
                self.mode = Mode::List;
                match key.code {
                    KeyCode::Char('y') | KeyCode::Char('Y') => Command::Apply(change),
                    _ => {
                        self.message = Some("cancelled".into());
                        Command::None
                    }
                }
            }
            Mode::Explain { .. } => {
                match key.code {
                    KeyCode::Char('q') => return Command::Quit,
                    KeyCode::Esc | KeyCode::Enter | KeyCode::Backspace => self.mode = Mode::List,
                    _ => {}
                }
                Command::None
            }
            Mode::List => self.list_key(key.code),
        }
    }

    fn list_key(&mut self, code: KeyCode) -> Command {
        match code {
            KeyCode::Char('q') | KeyCode::Esc => Command::Quit,
            KeyCode::Char('s') => {
                self.sort = self.sort.next();
                Command::None
            }
            KeyCode::Up | KeyCode::Char('k') => {
                self.move_selection(false);
                Command::None
            }
            KeyCode::Down | KeyCode::Char('j') => {
                self.move_selection(true);
                Command::None
            }
            KeyCode::Enter => self
                .selected
                .clone()
                .map_or(Command::None, Command::Explain),
            KeyCode::Char('b') => self.confirm(Change::Block),
            KeyCode::Char('u') => self.confirm(Change::Unblock),
            _ => Command::None,
        }
    }

    fn confirm(&mut self, change: fn(String) -> Change) -> Command {
        if let Some(d) = self.selected.clone() {
            self.mode = Mode::Confirm(change(d));
        }
        Command::None
    }
}

/// The explanation of `domain` as lines, from the `explain` answer's verdict (the `verdict`
/// event's JSON), or why there is none.
pub fn explain_lines(verdict: Option<&serde_json::Value>, key: Option<&str>) -> Vec<String> {
    let Some(v) = verdict else {
        return vec!["the agent tracks no such name (nor its registered domain)".into()];
    };
    let num = |f: &str| v[f].as_f64().map_or("-".into(), |x| format!("{x:.3}"));
    let mut lines = vec![
        format!("key          {}", key.unwrap_or("-")),
        format!(
            "level        {} (was {})",
            v["level"].as_str().unwrap_or("-"),
            v["previous"].as_str().unwrap_or("-")
        ),
        format!(
            "score        {}   own score {}",
            num("score"),
            num("own_score")
        ),
        format!(
            "block gate   {} ({})",
            v["block"],
            v["block_gate"].as_str().unwrap_or("-")
        ),
        format!(
            "double flux  {}   allowlisted {}",
            v["double_flux"], v["allowlisted"]
        ),
        "reasons:".into(),
    ];
    for r in v["reasons"].as_array().into_iter().flatten() {
        lines.push(format!(
            "  {:<28} {:+.3}",
            r["feature"].as_str().unwrap_or("?"),
            r["contribution"].as_f64().unwrap_or(0.0)
        ));
    }
    lines.push("features:".into());
    if let Some(f) = v["features"].as_object() {
        for (k, x) in f {
            lines.push(format!("  {k:<28} {x}"));
        }
    }
    lines
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use ratatui::crossterm::event::KeyEvent;

    pub fn key(c: KeyCode) -> KeyEvent {
        KeyEvent::new(c, KeyModifiers::NONE)
    }

    pub fn report(keys: &[(&str, &str, f64, u32)]) -> StatusReport {
        StatusReport {
            pid: 7,
            started_at: "2026-01-01T00:00:00.000000Z".into(),
            uptime_secs: 3,
            responses: 100,
            unsolicited: 0,
            keys_tracked: 9,
            scoring: true,
            decisions: Default::default(),
            recent_verdicts: Vec::new(),
            recent_actions: Vec::new(),
            top_keys: keys
                .iter()
                .map(|(d, l, s, n)| TopKey {
                    domain: (*d).into(),
                    level: (*l).into(),
                    score: *s,
                    block: false,
                    responses: *n,
                    reasons: Vec::new(),
                })
                .collect(),
        }
    }

    #[test]
    fn rates_come_from_two_samples() {
        let mut app = App::new();
        let t0 = Instant::now();
        let s = |responses, drops, ring_lost| Sample {
            responses,
            drops,
            ring_lost,
        };
        app.update(Ok(report(&[])), s(100, 10, 0), t0);
        assert_eq!(app.rates, Rates::default(), "one sample: no rate yet");
        app.update(
            Ok(report(&[])),
            s(300, 14, 2),
            t0 + std::time::Duration::from_secs(2),
        );
        assert_eq!(app.rates.responses, 100.0);
        assert_eq!(app.rates.drops, 2.0);
        assert_eq!(app.rates.ring_lost, 1.0);
        app.update(
            Err("gone".into()),
            s(0, 0, 0),
            t0 + std::time::Duration::from_secs(3),
        );
        assert_eq!(app.error.as_deref(), Some("gone"));
        assert_eq!(
            app.rates.responses, 0.0,
            "a restarted agent is no negative rate"
        );
        assert!(app.report.is_some(), "the last answer stays on screen");
    }

    #[test]
    fn selection_follows_the_domain_across_sorts() {
        let mut app = App::new();
        let r = report(&[
            ("a.test", "suspicious", 0.6, 50),
            ("b.test", "flux", 0.9, 10),
            ("c.test", "flux", 0.7, 99),
        ]);
        app.update(Ok(r), Sample::default(), Instant::now());
        assert_eq!(app.selected.as_deref(), Some("b.test"), "highest score");
        assert_eq!(app.on_key(key(KeyCode::Down)), Command::None);
        assert_eq!(app.selected.as_deref(), Some("c.test"));
        app.on_key(key(KeyCode::Char('s')));
        assert_eq!(app.sort, Sort::Level);
        app.on_key(key(KeyCode::Char('s')));
        assert_eq!(app.sort, Sort::Responses);
        assert_eq!(
            app.selected_index(),
            Some(0),
            "c.test has the most responses"
        );
        app.on_key(key(KeyCode::Up));
        assert_eq!(app.selected.as_deref(), Some("c.test"), "stays at the top");
        app.on_key(key(KeyCode::Char('s')));
        app.on_key(key(KeyCode::Char('s')));
        assert_eq!(app.sort, Sort::Score, "cycles");
        assert_eq!(
            app.on_key(key(KeyCode::Enter)),
            Command::Explain("c.test".into())
        );
    }

    #[test]
    fn block_and_unblock_wait_for_y() {
        let mut app = App::new();
        app.update(
            Ok(report(&[("x.test", "flux", 0.9, 1)])),
            Sample::default(),
            Instant::now(),
        );
        assert_eq!(app.on_key(key(KeyCode::Char('b'))), Command::None);
        assert_eq!(app.mode, Mode::Confirm(Change::Block("x.test".into())));
        assert_eq!(
            app.on_key(key(KeyCode::Char('y'))),
            Command::Apply(Change::Block("x.test".into()))
        );
        assert_eq!(app.mode, Mode::List);
        app.on_key(key(KeyCode::Char('u')));
        assert_eq!(app.on_key(key(KeyCode::Char('n'))), Command::None);
        assert_eq!(app.message.as_deref(), Some("cancelled"));
        assert_eq!(app.on_key(key(KeyCode::Char('q'))), Command::Quit);
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(app.on_key(ctrl_c), Command::Quit);
    }

    #[test]
    fn explanation_lines_name_the_reasons() {
        let v = serde_json::json!({
            "level": "flux", "previous": "suspicious", "score": 0.91, "own_score": 0.9,
            "block": true, "block_gate": "ok", "double_flux": false, "allowlisted": false,
            "reasons": [{"feature": "asn_diversity", "contribution": 1.5}],
            "features": {"ips": 12}
        });
        let lines = explain_lines(Some(&v), Some("fluxy.test"));
        assert!(
            lines
                .iter()
                .any(|l| l.contains("asn_diversity") && l.contains("+1.500"))
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("score") && l.contains("0.910"))
        );
        assert!(explain_lines(None, None)[0].contains("no such name"));
    }
}
