//! Directory indexes: $INDEX_ROOT values, INDX records of $INDEX_ALLOCATION and their entries.

use fscore::le;

use crate::attr::FileName;
use crate::record::{Corrupt, apply_fixups};

fn corrupt(offset: usize, detail: impl Into<String>) -> Corrupt {
    Corrupt {
        offset,
        detail: detail.into(),
    }
}

/// Index entry flag: the entry points to a sub-node (its VCN is the last 8 bytes).
pub const INDEX_ENTRY_NODE: u16 = 0x01;
/// Index entry flag: the last entry of a node (no key).
pub const INDEX_ENTRY_END: u16 = 0x02;

/// One entry of a directory index node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    /// 0x00: MFT reference of the file (48-bit record number, 16-bit sequence).
    pub file_reference: u64,
    /// 0x10: the key, a $FILE_NAME; `None` for the end entry.
    pub key: Option<FileName>,
    /// VCN of the sub-node holding the keys sorting before this one.
    pub sub_node: Option<u64>,
}

impl IndexEntry {
    /// MFT record number of the file.
    pub fn record(&self) -> u64 {
        self.file_reference & 0x0000_FFFF_FFFF_FFFF
    }
}

/// The $INDEX_ROOT value of a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexRoot {
    /// 0x00: indexed attribute type (0x30 for $FILE_NAME indexes).
    pub indexed_type: u32,
    /// 0x08: size of an index record of the $INDEX_ALLOCATION.
    pub index_block_size: u32,
    /// The entries of the root node.
    pub entries: Vec<IndexEntry>,
}

/// Decodes an $INDEX_ROOT value (0x00 type, 0x04 collation rule, 0x08 block size, 0x0C clusters
/// per block, 0x10 the index node header).
pub fn parse_index_root(v: &[u8]) -> Result<IndexRoot, Corrupt> {
    if v.len() < 0x20 {
        return Err(corrupt(0, format!("$INDEX_ROOT of {} bytes", v.len())));
    }
    let indexed_type = le::u32_at(v, 0).unwrap_or(0);
    let index_block_size = le::u32_at(v, 8).unwrap_or(0);
    let entries = parse_node(v, 0x10).map_err(|c| corrupt(0x10 + c.offset, c.detail))?;
    Ok(IndexRoot {
        indexed_type,
        index_block_size,
        entries,
    })
}

/// Decodes an INDX record (fixups not yet applied) of `buf.len()` bytes, expected at VCN `vcn`.
pub fn parse_index_record(buf: &mut [u8], vcn: u64) -> Result<Vec<IndexEntry>, Corrupt> {
    if buf.get(0..4) != Some(b"INDX") {
        return Err(corrupt(0, "bad magic, expected \"INDX\""));
    }
    apply_fixups(buf)?;
    let own_vcn = le::u64_at(buf, 0x10).unwrap_or(u64::MAX);
    if own_vcn != vcn {
        return Err(corrupt(
            0x10,
            format!("index record says it is VCN {own_vcn} but was reached as VCN {vcn}"),
        ));
    }
    parse_node(buf, 0x18).map_err(|c| corrupt(0x18 + c.offset, c.detail))
}

/// Decodes the entries of an index node whose header (0x00 entries offset, 0x04 index length,
/// 0x08 allocated size, 0x0C flags) starts at `hdr` of `b`. Offsets are relative to the header.
fn parse_node(b: &[u8], hdr: usize) -> Result<Vec<IndexEntry>, Corrupt> {
    let node = &b[hdr.min(b.len())..];
    let entries_offset = le::u32_at(node, 0).ok_or_else(|| corrupt(0, "node header truncated"))?;
    let index_length = le::u32_at(node, 4).ok_or_else(|| corrupt(4, "node header truncated"))?;
    let (start, end) = (entries_offset as usize, index_length as usize);
    if start < 0x10 || end > node.len() || start > end {
        return Err(corrupt(
            0,
            format!(
                "entries {start}..{end} do not fit the {} bytes of the node",
                node.len()
            ),
        ));
    }
    let mut out = Vec::new();
    let mut off = start;
    loop {
        if off + 0x10 > end {
            return Err(corrupt(off, "index node ends without an end entry"));
        }
        let e = &node[off..end];
        let length = le::u16_at(e, 8).unwrap_or(0) as usize;
        let key_length = le::u16_at(e, 0x0A).unwrap_or(0) as usize;
        let flags = le::u16_at(e, 0x0C).unwrap_or(0);
        if length < 0x10 || !length.is_multiple_of(8) || length > e.len() {
            return Err(corrupt(
                off + 8,
                format!("index entry length {length} is invalid"),
            ));
        }
        let sub_node = if flags & INDEX_ENTRY_NODE != 0 {
            if length < 0x18 {
                return Err(corrupt(off + 8, "entry too short for a sub-node VCN"));
            }
            Some(le::u64_at(e, length - 8).unwrap_or(0))
        } else {
            None
        };
        if flags & INDEX_ENTRY_END != 0 {
            out.push(IndexEntry {
                file_reference: 0,
                key: None,
                sub_node,
            });
            break;
        }
        let key_end = 0x10 + key_length;
        let limit = if sub_node.is_some() {
            length - 8
        } else {
            length
        };
        if key_end > limit {
            return Err(corrupt(
                off + 0x0A,
                format!("key of {key_length} bytes exceeds the entry of {length}"),
            ));
        }
        let key = FileName::parse(&e[0x10..key_end])
            .map_err(|c| corrupt(off + 0x10 + c.offset, c.detail))?;
        out.push(IndexEntry {
            file_reference: le::u64_at(e, 0).unwrap_or(0),
            key: Some(key),
            sub_node,
        });
        off += length;
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds an index entry with a $FILE_NAME key for `name` pointing at `record`.
    pub fn entry(record: u64, name: &str, dir: bool, sub: Option<u64>) -> Vec<u8> {
        let units: Vec<u16> = name.encode_utf16().collect();
        let key_len = 0x42 + units.len() * 2;
        let mut len = (0x10 + key_len).div_ceil(8) * 8;
        if sub.is_some() {
            len += 8;
        }
        let mut e = vec![0u8; len];
        e[0..8].copy_from_slice(&(record | (1 << 48)).to_le_bytes());
        e[8..10].copy_from_slice(&(len as u16).to_le_bytes());
        e[10..12].copy_from_slice(&(key_len as u16).to_le_bytes());
        let mut flags = 0u16;
        if let Some(v) = sub {
            flags |= INDEX_ENTRY_NODE;
            e[len - 8..].copy_from_slice(&v.to_le_bytes());
        }
        e[12..14].copy_from_slice(&flags.to_le_bytes());
        let k = &mut e[0x10..];
        k[0..8].copy_from_slice(&5u64.to_le_bytes());
        if dir {
            k[0x38..0x3C].copy_from_slice(&0x1000_0000u32.to_le_bytes());
        }
        k[0x40] = units.len() as u8;
        k[0x41] = 1;
        for (i, u) in units.iter().enumerate() {
            k[0x42 + 2 * i..0x44 + 2 * i].copy_from_slice(&u.to_le_bytes());
        }
        e
    }

    /// An end entry, optionally with a sub-node.
    pub fn end_entry(sub: Option<u64>) -> Vec<u8> {
        let len = if sub.is_some() { 0x18 } else { 0x10 };
        let mut e = vec![0u8; len];
        e[8..10].copy_from_slice(&(len as u16).to_le_bytes());
        let mut flags = INDEX_ENTRY_END;
        if let Some(v) = sub {
            flags |= INDEX_ENTRY_NODE;
            e[0x10..0x18].copy_from_slice(&v.to_le_bytes());
        }
        e[12..14].copy_from_slice(&flags.to_le_bytes());
        e
    }

    /// An $INDEX_ROOT value holding `entries`.
    pub fn root(entries: &[Vec<u8>], block_size: u32) -> Vec<u8> {
        let body: Vec<u8> = entries.concat();
        let mut v = vec![0u8; 0x20];
        v[0..4].copy_from_slice(&0x30u32.to_le_bytes());
        v[4..8].copy_from_slice(&1u32.to_le_bytes());
        v[8..12].copy_from_slice(&block_size.to_le_bytes());
        v[12] = 1;
        v[0x10..0x14].copy_from_slice(&0x10u32.to_le_bytes());
        v[0x14..0x18].copy_from_slice(&((0x10 + body.len()) as u32).to_le_bytes());
        v[0x18..0x1C].copy_from_slice(&((0x10 + body.len()) as u32).to_le_bytes());
        v.extend_from_slice(&body);
        v
    }

    /// An INDX record of `size` bytes at `vcn` holding `entries`, with valid fixups.
    pub fn indx(vcn: u64, entries: &[Vec<u8>], size: usize) -> Vec<u8> {
        let mut r = vec![0u8; size];
        r[0..4].copy_from_slice(b"INDX");
        r[4..6].copy_from_slice(&0x28u16.to_le_bytes());
        let blocks = size / 512;
        r[6..8].copy_from_slice(&((blocks + 1) as u16).to_le_bytes());
        r[0x10..0x18].copy_from_slice(&vcn.to_le_bytes());
        let body: Vec<u8> = entries.concat();
        let start = 0x40u32; // relative to 0x18: entries at 0x58
        r[0x18..0x1C].copy_from_slice(&start.to_le_bytes());
        r[0x1C..0x20].copy_from_slice(&(start + body.len() as u32).to_le_bytes());
        r[0x20..0x24].copy_from_slice(&((size - 0x18) as u32).to_le_bytes());
        r[0x58..0x58 + body.len()].copy_from_slice(&body);
        // Fixups: USN 1; save each block's last two bytes.
        r[0x28..0x2A].copy_from_slice(&1u16.to_le_bytes());
        for i in 1..=blocks {
            let end = i * 512 - 2;
            let (a, b) = (r[end], r[end + 1]);
            r[0x28 + 2 * i] = a;
            r[0x29 + 2 * i] = b;
            r[end..end + 2].copy_from_slice(&1u16.to_le_bytes());
        }
        r
    }

    #[test]
    fn root_and_record_decode() {
        let v = root(&[entry(64, "a.txt", false, None), end_entry(None)], 4096);
        let r = parse_index_root(&v).unwrap();
        assert_eq!(r.entries.len(), 2);
        assert_eq!(r.entries[0].record(), 64);
        assert_eq!(r.entries[0].key.as_ref().unwrap().name_string(), "a.txt");
        let mut rec = indx(3, &[entry(70, "b", true, Some(9)), end_entry(None)], 4096);
        let entries = parse_index_record(&mut rec.clone(), 3).unwrap();
        assert_eq!(entries[0].sub_node, Some(9));
        assert!(entries[0].key.as_ref().unwrap().is_dir());
        assert!(parse_index_record(&mut rec.clone(), 4).is_err());
        rec[1000] ^= 0xFF;
        let mut torn = rec.clone();
        torn[1022] ^= 1;
        assert!(
            parse_index_record(&mut torn, 3)
                .unwrap_err()
                .detail
                .contains("update sequence")
        );
    }

    #[test]
    fn malformed_nodes_error() {
        let mut v = root(&[entry(64, "a.txt", false, None), end_entry(None)], 4096);
        // Entry length 0 would loop forever.
        v[0x20 + 8] = 0;
        v[0x20 + 9] = 0;
        assert!(parse_index_root(&v).is_err());
        // No end entry.
        let v = root(&[entry(64, "a.txt", false, None)], 4096);
        assert!(parse_index_root(&v).is_err());
        // Index length past the value.
        let mut v = root(&[end_entry(None)], 4096);
        v[0x14..0x18].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
        assert!(parse_index_root(&v).is_err());
    }
}

#[cfg(test)]
mod proptests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn mutated_index_records_never_panic(
            flips in proptest::collection::vec((0usize..4096, any::<u8>()), 1..16),
        ) {
            let mut rec = tests::indx(
                0,
                &[tests::entry(70, "name", false, Some(1)), tests::end_entry(Some(2))],
                4096,
            );
            for (at, x) in flips {
                rec[at] ^= x;
            }
            let _ = parse_index_record(&mut rec.clone(), 0);
            let _ = parse_index_root(&rec);
        }
    }
}
