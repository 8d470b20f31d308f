//! Streams one file of a VMFS partition image to stdout, the way `lunproxy fs cat` does: the
//! benchmark harness for the reader (`vmfs_cat IMAGE [--offset BYTES] PATH`).

use std::io::Write;
use std::sync::Arc;

use fscore::Filesystem;
use lun::{DevicePath, ReadAt, Source, Window};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut offset = 0u64;
    if let Some(i) = args.iter().position(|a| a == "--offset") {
        offset = args[i + 1].parse()?;
        args.drain(i..i + 2);
    }
    let [image, path] =
        <[String; 2]>::try_from(args).map_err(|_| "usage: vmfs_cat IMAGE [--offset N] PATH")?;
    // VMFS_CAT_DIRECT=1 reads with O_DIRECT (no page cache), as a proxy would on a SAN LUN.
    let direct = std::env::var_os("VMFS_CAT_DIRECT").is_some();
    let lun: Source = Arc::new(DevicePath::open_with(&image, lun::OpenOptions { direct })?);
    let part: Source = if offset == 0 {
        lun
    } else {
        let len = lun.size() - offset;
        Arc::new(Window::new(lun, offset, len, "partition")?)
    };
    let fs = vmfs::Vmfs::open(vec![part])?;
    if let Some(n) = std::env::var_os("VMFS_CAT_STREAMS") {
        fs.set_read_streams(n.to_string_lossy().parse()?);
    }
    let id = fs.lookup(&path)?;
    if std::env::var_os("VMFS_CAT_EXTENTS").is_some() {
        // Print the data extents (physical offset on the image, length) instead of the bytes.
        if let fscore::FileMapping::Mapped(map) = fs.extents(&id)? {
            for e in map.extents() {
                if let Some(p) = e.physical {
                    println!("{} {}", p + offset, e.length);
                }
            }
        }
        return Ok(());
    }
    let file = fs.open(&id)?;
    let size = file.size();
    // A page-aligned buffer lets O_DIRECT reads land in it without a bounce copy.
    let mut backing = vec![0u8; (8 << 20) + 4096];
    let skew = backing.as_ptr().align_offset(4096);
    let buf = &mut backing[skew..skew + (8 << 20)];
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut pos = 0u64;
    while pos < size {
        let n = (size - pos).min(buf.len() as u64) as usize;
        file.read_exact_at(pos, &mut buf[..n])?;
        out.write_all(&buf[..n])?;
        pos += n as u64;
    }
    out.flush()?;
    Ok(())
}
