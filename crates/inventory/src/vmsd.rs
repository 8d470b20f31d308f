//! VMware snapshot dictionaries (`.vmsd`): the snapshot tree of a VM, in the same
//! `key = "value"` syntax as `.vmx`.

use crate::InventoryError;
use crate::vmx::{Dictionary, parse_u64};

/// Snapshots kept at most (VMware supports 32 in a chain, 496 in a tree).
pub const MAX_SNAPSHOTS: u64 = 1024;

/// One snapshot.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Snapshot {
    /// `snapshotN.uid`.
    pub uid: Option<u64>,
    /// `snapshotN.parent`: uid of the parent snapshot.
    pub parent: Option<u64>,
    /// `snapshotN.displayName`.
    pub name: String,
    /// `snapshotN.description`.
    pub description: Option<String>,
    /// `snapshotN.createTimeHigh/Low`: microseconds since the Unix epoch.
    pub created_us: Option<i64>,
    /// `snapshotN.filename`: the `.vmsn` state file.
    pub state_file: Option<String>,
    /// `snapshotN.diskM.fileName` with `.node` (device): the disk layers frozen by it.
    pub disks: Vec<(String, String)>,
    /// Whether this is the snapshot the VM currently runs from (`snapshot.current`).
    pub current: bool,
}

/// A parsed `.vmsd`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Vmsd {
    /// Snapshots in file order.
    pub snapshots: Vec<Snapshot>,
    /// `snapshot.needConsolidate`: deltas are left that should have been merged.
    pub need_consolidate: bool,
}

/// Parses a `.vmsd`. An empty file (VMware leaves one after the last snapshot is deleted) is
/// a valid empty snapshot list.
pub fn parse(bytes: &[u8]) -> Result<Vmsd, InventoryError> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(Vmsd::default());
    }
    let d = Dictionary::parse(bytes, "vmsd")?;
    let num = d.get_u64("snapshot.numSnapshots").unwrap_or(0);
    let current = d.get_u64("snapshot.current");
    let mut snapshots = Vec::new();
    // One buffer for every `snapshotN.property` key looked up.
    let mut key = String::with_capacity(40);
    let mut get = |n: u64, disk: Option<u64>, property: &str| {
        key.clear();
        key.push_str("snapshot");
        push_decimal(&mut key, n);
        if let Some(m) = disk {
            key.push_str(".disk");
            push_decimal(&mut key, m);
        }
        key.push('.');
        key.push_str(property);
        d.get(&key)
    };
    // snapshotN indices are dense in practice; scan a bounded range to survive gaps.
    let scan = num.saturating_mul(2).saturating_add(4).min(MAX_SNAPSHOTS);
    for n in 0..scan {
        let Some(uid) = get(n, None, "uid") else {
            continue;
        };
        let uid = uid.trim().parse().ok();
        let time = match (
            get(n, None, "createTimeHigh").and_then(|v| v.trim().parse::<i64>().ok()),
            get(n, None, "createTimeLow").and_then(|v| v.trim().parse::<i64>().ok()),
        ) {
            (Some(h), Some(l)) => Some((h << 32) | (l as u32 as i64)),
            _ => None,
        };
        let ndisks = get(n, None, "numDisks")
            .and_then(parse_u64)
            .unwrap_or(0)
            .min(256);
        let mut disks = Vec::new();
        for m in 0..ndisks {
            if let Some(f) = get(n, Some(m), "fileName") {
                let f = f.to_string();
                let node = get(n, Some(m), "node").unwrap_or("").to_string();
                disks.push((node, f));
            }
        }
        snapshots.push(Snapshot {
            uid,
            parent: get(n, None, "parent").and_then(parse_u64),
            name: get(n, None, "displayName").unwrap_or("").to_string(),
            description: get(n, None, "description")
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            created_us: time,
            state_file: get(n, None, "filename")
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            disks,
            current: uid.is_some() && uid == current,
        });
    }
    Ok(Vmsd {
        snapshots,
        need_consolidate: d.get_bool("snapshot.needConsolidate").unwrap_or(false),
    })
}

/// Appends `n` in decimal (what `write!` does, without the formatting machinery, which costs
/// more than the lookup it serves).
fn push_decimal(s: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    s.extend(digits[i..].iter().map(|&d| d as char));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_two_snapshot_tree() {
        let v = parse(
            br#".encoding = "UTF-8"
snapshot.lastUID = "2"
snapshot.current = "2"
snapshot0.uid = "1"
snapshot0.filename = "web01-Snapshot1.vmsn"
snapshot0.displayName = "before patch |22Tuesday|22"
snapshot0.createTimeHigh = "378946"
snapshot0.createTimeLow = "-1368582755"
snapshot0.numDisks = "1"
snapshot0.disk0.fileName = "web01.vmdk"
snapshot0.disk0.node = "scsi0:0"
snapshot.numSnapshots = "2"
snapshot1.uid = "2"
snapshot1.parent = "1"
snapshot1.filename = "web01-Snapshot2.vmsn"
snapshot1.displayName = "after"
snapshot1.numDisks = "1"
snapshot1.disk0.fileName = "web01-000001.vmdk"
snapshot1.disk0.node = "scsi0:0"
snapshot.needConsolidate = "TRUE"
"#,
        )
        .unwrap();
        assert_eq!(v.snapshots.len(), 2);
        assert_eq!(v.snapshots[0].name, "before patch \"Tuesday\"");
        assert_eq!(
            v.snapshots[0].created_us,
            Some((378946i64 << 32) | (-1368582755i64 as u32 as i64))
        );
        assert!(v.snapshots[1].current);
        assert_eq!(v.snapshots[1].parent, Some(1));
        assert_eq!(
            v.snapshots[1].disks,
            vec![("scsi0:0".into(), "web01-000001.vmdk".into())]
        );
        assert!(v.need_consolidate);
        assert_eq!(parse(b"").unwrap(), Vmsd::default());
    }

    #[test]
    fn two_digit_snapshot_and_disk_numbers() {
        let mut text = String::from("snapshot.numSnapshots = \"12\"\nsnapshot.current = \"12\"\n");
        for n in 0..12 {
            text += &format!(
                "snapshot{n}.uid = \"{}\"\nsnapshot{n}.numDisks = \"11\"\n",
                n + 1
            );
        }
        text += "snapshot11.disk10.fileName = \"d-000012.vmdk\"\nsnapshot11.disk10.node = \"scsi1:10\"\n";
        let v = parse(text.as_bytes()).unwrap();
        assert_eq!(v.snapshots.len(), 12);
        assert!(v.snapshots[11].current);
        assert_eq!(
            v.snapshots[11].disks,
            vec![("scsi1:10".into(), "d-000012.vmdk".into())]
        );
        let mut s = String::new();
        for n in [0, 7, 10, 99, 1024, u64::MAX] {
            s.clear();
            push_decimal(&mut s, n);
            assert_eq!(s, n.to_string());
        }
    }
}
