//! Fuzzes the NTFS lznt1 decoder: any input must give a result or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ntfs::fuzzing::lznt1(data);
});
