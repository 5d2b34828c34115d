//! Where `pgvault`'s diagnostics go: `tracing` on stderr, as text for people or one JSON object
//! per line for log collectors (`--log-format json`), at the level `--log-level`/`-v` asks for
//! (`PGVAULT_LOG`, a full `tracing` filter, still wins).
//!
//! Messages addressed to the person running the command (configuration warnings, the final
//! error and its hint) go through [`warn`] and [`error`]: `pgvault: warning: …` lines in the
//! text format, log events in the JSON format, so that stderr stays one JSON object per line
//! for whoever parses it. Results go to stdout and never through here.

use std::io::{IsTerminal, Write};
use std::sync::OnceLock;

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

/// `--log-level`: the least severe events shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

/// `--log-format`: how log lines are written on stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One line per event for people (colours on a terminal).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `message` and the event's fields.
    Json,
}

static FORMAT: OnceLock<Format> = OnceLock::new();

/// stderr, written around the progress bar (the formatter writes each event in one call).
struct AroundBar;

impl Write for AroundBar {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        crate::progress::suspend(|| std::io::stderr().write(buf))
    }
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        crate::progress::suspend(|| std::io::stderr().write_all(buf))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// The filter directive for the flags: `--log-level` wins over `-v` (info) and `-vv` (debug),
/// `-vvv` is trace; without either only warnings and errors are shown.
pub fn directive(level: Option<Level>, verbose: u8) -> &'static str {
    match (level, verbose) {
        (Some(Level::Error), _) => "error",
        (Some(Level::Warn), _) | (None, 0) => "warn",
        (Some(Level::Info), _) | (None, 1) => "info",
        (Some(Level::Debug), _) | (None, 2) => "debug",
        (Some(Level::Trace), _) | (None, _) => "trace",
    }
}

/// Installs the subscriber for the whole process: `PGVAULT_LOG` (when set and valid) or
/// `directive`, written to stderr in `format`.
pub fn init(directive: &str, format: Format) {
    let _ = FORMAT.set(format);
    let filter = EnvFilter::try_from_env("PGVAULT_LOG").unwrap_or_else(|_| EnvFilter::new(directive));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| AroundBar)
        .with_target(false);
    match format {
        Format::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        Format::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
}

fn json() -> bool {
    FORMAT.get() == Some(&Format::Json)
}

/// A warning for the person running the command.
pub fn warn(msg: &str) {
    if json() {
        tracing::warn!("{msg}");
    } else {
        crate::progress::suspend(|| eprintln!("pgvault: warning: {msg}"));
    }
}

/// A note for the person running the command (shown at every level, like a warning).
pub fn note(msg: &str) {
    if json() {
        tracing::warn!(note = true, "{msg}");
    } else {
        crate::progress::suspend(|| eprintln!("pgvault: note: {msg}"));
    }
}

/// Why the command failed, with a hint when one is known (shown at every level but `PGVAULT_LOG=off`).
pub fn error(msg: &str, hint: Option<&str>) {
    if json() {
        match hint {
            Some(h) => tracing::error!(hint = h, "{msg}"),
            None => tracing::error!("{msg}"),
        }
    } else {
        crate::progress::suspend(|| {
            eprintln!("pgvault: error: {msg}");
            if let Some(h) = hint {
                eprintln!("pgvault: hint: {h}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_flag_wins_over_verbose() {
        assert_eq!(directive(None, 0), "warn");
        assert_eq!(directive(None, 1), "info");
        assert_eq!(directive(None, 2), "debug");
        assert_eq!(directive(None, 5), "trace");
        assert_eq!(directive(Some(Level::Error), 2), "error");
        assert_eq!(directive(Some(Level::Trace), 0), "trace");
        assert_eq!(directive(Some(Level::Info), 0), "info");
    }
}
