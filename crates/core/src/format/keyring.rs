//! The repository keyring: one random master key, stored only wrapped under a
//! passphrase-derived key (Argon2id + AES-256-GCM).
//!
//! Separating the master key from the passphrase lets the passphrase change
//! (`rewrap`) without re-encrypting any object, and lets each object carry its
//! own data key wrapped by the master key (see `envelope.rs`). The keyring is
//! a small JSON document kept in the repository's plaintext metadata.

use rand::rngs::OsRng;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::{ZeroizeOnDrop, Zeroizing};

use crate::format::aead::Aes256Gcm;
use crate::format::error::FormatError;

/// Keyring document version written by this build.
pub const KEYRING_VERSION: u32 = 1;
/// The only key-derivation function of keyring version 1.
pub const KDF_ARGON2ID: &str = "argon2id";
/// AAD binding the wrapped master key to its purpose.
const KEYRING_AAD: &[u8] = b"pgvault-keyring-v1";
/// Domain separator for the public key identifier.
const KEY_ID_DOMAIN: &[u8] = b"pgvault-key-id-v1";
/// Minimum passphrase length, in characters (bytes if not UTF-8).
pub const MIN_PASSPHRASE_CHARS: usize = 12;

const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 12;
const KEY_LEN: usize = 32;
const TAG_LEN: usize = 16;

/// Smallest Argon2id memory accepted when creating a keyring (8 MiB).
pub const MIN_CREATE_MEMORY_KIB: u32 = 8 * 1024;
/// Largest Argon2id memory accepted at all (4 GiB): a hostile keyring must
/// not make `unlock` allocate without bound.
pub const MAX_MEMORY_KIB: u32 = 4 * 1024 * 1024;
/// Largest accepted Argon2id pass count.
pub const MAX_ITERATIONS: u32 = 64;
/// Largest accepted Argon2id lane count.
pub const MAX_PARALLELISM: u32 = 16;

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KdfParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for KdfParams {
    /// 19 MiB, 2 passes, 1 lane (the OWASP Argon2id baseline): about 30-45 ms
    /// on a 2-core EPYC, paid once per `pgvault-archive push`. The argon2
    /// crate computes lanes sequentially, so more lanes only add time.
    fn default() -> Self {
        KdfParams {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

impl KdfParams {
    fn check_bounds(&self) -> Result<(), String> {
        if self.parallelism == 0 || self.parallelism > MAX_PARALLELISM {
            return Err(format!(
                "argon2id parallelism {} is outside 1..={MAX_PARALLELISM}",
                self.parallelism
            ));
        }
        if self.iterations == 0 || self.iterations > MAX_ITERATIONS {
            return Err(format!(
                "argon2id iterations {} is outside 1..={MAX_ITERATIONS}",
                self.iterations
            ));
        }
        if self.memory_kib < 8 * self.parallelism || self.memory_kib > MAX_MEMORY_KIB {
            return Err(format!(
                "argon2id memory {} KiB is outside {}..={MAX_MEMORY_KIB}",
                self.memory_kib,
                8 * self.parallelism
            ));
        }
        Ok(())
    }

    fn check_create(&self) -> Result<(), FormatError> {
        self.check_bounds().map_err(FormatError::invalid_settings)?;
        if self.memory_kib < MIN_CREATE_MEMORY_KIB {
            return Err(FormatError::invalid_settings(format!(
                "argon2id memory {} KiB is below the minimum of {MIN_CREATE_MEMORY_KIB} KiB",
                self.memory_kib
            )));
        }
        Ok(())
    }

    /// Derives the key-encryption key.
    fn derive(&self, passphrase: &[u8], salt: &[u8]) -> Result<Zeroizing<[u8; KEY_LEN]>, FormatError> {
        let params = argon2::Params::new(self.memory_kib, self.iterations, self.parallelism, Some(KEY_LEN))
            .map_err(|e| FormatError::bad_keyring(format!("argon2id parameters: {e}")))?;
        let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut kek = Zeroizing::new([0u8; KEY_LEN]);
        argon
            .hash_password_into(passphrase, salt, kek.as_mut())
            .map_err(|e| FormatError::bad_keyring(format!("argon2id: {e}")))?;
        Ok(kek)
    }
}

/// The repository master key. Zeroized on drop; never printed.
#[derive(ZeroizeOnDrop)]
pub struct MasterKey([u8; KEY_LEN]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(**redacted**)")
    }
}

impl MasterKey {
    fn generate() -> MasterKey {
        let mut k = [0u8; KEY_LEN];
        OsRng.fill_bytes(&mut k);
        MasterKey(k)
    }

    /// Public 8-byte identifier of this key: the first 8 bytes of
    /// SHA-256("pgvault-key-id-v1" || key). Written into every sealed object
    /// header so a reader can say "different repository key" instead of
    /// "corrupted". Reveals nothing useful about the key.
    pub fn key_id(&self) -> [u8; 8] {
        let mut h = Sha256::new();
        h.update(KEY_ID_DOMAIN);
        h.update(self.0);
        let d = h.finalize();
        let mut id = [0u8; 8];
        id.copy_from_slice(&d[..8]);
        id
    }

    /// `key_id` as lowercase hex, for messages and `pgvault info`.
    pub fn key_id_hex(&self) -> String {
        hex::encode(self.key_id())
    }

    pub(crate) fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(&self.0)
    }
}

/// The keyring document (JSON in the repository's plaintext metadata).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keyring {
    pub version: u32,
    /// Always "argon2id" in version 1.
    pub kdf: String,
    pub params: KdfParams,
    /// 16 bytes, lowercase hex.
    pub salt: String,
    /// 12 bytes, lowercase hex.
    pub nonce: String,
    /// 48 bytes (32-byte key + 16-byte tag), lowercase hex.
    pub wrapped_key: String,
}

fn check_passphrase(p: &[u8]) -> Result<(), FormatError> {
    let chars = match std::str::from_utf8(p) {
        Ok(s) => s.chars().count(),
        Err(_) => p.len(),
    };
    if chars < MIN_PASSPHRASE_CHARS {
        let reason = if p.is_empty() {
            "the passphrase is empty".to_string()
        } else {
            format!("the passphrase has {chars} characters; at least {MIN_PASSPHRASE_CHARS} are required")
        };
        return Err(FormatError::WeakPassphrase { reason });
    }
    Ok(())
}

fn decode_fixed<const N: usize>(field: &str, s: &str) -> Result<[u8; N], FormatError> {
    let v = hex::decode(s).map_err(|e| FormatError::bad_keyring(format!("field {field} is not hex: {e}")))?;
    <[u8; N]>::try_from(v.as_slice())
        .map_err(|_| FormatError::bad_keyring(format!("field {field} has {} bytes, expected {N}", v.len())))
}

impl Keyring {
    /// Creates a new master key and wraps it under `passphrase`.
    pub fn create(passphrase: &[u8], params: KdfParams) -> Result<(Keyring, MasterKey), FormatError> {
        check_passphrase(passphrase)?;
        params.check_create()?;
        let master = MasterKey::generate();
        let keyring = Keyring::wrap(&master, passphrase, params)?;
        Ok((keyring, master))
    }

    fn wrap(master: &MasterKey, passphrase: &[u8], params: KdfParams) -> Result<Keyring, FormatError> {
        let mut salt = [0u8; SALT_LEN];
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut salt);
        OsRng.fill_bytes(&mut nonce);
        let kek = params.derive(passphrase, &salt)?;
        let wrapped = Aes256Gcm::new(&kek)
            .seal(&nonce, KEYRING_AAD, &master.0)
            .map_err(|_| FormatError::bad_keyring("wrapping the master key failed"))?;
        Ok(Keyring {
            version: KEYRING_VERSION,
            kdf: KDF_ARGON2ID.to_string(),
            params,
            salt: hex::encode(salt),
            nonce: hex::encode(nonce),
            wrapped_key: hex::encode(wrapped),
        })
    }

    /// Checks the KDF cost parameters against the bounds (memory, passes, lanes) without
    /// deriving anything: the keyring is read from an unauthenticated descriptor, so a hostile
    /// one must not make a reader allocate or compute without bound.
    pub fn check_params(&self) -> Result<(), FormatError> {
        self.params.check_bounds().map_err(FormatError::bad_keyring)
    }

    /// Unwraps the master key. A wrong passphrase (or a keyring whose wrapped
    /// key was altered) gives [`FormatError::WrongPassphrase`].
    pub fn unlock(&self, passphrase: &[u8]) -> Result<MasterKey, FormatError> {
        if self.version != KEYRING_VERSION {
            return Err(if self.version > KEYRING_VERSION {
                FormatError::UnsupportedVersion {
                    what: "repository keyring",
                    found: self.version,
                    supported: KEYRING_VERSION,
                }
            } else {
                FormatError::bad_keyring(format!("unknown keyring version {}", self.version))
            });
        }
        if self.kdf != KDF_ARGON2ID {
            return Err(FormatError::bad_keyring(format!(
                "unknown key-derivation function {:?} (expected \"argon2id\")",
                self.kdf
            )));
        }
        self.params.check_bounds().map_err(FormatError::bad_keyring)?;
        let salt: [u8; SALT_LEN] = decode_fixed("salt", &self.salt)?;
        let nonce: [u8; NONCE_LEN] = decode_fixed("nonce", &self.nonce)?;
        let wrapped: [u8; KEY_LEN + TAG_LEN] = decode_fixed("wrapped_key", &self.wrapped_key)?;
        let kek = self.params.derive(passphrase, &salt)?;
        let plain = Zeroizing::new(
            Aes256Gcm::new(&kek)
                .open(&nonce, KEYRING_AAD, &wrapped)
                .map_err(|_| FormatError::WrongPassphrase)?,
        );
        let mut key = [0u8; KEY_LEN];
        if plain.len() != KEY_LEN {
            return Err(FormatError::bad_keyring("unwrapped key has the wrong length"));
        }
        key.copy_from_slice(&plain);
        Ok(MasterKey(key))
    }

    /// Re-wraps the same master key under a new passphrase (fresh salt and
    /// nonce, same KDF parameters). Objects are untouched.
    pub fn rewrap(&self, old: &[u8], new: &[u8]) -> Result<Keyring, FormatError> {
        check_passphrase(new)?;
        let master = self.unlock(old)?;
        Keyring::wrap(&master, new, self.params)
    }

    /// Parses the JSON document; malformed JSON is [`FormatError::BadKeyring`].
    pub fn from_json(s: &str) -> Result<Keyring, FormatError> {
        serde_json::from_str(s).map_err(|e| FormatError::bad_keyring(format!("JSON: {e}")))
    }

    /// Serializes to pretty JSON.
    pub fn to_json(&self) -> String {
        // A struct of strings and integers always serializes.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}
