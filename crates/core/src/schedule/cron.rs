//! Standard 5-field cron expressions (`minute hour day-of-month month day-of-week`) and their
//! next run time in a time zone.
//!
//! Written here rather than taken from a crate because the daylight-saving behaviour is part of
//! pgvault's contract (docs/SCHEDULE.md) and must not change with a dependency's version: it
//! follows Vixie cron, which is what people who write cron lines expect:
//! - a time the clock skips (spring forward) runs once, at the first instant after the jump;
//! - a time the clock passes twice (fall back) runs once, at its first occurrence.
//!
//! Syntax: `*`, numbers, ranges `a-b`, steps `*/n`, `a-b/n`, `a/n`, lists `a,b-c`; month and
//! weekday names (`jan`, `mon`); weekday 0 and 7 are Sunday; the macros `@hourly`, `@daily`
//! (`@midnight`), `@weekly`, `@monthly`, `@yearly` (`@annually`). When both day fields are
//! restricted a day matches when either does (as in Vixie cron).

use chrono::{DateTime, Datelike, Days, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Timelike, Utc};

/// How far ahead a next run is looked for (the rarest valid expression, Feb 29 on a given
/// weekday, recurs within 28 years).
const SEARCH_DAYS: u64 = 366 * 29;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{expr}' is not a 5-field cron expression: {why}")]
pub struct CronError {
    pub expr: String,
    pub why: String,
}

/// A parsed cron expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronExpr {
    text: String,
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    /// Bit 0 = Sunday .. bit 6 = Saturday.
    weekdays: u64,
    days_restricted: bool,
    weekdays_restricted: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

fn parse_value(s: &str, min: u32, max: u32, names: &[&str], names_from: u32) -> Result<u32, String> {
    let lower = s.to_ascii_lowercase();
    if let Some(i) = names.iter().position(|n| *n == lower) {
        return Ok(i as u32 + names_from);
    }
    let v: u32 = s.parse().map_err(|_| format!("'{s}' is not a number"))?;
    if v < min || v > max {
        return Err(format!("{v} is outside {min}-{max}"));
    }
    Ok(v)
}

/// One field as a bit set; also whether it was a bare `*` (unrestricted).
fn parse_field(field: &str, min: u32, max: u32, names: &[&str], names_from: u32) -> Result<(u64, bool), String> {
    let mut bits = 0u64;
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s.parse().map_err(|_| format!("step '{s}' is not a number"))?;
                if step == 0 || step > max {
                    return Err(format!("step {step} is outside 1-{max}"));
                }
                (r, step)
            }
            None => (part, 1),
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let a = parse_value(a, min, max, names, names_from)?;
            let b = parse_value(b, min, max, names, names_from)?;
            if a > b {
                return Err(format!("range {a}-{b} runs backwards"));
            }
            (a, b)
        } else {
            let a = parse_value(range, min, max, names, names_from)?;
            // `a/n` means from a to the end in steps of n.
            (a, if part.contains('/') { max } else { a })
        };
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok((bits, field == "*"))
}

impl CronExpr {
    /// Parses an expression; the error says which field is wrong.
    pub fn parse(text: &str) -> Result<CronExpr, CronError> {
        let err = |why: String| CronError {
            expr: text.to_string(),
            why,
        };
        let expanded = match text.trim() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            t if t.starts_with('@') => return Err(err(format!("unknown macro {t}"))),
            t => t,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(err(format!(
                "it has {} fields (minute hour day-of-month month day-of-week)",
                fields.len()
            )));
        }
        let f = |i: usize, name: &str, min, max, names: &[&str], from| {
            parse_field(fields[i], min, max, names, from).map_err(|e| err(format!("{name}: {e}")))
        };
        let (minutes, _) = f(0, "minute", 0, 59, &[], 0)?;
        let (hours, _) = f(1, "hour", 0, 23, &[], 0)?;
        let (days, days_any) = f(2, "day of month", 1, 31, &[], 0)?;
        let (months, _) = f(3, "month", 1, 12, &MONTHS, 1)?;
        let (mut weekdays, weekdays_any) = f(4, "day of week", 0, 7, &WEEKDAYS, 0)?;
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays | 1) & 0x7f;
        }
        Ok(CronExpr {
            text: text.trim().to_string(),
            minutes,
            hours,
            days,
            months,
            weekdays,
            days_restricted: !days_any,
            weekdays_restricted: !weekdays_any,
        })
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn day_matches(&self, d: NaiveDate) -> bool {
        if self.months & (1 << d.month()) == 0 {
            return false;
        }
        let dom = self.days & (1 << d.day()) != 0;
        let dow = self.weekdays & (1 << d.weekday().num_days_from_sunday()) != 0;
        match (self.days_restricted, self.weekdays_restricted) {
            (true, true) => dom || dow,
            _ => dom && dow,
        }
    }

    /// The wall-clock times of one day that match, earliest first.
    fn times_of_day(&self) -> impl Iterator<Item = NaiveTime> + '_ {
        (0..24u32).filter(|h| self.hours & (1 << h) != 0).flat_map(move |h| {
            (0..60u32)
                .filter(|m| self.minutes & (1 << m) != 0)
                .filter_map(move |m| NaiveTime::from_hms_opt(h, m, 0))
        })
    }

    /// The first run strictly after `after`, with the wall clock of `tz`. `None` only when the
    /// expression never matches (e.g. `0 0 31 2 *`).
    pub fn next_after<Z: TimeZone>(&self, after: DateTime<Utc>, tz: &Z) -> Option<DateTime<Utc>> {
        // Starting one local day early covers an instant whose local date a DST shift moved.
        let start = after.with_timezone(tz).date_naive().checked_sub_days(Days::new(1))?;
        for offset in 0..SEARCH_DAYS {
            let day = start.checked_add_days(Days::new(offset))?;
            if !self.day_matches(day) {
                continue;
            }
            for t in self.times_of_day() {
                let at = instant_of(day.and_time(t), tz)?;
                if at > after {
                    return Some(at);
                }
            }
        }
        None
    }

    /// The latest run at or before `at` (for "was a slot missed since the last run?").
    pub fn last_at_or_before<Z: TimeZone>(&self, at: DateTime<Utc>, tz: &Z) -> Option<DateTime<Utc>> {
        // Walk back day by day and take the day's last matching time not after `at`.
        let start = at.with_timezone(tz).date_naive().checked_add_days(Days::new(1))?;
        for offset in 0..SEARCH_DAYS {
            let day = start.checked_sub_days(Days::new(offset))?;
            if !self.day_matches(day) {
                continue;
            }
            let best = self
                .times_of_day()
                .filter_map(|t| instant_of(day.and_time(t), tz))
                .filter(|i| *i <= at)
                .last();
            if best.is_some() {
                return best;
            }
        }
        None
    }
}

/// The instant a wall-clock time names: its first occurrence when the clock passes it twice,
/// the first instant after the jump when the clock skips it.
fn instant_of<Z: TimeZone>(local: NaiveDateTime, tz: &Z) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(first, _) => Some(first.with_timezone(&Utc)),
        LocalResult::None => {
            // Skipped: find the first wall-clock minute after it that exists (gaps are at most
            // a few hours), which is the instant of the jump.
            let mut probe = local.with_second(0)?;
            for _ in 0..(24 * 60) {
                probe += chrono::Duration::minutes(1);
                if let Some(t) = tz.from_local_datetime(&probe).earliest() {
                    return Some(t.with_timezone(&Utc));
                }
            }
            None
        }
    }
}
