//! `lunproxy`: the command-line entry point.

mod alloc;
mod cli;
mod fs_cmd;
mod vms_cmd;

/// The inventory and directory walks allocate many small, short-lived strings and records;
/// mimalloc serves those markedly faster than glibc's allocator.
#[global_allocator]
static ALLOCATOR: alloc::MiMalloc = alloc::MiMalloc;

fn main() {
    let status = cli::main();
    let _ = std::io::Write::flush(&mut std::io::stdout());
    // SAFETY: `_exit` ends the process at once, skipping the allocator's teardown (it would
    // hand every freed page back to the kernel, a few milliseconds after a large inventory);
    // every output was flushed above and nothing else is pending: files are read-only.
    unsafe { libc::_exit(status) }
}
