//! Memory: `sys_malloc`/`sys_alloc`, `sys_alloc_zeroed`, `sys_realloc`, `sys_free`/`sys_dealloc` on the kernel
//! heap (`talc`, interrupts masked inside), with Rust's `GlobalAlloc` contract: the caller passes back the size
//! and alignment it allocated with. Failure is a null pointer (std then reports the allocation error); these
//! need no preemption guard because the heap lock masks interrupts.
// The ABI's allocator over the kernel heap (`alloc::alloc`), and `#[no_mangle]` exports.
#![allow(unsafe_code)]

use core::alloc::Layout;

/// Alignment-sized dangling pointer for zero-size requests (never dereferenced, never freed).
fn dangling(align: usize) -> *mut u8 {
    align as *mut u8
}

fn layout(size: usize, align: usize) -> Option<Layout> {
    Layout::from_size_align(size, align).ok()
}

fn allocate(size: usize, align: usize, zeroed: bool) -> *mut u8 {
    match layout(size, align) {
        Some(l) if size == 0 => dangling(l.align()),
        // SAFETY: a valid, non-zero-size layout.
        Some(l) if zeroed => unsafe { ::alloc::alloc::alloc_zeroed(l) },
        // SAFETY: as above.
        Some(l) => unsafe { ::alloc::alloc::alloc(l) },
        None => core::ptr::null_mut(),
    }
}

/// Allocates `size` bytes aligned to `align` (a power of two). Returns null for a bad layout or when the heap is
/// exhausted; a non-null dangling pointer for `size` 0.
#[no_mangle]
pub extern "C" fn sys_malloc(size: usize, align: usize) -> *mut u8 {
    allocate(size, align, false)
}

/// Same as [`sys_malloc`] (the `libc` crate's name).
#[no_mangle]
pub extern "C" fn sys_alloc(size: usize, align: usize) -> *mut u8 {
    allocate(size, align, false)
}

/// [`sys_malloc`] with the memory zeroed.
#[no_mangle]
pub extern "C" fn sys_alloc_zeroed(size: usize, align: usize) -> *mut u8 {
    allocate(size, align, true)
}

/// Resizes the block at `ptr` (allocated with `size`/`align`) to `new_size`, moving it if needed. Returns
/// null (the old block stays valid) on failure or a bad layout; a null `ptr` allocates.
///
/// # Safety
/// `ptr` is null or a live block from these functions allocated with exactly `size` and `align`.
#[no_mangle]
pub unsafe extern "C" fn sys_realloc(ptr: *mut u8, size: usize, align: usize, new_size: usize) -> *mut u8 {
    if ptr.is_null() || size == 0 {
        return sys_malloc(new_size, align);
    }
    let (Some(old), Some(_)) = (layout(size, align), layout(new_size, align)) else { return core::ptr::null_mut() };
    if new_size == 0 {
        // SAFETY: forwarded contract of this function.
        unsafe { sys_free(ptr, size, align) };
        return dangling(align);
    }
    // SAFETY: per the ABI contract `ptr` came from this allocator with `old`; `new_size` is non-zero and, with
    // `align`, a valid layout.
    unsafe { ::alloc::alloc::realloc(ptr, old, new_size) }
}

/// Frees the block at `ptr` allocated with `size`/`align`. Null pointers, size 0 and bad layouts are ignored.
///
/// # Safety
/// `ptr` is null or a live block from these functions allocated with exactly `size` and `align`; it is not
/// used afterwards.
#[no_mangle]
pub unsafe extern "C" fn sys_free(ptr: *mut u8, size: usize, align: usize) {
    if ptr.is_null() || size == 0 {
        return;
    }
    if let Some(l) = layout(size, align) {
        // SAFETY: per the ABI contract `ptr` came from this allocator with this layout.
        unsafe { ::alloc::alloc::dealloc(ptr, l) }
    }
}

/// Same as [`sys_free`] (the `libc` crate's name).
///
/// # Safety
/// As [`sys_free`].
#[no_mangle]
pub unsafe extern "C" fn sys_dealloc(ptr: *mut u8, size: usize, align: usize) {
    // SAFETY: forwarded contract.
    unsafe { sys_free(ptr, size, align) }
}
