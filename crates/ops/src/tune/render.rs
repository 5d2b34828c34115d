//! The three ways `tune` hands its settings over — a `postgresql.conf` include file, `ALTER
//! SYSTEM` statements, JSON — and the diff against a running server's `pg_settings`. Kept apart
//! from the rules so that `deploy` can write the same include file.

use std::str::FromStr;

use pgvault_core::units::{format_duration, format_size};
use serde_json::{json, Value};

use super::rules::section_of;
use super::value::quote;
use super::{Inputs, Recommendation, TuneError};

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Conf,
    Sql,
    Json,
}

impl FromStr for Format {
    type Err = TuneError;
    fn from_str(s: &str) -> Result<Format, TuneError> {
        match s {
            "conf" => Ok(Format::Conf),
            "sql" => Ok(Format::Sql),
            "json" => Ok(Format::Json),
            _ => Err(TuneError::BadFormat(s.to_string())),
        }
    }
}

/// One line describing the inputs (`32GB RAM, 4 CPUs, ssd, oltp, 100 connections…`).
pub fn describe(inputs: &Inputs) -> String {
    format!(
        "{} RAM, {} CPU{}, {} storage, {} workload, {} connections{}, RPO {}, PostgreSQL {}",
        format_size(inputs.memory_bytes / (1 << 20) * (1 << 20)),
        inputs.cpus,
        if inputs.cpus == 1 { "" } else { "s" },
        inputs.storage.as_str(),
        inputs.workload.as_str(),
        inputs.connections,
        if inputs.pooler { " through a pooler" } else { "" },
        format_duration(inputs.rpo),
        inputs
            .server_major
            .map_or("version unknown".to_string(), |v| v.to_string())
    )
}

/// A `postgresql.conf` include file: a header, then each setting under its section with its
/// reason as a comment above it. `notes` become header comment lines.
pub fn conf(inputs: &Inputs, recs: &[Recommendation], notes: &[String]) -> String {
    let mut out = String::new();
    out.push_str("# Written by pgvault tune for: ");
    out.push_str(&describe(inputs));
    out.push_str("\n# Include it from postgresql.conf (include_if_exists = 'pgvault-tune.conf');\n");
    out.push_str("# settings marked (restart) take effect at the next server restart, the rest on reload.\n");
    for n in notes {
        out.push_str(&format!("# {n}\n"));
    }
    let mut section = "";
    for r in recs {
        let s = section_of(r.name);
        if s != section {
            out.push_str(&format!("\n# --- {s} ---\n"));
            section = s;
        }
        let restart = if r.restart { " (restart)" } else { "" };
        out.push_str(&format!("# {}{restart}\n{} = {}\n", r.reason, r.name, r.value));
    }
    out
}

/// `ALTER SYSTEM SET` statements (every value quoted, which PostgreSQL accepts for any type),
/// each with its reason, and a final `pg_reload_conf()`.
pub fn sql(inputs: &Inputs, recs: &[Recommendation], notes: &[String]) -> String {
    let mut out = format!("-- Written by pgvault tune for: {}\n", describe(inputs));
    for n in notes {
        out.push_str(&format!("-- {n}\n"));
    }
    for r in recs {
        let restart = if r.restart { " (restart)" } else { "" };
        out.push_str(&format!(
            "ALTER SYSTEM SET {} = {};  -- {}{restart}\n",
            r.name,
            quote(&r.unquoted()),
            r.reason.replace('\n', " ")
        ));
    }
    out.push_str("SELECT pg_reload_conf();\n");
    out
}

/// `{"inputs": …, "settings": [{"name", "value", "reason", "reference", …}]}`.
pub fn json(inputs: &Inputs, recs: &[Recommendation], extra_inputs: Value) -> Value {
    let mut inp = json!({
        "memory": format_size(inputs.memory_bytes),
        "memory_bytes": inputs.memory_bytes,
        "cpus": inputs.cpus,
        "storage": inputs.storage.as_str(),
        "workload": inputs.workload.as_str(),
        "connections": inputs.connections,
        "pooler": inputs.pooler,
        "rpo": format_duration(inputs.rpo),
        "server_major": inputs.server_major,
    });
    if let (Some(obj), Value::Object(extra)) = (inp.as_object_mut(), extra_inputs) {
        obj.extend(extra);
    }
    let settings: Vec<Value> = recs.iter().map(setting_json).collect();
    json!({ "inputs": inp, "settings": settings })
}

fn setting_json(r: &Recommendation) -> Value {
    json!({
        "name": r.name,
        "value": r.unquoted(),
        "conf_value": r.value,
        "reason": r.reason,
        "reference": r.reference,
        "section": section_of(r.name),
        "restart": r.restart,
        "at_least": r.at_least,
        "typed": r.typed,
    })
}

/// One `pg_settings` row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Current {
    pub name: String,
    pub setting: String,
    pub unit: Option<String>,
    /// `current_setting(name)`: the value as people read it (`128MB`).
    pub display: String,
}

/// A setting whose current value differs from the recommendation.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Difference {
    pub name: &'static str,
    /// `None`: the server does not know the setting (older version).
    pub current: Option<String>,
    pub recommended: String,
    pub restart: bool,
    pub reason: String,
}

/// The recommendations the server does not already have, in recommendation order.
pub fn diff(recs: &[Recommendation], current: &[Current]) -> Vec<Difference> {
    recs.iter()
        .filter_map(|r| {
            let cur = current.iter().find(|c| c.name == r.name);
            if let Some(c) = cur {
                if r.matches(&c.setting, c.unit.as_deref()) {
                    return None;
                }
            }
            Some(Difference {
                name: r.name,
                current: cur.map(|c| c.display.clone()),
                recommended: r.unquoted(),
                restart: r.restart,
                reason: r.reason.clone(),
            })
        })
        .collect()
}

/// The diff for people: `name: current → recommended  (restart)  # reason`.
pub fn diff_text(diffs: &[Difference], total: usize) -> String {
    if diffs.is_empty() {
        return format!("the server already has all {total} recommended settings\n");
    }
    let width = diffs.iter().map(|d| d.name.len()).max().unwrap_or(0);
    let mut out = format!("{} of {total} settings differ (current → recommended):\n", diffs.len());
    for d in diffs {
        let cur = d.current.as_deref().unwrap_or("(not on this server)");
        let restart = if d.restart { "  (restart)" } else { "" };
        out.push_str(&format!(
            "  {:width$}  {cur} → {}{restart}\n      # {}\n",
            d.name, d.recommended, d.reason
        ));
    }
    out
}
