//! `lunproxy vms`: the VMs found on a set of LUN clones.

use std::io::Write;
use std::ops::ControlFlow;

use fsprobe::LunSpec;
use inventory::Datastore;
use lun::{OpenOptions, ReadAt, Source};

/// Arguments of `lunproxy vms`.
#[derive(clap::Args, Debug)]
pub struct VmsArgs {
    /// LUN image files or block devices; several paths to one LUN separated by commas.
    #[arg(required = true)]
    pub sources: Vec<String>,
    /// Print JSON Lines, one VM a line.
    #[arg(long)]
    pub json: bool,
    /// Also print disks no VM references (JSON: lines with `"orphan_disk"`).
    #[arg(long)]
    pub orphans: bool,
}

/// Opens every LUN, every filesystem on them, and prints the inventory. A LUN that cannot be
/// read is reported on stderr and the others are still listed; the exit status is non-zero
/// when nothing at all could be read.
pub fn run(args: VmsArgs) -> anyhow::Result<()> {
    let mut luns: Vec<Source> = Vec::new();
    for s in &args.sources {
        luns.push(LunSpec::parse(s).open(OpenOptions::default())?);
    }
    let mut datastores = Vec::new();
    let mut failures = Vec::new();
    for vol in fsprobe::open_all(&luns) {
        match vol {
            Ok(v) => {
                let lun_name = v
                    .members
                    .first()
                    .map(|m| luns[m.lun].name().to_string())
                    .unwrap_or_default();
                datastores.push(Datastore::new(lun_name, v.fs));
            }
            Err(e) => failures.push(e),
        }
    }
    if datastores.is_empty() {
        // The first failure is the error; printing it as a warning too would say it twice.
        let mut failures = failures.into_iter();
        if let Some(e) = failures.next() {
            for other in failures {
                eprintln!("warning: {other}");
            }
            return Err(e.into());
        }
        anyhow::bail!("no filesystem found on the given LUNs");
    }
    for e in &failures {
        eprintln!("warning: {e}");
    }
    let mut out = std::io::BufWriter::with_capacity(256 << 10, std::io::stdout().lock());
    // VMs are written as they are assembled, so the output starts early and memory holds only
    // the VMs in flight. Each VM is put into words on whichever scan thread is free; this
    // thread only writes the lines, in order. A write error (a closed pipe) stops the scan.
    let json = args.json;
    let mut written: std::io::Result<()> = Ok(());
    let found = inventory::scan_each(
        &datastores,
        &inventory::Limits::default(),
        |vm| {
            let mut line = Vec::with_capacity(4096);
            let done = if json {
                write_json_line(&mut line, &vm)
            } else {
                write_text(&mut line, &vm)
            };
            // The process ends soon: handing each VM's many names back to the allocator one by
            // one would only cost time (measured: ~5 % of the run).
            std::mem::forget(vm);
            done.map(|()| line)
        },
        |line| {
            written = line.and_then(|line| out.write_all(&line));
            if written.is_ok() {
                ControlFlow::Continue(())
            } else {
                ControlFlow::Break(())
            }
        },
    );
    written?;
    if args.orphans {
        for d in &found.orphan_disks {
            if args.json {
                serde_json::to_writer(&mut out, &serde_json::json!({ "orphan_disk": d }))?;
                writeln!(out)?;
            } else {
                writeln!(out, "orphan disk {}  [{}] {}", d.id, d.lun, d.path)?;
            }
        }
    }
    for p in &found.problems {
        eprintln!("warning: {}", serde_json::to_string(p)?);
    }
    out.flush()?;
    Ok(())
}

/// One VM as a JSON line (what serde_json writes, through the faster [`inventory::Vm::write_json`]).
fn write_json_line(out: &mut Vec<u8>, vm: &inventory::Vm) -> std::io::Result<()> {
    vm.write_json(out);
    out.push(b'\n');
    Ok(())
}

/// One VM as a line of text, then its problems indented below it.
fn write_text(out: &mut impl Write, vm: &inventory::Vm) -> std::io::Result<()> {
    writeln!(
        out,
        "{}  {}  [{}] {}  {} files, {} disks, {}",
        vm.id,
        vm.name,
        vm.lun,
        vm.config,
        vm.files.len(),
        vm.disks.len(),
        vm.consistency.state.as_str()
    )?;
    for p in &vm.problems {
        writeln!(out, "    problem: {}", serde_json::to_string(p)?)?;
    }
    Ok(())
}
