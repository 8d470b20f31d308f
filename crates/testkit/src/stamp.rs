//! Cached fixtures keyed by the binary that built them: a stamp of the binary, and the removal
//! of builds made by older binaries so the fixture cache stays small.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// A stamp of a file (size and mtime, in hex): it changes when the file is rebuilt.
pub fn file_stamp(path: &Path) -> String {
    let m = fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    format!("{:x}-{:x}", m.len(), m.mtime())
}

/// Removes the entries of `dir` (files or directories) named `<prefix>…<suffix>` whose name
/// does not contain `stamp`: fixtures built by an older binary. A build in progress of the
/// current stamp (`….partial`) is kept.
pub fn remove_stale(dir: &Path, prefix: &str, suffix: &str, stamp: &str) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(prefix) && name.ends_with(suffix) && !name.contains(stamp) {
            let _ = fs::remove_file(e.path()).or_else(|_| fs::remove_dir_all(e.path()));
        }
    }
}
