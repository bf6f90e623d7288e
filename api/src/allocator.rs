//! The process's allocator: mimalloc, asked the way a C program asks it.
//!
//! The `mimalloc` crate hands every allocation to `mi_malloc_aligned`. In mimalloc v3 that is as
//! fast as `mi_malloc` only for a block of at most 1 KiB whose next free block happens to be
//! aligned; a larger one — a REST lock's boxed answer future (≈ 2 KiB), hyper's read buffer,
//! ≈ 6 a request — takes the aligned slow path and is over-allocated (≈ 1,300 instructions a
//! request in all, `loadtest/instructions.sh`). Every block mimalloc hands out is aligned to a
//! machine word, so a layout that asks no more than that goes to the plain entry points, and
//! only a stricter one to the aligned ones. (mimalloc v2, which takes such blocks plainly, costs
//! more for blocks freed by another thread: docs/performance.md, "Tried and not kept".)

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// mimalloc with word-aligned layouts served by `mi_malloc` and its kin. Both binaries
/// (`latchkey`, `latchkey-loadtest`) install it.
pub struct Allocator;

/// Every block mimalloc returns is at least this aligned (its sizes are whole words).
const WORD: usize = std::mem::size_of::<usize>();

// SAFETY: each method forwards to the mimalloc function with the contract `GlobalAlloc` asks
// for: a plain one only when the layout's alignment is at most a word, which every mimalloc
// block meets; blocks from either kind are freed by `mi_free` and resized by `mi_realloc*`.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe {
            if layout.align() <= WORD {
                mi::mi_malloc(layout.size()) as *mut u8
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()) as *mut u8
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe {
            if layout.align() <= WORD {
                mi::mi_zalloc(layout.size()) as *mut u8
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()) as *mut u8
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator, so from mimalloc.
        unsafe { mi::mi_free(ptr as *mut c_void) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: see the impl; the alignment kept is the layout's.
        unsafe {
            if layout.align() <= WORD {
                mi::mi_realloc(ptr as *mut c_void, new_size) as *mut u8
            } else {
                mi::mi_realloc_aligned(ptr as *mut c_void, new_size, layout.align()) as *mut u8
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size and alignment a program asks for comes back aligned, writable, zeroed when
    /// asked, and intact through growing and shrinking.
    #[test]
    fn blocks_are_aligned_and_keep_their_bytes_through_realloc() {
        let sizes = [
            1,
            7,
            8,
            9,
            16,
            24,
            100,
            1000,
            1024,
            1025,
            2056,
            4096,
            70_000,
            1 << 20,
        ];
        for align in [1, 2, 4, 8, 16, 32, 64, 128, 4096] {
            for size in sizes {
                let Ok(layout) = Layout::from_size_align(size, align) else {
                    continue;
                };
                // SAFETY: non-zero sizes; every block is freed with its layout.
                unsafe {
                    let zeroed = Allocator.alloc_zeroed(layout);
                    assert!(!zeroed.is_null());
                    assert_eq!(zeroed as usize % align, 0, "zeroed {size} at {align}");
                    assert!((0..size).all(|i| *zeroed.add(i) == 0));
                    Allocator.dealloc(zeroed, layout);

                    let block = Allocator.alloc(layout);
                    assert!(!block.is_null());
                    assert_eq!(block as usize % align, 0, "{size} at {align}");
                    for i in 0..size {
                        *block.add(i) = i as u8;
                    }
                    // Grown, then shrunk below where it started.
                    let mut at = (block, layout);
                    for new_size in [size * 3 + 5, size.div_ceil(2)] {
                        let kept = at.1.size().min(new_size);
                        let moved = Allocator.realloc(at.0, at.1, new_size);
                        assert!(!moved.is_null());
                        assert_eq!(moved as usize % align, 0, "realloc {size} at {align}");
                        assert!((0..kept).all(|i| *moved.add(i) == i as u8));
                        let Ok(layout) = Layout::from_size_align(new_size, align) else {
                            panic!("{new_size} at {align}");
                        };
                        at = (moved, layout);
                    }
                    Allocator.dealloc(at.0, at.1);
                }
            }
        }
    }
}
