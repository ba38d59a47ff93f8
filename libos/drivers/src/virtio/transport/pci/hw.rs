//! The virtio-pci driver's hardware edge: virtio-drivers' configuration access over `libos::pci`'s
//! configuration space ([`Cam`]), and the two virtio structures the driver touches itself — the common
//! configuration's MSI-X vector registers ([`CommonCfg`]) and the ISR status byte ([`isr`]), both located inside
//! a probed memory BAR. Source: virtio 1.2 §4.1.4.3 (`virtio_pci_common_cfg`), §4.1.4.5 (ISR status),
//! §4.1.5.1.2 (MSI-X vector configuration).

use super::cap::{self, COMMON_CFG_LEN};
use crate::irq::IsrStatus;
use libos::pci::{Bdf, ConfigAccess, ConfigSpace, MemoryBar};
use virtio_drivers::transport::pci::bus::{ConfigurationAccess, DeviceFunction};

/// virtio-drivers' `ConfigurationAccess` over libos's configuration space (port I/O or ECAM).
pub(super) struct Cam(pub ConfigSpace);

impl ConfigurationAccess for Cam {
    fn read_word(&self, df: DeviceFunction, offset: u8) -> u32 {
        Bdf::new(df.bus, df.device, df.function).map_or(u32::MAX, |bdf| self.0.read(bdf, u16::from(offset)))
    }

    fn write_word(&mut self, df: DeviceFunction, offset: u8, data: u32) {
        if let Some(bdf) = Bdf::new(df.bus, df.device, df.function) {
            self.0.write(bdf, u16::from(offset), data);
        }
    }

    unsafe fn unsafe_clone(&self) -> Self {
        // `ConfigSpace` is stateless but for the ECAM window: clones reach the same configuration space.
        Self(self.0)
    }
}

/// The address of `len` bytes at `offset` into `bar`, if they lie inside it.
fn inside(bar: &MemoryBar, offset: u32, len: u32) -> Option<u64> {
    (u64::from(offset) + u64::from(len) <= bar.size()).then(|| bar.address() + u64::from(offset))
}

/// `virtio_pci_common_cfg` at a checked place in a mapped memory BAR.
pub(super) struct CommonCfg(u64);

impl CommonCfg {
    /// The structure at `offset` into `bar`; `None` unless [`COMMON_CFG_LEN`] bytes fit there.
    pub(super) fn new(bar: &MemoryBar, offset: u32) -> Option<Self> {
        inside(bar, offset, COMMON_CFG_LEN).map(Self)
    }

    fn write16(&self, offset: u32, v: u16) {
        // SAFETY: `offset` is a field of `virtio_pci_common_cfg` (below COMMON_CFG_LEN), which `new` checked
        // lies inside a memory BAR that `libos::pci` decoded and mapped uncached; register writes only
        // configure the device.
        unsafe { core::ptr::write_volatile((self.0 + u64::from(offset)) as usize as *mut u16, v) }
    }

    fn read16(&self, offset: u32) -> u16 {
        // SAFETY: as in `write16`.
        unsafe { core::ptr::read_volatile((self.0 + u64::from(offset)) as usize as *const u16) }
    }

    /// Points the configuration-change interrupt and each of `queues` at MSI-X table entry `entry`; returns
    /// whether the device accepted every one (it reads back `VIRTIO_MSI_NO_VECTOR` to refuse).
    pub(super) fn set_msix_vectors(&self, queues: &[u16], entry: u16) -> bool {
        self.write16(cap::COMMON_CONFIG_MSIX_VECTOR, entry);
        let mut accepted = self.read16(cap::COMMON_CONFIG_MSIX_VECTOR) == entry;
        for &q in queues {
            self.write16(cap::COMMON_QUEUE_SELECT, q);
            self.write16(cap::COMMON_QUEUE_MSIX_VECTOR, entry);
            accepted &= self.read16(cap::COMMON_QUEUE_MSIX_VECTOR) == entry;
        }
        accepted
    }
}

/// The ISR status byte at `offset` into `bar`; `None` outside it.
pub(super) fn isr(bar: &MemoryBar, offset: u32) -> Option<IsrStatus> {
    inside(bar, offset, 1).map(|a| IsrStatus::checked(a as usize))
}
