//! Prometheus files of every target: a scrape configuration for the scheduler's `/metrics` and
//! the alert rules (`pgvault_core::metrics::ALERT_RULES`, the one rule file the project keeps).

use std::fmt::Write;

use super::{rendered, yq, Rendered, METRICS_PORT};

/// The alert rules' file name, referred to by `rule_files:`.
pub(super) const RULES_FILE: &str = "pgvault-alerts.yml";

/// `prometheus.yml` scraping `hosts` on the metrics port, and the rules beside it.
pub(super) fn render(hosts: &[&str]) -> Vec<Rendered> {
    let mut s = format!(
        "# Prometheus scrape configuration for pgvault, rendered by `pgvault deploy`.\n\
         # Merge the scrape_configs entry into your prometheus.yml, and copy {RULES_FILE} beside it.\n\
         global:\n  scrape_interval: 30s\n  evaluation_interval: 30s\n\
         rule_files:\n  - {RULES_FILE}\n\
         scrape_configs:\n  - job_name: pgvault\n    static_configs:\n      - targets:\n"
    );
    for h in hosts {
        let _ = writeln!(s, "          - {}", yq(&format!("{h}:{METRICS_PORT}")));
    }
    vec![
        rendered("prometheus.yml", s, 0o644),
        rendered(RULES_FILE, pgvault_core::metrics::ALERT_RULES, 0o644),
    ]
}
