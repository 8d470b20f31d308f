//! Golden tests of the `.vmx` and `.vmdk` parsers over files shaped as ESXi and Workstation
//! write them (escapes, odd spacing, CRLF, duplicates, absent devices).

use inventory::vmdk::{self, Probe};
use inventory::vmx::{Bus, Vmx};

fn data(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// A descriptor file of tests/data, parsed.
fn descriptor(name: &str) -> vmdk::Descriptor {
    vmdk::parse_descriptor(&data(name)).unwrap()
}

#[test]
fn esxi7_vmx() {
    let v = Vmx::parse(&data("esxi7-web01.vmx")).unwrap();
    assert_eq!(v.display_name(), Some("web 01 \"prod\" | café"));
    assert_eq!(v.dict.get("annotation"), Some("line one\nline two"));
    assert_eq!(v.guest_os(), Some("ubuntu-64"));
    assert_eq!(v.num_vcpus(), Some(4));
    assert_eq!(v.mem_size_mb(), Some(16384));
    assert_eq!(
        v.uuid_bios(),
        Some("42 21 5d 6f 1a 2b 3c 4d-5e 6f 70 81 92 a3 b4 c5")
    );
    assert_eq!(
        v.vc_uuid(),
        Some("50 21 aa bb cc dd ee ff-00 11 22 33 44 55 66 77")
    );
    assert_eq!(v.nvram(), Some("web 01.nvram"));
    assert_eq!(
        v.swap_derived_name(),
        Some("/vmfs/volumes/5f9a1c2e-7d3b4a10-1e2f-000c29aabbcc/web 01/web 01-3f2a1b4c.vswp")
    );
    assert_eq!(v.dict.encoding.as_deref(), Some("UTF-8"));
    let disks = v.disks();
    let got: Vec<(&str, Bus, &str, Option<&str>)> = disks
        .iter()
        .map(|d| {
            (
                d.device.as_str(),
                d.bus,
                d.file_name.as_str(),
                d.mode.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("scsi0:0", Bus::Scsi, "web 01-000001.vmdk", None),
            (
                "scsi0:1",
                Bus::Scsi,
                "/vmfs/volumes/61137dd5-df6bc2c8-f0e7-000c29801686/web 01/web 01_1.vmdk",
                Some("independent-persistent")
            ),
            (
                "nvme0:0",
                Bus::Nvme,
                "/vmfs/volumes/datastore2/web 01/web 01_2.vmdk",
                None
            ),
        ],
        "CD-ROM, absent device and disk on an absent controller are left out"
    );
    assert!(v.dict.warnings.is_empty());
}

#[test]
fn workstation_vmx_with_odd_spacing_and_codepage() {
    let v = Vmx::parse(&data("workstation-odd.vmx")).unwrap();
    assert_eq!(v.display_name(), Some("Bureau été"));
    assert_eq!(v.mem_size_mb(), Some(512));
    assert_eq!(
        v.num_vcpus(),
        Some(2),
        "unquoted values and mixed-case keys"
    );
    assert_eq!(v.guest_os(), Some("winxppro"));
    let disks = v.disks();
    let got: Vec<(&str, &str)> = disks
        .iter()
        .map(|d| (d.device.as_str(), d.file_name.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "ide0:0",
                "D:\\Virtual Machines\\XP\\Windows XP Professional.vmdk"
            ),
            ("ide0:1", "data-new.vmdk"),
            ("sata0:1", "/home/user/vmware/xp/extra.vmdk"),
        ],
        "the last duplicate wins; the raw CD drive is skipped"
    );
    assert_eq!(v.dict.warnings.len(), 1, "{:?}", v.dict.warnings);
    assert!(v.dict.warnings[0].starts_with("line 20"));
}

#[test]
fn vmx_rejects_garbage() {
    assert!(Vmx::parse(b"").is_err());
    assert!(Vmx::parse(b"\x7fELF\x02\x01\x01\x00\x00\x00").is_err());
    assert!(Vmx::parse(b"just some\ntext file\nwith = signs = here\n").is_err());
    let err = Vmx::parse(&[0u8; 300]).unwrap_err().to_string();
    assert!(err.contains("NUL"), "{err}");
    // A hostile line count is bounded.
    let many = "a = \"b\"\n".repeat(inventory::vmx::MAX_LINES + 1);
    assert!(Vmx::parse(many.as_bytes()).is_err());
}

#[test]
fn esxi_thin_descriptor() {
    let d = descriptor("esxi-thin.vmdk");
    assert_eq!(d.version, Some(1));
    assert_eq!(d.cid, Some(0x7c9d2b1e));
    assert_eq!(d.parent_cid, Some(0xffff_ffff));
    assert!(!d.has_parent());
    assert_eq!(d.create_type.as_deref(), Some("vmfs"));
    assert_eq!(d.extents.len(), 1);
    let e = &d.extents[0];
    assert_eq!(
        (e.access.as_str(), e.sectors, e.kind.as_str()),
        ("RW", 83_886_080, "VMFS")
    );
    assert_eq!(e.file_name.as_deref(), Some("web 01-flat.vmdk"));
    assert_eq!(d.capacity(), 40 << 30);
    assert_eq!(d.ddb("ddb.thinProvisioned"), Some("1"));
    assert_eq!(
        d.ddb("ddb.uuid"),
        Some("60 00 C2 9b 1c 2d 3e 4f-50 61 72 83 94 a5 b6 c7")
    );
    assert_eq!(vmdk::probe(&data("esxi-thin.vmdk")), Probe::Text);
}

#[test]
fn esxi_sesparse_delta_descriptor() {
    let d = descriptor("esxi-sesparse-delta.vmdk");
    assert!(d.has_parent());
    assert_eq!(d.parent_cid, Some(0x7c9d2b1e));
    assert_eq!(d.parent_file_name_hint.as_deref(), Some("web 01.vmdk"));
    assert_eq!(
        d.change_track_path.as_deref(),
        Some("web 01-000001-ctk.vmdk")
    );
    assert_eq!(d.extents[0].kind, "SESPARSE");
    assert!(vmdk::is_delta_kind(&d.extents[0].kind));
}

#[test]
fn workstation_split_descriptor_with_crlf_and_tabs() {
    let d = descriptor("workstation-split.vmdk");
    assert_eq!(d.create_type.as_deref(), Some("twoGbMaxExtentSparse"));
    let names: Vec<&str> = d
        .extents
        .iter()
        .filter_map(|e| e.file_name.as_deref())
        .collect();
    assert_eq!(
        names,
        vec![
            "Windows XP Professional-s001.vmdk",
            "Windows XP Professional-s002.vmdk",
            "Windows XP Professional-s003.vmdk"
        ]
    );
    assert_eq!(d.extents[2].sectors, 2048);
    assert_eq!(d.capacity(), (4_192_256 * 2 + 2048) * 512);
    assert!(d.warnings.is_empty(), "{:?}", d.warnings);
}

#[test]
fn rdm_descriptor() {
    let d = descriptor("rdm-physical.vmdk");
    assert_eq!(
        d.create_type.as_deref(),
        Some("vmfsPassthroughRawDeviceMap")
    );
    assert_eq!(d.extents[0].kind, "VMFSRDM");
    assert_eq!(d.capacity(), 1 << 40);
}

#[test]
fn descriptor_bad_inputs() {
    assert!(vmdk::parse_descriptor(b"RW lots VMFS \"x\"\n").is_err());
    assert!(
        vmdk::parse_descriptor(&vec![b'a'; 2 << 20]).is_err(),
        "over the size cap"
    );
    let d = vmdk::parse_descriptor(
        b"createType=\"vmfs\"\nRW 10 VMFS \"unterminated\nRW 10 VMFS \"ok.vmdk\"\n",
    )
    .unwrap();
    assert_eq!(d.extents.len(), 1);
    assert_eq!(d.warnings.len(), 1);
}
