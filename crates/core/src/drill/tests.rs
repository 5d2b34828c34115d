//! Unit tests of the drill's settings (objectives parsed with units.rs).

use super::*;

fn config(extra: &str) -> Config {
    let text = format!("[postgres]\nhost = \"/tmp\"\n[repository]\nurl = \"/tmp/repo\"\n{extra}");
    toml::from_str(&text).expect("config")
}

#[test]
fn objectives_parse_with_postgres_units() {
    let c = config("[objectives]\nrto = \"30min\"\nrpo = \"5min\"\n[drill]\nrecovery_timeout = \"2h\"\n");
    let s = settings(&c).expect("settings");
    assert_eq!(s.rto, Some(("30min".to_string(), Duration::from_secs(1800))));
    assert_eq!(s.rpo, Some(("5min".to_string(), Duration::from_secs(300))));
    assert_eq!(s.recovery_timeout, Duration::from_secs(7200));
}

#[test]
fn no_objectives_judges_nothing() {
    let s = settings(&config("")).expect("settings");
    assert!(s.rto.is_none() && s.rpo.is_none());
    assert_eq!(s.recovery_timeout, Duration::from_secs(3600));
    let mut r = new_report(
        Utc::now(),
        "end",
        &DrillOptions::default(),
        &Sandbox {
            root: PathBuf::from("/tmp/x"),
            created: true,
        },
    );
    r.rpo_seconds = Some(10.0);
    judge_objectives(&s, &mut r, Duration::from_secs(5));
    assert!(r.objectives.is_empty());
}

#[test]
fn bad_objective_is_a_clear_error() {
    let c = config("[objectives]\nrto = \"30 minutes\"\n");
    let e = settings(&c).err().expect("refused");
    assert!(e.to_string().contains("objectives.rto"), "{e}");
}

#[test]
fn objectives_are_judged_from_measurements() {
    let c = config("[objectives]\nrto = \"10s\"\nrpo = \"1min\"\n");
    let s = settings(&c).expect("settings");
    let mut r = new_report(
        Utc::now(),
        "end",
        &DrillOptions::default(),
        &Sandbox {
            root: PathBuf::from("/tmp/x"),
            created: true,
        },
    );
    r.rpo_seconds = Some(90.0);
    judge_objectives(&s, &mut r, Duration::from_secs(4));
    assert_eq!(r.objectives.len(), 2);
    assert!(r.objectives[0].passed);
    assert!(!r.objectives[1].passed);
    assert_eq!(r.objectives[1].margin_seconds, -30.0);
}
