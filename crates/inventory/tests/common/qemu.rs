//! qemu-img as an independent writer and reader of virtual disks.

use std::path::Path;
use std::process::Command;

/// Runs `qemu-img` with `args` in `dir` (panics with its output when it fails).
pub fn qemu_img(dir: &Path, args: &[&str]) {
    testkit::run(Command::new("qemu-img").current_dir(dir).args(args));
}

/// `qemu-img create -q -f FORMAT [-o subformat=SUBFORMAT] NAME SIZE` in `dir`.
pub fn create(dir: &Path, format: &str, subformat: Option<&str>, name: &str, size: &str) {
    let subformat = subformat.map(|s| format!("subformat={s}"));
    let mut args = vec!["create", "-q", "-f", format];
    if let Some(o) = &subformat {
        args.extend(["-o", o.as_str()]);
    }
    args.extend([name, size]);
    qemu_img(dir, &args);
}

/// `qemu-img create -q -f vmdk -b PARENT -F vmdk CHILD` in `dir`: a delta VMDK over `parent`.
pub fn create_vmdk_child(dir: &Path, parent: &str, child: &str) {
    qemu_img(
        dir,
        &[
            "create", "-q", "-f", "vmdk", "-b", parent, "-F", "vmdk", child,
        ],
    );
}

/// `qemu-img info --output=json` of a file.
pub fn info(path: &Path) -> serde_json::Value {
    let out = testkit::run(
        Command::new("qemu-img")
            .args(["info", "--output=json"])
            .arg(path),
    );
    serde_json::from_slice(&out).unwrap()
}

/// The virtual size qemu-img reports for a file.
pub fn virtual_size(path: &Path) -> Option<u64> {
    info(path)["virtual-size"].as_u64()
}
