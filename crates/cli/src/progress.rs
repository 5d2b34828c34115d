//! Progress display: an indicatif bar on a terminal, nothing otherwise (cron mails any output).

use std::io::IsTerminal;
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pgvault_core::progress::{Progress, Quiet};

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
    }
}

/// A bar when stderr is a terminal and progress was not turned off.
pub fn for_terminal(enabled: bool) -> Arc<dyn Progress> {
    if !enabled || !std::io::stderr().is_terminal() {
        return Arc::new(Quiet);
    }
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{msg:>24} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    Arc::new(Bar(bar))
}
