//! Tests for the stored-object format: round trips for every codec/sealing
//! combination and, for every kind of damage the format promises to detect,
//! an assertion of the specific error variant.

use std::io::{self, Read, Write};

use crate::format::chunk::{ChunkContext, ChunkSealer, ChunkWriter};
use crate::format::header::{Header, FIXED_LEN, SEALED_EXTRA_LEN};
use crate::format::*;

const C: usize = 1024; // small chunk size for structural tests
const PASS: &[u8] = b"correct horse battery staple";

fn fast_params() -> KdfParams {
    KdfParams {
        memory_kib: 8 * 1024,
        iterations: 1,
        parallelism: 1,
    }
}

fn new_key() -> MasterKey {
    Keyring::create(PASS, fast_params()).expect("create keyring").1
}

fn codec(compression: Compression, chunk: usize) -> Codec {
    Codec {
        compression,
        zstd_level: 3,
        zstd_workers: 0,
        chunk_size: chunk as u32,
    }
}

/// Deterministic mixed data: runs of pseudo-random bytes and repeated text.
fn mixed(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let text = b"INSERT INTO t VALUES (42, 'pgvault', now()); ";
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let run = (next() % 4096) as usize + 1;
        if next() % 3 == 0 {
            for _ in 0..run {
                out.push(next() as u8);
            }
        } else {
            for i in 0..run {
                out.push(text[i % text.len()]);
            }
        }
    }
    out.truncate(len);
    out
}

fn header_len(sealed: bool) -> usize {
    FIXED_LEN + if sealed { SEALED_EXTRA_LEN } else { 0 }
}

/// An uncompressed object of `len` bytes with chunk size `C`.
fn raw_object(len: usize, key: Option<&MasterKey>) -> (Vec<u8>, Vec<u8>) {
    let data = mixed(len, len as u64);
    let obj = seal_bytes(&data, &codec(Compression::None, C), key).expect("seal");
    (data, obj)
}

fn flip(obj: &[u8], at: usize) -> Vec<u8> {
    let mut o = obj.to_vec();
    o[at] ^= 0x10;
    o
}

macro_rules! assert_err {
    ($res:expr, $pat:pat) => {
        match $res {
            Err(e @ $pat) => e,
            Err(other) => panic!("expected {}, got {other:?}", stringify!($pat)),
            Ok(_) => panic!("expected {}, got Ok", stringify!($pat)),
        }
    };
}

// ---------------------------------------------------------------- round trips

#[test]
fn round_trip_all_combinations_small_chunks() {
    let key = new_key();
    for compression in [Compression::None, Compression::Zstd] {
        for sealed in [false, true] {
            let k = if sealed { Some(&key) } else { None };
            for len in [0, 1, C - 1, C, C + 1, 3 * C + 5, 50 * C + 17] {
                let data = mixed(len, 7);
                let c = codec(compression, C);
                let obj = seal_bytes(&data, &c, k).expect("seal");
                let back = open_bytes(&obj, k).expect("open");
                assert_eq!(back, data, "{compression:?} sealed={sealed} len={len}");
            }
        }
    }
}

#[test]
fn round_trip_default_chunk_size_boundaries() {
    let key = new_key();
    let c = DEFAULT_CHUNK_SIZE as usize;
    for compression in [Compression::None, Compression::Zstd] {
        for sealed in [false, true] {
            let k = if sealed { Some(&key) } else { None };
            for len in [c - 1, c, c + 1, 3 * c + 5] {
                let data = mixed(len, 11);
                let codec = Codec {
                    compression,
                    ..Codec::default()
                };
                let obj = seal_bytes(&data, &codec, k).expect("seal");
                assert_eq!(open_bytes(&obj, k).expect("open"), data);
            }
        }
    }
}

#[test]
fn round_trip_10mb_streaming_with_stats() {
    let key = new_key();
    let data = mixed(10_000_000, 3);
    for compression in [Compression::None, Compression::Zstd] {
        for sealed in [false, true] {
            let k = if sealed { Some(&key) } else { None };
            let c = Codec {
                compression,
                ..Codec::default()
            };
            let mut w = ObjectWriter::new(Vec::new(), &c, k).expect("writer");
            for piece in data.chunks(123_457) {
                w.write_all(piece).expect("write");
            }
            let (obj, stats) = w.finish().expect("finish");
            assert_eq!(stats.plain_bytes, data.len() as u64);
            assert_eq!(stats.stored_bytes, obj.len() as u64);
            if compression == Compression::Zstd {
                assert!(obj.len() < data.len(), "mixed data should compress");
            }
            let mut r = ObjectReader::new(obj.as_slice(), k).expect("reader");
            assert_eq!(r.compression(), compression);
            assert_eq!(r.is_sealed(), sealed);
            let mut back = Vec::new();
            r.read_to_end(&mut back).expect("read");
            assert!(back == data);
        }
    }
}

#[test]
fn round_trip_zstd_multithreaded() {
    let key = new_key();
    let data = mixed(3_000_000, 5);
    let c = Codec {
        zstd_workers: 2,
        ..Codec::default()
    };
    let obj = seal_bytes(&data, &c, Some(&key)).expect("seal");
    assert!(open_bytes(&obj, Some(&key)).expect("open") == data);
}

/// A source that returns at most 1..=7 bytes per read, and a consumer that
/// reads 3 bytes at a time: framing must not depend on read sizes.
#[test]
fn round_trip_with_short_reads() {
    struct Trickle<'a>(&'a [u8], usize);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.1 = self.1 % 7 + 1;
            let n = self.1.min(buf.len()).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let key = new_key();
    for compression in [Compression::None, Compression::Zstd] {
        let data = mixed(5 * C + 3, 9);
        let obj = seal_bytes(&data, &codec(compression, C), Some(&key)).expect("seal");
        let mut r = ObjectReader::new(Trickle(&obj, 0), Some(&key)).expect("reader");
        let mut back = Vec::new();
        let mut buf = [0u8; 3];
        loop {
            let n = r.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            back.extend_from_slice(&buf[..n]);
        }
        assert_eq!(back, data);
    }
}

#[test]
fn layout_sizes_match_the_spec() {
    let key = new_key();
    for (sealed, k) in [(false, None), (true, Some(&key))] {
        let h = header_len(sealed);
        let t = TAG_LEN;
        let size = |len: usize| raw_object(len, k).1.len();
        assert_eq!(size(0), h + t, "empty object = header + one empty final chunk");
        assert_eq!(size(1), h + 1 + t);
        assert_eq!(size(C), h + C + t, "a full chunk can be the final chunk");
        assert_eq!(size(C + 1), h + C + 1 + 2 * t);
        assert_eq!(size(3 * C + 5), h + 3 * C + 5 + 4 * t);
        let (_, obj) = raw_object(10, k);
        assert_eq!(&obj[..8], MAGIC);
        assert_eq!(obj[9], u8::from(sealed));
        assert_eq!(u32::from_be_bytes([obj[12], obj[13], obj[14], obj[15]]), C as u32);
    }
    assert_eq!(header_len(false), 23);
    assert_eq!(header_len(true), 91);
}

// ---------------------------------------------------------------- keyring

#[test]
fn wrong_passphrase() {
    let (kr, _) = Keyring::create(PASS, fast_params()).expect("create");
    assert_err!(kr.unlock(b"incorrect horse battery"), FormatError::WrongPassphrase);
    assert_err!(kr.unlock(b""), FormatError::WrongPassphrase);
    let e = kr.unlock(b"nope nope nope").unwrap_err();
    assert!(e.to_string().contains("passphrase_file / PGVAULT_PASSPHRASE"));
}

#[test]
fn weak_passphrases_refused() {
    assert_err!(Keyring::create(b"", fast_params()), FormatError::WeakPassphrase { .. });
    assert_err!(
        Keyring::create(b"short", fast_params()),
        FormatError::WeakPassphrase { .. }
    );
    // 11 characters (but 22 bytes) of UTF-8: still too short.
    let s = "ééééééééééé";
    assert_err!(
        Keyring::create(s.as_bytes(), fast_params()),
        FormatError::WeakPassphrase { .. }
    );
    assert!(Keyring::create(b"twelve chars", fast_params()).is_ok());
    let (kr, _) = Keyring::create(PASS, fast_params()).expect("create");
    assert_err!(kr.rewrap(PASS, b"tiny"), FormatError::WeakPassphrase { .. });
}

#[test]
fn weak_kdf_params_refused_at_creation() {
    let weak = KdfParams {
        memory_kib: 1024,
        iterations: 1,
        parallelism: 1,
    };
    assert_err!(Keyring::create(PASS, weak), FormatError::InvalidSettings { .. });
    let zero = KdfParams {
        iterations: 0,
        ..fast_params()
    };
    assert_err!(Keyring::create(PASS, zero), FormatError::InvalidSettings { .. });
}

#[test]
fn keyring_unlock_json_round_trip_and_rewrap() {
    let (kr, key) = Keyring::create(PASS, fast_params()).expect("create");
    let json = kr.to_json();
    let kr2 = Keyring::from_json(&json).expect("parse");
    assert_eq!(kr, kr2);
    let unlocked = kr2.unlock(PASS).expect("unlock");
    assert_eq!(unlocked.key_id(), key.key_id());

    let obj = seal_bytes(b"hello", &Codec::default(), Some(&key)).expect("seal");
    let new_pass = b"a brand new passphrase";
    let kr3 = kr.rewrap(PASS, new_pass).expect("rewrap");
    assert_ne!(kr3.salt, kr.salt);
    assert_err!(kr3.unlock(PASS), FormatError::WrongPassphrase);
    assert_err!(
        kr.rewrap(b"not the old passphrase", new_pass),
        FormatError::WrongPassphrase
    );
    let k3 = kr3.unlock(new_pass).expect("unlock new");
    assert_eq!(open_bytes(&obj, Some(&k3)).expect("old objects still open"), b"hello");
}

#[test]
fn tampered_or_malformed_keyrings() {
    let (kr, _) = Keyring::create(PASS, fast_params()).expect("create");
    let mut t = kr.clone();
    let mut w = hex::decode(&t.wrapped_key).expect("hex");
    w[3] ^= 1;
    t.wrapped_key = hex::encode(w);
    assert_err!(t.unlock(PASS), FormatError::WrongPassphrase);

    let mut t = kr.clone();
    t.salt = "zz".into();
    assert_err!(t.unlock(PASS), FormatError::BadKeyring { .. });
    let mut t = kr.clone();
    t.nonce = "00".into();
    assert_err!(t.unlock(PASS), FormatError::BadKeyring { .. });
    let mut t = kr.clone();
    t.version = 2;
    assert_err!(t.unlock(PASS), FormatError::UnsupportedVersion { found: 2, .. });
    let mut t = kr.clone();
    t.kdf = "scrypt".into();
    assert_err!(t.unlock(PASS), FormatError::BadKeyring { .. });
    let mut t = kr.clone();
    t.params.memory_kib = u32::MAX;
    assert_err!(t.unlock(PASS), FormatError::BadKeyring { .. });
    assert_err!(Keyring::from_json("{\"version\":1}"), FormatError::BadKeyring { .. });
}

#[test]
fn master_key_debug_is_redacted() {
    let key = new_key();
    assert_eq!(format!("{key:?}"), "MasterKey(**redacted**)");
    assert_eq!(key.key_id_hex().len(), 16);
}

// ---------------------------------------------------------------- key rules

#[test]
fn key_required_for_sealed_objects() {
    let key = new_key();
    let obj = seal_bytes(b"secret", &Codec::default(), Some(&key)).expect("seal");
    assert_err!(open_bytes(&obj, None), FormatError::KeyRequired);
}

#[test]
fn unsealed_object_refused_when_a_key_is_given() {
    let key = new_key();
    let obj = seal_bytes(b"plain", &Codec::default(), None).expect("seal");
    assert_err!(open_bytes(&obj, Some(&key)), FormatError::NotEncrypted);
}

#[test]
fn object_from_a_different_key() {
    let a = new_key();
    let b = new_key();
    let obj = seal_bytes(b"from repo a", &Codec::default(), Some(&a)).expect("seal");
    let e = assert_err!(open_bytes(&obj, Some(&b)), FormatError::WrongKey { .. });
    assert!(e.to_string().contains(&a.key_id_hex()));
}

#[test]
fn chunk_from_another_object_with_the_same_key() {
    let key = new_key();
    let (_, a) = raw_object(3 * C + 5, Some(&key));
    let (_, b) = raw_object(3 * C + 5, Some(&key));
    let h = header_len(true);
    let mut spliced = a.clone();
    spliced[h..h + C + TAG_LEN].copy_from_slice(&b[h..h + C + TAG_LEN]);
    let e = assert_err!(open_bytes(&spliced, Some(&key)), FormatError::Corrupt { .. });
    assert!(e.to_string().contains("chunk 0 failed authentication"), "{e}");
}

// ---------------------------------------------------------------- not ours / newer

#[test]
fn random_bytes_are_not_an_object() {
    let junk = mixed(5000, 99);
    assert_err!(open_bytes(&junk, None), FormatError::NotAnObject { .. });
    assert_err!(
        open_bytes(b"hello world, not ours", None),
        FormatError::NotAnObject { .. }
    );
    assert_err!(open_bytes(b"", None), FormatError::Truncated { .. });
    assert_err!(open_bytes(b"PGVA", None), FormatError::Truncated { .. });
}

#[test]
fn header_fields_from_the_future_or_damaged() {
    let key = new_key();
    for k in [None, Some(&key)] {
        let (_, obj) = raw_object(100, k);
        let mut o = obj.clone();
        o[7] = 3;
        let e = assert_err!(open_bytes(&o, k), FormatError::UnsupportedVersion { found: 3, .. });
        assert!(e.to_string().contains("newer pgvault: format version 3"));
        let mut o = obj.clone();
        o[7] = 0;
        assert_err!(open_bytes(&o, k), FormatError::NotAnObject { .. });
        let mut o = obj.clone();
        o[8] = 9;
        assert_err!(
            open_bytes(&o, k),
            FormatError::UnsupportedFeature {
                field: "compression",
                value: 9
            }
        );
        let mut o = obj.clone();
        o[9] = 2;
        assert_err!(
            open_bytes(&o, k),
            FormatError::UnsupportedFeature {
                field: "sealing",
                value: 2
            }
        );
        let mut o = obj.clone();
        o[11] = 1;
        assert_err!(open_bytes(&o, k), FormatError::Corrupt { .. });
        let mut o = obj.clone();
        o[12] = 0xff; // chunk size out of range
        assert_err!(open_bytes(&o, k), FormatError::Corrupt { .. });
        assert_err!(open_bytes(&obj[..FIXED_LEN - 1], k), FormatError::Truncated { .. });
    }
}

// ---------------------------------------------------------------- flipped bits

#[test]
fn flipped_bit_anywhere_in_the_header() {
    let key = new_key();
    for (sealed, k) in [(false, None), (true, Some(&key))] {
        let (_, obj) = raw_object(3 * C + 5, k);
        for at in 0..header_len(sealed) {
            let r = open_bytes(&flip(&obj, at), k);
            match (at, r) {
                (0..=6, Err(FormatError::NotAnObject { .. })) => {}
                (7, Err(FormatError::UnsupportedVersion { .. })) => {}
                (8, Err(FormatError::UnsupportedFeature { .. })) => {}
                (9, Err(FormatError::UnsupportedFeature { .. })) => {}
                (23..=30, Err(FormatError::WrongKey { .. })) if sealed => {}
                (10.., Err(FormatError::Corrupt { .. })) => {}
                (at, other) => panic!("sealed={sealed} byte {at}: unexpected {other:?}"),
            }
        }
    }
}

#[test]
fn flipped_bit_in_the_wrapped_dek() {
    let key = new_key();
    let (_, obj) = raw_object(100, Some(&key));
    for at in [31, 42, 43, 60, 90] {
        let e = assert_err!(open_bytes(&flip(&obj, at), Some(&key)), FormatError::Corrupt { .. });
        assert!(e.to_string().contains("data key"), "{e}");
    }
}

#[test]
fn flipped_bit_in_first_middle_and_last_chunk() {
    let key = new_key();
    for (sealed, k) in [(false, None), (true, Some(&key))] {
        let h = header_len(sealed);
        let (_, obj) = raw_object(4 * C + 5, k);
        let full = C + TAG_LEN;
        for (chunk, offset) in [(0, 0), (0, full - 1), (2, 500), (4, 2), (4, 5 + TAG_LEN - 1)] {
            let at = h + chunk * full + offset;
            let e = assert_err!(open_bytes(&flip(&obj, at), k), FormatError::Corrupt { .. });
            assert!(
                e.to_string().contains(&format!("chunk {chunk} failed authentication")),
                "sealed={sealed} at={at}: {e}"
            );
        }
    }
}

#[test]
fn flipped_bit_in_a_zstd_object() {
    let key = new_key();
    let data = mixed(20 * C, 1);
    let obj = seal_bytes(&data, &codec(Compression::Zstd, C), Some(&key)).expect("seal");
    for at in [header_len(true), obj.len() / 2, obj.len() - 1] {
        assert_err!(open_bytes(&flip(&obj, at), Some(&key)), FormatError::Corrupt { .. });
    }
}

// ---------------------------------------------------------------- truncation

/// Every possible truncation of an object: at every chunk boundary it is
/// `Truncated`; inside a chunk it is `Truncated` if not even a tag's worth
/// of bytes is left, otherwise the partial chunk fails authentication.
#[test]
fn truncation_at_every_length() {
    let key = new_key();
    for (sealed, k) in [(false, None), (true, Some(&key))] {
        for len in [3 * C + 5, 3 * C] {
            let (_, obj) = raw_object(len, k);
            let h = header_len(sealed);
            let full = C + TAG_LEN;
            for cut in 0..obj.len() {
                let r = open_bytes(&obj[..cut], k);
                let expect_truncated = cut < h || (cut - h) % full < TAG_LEN;
                match r {
                    Err(FormatError::Truncated { .. }) if expect_truncated => {}
                    Err(FormatError::Corrupt { .. }) if !expect_truncated => {}
                    other => panic!("sealed={sealed} len={len} cut={cut}: {other:?}"),
                }
            }
        }
    }
}

#[test]
fn dropped_last_chunk() {
    let key = new_key();
    for k in [None, Some(&key)] {
        let sealed = k.is_some();
        let h = header_len(sealed);
        // Short final chunk dropped.
        let (_, obj) = raw_object(3 * C + 5, k);
        let cut = h + 3 * (C + TAG_LEN);
        let e = assert_err!(open_bytes(&obj[..cut], k), FormatError::Truncated { .. });
        assert!(e.to_string().contains("chunk 2, which is not the final chunk"), "{e}");
        // Full final chunk dropped.
        let (_, obj) = raw_object(3 * C, k);
        let cut = h + 2 * (C + TAG_LEN);
        assert_err!(open_bytes(&obj[..cut], k), FormatError::Truncated { .. });
        // Everything after the header dropped.
        assert_err!(open_bytes(&obj[..h], k), FormatError::Truncated { .. });
    }
}

#[test]
fn unfinished_writer_reads_as_truncated() {
    let key = new_key();
    let mut out = Vec::new();
    {
        let mut w = ObjectWriter::new(&mut out, &codec(Compression::None, C), Some(&key)).expect("w");
        w.write_all(&mixed(5 * C, 2)).expect("write");
        // dropped without finish()
    }
    assert_err!(open_bytes(&out, Some(&key)), FormatError::Truncated { .. });
}

// ---------------------------------------------------------------- reordering, trailing data

#[test]
fn swapped_chunks() {
    let key = new_key();
    for k in [None, Some(&key)] {
        let h = header_len(k.is_some());
        let full = C + TAG_LEN;
        let (_, obj) = raw_object(3 * C + 5, k);
        let mut o = obj.clone();
        let (a, b) = o[h..h + 2 * full].split_at_mut(full);
        a.swap_with_slice(b);
        let e = assert_err!(open_bytes(&o, k), FormatError::Corrupt { .. });
        assert!(e.to_string().contains("chunk 0 failed"), "{e}");
        // Full last chunk swapped with the one before it.
        let (_, obj) = raw_object(3 * C, k);
        let mut o = obj.clone();
        let (a, b) = o[h + full..h + 3 * full].split_at_mut(full);
        a.swap_with_slice(b);
        let e = assert_err!(open_bytes(&o, k), FormatError::Corrupt { .. });
        assert!(e.to_string().contains("chunk 1"), "{e}");
    }
}

#[test]
fn trailing_garbage() {
    let key = new_key();
    for k in [None, Some(&key)] {
        for len in [3 * C + 5, 3 * C, 0] {
            let (_, obj) = raw_object(len, k);
            for extra in [&b"x"[..], &[0u8; TAG_LEN][..], &mixed(C + TAG_LEN, 4)[..]] {
                let mut o = obj.clone();
                o.extend_from_slice(extra);
                assert_err!(open_bytes(&o, k), FormatError::Corrupt { .. });
            }
            // The final chunk duplicated.
            let h = header_len(k.is_some());
            let last_start = h + (len.saturating_sub(1) / C) * (C + TAG_LEN);
            let mut o = obj.clone();
            o.extend_from_slice(&obj[last_start..]);
            assert_err!(open_bytes(&o, k), FormatError::Corrupt { .. });
        }
        let (_, obj) = raw_object(3 * C, k);
        let mut o = obj.clone();
        o.push(0);
        let e = assert_err!(open_bytes(&o, k), FormatError::Corrupt { .. });
        assert!(e.to_string().contains("after the final chunk"), "{e}");
    }
}

// ---------------------------------------------------------------- io plumbing

#[test]
fn streaming_errors_are_invalid_data_and_sticky() {
    let key = new_key();
    let (_, obj) = raw_object(4 * C, Some(&key));
    let bad = flip(&obj, obj.len() - 3);
    let mut r = ObjectReader::new(bad.as_slice(), Some(&key)).expect("header is fine");
    let mut sink = Vec::new();
    let e = r.read_to_end(&mut sink).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    assert!(sink.len() <= 3 * C, "only verified chunks are released");
    assert_err!(Err::<(), _>(into_format_error(e)), FormatError::Corrupt { .. });
    let again = r.read(&mut [0u8; 10]).unwrap_err();
    assert_err!(Err::<(), _>(FormatError::from(again)), FormatError::Corrupt { .. });
}

#[test]
fn underlying_io_errors_keep_their_kind() {
    struct Failing;
    impl Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::new(io::ErrorKind::ConnectionReset, "boom"))
        }
    }
    let (_, obj) = raw_object(2 * C, None);
    let head: &[u8] = &obj[..FIXED_LEN];
    let src = head.chain(Failing);
    let mut r = ObjectReader::new(src, None).expect("header");
    let e = r.read(&mut [0u8; 8]).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
    assert_err!(Err::<(), _>(into_format_error(e)), FormatError::Io(_));
    assert_err!(ObjectReader::new(Failing, None), FormatError::Io(_));
}

#[test]
fn forged_unsealed_object_with_bad_zstd_stream() {
    // Valid framing and integrity tags around bytes that are not zstd: only
    // possible for unkeyed tags, and must still be a clean Corrupt.
    let header = Header {
        version: 1,
        metadata: None,
        compression: Compression::Zstd,
        chunk_size: C as u32,
        nonce_prefix: [7; 7],
        sealed: None,
    };
    let raw = header.encode();
    let ctx = ChunkContext {
        sealer: ChunkSealer::Digest,
        header: raw.clone(),
        bound: false,
        prefix: [7; 7],
        chunk_size: C,
    };
    let mut w = ChunkWriter::new(raw.clone(), ctx, raw.len() as u64);
    w.write_all(&mixed(2 * C, 8)).expect("write");
    let (obj, _) = w.finish().expect("finish");
    let e = assert_err!(open_bytes(&obj, None), FormatError::Corrupt { .. });
    assert!(e.to_string().contains("compressed stream"), "{e}");
}

#[test]
fn invalid_codec_settings() {
    for c in [
        codec(Compression::None, 0),
        codec(Compression::None, 100),
        codec(Compression::Zstd, (MAX_CHUNK_SIZE + 1) as usize),
        Codec {
            zstd_level: 99,
            ..Codec::default()
        },
    ] {
        assert_err!(
            ObjectWriter::new(Vec::new(), &c, None),
            FormatError::InvalidSettings { .. }
        );
    }
    let json = serde_json::to_string(&Codec::default()).expect("json");
    assert!(json.contains("\"zstd\""), "{json}");
}

#[test]
fn temp_file_round_trip() {
    let key = new_key();
    let data = mixed(2_500_000, 12);
    let mut f = tempfile::tempfile().expect("tempfile");
    let w = ObjectWriter::new(&mut f, &Codec::default(), Some(&key)).expect("writer");
    let mut w = w;
    io::copy(&mut data.as_slice(), &mut w).expect("copy");
    let (_, stats) = w.finish().expect("finish");
    use std::io::Seek;
    f.rewind().expect("rewind");
    assert_eq!(f.metadata().expect("meta").len(), stats.stored_bytes);
    let mut back = Vec::new();
    ObjectReader::new(&mut f, Some(&key))
        .expect("reader")
        .read_to_end(&mut back)
        .expect("read");
    assert!(back == data);
}
