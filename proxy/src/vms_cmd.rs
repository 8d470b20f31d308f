//! `lunproxy vms`: the VMs found on a set of LUN clones.

use std::io::Write;

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
    let inv = inventory::scan(&datastores);
    let mut out = std::io::BufWriter::with_capacity(256 << 10, std::io::stdout().lock());
    if args.json {
        write_json_lines(&mut out, &inv.vms)?;
        if args.orphans {
            for d in &inv.orphan_disks {
                serde_json::to_writer(&mut out, &serde_json::json!({ "orphan_disk": d }))?;
                writeln!(out)?;
            }
        }
    } else {
        for vm in &inv.vms {
            writeln!(
                out,
                "{}  {}  [{}] {}  {} files, {} disks, {}",
                vm.id,
                vm.name,
                vm.lun,
                vm.config,
                vm.files.len(),
                vm.disks.len(),
                serde_json::to_value(vm.consistency.state)?
                    .as_str()
                    .unwrap_or("?")
            )?;
            for p in &vm.problems {
                writeln!(out, "    problem: {}", serde_json::to_string(p)?)?;
            }
        }
        if args.orphans {
            for d in &inv.orphan_disks {
                writeln!(out, "orphan disk {}  [{}] {}", d.id, d.lun, d.path)?;
            }
        }
    }
    for p in &inv.problems {
        eprintln!("warning: {}", serde_json::to_string(p)?);
    }
    out.flush()?;
    // The process ends here: freeing every name and VM one by one would only delay the exit.
    std::mem::forget(inv);
    Ok(())
}

/// VMs a JSON batch holds: big enough to keep both cores busy, small enough that the batches
/// in flight stay a few hundred KiB whatever the inventory's size.
const JSON_BATCH: usize = 64;

/// Writes one JSON line per VM, in order. Serialising is most of the output's cost, so batches
/// are serialised on two threads, the second one a batch ahead of the writer.
fn write_json_lines(out: &mut impl Write, vms: &[inventory::Vm]) -> anyhow::Result<()> {
    fn batch(vms: &[inventory::Vm]) -> serde_json::Result<Vec<u8>> {
        let mut buf = Vec::with_capacity(vms.len() * 4096);
        for vm in vms {
            serde_json::to_writer(&mut buf, vm)?;
            buf.push(b'\n');
        }
        Ok(buf)
    }
    let batches: Vec<&[inventory::Vm]> = vms.chunks(JSON_BATCH).collect();
    std::thread::scope(|s| -> anyhow::Result<()> {
        // Odd batches on a helper thread, even ones here; each handed over through a
        // one-slot channel, so at most two batches wait in memory.
        let (tx, rx) = std::sync::mpsc::sync_channel::<serde_json::Result<Vec<u8>>>(1);
        let odd: Vec<&[inventory::Vm]> = batches.iter().skip(1).step_by(2).copied().collect();
        s.spawn(move || {
            for b in odd {
                if tx.send(batch(b)).is_err() {
                    break;
                }
            }
        });
        for (i, b) in batches.iter().enumerate() {
            let bytes = if i % 2 == 0 { batch(b)? } else { rx.recv()?? };
            out.write_all(&bytes)?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// The two-thread writer gives exactly the sequential output, in order, across many
    /// batches (an odd number of them, the last one short).
    #[test]
    fn json_lines_in_order_across_batches() {
        let mut b = inventory::memfs::MemFs::builder(fscore::FsKind::Vmfs6, "ds", "5f1c-aa");
        for n in 0..(JSON_BATCH * 5 + 7) {
            b.file(
                &format!("/vm{n:04}/vm{n:04}.vmx"),
                format!("displayName = \"vm {n}\"\n"),
            );
        }
        let inv = inventory::scan(&[Datastore::new("lun0", Arc::new(b.build()))]);
        assert_eq!(inv.vms.len(), JSON_BATCH * 5 + 7);
        let mut want = Vec::new();
        for vm in &inv.vms {
            serde_json::to_writer(&mut want, vm).unwrap();
            want.push(b'\n');
        }
        let mut got = Vec::new();
        write_json_lines(&mut got, &inv.vms).unwrap();
        assert_eq!(
            String::from_utf8(got).unwrap(),
            String::from_utf8(want).unwrap()
        );
        let mut none = Vec::new();
        write_json_lines(&mut none, &[]).unwrap();
        assert!(none.is_empty());
    }
}
