//! Reading `pg_hba.conf` rules: classifying their address ranges (loopback, broad), and a small
//! parser of the file itself for when `pg_hba_file_rules` cannot be read (not a superuser) but
//! the data directory is local and readable.

use std::net::IpAddr;

use super::facts::HbaRule;

/// The rule is for connections from outside this host (a TCP rule not limited to loopback).
pub fn is_remote(rule: &HbaRule) -> bool {
    rule.kind != "local" && !is_loopback(rule)
}

/// The rule only matches connections from this host.
pub fn is_loopback(rule: &HbaRule) -> bool {
    let Some(addr) = rule.address.as_deref() else {
        return rule.kind == "local";
    };
    match addr {
        "samehost" | "localhost" => true,
        "all" | "samenet" => false,
        a => match a.parse::<IpAddr>() {
            Ok(ip) => {
                let min = if ip.is_ipv4() { 8 } else { 128 };
                ip.is_loopback() && rule.prefix.is_none_or(|p| p >= min)
            }
            Err(_) => false,
        },
    }
}

/// The rule matches a very wide range: `all`, or an IPv4 prefix of /8 or shorter
/// (`0.0.0.0/0`, `10.0.0.0/8`), or an IPv6 prefix of /32 or shorter (`::/0`).
pub fn is_broad(rule: &HbaRule) -> bool {
    let Some(addr) = rule.address.as_deref() else {
        return false;
    };
    if addr == "all" {
        return true;
    }
    match (addr.parse::<IpAddr>(), rule.prefix) {
        (Ok(IpAddr::V4(_)), Some(p)) => p <= 8,
        (Ok(IpAddr::V6(_)), Some(p)) => p <= 32,
        _ => false,
    }
}

/// The range as written (`0.0.0.0/0`, `samehost`, `local socket`).
pub fn describe_address(rule: &HbaRule) -> String {
    match (&rule.address, rule.prefix) {
        (None, _) => "the local socket".into(),
        (Some(a), Some(p)) => format!("{a}/{p}"),
        (Some(a), None) => a.clone(),
    }
}

/// `line N (host all all 0.0.0.0/0 trust)`.
pub fn describe(rule: &HbaRule) -> String {
    let addr = rule
        .address
        .as_ref()
        .map(|_| format!(" {}", describe_address(rule)))
        .unwrap_or_default();
    format!(
        "line {} ({} {} {}{} {})",
        rule.line,
        rule.kind,
        rule.databases.join(","),
        rule.users.join(","),
        addr,
        rule.method
    )
}

/// The prefix length of a netmask (`255.255.255.0` is 24), `None` if it is not a netmask.
pub fn netmask_prefix(mask: &str) -> Option<u8> {
    let bits: u128 = match mask.parse::<IpAddr>().ok()? {
        IpAddr::V4(m) => u128::from(u32::from(m)) << 96,
        IpAddr::V6(m) => u128::from(m),
    };
    let ones = bits.leading_ones();
    (bits.count_ones() == ones).then(|| ones.min(128) as u8)
}

/// Parses the text of a `pg_hba.conf` (comments, blank lines and `include` directives are
/// skipped; continuation lines are not supported). Lines that do not parse are skipped: the
/// server rejects such a file anyway.
pub fn parse_file(text: &str) -> Vec<HbaRule> {
    let mut rules = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("");
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(kind) = fields.first() else { continue };
        let kind = kind.to_ascii_lowercase();
        let is_local = kind == "local";
        if !is_local && !kind.starts_with("host") {
            continue;
        }
        let min = if is_local { 4 } else { 5 };
        if fields.len() < min {
            continue;
        }
        let list = |f: &str| {
            f.split(',')
                .map(|s| s.trim_matches('"').to_string())
                .collect::<Vec<_>>()
        };
        let (address, prefix, method_at) = if is_local {
            (None, None, 3)
        } else {
            let addr = fields[3];
            match addr.split_once('/') {
                Some((a, p)) => (Some(a.to_string()), p.parse().ok(), 4),
                None => match fields.get(4).and_then(|m| netmask_prefix(m)) {
                    Some(p) if fields.len() >= 6 => (Some(addr.to_string()), Some(p), 5),
                    _ => (Some(addr.to_string()), None, 4),
                },
            }
        };
        let Some(method) = fields.get(method_at) else { continue };
        rules.push(HbaRule {
            line: u32::try_from(i + 1).unwrap_or(u32::MAX),
            kind,
            databases: list(fields[1]),
            users: list(fields[2]),
            address,
            prefix,
            method: method.to_ascii_lowercase(),
        });
    }
    rules
}
