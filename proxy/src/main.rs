//! `lunproxy`: the command-line entry point.

mod cli;
mod fs_cmd;
mod vms_cmd;

fn main() -> std::process::ExitCode {
    cli::main()
}
