//! Values of the attributes the reader interprets: $STANDARD_INFORMATION, $FILE_NAME,
//! $ATTRIBUTE_LIST entries and $REPARSE_POINT.

use fscore::le;

use crate::record::Corrupt;

fn corrupt(offset: usize, detail: impl Into<String>) -> Corrupt {
    Corrupt {
        offset,
        detail: detail.into(),
    }
}

/// Difference between 1601-01-01 and 1970-01-01 in 100 ns units.
const EPOCH_DIFF_100NS: i128 = 116_444_736_000_000_000;

/// Converts an NTFS time (100 ns since 1601) to nanoseconds since the Unix epoch. `None` when
/// the time is 0 (unset) or outside the range of an `i64`.
pub fn ntfs_time_to_unix_ns(t: u64) -> Option<i64> {
    if t == 0 {
        return None;
    }
    let ns = (i128::from(t) - EPOCH_DIFF_100NS) * 100;
    i64::try_from(ns).ok()
}

/// The part of $STANDARD_INFORMATION the reader uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StandardInformation {
    /// 0x00: creation time.
    pub creation_time: u64,
    /// 0x08: last data change.
    pub last_data_change_time: u64,
    /// 0x10: last MFT record change.
    pub last_mft_change_time: u64,
    /// 0x18: last access.
    pub last_access_time: u64,
    /// 0x20: DOS file attributes.
    pub file_attributes: u32,
}

impl StandardInformation {
    /// Decodes the resident value.
    pub fn parse(v: &[u8]) -> Result<Self, Corrupt> {
        if v.len() < 0x24 {
            return Err(corrupt(
                0,
                format!("$STANDARD_INFORMATION of {} bytes", v.len()),
            ));
        }
        Ok(StandardInformation {
            creation_time: le::u64_at(v, 0).unwrap_or(0),
            last_data_change_time: le::u64_at(v, 8).unwrap_or(0),
            last_mft_change_time: le::u64_at(v, 0x10).unwrap_or(0),
            last_access_time: le::u64_at(v, 0x18).unwrap_or(0),
            file_attributes: le::u32_at(v, 0x20).unwrap_or(0),
        })
    }
}

/// File attribute: read-only.
pub const FILE_ATTR_SYSTEM: u32 = 0x0004;
/// File attribute: reparse point.
pub const FILE_ATTR_REPARSE_POINT: u32 = 0x0400;
/// File attribute in $FILE_NAME: the file has a $I30 index (a directory).
pub const FILE_ATTR_DUP_FILE_NAME_INDEX_PRESENT: u32 = 0x1000_0000;

/// $FILE_NAME namespaces (0x41).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Namespace {
    /// 0: any Unicode except NUL and `/`, case-sensitive.
    Posix,
    /// 1: the long Windows name.
    Win32,
    /// 2: the 8.3 short name of a file that has a separate Win32 name.
    Dos,
    /// 3: one name valid in both Win32 and DOS.
    Win32AndDos,
}

/// A decoded $FILE_NAME (as an attribute value or as an index key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileName {
    /// 0x00: reference of the parent directory (48-bit record number, 16-bit sequence).
    pub parent: u64,
    /// 0x08: creation time.
    pub creation_time: u64,
    /// 0x28: allocated size (as of the last name update).
    pub allocated_size: u64,
    /// 0x30: data size (as of the last name update).
    pub data_size: u64,
    /// 0x38: file attributes.
    pub file_attributes: u32,
    /// 0x3C: reparse tag when the file is a reparse point (else extended attribute size).
    pub reparse_tag: u32,
    /// 0x41: namespace.
    pub namespace: Namespace,
    /// 0x42: the name, UTF-16 code units (length at 0x40).
    pub name: Vec<u16>,
}

impl FileName {
    /// Decodes a $FILE_NAME value.
    pub fn parse(v: &[u8]) -> Result<Self, Corrupt> {
        let mut f = Self::parse_without_name(v)?;
        let name_len = usize::from(le::u8_at(v, 0x40).unwrap_or(0));
        f.name = le::bytes_at(v, 0x42, name_len * 2)
            .unwrap_or_default()
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        Ok(f)
    }

    /// Validates a $FILE_NAME value exactly as [`FileName::parse`] does but leaves `name`
    /// empty: link counting and parent lookups run once per file in a recursive listing and
    /// need no name, so they skip its allocation.
    pub fn parse_without_name(v: &[u8]) -> Result<Self, Corrupt> {
        let name_len = le::u8_at(v, 0x40).ok_or_else(|| corrupt(0, "$FILE_NAME too short"))?;
        let ns = le::u8_at(v, 0x41).unwrap_or(0);
        le::bytes_at(v, 0x42, usize::from(name_len) * 2)
            .ok_or_else(|| corrupt(0x40, format!("name of {name_len} characters exceeds value")))?;
        if name_len == 0 {
            return Err(corrupt(0x40, "empty file name"));
        }
        let namespace = match ns {
            0 => Namespace::Posix,
            1 => Namespace::Win32,
            2 => Namespace::Dos,
            3 => Namespace::Win32AndDos,
            n => return Err(corrupt(0x41, format!("unknown namespace {n}"))),
        };
        Ok(FileName {
            parent: le::u64_at(v, 0).unwrap_or(0),
            creation_time: le::u64_at(v, 8).unwrap_or(0),
            allocated_size: le::u64_at(v, 0x28).unwrap_or(0),
            data_size: le::u64_at(v, 0x30).unwrap_or(0),
            file_attributes: le::u32_at(v, 0x38).unwrap_or(0),
            reparse_tag: le::u32_at(v, 0x3C).unwrap_or(0),
            namespace,
            name: Vec::new(),
        })
    }

    /// The MFT record number of the parent directory.
    pub fn parent_record(&self) -> u64 {
        self.parent & 0x0000_FFFF_FFFF_FFFF
    }

    /// True for a directory.
    pub fn is_dir(&self) -> bool {
        self.file_attributes & FILE_ATTR_DUP_FILE_NAME_INDEX_PRESENT != 0
    }

    /// The name as a string (unpaired surrogates replaced).
    pub fn name_string(&self) -> String {
        String::from_utf16_lossy(&self.name)
    }
}

/// One $ATTRIBUTE_LIST entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrListEntry {
    /// 0x00: attribute type.
    pub type_code: u32,
    /// 0x08: lowest VCN of this extent of the attribute.
    pub lowest_vcn: u64,
    /// 0x10: MFT reference of the record that holds it.
    pub mft_reference: u64,
    /// 0x18: attribute instance inside that record.
    pub instance: u16,
    /// Name (length at 0x06, offset at 0x07).
    pub name: Vec<u16>,
}

impl AttrListEntry {
    /// Record number of the holder.
    pub fn record(&self) -> u64 {
        self.mft_reference & 0x0000_FFFF_FFFF_FFFF
    }
}

/// Decodes a whole $ATTRIBUTE_LIST value.
pub fn parse_attribute_list(v: &[u8]) -> Result<Vec<AttrListEntry>, Corrupt> {
    let mut out = Vec::new();
    let mut off = 0usize;
    while off < v.len() {
        // Some writers pad the value; a zero type ends it.
        let type_code = le::u32_at(v, off).unwrap_or(0);
        if type_code == 0 {
            break;
        }
        let len = le::u16_at(v, off + 4).unwrap_or(0) as usize;
        if len < 0x1A || off + len > v.len() {
            return Err(corrupt(
                off + 4,
                format!("attribute list entry of {len} bytes is invalid"),
            ));
        }
        let e = &v[off..off + len];
        let name_len = le::u8_at(e, 6).unwrap_or(0) as usize;
        let name_off = le::u8_at(e, 7).unwrap_or(0) as usize;
        let name = le::bytes_at(e, name_off, name_len * 2)
            .ok_or_else(|| corrupt(off + 6, "attribute list entry name past entry end"))?
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        out.push(AttrListEntry {
            type_code,
            lowest_vcn: le::u64_at(e, 8).unwrap_or(0),
            mft_reference: le::u64_at(e, 0x10).unwrap_or(0),
            instance: le::u16_at(e, 0x18).unwrap_or(0),
            name,
        });
        off += len;
    }
    Ok(out)
}

/// Reparse tag of a symbolic link.
pub const IO_REPARSE_TAG_SYMLINK: u32 = 0xA000_000C;
/// Reparse tag of a junction (mount point).
pub const IO_REPARSE_TAG_MOUNT_POINT: u32 = 0xA000_0003;

/// True for the reparse tags reported as symbolic links.
pub fn is_link_tag(tag: u32) -> bool {
    tag == IO_REPARSE_TAG_SYMLINK || tag == IO_REPARSE_TAG_MOUNT_POINT
}

/// Decodes a $REPARSE_POINT value: the tag and, for symlinks and junctions, the target.
pub fn parse_reparse_point(v: &[u8]) -> Result<(u32, Option<String>), Corrupt> {
    let tag = le::u32_at(v, 0).ok_or_else(|| corrupt(0, "reparse point too short"))?;
    if !is_link_tag(tag) {
        return Ok((tag, None));
    }
    let data_len = le::u16_at(v, 4).unwrap_or(0) as usize;
    let data = le::bytes_at(v, 8, data_len)
        .ok_or_else(|| corrupt(4, format!("reparse data of {data_len} bytes exceeds value")))?;
    // Symlinks carry a 4-byte flags field before the path buffer; junctions do not.
    let buf_off = if tag == IO_REPARSE_TAG_SYMLINK { 12 } else { 8 };
    let field = |o: usize| le::u16_at(data, o).map(usize::from);
    let (Some(sub_off), Some(sub_len), Some(print_off), Some(print_len)) =
        (field(0), field(2), field(4), field(6))
    else {
        return Err(corrupt(8, "reparse data header too short"));
    };
    let text = |off: usize, len: usize| -> Result<String, Corrupt> {
        let b = le::bytes_at(data, buf_off + off, len)
            .ok_or_else(|| corrupt(8, "reparse path past the data"))?;
        let u: Vec<u16> = b
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        Ok(String::from_utf16_lossy(&u))
    };
    let print = text(print_off, print_len)?;
    let target = if !print.is_empty() {
        print
    } else {
        let sub = text(sub_off, sub_len)?;
        sub.strip_prefix("\\??\\")
            .map(str::to_string)
            .unwrap_or(sub)
    };
    Ok((tag, Some(target)))
}

/// Magic of an Interix symbolic link (how ntfs-3g stores symlinks by default): a system file
/// whose data is this magic followed by the UTF-16 target.
pub const INTX_SYMLINK_MAGIC: &[u8; 8] = b"IntxLNK\x01";

/// Decodes the target of an Interix symlink from the file's data.
pub fn parse_interix_symlink(data: &[u8]) -> Option<String> {
    let rest = data.strip_prefix(INTX_SYMLINK_MAGIC)?;
    let u: Vec<u16> = rest
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    Some(String::from_utf16_lossy(&u))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_convert() {
        assert_eq!(ntfs_time_to_unix_ns(116_444_736_000_000_000), Some(0));
        assert_eq!(ntfs_time_to_unix_ns(116_444_736_000_000_001), Some(100));
        assert_eq!(ntfs_time_to_unix_ns(0), None);
        assert_eq!(ntfs_time_to_unix_ns(u64::MAX), None);
    }

    #[test]
    fn symlink_and_junction_targets() {
        let utf16 = |s: &str| -> Vec<u8> { s.encode_utf16().flat_map(u16::to_le_bytes).collect() };
        let sub = utf16("\\??\\C:\\target");
        let print = utf16("C:\\target");
        let mut data = Vec::new();
        data.extend_from_slice(&0u16.to_le_bytes());
        data.extend_from_slice(&(sub.len() as u16).to_le_bytes());
        data.extend_from_slice(&(sub.len() as u16).to_le_bytes());
        data.extend_from_slice(&(print.len() as u16).to_le_bytes());
        data.extend_from_slice(&0u32.to_le_bytes());
        data.extend_from_slice(&sub);
        data.extend_from_slice(&print);
        let mut v = IO_REPARSE_TAG_SYMLINK.to_le_bytes().to_vec();
        v.extend_from_slice(&(data.len() as u16).to_le_bytes());
        v.extend_from_slice(&[0, 0]);
        v.extend_from_slice(&data);
        assert_eq!(
            parse_reparse_point(&v).unwrap(),
            (IO_REPARSE_TAG_SYMLINK, Some("C:\\target".to_string()))
        );
        // Truncated data is an error, not a panic.
        assert!(parse_reparse_point(&v[..v.len() - 4]).is_err());
        assert_eq!(
            parse_reparse_point(&0x8000_0017u32.to_le_bytes())
                .unwrap()
                .1,
            None
        );
    }
}
