//! Fuzzes the NTFS file_record decoder: any input must give a result or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ntfs::fuzzing::file_record(data);
});
