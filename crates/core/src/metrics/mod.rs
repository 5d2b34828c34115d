//! Prometheus metrics of a repository and its cluster (filled in by the metrics work).
//!
//! The alert rules live here, beside the metrics they read, so that docs/, `pgvault deploy` and
//! the `promtool` tests all use the one file.

/// Where `pgvault schedule` serves `/metrics` when `[metrics] listen` is set without a port
/// (clashes with neither postgres_exporter's 9187 nor pgbackrest_exporter's 9854).
pub const DEFAULT_PORT: u16 = 9856;

/// The Prometheus alert rules for pgvault's metrics (a rule file for `rule_files:`).
pub const ALERT_RULES: &str = include_str!("alert_rules.yml");
