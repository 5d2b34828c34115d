//! Listing a large repository: with the backup index and [`Times::WindowEnds`], a survey of
//! 1,000 backups reads a handful of objects and gives the windows reading every segment gives.

use std::time::{Duration, Instant};

use super::*;
use crate::repository::synthetic::{segment_time, synthetic_repository, synthetic_with, SyntheticOptions};
use crate::timeline::TimelineWindows;

fn end_times(w: &[TimelineWindows]) -> Vec<Option<chrono::DateTime<chrono::Utc>>> {
    w.iter().flat_map(|t| t.windows.iter().map(|w| w.end_time)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_1000_backups_reads_a_handful_of_objects() {
    let built = Instant::now();
    let s = synthetic_repository(1000).await;
    eprintln!(
        "built 1000 backups, {} segments in {:?}",
        s.segments.len(),
        built.elapsed()
    );

    let t = Instant::now();
    s.repo.backup_summaries().await.expect("summaries");
    let w = s.repo.list_wal().await.expect("wal");
    eprintln!("summaries and WAL listing ({} objects): {:?}", w.len(), t.elapsed());
    s.store.reset();
    let t = Instant::now();
    let fast = survey(&s.repo, Times::WindowEnds).await.expect("survey");
    let windows = fast.model.windows_by_timeline();
    let gaps = fast.model.gaps();
    let took = t.elapsed();
    let c = s.store.counts();
    eprintln!("listing survey: {took:?}, {c:?}");
    assert_eq!(fast.backups.len(), 1000);
    assert!(took < Duration::from_secs(5), "listing took {took:?}");
    // The backups/ and wal/ listings; the index, the two window ends and the segment after the gap.
    assert!(c.lists <= 3, "{c:?}");
    assert!(
        c.gets <= 6,
        "a handful of objects, not one per backup or segment: {c:?}"
    );
    assert_eq!(c.puts, 0, "listing writes nothing when the index is current: {c:?}");
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert_eq!(
        (gaps[0].first_missing, gaps[0].last_missing),
        (s.missing[0], s.missing[1])
    );
    assert_eq!(windows.len(), 1);
    assert_eq!(windows[0].windows.len(), 2, "one window ends at the gap");
    let last = s
        .segments
        .last()
        .expect("segments")
        .segment_number(s.repo.cluster().wal_segment_size);
    assert_eq!(
        windows[0].windows[1].end_time,
        Some(segment_time(last) + chrono::Duration::minutes(19)),
        "the newest window ends at the last commit archived"
    );

    // Reading every segment's times (what restore to a time does) gives the same windows, and
    // costs one request per segment: the count above is not vacuous.
    s.store.reset();
    let full = survey(&s.repo, Times::AfterOldestBackup).await.expect("survey");
    assert!(s.store.counts().gets > 2000, "{:?}", s.store.counts());
    assert_eq!(full.model.windows_by_timeline(), windows);
}

#[tokio::test]
async fn window_ends_walk_back_past_segments_without_commits() {
    let s = synthetic_with(SyntheticOptions {
        backups: 4,
        build_index: true,
        gap: false,
    })
    .await;
    let ss = s.repo.cluster().wal_segment_size;
    let n = s.segments.len();
    // The last three segments hold no commit (an idle server switching segments).
    for name in &s.segments[n - 3..] {
        s.repo
            .storage()
            .delete(&crate::repository::layout::wal_key(name))
            .await
            .expect("delete");
        let idle = serde_json::to_vec(&WalSummary {
            records: 3,
            complete: true,
            ..WalSummary::default()
        })
        .expect("json");
        s.repo
            .put_wal(name, &name.segment_number(ss).to_be_bytes(), None, Some(&idle))
            .await
            .expect("put");
    }
    let fast = survey(&s.repo, Times::WindowEnds).await.expect("survey");
    let full = survey(&s.repo, Times::AfterOldestBackup).await.expect("survey");
    let want = segment_time(s.segments[n - 4].segment_number(ss)) + chrono::Duration::minutes(19);
    assert_eq!(end_times(&fast.model.windows_by_timeline()), vec![Some(want)]);
    assert_eq!(fast.model.windows_by_timeline(), full.model.windows_by_timeline());

    // A segment pushed without recorded times at the end: the end time is unknown, as before.
    let last = s.segments[n - 1];
    s.repo
        .storage()
        .delete(&crate::repository::layout::wal_key(&last))
        .await
        .expect("delete");
    s.repo
        .put_wal(&last, &last.segment_number(ss).to_be_bytes(), None, None)
        .await
        .expect("put");
    let fast = survey(&s.repo, Times::WindowEnds).await.expect("survey");
    let full = survey(&s.repo, Times::AfterOldestBackup).await.expect("survey");
    assert_eq!(end_times(&fast.model.windows_by_timeline()), vec![None]);
    assert_eq!(fast.model.windows_by_timeline(), full.model.windows_by_timeline());
}
