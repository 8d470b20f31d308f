//! FILE records of the MFT, their update sequence fixups, attribute headers and run lists.
//!
//! Decoders here are pure: a byte slice in, structures or a [`Corrupt`] description out. The
//! caller adds the device name and the byte offset of the record.

use fscore::le;

/// Stride of the update sequence array: the last two bytes of every 512-byte block of a
/// multi-sector record are saved in the array and replaced by the update sequence number.
pub const FIXUP_STRIDE: usize = 512;

/// `$STANDARD_INFORMATION`.
pub const AT_STANDARD_INFORMATION: u32 = 0x10;
/// `$ATTRIBUTE_LIST`.
pub const AT_ATTRIBUTE_LIST: u32 = 0x20;
/// `$FILE_NAME`.
pub const AT_FILE_NAME: u32 = 0x30;
/// `$VOLUME_NAME`.
pub const AT_VOLUME_NAME: u32 = 0x60;
/// `$DATA`.
pub const AT_DATA: u32 = 0x80;
/// `$INDEX_ROOT`.
pub const AT_INDEX_ROOT: u32 = 0x90;
/// `$INDEX_ALLOCATION`.
pub const AT_INDEX_ALLOCATION: u32 = 0xA0;
/// `$BITMAP`.
pub const AT_BITMAP: u32 = 0xB0;
/// `$REPARSE_POINT`.
pub const AT_REPARSE_POINT: u32 = 0xC0;
/// Marks the end of the attributes of a record.
pub const AT_END: u32 = 0xFFFF_FFFF;

/// Attribute flag: compressed (any value in the low byte names the compression format).
pub const ATTR_COMPRESSION_MASK: u16 = 0x00FF;
/// Attribute flag: encrypted.
pub const ATTR_ENCRYPTED: u16 = 0x4000;

/// FILE record flag: in use.
pub const MFT_RECORD_IN_USE: u16 = 0x0001;
/// FILE record flag: a directory (has a $I30 index).
pub const MFT_RECORD_IS_DIRECTORY: u16 = 0x0002;

/// A decoding failure: the offset is relative to the start of the structure decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corrupt {
    /// Byte offset inside the structure.
    pub offset: usize,
    /// What was wrong.
    pub detail: String,
}

fn corrupt(offset: usize, detail: impl Into<String>) -> Corrupt {
    Corrupt {
        offset,
        detail: detail.into(),
    }
}

/// Applies the update sequence fixups of a multi-sector record (FILE or INDX) in place. The
/// header fields are at 0x04 (array offset) and 0x06 (array length, 1 + number of 512-byte
/// blocks). A block whose last two bytes do not hold the update sequence number was torn
/// (partially written) and makes the whole record corrupt.
pub fn apply_fixups(rec: &mut [u8]) -> Result<(), Corrupt> {
    let usa_ofs = le::u16_at(rec, 4).ok_or_else(|| corrupt(4, "record too short"))? as usize;
    let usa_count = le::u16_at(rec, 6).ok_or_else(|| corrupt(6, "record too short"))? as usize;
    let blocks = rec.len() / FIXUP_STRIDE;
    if !rec.len().is_multiple_of(FIXUP_STRIDE) || usa_count != blocks + 1 {
        return Err(corrupt(
            6,
            format!(
                "update sequence array has {usa_count} entries but a {} byte record needs {}",
                rec.len(),
                blocks + 1
            ),
        ));
    }
    if !usa_ofs.is_multiple_of(2) || usa_ofs < 8 || usa_ofs + usa_count * 2 > FIXUP_STRIDE - 2 {
        return Err(corrupt(
            4,
            format!("update sequence array offset {usa_ofs} is invalid"),
        ));
    }
    let usn = [rec[usa_ofs], rec[usa_ofs + 1]];
    for i in 1..usa_count {
        let end = i * FIXUP_STRIDE - 2;
        if rec[end..end + 2] != usn {
            return Err(corrupt(
                end,
                format!(
                    "update sequence mismatch in block {}: found {:02x}{:02x}, expected \
                     {:02x}{:02x} (torn write)",
                    i - 1,
                    rec[end + 1],
                    rec[end],
                    usn[1],
                    usn[0]
                ),
            ));
        }
        let saved = usa_ofs + 2 * i;
        rec[end] = rec[saved];
        rec[end + 1] = rec[saved + 1];
    }
    Ok(())
}

/// True when [`apply_fixups`] would succeed on `rec`. Lets a caller apply fixups in place
/// only to intact records, leaving a torn one untouched so that reading it later reports the
/// precise error.
pub fn fixups_intact(rec: &[u8]) -> bool {
    let (Some(usa_ofs), Some(usa_count)) = (le::u16_at(rec, 4), le::u16_at(rec, 6)) else {
        return false;
    };
    let (usa_ofs, usa_count) = (usize::from(usa_ofs), usize::from(usa_count));
    if !rec.len().is_multiple_of(FIXUP_STRIDE)
        || usa_count != rec.len() / FIXUP_STRIDE + 1
        || !usa_ofs.is_multiple_of(2)
        || usa_ofs < 8
        || usa_ofs + usa_count * 2 > FIXUP_STRIDE - 2
    {
        return false;
    }
    let usn = &rec[usa_ofs..usa_ofs + 2];
    (1..usa_count).all(|i| {
        let end = i * FIXUP_STRIDE - 2;
        &rec[end..end + 2] == usn
    })
}

/// Header of a FILE record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRecordHeader {
    /// 0x10: sequence number, bumped each time the record is reused.
    pub sequence_number: u16,
    /// 0x14: offset of the first attribute.
    pub attrs_offset: usize,
    /// 0x16: flags (in use, directory…).
    pub flags: u16,
    /// 0x18: bytes in use.
    pub bytes_in_use: usize,
    /// 0x20: reference of the base record, 0 for a base record.
    pub base_mft_record: u64,
    /// 0x2C: this record's own number (NTFS 3.1 records only).
    pub mft_record_number: Option<u32>,
}

impl FileRecordHeader {
    /// True when the record holds a file (or extension) in use.
    pub fn in_use(&self) -> bool {
        self.flags & MFT_RECORD_IN_USE != 0
    }
}

/// Result of looking at a record's magic.
#[derive(Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// `FILE`.
    File,
    /// All zeros: a record never written.
    Empty,
}

/// Checks the magic of a FILE record before fixups. `BAAD` (a record chkdsk found torn) and
/// anything else are corrupt; an all-zero record was simply never used.
pub fn record_kind(rec: &[u8]) -> Result<RecordKind, Corrupt> {
    match rec.get(0..4) {
        Some(b"FILE") => Ok(RecordKind::File),
        Some([0, 0, 0, 0]) => Ok(RecordKind::Empty),
        Some(b"BAAD") => Err(corrupt(
            0,
            "record marked BAAD (torn write found by chkdsk)",
        )),
        Some(m) => Err(corrupt(0, format!("bad magic {m:02x?}, expected \"FILE\""))),
        None => Err(corrupt(0, "record too short")),
    }
}

/// Decodes the header of a FILE record whose fixups are applied.
pub fn parse_file_header(rec: &[u8]) -> Result<FileRecordHeader, Corrupt> {
    let short = || corrupt(0, "record too short for its header");
    let usa_ofs = le::u16_at(rec, 4).ok_or_else(short)? as usize;
    let attrs_offset = le::u16_at(rec, 0x14).ok_or_else(short)? as usize;
    let bytes_in_use = le::u32_at(rec, 0x18).ok_or_else(short)? as usize;
    let bytes_allocated = le::u32_at(rec, 0x1C).ok_or_else(short)? as usize;
    if bytes_allocated != rec.len() {
        return Err(corrupt(
            0x1C,
            format!(
                "allocated size {bytes_allocated} differs from the MFT record size {}",
                rec.len()
            ),
        ));
    }
    if bytes_in_use > rec.len() || bytes_in_use < 0x30 {
        return Err(corrupt(
            0x18,
            format!("bytes in use {bytes_in_use} is invalid"),
        ));
    }
    if attrs_offset < 0x2A || !attrs_offset.is_multiple_of(8) || attrs_offset + 8 > bytes_in_use {
        return Err(corrupt(
            0x14,
            format!("first attribute offset {attrs_offset} is invalid"),
        ));
    }
    Ok(FileRecordHeader {
        sequence_number: le::u16_at(rec, 0x10).ok_or_else(short)?,
        attrs_offset,
        flags: le::u16_at(rec, 0x16).ok_or_else(short)?,
        bytes_in_use,
        base_mft_record: le::u64_at(rec, 0x20).ok_or_else(short)?,
        mft_record_number: (usa_ofs >= 0x30).then(|| le::u32_at(rec, 0x2C)).flatten(),
    })
}

/// One run of a run list, in clusters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// First virtual cluster number (cluster index inside the attribute).
    pub vcn: u64,
    /// First logical cluster number on the volume, `None` for a sparse run (a hole).
    pub lcn: Option<u64>,
    /// Length in clusters.
    pub len: u64,
}

/// The body of a non-resident attribute extent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonResident {
    /// 0x10: first VCN this extent maps.
    pub lowest_vcn: u64,
    /// 0x18: last VCN this extent maps.
    pub highest_vcn: u64,
    /// 0x22: log2 of the compression unit in clusters (0 = not compressed).
    pub compression_unit: u8,
    /// 0x28: allocated bytes (valid in the extent with lowest VCN 0).
    pub allocated_size: u64,
    /// 0x30: logical size (valid in the extent with lowest VCN 0).
    pub data_size: u64,
    /// 0x38: bytes holding valid data; past it the stream reads as zeros.
    pub initialized_size: u64,
    /// The decoded mapping pairs (run list).
    pub runs: Vec<Run>,
}

/// Value of an attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttrBody {
    /// The value stored inside the record.
    Resident(Vec<u8>),
    /// The value stored in clusters.
    NonResident(NonResident),
}

/// One attribute as found in a FILE record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// 0x00: type code.
    pub type_code: u32,
    /// Name (UTF-16 code units), from 0x09 length and 0x0A offset.
    pub name: Vec<u16>,
    /// 0x0C: flags (compressed, encrypted, sparse).
    pub flags: u16,
    /// 0x0E: attribute instance number, unique inside its record.
    pub instance: u16,
    /// MFT record holding the attribute.
    pub record: u64,
    /// Byte offset of the attribute header inside its record.
    pub offset_in_record: usize,
    /// Resident value or non-resident run list.
    pub body: AttrBody,
}

impl Attribute {
    /// Name as a string (unpaired surrogates replaced).
    pub fn name_string(&self) -> String {
        String::from_utf16_lossy(&self.name)
    }
}

/// The body of a non-resident attribute extent as it sits in its record: the header fields
/// and the undecoded (but validated) mapping pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawNonResident<'a> {
    /// 0x10: first VCN this extent maps.
    pub lowest_vcn: u64,
    /// 0x18: last VCN this extent maps.
    pub highest_vcn: u64,
    /// 0x22: log2 of the compression unit in clusters (0 = not compressed).
    pub compression_unit: u8,
    /// 0x28: allocated bytes (valid in the extent with lowest VCN 0).
    pub allocated_size: u64,
    /// 0x30: logical size (valid in the extent with lowest VCN 0).
    pub data_size: u64,
    /// 0x38: bytes holding valid data.
    pub initialized_size: u64,
    /// The mapping pairs, from the offset at 0x20 to the end of the attribute.
    pub mapping_pairs: &'a [u8],
    /// First VCN past the runs.
    pub end_vcn: u64,
}

/// The value of an attribute as it sits in its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawBody<'a> {
    /// The value stored inside the record.
    Resident(&'a [u8]),
    /// The value stored in clusters.
    NonResident(RawNonResident<'a>),
}

/// One attribute of a FILE record, borrowed from the record's bytes and validated exactly as
/// [`parse_attributes`] validates it, without allocating: a pass over the whole MFT looks at
/// every attribute of every record and keeps a few.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawAttribute<'a> {
    /// 0x00: type code.
    pub type_code: u32,
    /// Name as little-endian UTF-16 bytes, from 0x09 length and 0x0A offset.
    pub name: &'a [u8],
    /// 0x0C: flags (compressed, encrypted, sparse).
    pub flags: u16,
    /// 0x0E: attribute instance number.
    pub instance: u16,
    /// Byte offset of the attribute header inside its record.
    pub offset_in_record: usize,
    /// Resident value or non-resident header.
    pub body: RawBody<'a>,
}

impl RawAttribute<'_> {
    /// True when the attribute's name is `name` (UTF-16 code units).
    pub fn name_is(&self, name: &[u16]) -> bool {
        self.name.len() == name.len() * 2
            && self
                .name
                .chunks_exact(2)
                .zip(name)
                .all(|(b, &u)| u16::from_le_bytes([b[0], b[1]]) == u)
    }

    /// The owned form, with the run list decoded.
    fn to_attribute(self, record: u64, total_clusters: u64) -> Attribute {
        let body = match self.body {
            RawBody::Resident(v) => AttrBody::Resident(v.to_vec()),
            RawBody::NonResident(nr) => AttrBody::NonResident(NonResident {
                lowest_vcn: nr.lowest_vcn,
                highest_vcn: nr.highest_vcn,
                compression_unit: nr.compression_unit,
                allocated_size: nr.allocated_size,
                data_size: nr.data_size,
                initialized_size: nr.initialized_size,
                // Validated by `for_each_attribute`: decoding again cannot fail.
                runs: decode_runs(nr.mapping_pairs, nr.lowest_vcn, total_clusters)
                    .unwrap_or_default(),
            }),
        };
        Attribute {
            type_code: self.type_code,
            name: self
                .name
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect(),
            flags: self.flags,
            instance: self.instance,
            record,
            offset_in_record: self.offset_in_record,
            body,
        }
    }
}

/// Decodes the attributes of a FILE record (fixups applied) numbered `record`. Decoding stops
/// at the end marker; every attribute is bounded by the bytes in use. `total_clusters` bounds
/// the run lists.
pub fn parse_attributes(
    rec: &[u8],
    hdr: &FileRecordHeader,
    record: u64,
    total_clusters: u64,
) -> Result<Vec<Attribute>, Corrupt> {
    parse_attributes_where(rec, hdr, record, total_clusters, |_| true)
}

/// Validates every attribute of a FILE record as [`parse_attributes`] does (so it fails
/// exactly where that fails) but decodes into owned form only those `keep` selects: a caller
/// that wants one stream copies that stream's value or run list and nothing else.
pub fn parse_attributes_where(
    rec: &[u8],
    hdr: &FileRecordHeader,
    record: u64,
    total_clusters: u64,
    mut keep: impl FnMut(&RawAttribute<'_>) -> bool,
) -> Result<Vec<Attribute>, Corrupt> {
    // A typical record holds 3 to 6 attributes: reserving avoids regrowing the vector.
    let mut attrs = Vec::with_capacity(8);
    for_each_attribute(rec, hdr, total_clusters, |a| {
        if keep(&a) {
            attrs.push(a.to_attribute(record, total_clusters));
        }
    })?;
    Ok(attrs)
}

/// Validates the attributes of a FILE record (fixups applied) as [`parse_attributes`] does and
/// hands each to `visit`, borrowed. Attributes before a corrupt one are visited before the
/// error is returned.
pub fn for_each_attribute<'a>(
    rec: &'a [u8],
    hdr: &FileRecordHeader,
    total_clusters: u64,
    mut visit: impl FnMut(RawAttribute<'a>),
) -> Result<(), Corrupt> {
    let mut off = hdr.attrs_offset;
    let end = hdr.bytes_in_use;
    // Each attribute takes at least 16 bytes, so the loop is bounded by the record size.
    loop {
        let type_code =
            le::u32_at(rec, off).ok_or_else(|| corrupt(off, "attribute past record end"))?;
        if type_code == AT_END {
            break;
        }
        if off + 0x18 > end {
            return Err(corrupt(off, "attribute header past the bytes in use"));
        }
        let len = le::u32_at(rec, off + 4).unwrap_or(0) as usize;
        if len < 0x18 || !len.is_multiple_of(8) || len > end - off {
            return Err(corrupt(
                off + 4,
                format!(
                    "attribute type {type_code:#x} claims {len} bytes but {} remain in the record",
                    end - off
                ),
            ));
        }
        let a = &rec[off..off + len];
        visit(
            parse_attribute(a, off, total_clusters).map_err(|c| Corrupt {
                offset: off + c.offset,
                detail: c.detail,
            })?,
        );
        off += len;
    }
    Ok(())
}

/// Decodes one attribute whose `len` bytes are `a`.
fn parse_attribute(
    a: &[u8],
    offset_in_record: usize,
    total_clusters: u64,
) -> Result<RawAttribute<'_>, Corrupt> {
    let type_code = le::u32_at(a, 0).unwrap_or(0);
    let non_resident = le::u8_at(a, 8).unwrap_or(0);
    let name_len = le::u8_at(a, 9).unwrap_or(0) as usize;
    let name_off = le::u16_at(a, 0x0A).unwrap_or(0) as usize;
    let name = le::bytes_at(a, name_off, name_len * 2)
        .ok_or_else(|| corrupt(0x0A, "attribute name past attribute end"))?;
    let flags = le::u16_at(a, 0x0C).unwrap_or(0);
    let instance = le::u16_at(a, 0x0E).unwrap_or(0);
    let body = match non_resident {
        0 => {
            let vlen = le::u32_at(a, 0x10).unwrap_or(u32::MAX) as usize;
            let voff = le::u16_at(a, 0x14).unwrap_or(0) as usize;
            let v = le::bytes_at(a, voff, vlen).ok_or_else(|| {
                corrupt(
                    0x10,
                    format!(
                        "resident value of {vlen} bytes at {voff} exceeds the attribute ({} bytes)",
                        a.len()
                    ),
                )
            })?;
            RawBody::Resident(v)
        }
        1 => {
            if a.len() < 0x40 {
                return Err(corrupt(4, "non-resident attribute header too short"));
            }
            let lowest_vcn = le::u64_at(a, 0x10).unwrap_or(0);
            let highest_vcn = le::u64_at(a, 0x18).unwrap_or(0);
            let mp_off = le::u16_at(a, 0x20).unwrap_or(0) as usize;
            let compression_unit = le::u8_at(a, 0x22).unwrap_or(0);
            let allocated_size = le::u64_at(a, 0x28).unwrap_or(0);
            let data_size = le::u64_at(a, 0x30).unwrap_or(0);
            let initialized_size = le::u64_at(a, 0x38).unwrap_or(0);
            if mp_off < 0x40 || mp_off > a.len() {
                return Err(corrupt(
                    0x20,
                    format!("mapping pairs offset {mp_off} is invalid"),
                ));
            }
            // An empty extent has highest VCN = lowest VCN - 1 (i.e. -1 for an empty stream).
            if highest_vcn != u64::MAX && highest_vcn.wrapping_add(1) < lowest_vcn {
                return Err(corrupt(
                    0x18,
                    format!("highest VCN {highest_vcn} is below lowest VCN {lowest_vcn}"),
                ));
            }
            if lowest_vcn == 0 && (data_size > allocated_size && compression_unit == 0) {
                return Err(corrupt(
                    0x30,
                    format!("data size {data_size} exceeds allocated size {allocated_size}"),
                ));
            }
            if initialized_size > data_size && lowest_vcn == 0 {
                return Err(corrupt(
                    0x38,
                    format!("initialized size {initialized_size} exceeds data size {data_size}"),
                ));
            }
            let mapping_pairs = &a[mp_off..];
            let mut no_runs = true;
            let mut end_vcn = lowest_vcn;
            for_each_run(mapping_pairs, lowest_vcn, total_clusters, |r| {
                no_runs = false;
                end_vcn = r.vcn + r.len;
            })
            .map_err(|c| corrupt(mp_off + c.offset, c.detail))?;
            if end_vcn != highest_vcn.wrapping_add(1) && !(no_runs && lowest_vcn == 0) {
                return Err(corrupt(
                    0x18,
                    format!(
                        "run list ends at VCN {end_vcn} but the attribute claims VCNs \
                         {lowest_vcn}..={highest_vcn}"
                    ),
                ));
            }
            RawBody::NonResident(RawNonResident {
                lowest_vcn,
                highest_vcn,
                compression_unit,
                allocated_size,
                data_size,
                initialized_size,
                mapping_pairs,
                end_vcn,
            })
        }
        v => return Err(corrupt(8, format!("non-resident flag is {v}"))),
    };
    Ok(RawAttribute {
        type_code,
        name,
        flags,
        instance,
        offset_in_record,
        body,
    })
}

/// Decodes a run list (mapping pairs). Each run starts with a header byte: the low nibble is the
/// size of the run length field, the high nibble the size of the signed LCN delta (0: a sparse
/// run). A zero header ends the list. Data runs must lie inside `total_clusters`; sparse runs
/// may be longer than the volume.
pub fn decode_runs(mp: &[u8], lowest_vcn: u64, total_clusters: u64) -> Result<Vec<Run>, Corrupt> {
    let mut runs = Vec::new();
    for_each_run(mp, lowest_vcn, total_clusters, |r| runs.push(r))?;
    Ok(runs)
}

/// Decodes a run list as [`decode_runs`] does, handing each run to `visit` instead of
/// collecting them.
pub fn for_each_run(
    mp: &[u8],
    lowest_vcn: u64,
    total_clusters: u64,
    mut visit: impl FnMut(Run),
) -> Result<(), Corrupt> {
    let mut pos = 0usize;
    let mut vcn = lowest_vcn;
    let mut lcn: i64 = 0;
    loop {
        let Some(&h) = mp.get(pos) else {
            return Err(corrupt(pos, "run list not terminated"));
        };
        if h == 0 {
            break;
        }
        let len_size = (h & 0x0F) as usize;
        let off_size = (h >> 4) as usize;
        if len_size == 0 || len_size > 8 || off_size > 8 {
            return Err(corrupt(pos, format!("bad run header {h:#04x}")));
        }
        let fields = le::bytes_at(mp, pos + 1, len_size + off_size)
            .ok_or_else(|| corrupt(pos, "run list truncated"))?;
        let len = signed_le(&fields[..len_size]);
        if len <= 0 {
            return Err(corrupt(
                pos + 1,
                format!("run length {len} is not positive"),
            ));
        }
        let len = len as u64;
        let run_lcn = if off_size == 0 {
            None
        } else {
            let delta = signed_le(&fields[len_size..]);
            lcn = lcn
                .checked_add(delta)
                .ok_or_else(|| corrupt(pos, "LCN delta overflows"))?;
            let end = (lcn as u64).checked_add(len);
            if lcn < 0 || end.is_none_or(|e| e > total_clusters) {
                return Err(corrupt(
                    pos,
                    format!(
                        "data run of {len} clusters at LCN {lcn} reaches past the end of the \
                         volume ({total_clusters} clusters)"
                    ),
                ));
            }
            Some(lcn as u64)
        };
        visit(Run {
            vcn,
            lcn: run_lcn,
            len,
        });
        vcn = vcn
            .checked_add(len)
            .filter(|v| *v <= i64::MAX as u64)
            .ok_or_else(|| corrupt(pos, "VCN overflows"))?;
        pos += 1 + len_size + off_size;
    }
    Ok(())
}

/// Sign-extends a little-endian integer of 1..=8 bytes.
fn signed_le(b: &[u8]) -> i64 {
    let mut v: i64 = 0;
    for (i, &byte) in b.iter().enumerate() {
        v |= i64::from(byte) << (8 * i);
    }
    let bits = 8 * b.len();
    if bits < 64 {
        let shift = 64 - bits;
        v = (v << shift) >> shift;
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_with_signed_deltas_and_sparse() {
        // 0x21: 1-byte length, 2-byte offset. Run 1: 0x18 clusters at 0x5634. Run 2 (0x01):
        // sparse 0x10 clusters. Run 3 (0x11): 0x08 clusters at delta -0x10.
        let mp = [0x21, 0x18, 0x34, 0x56, 0x01, 0x10, 0x11, 0x08, 0xF0, 0x00];
        let runs = decode_runs(&mp, 0, 1 << 20).unwrap();
        assert_eq!(
            runs,
            vec![
                Run {
                    vcn: 0,
                    lcn: Some(0x5634),
                    len: 0x18
                },
                Run {
                    vcn: 0x18,
                    lcn: None,
                    len: 0x10
                },
                Run {
                    vcn: 0x28,
                    lcn: Some(0x5624),
                    len: 8
                },
            ]
        );
    }

    #[test]
    fn runs_past_the_volume_are_refused_but_long_holes_are_not() {
        let mp = [0x21, 0x18, 0x34, 0x56, 0x00];
        let e = decode_runs(&mp, 0, 0x5000).unwrap_err();
        assert!(e.detail.contains("past the end of the volume"), "{e:?}");
        // A sparse run of 2^40 clusters on a tiny volume is fine.
        let mp = [0x06, 0, 0, 0, 0, 0, 1, 0x00];
        assert_eq!(decode_runs(&mp, 0, 16).unwrap()[0].len, 1 << 40);
        // Negative LCN.
        let mp = [0x11, 0x01, 0xFF, 0x00];
        assert!(decode_runs(&mp, 0, 16).is_err());
        // Unterminated, bad header, zero length.
        assert!(decode_runs(&[0x11, 0x01], 0, 16).is_err());
        assert!(decode_runs(&[0x11, 0x01, 0x01], 0, 16).is_err());
        assert!(decode_runs(&[0x09, 0x00], 0, 16).is_err());
        assert!(decode_runs(&[0x11, 0x00, 0x01, 0x00], 0, 16).is_err());
    }

    #[test]
    fn fixups_restore_and_detect_tears() {
        let mut rec = vec![0u8; 1024];
        rec[0..4].copy_from_slice(b"FILE");
        rec[4..6].copy_from_slice(&0x30u16.to_le_bytes());
        rec[6..8].copy_from_slice(&3u16.to_le_bytes());
        rec[0x30..0x32].copy_from_slice(&[0x07, 0x00]); // USN
        rec[0x32..0x34].copy_from_slice(&[0xAA, 0xBB]);
        rec[0x34..0x36].copy_from_slice(&[0xCC, 0xDD]);
        rec[510..512].copy_from_slice(&[0x07, 0x00]);
        rec[1022..1024].copy_from_slice(&[0x07, 0x00]);
        assert!(fixups_intact(&rec));
        let mut ok = rec.clone();
        apply_fixups(&mut ok).unwrap();
        assert_eq!(&ok[510..512], &[0xAA, 0xBB]);
        assert_eq!(&ok[1022..1024], &[0xCC, 0xDD]);
        let mut torn = rec.clone();
        torn[1023] = 0x01;
        assert!(!fixups_intact(&torn));
        let e = apply_fixups(&mut torn).unwrap_err();
        assert!(e.detail.contains("update sequence mismatch"));
        assert_eq!(e.offset, 1022);
        let mut bad_count = rec.clone();
        bad_count[6] = 9;
        assert!(!fixups_intact(&bad_count));
        assert!(apply_fixups(&mut bad_count).is_err());
        let mut bad_ofs = rec;
        bad_ofs[4..6].copy_from_slice(&0x1F0u16.to_le_bytes());
        assert!(!fixups_intact(&bad_ofs));
        assert!(apply_fixups(&mut bad_ofs).is_err());
    }

    /// Builds a FILE record with the given attribute bytes.
    pub(crate) fn record_with(attrs: &[u8]) -> Vec<u8> {
        let mut rec = vec![0u8; 1024];
        rec[0..4].copy_from_slice(b"FILE");
        rec[0x14..0x16].copy_from_slice(&0x38u16.to_le_bytes());
        rec[0x16..0x18].copy_from_slice(&1u16.to_le_bytes());
        let used = 0x38 + attrs.len() + 8;
        rec[0x18..0x1C].copy_from_slice(&(used as u32).to_le_bytes());
        rec[0x1C..0x20].copy_from_slice(&1024u32.to_le_bytes());
        rec[0x38..0x38 + attrs.len()].copy_from_slice(attrs);
        rec[0x38 + attrs.len()..0x38 + attrs.len() + 4].copy_from_slice(&AT_END.to_le_bytes());
        rec
    }

    fn resident(type_code: u32, value: &[u8]) -> Vec<u8> {
        let len = (0x18 + value.len()).div_ceil(8) * 8;
        let mut a = vec![0u8; len];
        a[0..4].copy_from_slice(&type_code.to_le_bytes());
        a[4..8].copy_from_slice(&(len as u32).to_le_bytes());
        a[0x10..0x14].copy_from_slice(&(value.len() as u32).to_le_bytes());
        a[0x14..0x16].copy_from_slice(&0x18u16.to_le_bytes());
        a[0x18..0x18 + value.len()].copy_from_slice(value);
        a
    }

    #[test]
    fn attributes_decode_and_bounds_hold() {
        let rec = record_with(&resident(AT_DATA, b"hello"));
        let hdr = parse_file_header(&rec).unwrap();
        let attrs = parse_attributes(&rec, &hdr, 40, 100).unwrap();
        assert_eq!(attrs.len(), 1);
        assert_eq!(attrs[0].body, AttrBody::Resident(b"hello".to_vec()));

        // An attribute claiming 4 GiB.
        let mut a = resident(AT_DATA, b"hello");
        a[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        let rec = record_with(&a);
        let hdr = parse_file_header(&rec).unwrap();
        let e = parse_attributes(&rec, &hdr, 40, 100).unwrap_err();
        assert!(e.detail.contains("claims"), "{e:?}");

        // A resident value claiming 4 GiB.
        let mut a = resident(AT_DATA, b"hello");
        a[0x10..0x14].copy_from_slice(&u32::MAX.to_le_bytes());
        let rec = record_with(&a);
        let hdr = parse_file_header(&rec).unwrap();
        assert!(parse_attributes(&rec, &hdr, 40, 100).is_err());

        // Missing end marker: bytes in use end before the marker.
        let mut rec = record_with(&resident(AT_DATA, b"hello"));
        rec[0x18..0x1C].copy_from_slice(&0x50u32.to_le_bytes());
        let hdr = parse_file_header(&rec).unwrap();
        assert!(parse_attributes(&rec, &hdr, 40, 100).is_err());
    }

    #[test]
    fn non_resident_attribute_with_runs() {
        let mut a = vec![0u8; 0x48];
        a[0..4].copy_from_slice(&AT_DATA.to_le_bytes());
        a[4..8].copy_from_slice(&0x48u32.to_le_bytes());
        a[8] = 1;
        a[0x18..0x20].copy_from_slice(&9u64.to_le_bytes()); // highest VCN
        a[0x20..0x22].copy_from_slice(&0x40u16.to_le_bytes());
        a[0x28..0x30].copy_from_slice(&40960u64.to_le_bytes());
        a[0x30..0x38].copy_from_slice(&40000u64.to_le_bytes());
        a[0x38..0x40].copy_from_slice(&40000u64.to_le_bytes());
        a[0x40..0x44].copy_from_slice(&[0x11, 0x0A, 0x20, 0x00]);
        let rec = record_with(&a);
        let hdr = parse_file_header(&rec).unwrap();
        let attrs = parse_attributes(&rec, &hdr, 40, 100).unwrap();
        let AttrBody::NonResident(nr) = &attrs[0].body else {
            panic!("resident")
        };
        assert_eq!(
            nr.runs,
            vec![Run {
                vcn: 0,
                lcn: Some(0x20),
                len: 10
            }]
        );
        // A run list shorter than the VCN range is corrupt.
        let mut a2 = a.clone();
        a2[0x18..0x20].copy_from_slice(&19u64.to_le_bytes());
        let rec = record_with(&a2);
        let hdr = parse_file_header(&rec).unwrap();
        assert!(parse_attributes(&rec, &hdr, 40, 100).is_err());
        // Run past the volume.
        let rec = record_with(&a);
        let hdr = parse_file_header(&rec).unwrap();
        assert!(parse_attributes(&rec, &hdr, 40, 0x21).is_err());
    }
}

#[cfg(test)]
mod proptests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn run_lists_decode_or_fail_inside_bounds(mp in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(runs) = decode_runs(&mp, 0, 1 << 20) {
                let mut vcn = 0;
                for r in runs {
                    prop_assert_eq!(r.vcn, vcn);
                    prop_assert!(r.len > 0);
                    if let Some(lcn) = r.lcn {
                        prop_assert!(lcn + r.len <= 1 << 20);
                    }
                    vcn += r.len;
                }
            }
        }

        #[test]
        fn mutated_records_never_panic(
            flips in proptest::collection::vec((0usize..1024, any::<u8>()), 1..16),
        ) {
            let mut rec = tests::record_with(&[0x80, 0, 0, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                5, 0, 0, 0, 0x18, 0, 0, 0, b'h', b'e', b'l', b'l', b'o', 0, 0, 0]);
            for (at, x) in flips {
                rec[at] ^= x;
            }
            if let Ok(hdr) = parse_file_header(&rec) {
                let _ = parse_attributes(&rec, &hdr, 0, 1 << 20);
            }
        }
    }
}
