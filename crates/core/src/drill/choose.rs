//! Which point a drill recovers to: the end of the archived WAL by default, a given time, or a
//! random point in the recoverable windows (so that, drill after drill, every part of the window
//! gets exercised).

use chrono::{DateTime, Duration as ChronoDuration, Utc};

use crate::lsn::TimelineId;
use crate::timeline::TimelineWindows;

/// A random recovery point: a time strictly inside a window (after its start, before its last
/// commit, so that recovery finds a commit past the target), and the window's timeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RandomPoint {
    pub tli: TimelineId,
    pub time: DateTime<Utc>,
    pub from_backup: String,
}

/// Picks a point uniformly over the total time of every window that has a known end time after
/// its start; `roll` is a random number (any `u64`). `None` when no window spans any time.
pub fn random_point(windows: &[TimelineWindows], roll: u64) -> Option<RandomPoint> {
    let spans: Vec<(TimelineId, &str, DateTime<Utc>, i64)> = windows
        .iter()
        .flat_map(|tw| tw.windows.iter().map(move |w| (tw.tli, w)))
        .filter_map(|(tli, w)| {
            let end = w.end_time?;
            let ms = (end - w.start_time).num_milliseconds();
            (ms > 1).then_some((tli, w.from_backup.as_str(), w.start_time, ms))
        })
        .collect();
    let total: i64 = spans.iter().map(|s| s.3 - 1).sum();
    if total <= 0 {
        return None;
    }
    let mut at = (roll % total as u64) as i64;
    for (tli, backup, start, ms) in spans {
        let usable = ms - 1;
        if at < usable {
            return Some(RandomPoint {
                tli,
                time: start + ChronoDuration::milliseconds(at + 1),
                from_backup: backup.to_string(),
            });
        }
        at -= usable;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lsn::Lsn;
    use crate::timeline::Window;

    fn window(start: i64, end: Option<i64>, backup: &str) -> Window {
        let t0 = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).expect("time");
        Window {
            from_backup: backup.to_string(),
            backups: vec![backup.to_string()],
            start_lsn: Lsn(0),
            start_time: t0 + ChronoDuration::seconds(start),
            end_lsn: Lsn(0),
            end_time: end.map(|e| t0 + ChronoDuration::seconds(e)),
            ends_at_gap: None,
        }
    }

    fn tw(tli: TimelineId, windows: Vec<Window>) -> TimelineWindows {
        TimelineWindows {
            tli,
            ancestry_known: true,
            windows,
        }
    }

    #[test]
    fn random_points_stay_strictly_inside_windows() {
        let ws = vec![
            tw(1, vec![window(0, Some(100), "a"), window(200, None, "x")]),
            tw(2, vec![window(300, Some(310), "b")]),
        ];
        let mut seen = [false, false];
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..2000 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let p = random_point(&ws, state).expect("point");
            let w = if p.tli == 1 {
                &ws[0].windows[0]
            } else {
                &ws[1].windows[0]
            };
            assert!(p.time > w.start_time && Some(p.time) < w.end_time, "{p:?}");
            assert_ne!(p.from_backup, "x", "a window without an end time is never chosen");
            seen[(p.tli - 1) as usize] = true;
        }
        assert_eq!(seen, [true, true]);
    }

    #[test]
    fn no_window_no_point() {
        assert_eq!(random_point(&[], 5), None);
        assert_eq!(random_point(&[tw(1, vec![window(0, None, "a")])], 5), None);
        assert_eq!(random_point(&[tw(1, vec![window(5, Some(5), "a")])], 5), None);
    }
}
