//! VMware virtual disk descriptors (`.vmdk`).
//!
//! A disk is a text descriptor naming its extents, either as a small file of its own (ESXi
//! `vmfs`/`vmfsSparse`/`seSparse`, Workstation `monolithicFlat`/`twoGbMaxExtent*`) or embedded
//! inside a hosted sparse extent (`monolithicSparse`, `streamOptimized`), whose 512-byte
//! header gives the descriptor's offset and size in sectors.

use crate::InventoryError;
use crate::text::{find_byte, starts_with_ignore_ascii_case, trim_start_str, trim_str};
use fscore::le;

/// The largest descriptor read (embedded or text). Real ones are below 2 KiB.
pub const MAX_DESCRIPTOR_BYTES: u64 = 1 << 20;
/// Extent lines kept. A 62 TiB disk split into 2 GiB extents has ~32,000; more is hostile.
pub const MAX_EXTENTS: usize = 65_536;

/// Magic of a hosted sparse extent: "KDMV" as bytes, read as a little-endian u32.
pub const SPARSE_MAGIC: u32 = 0x564D_444B;
/// Magic of an ESX 2/3 sparse (`vmfsSparse` COW) extent: "COWD".
pub const COWD_MAGIC: u32 = 0x4457_4F43;
/// Magic of a space-efficient sparse (`seSparse`) extent, a little-endian u64 at offset 0.
pub const SESPARSE_MAGIC: u64 = 0x0000_0000_CAFE_BABE;

/// The header of a hosted sparse extent (VMware "Virtual Disk Format" technical note,
/// `SparseExtentHeader`, 512 bytes, little-endian).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SparseHeader {
    /// `version` (offset 4): 1, 2 or 3.
    pub version: u32,
    /// `flags` (offset 8).
    pub flags: u32,
    /// `capacity` (offset 12) in sectors.
    pub capacity: u64,
    /// `grainSize` (offset 20) in sectors.
    pub grain_size: u64,
    /// `descriptorOffset` (offset 28) in sectors; 0 when there is no embedded descriptor.
    pub descriptor_offset: u64,
    /// `descriptorSize` (offset 36) in sectors.
    pub descriptor_size: u64,
    /// `uncleanShutdown` (offset 72): set while the extent is open for writing.
    pub unclean_shutdown: bool,
    /// `compressAlgorithm` (offset 77): 1 = deflate (streamOptimized).
    pub compress_algorithm: u16,
}

/// What the first bytes of a `.vmdk` say it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// A hosted sparse extent (maybe with an embedded descriptor).
    Sparse(SparseHeader),
    /// An ESX 2/3 COW sparse extent (a snapshot delta of old ESX).
    Cowd,
    /// A seSparse extent (VMFS6 snapshot delta, or large VMFS5 deltas).
    SeSparse,
    /// A text descriptor.
    Text,
    /// Anything else: raw data (a flat extent) or garbage.
    Data,
}

/// Classifies a `.vmdk` from its first bytes (512 are enough).
pub fn probe(first: &[u8]) -> Probe {
    match le::u32_at(first, 0) {
        Some(SPARSE_MAGIC) => {
            return match parse_sparse_header(first) {
                Ok(h) => Probe::Sparse(h),
                Err(_) => Probe::Data,
            };
        }
        Some(COWD_MAGIC) => return Probe::Cowd,
        _ => {}
    }
    if le::u64_at(first, 0) == Some(SESPARSE_MAGIC) {
        return Probe::SeSparse;
    }
    // What VMware writes first: no need to look further.
    if first.starts_with(b"# Disk DescriptorFile") {
        return Probe::Text;
    }
    let text = &first[..find_byte(0, first).unwrap_or(first.len())];
    // `from_utf8_lossy` walks byte by byte even over valid UTF-8; check that fast first.
    let s = match std::str::from_utf8(text) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(text),
    };
    let looks = s.lines().map(str::trim).any(|l| {
        l.starts_with("# Disk DescriptorFile")
            || l.starts_with("version=")
            || starts_with_ignore_ascii_case(l, "createtype")
    });
    if looks { Probe::Text } else { Probe::Data }
}

/// Decodes a `SparseExtentHeader` (at least 512 bytes are expected; fewer is an error).
pub fn parse_sparse_header(b: &[u8]) -> Result<SparseHeader, InventoryError> {
    let bad = |offset: u64, detail: String| InventoryError::Corrupt {
        format: "vmdk",
        structure: "SparseExtentHeader",
        offset,
        detail,
    };
    if b.len() < 79 {
        return Err(bad(
            0,
            format!("only {} bytes, the header has 512", b.len()),
        ));
    }
    let magic = le::u32_at(b, 0).unwrap_or(0);
    if magic != SPARSE_MAGIC {
        return Err(bad(0, format!("magicNumber {magic:#010x}, expected KDMV")));
    }
    let h = SparseHeader {
        version: le::u32_at(b, 4).unwrap_or(0),
        flags: le::u32_at(b, 8).unwrap_or(0),
        capacity: le::u64_at(b, 12).unwrap_or(0),
        grain_size: le::u64_at(b, 20).unwrap_or(0),
        descriptor_offset: le::u64_at(b, 28).unwrap_or(0),
        descriptor_size: le::u64_at(b, 36).unwrap_or(0),
        unclean_shutdown: b[72] != 0,
        compress_algorithm: le::u16_at(b, 77).unwrap_or(0),
    };
    if h.version == 0 || h.version > 3 {
        return Err(bad(4, format!("version {} (known: 1, 2, 3)", h.version)));
    }
    Ok(h)
}

impl SparseHeader {
    /// The byte range of the embedded descriptor, validated against the file size and
    /// [`MAX_DESCRIPTOR_BYTES`]; `None` when the extent has no embedded descriptor.
    pub fn descriptor_range(&self, file_size: u64) -> Result<Option<(u64, u64)>, InventoryError> {
        if self.descriptor_offset == 0 || self.descriptor_size == 0 {
            return Ok(None);
        }
        let bad = |detail: String| InventoryError::Corrupt {
            format: "vmdk",
            structure: "SparseExtentHeader.descriptorOffset/descriptorSize",
            offset: 28,
            detail,
        };
        let off = self
            .descriptor_offset
            .checked_mul(512)
            .ok_or_else(|| bad("descriptorOffset overflows".into()))?;
        let len = self
            .descriptor_size
            .checked_mul(512)
            .ok_or_else(|| bad("descriptorSize overflows".into()))?;
        if len > MAX_DESCRIPTOR_BYTES {
            return Err(InventoryError::Limit {
                what: format!("embedded descriptor of {len} bytes"),
                limit: MAX_DESCRIPTOR_BYTES,
            });
        }
        if off.checked_add(len).is_none_or(|end| end > file_size) {
            return Err(bad(format!(
                "descriptor at byte {off}, {len} bytes, lies past the end of the {file_size}-byte file"
            )));
        }
        Ok(Some((off, len)))
    }
}

/// One extent line: `ACCESS SECTORS TYPE ["FILE" [OFFSET]]`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ExtentLine {
    /// `RW`, `RDONLY` or `NOACCESS`.
    pub access: String,
    /// Size in 512-byte sectors.
    pub sectors: u64,
    /// `FLAT`, `SPARSE`, `ZERO`, `VMFS`, `VMFSSPARSE`, `SESPARSE`, `VMFSRDM`, `VMFSRAW`…
    pub kind: String,
    /// The extent file, relative to the descriptor's directory (absent for `ZERO`).
    pub file_name: Option<String>,
    /// Offset in sectors inside the file (FLAT extents).
    pub offset: u64,
}

/// The `ddb.*` lines of a descriptor, kept in one string: a descriptor has ten or so and the
/// inventory reads a few, so one allocation serves them all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiskDatabase {
    /// Keys (lower-case) and values back to back.
    text: String,
    /// Per line: where its key ends and its value ends in `text` (each starts where the one
    /// before ends).
    ends: Vec<(u32, u32)>,
}

impl DiskDatabase {
    fn push(&mut self, key: &str, value: &str) {
        if self.ends.is_empty() {
            // ESXi writes seven to ten ddb lines of about 40 bytes.
            self.text.reserve(512);
            self.ends.reserve(10);
        }
        let key_start = self.text.len();
        self.text.push_str(key);
        self.text[key_start..].make_ascii_lowercase();
        let key_end = self.text.len() as u32;
        self.text.push_str(value);
        self.ends.push((key_end, self.text.len() as u32));
    }

    /// `(key, value)` of every line, in file order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        let mut start = 0usize;
        self.ends.iter().map(move |&(k, v)| {
            let (k, v) = (k as usize, v as usize);
            let kv = (&self.text[start..k], &self.text[k..v]);
            start = v;
            kv
        })
    }

    /// Number of lines.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// No `ddb.*` line at all.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
}

/// A parsed descriptor.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Descriptor {
    /// `version`.
    pub version: Option<u32>,
    /// `CID`: content id, changes on every write to this layer.
    pub cid: Option<u32>,
    /// `parentCID`: the parent's CID when this layer was created; `ffffffff` for none.
    pub parent_cid: Option<u32>,
    /// `createType`.
    pub create_type: Option<String>,
    /// `parentFileNameHint`: the parent descriptor of a delta.
    pub parent_file_name_hint: Option<String>,
    /// `changeTrackPath`: the CBT (`-ctk.vmdk`) file.
    pub change_track_path: Option<String>,
    /// Extent lines in order.
    pub extents: Vec<ExtentLine>,
    /// Extent lines dropped beyond [`MAX_EXTENTS`].
    pub extents_dropped: usize,
    /// The disk database (`ddb.*` lines), lower-case keys, in file order.
    pub ddb: DiskDatabase,
    /// Lines that did not parse.
    pub warnings: Vec<String>,
}

/// True for the `createType`s whose disk is one extent by definition (ESXi's `vmfs`, the hosted
/// monolithic types, sparse deltas); the `twoGbMaxExtent*` and `custom` types may list many.
pub fn is_single_extent_type(create_type: &str) -> bool {
    const SINGLE: [&str; 10] = [
        "vmfs",
        "vmfsthin",
        "vmfssparse",
        "sesparse",
        "vmfsraw",
        "vmfsrawdevicemap",
        "vmfspassthroughrawdevicemap",
        "monolithicflat",
        "monolithicsparse",
        "streamoptimized",
    ];
    SINGLE
        .iter()
        .any(|t| t.eq_ignore_ascii_case(create_type.trim()))
}

impl Descriptor {
    /// Capacity in bytes: the sum of the extents.
    pub fn capacity(&self) -> u64 {
        self.extents
            .iter()
            .fold(0u64, |a, e| a.saturating_add(e.sectors.saturating_mul(512)))
    }

    /// Whether the descriptor names a parent (a snapshot delta or linked clone).
    pub fn has_parent(&self) -> bool {
        self.parent_file_name_hint
            .as_deref()
            .is_some_and(|h| !h.is_empty())
            || self.parent_cid.is_some_and(|c| c != u32::MAX)
    }

    /// A `ddb.*` value.
    pub fn ddb(&self, key: &str) -> Option<&str> {
        // Stored keys are lower-case, so this matches them as a lower-cased `key` would.
        self.ddb
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    }
}

fn unquote(v: &str) -> &str {
    let v = trim_str(v);
    v.strip_prefix('"')
        .and_then(|x| x.strip_suffix('"'))
        .unwrap_or(v)
}

/// Whether `line` starts with the word `word` (followed by ASCII white space or the end).
fn first_word_is(line: &str, word: &str) -> bool {
    line.strip_prefix(word)
        .is_some_and(|rest| rest.as_bytes().first().is_none_or(u8::is_ascii_whitespace))
}

/// Parses descriptor text. The text may be NUL-padded (embedded descriptors are). Fails when
/// it is not a descriptor at all.
pub fn parse_descriptor(bytes: &[u8]) -> Result<Descriptor, InventoryError> {
    if bytes.len() as u64 > MAX_DESCRIPTOR_BYTES {
        return Err(InventoryError::Limit {
            what: format!("descriptor of {} bytes", bytes.len()),
            limit: MAX_DESCRIPTOR_BYTES,
        });
    }
    let bytes = &bytes[..find_byte(0, bytes).unwrap_or(bytes.len())];
    // Borrowed for UTF-8 text: only the values kept below are copied.
    let text = crate::text::decode_cow(bytes);
    let mut d = Descriptor::default();
    let mut recognised = 0usize;
    let mut bad = 0usize;
    let mut rest: &str = &text;
    // Lines as `str::lines` splits them (the `\r` of a CRLF goes with the trimming); the byte
    // bound ensures the count of lines is bounded too.
    for n in 0.. {
        if rest.is_empty() {
            break;
        }
        let (raw, next) = match find_byte(b'\n', rest.as_bytes()) {
            Some(nl) => (&rest[..nl], &rest[nl + 1..]),
            None => (rest, ""),
        };
        rest = next;
        let line = trim_str(raw);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if first_word_is(line, "RW")
            || first_word_is(line, "RDONLY")
            || first_word_is(line, "NOACCESS")
        {
            match parse_extent(line) {
                Ok(e) => {
                    recognised += 1;
                    if d.extents.len() < MAX_EXTENTS {
                        d.extents.push(e);
                    } else {
                        d.extents_dropped += 1;
                    }
                }
                Err(why) => {
                    bad += 1;
                    if d.warnings.len() < 8 {
                        d.warnings.push(format!("line {}: {why}", n + 1));
                    }
                }
            }
            continue;
        }
        let Some((k, v)) =
            find_byte(b'=', line.as_bytes()).map(|eq| (&line[..eq], &line[eq + 1..]))
        else {
            bad += 1;
            if d.warnings.len() < 8 {
                d.warnings
                    .push(format!("line {}: neither key=value nor an extent", n + 1));
            }
            continue;
        };
        recognised += 1;
        let key = trim_str(k);
        let value = unquote(v);
        let hex = || u32::from_str_radix(trim_str(value), 16).ok();
        // Keys are case-insensitive; compared in place rather than lower-cased into a copy.
        let is = |name: &str| key.eq_ignore_ascii_case(name);
        // Most lines of a descriptor are `ddb.*`: test for them first.
        if starts_with_ignore_ascii_case(key, "ddb.") {
            d.ddb.push(key, value);
        } else if is("version") {
            d.version = trim_str(value).parse().ok();
        } else if is("cid") {
            d.cid = hex();
        } else if is("parentcid") {
            d.parent_cid = hex();
        } else if is("createtype") {
            d.create_type = Some(value.to_string());
        } else if is("parentfilenamehint") {
            d.parent_file_name_hint = Some(value.to_string());
        } else if is("changetrackpath") {
            d.change_track_path = Some(value.to_string());
        }
    }
    if recognised == 0 || bad > recognised || (d.create_type.is_none() && d.extents.is_empty()) {
        return Err(InventoryError::Parse {
            format: "vmdk",
            detail: format!(
                "not a disk descriptor: no createType or extent lines ({recognised} lines understood, {bad} not)"
            ),
        });
    }
    Ok(d)
}

/// Splits off the next word (a run of non-blanks) of `rest`.
fn next_word<'a>(rest: &mut &'a str) -> Option<&'a str> {
    let s = trim_start_str(rest);
    if s.is_empty() {
        return None;
    }
    let end = s.find(|c: char| c.is_ascii_whitespace()).unwrap_or(s.len());
    *rest = &s[end..];
    Some(&s[..end])
}

fn parse_extent(line: &str) -> Result<ExtentLine, &'static str> {
    // ACCESS SECTORS TYPE, then an optional quoted file name (which may hold blanks) and an
    // optional offset. Runs of blanks and tabs count as one separator.
    let mut rest = line;
    let access = next_word(&mut rest).ok_or("empty extent line")?;
    let sectors = next_word(&mut rest)
        .ok_or("extent line without a size")?
        .parse::<u64>()
        .map_err(|_| "extent size is not a number")?;
    let kind = next_word(&mut rest).ok_or("extent line without a type")?;
    let s = trim_start_str(rest);
    let (file_name, after) = if let Some(q) = s.strip_prefix('"') {
        let end = find_byte(b'"', q.as_bytes()).ok_or("unterminated extent file name")?;
        (Some(&q[..end]), &q[end + 1..])
    } else if s.is_empty() {
        (None, "")
    } else {
        let end = s.find(|c: char| c.is_ascii_whitespace()).unwrap_or(s.len());
        (Some(&s[..end]), &s[end..])
    };
    if file_name.is_none() && !kind.eq_ignore_ascii_case("ZERO") {
        return Err("extent without a file name");
    }
    let offset = match after.split_ascii_whitespace().next() {
        Some(o) => o.parse().map_err(|_| "extent offset is not a number")?,
        None => 0,
    };
    Ok(ExtentLine {
        access: access.to_string(),
        sectors,
        kind: kind.to_ascii_uppercase(),
        file_name: file_name.map(str::to_string),
        offset,
    })
}

/// Whether an extent type keeps its data as a delta over a parent.
pub fn is_delta_kind(kind: &str) -> bool {
    matches!(kind, "VMFSSPARSE" | "SESPARSE" | "SPARSE" | "VSANSPARSE")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_spacing_and_quoted_names() {
        let d = parse_descriptor(
            b"# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n  createType = \"vmfs\"\n\n# Extent description\nRW\t41943040   VMFS  \"my disk-flat.vmdk\"\nRW 10 FLAT \"x.vmdk\" 2048\nRDONLY 5 ZERO\n",
        )
        .unwrap();
        assert_eq!(d.create_type.as_deref(), Some("vmfs"));
        assert_eq!(d.extents.len(), 3);
        assert_eq!(d.extents[0].file_name.as_deref(), Some("my disk-flat.vmdk"));
        assert_eq!(d.extents[1].offset, 2048);
        assert_eq!(d.extents[2].kind, "ZERO");
        assert!(!d.has_parent());
    }

    #[test]
    fn keys_any_case_and_blanks_as_str_trim_sees_them() {
        // VT and no-break spaces are white space to `str::trim` (what the parser always used).
        let d = parse_descriptor(
            "CreateType = \u{a0}\"vmfs\"\x0b\r\nCID=0000000A\r\nPARENTCID = ffffffff\r\nVersion = \" 1 \"\nDDB.UUID = \"x\"\nddb.uuid = \"y\"\n\x0bRW 8 vmfs \"a b.vmdk\"\t 16 \r\nRDONLY\t4\tzero\n"
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(d.create_type.as_deref(), Some("vmfs"));
        assert_eq!(d.cid, Some(10));
        assert_eq!(d.parent_cid, Some(u32::MAX));
        assert_eq!(d.version, Some(1));
        assert_eq!(d.ddb("ddb.uuid"), Some("x"), "the first ddb line wins");
        assert_eq!(d.ddb("DDB.Uuid"), Some("x"));
        assert_eq!(d.ddb.len(), 2);
        assert_eq!(
            d.ddb.iter().collect::<Vec<_>>(),
            [("ddb.uuid", "x"), ("ddb.uuid", "y")]
        );
        assert_eq!(d.extents.len(), 2);
        assert_eq!(d.extents[0].kind, "VMFS");
        assert_eq!(d.extents[0].file_name.as_deref(), Some("a b.vmdk"));
        assert_eq!(d.extents[0].offset, 16);
        assert_eq!(d.extents[1].kind, "ZERO");
        assert!(d.warnings.is_empty(), "{:?}", d.warnings);
        // "RWX" is not an access word, and a key without '=' is a warning with its line.
        let d =
            parse_descriptor(b"createType=\"vmfs\"\nRWX 1 FLAT \"a\"\nRW 1 FLAT \"a\"\n").unwrap();
        assert_eq!(d.extents.len(), 1);
        assert_eq!(d.warnings, ["line 2: neither key=value nor an extent"]);
    }

    #[test]
    fn garbage_is_refused() {
        assert!(parse_descriptor(b"hello world\nthis is not\n").is_err());
        assert!(parse_descriptor(b"").is_err());
        assert_eq!(probe(b"\x00\x01garbage"), Probe::Data);
    }

    #[test]
    fn sparse_header_bounds() {
        let mut h = vec![0u8; 512];
        h[..4].copy_from_slice(b"KDMV");
        h[4] = 1;
        h[28] = 1; // descriptorOffset = 1 sector
        h[36] = 0xFF; // descriptorSize = 255 sectors (128 KiB), file too small
        let hdr = parse_sparse_header(&h).unwrap();
        assert!(hdr.descriptor_range(4096).is_err());
        h[36..44].copy_from_slice(&u64::MAX.to_le_bytes());
        let hdr = parse_sparse_header(&h).unwrap();
        assert!(hdr.descriptor_range(u64::MAX).is_err());
    }
}
