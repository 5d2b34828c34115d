//! Tests of copying one object: what the streaming verifier accepts and refuses.

use super::*;
use crate::format::{seal_bytes, Codec};
use crate::wal::page_magic_for_major;

fn piece(bundle_offset: u64, data: &[u8]) -> Piece {
    Piece {
        bundle: 0,
        bundle_offset,
        file_offset: 0,
        len: data.len() as u64,
        sha256: hex::encode(Sha256::digest(data)),
    }
}

#[test]
fn bundle_check_finds_a_bad_piece_and_a_wrong_size() {
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let sealing = ObjectSealing {
        codec: Codec::default(),
        key: None,
        repository_id: "r".into(),
        write_version: 2,
    };
    let sealed = sealing.seal("k", &data, None, None).unwrap();
    let v1 = seal_bytes(&data, &Codec::default(), None).unwrap();
    let verify = |bytes: &[u8], _: Option<()>, check: &Check, loc: &str| verify(bytes, &sealing, "k", check, loc);
    verify(&v1[..], None, &Check::Opens, "x").unwrap();
    // Identity-bound: the same bytes under another key are refused.
    let moved = super::verify(&sealed[..], &sealing, "other", &Check::Opens, "x");
    assert!(
        matches!(
            moved,
            Err(CopyError::Object {
                source: FormatError::NotThisObject { .. },
                ..
            })
        ),
        "{moved:?}"
    );
    let good = Check::Bundle {
        pieces: vec![
            ("a".into(), piece(0, &data[..1000])),
            ("b".into(), piece(5000, &data[5000..90_000])),
        ],
        size: data.len() as u64,
    };
    verify(&sealed[..], None, &good, "x").unwrap();
    let mut bad_piece = piece(5000, &data[5000..90_000]);
    bad_piece.sha256 = hex::encode(Sha256::digest(b"other"));
    let bad = Check::Bundle {
        pieces: vec![("b".into(), bad_piece)],
        size: data.len() as u64,
    };
    assert!(matches!(
        verify(&sealed[..], None, &bad, "x"),
        Err(CopyError::Checksum { .. })
    ));
    let short = Check::Bundle {
        pieces: vec![],
        size: data.len() as u64 + 1,
    };
    assert!(matches!(
        verify(&sealed[..], None, &short, "x"),
        Err(CopyError::Invalid { .. })
    ));
    let mut flipped = sealed.clone();
    let at = flipped.len() / 2;
    flipped[at] ^= 1;
    assert!(matches!(
        verify(&flipped[..], None, &good, "x"),
        Err(CopyError::Object { .. })
    ));
    let truncated = &sealed[..sealed.len() - 20];
    assert!(matches!(
        verify(truncated, None, &Check::Opens, "x"),
        Err(CopyError::Object { .. })
    ));
}

const BLOCK: usize = 8192;
const SEG: u64 = 64 * 1024;
const SYSID: u64 = 7_000_000_000_000_000_001;

fn cluster() -> ClusterIdentity {
    ClusterIdentity {
        system_identifier: SYSID,
        pg_version_num: 150_004,
        wal_segment_size: SEG,
    }
}

fn sealing() -> ObjectSealing {
    ObjectSealing {
        codec: Codec::default(),
        key: None,
        repository_id: "r".into(),
        write_version: 2,
    }
}

/// A segment of `name`'s position whose first page is on `first_tli` and the others on
/// `rest_tli` (pages carry only their headers).
fn segment(name: &WalFileName, first_tli: u32, rest_tli: u32) -> Vec<u8> {
    let magic = page_magic_for_major(15).unwrap_or(0xD110);
    let start = name.start_lsn(SEG).0;
    let mut data = vec![0u8; SEG as usize];
    for (i, page) in data.chunks_mut(BLOCK).enumerate() {
        let tli = if i == 0 { first_tli } else { rest_tli };
        page[0..2].copy_from_slice(&magic.to_le_bytes());
        page[2..4].copy_from_slice(&(if i == 0 { 2u16 } else { 0 }).to_le_bytes());
        page[4..8].copy_from_slice(&tli.to_le_bytes());
        page[8..16].copy_from_slice(&(start + (i * BLOCK) as u64).to_le_bytes());
        if i == 0 {
            page[24..32].copy_from_slice(&SYSID.to_le_bytes());
            page[32..36].copy_from_slice(&(SEG as u32).to_le_bytes());
            page[36..40].copy_from_slice(&(BLOCK as u32).to_le_bytes());
        }
    }
    data
}

fn check_wal(name: &str, data: &[u8]) -> Result<(), CopyError> {
    let name = WalFileName::parse(name).unwrap();
    let sealed = sealing().seal(name.to_string().as_str(), data, None, None).unwrap();
    let check = Check::Segment {
        name,
        cluster: cluster(),
    };
    verify(&sealed[..], &sealing(), &name.to_string(), &check, "x")
}

#[test]
fn segments_are_checked_by_the_wal_module() {
    let on_tli1 = WalFileName::parse("000000010000000000000003").unwrap();
    check_wal("000000010000000000000003", &segment(&on_tli1, 1, 1)).unwrap();
    // Length, system identifier and position are refused.
    let good = segment(&on_tli1, 1, 1);
    let short = check_wal("000000010000000000000003", &good[..good.len() - 1]);
    assert!(matches!(short, Err(CopyError::Invalid { .. })), "{short:?}");
    let mut foreign = good.clone();
    foreign[24] ^= 1;
    let foreign = check_wal("000000010000000000000003", &foreign);
    assert!(matches!(foreign, Err(CopyError::Invalid { .. })), "{foreign:?}");
    let moved = check_wal("000000010000000000000004", &good);
    assert!(matches!(moved, Err(CopyError::Invalid { .. })), "{moved:?}");
    // Pages of a newer timeline than the name's are refused from the header alone.
    let newer = check_wal("000000010000000000000003", &segment(&on_tli1, 2, 2));
    assert!(matches!(newer, Err(CopyError::Invalid { .. })), "{newer:?}");
}

#[test]
fn first_segment_of_a_promoted_timeline_is_told_from_a_renamed_one() {
    let name = WalFileName::parse("000000020000000000000003").unwrap();
    // Starts with the parent's page, then pages of timeline 2: the switch segment.
    check_wal("000000020000000000000003", &segment(&name, 1, 2)).unwrap();
    // Timeline 1's segment under timeline 2's name: every page is timeline 1's.
    let renamed = check_wal("000000020000000000000003", &segment(&name, 1, 1));
    assert!(matches!(renamed, Err(CopyError::Invalid { .. })), "{renamed:?}");
    // A switch segment that is too long is still refused (read bounded, length checked).
    let mut long = segment(&name, 1, 2);
    long.extend_from_slice(&[0u8; 100]);
    let long = check_wal("000000020000000000000003", &long);
    assert!(matches!(long, Err(CopyError::Invalid { .. })), "{long:?}");
}
