//! The block-header walk of a WAL record (`DecodeXLogRecord`), reduced to what the segment
//! summary needs: where the main data is. Kept apart from the page walk in `records` because it
//! is the part that follows PostgreSQL's record format version by version.

use super::records::RECORD_HEADER;

fn u16_at(d: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(d.get(o..o + 2)?.try_into().ok()?))
}
fn u32_at(d: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(d.get(o..o + 4)?.try_into().ok()?))
}

const XLR_MAX_BLOCK_ID: u8 = 32;
const XLR_BLOCK_ID_DATA_SHORT: u8 = 255;
const XLR_BLOCK_ID_DATA_LONG: u8 = 254;
const XLR_BLOCK_ID_ORIGIN: u8 = 253;
const XLR_BLOCK_ID_TOPLEVEL_XID: u8 = 252;
const BKPBLOCK_HAS_IMAGE: u8 = 0x10;
const BKPBLOCK_SAME_REL: u8 = 0x80;
const BKPIMAGE_HAS_HOLE: u8 = 0x01;

/// Whether a block image carries a compression header (`BKPIMAGE_COMPRESSED`): the flag bits
/// moved in PostgreSQL 15 (PGLZ/LZ4/ZSTD), before that one `BKPIMAGE_IS_COMPRESSED` bit.
fn image_compressed(bimg_info: u8, major: u32) -> bool {
    let mask = if major >= 15 || major == 0 {
        0x04 | 0x08 | 0x10
    } else {
        0x02
    };
    bimg_info & mask != 0
}

/// The record's main data (last in the record), found by walking the block headers as
/// `DecodeXLogRecord` does; `None` if the headers do not add up to the record length.
pub(super) fn main_data(rec: &[u8], major: u32) -> Option<&[u8]> {
    let body = rec.get(RECORD_HEADER..)?;
    let mut i = 0usize;
    let mut data_total = 0usize;
    let mut main_len = 0usize;
    let mut last_block: Option<u8> = None;
    let mut have_rel = false;
    while body.len() - i > data_total {
        let id = *body.get(i)?;
        i += 1;
        match id {
            XLR_BLOCK_ID_DATA_SHORT => {
                main_len = usize::from(*body.get(i)?);
                i += 1;
                data_total += main_len;
                break;
            }
            XLR_BLOCK_ID_DATA_LONG => {
                main_len = u32_at(body, i)? as usize;
                i += 4;
                data_total = data_total.checked_add(main_len)?;
                break;
            }
            XLR_BLOCK_ID_ORIGIN => i += 2,
            XLR_BLOCK_ID_TOPLEVEL_XID => i += 4,
            0..=XLR_MAX_BLOCK_ID => {
                if last_block.is_some_and(|b| id <= b) {
                    return None;
                }
                last_block = Some(id);
                let fork_flags = *body.get(i)?;
                data_total += usize::from(u16_at(body, i + 1)?);
                i += 3;
                if fork_flags & BKPBLOCK_HAS_IMAGE != 0 {
                    let bimg_len = usize::from(u16_at(body, i)?);
                    let bimg_info = *body.get(i + 4)?;
                    i += 5;
                    if image_compressed(bimg_info, major) && bimg_info & BKPIMAGE_HAS_HOLE != 0 {
                        i += 2;
                    }
                    data_total += bimg_len;
                }
                if fork_flags & BKPBLOCK_SAME_REL == 0 {
                    i += 12;
                    have_rel = true;
                } else if !have_rel {
                    return None;
                }
                i += 4;
            }
            _ => return None,
        }
        if i > body.len() {
            return None;
        }
    }
    if i > body.len() || body.len() - i != data_total {
        return None;
    }
    body.get(body.len() - main_len..)
}
