//! Command-line interface (clap). Errors print as one `error: …` line on stderr with a non-zero
//! exit status; panics are never the way a user learns about bad input.

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use lun::{Lun, MultipathPolicy, OpenOptions, ReadAt};

/// lunproxy: read VMs straight off cloned SAN LUNs.
#[derive(Parser, Debug)]
#[command(name = "lunproxy", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Inspect LUNs.
    #[command(subcommand)]
    Lun(LunCommand),
    /// Read a filesystem (NTFS, VMFS5, VMFS6) on a LUN clone.
    #[command(subcommand)]
    Fs(crate::fs_cmd::FsCommand),
    /// List the VMs on LUN clones, with their files.
    Vms(crate::vms_cmd::VmsArgs),
}

#[derive(Subcommand, Debug)]
enum LunCommand {
    /// Size, sector size, paths and their state, and what the first bytes are.
    Info {
        /// Device paths of one LUN (several paths = multipath).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Read with O_DIRECT.
        #[arg(long)]
        direct: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Parses arguments, runs the command and turns any error into one `error:` line. Returns
/// the exit status.
pub fn main() -> i32 {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LUNPROXY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => 0,
        Err(e) => {
            // A closed stdout (`| head`) is not an error worth reporting.
            if is_broken_pipe(&e) {
                return 0;
            }
            let msg = one_line(&e);
            let _ = writeln!(std::io::stderr(), "error: {msg}");
            1
        }
    }
}

/// The error and its causes on one line. Most of our error types already print their cause, so
/// a cause whose text is already in the line is not repeated.
fn one_line(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if msg.contains(&text) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&text);
    }
    msg.replace('\n', " ")
}

/// True when the error is a write to a closed pipe, however deeply wrapped.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .map(|io| io.kind())
            .or_else(|| {
                c.downcast_ref::<serde_json::Error>()
                    .and_then(|j| j.io_error_kind())
            })
            == Some(std::io::ErrorKind::BrokenPipe)
    })
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Lun(LunCommand::Info {
            paths,
            direct,
            json,
        }) => lun_info(&paths, direct, json),
        Command::Fs(cmd) => crate::fs_cmd::run(cmd),
        Command::Vms(args) => crate::vms_cmd::run(args),
    }
}

fn lun_info(paths: &[PathBuf], direct: bool, json: bool) -> anyhow::Result<()> {
    let name = paths[0].display().to_string();
    let lun = Lun::open(
        &name,
        paths,
        OpenOptions { direct },
        MultipathPolicy::default(),
    )
    // The lun and fscore errors already carry their cause in their message, so they are
    // flattened here instead of chained (a chain would print the OS error twice).
    .map_err(|e| anyhow::anyhow!("opening LUN {name}: {e}"))?;
    let content = fscore::probe::identify(&lun, Some(lun.sector_size()))
        .map_err(|e| anyhow::anyhow!("identifying the contents of LUN {name}: {e}"))?;
    let mut stdout = std::io::stdout().lock();
    if json {
        let mut content_json = serde_json::to_value(&content)?;
        // Type names are for people reading the JSON; programs match the type itself.
        if let Some(parts) = content_json
            .get_mut("partitions")
            .and_then(|p| p.as_array_mut())
        {
            for (p, probed) in parts.iter_mut().zip(content.partitions()) {
                p["type_name"] = probed.partition.part_type.known_name().into();
            }
        }
        let out = serde_json::json!({
            "name": name,
            "size": lun.size(),
            "sector_size": lun.sector_size(),
            "paths": lun.path_status(),
            "content": content_json,
        });
        serde_json::to_writer(&mut stdout, &out)?;
        writeln!(stdout)?;
        return Ok(());
    }
    writeln!(stdout, "LUN {name}")?;
    writeln!(
        stdout,
        "  size:        {} bytes ({})",
        lun.size(),
        human_bytes(lun.size())
    )?;
    writeln!(stdout, "  sector size: {} bytes", lun.sector_size())?;
    writeln!(stdout, "  paths:")?;
    for p in lun.path_status() {
        let state = match p.state {
            lun::PathHealth::Up => "up",
            lun::PathHealth::Down => "down",
        };
        write!(stdout, "    {}  {state}", p.path)?;
        if p.preferred {
            write!(stdout, "  preferred")?;
        }
        if p.errors > 0 {
            write!(stdout, "  errors {}", p.errors)?;
        }
        if let Some(e) = &p.last_error {
            write!(stdout, "  last error: {e}")?;
        }
        writeln!(stdout)?;
    }
    writeln!(stdout, "  content:     {content}")?;
    if let fscore::probe::Content::Gpt(t) | fscore::probe::Content::Mbr(t) = &content {
        if let Some(g) = &t.disk_guid {
            writeln!(stdout, "  disk GUID:   {g}")?;
        }
        for w in &t.warnings {
            writeln!(stdout, "  warning:     {w}")?;
        }
        for p in &t.partitions {
            let part = &p.partition;
            let type_name = part
                .part_type
                .known_name()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default();
            write!(
                stdout,
                "    partition {}: start {} length {} ({}), type {}{type_name}",
                part.index,
                part.start_byte,
                part.length_bytes,
                human_bytes(part.length_bytes),
                part.part_type,
            )?;
            if !part.name.is_empty() {
                write!(stdout, ", name {:?}", part.name)?;
            }
            writeln!(stdout, ": {}", p.content)?;
        }
    }
    Ok(())
}

/// A size in binary units for people (`64.0 MiB`).
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} bytes")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}
