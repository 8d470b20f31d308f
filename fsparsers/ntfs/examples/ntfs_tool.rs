//! A small driver for benchmarks and by-hand checks of the NTFS reader, used until
//! `lunproxy fs cat|ls` covers the same ground:
//!
//! ```text
//! ntfs_tool cat IMAGE PATH        # the file's bytes to stdout (PATH:STREAM for a named stream)
//! ntfs_tool ls IMAGE [PATH] [-r]  # one absolute path per line
//! ntfs_tool fixture NAME          # build (or reuse) a benchmark image, print its path
//! ```
//! NAME is one of bench10k, bench1g, bench4g (see `testkit::ntfs::Layout`).

use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::Arc;

use fscore::{FileId, Filesystem};
use lun::{DevicePath, Source};

/// Bytes per read: large reads keep the device busy, one buffer keeps memory flat.
const CHUNK: usize = 4 << 20;

fn open(image: &str) -> Result<ntfs::Ntfs, String> {
    let dev = DevicePath::open(image).map_err(|e| format!("{image}: {e}"))?;
    let src: Source = Arc::new(dev);
    ntfs::Ntfs::open(src).map_err(|e| e.to_string())
}

fn cat(image: &str, path: &str) -> Result<(), String> {
    let fs = open(image)?;
    let id = fs.lookup(path).map_err(|e| e.to_string())?;
    let src = fs.open(&id).map_err(|e| e.to_string())?;
    let mut out = io::stdout().lock();
    let mut buf = vec![0u8; CHUNK];
    let size = src.size();
    let mut off = 0u64;
    while off < size {
        let n = (size - off).min(CHUNK as u64) as usize;
        src.read_exact_at(off, &mut buf[..n])
            .map_err(|e| e.to_string())?;
        out.write_all(&buf[..n])
            .map_err(|e| format!("stdout: {e}"))?;
        off += n as u64;
    }
    out.flush().map_err(|e| format!("stdout: {e}"))
}

fn ls(image: &str, path: &str, recursive: bool) -> Result<(), String> {
    let fs = open(image)?;
    let start = fs.lookup(path).map_err(|e| e.to_string())?;
    let mut out = io::BufWriter::new(io::stdout().lock());
    let prefix = path.trim_end_matches('/').to_string();
    let mut stack: Vec<(FileId, String)> = vec![(start, prefix)];
    while let Some((dir, prefix)) = stack.pop() {
        let entries = fs.read_dir(&dir).map_err(|e| format!("{prefix}/: {e}"))?;
        for e in entries {
            if e.metadata_file || e.short_name {
                continue;
            }
            let p = format!("{prefix}/{}", e.name);
            writeln!(out, "{p}").map_err(|e| format!("stdout: {e}"))?;
            if recursive && e.file_type == fscore::FileType::Dir {
                stack.push((e.id, p));
            }
        }
    }
    out.flush().map_err(|e| format!("stdout: {e}"))
}

fn fixture(name: &str) -> Result<(), String> {
    use testkit::ntfs::{Layout, Spec, image_path};
    let layout = match name {
        "bench10k" => Layout::Bench10k,
        "bench1g" => Layout::Bench1GiB,
        "bench4g" => Layout::Bench4GiB,
        _ => {
            return Err(format!(
                "unknown fixture {name} (bench10k, bench1g, bench4g)"
            ));
        }
    };
    let p = image_path("ntfs_tool", &Spec::of(layout, 4096))
        .ok_or("the NTFS tools are missing (see the SKIPPED line)")?;
    println!("{}", p.display());
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match a.as_slice() {
        ["cat", image, path] => cat(image, path),
        ["ls", image] => ls(image, "/", false),
        ["ls", image, "-r"] => ls(image, "/", true),
        ["ls", image, path] => ls(image, path, false),
        ["ls", image, path, "-r"] => ls(image, path, true),
        ["fixture", name] => fixture(name),
        _ => Err("usage: ntfs_tool cat IMAGE PATH | ls IMAGE [PATH] [-r] | fixture NAME".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
