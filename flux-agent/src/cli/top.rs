//! `flux-agent top`: a live view of the running agent over its control socket, refreshed every
//! second: DNS responses/s, drops/s and ring loss (the kernel counters), the most suspicious
//! domains with their leading reasons, recent verdicts and blocks, blocks by source.
//!
//! Keys: `s` cycles the sort column, up/down select a domain, Enter shows its `explain`, `b`/`u`
//! block or unblock it after a `y` (the same write as `blocklist add/remove`: the Recorder, the
//! database then the map), `q` quits. The terminal is restored on every way out: `q`, an error
//! (a guard's drop), a panic (ratatui's hook).
//!
//! - `top/top_state.rs`: the state and the keys (pure);
//! - `top/top_view.rs`: drawing it (ratatui).
//!
//! May touch: the terminal; the blocklist maps and the state database (only on `b`/`u` + `y`).

pub mod top_state;
mod top_view;

use std::{
    path::Path,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use flux_agent::{
    control::{self, Request},
    enforce::maps::{Maps, Spec, Target},
    kernel::counters,
};
use flux_common::Counter;
use flux_state::Source;
use ratatui::crossterm::event::{self, Event, KeyEventKind};

use super::{PinArgs, StateArgs};
use top_state::{App, Change, Command, Mode, Sample};

/// How often the view asks the agent and reads the counters.
const REFRESH: Duration = Duration::from_secs(1);
/// How often the blocks by source are counted from the database: it reads every live block
/// (a feed can hold a million), too much to do every second for a number that moves slowly.
const SOURCES_REFRESH: Duration = Duration::from_secs(10);
/// The reason written with a block made from `top`, as `blocklist add --reason`.
const BLOCK_REASON: &str = "top";
/// The kernel counters that are packets dropped: blocked addresses and names, egress, and
/// unsolicited replies.
const DROP_COUNTERS: [Counter; 5] = [
    Counter::DropBlockedSrc,
    Counter::DropBlockedDst,
    Counter::DropBlockedName,
    Counter::DropEgressBlocked,
    Counter::DropUnsolicited,
];

#[derive(Debug, clap::Args)]
pub struct TopArgs {
    #[command(flatten)]
    pub pin: PinArgs,
    #[command(flatten)]
    pub state: StateArgs,
}

pub fn top(args: TopArgs) -> anyhow::Result<ExitCode> {
    // Restores the terminal however this ends, a half-done set-up included (ratatui's panic
    // hook covers a panic).
    struct Restore;
    impl Drop for Restore {
        fn drop(&mut self) {
            ratatui::restore();
        }
    }
    let _restore = Restore;
    let mut terminal = ratatui::try_init().context("set up the terminal (top needs one)")?;
    run(&mut terminal, &args)?;
    Ok(ExitCode::SUCCESS)
}

fn run(terminal: &mut ratatui::DefaultTerminal, args: &TopArgs) -> anyhow::Result<()> {
    let pin_dir = args.pin.pin_dir.as_path();
    let mut app = App::new();
    let mut next_refresh = Instant::now();
    let mut next_sources = Instant::now();
    loop {
        let now = Instant::now();
        if now >= next_refresh {
            refresh(&mut app, pin_dir);
            next_refresh = now + REFRESH;
        }
        if now >= next_sources {
            app.by_source = blocks_by_source(args.state.path().as_deref());
            next_sources = now + SOURCES_REFRESH;
        }
        terminal.draw(|f| top_view::draw(f, &app)).context("draw")?;
        let wait = next_refresh.saturating_duration_since(Instant::now());
        if !event::poll(wait).context("read the terminal")? {
            continue;
        }
        let Event::Key(key) = event::read().context("read the terminal")? else {
            continue;
        };
        if key.kind != KeyEventKind::Press {
            continue;
        }
        match app.on_key(key) {
            Command::None => {}
            Command::Quit => return Ok(()),
            Command::Explain(domain) => {
                let lines = match control::ask(
                    pin_dir,
                    &Request {
                        explain: domain.clone(),
                    },
                ) {
                    Ok(e) => top_state::explain_lines(e.verdict.as_ref(), e.key.as_deref()),
                    Err(e) => vec![e.to_string()],
                };
                app.mode = Mode::Explain { domain, lines };
            }
            Command::Apply(change) => {
                app.message = Some(match apply(&change, pin_dir, &args.state) {
                    Ok(done) => done,
                    Err(e) => format!("{e:#}"),
                });
                next_sources = Instant::now();
            }
        }
    }
}

/// Asks the agent for its status and reads the kernel counters.
fn refresh(app: &mut App, pin_dir: &Path) {
    let report = control::ask_status(pin_dir).map_err(|e| e.to_string());
    let kernel = counters::read(pin_dir).ok();
    let k = |c: Counter| kernel.as_ref().map_or(0, |s| s.get(c));
    let sample = Sample {
        responses: report.as_ref().map_or(0, |r| r.responses),
        drops: DROP_COUNTERS.iter().map(|c| k(*c)).sum(),
        ring_lost: k(Counter::RingBufFull),
    };
    app.update(report, sample, Instant::now());
}

/// Live blocks in the database, counted by source, largest first.
fn blocks_by_source(db: Option<&Path>) -> Vec<(String, u64)> {
    let Some(store) = db.and_then(|p| flux_state::Store::open_read_only(p).ok()) else {
        return Vec::new();
    };
    let entries = store
        .effective_entries(Some(flux_state::Kind::Block), std::time::SystemTime::now())
        .unwrap_or_default();
    let mut counts: std::collections::BTreeMap<String, u64> = Default::default();
    for e in &entries {
        for s in &e.sources {
            *counts.entry(s.to_string()).or_default() += 1;
        }
    }
    let mut out: Vec<(String, u64)> = counts.into_iter().collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out
}

/// Blocks or unblocks a domain as `blocklist add/remove --domain` does: the Recorder writes the
/// database, then the map.
fn apply(change: &Change, pin_dir: &Path, state: &StateArgs) -> anyhow::Result<String> {
    let mut maps = Maps::open(pin_dir).context("open the blocklist maps")?;
    let mut rec = state.recorder();
    match change {
        Change::Block(d) => {
            let t = Target::domain(d)?;
            let previous = maps.get(&t)?;
            rec.block(
                &mut maps,
                &t,
                &Spec::manual(None, BLOCK_REASON),
                Source::Manual,
                previous,
            )
            .with_context(|| format!("cannot block {t}"))?;
            Ok(format!("blocked {t}"))
        }
        Change::Unblock(d) => {
            let t = Target::domain(d)?;
            Ok(if rec.unblock(&mut maps, &t)? {
                format!("unblocked {t}")
            } else {
                format!("{t} was not blocked")
            })
        }
    }
}
