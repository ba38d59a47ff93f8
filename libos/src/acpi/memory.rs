//! [`PhysRead`] over the guest's identity-mapped memory below 4 GiB, where firmware puts the RSDP and the
//! ACPI tables (the BIOS area, reserved or ACPI-reclaim RAM).
#![allow(unsafe_code)]

use super::PhysRead;
use alloc::vec::Vec;

const FOUR_GIB: u64 = 1 << 32;

/// Guest-physical memory below 4 GiB, identity mapped by libos (`mem::paging`; page 0 is not mapped).
#[derive(Debug, Clone, Copy, Default)]
pub struct LowMemory;

impl PhysRead for LowMemory {
    fn read(&self, paddr: u64, len: usize) -> Option<Vec<u8>> {
        let end = paddr.checked_add(len as u64)?;
        if paddr < 0x1000 || end > FOUR_GIB {
            return None;
        }
        let mut v = alloc::vec![0u8; len];
        // SAFETY: the range is below 4 GiB and above page 0, all identity mapped by libos; firmware tables
        // are plain memory, read byte-wise into our own buffer.
        unsafe { core::ptr::copy_nonoverlapping(paddr as usize as *const u8, v.as_mut_ptr(), len) };
        Some(v)
    }
}
