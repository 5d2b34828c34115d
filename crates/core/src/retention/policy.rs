//! What an operator asked retention to keep: `[retention]` in the configuration, overridden
//! per run by `expire`'s flags. Parsed once here so that the planner works on checked values.

use std::time::Duration;

use crate::config::RetentionConfig;
use crate::units::{self, UnitError};

/// The safety age of orphaned objects when `[retention] orphan_min_age` is not given.
pub const DEFAULT_ORPHAN_MIN_AGE: Duration = Duration::from_secs(24 * 3600);

/// A bad policy value (from a flag; the configuration file is checked when it is loaded).
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{key}: {source}")]
    Duration { key: &'static str, source: UnitError },
    #[error("{key}: 0 {why}")]
    Zero { key: &'static str, why: &'static str },
}

/// Retention counts and spans; `None` means the rule is not used. The rules combine: a backup
/// is kept when any of them keeps it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    pub keep_full: Option<u32>,
    pub recovery_window: Option<Duration>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    pub orphan_min_age: Duration,
}

/// Per-run overrides (`expire --keep-full 2 --recovery-window 7d …`): the same keys as
/// `[retention]`, so they are the same type (one description of the keys), laid over the file's
/// section with [`RetentionConfig::merge`].
pub type PolicyOverrides = RetentionConfig;

fn duration(key: &'static str, v: &str) -> Result<Duration, PolicyError> {
    units::parse_duration(v).map_err(|source| PolicyError::Duration { key, source })
}

impl Policy {
    /// The policy of `[retention]` (absent: no rule) with `over` applied on top.
    pub fn resolve(config: Option<&RetentionConfig>, over: &PolicyOverrides) -> Result<Policy, PolicyError> {
        let keys = config.cloned().unwrap_or_default().merge(over);
        let policy = Policy {
            keep_full: keys.keep_full,
            recovery_window: keys
                .recovery_window
                .map(|w| duration("recovery_window", &w))
                .transpose()?,
            keep_daily: keys.keep_daily,
            keep_weekly: keys.keep_weekly,
            keep_monthly: keys.keep_monthly,
            keep_yearly: keys.keep_yearly,
            orphan_min_age: keys
                .orphan_min_age
                .map(|o| duration("orphan_min_age", &o))
                .transpose()?
                .unwrap_or(DEFAULT_ORPHAN_MIN_AGE),
        };
        if policy.keep_full == Some(0) {
            return Err(PolicyError::Zero {
                key: "keep_full",
                why: "would keep no full backup",
            });
        }
        if policy.recovery_window.is_some_and(|d| d.is_zero()) {
            return Err(PolicyError::Zero {
                key: "recovery_window",
                why: "promises no window",
            });
        }
        Ok(policy)
    }

    /// Whether any rule keeps backups. Without one, `expire` deletes nothing (never "all").
    pub fn is_empty(&self) -> bool {
        self.keep_full.is_none()
            && self.recovery_window.is_none()
            && self.keep_daily.is_none()
            && self.keep_weekly.is_none()
            && self.keep_monthly.is_none()
            && self.keep_yearly.is_none()
    }

    /// One line for reports: `keep_full=2 recovery_window=7d keep_monthly=12`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(n) = self.keep_full {
            parts.push(format!("keep_full={n}"));
        }
        if let Some(d) = self.recovery_window {
            parts.push(format!("recovery_window={}", units::format_duration(d)));
        }
        for (k, v) in [
            ("keep_daily", self.keep_daily),
            ("keep_weekly", self.keep_weekly),
            ("keep_monthly", self.keep_monthly),
            ("keep_yearly", self.keep_yearly),
        ] {
            if let Some(n) = v {
                parts.push(format!("{k}={n}"));
            }
        }
        if parts.is_empty() {
            "no policy".into()
        } else {
            parts.join(" ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file() {
        let file = RetentionConfig {
            keep_full: Some(5),
            recovery_window: Some("30d".into()),
            keep_monthly: Some(12),
            ..RetentionConfig::default()
        };
        let over = PolicyOverrides {
            keep_full: Some(2),
            recovery_window: Some("36h".into()),
            ..PolicyOverrides::default()
        };
        let p = Policy::resolve(Some(&file), &over).unwrap();
        assert_eq!(p.keep_full, Some(2));
        assert_eq!(p.recovery_window, Some(Duration::from_secs(36 * 3600)));
        assert_eq!(p.keep_monthly, Some(12));
        assert_eq!(p.orphan_min_age, DEFAULT_ORPHAN_MIN_AGE);
        assert_eq!(p.describe(), "keep_full=2 recovery_window=36h keep_monthly=12");
    }

    #[test]
    fn absent_section_is_no_policy_and_bad_flags_are_refused() {
        let p = Policy::resolve(None, &PolicyOverrides::default()).unwrap();
        assert!(p.is_empty());
        assert_eq!(p.describe(), "no policy");
        let bad = PolicyOverrides {
            recovery_window: Some("7 days".into()),
            ..PolicyOverrides::default()
        };
        assert!(matches!(
            Policy::resolve(None, &bad),
            Err(PolicyError::Duration {
                key: "recovery_window",
                ..
            })
        ));
        let zero = PolicyOverrides {
            keep_full: Some(0),
            ..PolicyOverrides::default()
        };
        assert!(matches!(Policy::resolve(None, &zero), Err(PolicyError::Zero { .. })));
    }

    #[test]
    fn merge_takes_each_key_from_the_flags_when_set_else_from_the_file() {
        let file = RetentionConfig {
            keep_full: Some(5),
            recovery_window: Some("30d".into()),
            keep_daily: Some(7),
            keep_weekly: Some(4),
            keep_monthly: Some(12),
            keep_yearly: Some(3),
            orphan_min_age: Some("6h".into()),
        };
        assert_eq!(file.merge(&PolicyOverrides::default()), file, "no flag: the file");
        assert_eq!(RetentionConfig::default().merge(&file), file, "no file: the flags");
        let flags = PolicyOverrides {
            keep_daily: Some(1),
            orphan_min_age: Some("1h".into()),
            ..PolicyOverrides::default()
        };
        let merged = file.merge(&flags);
        assert_eq!(
            merged,
            RetentionConfig {
                keep_daily: Some(1),
                orphan_min_age: Some("1h".into()),
                ..file.clone()
            }
        );
        // The flags are checked like the file: a bad flag is refused, naming the key.
        let bad = PolicyOverrides {
            orphan_min_age: Some("soon".into()),
            ..PolicyOverrides::default()
        };
        assert!(matches!(
            Policy::resolve(Some(&file), &bad),
            Err(PolicyError::Duration {
                key: "orphan_min_age",
                ..
            })
        ));
    }
}
