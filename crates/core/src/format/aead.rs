//! AES-256-GCM, the format's one cipher, through `ring`.
//!
//! `ring` runs AES and GHASH together with the CPU's AES and carry-less multiply instructions
//! (the same code rustls uses for TLS). RustCrypto's `aes-gcm`, used before, computed GHASH
//! separately and cost about a tenth of an archive push's CPU (`perf`: `Polyval::mul` 9.9%,
//! AES 2.6%), where this costs under 2%. The bytes are standard AES-256-GCM either way: 96-bit
//! nonce, 128-bit tag appended, so every stored object stays readable.

use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, AES_256_GCM};

use crate::format::chunk::TAG_LEN;

/// An AES-256-GCM key. Every nonce is given by the caller, which keeps them unique (the
/// format's nonce rules, docs/FORMAT.md).
pub(crate) struct Aes256Gcm(LessSafeKey);

/// Authentication failed: wrong key, or altered ciphertext, tag, nonce or AAD.
#[derive(Debug)]
pub(crate) struct Unauthentic;

/// Encryption refused its input (longer than AES-GCM allows).
#[derive(Debug)]
pub(crate) struct SealFailed;

impl Aes256Gcm {
    pub(crate) fn new(key: &[u8; 32]) -> Aes256Gcm {
        // `ring` refuses only a key of the wrong length, which the type rules out.
        let key =
            UnboundKey::new(&AES_256_GCM, key).unwrap_or_else(|_| unreachable!("a 32-byte key is an AES-256 key"));
        Aes256Gcm(LessSafeKey::new(key))
    }

    /// Encrypts `buf` in place and returns its tag. Fails only for input beyond GCM's limit
    /// (64 GiB), far above the format's chunk size; never with a tag that would not open.
    pub(crate) fn seal_in_place(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; TAG_LEN], SealFailed> {
        let nonce = Nonce::assume_unique_for_key(*nonce);
        let tag = self
            .0
            .seal_in_place_separate_tag(nonce, Aad::from(aad), buf)
            .map_err(|_| SealFailed)?;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Decrypts `buf` in place if `tag` authenticates it. On failure `buf` holds zeros, not the
    /// ciphertext: a caller that wants to try another nonce keeps a copy.
    pub(crate) fn open_in_place(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), Unauthentic> {
        let nonce = Nonce::assume_unique_for_key(*nonce);
        let tag = Tag::from(*tag);
        self.0
            .open_in_place_separate_tag(nonce, Aad::from(aad), tag, buf, 0..)
            .map(|_| ())
            .map_err(|_| Unauthentic)
    }

    /// `plain` sealed into a new buffer: ciphertext then tag.
    pub(crate) fn seal(&self, nonce: &[u8; 12], aad: &[u8], plain: &[u8]) -> Result<Vec<u8>, SealFailed> {
        let mut out = Vec::with_capacity(plain.len() + TAG_LEN);
        out.extend_from_slice(plain);
        let tag = self.seal_in_place(nonce, aad, &mut out)?;
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// Opens `sealed` (ciphertext then tag) into a new buffer.
    pub(crate) fn open(&self, nonce: &[u8; 12], aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, Unauthentic> {
        let body_len = sealed.len().checked_sub(TAG_LEN).ok_or(Unauthentic)?;
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&sealed[body_len..]);
        let mut out = sealed[..body_len].to_vec();
        self.open_in_place(nonce, aad, &mut out, &tag)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// NIST SP 800-38D / the GCM spec's test case 16 (AES-256, 96-bit IV, AAD): the cipher is
    /// plain AES-256-GCM, byte for byte.
    #[test]
    fn matches_the_gcm_test_vector() {
        let h = |s: &str| hex::decode(s).expect("hex");
        let key: [u8; 32] = h("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308")
            .try_into()
            .expect("key");
        let nonce: [u8; 12] = h("cafebabefacedbaddecaf888").try_into().expect("nonce");
        let aad = h("feedfacedeadbeeffeedfacedeadbeefabaddad2");
        let plain = h("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39");
        let expect = h("522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662\
76fc6ece0f4e1768cddf8853bb2d551b");
        let c = Aes256Gcm::new(&key);
        let sealed = c.seal(&nonce, &aad, &plain).expect("seal");
        assert_eq!(sealed, expect);
        assert_eq!(c.open(&nonce, &aad, &sealed).expect("open"), plain);
        let mut bad = sealed.clone();
        bad[3] ^= 1;
        assert!(c.open(&nonce, &aad, &bad).is_err());
        assert!(c.open(&nonce, b"other aad", &sealed).is_err());
        assert!(c.open(&nonce, &aad, &sealed[..10]).is_err());
    }
}
