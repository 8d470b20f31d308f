//! Fuzzes the VMFS reader: the input rewrites a small synthetic VMFS5/VMFS6 partition (LVM
//! header, FS3 descriptor, system and root file descriptors, resource headers, directories);
//! opening, listing, stating, mapping and reading must give results or errors, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vmfs::fuzzing::volume(data);
});
