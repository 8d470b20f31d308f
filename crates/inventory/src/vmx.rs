//! VMware `.vmx` (and `.vmtx`, `.vmsd`, `.vmxf`-style dictionary) files.
//!
//! A dictionary file is a list of `key = "value"` lines. Keys are case-insensitive. Inside a
//! value, `|XX` (two hex digits) stands for the byte 0xXX, which is how VMware writes `"`, `|`
//! and line breaks. The optional `.encoding` key names the charset of the unescaped bytes.

use std::collections::HashMap;

use crate::InventoryError;

/// Lines kept at most; a 1 MiB config has far fewer, so more means a hostile file.
pub const MAX_LINES: usize = 200_000;

/// A parsed dictionary file.
#[derive(Clone, Debug, Default)]
pub struct Dictionary {
    /// `(lower-case key, value)` in file order; later duplicates win on lookup.
    entries: Vec<(String, String)>,
    /// Index into `entries` of the last occurrence of each key.
    index: HashMap<String, usize>,
    /// The `.encoding` value, if any.
    pub encoding: Option<String>,
    /// Lines that did not parse (line number and reason), at most a few kept.
    pub warnings: Vec<String>,
}

/// How many malformed lines are described in [`Dictionary::warnings`].
const MAX_WARNINGS: usize = 8;

impl Dictionary {
    /// Parses a dictionary file. Fails when the bytes are not a dictionary at all (binary data,
    /// or more malformed lines than good ones); odd lines in an otherwise good file only add
    /// warnings.
    pub fn parse(bytes: &[u8], format: &'static str) -> Result<Dictionary, InventoryError> {
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        let nul = bytes.iter().take(64 * 1024).filter(|&&b| b == 0).count();
        if nul > 0 {
            return Err(InventoryError::Parse {
                format,
                detail: format!(
                    "binary data ({nul} NUL bytes in the first 64 KiB), not a {format} text file"
                ),
            });
        }
        let mut raw: Vec<(String, Vec<u8>)> = Vec::new();
        let mut bad = 0usize;
        let mut warnings = Vec::new();
        for (lineno, line) in bytes.split(|&b| b == b'\n').enumerate() {
            if lineno >= MAX_LINES {
                return Err(InventoryError::Limit {
                    what: format!("{format} line count"),
                    limit: MAX_LINES as u64,
                });
            }
            let line = trim(line);
            if line.is_empty() || line[0] == b'#' {
                continue;
            }
            match parse_line(line) {
                Ok((k, v)) => raw.push((k, v)),
                Err(why) => {
                    bad += 1;
                    if warnings.len() < MAX_WARNINGS {
                        warnings.push(format!("line {}: {why}", lineno + 1));
                    }
                }
            }
        }
        if raw.is_empty() || bad > raw.len() {
            return Err(InventoryError::Parse {
                format,
                detail: format!(
                    "not a {format} file: {} key = \"value\" lines, {bad} malformed{}",
                    raw.len(),
                    warnings
                        .first()
                        .map(|w| format!(" ({w})"))
                        .unwrap_or_default()
                ),
            });
        }
        let encoding = raw
            .iter()
            .rev()
            .find(|(k, _)| k == ".encoding")
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned());
        let latin1 = encoding.as_deref().is_some_and(|e| {
            let e = e.to_ascii_lowercase();
            e == "windows-1252" || e.starts_with("iso-8859-1") || e == "latin1"
        });
        let mut d = Dictionary {
            encoding,
            warnings,
            ..Default::default()
        };
        for (k, v) in raw {
            let value = if latin1 {
                v.iter().map(|&b| b as char).collect()
            } else {
                match String::from_utf8(v) {
                    Ok(s) => s,
                    // Older hosts wrote the host code page without an .encoding line.
                    Err(e) => e.into_bytes().iter().map(|&b| b as char).collect(),
                }
            };
            d.index.insert(k.clone(), d.entries.len());
            d.entries.push((k, value));
        }
        Ok(d)
    }

    /// The value of `key` (case-insensitive), last occurrence.
    pub fn get(&self, key: &str) -> Option<&str> {
        let i = if key.bytes().any(|b| b.is_ascii_uppercase()) {
            self.index.get(&key.to_ascii_lowercase())
        } else {
            self.index.get(key)
        };
        i.map(|&i| self.entries[i].1.as_str())
    }

    /// A boolean value as VMware writes them (`TRUE`/`FALSE`, also `yes`/`1`).
    pub fn get_bool(&self, key: &str) -> Option<bool> {
        self.get(key).map(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "true" | "yes" | "1" | "on"
            )
        })
    }

    /// An unsigned number (decimal, or hex with `0x`).
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(parse_u64)
    }

    /// All entries (lower-case keys) in file order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

fn parse_u64(v: &str) -> Option<u64> {
    let v = v.trim();
    match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => v.parse().ok(),
    }
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if first.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = s {
        if last.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    s
}

fn parse_line(line: &[u8]) -> Result<(String, Vec<u8>), &'static str> {
    let eq = line.iter().position(|&b| b == b'=').ok_or("no '='")?;
    let key = trim(&line[..eq]);
    if key.is_empty() {
        return Err("empty key");
    }
    if key
        .iter()
        .any(|&b| b.is_ascii_whitespace() || b == b'"' || b.is_ascii_control())
    {
        return Err("key contains blanks, quotes or control characters");
    }
    let mut key = String::from_utf8_lossy(key).into_owned();
    key.make_ascii_lowercase();
    let rest = trim(&line[eq + 1..]);
    let raw = if let Some(q) = rest.strip_prefix(b"\"") {
        let end = q
            .iter()
            .position(|&b| b == b'"')
            .ok_or("unterminated quoted value")?;
        if !trim(&q[end + 1..]).is_empty() && trim(&q[end + 1..])[0] != b'#' {
            return Err("text after the closing quote");
        }
        &q[..end]
    } else {
        rest
    };
    Ok((key, unescape(raw)))
}

/// Replaces `|XX` escapes by the byte they stand for. A `|` not followed by two hex digits is
/// kept as is (VMware itself always escapes `|` as `|7C`, so this only happens in hand-edited
/// files).
pub fn unescape(raw: &[u8]) -> Vec<u8> {
    if !raw.contains(&b'|') {
        return raw.to_vec();
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'|'
            && i + 2 < raw.len()
            && let (Some(h), Some(l)) = (hex(raw[i + 1]), hex(raw[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(raw[i]);
        i += 1;
    }
    out
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
    let t = device_type.to_ascii_lowercase();
    t.contains("cdrom") || t.contains("passthru") || t == "atapi-cdrom" || t.contains("floppy")
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
        let mut out = Vec::new();
        for (i, (key, value)) in self.dict.entries.iter().enumerate() {
            let Some((device, bus)) = disk_key(key) else {
                continue;
            };
            // Only the last occurrence of a duplicated key counts, as for every other key.
            if self.dict.index.get(key.as_str()) != Some(&i) {
                continue;
            }
            let controller = &device[..device.find(':').unwrap_or(device.len())];
            if self.dict.get_bool(&format!("{device}.present")) == Some(false)
                || self.dict.get_bool(&format!("{controller}.present")) == Some(false)
            {
                continue;
            }
            let device_type = self
                .dict
                .get(&format!("{device}.deviceType"))
                .map(str::to_string);
            if device_type.as_deref().is_some_and(is_not_a_disk) {
                continue;
            }
            let lower = value.to_ascii_lowercase();
            if value.is_empty()
                || lower.ends_with(".iso")
                || lower.starts_with("/dev/")
                || lower == "auto detect"
            {
                continue;
            }
            if out.iter().any(|d: &VmxDisk| d.device == device) {
                continue;
            }
            out.push(VmxDisk {
                file_name: value.to_string(),
                mode: self.dict.get(&format!("{device}.mode")).map(str::to_string),
                device,
                bus,
                device_type,
            });
        }
        out.sort_by_key(|d| device_order(&d.device));
        out
    }
}

impl Dictionary {
    fn disks_hint(&self) -> usize {
        self.entries
            .iter()
            .filter(|(k, _)| disk_key(k).is_some())
            .count()
    }
}

/// `scsi0:1.filename` -> (`scsi0:1`, Scsi).
fn disk_key(key: &str) -> Option<(String, Bus)> {
    let dev = key.strip_suffix(".filename")?;
    let (bus, rest) = [
        ("scsi", Bus::Scsi),
        ("ide", Bus::Ide),
        ("sata", Bus::Sata),
        ("nvme", Bus::Nvme),
    ]
    .into_iter()
    .find_map(|(p, b)| dev.strip_prefix(p).map(|r| (b, r)))?;
    let (ctl, unit) = rest.split_once(':')?;
    if ctl.is_empty()
        || unit.is_empty()
        || !ctl.bytes().all(|b| b.is_ascii_digit())
        || !unit.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    Some((dev.to_string(), bus))
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
    let (c, u) = digits.split_once(':').unwrap_or(("0", "0"));
    (bus, c.parse().unwrap_or(0), u.parse().unwrap_or(0))
}
