//! Progress display: on a terminal an indicatif bar with bytes done/total, throughput and ETA;
//! nothing otherwise (cron mails any output, systemd and pipes keep it forever), so that a
//! command run by a scheduler prints only its result line.
//!
//! The library reports bytes ([`pgvault_core::progress::Progress`]); sizes, rates and times are
//! written in PostgreSQL's units by [`pgvault_core::units`], like every other size pgvault shows.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle, WeakProgressBar};
use pgvault_core::progress::{Progress, Quiet};
use pgvault_core::units;

/// How often the bar is redrawn even without news (elapsed time and ETA keep moving while the
/// server checkpoints or reports its progress once a second).
const TICK: Duration = Duration::from_millis(250);

/// The bar on screen, if any: log lines and warnings are written around it ([`suspend`]). Weak:
/// a bar dropped by a failed command is gone, not kept ticking by this.
static ACTIVE: Mutex<Option<WeakProgressBar>> = Mutex::new(None);

/// Runs `f` (a write to stderr) with the bar on screen, if any, cleared and redrawn after, so a
/// log line never lands in the middle of the bar.
pub fn suspend<R>(f: impl FnOnce() -> R) -> R {
    let bar = ACTIVE
        .lock()
        .ok()
        .and_then(|a| a.as_ref().and_then(WeakProgressBar::upgrade));
    match bar {
        Some(b) if !b.is_finished() => b.suspend(f),
        _ => f(),
    }
}

struct Bar(ProgressBar);

impl Progress for Bar {
    fn total(&self, bytes: u64) {
        self.0.set_length(bytes);
    }
    fn position(&self, bytes: u64) {
        self.0.set_position(bytes);
    }
    fn advance(&self, bytes: u64) {
        self.0.inc(bytes);
    }
    fn phase(&self, text: &str) {
        self.0.set_message(text.to_string());
    }
    fn finish(&self) {
        self.0.finish_and_clear();
        if let Ok(mut a) = ACTIVE.lock() {
            *a = None;
        }
    }
}

/// A throughput for people: `36.0MB/s`, `-` before there is one.
pub fn format_rate(bytes_per_sec: f64) -> String {
    if !bytes_per_sec.is_finite() || bytes_per_sec < 1.0 {
        return "-".into();
    }
    format!("{}/s", units::format_size_rough(bytes_per_sec as u64))
}

/// The time left at `bytes_per_sec` with `pos` of `total` bytes done: `?` when the total or
/// the rate is unknown, `0s` once the (estimated) total is reached.
pub fn format_eta(pos: u64, total: Option<u64>, bytes_per_sec: f64) -> String {
    let Some(total) = total.filter(|t| *t > 0) else {
        return "?".into();
    };
    if pos >= total {
        return "0s".into();
    }
    if !bytes_per_sec.is_finite() || bytes_per_sec < 1.0 {
        return "?".into();
    }
    let secs = ((total - pos) as f64 / bytes_per_sec).ceil();
    // Beyond a year the estimate means nothing; also keeps the conversion in range.
    let secs = secs.min(365.0 * 86_400.0) as i64;
    units::format_duration_rough(chrono::Duration::seconds(secs))
}

/// A size, or `?` when unknown (a backup before the server's estimate arrives).
fn format_total(total: Option<u64>) -> String {
    total
        .filter(|t| *t > 0)
        .map_or_else(|| "?".into(), units::format_size_rough)
}

/// The bar: phase, bytes done/total, throughput, time left and time taken.
const TEMPLATE: &str = "{msg:>26} [{bar:30}] {done}/{total} {rate} eta {eta} ({elapsed})";

fn style() -> ProgressStyle {
    ProgressStyle::with_template(TEMPLATE)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key("done", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = w.write_str(&units::format_size_rough(s.pos()));
        })
        .with_key("total", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = w.write_str(&format_total(s.len()));
        })
        .with_key("rate", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = w.write_str(&format_rate(s.per_sec()));
        })
        .with_key("eta", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = w.write_str(&format_eta(s.pos(), s.len(), s.per_sec()));
        })
        .progress_chars("=> ")
}

/// A bar when stderr is a terminal and progress was not turned off (`--no-progress`, or JSON
/// logs); otherwise [`Quiet`].
pub fn for_terminal(enabled: bool) -> Arc<dyn Progress> {
    if !enabled || !std::io::stderr().is_terminal() {
        return Arc::new(Quiet);
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(style());
    bar.enable_steady_tick(TICK);
    if let Ok(mut a) = ACTIVE.lock() {
        *a = Some(bar.downgrade());
    }
    Arc::new(Bar(bar))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_in_postgres_units() {
        assert_eq!(format_rate(36.0 * 1024.0 * 1024.0), "36.0MB/s");
        assert_eq!(format_rate(1536.0), "1.5kB/s");
        assert_eq!(format_rate(512.0), "512B/s");
        assert_eq!(format_rate(2.5 * 1024.0 * 1024.0 * 1024.0), "2.5GB/s");
        assert_eq!(format_rate(0.0), "-");
        assert_eq!(format_rate(f64::NAN), "-");
        assert_eq!(format_rate(f64::INFINITY), "-");
    }

    #[test]
    fn eta_from_rate_and_remaining_bytes() {
        let mb = 1024.0 * 1024.0;
        // 1 GB left at 10 MB/s: 102.4 s, rounded up.
        assert_eq!(format_eta(0, Some(1 << 30), 10.0 * mb), "1min");
        assert_eq!(format_eta(512 << 20, Some(1 << 30), 512.0 * mb), "1s");
        assert_eq!(format_eta(0, Some(100 << 20), mb), "1min");
        assert_eq!(format_eta(0, Some(36 << 30), 10.0 * mb), "1h 1min");
        assert_eq!(format_eta(0, Some(10 << 20), 2.0 * mb), "5s");
    }

    #[test]
    fn eta_unknown_or_done() {
        assert_eq!(format_eta(10, None, 100.0), "?");
        assert_eq!(format_eta(10, Some(0), 100.0), "?");
        assert_eq!(format_eta(10, Some(100), 0.0), "?");
        // The server's size estimate can be exceeded: the bar then says done, not negative.
        assert_eq!(format_eta(200, Some(100), 100.0), "0s");
        assert_eq!(format_eta(0, Some(u64::MAX), 1.0), "365d");
    }

    #[test]
    fn totals() {
        assert_eq!(format_total(None), "?");
        assert_eq!(format_total(Some(0)), "?");
        assert_eq!(format_total(Some(3 << 30)), "3.0GB");
    }

    #[test]
    fn template_parses() {
        assert!(ProgressStyle::with_template(TEMPLATE).is_ok());
    }
}
