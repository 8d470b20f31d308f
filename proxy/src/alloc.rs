//! The process's global allocator: mimalloc, called through its plain entry points whenever the
//! layout allows.
//!
//! The `mimalloc` crate's allocator sends every request through `mi_malloc_aligned`, whose
//! checks and generic path cost about twice the plain `mi_malloc` fast path (callgrind, on the
//! 1,000-VM inventory: 147,000 allocations, most of them strings). Every mimalloc block is at
//! least 8-byte aligned (block sizes are whole words, and pages start aligned), so a layout
//! asking for 8 bytes of alignment or less is served as plain `malloc`; larger alignments keep
//! the aligned calls. The same idea is proposed upstream (purpleprotocol/mimalloc_rust#170).

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// Alignment every mimalloc block has, whatever its size.
const PLAIN_ALIGN: usize = 8;

/// mimalloc, as the global allocator (see the module documentation).
pub struct MiMalloc;

// SAFETY: every method hands the request to mimalloc, which returns blocks of at least the
// requested size; the plain calls are only used where their guaranteed alignment (a word)
// covers the layout's, and the aligned calls otherwise. Blocks from either kind are freed and
// reallocated by the same mimalloc heap functions, which accept both.
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: plain mimalloc calls; see the impl's comment for the alignment.
        unsafe {
            if layout.align() <= PLAIN_ALIGN {
                mi::mi_malloc(layout.size()).cast()
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        unsafe {
            if layout.align() <= PLAIN_ALIGN {
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator, so from mimalloc.
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout`'s alignment, which the new block
        // keeps (the plain call's word alignment covers it, as in `alloc`).
        unsafe {
            if layout.align() <= PLAIN_ALIGN {
                mi::mi_realloc(ptr.cast(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size up to 4 KiB and a few large ones, at every alignment from 1 to 4 KiB: the
    /// block is aligned, writable over its whole size, zeroed when asked, and keeps its bytes
    /// when it grows or shrinks.
    #[test]
    fn blocks_are_aligned_usable_and_keep_their_bytes() {
        let a = MiMalloc;
        let sizes = (1usize..=4096).chain([8191, 65536, 1 << 20, 5 << 20]);
        for size in sizes {
            for align in (0..=12).map(|s| 1usize << s) {
                let Ok(layout) = Layout::from_size_align(size.next_multiple_of(align), align)
                else {
                    continue;
                };
                // SAFETY: non-zero sizes; each block is freed with the layout it has.
                unsafe {
                    let p = a.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size}, align {align}");
                    std::ptr::write_bytes(p, 0xA5, layout.size());
                    let grown = layout.size() * 2 + 24;
                    let q = a.realloc(p, layout, grown);
                    assert_eq!(q as usize % align, 0, "realloc: size {size}, align {align}");
                    let kept = std::slice::from_raw_parts(q, layout.size());
                    assert!(
                        kept.iter().all(|&b| b == 0xA5),
                        "size {size}, align {align}"
                    );
                    let shrunk = layout.size().div_ceil(2);
                    let grown_layout = Layout::from_size_align(grown, align).unwrap();
                    let r = a.realloc(q, grown_layout, shrunk);
                    assert_eq!(r as usize % align, 0);
                    assert!(
                        std::slice::from_raw_parts(r, shrunk)
                            .iter()
                            .all(|&b| b == 0xA5)
                    );
                    a.dealloc(r, Layout::from_size_align(shrunk, align).unwrap());
                    let z = a.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0);
                    assert!(
                        std::slice::from_raw_parts(z, layout.size())
                            .iter()
                            .all(|&b| b == 0)
                    );
                    a.dealloc(z, layout);
                }
            }
        }
    }
}
