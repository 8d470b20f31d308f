//! dissect.vmfs, a third, independent reader of VMFS (in Python): it assembles a volume from
//! all its extents (`LVM([dev1, dev2…])`) and reads double-indirect files too.

use std::ffi::OsStr;
use std::fs;
use std::path::Path;
use std::process::Command;

/// Assembles the one volume on the images given before `--` (in that order). Without more
/// arguments it walks the volume and prints one line per entry: `d PATH`,
/// `l SIZE PATH -> TARGET`, `f SIZE PATH SHA256`. With `-- PATH OFFSET:LEN…` it prints the hex
/// of those ranges of that file instead.
const DISSECT_SCRIPT: &str = r#"
import sys, hashlib
from dissect.vmfs import VMFS, LVM
args = sys.argv[1:]
sep = args.index('--') if '--' in args else len(args)
lvm = LVM([open(p, 'rb') for p in args[:sep]])
assert len(lvm.volumes) == 1, lvm.volumes
fs = VMFS(lvm.volumes[0].open())
if sep < len(args):
    s = fs.get(args[sep + 1]).open()
    for r in args[sep + 2:]:
        off, n = (int(x) for x in r.split(':'))
        s.seek(off)
        print(s.read(n).hex())
    sys.exit(0)
def walk(d, path):
    for name, entry in sorted(d.listdir().items()):
        if name in ('.', '..') or (path == '' and name.endswith('.sf')):
            continue
        p = path + '/' + name
        fd = entry.file_descriptor
        if fd.is_dir():
            print('d', p)
            walk(fd, p)
        elif fd.is_symlink():
            print('l', fd.size, p, '->', fd.link)
        else:
            h = hashlib.sha256()
            s = fd.open()
            while True:
                b = s.read(1 << 20)
                if not b:
                    break
                h.update(b)
            print('f', fd.size, p, h.hexdigest())
walk(fs.root, '')
"#;

/// True when dissect.vmfs can be imported; else the test is skipped.
pub fn have_dissect(test: &str) -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import dissect.vmfs"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        testkit::skip(
            test,
            "python3 with dissect.vmfs is missing (pip install dissect.vmfs)",
        );
    }
    ok
}

/// Runs [`DISSECT_SCRIPT`] with `args` and returns its output lines.
fn dissect<S: AsRef<OsStr>>(args: &[S]) -> Vec<String> {
    let out = testkit::run(
        Command::new("python3")
            .arg("-c")
            .arg(DISSECT_SCRIPT)
            .args(args),
    );
    String::from_utf8(out)
        .expect("dissect.vmfs prints UTF-8")
        .lines()
        .map(str::to_string)
        .collect()
}

/// Asserts that dissect.vmfs, given `images` in that order, reads the tree under `src` back:
/// the same entries, sizes, symlink targets and SHA-256 of every file.
pub fn assert_dissect_reads_back(src: &Path, images: &[&Path]) {
    let mut got = dissect(images);
    got.sort();
    let want = source_listing(src);
    let missing: Vec<_> = want.iter().filter(|l| !got.contains(l)).take(5).collect();
    let extra: Vec<_> = got.iter().filter(|l| !want.contains(l)).take(5).collect();
    assert!(
        got == want,
        "dissect.vmfs with {images:?} differs: missing {missing:?}, extra {extra:?}"
    );
}

/// The hex of the bytes dissect.vmfs reads at each `OFFSET:LEN` of `ranges` of the file at
/// `path` (absolute in the volume) of the volume on `images`.
pub fn dissect_ranges(images: &[&Path], path: &str, ranges: &[String]) -> Vec<String> {
    let mut args: Vec<&OsStr> = images.iter().map(|i| i.as_os_str()).collect();
    args.extend([OsStr::new("--"), OsStr::new(path)]);
    args.extend(ranges.iter().map(OsStr::new));
    dissect(&args)
}

/// The listing [`DISSECT_SCRIPT`] prints, made from the source tree, sorted.
fn source_listing(root: &Path) -> Vec<String> {
    fn walk(dir: &Path, rel: &str, out: &mut Vec<String>) {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for n in names {
            let p = format!("{rel}/{}", n.to_string_lossy());
            let full = dir.join(&n);
            let m = fs::symlink_metadata(&full).unwrap();
            if m.is_dir() {
                out.push(format!("d {p}"));
                walk(&full, &p, out);
            } else if m.file_type().is_symlink() {
                let t = fs::read_link(&full).unwrap();
                out.push(format!("l {} {p} -> {}", m.len(), t.to_string_lossy()));
            } else {
                let sha = testkit::sha256_reader(fs::File::open(&full).unwrap());
                out.push(format!("f {} {p} {sha}", m.len()));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, "", &mut out);
    out.sort();
    out
}
