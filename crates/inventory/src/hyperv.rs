//! Hyper-V virtual machine configurations.
//!
//! Windows Server 2012/2012 R2 keep a VM as `Virtual Machines/<GUID>.xml` (UTF-8 or UTF-16
//! XML) plus, while running or saved, `<GUID>/<GUID>.bin` (memory) and `.vsv` (device state).
//! Windows Server 2016 and later keep `Virtual Machines/<GUID>.vmcx` (configuration, binary),
//! `<GUID>.vmrs` (runtime state) and `<GUID>.vmgs` (guest state: UEFI variables, vTPM). The
//! binary `.vmcx` is undocumented; the inventory finds the disk paths in it as the UTF-16
//! strings that end in a virtual disk extension.

use crate::InventoryError;

/// A Hyper-V configuration as far as the inventory reads it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HyperVConfig {
    /// The VM name (`properties/name` in XML; not recovered from `.vmcx`).
    pub name: Option<String>,
    /// Virtual processors (`settings/processors/count`).
    pub cpus: Option<u64>,
    /// Startup memory in MiB (`settings/memory/bank/size`).
    pub memory_mb: Option<u64>,
    /// Virtual disk paths as stored (Windows paths).
    pub disks: Vec<String>,
}

/// Disk file extensions Hyper-V attaches.
pub fn is_virtual_disk_path(p: &str) -> bool {
    let l = p.to_ascii_lowercase();
    [".vhd", ".vhdx", ".avhd", ".avhdx"]
        .iter()
        .any(|e| l.ends_with(e))
}

/// Whether `stem` is a GUID as Hyper-V names configuration files
/// (`8-4-4-4-12` hex digits, braces optional).
pub fn is_guid(stem: &str) -> bool {
    let s = stem.trim_start_matches('{').trim_end_matches('}');
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Parses a 2012-era XML configuration. Disks are the `pathname` values of drives whose
/// `type` is `VHD` (DVD drives have `ISO`).
pub fn parse_xml(bytes: &[u8]) -> Result<HyperVConfig, InventoryError> {
    let text = crate::text::decode(bytes);
    let doc = roxmltree::Document::parse(&text).map_err(|e| InventoryError::Parse {
        format: "hyper-v xml",
        detail: e.to_string(),
    })?;
    let root = doc.root_element();
    if !root.has_tag_name("configuration") {
        return Err(InventoryError::Parse {
            format: "hyper-v xml",
            detail: format!(
                "root element <{}>, expected <configuration>",
                root.tag_name().name()
            ),
        });
    }
    let text_of = |path: &[&str]| -> Option<String> {
        let mut node = root;
        for p in path {
            node = node.children().find(|c| c.has_tag_name(*p))?;
        }
        node.text()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
    };
    let mut cfg = HyperVConfig {
        name: text_of(&["properties", "name"]),
        cpus: text_of(&["settings", "processors", "count"]).and_then(|v| v.parse().ok()),
        memory_mb: text_of(&["settings", "memory", "bank", "size"]).and_then(|v| v.parse().ok()),
        disks: Vec::new(),
    };
    for node in root.descendants().filter(|n| n.has_tag_name("pathname")) {
        let Some(path) = node.text().map(str::trim).filter(|t| !t.is_empty()) else {
            continue;
        };
        let kind = node
            .parent()
            .and_then(|p| p.children().find(|c| c.has_tag_name("type")))
            .and_then(|t| t.text())
            .map(|t| t.trim().to_ascii_uppercase());
        let is_disk = match kind.as_deref() {
            Some("VHD") => true,
            Some(_) => false,
            None => is_virtual_disk_path(path),
        };
        if is_disk && !cfg.disks.iter().any(|d| d.eq_ignore_ascii_case(path)) {
            cfg.disks.push(path.to_string());
        }
    }
    Ok(cfg)
}

/// Finds virtual disk paths in a binary `.vmcx`: runs of printable UTF-16 LE characters (at
/// either byte alignment) that end in a virtual disk extension.
pub fn scan_vmcx(bytes: &[u8]) -> HyperVConfig {
    let mut disks: Vec<String> = Vec::new();
    for start in 0..2 {
        let mut cur = String::new();
        let mut flush = |cur: &mut String| {
            if is_virtual_disk_path(cur)
                && let Some(start) = absolute_start(cur)
            {
                let p = cur[start..].trim().to_string();
                if !disks.iter().any(|d| d.eq_ignore_ascii_case(&p)) {
                    disks.push(p);
                }
            }
            cur.clear();
        };
        for u in bytes[start.min(bytes.len())..].chunks_exact(2) {
            let c = u16::from_le_bytes([u[0], u[1]]);
            match char::from_u32(c as u32) {
                Some(ch) if c >= 0x20 && !(0xD800..0xE000).contains(&c) && ch != '\u{FFFF}' => {
                    if cur.len() < 4096 {
                        cur.push(ch);
                    }
                }
                _ => flush(&mut cur),
            }
        }
        flush(&mut cur);
    }
    HyperVConfig {
        disks,
        ..Default::default()
    }
}

/// Where an absolute Windows path (`X:\`, `\\server`, `\\?\`) starts in a string of
/// UTF-16 characters that may carry binary noise before it.
fn absolute_start(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let drive = (0..b.len().saturating_sub(2)).rev().find(|&i| {
        b[i].is_ascii_alphabetic() && b[i + 1] == b':' && b[i + 2] == b'\\' && s.is_char_boundary(i)
    });
    let unc = s.find("\\\\");
    match (drive, unc) {
        (Some(d), Some(u)) if u + 4 <= d && s[u..d].starts_with("\\\\?\\") => Some(u),
        (Some(d), _) => Some(d),
        (None, u) => u,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_names() {
        assert!(is_guid("0A1B2C3D-4E5F-6071-8293-A4B5C6D7E8F9"));
        assert!(!is_guid("web01"));
        assert!(!is_guid("0A1B2C3D-4E5F-6071-8293-A4B5C6D7E8F"));
    }

    #[test]
    fn xml_2012_config() {
        let xml = r#"<?xml version="1.0" encoding="UTF-16" standalone="yes"?>
<configuration>
  <properties><name type="string">SQL 01</name></properties>
  <settings>
    <processors><count type="integer">4</count></processors>
    <memory><bank><size type="integer">8192</size></bank></memory>
  </settings>
  <_83f8638b-8dca-4152-9eda-2ca8b33039b4_>
    <controller0>
      <drive0><pathname type="string">C:\ClusterStorage\Volume1\SQL 01\Virtual Hard Disks\sql01.vhdx</pathname><type type="string">VHD</type></drive0>
      <drive1><pathname type="string">D:\iso\win.iso</pathname><type type="string">ISO</type></drive1>
    </controller0>
  </_83f8638b-8dca-4152-9eda-2ca8b33039b4_>
</configuration>"#;
        let mut bytes = vec![0xFF, 0xFE];
        bytes.extend(xml.encode_utf16().flat_map(|u| u.to_le_bytes()));
        // roxmltree reads the text as decoded; the UTF-16 declaration is informational.
        let c = parse_xml(&bytes).unwrap();
        assert_eq!(c.name.as_deref(), Some("SQL 01"));
        assert_eq!(c.cpus, Some(4));
        assert_eq!(c.memory_mb, Some(8192));
        assert_eq!(
            c.disks,
            vec!["C:\\ClusterStorage\\Volume1\\SQL 01\\Virtual Hard Disks\\sql01.vhdx"]
        );
        assert!(parse_xml(b"<html/>").is_err());
        assert!(parse_xml(b"\x00\x01garbage").is_err());
    }

    #[test]
    fn vmcx_strings() {
        let mut b = vec![0u8, 1, 2, 3, 0xFF];
        for s in [
            "D:\\VMs\\web\\Virtual Hard Disks\\web.vhdx",
            "garbage",
            "E:\\x\\data_A1B2.avhdx",
        ] {
            b.extend(s.encode_utf16().flat_map(|u| u.to_le_bytes()));
            b.extend([0, 0, 7, 1]);
        }
        let c = scan_vmcx(&b);
        assert_eq!(
            c.disks,
            vec![
                "D:\\VMs\\web\\Virtual Hard Disks\\web.vhdx",
                "E:\\x\\data_A1B2.avhdx"
            ]
        );
    }
}
