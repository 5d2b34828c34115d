//! The one bundle verifier: walking a bundle's plaintext piece by piece against its catalog.
//!
//! Restore (which writes each piece into its file) and copy (which only checks) read bundles the
//! same way, so the rules live once: pieces in bundle order, never overlapping, each with the
//! catalog's SHA-256, the object read to its end so its final chunk authenticates, and the
//! plaintext size the catalog records.

use sha2::{Digest, Sha256};

use crate::repository::catalog::Piece;

/// Why [`walk_bundle`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum WalkError<E> {
    /// Reading the bundle failed (a format error travels inside, see
    /// [`crate::format::into_format_error`]; a storage error names the store and key).
    #[error("{0}")]
    Read(std::io::Error),
    /// The bundle ended at plaintext byte `at`, before the catalog's pieces did.
    #[error("the bundle ends at byte {at}, the catalog expects more")]
    Short { at: u64 },
    /// Two pieces of the catalog overlap (pieces must be sorted by `bundle_offset`).
    #[error("the catalog's pieces overlap at bundle offset {offset}")]
    Overlap { offset: u64 },
    /// Piece `index`'s bytes do not have the catalog's SHA-256.
    #[error("checksum mismatch at bundle offset {offset} (expected {expected}, got {found})")]
    Checksum {
        index: usize,
        offset: u64,
        expected: String,
        found: String,
    },
    /// The bundle's plaintext is not the size the catalog records.
    #[error("the bundle holds {found} bytes, the catalog says {expected}")]
    Size { found: u64, expected: u64 },
    /// The caller's sink failed.
    #[error("{0}")]
    Sink(E),
}

/// The one bundle verifier: walks a bundle's plaintext `obj` (an opened object) through
/// `pieces` (sorted by `bundle_offset`), hands each piece's bytes to `sink(index, piece,
/// offset within the piece, bytes)` and checks each piece's SHA-256, then reads to the end (so
/// the final chunk authenticates) and, with `expected_size`, checks the plaintext size.
/// Restore writes the pieces to files; copy only checks.
pub fn walk_bundle<'a, R, E, I, F>(
    obj: &mut R,
    pieces: I,
    expected_size: Option<u64>,
    mut sink: F,
) -> Result<u64, WalkError<E>>
where
    R: std::io::Read,
    I: IntoIterator<Item = &'a Piece>,
    F: FnMut(usize, &Piece, u64, &[u8]) -> Result<(), E>,
{
    let mut pos = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    for (index, piece) in pieces.into_iter().enumerate() {
        if piece.bundle_offset < pos {
            return Err(WalkError::Overlap {
                offset: piece.bundle_offset,
            });
        }
        let skip = piece.bundle_offset - pos;
        let n = std::io::copy(
            &mut <&mut R as std::io::Read>::take(&mut *obj, skip),
            &mut std::io::sink(),
        )
        .map_err(WalkError::Read)?;
        pos += n;
        if n < skip {
            return Err(WalkError::Short { at: pos });
        }
        let mut hash = Sha256::new();
        let mut done = 0u64;
        while done < piece.len {
            let want = (buf.len() as u64).min(piece.len - done) as usize;
            let n = obj.read(&mut buf[..want]).map_err(WalkError::Read)?;
            if n == 0 {
                return Err(WalkError::Short { at: pos });
            }
            hash.update(&buf[..n]);
            sink(index, piece, done, &buf[..n]).map_err(WalkError::Sink)?;
            done += n as u64;
            pos += n as u64;
        }
        let found = hex::encode(hash.finalize());
        if found != piece.sha256 {
            return Err(WalkError::Checksum {
                index,
                offset: piece.bundle_offset,
                expected: piece.sha256.clone(),
                found,
            });
        }
    }
    pos += std::io::copy(obj, &mut std::io::sink()).map_err(WalkError::Read)?;
    match expected_size {
        Some(expected) if expected != pos => Err(WalkError::Size { found: pos, expected }),
        _ => Ok(pos),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn walk_hands_over_pieces_and_checks_them() {
        let data: Vec<u8> = (0..600_000u32).map(|i| (i % 249) as u8).collect();
        let pieces = [piece(10, &data[10..300_000]), piece(400_000, &data[400_000..600_000])];
        let mut got: Vec<Vec<u8>> = vec![Vec::new(), Vec::new()];
        let n = walk_bundle::<_, (), _, _>(&mut &data[..], &pieces, Some(data.len() as u64), |i, _, off, b| {
            assert_eq!(off as usize, got[i].len());
            got[i].extend_from_slice(b);
            Ok(())
        })
        .expect("walk");
        assert_eq!(n, data.len() as u64);
        assert_eq!(got[0], &data[10..300_000]);
        assert_eq!(got[1], &data[400_000..]);

        let nop = |_: usize, _: &Piece, _: u64, _: &[u8]| Ok::<(), ()>(());
        let mut bad = pieces.clone();
        bad[1].sha256 = "00".into();
        assert!(matches!(
            walk_bundle(&mut &data[..], &bad, None, nop),
            Err(WalkError::Checksum { index: 1, .. })
        ));
        assert!(matches!(
            walk_bundle(&mut &data[..500_000], &pieces, None, nop),
            Err(WalkError::Short { .. })
        ));
        assert!(matches!(
            walk_bundle(&mut &data[..], &pieces, Some(1), nop),
            Err(WalkError::Size { .. })
        ));
        let overlap = [pieces[1].clone(), pieces[0].clone()];
        assert!(matches!(
            walk_bundle(&mut &data[..], &overlap, None, nop),
            Err(WalkError::Overlap { .. })
        ));
        let failing = |_: usize, _: &Piece, _: u64, _: &[u8]| Err::<(), &str>("disk full");
        assert!(matches!(
            walk_bundle(&mut &data[..], &pieces, None, failing),
            Err(WalkError::Sink("disk full"))
        ));
    }
}
