//! The recovery settings restore leaves in `postgresql.auto.conf`, written so that they cannot go
//! stale and cannot be misread.
//!
//! `postgresql.auto.conf` travels inside every backup. The recovery settings an earlier restore
//! appended to it (a `recovery_target_time`, a `restore_command` with another configuration)
//! would otherwise come back with every later backup of that cluster and stop recovery at the old
//! point, or make PostgreSQL refuse to start ("multiple recovery targets"). So earlier
//! `restore_command`, `recovery_target*`, `recovery_end_command` and `archive_cleanup_command`
//! lines (and `archive_mode` with [`ArchiveMode::Off`]) are commented out, kept and marked, and the
//! new settings appended.
//!
//! The file is parsed as PostgreSQL's `guc-file.l` does (`name [=] value`, `#` comments, quoted
//! values with `''` and backslash escapes). `restore_command` is a shell command inside a
//! configuration string: each argument is shell-quoted with single quotes, `%` doubled for
//! PostgreSQL's placeholder expansion, then the whole is quoted for the configuration file with
//! `'` and `\` doubled (PostgreSQL's parser treats a backslash as an escape).

use std::path::Path;

use chrono::{DateTime, Utc};

use super::target::{Target, TargetAction};

#[derive(Debug, thiserror::Error)]
pub enum ConfError {
    #[error("{what} {value:?} contains a line break or NUL, which a PostgreSQL configuration file cannot carry; use a path without one")]
    Unquotable { what: &'static str, value: String },
    #[error("postgresql.auto.conf in the backup is not UTF-8 text; fix it in the restored directory by hand")]
    NotUtf8,
    #[error("a standby restore follows the archive and takes no recovery target ({0}); omit the target, or restore without --type standby")]
    StandbyTarget(String),
}

/// Whether the restored cluster keeps the backup's `archive_mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ArchiveMode {
    /// As in the backup: for real recoveries, the new timeline is archived.
    #[default]
    Preserve,
    /// `archive_mode = 'off'`: a copy for testing must not archive into the production repository.
    Off,
}

/// What the restored cluster becomes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RestoreType {
    /// `recovery.signal`: recover to the target, then the target action.
    #[default]
    Default,
    /// `standby.signal`: a standby that keeps following the archive.
    Standby,
}

impl RestoreType {
    /// The signal file PostgreSQL looks for.
    pub fn signal_file(self) -> &'static str {
        match self {
            RestoreType::Default => "recovery.signal",
            RestoreType::Standby => "standby.signal",
        }
    }
}

/// One line of a PostgreSQL configuration file.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// Blank or a comment.
    Nothing,
    /// `name = value` (name lower-cased, value de-escaped).
    Setting { name: String, value: String },
    /// Something PostgreSQL would refuse; kept as it is.
    Malformed,
}

fn is_letter(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || !c.is_ascii()
}

fn is_word(c: char) -> bool {
    is_letter(c) || c.is_ascii_digit()
}

/// Parses one line as `guc-file.l` does.
pub fn parse_line(line: &str) -> Line {
    let s = line.trim_start();
    if s.is_empty() || s.starts_with('#') {
        return Line::Nothing;
    }
    let mut chars = s.char_indices().peekable();
    match chars.peek() {
        Some((_, c)) if is_letter(*c) => {}
        _ => return Line::Malformed,
    }
    let mut end = s.len();
    for (i, c) in chars.by_ref() {
        if !(is_word(c) || c == '.') {
            end = i;
            break;
        }
    }
    let name = s[..end].to_ascii_lowercase();
    let mut rest = s[end..].trim_start();
    if let Some(r) = rest.strip_prefix('=') {
        rest = r.trim_start();
    }
    let (value, after) = if rest.starts_with('\'') {
        match quoted_end(rest) {
            Some(n) => (deescape(&rest[..n]), &rest[n..]),
            None => return Line::Malformed,
        }
    } else {
        let n = rest.find(|c: char| c.is_whitespace() || c == '#').unwrap_or(rest.len());
        if n == 0 {
            return Line::Malformed;
        }
        (rest[..n].to_string(), &rest[n..])
    };
    let after = after.trim_start();
    if after.is_empty() || after.starts_with('#') {
        Line::Setting { name, value }
    } else {
        Line::Malformed
    }
}

/// Length of the quoted string at the start of `s` (quotes included).
fn quoted_end(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 1;
    while i < b.len() {
        match b[i] {
            b'\\' if i + 1 < b.len() && b[i + 1] != b'\n' => i += 2,
            b'\'' if b.get(i + 1) == Some(&b'\'') => i += 2,
            b'\'' => return Some(i + 1),
            b'\n' => return None,
            _ => i += 1,
        }
    }
    None
}

/// PostgreSQL's `DeescapeQuotedString`: `s` includes its quotes.
pub fn deescape(s: &str) -> String {
    let inner: Vec<char> = s.chars().collect();
    let inner = &inner[1..inner.len().saturating_sub(1).max(1)];
    let mut out = String::new();
    let mut i = 0;
    while i < inner.len() {
        let c = inner[i];
        if c == '\\' && i + 1 < inner.len() {
            i += 1;
            match inner[i] {
                'b' => out.push('\u{8}'),
                'f' => out.push('\u{c}'),
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                d @ '0'..='7' => {
                    let mut v = d.to_digit(8).unwrap_or(0);
                    let mut k = 1;
                    while k < 3 && i + 1 < inner.len() && ('0'..='7').contains(&inner[i + 1]) {
                        i += 1;
                        k += 1;
                        v = v * 8 + inner[i].to_digit(8).unwrap_or(0);
                    }
                    out.push(char::from_u32(v & 0xff).unwrap_or('?'));
                }
                other => out.push(other),
            }
        } else if c == '\'' && inner.get(i + 1) == Some(&'\'') {
            i += 1;
            out.push('\'');
        } else {
            out.push(c);
        }
        i += 1;
    }
    out
}

fn refuse_breaks(what: &'static str, v: &str) -> Result<(), ConfError> {
    if v.contains(['\n', '\r', '\0']) {
        return Err(ConfError::Unquotable {
            what,
            value: v.to_string(),
        });
    }
    Ok(())
}

/// A value as a PostgreSQL configuration string: `'` and `\` doubled, in single quotes.
pub fn quote_guc(what: &'static str, v: &str) -> Result<String, ConfError> {
    refuse_breaks(what, v)?;
    Ok(format!("'{}'", v.replace('\\', "\\\\").replace('\'', "''")))
}

/// One shell word in single quotes (`'` → `'\''`), with `%` doubled for PostgreSQL's
/// `%f`/`%p` expansion of `restore_command`.
pub fn shell_arg(what: &'static str, v: &str) -> Result<String, ConfError> {
    refuse_breaks(what, v)?;
    Ok(sh_quote(&v.replace('%', "%%")))
}

/// One shell word in single quotes (`'` → `'\''`), for commands printed to the user.
pub fn sh_quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', "'\\''"))
}

/// The `restore_command` value (before configuration quoting).
pub fn restore_command(archive_command: &Path, config: &Path) -> Result<String, ConfError> {
    let exe = archive_command.to_string_lossy();
    let cfg = config.to_string_lossy();
    Ok(format!(
        "{} --config {} fetch %f %p",
        shell_arg("the pgvault-archive path", &exe)?,
        shell_arg("the configuration path", &cfg)?
    ))
}

/// The `recovery_end_command` value: removes `pgvault-archive`'s prefetch spool at promotion
/// (run by PostgreSQL in the data directory).
pub fn recovery_end_command(archive_command: &Path) -> Result<String, ConfError> {
    let exe = archive_command.to_string_lossy();
    Ok(format!("{} spool-clean", shell_arg("the pgvault-archive path", &exe)?))
}

/// Names an earlier restore (or a human) may have left that would fight the new settings.
fn is_recovery_setting(name: &str) -> bool {
    name.starts_with("recovery_target")
        || matches!(
            name,
            "restore_command" | "recovery_end_command" | "archive_cleanup_command"
        )
}

/// Everything needed to write the recovery settings of one restore.
pub struct RecoveryConf<'a> {
    pub backup_id: &'a str,
    pub now: DateTime<Utc>,
    pub archive_command: &'a Path,
    pub config: &'a Path,
    pub target: &'a Target,
    pub action: TargetAction,
    /// `latest`, `current` or a timeline id; `None` is `latest`.
    pub timeline: Option<&'a str>,
    pub kind: RestoreType,
    pub archive_mode: ArchiveMode,
}

/// Refuses combinations PostgreSQL would not honour (a standby with a target).
pub fn check_request(target: &Target, kind: RestoreType) -> Result<(), ConfError> {
    if kind == RestoreType::Standby && *target != Target::End {
        return Err(ConfError::StandbyTarget(super::target::describe(target)));
    }
    Ok(())
}

impl RecoveryConf<'_> {
    /// The settings to append (without the header).
    pub fn settings(&self) -> Result<String, ConfError> {
        check_request(self.target, self.kind)?;
        let cmd = restore_command(self.archive_command, self.config)?;
        let mut s = format!("restore_command = {}\n", quote_guc("restore_command", &cmd)?);
        let end = recovery_end_command(self.archive_command)?;
        s.push_str(&format!(
            "recovery_end_command = {}\n",
            quote_guc("recovery_end_command", &end)?
        ));
        let has_target = *self.target != Target::End;
        match self.target {
            Target::End => {}
            Target::Immediate => s.push_str("recovery_target = 'immediate'\n"),
            Target::Time(t) => {
                let utc = t.with_timezone(&Utc).format("%Y-%m-%d %H:%M:%S%.6f+00").to_string();
                s.push_str(&format!("recovery_target_time = '{utc}'\n"));
            }
            Target::Lsn(l) => s.push_str(&format!("recovery_target_lsn = '{l}'\n")),
            // PostgreSQL takes the 32-bit xid; the epoch only mattered for choosing the backup.
            Target::Xid(x) => s.push_str(&format!("recovery_target_xid = '{}'\n", x & 0xffff_ffff)),
            Target::Name(n) => s.push_str(&format!(
                "recovery_target_name = {}\n",
                quote_guc("the restore point name", n)?
            )),
        }
        if has_target {
            s.push_str(&format!("recovery_target_action = '{}'\n", self.action.as_str()));
        }
        let tl = self.timeline.unwrap_or("latest");
        s.push_str(&format!(
            "recovery_target_timeline = {}\n",
            quote_guc("the timeline", tl)?
        ));
        if self.archive_mode == ArchiveMode::Off {
            s.push_str("archive_mode = 'off'\n");
        }
        Ok(s)
    }

    /// `existing` (the backup's `postgresql.auto.conf`) with earlier recovery settings commented
    /// out and the new ones appended.
    pub fn apply(&self, existing: &str) -> Result<String, ConfError> {
        let settings = self.settings()?;
        let when = self.now.to_rfc3339();
        let marker = format!("# disabled by pgvault restore of {} at {when}: ", self.backup_id);
        let mut out = String::with_capacity(existing.len() + settings.len() + 256);
        for line in existing.lines() {
            let disable = match parse_line(line) {
                Line::Setting { name, .. } => {
                    is_recovery_setting(&name) || (self.archive_mode == ArchiveMode::Off && name == "archive_mode")
                }
                _ => false,
            };
            if disable {
                out.push_str(&marker);
            }
            out.push_str(line);
            out.push('\n');
        }
        out.push_str(&format!(
            "\n# Recovery settings written by pgvault restore of backup {} at {when}.\n# Remove them (and {}) only if you know why.\n",
            self.backup_id,
            self.kind.signal_file()
        ));
        out.push_str(&settings);
        Ok(out)
    }
}

#[cfg(test)]
#[path = "conf_tests.rs"]
mod tests;

#[cfg(test)]
mod end_command_tests {
    use super::*;

    #[test]
    fn promotion_cleans_the_prefetch_spool() {
        let cmd = recovery_end_command(Path::new("/opt/pg vault/pgvault-archive")).expect("quotes");
        assert_eq!(cmd, "'/opt/pg vault/pgvault-archive' spool-clean");
        assert!(recovery_end_command(Path::new("/a\nb")).is_err());
    }
}
