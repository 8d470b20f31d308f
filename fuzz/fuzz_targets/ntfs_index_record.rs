//! Fuzzes the NTFS index_record decoder: any input must give a result or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ntfs::fuzzing::index_record(data);
});
