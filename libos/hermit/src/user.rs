//! Where the C ABI's raw pointers become Rust references: every `sys_*` argument that points at the caller's
//! memory passes through here. Checks: null (with a non-zero length), address overflow, and — in the VM —
//! that the whole range lies in RAM the boot memory map describes (everything else is unmapped or MMIO).
//! Bad pointers give `EFAULT`, absurd lengths `EINVAL`; nothing here panics. What the checks cannot know is
//! whether the caller still owns the memory: that is the ABI's contract with the program, as for any kernel.

// These functions take the C caller's pointers on purpose: checking them is what this module is for, and it is
// the one place they are dereferenced (the `sys_*` functions stay safe to call from Rust, as they are from C).
#![allow(unsafe_code)]
#![allow(clippy::not_unsafe_ptr_arg_deref)]

use crate::errno::{AbiResult, Errno};
use alloc::vec::Vec;

/// Longest C string accepted (bytes, without the NUL): POSIX `PATH_MAX`.
pub const MAX_CSTR: usize = 4096;

/// Whether `[addr, addr + len)` is acceptable memory of the caller. Errors: `EFAULT`, `EINVAL` for a
/// length over `isize::MAX`.
pub fn check(addr: usize, len: usize) -> AbiResult<()> {
    if len > isize::MAX as usize {
        return Err(Errno::EINVAL);
    }
    if len == 0 {
        return Ok(());
    }
    let end = addr.checked_add(len).ok_or(Errno::EFAULT)?;
    if addr == 0 || !in_ram(addr as u64, end as u64) {
        return Err(Errno::EFAULT);
    }
    Ok(())
}

#[cfg(target_os = "none")]
fn in_ram(start: u64, end: u64) -> bool {
    use libos::bootinfo::RegionKind;
    let Some(boot) = libos::start::boot_info() else { return false };
    boot.regions().iter().any(|r| r.kind == RegionKind::Ram && start >= r.start && end <= r.end())
}

#[cfg(not(target_os = "none"))]
fn in_ram(_: u64, _: u64) -> bool {
    true
}

/// The caller's `len` bytes at `ptr`, for reading.
pub fn slice<'a>(ptr: *const u8, len: usize) -> AbiResult<&'a [u8]> {
    check(ptr as usize, len)?;
    if len == 0 {
        return Ok(&[]);
    }
    // SAFETY: non-null, in RAM, no overflow (checked); the ABI contract gives us the range for this call.
    Ok(unsafe { core::slice::from_raw_parts(ptr, len) })
}

/// The caller's `len` bytes at `ptr`, for writing.
pub fn slice_mut<'a>(ptr: *mut u8, len: usize) -> AbiResult<&'a mut [u8]> {
    check(ptr as usize, len)?;
    if len == 0 {
        return Ok(&mut []);
    }
    // SAFETY: as in `slice`; the caller hands the buffer to this call exclusively.
    Ok(unsafe { core::slice::from_raw_parts_mut(ptr, len) })
}

/// Reads a `T` from `ptr` (any alignment).
pub fn read<T: Copy>(ptr: *const T) -> AbiResult<T> {
    check(ptr as usize, core::mem::size_of::<T>())?;
    // SAFETY: the range is checked; `read_unaligned` needs no alignment; `T: Copy` is plain data here (ABI
    // structs and integers).
    Ok(unsafe { ptr.read_unaligned() })
}

/// Writes `v` to `ptr` (any alignment).
pub fn write<T: Copy>(ptr: *mut T, v: T) -> AbiResult<()> {
    check(ptr as usize, core::mem::size_of::<T>())?;
    // SAFETY: as in `read`.
    unsafe { ptr.write_unaligned(v) };
    Ok(())
}

/// Reads an optional `T`: `None` for a null pointer.
pub fn read_opt<T: Copy>(ptr: *const T) -> AbiResult<Option<T>> {
    if ptr.is_null() {
        return Ok(None);
    }
    read(ptr).map(Some)
}

/// A NUL-terminated UTF-8 string at `ptr` (at most [`MAX_CSTR`] bytes before the NUL). Errors: `EFAULT`,
/// `ENAMETOOLONG` without a NUL in range, `EINVAL` for invalid UTF-8.
pub fn cstr<'a>(ptr: *const u8) -> AbiResult<&'a str> {
    if ptr.is_null() {
        return Err(Errno::EFAULT);
    }
    let mut len = 0;
    loop {
        if len > MAX_CSTR {
            return Err(Errno::ENAMETOOLONG);
        }
        let b = read(ptr.wrapping_add(len))?;
        if b == 0 {
            break;
        }
        len += 1;
    }
    core::str::from_utf8(slice(ptr, len)?).map_err(|_| Errno::EINVAL)
}

/// `(address, length)` of each of the `n` `iovec`s at `iov`. Errors: `EINVAL` for more than `IOV_MAX`.
pub fn iovecs(iov: *const crate::abi::iovec, n: usize) -> AbiResult<Vec<(usize, usize)>> {
    if n > crate::abi::IOV_MAX {
        return Err(Errno::EINVAL);
    }
    (0..n).map(|i| read(iov.wrapping_add(i)).map(|v| (v.iov_base, v.iov_len))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_overflow_and_huge_lengths_are_refused() {
        assert_eq!(check(0, 1), Err(Errno::EFAULT));
        assert_eq!(check(0, 0), Ok(()), "an empty buffer may be null");
        assert_eq!(check(usize::MAX - 3, 8), Err(Errno::EFAULT));
        assert_eq!(check(0x1000, usize::MAX), Err(Errno::EINVAL));
        assert!(slice(core::ptr::null(), 4).is_err());
        assert_eq!(slice(core::ptr::null(), 0).map(<[u8]>::len), Ok(0));
    }

    #[test]
    fn cstr_needs_nul_and_utf8() {
        assert_eq!(cstr(c"/data/x".as_ptr().cast()), Ok("/data/x"));
        assert_eq!(cstr(core::ptr::null()), Err(Errno::EFAULT));
        assert_eq!(cstr(c"\xff".as_ptr().cast()), Err(Errno::EINVAL));
        let long = alloc::vec![b'a'; MAX_CSTR + 8];
        assert_eq!(cstr(long.as_ptr()), Err(Errno::ENAMETOOLONG));
    }

    #[test]
    fn structs_read_and_write_unaligned() {
        let mut buf = [0u8; 9];
        let p = buf.as_mut_ptr().wrapping_add(1) as *mut u64;
        write(p, 0x1122_3344_5566_7788u64).unwrap();
        assert_eq!(read(p as *const u64), Ok(0x1122_3344_5566_7788));
        assert_eq!(read_opt::<u32>(core::ptr::null()), Ok(None));
        let v = [crate::abi::iovec { iov_base: 16, iov_len: 3 }];
        assert_eq!(iovecs(v.as_ptr(), 1), Ok(alloc::vec![(16, 3)]));
        assert_eq!(iovecs(v.as_ptr(), crate::abi::IOV_MAX + 1), Err(Errno::EINVAL));
    }
}
