//! `virtio_pci_cap`, the vendor-specific capability locating each virtio structure in a memory BAR
//! (virtio-drivers' `PciTransport` parses these too, but keeps the locations private; the driver needs the
//! common configuration for the MSI-X vector registers and the ISR byte for INTx), and the
//! `virtio_pci_common_cfg` offsets it touches. Source: virtio 1.2 §4.1.4 (`virtio_pci_cap`), §4.1.4.3
//! (`virtio_pci_common_cfg` offsets), §4.1.5.1.2 (MSI-X vector configuration, `VIRTIO_MSI_NO_VECTOR`).
#![forbid(unsafe_code)]

pub use libos::pci::caps::CapError;

/// `virtio_pci_cap.cfg_type` of the common configuration structure.
pub const VIRTIO_PCI_CAP_COMMON_CFG: u8 = 1;
/// `virtio_pci_cap.cfg_type` of the notification structure.
pub const VIRTIO_PCI_CAP_NOTIFY_CFG: u8 = 2;
/// `virtio_pci_cap.cfg_type` of the ISR status byte.
pub const VIRTIO_PCI_CAP_ISR_CFG: u8 = 3;
/// `virtio_pci_cap.cfg_type` of the device-specific configuration.
pub const VIRTIO_PCI_CAP_DEVICE_CFG: u8 = 4;
/// `virtio_pci_common_cfg.config_msix_vector` offset (bytes, le16).
pub const COMMON_CONFIG_MSIX_VECTOR: u32 = 0x10;
/// `virtio_pci_common_cfg.num_queues` offset (bytes, le16).
pub const COMMON_NUM_QUEUES: u32 = 0x12;
/// `virtio_pci_common_cfg.queue_select` offset (bytes, le16).
pub const COMMON_QUEUE_SELECT: u32 = 0x16;
/// `virtio_pci_common_cfg.queue_msix_vector` offset (bytes, le16).
pub const COMMON_QUEUE_MSIX_VECTOR: u32 = 0x1A;
/// Length of `virtio_pci_common_cfg` up to `queue_device` inclusive (bytes).
pub const COMMON_CFG_LEN: u32 = 0x38;
/// `VIRTIO_MSI_NO_VECTOR`: the device raises no interrupt for this source (and reads it back on failure).
pub const VIRTIO_MSI_NO_VECTOR: u16 = 0xFFFF;

/// A `virtio_pci_cap`: one virtio structure inside a memory BAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtioPciCap {
    /// Structure type (`VIRTIO_PCI_CAP_*`).
    pub cfg_type: u8,
    /// BAR holding it.
    pub bar: u8,
    /// Offset in the BAR (bytes).
    pub offset: u32,
    /// Length (bytes).
    pub length: u32,
}

impl VirtioPciCap {
    /// Decodes the first four dwords of the capability (as read from configuration space).
    /// Errors: [`CapError::TooShort`] below the 16-byte layout, [`CapError::BadBar`].
    pub fn decode(dwords: [u32; 4]) -> Result<Self, CapError> {
        let cap_len = (dwords[0] >> 16) as u8;
        if cap_len < 16 {
            return Err(CapError::TooShort { len: cap_len });
        }
        let bar = dwords[1] as u8;
        if bar > 5 {
            return Err(CapError::BadBar { bir: bar });
        }
        Ok(Self { cfg_type: (dwords[0] >> 24) as u8, bar, offset: dwords[2], length: dwords[3] })
    }

    /// Checks that `need` bytes of the structure fit in both its declared length and its BAR of
    /// `bar_size` bytes. Errors: [`CapError::OutOfBar`].
    pub fn check_fits(&self, need: u32, bar_size: u64) -> Result<(), CapError> {
        let (offset, len) = (u64::from(self.offset), u64::from(self.length));
        if len < u64::from(need) || offset + len > bar_size {
            return Err(CapError::OutOfBar { offset, len, bar_size });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtio_cap_decode() {
        // QEMU: common cfg in BAR 4 at 0, 0x1000 bytes; cap header: vndr 0x09, next 0x84, len 16, type 1.
        let cap = VirtioPciCap::decode([0x0110_8409, 4, 0, 0x1000]).unwrap();
        assert_eq!(cap, VirtioPciCap { cfg_type: VIRTIO_PCI_CAP_COMMON_CFG, bar: 4, offset: 0, length: 0x1000 });
        assert_eq!(cap.check_fits(COMMON_CFG_LEN, 0x4000), Ok(()));
        assert!(cap.check_fits(COMMON_CFG_LEN, 0x800).is_err());
        let short = VirtioPciCap { length: 8, ..cap };
        assert!(short.check_fits(COMMON_CFG_LEN, 0x4000).is_err());
        assert_eq!(VirtioPciCap::decode([0x010c_0009, 4, 0, 0]), Err(CapError::TooShort { len: 12 }));
        assert_eq!(VirtioPciCap::decode([0x0110_0009, 9, 0, 0]), Err(CapError::BadBar { bir: 9 }));
        let huge = VirtioPciCap { offset: u32::MAX, length: u32::MAX, ..cap };
        assert!(huge.check_fits(1, 0x1_0000_0000).is_err(), "offset + length is computed without overflow");
        assert_eq!(huge.check_fits(1, 0x2_0000_0000), Ok(()));
    }
}
