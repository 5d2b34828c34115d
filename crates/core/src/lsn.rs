//! Log sequence numbers and timeline ids: the two coordinates of every position in PostgreSQL's
//! write-ahead log. Kept in one small module because the replication client, the WAL archive,
//! the catalog and restore targets all speak in them and must agree on their text form
//! (`16/B374D848`, upper-case hex, as PostgreSQL prints them).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A position in the WAL stream (PostgreSQL's `XLogRecPtr`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

/// A WAL timeline id (PostgreSQL's `TimeLineID`).
pub type TimelineId = u32;

/// Text that is not an LSN of the form `X/X` with hexadecimal halves.
#[derive(Debug, thiserror::Error)]
#[error("'{0}' is not a log sequence number (expected the form 16/B374D848)")]
pub struct ParseLsnError(pub String);

impl Lsn {
    pub const INVALID: Lsn = Lsn(0);

    /// The segment number holding this position, for a given segment size in bytes.
    pub fn segment(self, segment_size: u64) -> u64 {
        self.0 / segment_size
    }

    /// Offset of this position inside its segment.
    pub fn segment_offset(self, segment_size: u64) -> u64 {
        self.0 % segment_size
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl FromStr for Lsn {
    type Err = ParseLsnError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseLsnError(s.to_string());
        let (hi, lo) = s.trim().split_once('/').ok_or_else(err)?;
        if hi.is_empty() || lo.is_empty() || hi.len() > 8 || lo.len() > 8 {
            return Err(err());
        }
        let hi = u32::from_str_radix(hi, 16).map_err(|_| err())?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| err())?;
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

impl Serialize for Lsn {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Lsn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_postgres_text_form() {
        for text in ["0/0", "0/16B3748", "16/B374D848", "FFFFFFFF/FFFFFFFF"] {
            let lsn: Lsn = text.parse().unwrap();
            assert_eq!(lsn.to_string(), text);
        }
        assert_eq!("16/B374D848".parse::<Lsn>().unwrap().0, 0x16_B374_D848);
    }

    #[test]
    fn rejects_malformed_text() {
        for text in ["", "16", "/1", "1/", "G/1", "1/2/3", "123456789/0"] {
            assert!(text.parse::<Lsn>().is_err(), "{text} should not parse");
        }
    }

    #[test]
    fn segment_arithmetic() {
        let seg = 16 * 1024 * 1024;
        let lsn: Lsn = "1/2000028".parse().unwrap();
        assert_eq!(lsn.segment(seg), 0x102);
        assert_eq!(lsn.segment_offset(seg), 0x28);
    }
}
