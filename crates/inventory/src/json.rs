//! A VM as one line of JSON, written field by field.
//!
//! The bytes are exactly what `serde_json::to_vec(&vm)` writes from the model's serde derives
//! (same field order, same names, same `skip_serializing_if`); tests compare the two on every
//! VM the scenario tests build. It exists for speed: an inventory prints about 3 KB a VM, and
//! with each field name a constant written in one copy instead of a string checked and
//! escaped at run time, the JSON of 1,000 VMs costs about half the instructions it does through
//! serde.

use jsonline::{write_int, write_str};

use crate::model::*;

/// Appends `vm` as compact JSON (no newline) to `out`.
pub fn write_vm(out: &mut Vec<u8>, vm: &Vm) {
    out.extend_from_slice(b"{\"id\":");
    write_str(out, &vm.id);
    out.extend_from_slice(b",\"name\":");
    write_str(out, &vm.name);
    out.extend_from_slice(b",\"lun\":");
    write_str(out, &vm.lun);
    out.extend_from_slice(b",\"datastore\":");
    write_str(out, &vm.datastore);
    out.extend_from_slice(b",\"config\":");
    write_str(out, &vm.config);
    out.extend_from_slice(b",\"platform\":");
    write_str(out, vm.platform.as_str());
    out.extend_from_slice(b",\"template\":");
    write_bool(out, vm.template);
    out.extend_from_slice(b",\"guest_os\":");
    write_opt_str(out, vm.guest_os.as_deref());
    out.extend_from_slice(b",\"cpus\":");
    write_opt_u64(out, vm.cpus);
    out.extend_from_slice(b",\"memory_mb\":");
    write_opt_u64(out, vm.memory_mb);
    out.extend_from_slice(b",\"bios_uuid\":");
    write_opt_str(out, vm.bios_uuid.as_deref());
    out.extend_from_slice(b",\"instance_uuid\":");
    write_opt_str(out, vm.instance_uuid.as_deref());
    out.extend_from_slice(b",\"files\":");
    write_array(out, &vm.files, write_file);
    out.extend_from_slice(b",\"disks\":");
    write_array(out, &vm.disks, write_disk);
    out.extend_from_slice(b",\"snapshots\":");
    write_array(out, &vm.snapshots, write_snapshot);
    out.extend_from_slice(b",\"consistency\":{\"state\":");
    write_str(out, vm.consistency.state.as_str());
    out.extend_from_slice(b",\"evidence\":");
    write_array(out, &vm.consistency.evidence, |out, s| write_str(out, s));
    out.extend_from_slice(b"},\"notes\":");
    write_array(out, &vm.notes, |out, s| write_str(out, s));
    out.extend_from_slice(b",\"problems\":");
    write_array(out, &vm.problems, write_problem);
    out.push(b'}');
}

fn write_file(out: &mut Vec<u8>, f: &VmFile) {
    out.extend_from_slice(b"{\"name\":");
    write_str(out, &f.name);
    out.extend_from_slice(b",\"path\":");
    write_str(out, &f.path);
    out.extend_from_slice(b",\"lun\":");
    write_opt_str(out, f.lun.as_deref());
    out.extend_from_slice(b",\"role\":");
    write_str(out, f.role.as_str());
    out.extend_from_slice(b",\"size\":");
    write_int(out, f.size);
    out.extend_from_slice(b",\"allocated\":");
    write_int(out, f.allocated);
    out.extend_from_slice(b",\"missing\":");
    write_bool(out, f.missing);
    if let Some(d) = &f.needs_datastore {
        out.extend_from_slice(b",\"needs_datastore\":");
        write_str(out, d);
    }
    out.push(b'}');
}

fn write_disk(out: &mut Vec<u8>, d: &Disk) {
    out.extend_from_slice(b"{\"device\":");
    write_str(out, &d.device);
    out.extend_from_slice(b",\"configured_path\":");
    write_str(out, &d.configured_path);
    if let Some(m) = &d.mode {
        out.extend_from_slice(b",\"mode\":");
        write_str(out, m);
    }
    out.extend_from_slice(b",\"capacity\":");
    write_opt_u64(out, d.capacity);
    out.extend_from_slice(b",\"chain\":");
    write_array(out, &d.chain, write_layer);
    out.push(b'}');
}

fn write_layer(out: &mut Vec<u8>, l: &DiskLayer) {
    out.extend_from_slice(b"{\"file\":");
    write_str(out, &l.file);
    out.extend_from_slice(b",\"path\":");
    write_str(out, &l.path);
    out.extend_from_slice(b",\"format\":");
    write_str(out, l.format);
    out.extend_from_slice(b",\"create_type\":");
    write_opt_str(out, l.create_type.as_deref());
    out.extend_from_slice(b",\"capacity\":");
    write_opt_u64(out, l.capacity);
    out.extend_from_slice(b",\"cid\":");
    write_opt_str(out, l.cid.as_deref());
    out.extend_from_slice(b",\"parent_cid\":");
    write_opt_str(out, l.parent_cid.as_deref());
    out.extend_from_slice(b",\"extents\":");
    write_array(out, &l.extents, write_extent);
    out.extend_from_slice(b",\"missing\":");
    write_bool(out, l.missing);
    out.push(b'}');
}

fn write_extent(out: &mut Vec<u8>, x: &DiskExtent) {
    out.extend_from_slice(b"{\"access\":");
    write_str(out, &x.access);
    out.extend_from_slice(b",\"kind\":");
    write_str(out, &x.kind);
    out.extend_from_slice(b",\"size\":");
    write_int(out, x.size);
    out.extend_from_slice(b",\"offset\":");
    write_int(out, x.offset);
    out.extend_from_slice(b",\"file\":");
    write_opt_str(out, x.file.as_deref());
    out.push(b'}');
}

fn write_snapshot(out: &mut Vec<u8>, s: &SnapshotInfo) {
    out.extend_from_slice(b"{\"name\":");
    write_str(out, &s.name);
    if let Some(d) = &s.description {
        out.extend_from_slice(b",\"description\":");
        write_str(out, d);
    }
    if let Some(t) = s.created_us {
        out.extend_from_slice(b",\"created_us\":");
        write_int(out, t);
    }
    out.extend_from_slice(b",\"current\":");
    write_bool(out, s.current);
    out.push(b'}');
}

fn write_problem(out: &mut Vec<u8>, p: &Problem) {
    out.extend_from_slice(b"{\"kind\":");
    write_str(out, &p.kind);
    if let Some(path) = &p.path {
        out.extend_from_slice(b",\"path\":");
        write_str(out, path);
    }
    out.extend_from_slice(b",\"detail\":");
    write_str(out, &p.detail);
    out.push(b'}');
}

fn write_array<T>(out: &mut Vec<u8>, items: &[T], mut each: impl FnMut(&mut Vec<u8>, &T)) {
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        each(out, item);
    }
    out.push(b']');
}

fn write_bool(out: &mut Vec<u8>, v: bool) {
    out.extend_from_slice(if v { b"true" } else { b"false" });
}

fn write_opt_str(out: &mut Vec<u8>, v: Option<&str>) {
    match v {
        Some(s) => write_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

fn write_opt_u64(out: &mut Vec<u8>, v: Option<u64>) {
    match v {
        Some(n) => write_int(out, n),
        None => out.extend_from_slice(b"null"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, role: Role, missing: Option<&str>) -> VmFile {
        VmFile {
            name: name.into(),
            path: format!("/dir \"q\"/{name}"),
            lun: missing.is_none().then(|| "lun\\0".into()),
            role,
            size: u64::MAX,
            allocated: 0,
            missing: missing.is_some(),
            needs_datastore: missing.map(str::to_string),
            file_id: None,
        }
    }

    fn vm(variant: usize) -> Vm {
        let some = variant & 1 == 0;
        Vm {
            id: "id".into(),
            name: "Gäste\t\u{1}".into(),
            lun: "/dev/sdb".into(),
            datastore: String::new(),
            config: "/a/b.vmx".into(),
            platform: [Platform::Vmware, Platform::Hyperv, Platform::VirtualServer][variant % 3],
            template: some,
            guest_os: some.then(|| "windows2019srv-64".into()),
            cpus: some.then_some(4),
            memory_mb: some.then_some(0),
            bios_uuid: some.then(|| "56 4d".into()),
            instance_uuid: None,
            files: Role::ALL
                .iter()
                .enumerate()
                .map(|(i, &r)| file(&format!("f{i}"), r, (i & 3 == 0).then_some("ds1")))
                .collect(),
            disks: (0..variant % 3)
                .map(|n| Disk {
                    device: format!("scsi0:{n}"),
                    configured_path: "x.vmdk".into(),
                    mode: some.then(|| "independent-persistent".into()),
                    capacity: some.then_some(1 << 40),
                    chain: vec![DiskLayer {
                        file: "x.vmdk".into(),
                        path: "/a/x.vmdk".into(),
                        format: "vmdk",
                        create_type: some.then(|| "vmfs".into()),
                        capacity: None,
                        cid: Some("fffffffe".into()),
                        parent_cid: None,
                        extents: vec![
                            DiskExtent {
                                access: "RW".into(),
                                kind: "VMFS".into(),
                                size: 512,
                                offset: 0,
                                file: Some("x-flat.vmdk".into()),
                            },
                            DiskExtent {
                                access: "RDONLY".into(),
                                kind: "ZERO".into(),
                                size: 0,
                                offset: 7,
                                file: None,
                            },
                        ],
                        missing: !some,
                    }],
                })
                .collect(),
            snapshots: vec![
                SnapshotInfo {
                    name: "before patch".into(),
                    description: some.then(|| "line\nbreak".into()),
                    created_us: Some(-1),
                    current: true,
                },
                SnapshotInfo {
                    name: String::new(),
                    description: None,
                    created_us: None,
                    current: false,
                },
            ],
            consistency: Consistency {
                state: [
                    ConsistencyState::PoweredOff,
                    ConsistencyState::Suspended,
                    ConsistencyState::CrashConsistent,
                ][variant % 3],
                evidence: vec!["a.vswp: swap file present".into()],
            },
            notes: if some { vec!["n".into()] } else { Vec::new() },
            problems: vec![
                Problem::new("disk-missing", Some("/a/x.vmdk"), "gone"),
                Problem::new("io", None, "\\"),
            ],
        }
    }

    #[test]
    fn written_as_serde_json_writes_the_model() {
        for variant in 0..6 {
            let vm = vm(variant);
            let mut ours = Vec::new();
            write_vm(&mut ours, &vm);
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                serde_json::to_string(&vm).unwrap(),
                "variant {variant}"
            );
        }
    }
}
