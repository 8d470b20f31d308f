//! `lunproxy`: the command-line entry point.

mod cli;
mod fs_cmd;
mod vms_cmd;

/// The inventory and directory walks allocate many small, short-lived strings and records;
/// mimalloc serves those markedly faster than glibc's allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
