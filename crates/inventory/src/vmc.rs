//! Microsoft Virtual Server 2005 / Virtual PC configurations (`.vmc`): XML, usually UTF-16
//! with a byte order mark, root `<preferences>`. Each drive of an IDE or SCSI controller is a
//! `<location>` with a `drive_type` (1 = hard disk, 2 = CD/DVD) and a `pathname` holding an
//! `absolute` and a `relative` path; undo disks (`.vud`) sit under `undo_drives`.

use crate::InventoryError;

/// One hard disk of a `.vmc`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmcDisk {
    /// The `absolute` path (Windows).
    pub absolute: Option<String>,
    /// The `relative` path (to the `.vmc`'s folder).
    pub relative: Option<String>,
}

/// A parsed `.vmc`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Vmc {
    /// Memory in MiB (`hardware/memory/ram_size`).
    pub memory_mb: Option<u64>,
    /// Guest OS as recorded (`guest_os` or `os_name`), when present.
    pub guest_os: Option<String>,
    /// Hard disks.
    pub disks: Vec<VmcDisk>,
}

/// Parses a `.vmc`.
pub fn parse(bytes: &[u8]) -> Result<Vmc, InventoryError> {
    let text = crate::text::decode(bytes);
    let doc = roxmltree::Document::parse(&text).map_err(|e| InventoryError::Parse {
        format: "vmc",
        detail: e.to_string(),
    })?;
    let root = doc.root_element();
    if !root.has_tag_name("preferences") {
        return Err(InventoryError::Parse {
            format: "vmc",
            detail: format!(
                "root element <{}>, expected <preferences>",
                root.tag_name().name()
            ),
        });
    }
    let first_text = |name: &str| {
        root.descendants()
            .find(|n| n.has_tag_name(name))
            .and_then(|n| n.text())
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
    };
    let mut vmc = Vmc {
        memory_mb: first_text("ram_size").and_then(|v| v.parse().ok()),
        guest_os: first_text("guest_os").or_else(|| first_text("os_name")),
        disks: Vec::new(),
    };
    for p in root.descendants().filter(|n| n.has_tag_name("pathname")) {
        let child = |name: &str| {
            p.children()
                .find(|c| c.has_tag_name(name))
                .and_then(|c| c.text())
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
        };
        let (absolute, relative) = (child("absolute"), child("relative"));
        if absolute.is_none() && relative.is_none() {
            continue;
        }
        let drive_type = p
            .parent()
            .and_then(|l| l.children().find(|c| c.has_tag_name("drive_type")))
            .and_then(|d| d.text())
            .and_then(|t| t.trim().parse::<u32>().ok());
        let name = absolute.as_deref().or(relative.as_deref()).unwrap_or("");
        let is_disk = match drive_type {
            Some(1) => true,
            Some(_) => false,
            None => {
                crate::hyperv::is_virtual_disk_path(name)
                    || name.to_ascii_lowercase().ends_with(".vud")
            }
        };
        if is_disk {
            vmc.disks.push(VmcDisk { absolute, relative });
        }
    }
    Ok(vmc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf16_vmc() {
        let xml = r#"<?xml version="1.0" encoding="UTF-16"?>
<preferences>
  <version type="string">2.0</version>
  <hardware>
    <memory><ram_size type="integer">512</ram_size></memory>
    <pci_bus><ide_adapter>
      <ide_controller id="0">
        <location id="0">
          <drive_type type="integer">1</drive_type>
          <pathname><absolute type="string">D:\VS\Old DC\Old DC.vhd</absolute><relative type="string">.\Old DC.vhd</relative></pathname>
        </location>
        <location id="1">
          <drive_type type="integer">2</drive_type>
          <pathname><absolute type="string">D:\iso\w2k3.iso</absolute></pathname>
        </location>
      </ide_controller>
    </ide_adapter></pci_bus>
  </hardware>
</preferences>"#;
        let mut bytes = vec![0xFF, 0xFE];
        bytes.extend(xml.encode_utf16().flat_map(|u| u.to_le_bytes()));
        let v = parse(&bytes).unwrap();
        assert_eq!(v.memory_mb, Some(512));
        assert_eq!(v.disks.len(), 1);
        assert_eq!(v.disks[0].relative.as_deref(), Some(".\\Old DC.vhd"));
        assert!(parse(b"not xml at all").is_err());
    }
}
