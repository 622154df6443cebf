//! Drawing `flux-agent top` from its [`App`] state with ratatui: a header with the rates, the
//! table of the most suspicious domains, the recent verdicts and blocks, the blocks by source,
//! and (over them) an explanation or a confirmation.
//!
//! May touch: the frame it is given (nothing else).

use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::{Modifier, Style},
    text::Line,
    widgets::{Block, Cell, Clear, List, ListItem, Paragraph, Row, Table, TableState, Wrap},
};

use super::top_state::{App, Change, Mode};

/// The keys, on the header's second line.
const HELP: &str = "q quit  s sort  \u{2191}/\u{2193} select  Enter explain  b block  u unblock";

pub fn draw(f: &mut Frame, app: &App) {
    let [header, table, bottom, footer] = Layout::vertical([
        Constraint::Length(4),
        Constraint::Percentage(55),
        Constraint::Min(6),
        Constraint::Length(1),
    ])
    .areas(f.area());
    draw_header(f, app, header);
    draw_table(f, app, table);
    let [verdicts, actions, sources] = Layout::horizontal([
        Constraint::Percentage(40),
        Constraint::Percentage(40),
        Constraint::Percentage(20),
    ])
    .areas(bottom);
    draw_recent(f, app, verdicts, actions);
    draw_sources(f, app, sources);
    let msg = match (&app.error, &app.message) {
        (Some(e), _) => format!("agent: {e}"),
        (None, Some(m)) => m.clone(),
        (None, None) => String::new(),
    };
    f.render_widget(Paragraph::new(msg), footer);
    match &app.mode {
        Mode::List => {}
        Mode::Explain { domain, lines } => draw_explain(f, domain, lines),
        Mode::Confirm(change) => draw_confirm(f, change),
    }
}

fn draw_header(f: &mut Frame, app: &App, area: Rect) {
    let who = match &app.report {
        Some(r) => format!(
            "pid {}  up {}  keys {}  responses {}",
            r.pid,
            humantime::format_duration(std::time::Duration::from_secs(r.uptime_secs)),
            r.keys_tracked,
            r.responses
        ),
        None => "no answer from the agent yet".into(),
    };
    let rates = format!(
        "DNS responses/s {:.1}   drops/s {:.1}   ring loss/s {:.1} (total {})   sort: {}",
        app.rates.responses,
        app.rates.drops,
        app.rates.ring_lost,
        app.sample.ring_lost,
        app.sort.name()
    );
    let text = vec![Line::from(rates), Line::from(HELP)];
    let p = Paragraph::new(text).block(Block::bordered().title(format!("flux-agent top: {who}")));
    f.render_widget(p, area);
}

fn draw_table(f: &mut Frame, app: &App, area: Rect) {
    let rows: Vec<Row> = app
        .rows()
        .into_iter()
        .map(|k| {
            let why: Vec<String> = k
                .reasons
                .iter()
                .map(|r| format!("{} {:+.2}", r.feature, r.contribution))
                .collect();
            Row::new(vec![
                Cell::from(k.level.clone()),
                Cell::from(format!("{:.3}", k.score)),
                Cell::from(if k.block { "yes" } else { "" }),
                Cell::from(k.responses.to_string()),
                Cell::from(k.domain.clone()),
                Cell::from(why.join(", ")),
            ])
        })
        .collect();
    let header = Row::new([
        "level",
        "score",
        "gate",
        "responses",
        "domain",
        "leading reasons",
    ])
    .style(Style::new().add_modifier(Modifier::BOLD));
    let widths = [
        Constraint::Length(10),
        Constraint::Length(6),
        Constraint::Length(4),
        Constraint::Length(9),
        Constraint::Percentage(35),
        Constraint::Fill(1),
    ];
    let table = Table::new(rows, widths)
        .header(header)
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .highlight_symbol("> ")
        .block(Block::bordered().title("most suspicious domains"));
    let mut state = TableState::default().with_selected(app.selected_index());
    f.render_stateful_widget(table, area, &mut state);
}

fn draw_recent(f: &mut Frame, app: &App, verdicts: Rect, actions: Rect) {
    let (vs, acts) = match &app.report {
        Some(r) => (r.recent_verdicts.as_slice(), r.recent_actions.as_slice()),
        None => (&[][..], &[][..]),
    };
    let items: Vec<ListItem> = vs
        .iter()
        .map(|v| {
            ListItem::new(format!(
                "{} {:<10} {:.2} {}",
                v.ts.get(11..19).unwrap_or(&v.ts),
                v.level,
                v.score,
                v.domain
            ))
        })
        .collect();
    f.render_widget(
        List::new(items).block(Block::bordered().title("recent verdicts")),
        verdicts,
    );
    let items: Vec<ListItem> = acts
        .iter()
        .map(|a| {
            ListItem::new(format!(
                "{} {:<5} {:<11} {}",
                a.ts.get(11..19).unwrap_or(&a.ts),
                a.kind,
                a.action,
                a.target.as_deref().unwrap_or(&a.domain)
            ))
        })
        .collect();
    f.render_widget(
        List::new(items).block(Block::bordered().title("recent blocks")),
        actions,
    );
}

fn draw_sources(f: &mut Frame, app: &App, area: Rect) {
    let items: Vec<ListItem> = app
        .by_source
        .iter()
        .map(|(s, n)| ListItem::new(format!("{n:>8} {s}")))
        .collect();
    f.render_widget(
        List::new(items).block(Block::bordered().title("blocks by source")),
        area,
    );
}

/// A rectangle of `pct_x` by `pct_y` percent in the middle of `area`.
fn centered(area: Rect, pct_x: u16, pct_y: u16) -> Rect {
    let [_, mid, _] = Layout::vertical([
        Constraint::Percentage((100 - pct_y) / 2),
        Constraint::Percentage(pct_y),
        Constraint::Fill(1),
    ])
    .areas(area);
    let [_, mid, _] = Layout::horizontal([
        Constraint::Percentage((100 - pct_x) / 2),
        Constraint::Percentage(pct_x),
        Constraint::Fill(1),
    ])
    .areas(mid);
    mid
}

fn draw_explain(f: &mut Frame, domain: &str, lines: &[String]) {
    let area = centered(f.area(), 80, 70);
    let text: Vec<Line> = lines.iter().map(|l| Line::from(l.as_str())).collect();
    let p = Paragraph::new(text)
        .wrap(Wrap { trim: false })
        .block(Block::bordered().title(format!("explain {domain} (Esc to close)")));
    f.render_widget(Clear, area);
    f.render_widget(p, area);
}

fn draw_confirm(f: &mut Frame, change: &Change) {
    let area = centered(f.area(), 50, 20);
    let q = match change {
        Change::Block(d) => format!("Block {d} (and its subdomains)? y/n"),
        Change::Unblock(d) => format!("Unblock {d}? y/n"),
    };
    f.render_widget(Clear, area);
    f.render_widget(
        Paragraph::new(q).block(Block::bordered().title("confirm")),
        area,
    );
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use ratatui::{Terminal, backend::TestBackend, crossterm::event::KeyCode};

    use super::*;
    use crate::cli::top::top_state::{
        Sample,
        tests::{key, report},
    };
    use flux_agent::pipeline::recent::{ReasonBrief, RecentAction};

    /// The screen as text, one line per row.
    fn screen(app: &App) -> String {
        let mut t = Terminal::new(TestBackend::new(160, 50)).unwrap();
        t.draw(|f| draw(f, app)).unwrap();
        let buf = t.backend().buffer().clone();
        let mut out = String::new();
        for (i, c) in buf.content().iter().enumerate() {
            if i > 0 && i % 160 == 0 {
                out.push('\n');
            }
            out.push_str(c.symbol());
        }
        out
    }

    fn app() -> App {
        let mut r = report(&[
            ("fluxy.test", "flux", 0.93, 40),
            ("maybe.test", "suspicious", 0.55, 3),
        ]);
        r.top_keys[0].reasons = vec![ReasonBrief {
            feature: "asn_diversity".into(),
            contribution: 1.25,
        }];
        r.recent_actions.push(RecentAction {
            ts: "2026-01-01T10:11:12.000000Z".into(),
            kind: "block".into(),
            domain: "fluxy.test".into(),
            action: "blocked".into(),
            target: Some("10.1.2.3".into()),
            reason: "flux".into(),
        });
        let mut app = App::new();
        app.update(Ok(r), Sample::default(), Instant::now());
        app.by_source = vec![("scorer".into(), 4), ("feed:abuse".into(), 2)];
        app
    }

    #[test]
    fn the_list_shows_domains_reasons_blocks_and_sources() {
        let s = screen(&app());
        for needle in [
            "flux-agent top: pid 7",
            "DNS responses/s 0.0",
            "ring loss/s",
            "> flux",
            "fluxy.test",
            "asn_diversity +1.25",
            "maybe.test",
            "10:11:12 block blocked     10.1.2.3",
            "4 scorer",
            "2 feed:abuse",
            "sort: score",
        ] {
            assert!(s.contains(needle), "{needle:?} missing from:\n{s}");
        }
        // The highest score is the first row, and it is selected.
        let flux = s.find("fluxy.test").unwrap();
        assert!(flux < s.find("maybe.test").unwrap(), "{s}");
    }

    #[test]
    fn explanation_and_confirmation_are_drawn_over_the_list() {
        let mut a = app();
        a.mode = Mode::Explain {
            domain: "fluxy.test".into(),
            lines: vec!["score        0.930".into()],
        };
        let s = screen(&a);
        assert!(s.contains("explain fluxy.test (Esc to close)"), "{s}");
        assert!(s.contains("score        0.930"), "{s}");
        a.mode = Mode::List;
        a.on_key(key(KeyCode::Char('b')));
        let s = screen(&a);
        assert!(
            s.contains("Block fluxy.test (and its subdomains)? y/n"),
            "{s}"
        );
        a.error = Some("no agent is running".into());
        a.mode = Mode::List;
        assert!(screen(&a).contains("agent: no agent is running"));
    }
}
