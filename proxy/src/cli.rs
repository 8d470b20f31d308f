//! Command-line interface (clap). Errors print as one `error: …` line on stderr with a non-zero
//! exit status; panics are never the way a user learns about bad input.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
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

/// Parses arguments, runs the command and turns any error into one `error:` line.
pub fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LUNPROXY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A closed stdout (`| head`) is not an error worth reporting.
            if e
                .chain()
                .filter_map(|c| c.downcast_ref::<std::io::Error>())
                .any(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            {
                return ExitCode::SUCCESS;
            }
            let msg = e
                .chain()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(": ");
            let _ = writeln!(std::io::stderr(), "error: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Lun(LunCommand::Info {
            paths,
            direct,
            json,
        }) => lun_info(&paths, direct, json),
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
    .with_context(|| format!("opening LUN {name}"))?;
    let out = serde_json::json!({
        "name": name,
        "size": lun.size(),
        "sector_size": lun.sector_size(),
        "paths": lun.path_status(),
    });
    let mut stdout = std::io::stdout().lock();
    if json {
        serde_json::to_writer(&mut stdout, &out)?;
        writeln!(stdout)?;
    } else {
        writeln!(stdout, "LUN {name}: {} bytes, {}-byte sectors", lun.size(), lun.sector_size())?;
        for p in lun.path_status() {
            writeln!(stdout, "  path {}: {:?}", p.path, p.state)?;
        }
    }
    Ok(())
}
