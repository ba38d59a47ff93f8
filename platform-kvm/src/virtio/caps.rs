//! PCI capability structures the virtio-pci layer reads itself: the MSI-X capability and its table
//! entries, and `virtio_pci_cap` (virtio-drivers' `PciTransport` parses these too, but keeps the locations
//! private; we need the common configuration for the MSI-X vector registers and the ISR byte for INTx).
//! Source: PCI Local Bus Specification 3.0 §6.8.2 (MSI-X capability, table entry layout); virtio 1.2
//! §4.1.4 (`virtio_pci_cap`), §4.1.4.3 (`virtio_pci_common_cfg` offsets), §4.1.5.1.2 (MSI-X vector
//! configuration, `VIRTIO_MSI_NO_VECTOR`).
#![forbid(unsafe_code)]

use core::fmt;

/// Capability ID of MSI-X.
pub const CAP_ID_MSIX: u8 = 0x11;
/// Capability ID of vendor-specific capabilities (virtio's structures).
pub const CAP_ID_VENDOR: u8 = 0x09;
/// MSI-X Message Control: MSI-X Enable.
pub const MSIX_ENABLE: u16 = 1 << 15;
/// MSI-X Message Control: Function Mask (all vectors masked while set).
pub const MSIX_FUNCTION_MASK: u16 = 1 << 14;
/// Size of one MSI-X table entry (bytes).
pub const MSIX_ENTRY_SIZE: u32 = 16;
/// Vector Control: Mask Bit.
pub const MSIX_ENTRY_MASKED: u32 = 1;

/// `virtio_pci_cap.cfg_type` of the common configuration structure.
pub const VIRTIO_PCI_CAP_COMMON_CFG: u8 = 1;
/// `virtio_pci_cap.cfg_type` of the ISR status byte.
pub const VIRTIO_PCI_CAP_ISR_CFG: u8 = 3;
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

/// A malformed capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapError {
    /// A BAR indicator above 5.
    BadBar { bir: u8 },
    /// The structure does not fit in its BAR.
    OutOfBar { offset: u64, len: u64, bar_size: u64 },
    /// The capability is shorter than its fixed layout.
    TooShort { len: u8 },
}

impl fmt::Display for CapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadBar { bir } => write!(f, "capability names BAR {bir}, only 0..=5 exist"),
            Self::OutOfBar { offset, len, bar_size } => {
                write!(f, "structure at {offset:#x}+{len:#x} does not fit in its {bar_size:#x}-byte BAR")
            }
            Self::TooShort { len } => write!(f, "capability of {len} bytes is shorter than its layout"),
        }
    }
}

/// The MSI-X capability: where the vector table is, and how many entries it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsixCap {
    /// Number of table entries (Message Control bits 10:0, plus one).
    pub table_size: u16,
    /// BAR holding the table.
    pub table_bar: u8,
    /// Offset of the table in that BAR (bytes, 8-byte aligned).
    pub table_offset: u32,
}

impl MsixCap {
    /// Decodes the capability from Message Control and the Table Offset/BIR dword.
    /// Errors: [`CapError::BadBar`].
    pub fn decode(message_control: u16, table: u32) -> Result<Self, CapError> {
        let bir = (table & 7) as u8;
        if bir > 5 {
            return Err(CapError::BadBar { bir });
        }
        Ok(Self { table_size: (message_control & 0x7ff) + 1, table_bar: bir, table_offset: table & !7 })
    }

    /// Length of the table (bytes).
    pub fn table_len(&self) -> u32 {
        u32::from(self.table_size) * MSIX_ENTRY_SIZE
    }

    /// Checks that the table lies inside its BAR of `bar_size` bytes. Errors: [`CapError::OutOfBar`].
    pub fn check_fits(&self, bar_size: u64) -> Result<(), CapError> {
        let (offset, len) = (u64::from(self.table_offset), u64::from(self.table_len()));
        if offset + len > bar_size {
            return Err(CapError::OutOfBar { offset, len, bar_size });
        }
        Ok(())
    }

    /// Offset of entry `index` from the table start (bytes), or `None` past the table.
    pub fn entry_offset(&self, index: u16) -> Option<u32> {
        (index < self.table_size).then(|| u32::from(index) * MSIX_ENTRY_SIZE)
    }
}

/// The four dwords of an MSI-X table entry: Message Address (low, high), Message Data, Vector Control.
pub fn msix_entry(address: u64, data: u32, masked: bool) -> [u32; 4] {
    [address as u32, (address >> 32) as u32, data, if masked { MSIX_ENTRY_MASKED } else { 0 }]
}

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
    fn msix_qemu_virtio_net() {
        // QEMU virtio-net-pci, vectors=3: Message Control table size 2 (N-1), table in BAR 1 at 0.
        let c = MsixCap::decode(0x0002, 0x0000_0001).unwrap();
        assert_eq!(c, MsixCap { table_size: 3, table_bar: 1, table_offset: 0 });
        assert_eq!(c.table_len(), 48);
        assert_eq!(c.entry_offset(0), Some(0));
        assert_eq!(c.entry_offset(2), Some(32));
        assert_eq!(c.entry_offset(3), None);
        assert_eq!(c.check_fits(0x1000), Ok(()));
        assert_eq!(c.check_fits(32), Err(CapError::OutOfBar { offset: 0, len: 48, bar_size: 32 }));
    }

    #[test]
    fn msix_decode_edges() {
        let c = MsixCap::decode(MSIX_ENABLE | MSIX_FUNCTION_MASK | 0x7ff, 0x0000_2804).unwrap();
        assert_eq!(c, MsixCap { table_size: 2048, table_bar: 4, table_offset: 0x2800 });
        assert_eq!(MsixCap::decode(0, 6), Err(CapError::BadBar { bir: 6 }));
        assert_eq!(MsixCap::decode(0, 0x1007), Err(CapError::BadBar { bir: 7 }));
    }

    #[test]
    fn msix_entry_words() {
        assert_eq!(msix_entry(0xFEE0_1000, 0x31, false), [0xFEE0_1000, 0, 0x31, 0]);
        assert_eq!(msix_entry(0x1_2345_6780, 7, true), [0x2345_6780, 1, 7, 1]);
    }

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
