//! The live display: an indicatif bar (or spinner, for runs bounded by time) refreshed from
//! shared counters four times a second, hidden with `--quiet` or when stderr is not a TTY.

use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::generator::Live;
use crate::report::fmt_us;
use crate::sink::Stats;

const TICK: Duration = Duration::from_millis(250);

/// A progress display, possibly hidden.
pub struct Progress {
    bar: ProgressBar,
    /// Not a TTY but not quiet either: print a status line every few seconds instead.
    lines: bool,
}

/// Interval of the status lines printed when stderr is not a terminal.
const LINE_EVERY: Duration = Duration::from_secs(5);

impl Progress {
    /// `total`: the message count when the run is bounded by count.
    pub fn new(total: Option<u64>, quiet: bool) -> Progress {
        let bar = match total {
            Some(n) => ProgressBar::new(n),
            None => ProgressBar::new_spinner(),
        };
        let template = if total.is_some() {
            "{elapsed_precise} [{bar:30}] {pos}/{len} {per_sec} {msg}"
        } else {
            "{elapsed_precise} {spinner} {pos} {per_sec} {msg}"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        let tty = std::io::stderr().is_terminal();
        if quiet || !tty {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        Progress { bar, lines: !quiet && !tty }
    }

    pub fn hidden() -> Progress {
        Progress::new(None, true)
    }

    /// Follows a generator's counters until the returned task is aborted.
    pub fn follow(&self, live: Arc<Live>) -> tokio::task::JoinHandle<()> {
        let (bar, lines) = (self.bar.clone(), self.lines);
        tokio::spawn(async move {
            for tick in 1u64.. {
                bar.set_position(live.sent.load(Ordering::Relaxed));
                bar.set_message(format!(
                    "accepted {}  refused {}  errors {}",
                    live.accepted.load(Ordering::Relaxed),
                    live.refused.load(Ordering::Relaxed),
                    live.errors.load(Ordering::Relaxed)
                ));
                status_line(&bar, lines, tick);
                tokio::time::sleep(TICK).await;
            }
        })
    }

    /// Follows a sink's counters until the returned task is aborted.
    pub fn follow_sink(&self, stats: Arc<Stats>) -> tokio::task::JoinHandle<()> {
        let (bar, lines) = (self.bar.clone(), self.lines);
        tokio::spawn(async move {
            for tick in 1u64.. {
                bar.set_position(stats.messages.load(Ordering::Relaxed));
                let e2e = stats.latency.lock().map(|l| l.summary()).unwrap_or_default();
                let refused: u64 = stats.refusals.lock().map(|r| r.values().sum()).unwrap_or(0);
                bar.set_message(format!(
                    "refused {refused}  e2e p50 {}  p99 {}",
                    fmt_us(e2e.p50_us),
                    fmt_us(e2e.p99_us)
                ));
                status_line(&bar, lines, tick);
                tokio::time::sleep(TICK).await;
            }
        })
    }

    pub fn finish(&self) {
        if self.lines {
            status_line(&self.bar, true, 0);
        }
        self.bar.finish_and_clear();
    }
}

/// Prints `elapsed count rate message` to stderr every [`LINE_EVERY`] (tick 0: now).
fn status_line(bar: &ProgressBar, lines: bool, tick: u64) {
    let every = (LINE_EVERY.as_millis() / TICK.as_millis()) as u64;
    if lines && tick.is_multiple_of(every) {
        let secs = bar.elapsed().as_secs_f64();
        let rate = if secs > 0.0 { bar.position() as f64 / secs } else { 0.0 };
        eprintln!("[{secs:>7.1}s] {} ({rate:.0}/s) {}", bar.position(), bar.message());
    }
}
