//! Timeline history files and the tree of timelines they describe.
//!
//! When a cluster is promoted (end of a point-in-time recovery, a standby's promotion) it picks a
//! new timeline id and writes `TTTTTTTT.history`: one line per ancestor, oldest first, each
//! `parentTLI<TAB>switchpoint<TAB>reason`, the parent id in decimal and the switch point as
//! PostgreSQL prints an LSN. The file of timeline `T` repeats its parent's file and appends one
//! line (`writeTimeLineHistory` in `timeline.c`), so the file of one timeline alone gives its whole
//! ancestry; recovery reads exactly that (`readTimeLineHistory`) and nothing else. Timeline 1 has no
//! history file.
//!
//! The bytes come from the repository, which is outside input: [`parse_history`] bounds the size
//! and checks every rule `readTimeLineHistory` enforces (and a few it does not: increasing switch
//! points, at most `T-1` ancestors), and [`TimelineTree::from_histories`] checks that the files
//! agree with each other.

use std::collections::{BTreeMap, BTreeSet};

use crate::lsn::{Lsn, TimelineId};

/// Larger than any real history file (a line is under 100 bytes plus its reason).
pub const MAX_HISTORY_BYTES: usize = 1 << 20;

/// Errors reading history files or asking the tree about a timeline.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TimelineError {
    #[error("the history file of timeline {tli} is {len} bytes, more than the {max} bytes a real one can need")]
    TooLarge { tli: TimelineId, len: usize, max: usize },
    #[error("timeline {tli} cannot have a history file: only timelines from 2 on are created by a promotion")]
    NoHistoryTimeline { tli: TimelineId },
    #[error("the history file of timeline {tli}, line {line}: {detail}")]
    Syntax {
        tli: TimelineId,
        line: usize,
        detail: String,
    },
    #[error("the history file of timeline {tli}, line {line}: parent timeline {parent} must be lower than {tli} and higher than the previous line's {previous}")]
    ParentOrder {
        tli: TimelineId,
        line: usize,
        parent: TimelineId,
        previous: TimelineId,
    },
    #[error(
        "the history file of timeline {tli}, line {line}: switch point {lsn} is before the previous line's {previous}"
    )]
    SwitchOrder {
        tli: TimelineId,
        line: usize,
        lsn: Lsn,
        previous: Lsn,
    },
    #[error("the history file of timeline {tli} names no parent timeline; a timeline after 1 always has one")]
    Empty { tli: TimelineId },
    #[error("the history files of timelines {tli} and {parent} disagree about their common ancestry: the archive holds a history file that does not belong to it")]
    Inconsistent { tli: TimelineId, parent: TimelineId },
    #[error("timeline {tli} is not in the archive: no history file and no WAL segment names it")]
    UnknownTimeline { tli: TimelineId },
    #[error("timeline {tli} has WAL segments but no history file names it: its ancestry is unknown")]
    AncestryUnknown { tli: TimelineId },
}

/// One line of a history file: `parent` was left at `switch_lsn` for the next timeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryEntry {
    pub parent: TimelineId,
    pub switch_lsn: Lsn,
    pub reason: String,
}

/// Parses the content of `tli`'s history file, as hostile input.
pub fn parse_history(tli: TimelineId, content: &[u8]) -> Result<Vec<HistoryEntry>, TimelineError> {
    if tli < 2 {
        return Err(TimelineError::NoHistoryTimeline { tli });
    }
    if content.len() > MAX_HISTORY_BYTES {
        return Err(TimelineError::TooLarge {
            tli,
            len: content.len(),
            max: MAX_HISTORY_BYTES,
        });
    }
    let mut entries: Vec<HistoryEntry> = Vec::new();
    for (index, raw) in content.split(|b| *b == b'\n').enumerate() {
        let line = index + 1;
        let text = String::from_utf8_lossy(raw);
        let text = text.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let entry = parse_line(tli, line, text)?;
        let previous = entries.last().map_or(0, |e| e.parent);
        if entry.parent >= tli || entry.parent <= previous {
            return Err(TimelineError::ParentOrder {
                tli,
                line,
                parent: entry.parent,
                previous,
            });
        }
        if let Some(prev) = entries.last() {
            if entry.switch_lsn < prev.switch_lsn {
                return Err(TimelineError::SwitchOrder {
                    tli,
                    line,
                    lsn: entry.switch_lsn,
                    previous: prev.switch_lsn,
                });
            }
        }
        // Implied by the strict order above; kept as the explicit bound on the work done.
        if entries.len() as u64 + 1 > u64::from(tli - 1) {
            return Err(TimelineError::Syntax {
                tli,
                line,
                detail: "more ancestors than timeline ids below it".into(),
            });
        }
        entries.push(entry);
    }
    if entries.is_empty() {
        return Err(TimelineError::Empty { tli });
    }
    Ok(entries)
}

fn parse_line(tli: TimelineId, line: usize, text: &str) -> Result<HistoryEntry, TimelineError> {
    let syntax = |detail: &str| TimelineError::Syntax {
        tli,
        line,
        detail: detail.to_string(),
    };
    let (parent, rest) = text
        .split_once(|c: char| c.is_ascii_whitespace())
        .ok_or_else(|| syntax("expected a parent timeline id, a switch point and a reason separated by tabs"))?;
    if parent.is_empty() || parent.len() > 10 || !parent.bytes().all(|b| b.is_ascii_digit()) {
        return Err(syntax("the parent timeline id is not a decimal number"));
    }
    let parent: TimelineId = parent
        .parse()
        .map_err(|_| syntax("the parent timeline id is out of range"))?;
    if parent == 0 {
        return Err(syntax("timeline 0 does not exist"));
    }
    let rest = rest.trim_start();
    let (lsn, reason) = match rest.split_once(|c: char| c.is_ascii_whitespace()) {
        Some((lsn, reason)) => (lsn, reason.trim()),
        None => (rest, ""),
    };
    let switch_lsn: Lsn = lsn
        .parse()
        .map_err(|_| syntax("the switch point is not an LSN like 0/3000000"))?;
    if switch_lsn == Lsn::INVALID {
        return Err(syntax("the switch point 0/0 is not a valid position"));
    }
    Ok(HistoryEntry {
        parent,
        switch_lsn,
        reason: reason.to_string(),
    })
}

/// One timeline's stretch of a path: positions `begin <= lsn < end` of `tli` are on the path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimelineSpan {
    pub tli: TimelineId,
    pub begin: Lsn,
    /// Where the path left this timeline for the next; `None` for the path's last timeline.
    pub end: Option<Lsn>,
}

impl TimelineSpan {
    /// Whether the position `lsn` (a record's start) lies in this span.
    pub fn holds(&self, lsn: Lsn) -> bool {
        self.begin <= lsn && self.end.is_none_or(|end| lsn < end)
    }
}

/// The timelines of an archive: those with a history file, timeline 1, and those only WAL names.
#[derive(Clone, Debug, Default)]
pub struct TimelineTree {
    histories: BTreeMap<TimelineId, Vec<HistoryEntry>>,
    seen: BTreeSet<TimelineId>,
}

impl TimelineTree {
    /// A tree from parsed history files; checks that they agree with one another.
    pub fn from_histories(
        histories: impl IntoIterator<Item = (TimelineId, Vec<HistoryEntry>)>,
    ) -> Result<TimelineTree, TimelineError> {
        let histories: BTreeMap<_, _> = histories.into_iter().collect();
        for (&tli, entries) in &histories {
            let Some((last, prefix)) = entries.split_last() else {
                return Err(TimelineError::Empty { tli });
            };
            if let Some(parent_entries) = histories.get(&last.parent) {
                let same = parent_entries.len() == prefix.len()
                    && parent_entries
                        .iter()
                        .zip(prefix)
                        .all(|(a, b)| a.parent == b.parent && a.switch_lsn == b.switch_lsn);
                if !same {
                    return Err(TimelineError::Inconsistent {
                        tli,
                        parent: last.parent,
                    });
                }
            }
        }
        Ok(TimelineTree {
            histories,
            seen: BTreeSet::new(),
        })
    }

    /// A tree from the raw history files `(timeline, content)` of an archive.
    pub fn from_files<'a>(
        files: impl IntoIterator<Item = (TimelineId, &'a [u8])>,
    ) -> Result<TimelineTree, TimelineError> {
        let parsed = files
            .into_iter()
            .map(|(tli, content)| parse_history(tli, content).map(|h| (tli, h)))
            .collect::<Result<Vec<_>, _>>()?;
        TimelineTree::from_histories(parsed)
    }

    /// Records a timeline that WAL segments name (it may have no history file).
    pub fn note_timeline(&mut self, tli: TimelineId) {
        if tli != 0 {
            self.seen.insert(tli);
        }
    }

    /// The parsed history file of `tli`, if the archive has one.
    pub fn history(&self, tli: TimelineId) -> Option<&[HistoryEntry]> {
        self.histories.get(&tli).map(Vec::as_slice)
    }

    pub fn has_history(&self, tli: TimelineId) -> bool {
        self.histories.contains_key(&tli)
    }

    /// Every timeline the archive shows: 1, those with history files, their ancestors, and those
    /// named by segments; in increasing order.
    pub fn timelines(&self) -> Vec<TimelineId> {
        let mut all: BTreeSet<TimelineId> = self.seen.clone();
        all.insert(1);
        for (&tli, entries) in &self.histories {
            all.insert(tli);
            all.extend(entries.iter().map(|e| e.parent));
        }
        all.into_iter().collect()
    }

    pub fn is_known(&self, tli: TimelineId) -> bool {
        tli == 1 || self.seen.contains(&tli) || self.timelines().contains(&tli)
    }

    /// The ancestry of `tli`, from its own history file or, when that is missing, from the file
    /// of a descendant that lists it.
    fn ancestry(&self, tli: TimelineId) -> Option<&[HistoryEntry]> {
        if tli == 1 {
            return Some(&[]);
        }
        if let Some(own) = self.histories.get(&tli) {
            return Some(own);
        }
        self.histories
            .values()
            .find_map(|entries| entries.iter().position(|e| e.parent == tli).map(|i| &entries[..i]))
    }

    /// The path recovery follows from timeline 1 to `tli`, oldest first.
    pub fn path(&self, tli: TimelineId) -> Result<Vec<TimelineSpan>, TimelineError> {
        let Some(ancestry) = self.ancestry(tli) else {
            return Err(if self.seen.contains(&tli) {
                TimelineError::AncestryUnknown { tli }
            } else {
                TimelineError::UnknownTimeline { tli }
            });
        };
        let mut spans = Vec::with_capacity(ancestry.len() + 1);
        let mut begin = Lsn::INVALID;
        for e in ancestry {
            spans.push(TimelineSpan {
                tli: e.parent,
                begin,
                end: Some(e.switch_lsn),
            });
            begin = e.switch_lsn;
        }
        spans.push(TimelineSpan { tli, begin, end: None });
        Ok(spans)
    }

    /// The path to `tli`, or (when its ancestry is unknown) what PostgreSQL assumes for a
    /// timeline without a history file: that timeline alone, from the start of WAL. The flag says
    /// whether the ancestry was known.
    pub fn path_or_root(&self, tli: TimelineId) -> (Vec<TimelineSpan>, bool) {
        match self.path(tli) {
            Ok(p) => (p, true),
            Err(_) => (
                vec![TimelineSpan {
                    tli,
                    begin: Lsn::INVALID,
                    end: None,
                }],
                false,
            ),
        }
    }

    /// Whether position `(tli, lsn)` is on the history of `target` (`tliOfPointInHistory`).
    pub fn contains(&self, target: TimelineId, tli: TimelineId, lsn: Lsn) -> bool {
        let (path, _) = self.path_or_root(target);
        path.iter().any(|s| s.tli == tli && s.holds(lsn))
    }

    /// Whether WAL of `tli` up to (not including) `lsn` is on the history of `target`: the test
    /// for an end position such as a backup's stop point (PostgreSQL checks `minRecoveryPoint - 1`).
    pub fn contains_end(&self, target: TimelineId, tli: TimelineId, lsn: Lsn) -> bool {
        let (path, _) = self.path_or_root(target);
        path.iter()
            .any(|s| s.tli == tli && s.begin <= lsn && s.end.is_none_or(|end| lsn <= end))
    }

    /// The timeline directly before `tli` on its path.
    pub fn parent(&self, tli: TimelineId) -> Option<TimelineId> {
        self.ancestry(tli).and_then(|a| a.last()).map(|e| e.parent)
    }

    /// Timelines whose parent is `tli`.
    pub fn children(&self, tli: TimelineId) -> Vec<TimelineId> {
        self.timelines()
            .into_iter()
            .filter(|&t| t != tli && self.parent(t) == Some(tli))
            .collect()
    }

    /// PostgreSQL's `recovery_target_timeline = 'latest'` from a backup on timeline 1.
    pub fn latest(&self) -> TimelineId {
        self.latest_from(1)
    }

    /// `findNewestTimeLine`: from `start`, probe `start+1`, `start+2`, … while a history file
    /// exists; the last found is the newest. A missing history file ends the probe even when
    /// higher ones exist, exactly as in PostgreSQL.
    pub fn latest_from(&self, start: TimelineId) -> TimelineId {
        let mut newest = start;
        while let Some(next) = newest.checked_add(1) {
            if !self.histories.contains_key(&next) {
                break;
            }
            newest = next;
        }
        newest
    }

    /// The highest timeline id the archive shows at all.
    pub fn highest_known(&self) -> TimelineId {
        self.timelines().last().copied().unwrap_or(1)
    }
}
