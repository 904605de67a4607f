//! WOFF 1.0 → the TrueType/OpenType file it wraps. Web-font packages (npm's `@fontsource/*`,
//! a hundred handwriting families) ship WOFF only, and ab_glyph reads sfnt. A WOFF file is the
//! sfnt's tables, each zlib-compressed or stored, behind a directory: unwrapping is inflating each
//! table and laying the tables out again. WOFF 2.0 (Brotli, transformed glyph tables) is not read.

use std::io::Read;

use flate2::read::ZlibDecoder;

/// The first four bytes of a WOFF 1.0 file.
pub const SIGNATURE: &[u8; 4] = b"wOFF";

const HEADER_LEN: usize = 44;
const WOFF_ENTRY_LEN: usize = 20;
const SFNT_HEADER_LEN: usize = 12;
const SFNT_ENTRY_LEN: usize = 16;
/// No handwriting font comes near this; a directory claiming more is damaged or hostile, and
/// inflating it would only exhaust memory.
const MAX_SFNT_BYTES: u64 = 64 << 20;

/// Why a WOFF file could not be unwrapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WoffError {
    #[error("not a WOFF 1.0 file (it starts {found:?}, not \"wOFF\")")]
    Signature { found: String },
    #[error("truncated: {part} ends at byte {end}, past the file's {len}")]
    Truncated {
        part: String,
        end: usize,
        len: usize,
    },
    #[error("table `{tag}`: {reason}")]
    Table { tag: String, reason: String },
    #[error(
        "its tables add up to {bytes} bytes unpacked, more than the {MAX_SFNT_BYTES} a font may have"
    )]
    TooLarge { bytes: u64 },
}

struct Table {
    tag: [u8; 4],
    checksum: u32,
    data: Vec<u8>,
}

/// The sfnt (`.ttf`/`.otf` bytes) inside a WOFF 1.0 file: the same flavour, tables in the
/// directory's order, each at a 4-byte boundary with its original checksum.
pub fn to_sfnt(woff: &[u8]) -> Result<Vec<u8>, WoffError> {
    let header = slice(woff, 0, HEADER_LEN, || "the header".into())?;
    if &header[..4] != SIGNATURE {
        return Err(WoffError::Signature {
            found: String::from_utf8_lossy(&header[..4]).into_owned(),
        });
    }
    let flavor = &header[4..8];
    let table_count = usize::from(u16::from_be_bytes([header[12], header[13]]));
    let directory = slice(woff, HEADER_LEN, table_count * WOFF_ENTRY_LEN, || {
        format!("the directory of {table_count} tables")
    })?;
    let claimed: u64 = directory
        .chunks_exact(WOFF_ENTRY_LEN)
        .map(|entry| u64::from(be_u32(entry, 12)))
        .sum();
    if claimed > MAX_SFNT_BYTES {
        return Err(WoffError::TooLarge { bytes: claimed });
    }
    let tables = directory
        .chunks_exact(WOFF_ENTRY_LEN)
        .map(|entry| read_table(woff, entry))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(write_sfnt(flavor, &tables))
}

fn read_table(woff: &[u8], entry: &[u8]) -> Result<Table, WoffError> {
    let tag: [u8; 4] = entry[..4]
        .try_into()
        .expect("a directory entry is 20 bytes");
    let name = String::from_utf8_lossy(&tag).into_owned();
    let offset = be_u32(entry, 4) as usize;
    let stored_len = be_u32(entry, 8) as usize;
    let unpacked_len = be_u32(entry, 12) as usize;
    let stored = slice(woff, offset, stored_len, || format!("table `{name}`"))?;
    let table_error = |reason: String| WoffError::Table {
        tag: name.clone(),
        reason,
    };
    let data = match stored_len.cmp(&unpacked_len) {
        std::cmp::Ordering::Equal => stored.to_vec(),
        std::cmp::Ordering::Less => {
            let mut data = Vec::with_capacity(unpacked_len);
            // One byte past the promised length tells an over-long stream from an exact one.
            ZlibDecoder::new(stored)
                .take(unpacked_len as u64 + 1)
                .read_to_end(&mut data)
                .map_err(|e| table_error(format!("does not inflate: {e}")))?;
            if data.len() != unpacked_len {
                return Err(table_error(format!(
                    "inflates to {} bytes, the directory says {unpacked_len}",
                    data.len()
                )));
            }
            data
        }
        std::cmp::Ordering::Greater => {
            return Err(table_error(format!(
                "stored in {stored_len} bytes, more than its {unpacked_len} unpacked"
            )));
        }
    };
    Ok(Table {
        tag,
        checksum: be_u32(entry, 16),
        data,
    })
}

fn write_sfnt(flavor: &[u8], tables: &[Table]) -> Vec<u8> {
    let count = tables.len();
    // The binary-search fields of the offset table: the largest power of two ≤ count.
    let entry_selector = count.checked_ilog2().unwrap_or(0);
    let search_range = if count == 0 {
        0
    } else {
        SFNT_ENTRY_LEN << entry_selector
    };
    let range_shift = count * SFNT_ENTRY_LEN - search_range;
    let mut out = Vec::new();
    out.extend_from_slice(flavor);
    for field in [count, search_range, entry_selector as usize, range_shift] {
        out.extend_from_slice(&(field as u16).to_be_bytes());
    }
    let mut offset = SFNT_HEADER_LEN + count * SFNT_ENTRY_LEN;
    for table in tables {
        out.extend_from_slice(&table.tag);
        out.extend_from_slice(&table.checksum.to_be_bytes());
        out.extend_from_slice(&(offset as u32).to_be_bytes());
        out.extend_from_slice(&(table.data.len() as u32).to_be_bytes());
        offset += table.data.len().next_multiple_of(4);
    }
    for table in tables {
        out.extend_from_slice(&table.data);
        out.resize(out.len().next_multiple_of(4), 0);
    }
    out
}

fn slice(
    bytes: &[u8],
    start: usize,
    len: usize,
    part: impl FnOnce() -> String,
) -> Result<&[u8], WoffError> {
    let end = start.saturating_add(len);
    bytes.get(start..end).ok_or_else(|| WoffError::Truncated {
        part: part(),
        end,
        len: bytes.len(),
    })
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(bytes[at..at + 4].try_into().expect("four bytes"))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::Compression;
    use flate2::write::ZlibEncoder;

    use super::*;

    /// A tiny sfnt laid out as `write_sfnt` lays one out (as font tools do): one table that
    /// compresses well, one that does not, one whose length is not a multiple of 4.
    fn sample_tables() -> Vec<Table> {
        vec![
            Table {
                tag: *b"cmap",
                checksum: 0x1234_5678,
                data: b"abcd".repeat(50),
            },
            Table {
                tag: *b"head",
                checksum: 0x9abc_def0,
                data: (0u8..54).map(|i| i.wrapping_mul(97)).collect(),
            },
            Table {
                tag: *b"name",
                checksum: 7,
                data: vec![3, 1, 4],
            },
        ]
    }

    /// The WOFF a font tool would make of `tables`: compressed where that is smaller.
    fn woff_of(flavor: &[u8; 4], tables: &[Table]) -> Vec<u8> {
        let mut directory = Vec::new();
        let mut blobs = Vec::new();
        let mut offset = HEADER_LEN + tables.len() * WOFF_ENTRY_LEN;
        for table in tables {
            let mut encoder = ZlibEncoder::new(Vec::new(), Compression::best());
            encoder.write_all(&table.data).unwrap();
            let packed = encoder.finish().unwrap();
            let stored = if packed.len() < table.data.len() {
                packed
            } else {
                table.data.clone()
            };
            directory.extend_from_slice(&table.tag);
            for field in [offset, stored.len(), table.data.len()] {
                directory.extend_from_slice(&(field as u32).to_be_bytes());
            }
            directory.extend_from_slice(&table.checksum.to_be_bytes());
            offset += stored.len().next_multiple_of(4);
            blobs.push(stored);
        }
        let mut out = Vec::new();
        out.extend_from_slice(SIGNATURE);
        out.extend_from_slice(flavor);
        out.extend_from_slice(&[0; 4]); // length: not needed to unwrap
        out.extend_from_slice(&(tables.len() as u16).to_be_bytes());
        out.resize(HEADER_LEN, 0);
        out.extend_from_slice(&directory);
        for blob in blobs {
            out.extend_from_slice(&blob);
            out.resize(out.len().next_multiple_of(4), 0);
        }
        out
    }

    #[test]
    fn unwrapping_gives_back_the_sfnt_byte_for_byte() {
        let tables = sample_tables();
        let woff = woff_of(&[0, 1, 0, 0], &tables);
        let sfnt = write_sfnt(&[0, 1, 0, 0], &tables);
        assert!(woff.len() < sfnt.len(), "the repeated table compressed");
        assert_eq!(to_sfnt(&woff).unwrap(), sfnt);
        // The offset table: flavour, 3 tables, searchRange 32, entrySelector 1, rangeShift 16.
        assert_eq!(&sfnt[..12], &[0, 1, 0, 0, 0, 3, 0, 32, 0, 1, 0, 16]);
        // The third record's table starts after 200 + 56 (54 padded) bytes of data.
        let third = SFNT_HEADER_LEN + 2 * SFNT_ENTRY_LEN;
        assert_eq!(&sfnt[third..third + 4], b"name");
        assert_eq!(be_u32(&sfnt, third + 8), (12 + 3 * 16 + 200 + 56) as u32);
        assert_eq!(be_u32(&sfnt, third + 12), 3);
    }

    #[test]
    fn damaged_files_are_refused_with_the_reason() {
        let woff = woff_of(b"OTTO", &sample_tables());
        assert!(matches!(
            to_sfnt(b"\0\x01\0\0 a TrueType file, not WOFF......................."),
            Err(WoffError::Signature { .. })
        ));
        let truncated = to_sfnt(&woff[..woff.len() - 60]).unwrap_err();
        assert!(
            truncated.to_string().contains("table `head`")
                || truncated.to_string().contains("table `name`"),
            "{truncated}"
        );
        let mut lying = woff.clone();
        // The first table's unpacked length, one byte more than it inflates to.
        lying[HEADER_LEN + 15] += 1;
        assert!(
            to_sfnt(&lying)
                .unwrap_err()
                .to_string()
                .contains("table `cmap`: inflates to 200 bytes, the directory says 201"),
        );
        let mut huge = woff;
        huge[HEADER_LEN + 12..HEADER_LEN + 16].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(to_sfnt(&huge), Err(WoffError::TooLarge { .. })));
    }
}
