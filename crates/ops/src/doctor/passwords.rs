//! Weak-password checks that need no brute force: the stored verifier of each role (from
//! `pg_authid`) is compared with a short list of guesses (the role name, the name with a common
//! suffix, well-known defaults). SCRAM-SHA-256 verifiers are recomputed from their own salt and
//! iteration count (RFC 5802 / RFC 7677, as PostgreSQL stores them:
//! `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`); MD5 verifiers are
//! `md5` + md5(password + role name).
//!
//! Guesses are ASCII, for which SASLprep changes nothing. No guess ever leaves this module:
//! callers only learn which kind of guess matched ([`Weakness`]).

use std::num::NonZeroU32;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::facts::Weakness;

/// Passwords that installers, tutorials and Compose files leave behind.
pub const KNOWN_DEFAULTS: &[&str] = &[
    "postgres",
    "password",
    "admin",
    "changeme",
    "secret",
    "root",
    "test",
    "pass",
    "123456",
    "12345678",
    "qwerty",
    "letmein",
    "welcome",
    "pgpass",
    "postgres123",
    "Password1",
    "default",
];

/// Suffixes people append to a role name (`app123`, `apppass`, `tuxpass` for `tuxuser`).
const NAME_SUFFIXES: &[&str] = &["123", "1234", "pass", "password", "pw", "!", "1"];

/// Above this iteration count a verifier is only tried against the role name (each guess costs
/// a PBKDF2 run of that many rounds).
const MAX_FULL_ITERATIONS: u32 = 100_000;

/// Which weak guess, if any, `verifier` (a `rolpassword`) accepts for `role`.
pub fn weakness(role: &str, verifier: &str) -> Option<Weakness> {
    let scram = Scram::parse(verifier);
    let is_md5 = verifier.starts_with("md5") && verifier.len() == 35;
    if scram.is_none() && !is_md5 {
        return None;
    }
    let accepts = |guess: &str| match &scram {
        Some(s) => s.accepts(guess),
        None => postgres_protocol::password::md5(guess.as_bytes(), role) == verifier,
    };
    if accepts(role) {
        return Some(Weakness::EqualsName);
    }
    if scram.as_ref().is_some_and(|s| s.iterations.get() > MAX_FULL_ITERATIONS) {
        return None;
    }
    if name_variants(role).iter().any(|g| accepts(g)) {
        return Some(Weakness::NameVariant);
    }
    KNOWN_DEFAULTS
        .iter()
        .any(|g| *g != role && accepts(g))
        .then_some(Weakness::KnownDefault)
}

/// The verifier is an MD5 one.
pub fn is_md5(verifier: &str) -> bool {
    verifier.starts_with("md5") && verifier.len() == 35
}

fn name_variants(role: &str) -> Vec<String> {
    let mut bases = vec![role.to_string()];
    for tail in ["user", "_user", "-user"] {
        if let Some(b) = role.strip_suffix(tail).filter(|b| !b.is_empty()) {
            bases.push(b.to_string());
        }
    }
    let mut out = Vec::new();
    for b in &bases {
        for s in NAME_SUFFIXES {
            out.push(format!("{b}{s}"));
        }
        if b != role {
            out.push(b.clone());
        }
    }
    out
}

/// A parsed SCRAM-SHA-256 verifier.
struct Scram {
    iterations: NonZeroU32,
    salt: Vec<u8>,
    stored_key: Vec<u8>,
}

impl Scram {
    fn parse(verifier: &str) -> Option<Scram> {
        let rest = verifier.strip_prefix("SCRAM-SHA-256$")?;
        let (iter_salt, keys) = rest.split_once('$')?;
        let (iterations, salt) = iter_salt.split_once(':')?;
        let (stored_key, _server_key) = keys.split_once(':')?;
        Some(Scram {
            iterations: iterations.parse().ok()?,
            salt: STANDARD.decode(salt).ok()?,
            stored_key: STANDARD.decode(stored_key).ok()?,
        })
    }

    /// StoredKey = SHA-256(HMAC(SaltedPassword, "Client Key")), SaltedPassword = PBKDF2.
    fn accepts(&self, password: &str) -> bool {
        let mut salted = [0u8; 32];
        ring::pbkdf2::derive(
            ring::pbkdf2::PBKDF2_HMAC_SHA256,
            self.iterations,
            &self.salt,
            password.as_bytes(),
            &mut salted,
        );
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &salted);
        let client_key = ring::hmac::sign(&key, b"Client Key");
        let stored = ring::digest::digest(&ring::digest::SHA256, client_key.as_ref());
        stored.as_ref() == self.stored_key.as_slice()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scram_verifiers_are_recomputed() {
        let v = postgres_protocol::password::scram_sha_256(b"app");
        assert_eq!(weakness("app", &v), Some(Weakness::EqualsName));
        let v = postgres_protocol::password::scram_sha_256(b"changeme");
        assert_eq!(weakness("app", &v), Some(Weakness::KnownDefault));
        let v = postgres_protocol::password::scram_sha_256(b"tuxpass");
        assert_eq!(weakness("tuxuser", &v), Some(Weakness::NameVariant));
        let v = postgres_protocol::password::scram_sha_256(b"x7#Lq9!vR2mZ-strong");
        assert_eq!(weakness("app", &v), None);
    }

    #[test]
    fn a_verifier_built_by_hand_with_a_fixed_salt() {
        // RFC 5802's construction written out independently of `Scram::accepts`.
        let salt = [7u8; 16];
        let mut salted = [0u8; 32];
        ring::pbkdf2::derive(
            ring::pbkdf2::PBKDF2_HMAC_SHA256,
            NonZeroU32::new(4096).unwrap(),
            &salt,
            b"postgres",
            &mut salted,
        );
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &salted);
        let stored = ring::digest::digest(&ring::digest::SHA256, ring::hmac::sign(&key, b"Client Key").as_ref());
        let server = ring::hmac::sign(&key, b"Server Key");
        let v = format!(
            "SCRAM-SHA-256$4096:{}${}:{}",
            STANDARD.encode(salt),
            STANDARD.encode(stored.as_ref()),
            STANDARD.encode(server.as_ref())
        );
        assert_eq!(weakness("postgres", &v), Some(Weakness::EqualsName));
        assert_eq!(weakness("admin", &v), Some(Weakness::KnownDefault));
    }

    #[test]
    fn md5_verifiers() {
        // md5('legacy' || 'legacy'), as PostgreSQL stores it.
        let v = postgres_protocol::password::md5(b"legacy", "legacy");
        assert!(is_md5(&v));
        assert_eq!(weakness("legacy", &v), Some(Weakness::EqualsName));
        let v = postgres_protocol::password::md5(b"secret", "legacy");
        assert_eq!(weakness("legacy", &v), Some(Weakness::KnownDefault));
        let v = postgres_protocol::password::md5(b"secret", "other");
        assert_eq!(weakness("legacy", &v), None, "the role name is part of the hash");
    }

    #[test]
    fn garbage_is_not_judged() {
        assert_eq!(weakness("app", ""), None);
        assert_eq!(weakness("app", "SCRAM-SHA-256$x:y$z:w"), None);
        assert_eq!(weakness("app", "plain-text-from-pg9"), None);
    }
}
