//! The plugins' memory allocator: small blocks in power-of-two size classes, each class with a
//! free list.
//!
//! Every call from Regent copies its arguments into the plugin's memory, each string and list
//! through `cabi_realloc`, and the plugin frees them when the call returns: a ranking of nine
//! members makes about 60 small allocations and frees before the policy runs a line of its own.
//! wasi-libc's general-purpose allocator (dlmalloc) spends about 500 instructions on each
//! allocate-and-free pair, a quarter of the whole call; [`SizeClasses`] spends about 30.
//!
//! - A request of at most [`SizeClasses::MAX_SMALL`] bytes with an alignment of at most 16 gets
//!   a block of the next power of two (at least 16 bytes). Blocks come from a free list, or else
//!   are carved from a 64 KiB chunk taken from the system allocator. Freed blocks go back on
//!   their class's list, so a steady state of calls reuses the same few blocks.
//! - Anything larger, or more aligned, goes to the system allocator.
//!
//! Chunks are never given back: the memory a plugin's calls needed at their peak stays
//! allocated to its instance (which Regent replaces after any fault). The instance's memory
//! limit applies to all of it.
//!
//! On `wasm32` (the plugins), the SDK installs it as the global allocator and exports a
//! `cabi_realloc` that allocates through it, so that the arguments Regent copies in and the
//! plugin's own allocations share it. Natively (the unit tests) nothing is installed.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::ptr;

/// Size classes: 16, 32, ..., 4096 bytes.
const CLASSES: usize = 9;
const MIN_SHIFT: u32 = 4;
/// The most alignment a small block guarantees: every block is 16-aligned.
const SMALL_ALIGN: usize = 16;
/// Bytes taken from the system allocator at a time for small blocks.
const CHUNK: usize = 64 * 1024;

/// A size-class allocator for a single-threaded plugin (see the module documentation).
pub struct SizeClasses {
    state: UnsafeCell<State>,
}

struct State {
    /// The head of each class's free list; a free block holds the next pointer.
    free: [*mut u8; CLASSES],
    /// The unused part of the current chunk.
    next: *mut u8,
    end: *mut u8,
}

// SAFETY: a wasm32 plugin without the `atomics` target feature runs on one thread, so the state
// is never touched by two threads. (Native builds share no instance between threads either: the
// unit tests use their own local instances.)
#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
unsafe impl Sync for SizeClasses {}

impl SizeClasses {
    /// The largest request served from the size classes.
    pub const MAX_SMALL: usize = 1 << (MIN_SHIFT as usize + CLASSES - 1);

    pub const fn new() -> SizeClasses {
        SizeClasses {
            state: UnsafeCell::new(State {
                free: [ptr::null_mut(); CLASSES],
                next: ptr::null_mut(),
                end: ptr::null_mut(),
            }),
        }
    }

    /// The class of a request, or `None` for the system allocator.
    fn class(layout: Layout) -> Option<usize> {
        if layout.size() > Self::MAX_SMALL || layout.align() > SMALL_ALIGN {
            return None;
        }
        let bits = usize::BITS - (layout.size().max(1) - 1).leading_zeros();
        Some(bits.saturating_sub(MIN_SHIFT) as usize)
    }

    const fn block_size(class: usize) -> usize {
        1 << (MIN_SHIFT as usize + class)
    }
}

impl Default for SizeClasses {
    fn default() -> Self {
        SizeClasses::new()
    }
}

unsafe impl GlobalAlloc for SizeClasses {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(class) = Self::class(layout) else {
            return unsafe { System.alloc(layout) };
        };
        // SAFETY: one thread (see `Sync`), and no reentrancy: nothing below calls back into this
        // allocator.
        let s = unsafe { &mut *self.state.get() };
        let head = s.free[class];
        if !head.is_null() {
            // SAFETY: a free block holds the pointer to the next free block of its class (blocks
            // are 16-aligned, so the read is aligned).
            s.free[class] = unsafe { head.cast::<*mut u8>().read() };
            return head;
        }
        let size = Self::block_size(class);
        if (s.end as usize) - (s.next as usize) < size {
            // SAFETY: a valid, non-zero layout.
            let chunk =
                unsafe { System.alloc(Layout::from_size_align_unchecked(CHUNK, SMALL_ALIGN)) };
            if chunk.is_null() {
                return ptr::null_mut();
            }
            // The rest of the old chunk (less than a block of this class) is abandoned.
            s.next = chunk;
            s.end = chunk.wrapping_add(CHUNK);
        }
        let block = s.next;
        s.next = block.wrapping_add(size);
        block
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        let Some(class) = Self::class(layout) else {
            return unsafe { System.dealloc(block, layout) };
        };
        // SAFETY: as in `alloc`; `block` came from `alloc` with this layout, so from this class.
        let s = unsafe { &mut *self.state.get() };
        unsafe { block.cast::<*mut u8>().write(s.free[class]) };
        s.free[class] = block;
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees a valid layout for `new_size`.
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (Self::class(layout), Self::class(new)) {
            // Still fits its block (a string growing within its class, a shrink).
            (Some(a), Some(b)) if a == b => block,
            // Both large: the system allocator may grow in place.
            (None, None) => unsafe { System.realloc(block, layout, new_size) },
            _ => {
                let moved = unsafe { self.alloc(new) };
                if !moved.is_null() {
                    let keep = layout.size().min(new_size);
                    unsafe {
                        ptr::copy_nonoverlapping(block, moved, keep);
                        self.dealloc(block, layout);
                    }
                }
                moved
            }
        }
    }
}

/// The canonical ABI's allocation function: Regent calls it to copy each string and list of a
/// call's arguments into the plugin. wasi-libc defines one over its own `malloc`; this one
/// allocates through the global allocator instead (the arguments are freed through it, as Rust
/// values, when the call returns).
///
/// # Safety
///
/// Called by the host under the canonical ABI's rules: `old_ptr`/`old_len` are 0 or a live
/// allocation of that size and `align`; `align` is a power of two.
#[cfg(target_arch = "wasm32")]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cabi_realloc(
    old_ptr: *mut u8,
    old_len: usize,
    align: usize,
    new_len: usize,
) -> *mut u8 {
    let ptr = unsafe {
        if old_len == 0 {
            if new_len == 0 {
                return align as *mut u8;
            }
            std::alloc::alloc(Layout::from_size_align_unchecked(new_len, align))
        } else {
            std::alloc::realloc(
                old_ptr,
                Layout::from_size_align_unchecked(old_len, align),
                new_len,
            )
        }
    };
    if ptr.is_null() {
        // Out of memory: trap (Regent reports it as a fault).
        core::arch::wasm32::unreachable();
    }
    ptr
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn classes() {
        let c = |size, align| SizeClasses::class(layout(size, align));
        assert_eq!(c(1, 1), Some(0));
        assert_eq!(c(16, 8), Some(0));
        assert_eq!(c(17, 1), Some(1));
        assert_eq!(c(32, 16), Some(1));
        assert_eq!(c(33, 4), Some(2));
        assert_eq!(c(4096, 1), Some(8));
        assert_eq!(c(4097, 1), None);
        assert_eq!(c(8, 32), None);
        assert_eq!(SizeClasses::MAX_SMALL, 4096);
    }

    #[test]
    fn blocks_are_aligned_distinct_and_reused() {
        let a = SizeClasses::new();
        unsafe {
            let mut live = Vec::new();
            for size in [1, 7, 16, 17, 100, 300, 1000, 4096, 5000, 70_000] {
                for align in [1, 2, 8, 16] {
                    let l = layout(size, align);
                    let p = a.alloc(l);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align.max(1), 0, "{size}/{align}");
                    ptr::write_bytes(p, size as u8, size);
                    live.push((p, l));
                }
            }
            // No two live blocks overlap, and none was overwritten.
            let mut spans: Vec<(usize, usize)> =
                live.iter().map(|(p, l)| (*p as usize, l.size())).collect();
            spans.sort();
            for w in spans.windows(2) {
                assert!(w[0].0 + w[0].1 <= w[1].0, "overlap: {w:?}");
            }
            for (p, l) in &live {
                let bytes = std::slice::from_raw_parts(*p, l.size());
                assert!(bytes.iter().all(|&b| b == l.size() as u8));
            }
            // A freed small block is the next one handed out for its class.
            let (p, l) = live[0];
            a.dealloc(p, l);
            assert_eq!(a.alloc(layout(3, 1)), p);
            for (p, l) in live.into_iter().skip(1) {
                a.dealloc(p, l);
            }
        }
    }

    #[test]
    fn realloc_keeps_the_contents() {
        let a = SizeClasses::new();
        unsafe {
            let mut l = layout(5, 1);
            let mut p = a.alloc(l);
            ptr::copy_nonoverlapping(b"hello".as_ptr(), p, 5);
            // Within the class: the same block.
            let q = a.realloc(p, l, 12);
            assert_eq!(q, p);
            l = layout(12, 1);
            // Across classes, then to the system allocator and back.
            for new_size in [40, 3000, 10_000, 20_000, 64, 5] {
                p = a.realloc(p, l, new_size);
                assert!(!p.is_null());
                assert_eq!(std::slice::from_raw_parts(p, 5), b"hello", "{new_size}");
                l = layout(new_size, 1);
            }
            a.dealloc(p, l);
        }
    }

    #[test]
    fn many_small_blocks_span_chunks() {
        let a = SizeClasses::new();
        unsafe {
            let l = layout(4096, 8);
            let blocks: Vec<*mut u8> = (0..100).map(|_| a.alloc(l)).collect();
            let mut sorted: Vec<usize> = blocks.iter().map(|p| *p as usize).collect();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), 100);
            for p in blocks {
                a.dealloc(p, l);
            }
        }
    }
}
