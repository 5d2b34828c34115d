//! Property tests for decoding what a server sends: random and mutated backend message frames,
//! BASE_BACKUP CopyData payloads and result rows. None may panic, allocate what a length field
//! claims beyond PostgreSQL's own limit, or turn a malformed message into a value. Fixed seed and
//! bounded cases, so a run is repeatable and takes seconds.

use bytes::{BufMut, Bytes, BytesMut};
use postgres_protocol::message::backend::Message;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};

use super::connection::tests::{data_row, frame};
use super::connection::{column_names, decode_data_row, decode_next, server_error};
use super::replication::{decode_copy_payload, parse_identify_system, parse_position, parse_tablespace};
use super::{BackupEvent, ProtocolError};

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        rng_seed: RngSeed::Fixed(0x7067_7661_756c_7422),
        failure_persistence: None,
        ..Config::default()
    })
}

/// Decodes every message in `buf` the way the connection does, exercising the body decoders.
/// Returns how many messages were decoded, or the first error.
fn decode_all(mut buf: BytesMut) -> Result<usize, ProtocolError> {
    let mut n = 0;
    while let Some(message) = decode_next(&mut buf, "fuzz")? {
        // `Message::parse` reserves what a length field claims: that must stay bounded.
        assert!(
            buf.capacity() <= (1 << 30) + (2 << 20) + 64 * 1024,
            "capacity {}",
            buf.capacity()
        );
        n += 1;
        match message {
            Message::DataRow(body) => {
                let _ = decode_data_row(&body);
            }
            Message::RowDescription(body) => {
                let _ = column_names(&body);
            }
            Message::ErrorResponse(body) => {
                let _ = server_error(body.fields(), None);
            }
            Message::NoticeResponse(body) => {
                let _ = server_error(body.fields(), None);
            }
            Message::CopyData(body) => {
                let payload = Bytes::copy_from_slice(body.data());
                let _ = decode_copy_payload(payload.clone(), false, false);
                let _ = decode_copy_payload(payload, true, true);
            }
            _ => {}
        }
    }
    Ok(n)
}

/// A few valid frames of the kinds pgvault decodes.
fn valid_stream() -> BytesMut {
    let mut b = BytesMut::new();
    let mut rd = BytesMut::new();
    rd.put_u16(2);
    for name in [&b"systemid"[..], b"timeline"] {
        rd.put_slice(name);
        rd.put_u8(0);
        rd.put_u32(0);
        rd.put_i16(0);
        rd.put_u32(25);
        rd.put_i16(-1);
        rd.put_i32(-1);
        rd.put_i16(0);
    }
    b.extend_from_slice(&frame(b'T', &rd));
    b.extend_from_slice(&data_row(&[
        Some(b"7212345678901234567"),
        Some(b"1"),
        Some(b"0/3000028"),
        None,
    ]));
    b.extend_from_slice(&frame(b'd', b"nbase.tar\0\0"));
    b.extend_from_slice(&frame(b'd', b"dsome tar bytes"));
    b.extend_from_slice(&frame(b'd', b"p\0\0\0\0\0\0\x10\0"));
    b.extend_from_slice(&frame(b'E', b"SERROR\0VERROR\0C42601\0Msyntax error\0\0"));
    b.extend_from_slice(&frame(b'Z', b"I"));
    b
}

#[test]
fn valid_stream_decodes() {
    assert_eq!(decode_all(valid_stream()).unwrap(), 7);
}

#[test]
fn random_bytes_never_panic() {
    runner(512)
        .run(&prop::collection::vec(any::<u8>(), 0..2048), |bytes| {
            let _ = decode_all(BytesMut::from(&bytes[..]));
            Ok(())
        })
        .unwrap();
}

#[test]
fn mutated_frames_never_panic() {
    let valid = valid_stream();
    let strategy = prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8);
    runner(512)
        .run(&strategy, |edits| {
            let mut b = valid.clone();
            for (at, byte) in edits {
                let i = at.index(b.len());
                b[i] = byte;
            }
            let _ = decode_all(b);
            Ok(())
        })
        .unwrap();
}

#[test]
fn huge_length_claims_are_refused_without_allocating() {
    for len in [u32::MAX, (1 << 31) + 7, (1 << 30) + (2 << 20)] {
        for tag in [b'd', b'D', b'E', b'T', b'?'] {
            let mut b = BytesMut::new();
            b.put_u8(tag);
            b.put_u32(len);
            b.put_slice(b"abc");
            let Err(err) = decode_next(&mut b, "fuzz") else {
                panic!("a {len}-byte claim was not refused");
            };
            assert!(err.to_string().contains("more than PostgreSQL ever sends"), "{err}");
            assert!(b.capacity() < 1 << 20, "reserved {}", b.capacity());
        }
    }
}

#[test]
fn random_copy_payloads_never_panic() {
    let strategy = (prop::collection::vec(any::<u8>(), 0..64), any::<bool>(), any::<bool>());
    runner(1024)
        .run(&strategy, |(bytes, in_manifest, seen_archive)| {
            let payload = Bytes::from(bytes.clone());
            if let Ok(ev) = decode_copy_payload(payload, in_manifest, seen_archive) {
                // Whatever was accepted is what the bytes say.
                match ev {
                    BackupEvent::NewArchive { .. } => prop_assert_eq!(bytes[0], b'n'),
                    BackupEvent::ArchiveData(d) | BackupEvent::ManifestData(d) => {
                        prop_assert_eq!(bytes[0], b'd');
                        prop_assert_eq!(&d[..], &bytes[1..]);
                    }
                    BackupEvent::Progress(_) => prop_assert!(bytes[0] == b'p' && bytes.len() >= 9),
                    BackupEvent::ManifestStart => prop_assert_eq!(bytes[0], b'm'),
                }
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn random_rows_never_panic() {
    let cell = prop::option::of(prop_oneof![
        "[0-9A-F/]{0,20}",
        "[ -~]{0,12}",
        Just("18446744073709551616".to_string()),
        Just("FFFFFFFF/FFFFFFFF".to_string()),
    ]);
    runner(1024)
        .run(&prop::collection::vec(cell, 0..6), |row| {
            let _ = parse_identify_system(&row);
            let _ = parse_tablespace(&row);
            let _ = parse_position(&row, "fuzz");
            Ok(())
        })
        .unwrap();
}
