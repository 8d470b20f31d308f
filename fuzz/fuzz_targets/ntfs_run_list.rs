//! Fuzzes the NTFS run_list decoder: any input must give a result or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ntfs::fuzzing::run_list(data);
});
