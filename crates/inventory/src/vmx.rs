//! VMware `.vmx` (and `.vmtx`, `.vmsd`, `.vmxf`-style dictionary) files.
//!
//! A dictionary file is a list of `key = "value"` lines. Keys are case-insensitive. Inside a
//! value, `|XX` (two hex digits) stands for the byte 0xXX, which is how VMware writes `"`, `|`
//! and line breaks. The optional `.encoding` key names the charset of the unescaped bytes.

use crate::InventoryError;
use crate::text::{
    HIGH, ONES, ascii_lower_word, bytes_below, contains_ignore_ascii_case,
    ends_with_ignore_ascii_case, find_byte, find_either, rsplit_once_byte, split_once_byte,
    starts_with_ignore_ascii_case, word_at, zero_bytes,
};

/// Lines kept at most; a 1 MiB config has far fewer, so more means a hostile file.
pub const MAX_LINES: usize = 200_000;

/// A parsed dictionary file.
///
/// Every key and value lives in one string (keys lower-cased, values unescaped and decoded),
/// so parsing a config costs a handful of allocations however many lines it has; inventorying
/// thousands of VMs parses thousands of these.
#[derive(Clone, Debug, Default)]
pub struct Dictionary {
    /// Lower-case keys and decoded values of all entries, back to back.
    text: String,
    /// Where each entry's key and value lie in `text`, in file order (duplicates included).
    entries: Vec<Span>,
    /// Open-addressing hash table over `entries` (slot = entry index + 1, 0 = empty), holding
    /// the last occurrence of each key. Its length is a power of two at least twice the entry
    /// count, so a probe always meets an empty slot.
    table: Vec<u32>,
    /// The `.encoding` value, if any.
    pub encoding: Option<String>,
    /// Lines that did not parse (line number and reason), at most a few kept.
    pub warnings: Vec<String>,
}

/// One entry: the key is `text[key..value]`, the value `text[value..end]`.
#[derive(Clone, Copy, Debug, Default)]
struct Span {
    key: usize,
    value: usize,
    end: usize,
}

/// How many malformed lines are described in [`Dictionary::warnings`].
const MAX_WARNINGS: usize = 8;

impl Dictionary {
    /// Parses a dictionary file. Fails when the bytes are not a dictionary at all (binary data,
    /// or more malformed lines than good ones); odd lines in an otherwise good file only add
    /// warnings.
    pub fn parse(bytes: &[u8], format: &'static str) -> Result<Dictionary, InventoryError> {
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        let head = &bytes[..bytes.len().min(64 * 1024)];
        // A fold of the smallest byte, which the compiler vectorises (no early exit needed:
        // text has no NUL at all).
        if head.iter().fold(u8::MAX, |m, &b| m.min(b)) == 0 {
            let nul = head.iter().filter(|&&b| b == 0).count();
            return Err(InventoryError::Parse {
                format,
                detail: format!(
                    "binary data ({nul} NUL bytes in the first 64 KiB), not a {format} text file"
                ),
            });
        }
        // First pass: keys lower-cased and values unescaped (still raw bytes) into one buffer.
        // Values are decoded once the whole file is read, because `.encoding` may come last.
        let mut buf: Vec<u8> = Vec::with_capacity(bytes.len());
        let mut entries: Vec<Span> = Vec::with_capacity((bytes.len() / 24 + 1).min(4096));
        let mut encoding_entry = None;
        let mut bad = 0usize;
        let mut warnings = Vec::new();
        let mut start = 0;
        // One more line than newlines; the bound is checked before each line is read.
        for lineno in 0..=MAX_LINES {
            if lineno >= MAX_LINES {
                return Err(InventoryError::Limit {
                    what: format!("{format} line count"),
                    limit: MAX_LINES as u64,
                });
            }
            let rest = &bytes[start..];
            let end = find_byte(b'\n', rest).unwrap_or(rest.len());
            let line = trim(&rest[..end]);
            start += end + 1;
            if !line.is_empty() && line[0] != b'#' {
                let key = buf.len();
                match parse_line(line, &mut buf) {
                    Ok(value) => {
                        if &buf[key..value] == b".encoding" {
                            encoding_entry = Some(entries.len());
                        }
                        entries.push(Span {
                            key,
                            value,
                            end: buf.len(),
                        });
                    }
                    Err(why) => {
                        buf.truncate(key);
                        bad += 1;
                        if warnings.len() < MAX_WARNINGS {
                            warnings.push(format!("line {}: {why}", lineno + 1));
                        }
                    }
                }
            }
            if start > bytes.len() {
                break;
            }
        }
        if entries.is_empty() || bad > entries.len() {
            return Err(InventoryError::Parse {
                format,
                detail: format!(
                    "not a {format} file: {} key = \"value\" lines, {bad} malformed{}",
                    entries.len(),
                    warnings
                        .first()
                        .map(|w| format!(" ({w})"))
                        .unwrap_or_default()
                ),
            });
        }
        let encoding = encoding_entry.map(|i: usize| {
            let s = entries[i];
            String::from_utf8_lossy(&buf[s.value..s.end]).into_owned()
        });
        let latin1 = encoding.as_deref().is_some_and(is_latin1_name);
        // Keys are valid UTF-8 and none is empty, so the whole buffer is valid UTF-8 exactly
        // when every value is: then it becomes the text as is.
        let text = if latin1 && !buf.is_ascii() {
            decode_values(&buf, &mut entries, true)
        } else {
            match String::from_utf8(buf) {
                Ok(text) => text,
                Err(e) => decode_values(e.as_bytes(), &mut entries, latin1),
            }
        };
        let mut d = Dictionary {
            text,
            entries,
            table: Vec::new(),
            encoding,
            warnings,
        };
        d.build_table();
        Ok(d)
    }

    /// The value of `key` (case-insensitive), last occurrence.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.find(key).map(|i| self.value_at(i))
    }

    /// A boolean value as VMware writes them (`TRUE`/`FALSE`, also `yes`/`1`).
    pub fn get_bool(&self, key: &str) -> Option<bool> {
        self.get(key).map(is_true)
    }

    /// An unsigned number (decimal, or hex with `0x`).
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(parse_u64)
    }

    /// All entries (lower-case keys) in file order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries
            .iter()
            .map(|s| (&self.text[s.key..s.value], &self.text[s.value..s.end]))
    }

    fn key_at(&self, i: usize) -> &str {
        let s = self.entries[i];
        &self.text[s.key..s.value]
    }

    fn value_at(&self, i: usize) -> &str {
        let s = self.entries[i];
        &self.text[s.value..s.end]
    }

    /// Index of the last entry whose key equals `key` ignoring ASCII case.
    fn find(&self, key: &str) -> Option<usize> {
        if self.table.is_empty() {
            return None;
        }
        let mask = self.table.len() - 1;
        let mut slot = slot_of(key.as_bytes(), mask);
        for _ in 0..self.table.len() {
            let i = match self.table[slot] {
                0 => return None,
                e => e as usize - 1,
            };
            if eq_lower(self.key_at(i).as_bytes(), key.as_bytes()) {
                return Some(i);
            }
            slot = (slot + 1) & mask;
        }
        None
    }

    fn build_table(&mut self) {
        // MAX_LINES bounds the entry count far below u32::MAX.
        let size = (self.entries.len() * 2).next_power_of_two().max(8);
        let mut table = vec![0u32; size];
        let mask = size - 1;
        for i in 0..self.entries.len() {
            let key = self.key_at(i);
            let mut slot = slot_of(key.as_bytes(), mask);
            for _ in 0..size {
                match table[slot] {
                    0 => {
                        table[slot] = i as u32 + 1;
                        break;
                    }
                    e if self.key_at(e as usize - 1) == key => {
                        // A later duplicate replaces the earlier one.
                        table[slot] = i as u32 + 1;
                        break;
                    }
                    _ => slot = (slot + 1) & mask,
                }
            }
        }
        self.table = table;
    }
}

/// The charsets VMware writes for the host's Western code page.
fn is_latin1_name(e: &str) -> bool {
    e.eq_ignore_ascii_case("windows-1252")
        || e.eq_ignore_ascii_case("latin1")
        || e.as_bytes()
            .get(..10)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"iso-8859-1"))
}

/// The slow path for files with non-ASCII values: rebuilds the text with every value decoded
/// as the file's charset says (Latin-1 for the Western code pages; otherwise UTF-8, with
/// Latin-1 for values that are not UTF-8, which older hosts wrote without an `.encoding`).
fn decode_values(buf: &[u8], entries: &mut [Span], latin1: bool) -> String {
    let mut text = String::with_capacity(buf.len() + buf.len() / 4);
    for s in entries.iter_mut() {
        let key = String::from_utf8_lossy(&buf[s.key..s.value]);
        let raw = &buf[s.value..s.end];
        s.key = text.len();
        text.push_str(&key);
        s.value = text.len();
        match std::str::from_utf8(raw) {
            Ok(v) if !latin1 => text.push_str(v),
            _ => text.extend(raw.iter().map(|&b| b as char)),
        }
        s.end = text.len();
    }
    text
}

/// Bucket of a key in a table of `mask + 1` slots. The hash folds ASCII case, so a stored
/// lower-case key and any spelling of it land in the same bucket.
fn slot_of(key: &[u8], mask: usize) -> usize {
    // Multiply-xor hashing over 8-byte words (the FxHash scheme); keys are short.
    const MUL: u64 = 0xF135_7AEA_2E62_A9C5;
    let mut h = key.len() as u64;
    for_each_word(key, |w| {
        h = (h ^ ascii_lower_word(w)).wrapping_mul(MUL).rotate_left(26);
        true
    });
    h = (h ^ (h >> 32)).wrapping_mul(MUL);
    (h >> 32) as usize & mask
}

/// Whether `query` equals `stored` (a lower-cased key) ignoring ASCII case, eight bytes at a
/// time.
fn eq_lower(stored: &[u8], query: &[u8]) -> bool {
    stored.len() == query.len() && {
        let mut at = 0;
        for_each_word(query, |w| {
            let same = word_or_short(stored, at) == ascii_lower_word(w);
            at += 8;
            same
        })
    }
}

/// Calls `f` on the words of `s` in order until it returns false, and says whether it never
/// did. A key shorter than 8 bytes is one zero-padded word; in a longer one the last word
/// overlaps the one before, so the same bytes always give the same words.
fn for_each_word(s: &[u8], mut f: impl FnMut(u64) -> bool) -> bool {
    let n = s.len();
    if n < 8 {
        return f(word_or_short(s, 0));
    }
    let mut i = 0;
    loop {
        if !f(word_at(s, i.min(n - 8))) {
            return false;
        }
        if i + 8 >= n {
            return true;
        }
        i += 8;
    }
}

/// The word [`for_each_word`] gives as the one starting at `i` (`i` a multiple of 8): the
/// zero-padded bytes of a short `s`, the overlapping last word of a long one.
fn word_or_short(s: &[u8], i: usize) -> u64 {
    let n = s.len();
    if n < 8 {
        s.iter()
            .enumerate()
            .fold(0, |w, (j, &b)| w | u64::from(b) << (8 * j))
    } else {
        word_at(s, i.min(n - 8))
    }
}

/// An unsigned number as VMware writes them (decimal, or hex with `0x`).
pub(crate) fn parse_u64(v: &str) -> Option<u64> {
    let v = v.trim();
    match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => v.parse().ok(),
    }
}

/// `u8::is_ascii_whitespace`, testing the common case (a byte above the space) first.
fn is_blank(b: u8) -> bool {
    b <= b' ' && b.is_ascii_whitespace()
}

fn trim_start(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s
        && is_blank(*first)
    {
        s = rest;
    }
    s
}

fn trim_end(mut s: &[u8]) -> &[u8] {
    while let [rest @ .., last] = s
        && is_blank(*last)
    {
        s = rest;
    }
    s
}

fn trim(s: &[u8]) -> &[u8] {
    trim_end(trim_start(s))
}

/// Appends `key` to `out` lower-cased (ASCII letters only) and tells whether it holds a blank,
/// a control character or a quote, and whether it holds non-ASCII bytes. Works on eight bytes
/// at a time, read from `key` itself: reading back words just copied into `out` would stall on
/// the copy's stores. The last word may overlap the previous one; only its new bytes are
/// appended, and checking bytes twice is harmless.
fn push_lowered_key(key: &[u8], out: &mut Vec<u8>) -> (bool, bool) {
    let n = key.len();
    if n < 8 {
        let (mut odd, mut high) = (false, 0u8);
        for &b in key {
            // Blanks and control characters are all <= 0x20, or DEL.
            odd |= (b <= b' ') | (b == b'"') | (b == 0x7F);
            high |= b;
            out.push(b.to_ascii_lowercase());
        }
        return (odd, high >= 0x80);
    }
    out.reserve(n);
    let (mut odd, mut high) = (0u64, 0u64);
    let mut check = |w: u64| {
        odd |= bytes_below(w, b' ' + 1)
            | zero_bytes(w ^ (ONES * u64::from(b'"')))
            | zero_bytes(w ^ (ONES * 0x7F));
        high |= w & HIGH;
        ascii_lower_word(w).to_le_bytes()
    };
    let mut i = 0;
    while i + 8 <= n {
        out.extend_from_slice(&check(word_at(key, i)));
        i += 8;
    }
    if i < n {
        let last = check(word_at(key, n - 8));
        out.extend_from_slice(&last[8 - (n - i)..]);
    }
    (odd != 0, high != 0)
}

/// Parses a (trimmed, non-empty) line: appends its key, lower-cased, then its value,
/// unescaped, to `buf`, and returns where the value starts. On error `buf` holds a partial
/// entry that the caller drops.
fn parse_line(line: &[u8], buf: &mut Vec<u8>) -> Result<usize, &'static str> {
    let eq = find_byte(b'=', line).ok_or("no '='")?;
    // The line is trimmed, so the key can only have blanks at its end and the value at its
    // start.
    let key = trim_end(&line[..eq]);
    if key.is_empty() {
        return Err("empty key");
    }
    let start = buf.len();
    let (odd, non_ascii) = push_lowered_key(key, buf);
    if odd {
        return Err("key contains blanks, quotes or control characters");
    }
    if non_ascii {
        // Keys are ASCII in practice; others are kept as valid UTF-8.
        buf.truncate(start);
        let mut k = String::from_utf8_lossy(key).into_owned();
        k.make_ascii_lowercase();
        buf.extend_from_slice(k.as_bytes());
    }
    let value = buf.len();
    let rest = trim_start(&line[eq + 1..]);
    match rest.strip_prefix(b"\"") {
        Some(q) => {
            let end = unescape_until_quote(q, buf).ok_or("unterminated quoted value")?;
            let after = trim_start(&q[end + 1..]);
            if !after.is_empty() && after[0] != b'#' {
                return Err("text after the closing quote");
            }
        }
        None => unescape_into(rest, buf),
    }
    Ok(value)
}

/// Replaces `|XX` escapes by the byte they stand for. A `|` not followed by two hex digits is
/// kept as is (VMware itself always escapes `|` as `|7C`, so this only happens in hand-edited
/// files).
pub fn unescape(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    unescape_into(raw, &mut out);
    out
}

/// [`unescape`], appending to `out`.
fn unescape_into(raw: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while let Some(bar) = find_byte(b'|', &raw[i..]) {
        out.extend_from_slice(&raw[i..i + bar]);
        i += bar + unescape_one(&raw[i + bar..], out);
    }
    out.extend_from_slice(&raw[i..]);
}

/// Unescapes the quoted value `q` (what follows the opening quote) up to its closing quote
/// into `out`, in one pass; returns the index of the closing quote, `None` when there is none.
/// An escape never swallows a quote, since a quote is not a hex digit.
fn unescape_until_quote(q: &[u8], out: &mut Vec<u8>) -> Option<usize> {
    let mut i = 0;
    loop {
        let at = i + find_either(b'"', b'|', &q[i..])?;
        out.extend_from_slice(&q[i..at]);
        if q[at] == b'"' {
            return Some(at);
        }
        i = at + unescape_one(&q[at..], out);
    }
}

/// Decodes the escape at the start of `s` (which starts with `|`) into `out`; returns how many
/// bytes it used: 3 for `|XX`, 1 for a lone `|`, kept as is.
fn unescape_one(s: &[u8], out: &mut Vec<u8>) -> usize {
    if let [_, h, l, ..] = *s
        && let (Some(h), Some(l)) = (hex(h), hex(l))
    {
        out.push(h << 4 | l);
        3
    } else {
        out.push(b'|');
        1
    }
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// The bus a virtual disk hangs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Bus {
    /// Parallel/SAS SCSI (`scsiN:M`).
    Scsi,
    /// IDE (`ideN:M`).
    Ide,
    /// SATA/AHCI (`sataN:M`).
    Sata,
    /// NVMe (`nvmeN:M`).
    Nvme,
}

/// One disk device of a `.vmx`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmxDisk {
    /// Device node as VMware names it (`scsi0:1`).
    pub device: String,
    /// Bus.
    pub bus: Bus,
    /// The `.fileName` value: a descriptor path, relative to the `.vmx` directory or absolute.
    pub file_name: String,
    /// The `.deviceType` value, if any.
    pub device_type: Option<String>,
    /// The `.mode` value (`persistent`, `independent-persistent`…), if any.
    pub mode: Option<String>,
}

/// A parsed `.vmx` with accessors for what the inventory needs.
#[derive(Clone, Debug)]
pub struct Vmx {
    /// All keys.
    pub dict: Dictionary,
}

/// Device types that are not hard disks (CD/DVD images and drives, SCSI passthrough).
fn is_not_a_disk(device_type: &str) -> bool {
    ["cdrom", "passthru", "floppy"]
        .iter()
        .any(|t| contains_ignore_ascii_case(device_type, t))
}

impl Vmx {
    /// Parses a `.vmx` or `.vmtx`.
    pub fn parse(bytes: &[u8]) -> Result<Vmx, InventoryError> {
        let dict = Dictionary::parse(bytes, "vmx")?;
        // A dictionary without a single VMware key is some other text file named .vmx.
        let known = [
            "config.version",
            "virtualhw.version",
            "displayname",
            "guestos",
            "memsize",
        ];
        if !known.iter().any(|k| dict.get(k).is_some()) && dict.disks_hint() == 0 {
            return Err(InventoryError::Parse {
                format: "vmx",
                detail: "no VMware keys (config.version, virtualHW.version, displayName, guestOS, memSize, disks)".into(),
            });
        }
        Ok(Vmx { dict })
    }

    /// `displayName`.
    pub fn display_name(&self) -> Option<&str> {
        self.dict.get("displayName").filter(|s| !s.is_empty())
    }
    /// `guestOS` (VMware's identifier, e.g. `windows2019srv-64`).
    pub fn guest_os(&self) -> Option<&str> {
        self.dict.get("guestOS").filter(|s| !s.is_empty())
    }
    /// `memSize` in MiB.
    pub fn mem_size_mb(&self) -> Option<u64> {
        self.dict.get_u64("memSize")
    }
    /// `numvcpus` (VMware's default is 1 when absent).
    pub fn num_vcpus(&self) -> Option<u64> {
        self.dict.get_u64("numvcpus")
    }
    /// `uuid.bios`.
    pub fn uuid_bios(&self) -> Option<&str> {
        self.dict.get("uuid.bios")
    }
    /// `vc.uuid` (vCenter's instance UUID).
    pub fn vc_uuid(&self) -> Option<&str> {
        self.dict.get("vc.uuid")
    }
    /// `nvram` file name.
    pub fn nvram(&self) -> Option<&str> {
        self.dict.get("nvram").filter(|s| !s.is_empty())
    }
    /// `extendedConfigFile` (the `.vmxf`).
    pub fn extended_config(&self) -> Option<&str> {
        self.dict
            .get("extendedConfigFile")
            .filter(|s| !s.is_empty())
    }
    /// `sched.swap.derivedName`: the swap file of the running VM, as an absolute path.
    pub fn swap_derived_name(&self) -> Option<&str> {
        self.dict
            .get("sched.swap.derivedName")
            .filter(|s| !s.is_empty())
    }
    /// `checkpoint.vmState`: the suspend state file (`.vmss`) of a suspended VM.
    pub fn checkpoint_vm_state(&self) -> Option<&str> {
        self.dict
            .get("checkpoint.vmState")
            .filter(|s| !s.is_empty())
    }
    /// `workingDir`: where snapshots and swap go when not beside the `.vmx`.
    pub fn working_dir(&self) -> Option<&str> {
        self.dict
            .get("workingDir")
            .filter(|s| !s.is_empty() && *s != ".")
    }

    /// Every present hard disk, in device order. CD/DVD drives, passthrough devices, devices
    /// whose `.present` is FALSE and disks on an absent controller are left out.
    pub fn disks(&self) -> Vec<VmxDisk> {
        let dict = &self.dict;
        // One pass over the keys collects the last value of every `<device>.<property>` the
        // disks need, instead of a hash lookup per property per disk.
        let mut props: Vec<DeviceProps<'_>> = Vec::new();
        let mut files: Vec<(&str, Bus, usize)> = Vec::new();
        for i in 0..dict.entries.len() {
            let key = dict.key_at(i);
            if !matches!(key.as_bytes().first(), Some(b's' | b'i' | b'n')) {
                continue;
            }
            if let Some((device, bus)) = disk_key(key) {
                files.push((device, bus, i));
                continue;
            }
            let Some((device, property)) = rsplit_once_byte(key, b'.') else {
                continue;
            };
            let slot = match property {
                "present" => 0,
                "devicetype" => 1,
                "mode" => 2,
                _ => continue,
            };
            let at = match props.iter().position(|p| p.device == device) {
                Some(at) => at,
                None => {
                    props.push(DeviceProps {
                        device,
                        last: [None; 3],
                    });
                    props.len() - 1
                }
            };
            // Entries are in file order: a later duplicate replaces the earlier one.
            props[at].last[slot] = Some(i);
        }
        let prop = |device: &str, slot: usize| {
            props
                .iter()
                .find(|p| p.device == device)
                .and_then(|p| p.last[slot])
                .map(|i| dict.value_at(i))
        };
        let is_false = |v: Option<&str>| v.is_some_and(|v| !is_true(v));
        let mut out: Vec<VmxDisk> = Vec::new();
        for (k, &(device, bus, i)) in files.iter().enumerate() {
            // Only the last occurrence of a duplicated key counts, as for every other key.
            if files[k + 1..].iter().any(|f| f.0 == device) {
                continue;
            }
            let controller = &device[..find_byte(b':', device.as_bytes()).unwrap_or(device.len())];
            if is_false(prop(device, 0)) || is_false(prop(controller, 0)) {
                continue;
            }
            let device_type = prop(device, 1);
            if device_type.is_some_and(is_not_a_disk) {
                continue;
            }
            let value = dict.value_at(i);
            if names_no_disk_file(value) {
                continue;
            }
            out.push(VmxDisk {
                device: device.to_string(),
                bus,
                file_name: value.to_string(),
                device_type: device_type.map(str::to_string),
                mode: prop(device, 2).map(str::to_string),
            });
        }
        if out.len() > 1 {
            out.sort_by_cached_key(|d| device_order(&d.device));
        }
        out
    }
}

/// The disk properties of one device (or controller) of a `.vmx`: the entry holding the last
/// `.present`, `.deviceType` and `.mode`.
struct DeviceProps<'a> {
    device: &'a str,
    last: [Option<usize>; 3],
}

/// True when a disk's `.fileName` names no disk file: empty, an ISO image, a host device, or
/// a CD-ROM's `auto detect`.
fn names_no_disk_file(value: &str) -> bool {
    value.is_empty()
        || ends_with_ignore_ascii_case(value, ".iso")
        || starts_with_ignore_ascii_case(value, "/dev/")
        || value.eq_ignore_ascii_case("auto detect")
}

/// A boolean as VMware writes them (`TRUE`, also `yes`/`1`/`on`); anything else is false.
fn is_true(v: &str) -> bool {
    let v = v.trim_ascii();
    ["true", "yes", "1", "on"]
        .iter()
        .any(|t| v.eq_ignore_ascii_case(t))
}

impl Dictionary {
    fn disks_hint(&self) -> usize {
        (0..self.entries.len())
            .filter(|&i| disk_key(self.key_at(i)).is_some())
            .count()
    }
}

/// `scsi0:1.filename` -> (`scsi0:1`, Scsi).
fn disk_key(key: &str) -> Option<(&str, Bus)> {
    let dev = key.strip_suffix(".filename")?;
    let (bus, rest) = [
        ("scsi", Bus::Scsi),
        ("ide", Bus::Ide),
        ("sata", Bus::Sata),
        ("nvme", Bus::Nvme),
    ]
    .into_iter()
    .find_map(|(p, b)| dev.strip_prefix(p).map(|r| (b, r)))?;
    let (ctl, unit) = split_once_byte(rest, b':')?;
    if ctl.is_empty()
        || unit.is_empty()
        || !ctl.bytes().all(|b| b.is_ascii_digit())
        || !unit.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    Some((dev, bus))
}

fn device_order(device: &str) -> (u8, u32, u32) {
    let bus = if device.starts_with("ide") {
        0
    } else if device.starts_with("sata") {
        1
    } else if device.starts_with("scsi") {
        2
    } else {
        3
    };
    let digits = device.trim_start_matches(|c: char| c.is_ascii_alphabetic());
    let (c, u) = split_once_byte(digits, b':').unwrap_or(("0", "0"));
    (bus, c.parse().unwrap_or(0), u.parse().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dict(text: &[u8]) -> Dictionary {
        Dictionary::parse(text, "vmx").unwrap()
    }

    #[test]
    fn escape_at_the_end_of_a_value() {
        let d =
            dict(b"a = \"x|41\"\nb = \"x|4\"\nc = \"|7C\"\nd = y|22\ne = \"|\"\nf = \"||41\"\n");
        assert_eq!(d.get("a"), Some("xA"));
        assert_eq!(d.get("b"), Some("x|4"), "a cut escape is kept as is");
        assert_eq!(d.get("c"), Some("|"));
        assert_eq!(d.get("d"), Some("y\""), "unquoted values are unescaped too");
        assert_eq!(d.get("e"), Some("|"));
        assert_eq!(d.get("f"), Some("|A"));
        assert_eq!(unescape(b"ab|0a|0D|"), b"ab\n\r|");
    }

    #[test]
    fn an_escaped_quote_does_not_end_the_value() {
        let d = dict(b"displayName = \"say |22hi|22\" # comment\n");
        assert_eq!(d.get("displayname"), Some("say \"hi\""));
        let err = Dictionary::parse(b"a = \"b\" c\n", "vmx").unwrap_err();
        assert!(
            err.to_string().contains("text after the closing quote"),
            "{err}"
        );
    }

    #[test]
    fn uppercase_keys_and_duplicates() {
        let text: &[u8] = b"Scsi0:0.FileName = \"old.vmdk\"\nmemSize = \"1\"\nSCSI0:0.fileName = \"new.vmdk\"\nMEMSIZE = 2\nscsi0:0.present = TRUE\n";
        let d = dict(text);
        assert_eq!(
            d.get("scsi0:0.filename"),
            Some("new.vmdk"),
            "the last duplicate wins"
        );
        assert_eq!(d.get("sCsI0:0.FILENAME"), Some("new.vmdk"));
        assert_eq!(d.get_u64("memsize"), Some(2));
        let keys: Vec<&str> = d.entries().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "scsi0:0.filename",
                "memsize",
                "scsi0:0.filename",
                "memsize",
                "scsi0:0.present"
            ],
            "entries keep every line, keys lower-cased"
        );
        let disks = Vmx::parse(text).unwrap().disks();
        assert_eq!(disks.len(), 1, "one device, named twice");
        assert_eq!(disks[0].file_name, "new.vmdk");
        assert_eq!(d.get("scsi0:0.filenam"), None);
        assert_eq!(d.get(""), None);
    }

    #[test]
    fn latin1_values() {
        // Declared code page: every value is Latin-1, even bytes that would be valid UTF-8.
        let d = dict(b"a = \"caf\xe9\"\nb = \"\xc3\xa9\"\n.encoding = \"windows-1252\"\n");
        assert_eq!(d.get("a"), Some("café"));
        assert_eq!(d.get("b"), Some("Ã©"));
        assert_eq!(d.encoding.as_deref(), Some("windows-1252"));
        // UTF-8 declared (or nothing): UTF-8 values stay, invalid ones fall back to Latin-1.
        let d = dict(b"a = \"caf|E9\"\nb = \"\xc3\xa9\"\nc = \"plain\"\n");
        assert_eq!(d.get("a"), Some("café"));
        assert_eq!(d.get("b"), Some("é"));
        assert_eq!(d.get("c"), Some("plain"));
        for name in ["ISO-8859-1", "iso-8859-15", "Latin1", "WINDOWS-1252"] {
            let text = format!(".encoding = \"{name}\"\nx = \"\u{e9}\"\n");
            assert_eq!(dict(text.as_bytes()).get("x"), Some("Ã©"), "{name}");
        }
    }

    #[test]
    fn non_ascii_and_invalid_keys() {
        let d = dict(b"Cl\xc3\xa9 = \"1\"\nk\xff = \"2\"\n");
        assert_eq!(d.get("cl\u{e9}"), Some("1"));
        assert_eq!(d.get("CL\u{e9}"), Some("1"));
        assert_eq!(
            d.get("k\u{fffd}"),
            Some("2"),
            "invalid UTF-8 in a key is replaced"
        );
        let d = Dictionary::parse(
            b"a b = 1\nc = 2\nd\x7f = 3\ne = 4\n\"f\" = 5\ng = 6\n",
            "vmx",
        )
        .unwrap();
        assert_eq!(d.warnings.len(), 3, "{:?}", d.warnings);
        assert!(d.warnings[0].starts_with("line 1: key contains blanks"));
        // A long key with a blank in its overlapping last word.
        let d = Dictionary::parse(b"abcdefghij k = 1\nabcdefghijk = 2\nx = 3\n", "vmx").unwrap();
        assert_eq!(d.warnings.len(), 1);
        assert_eq!(d.get("ABCDEFGHIJK"), Some("2"));
    }

    #[test]
    fn many_keys_all_found() {
        let text: String = (0..5000)
            .map(|i| format!("Key.{i}.Name = \"v{i}\"\n"))
            .collect();
        let d = dict(text.as_bytes());
        for i in 0..5000 {
            assert_eq!(
                d.get(&format!("key.{i}.name")),
                Some(format!("v{i}").as_str())
            );
        }
        assert_eq!(d.get("key.5000.name"), None);
        assert_eq!(Dictionary::default().get("x"), None);
    }

    #[test]
    fn line_limit_and_binary() {
        let ok = "a = \"b\"\n".repeat(MAX_LINES - 1);
        assert!(Dictionary::parse(ok.as_bytes(), "vmx").is_ok());
        // MAX_LINES newlines make MAX_LINES + 1 lines (the last one empty).
        let over = "a = \"b\"\n".repeat(MAX_LINES);
        let err = Dictionary::parse(over.as_bytes(), "vmx").unwrap_err();
        assert!(matches!(err, InventoryError::Limit { .. }), "{err}");
        let err = Dictionary::parse(b"a = 1\n\0\0", "vmx").unwrap_err();
        assert!(err.to_string().contains("2 NUL bytes"), "{err}");
    }

    #[test]
    fn ascii_lower_word_matches_bytes() {
        for b in 0..=255u8 {
            for shift in 0..8 {
                let w = u64::from(b) << (8 * shift) | 0x4142_5a5b_6061_7a40;
                let mut bytes = w.to_le_bytes();
                bytes.make_ascii_lowercase();
                assert_eq!(ascii_lower_word(w), u64::from_le_bytes(bytes), "{b:#x}");
            }
        }
    }

    #[test]
    fn key_check_of_every_length() {
        for len in 1..40 {
            let key: Vec<u8> = (0..len).map(|i| b'A' + (i % 26) as u8).collect();
            let mut out = b"kept".to_vec();
            assert_eq!(push_lowered_key(&key, &mut out), (false, false));
            assert_eq!(out[..4], *b"kept");
            assert_eq!(out[4..], key.to_ascii_lowercase());
            for at in 0..len {
                for bad in [b' ', b'\t', 0x01, b'"', 0x7F] {
                    let mut k = key.clone();
                    k[at] = bad;
                    assert!(
                        push_lowered_key(&k, &mut Vec::new()).0,
                        "{len} {at} {bad:#x}"
                    );
                }
                let mut k = key.clone();
                k[at] = 0xC3;
                assert_eq!(push_lowered_key(&k, &mut Vec::new()), (false, true));
            }
        }
    }

    /// The disks as the first implementation found them, a hash lookup per property.
    fn disks_by_lookup(v: &Vmx) -> Vec<VmxDisk> {
        let dict = &v.dict;
        let mut out = Vec::new();
        // One buffer for the `<device>.<property>` keys looked up below.
        let mut key = String::with_capacity(32);
        let mut get = |device: &str, property: &str| {
            key.clear();
            key.push_str(device);
            key.push_str(property);
            dict.find(&key).map(|i| dict.value_at(i))
        };
        let is_false = |v: Option<&str>| v.is_some_and(|v| !is_true(v));
        for i in 0..dict.entries.len() {
            let Some((device, bus)) = disk_key(dict.key_at(i)) else {
                continue;
            };
            // Only the last occurrence of a duplicated key counts, as for every other key.
            if dict.find(dict.key_at(i)) != Some(i) {
                continue;
            }
            let controller = &device[..find_byte(b':', device.as_bytes()).unwrap_or(device.len())];
            if is_false(get(device, ".present")) || is_false(get(controller, ".present")) {
                continue;
            }
            let device_type = get(device, ".devicetype");
            if device_type.is_some_and(is_not_a_disk) {
                continue;
            }
            let value = dict.value_at(i);
            if names_no_disk_file(value) {
                continue;
            }
            if out.iter().any(|d: &VmxDisk| d.device == device) {
                continue;
            }
            let mode = get(device, ".mode").map(str::to_string);
            out.push(VmxDisk {
                device: device.to_string(),
                bus,
                file_name: value.to_string(),
                device_type: device_type.map(str::to_string),
                mode,
            });
        }
        if out.len() > 1 {
            out.sort_by_cached_key(|d| device_order(&d.device));
        }
        out
    }

    proptest::proptest! {
        /// The one-pass `disks` finds what a lookup per property finds, whatever the keys,
        /// their case, their order and their duplicates.
        #[test]
        fn disks_in_one_pass_as_by_lookup(
            lines in proptest::collection::vec((0usize..9, 0usize..6, 0usize..12), 0..24)
        ) {
            const DEVICES: [&str; 9] =
                ["scsi0:0", "scsi0:1", "SCSI0:1", "ide1:0", "sata0:0", "nvme0:0", "scsi0", "sata0", "scsi00:1"];
            const PROPS: [&str; 6] =
                [".fileName", ".present", ".deviceType", ".mode", ".FILENAME", ".virtualDev"];
            const VALUES: [&str; 12] = [
                "a.vmdk", "b.ISO", "/dev/sda", "auto detect", "TRUE", "FALSE", "no",
                "cdrom-raw", "scsi-passthru", "independent-persistent", "", "c d.vmdk",
            ];
            let mut text = String::from("config.version = \"8\"\n");
            for (d, p, v) in lines {
                text.push_str(&format!("{}{} = \"{}\"\n", DEVICES[d], PROPS[p], VALUES[v]));
            }
            let v = Vmx::parse(text.as_bytes()).unwrap();
            proptest::prop_assert_eq!(v.disks(), disks_by_lookup(&v), "{}", text);
        }
    }

    #[test]
    fn disks_skip_cdroms_isos_and_absent_devices() {
        let v = Vmx::parse(
            b"config.version = \"8\"\n\
scsi0:0.fileName = \"a.vmdk\"\n\
scsi0:1.fileName = \"b.ISO\"\n\
scsi0:2.fileName = \"/Dev/sdb\"\n\
scsi0:3.fileName = \"c.vmdk\"\nscsi0:3.deviceType = \"SCSI-Passthru\"\n\
scsi0:4.fileName = \"d.vmdk\"\nscsi0:4.present = \"FALSE\"\n\
sata0:0.fileName = \"e.vmdk\"\nsata0.present = \"no\"\n\
ide0:0.fileName = \"Auto Detect\"\n\
nvme0:0.fileName = \"f.vmdk\"\nnvme0:0.mode = \"independent-persistent\"\nnvme0:0.present = \"On\"\n",
        )
        .unwrap();
        let disks = v.disks();
        let got: Vec<(&str, &str, Option<&str>)> = disks
            .iter()
            .map(|d| (d.device.as_str(), d.file_name.as_str(), d.mode.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("scsi0:0", "a.vmdk", None),
                ("nvme0:0", "f.vmdk", Some("independent-persistent"))
            ]
        );
    }
}
