//! MSI-X: the capability (table size, the BAR and offset of the vector table) and the table programming
//! sequence: entries written with the whole function masked, unused entries masked, then the function unmasked.
//! The table lives in a memory BAR; the caller writes it (the hardware side checks the BAR), so the sequence is
//! host-tested against a model. Source: PCI Local Bus Specification 3.0 §6.8.2 (MSI-X capability and table
//! entry layout), §6.8.3.2–6.8.3.5 (MSI-X programming, masking).
#![forbid(unsafe_code)]

use super::caps::{CapError, Capability};
use super::config::ConfigAccess;
use super::msi::MsiMessage;
use super::Bdf;

/// MSI-X Message Control: MSI-X Enable.
pub const MSIX_ENABLE: u16 = 1 << 15;
/// MSI-X Message Control: Function Mask (all vectors masked while set).
pub const MSIX_FUNCTION_MASK: u16 = 1 << 14;
/// Size of one MSI-X table entry (bytes).
pub const MSIX_ENTRY_SIZE: u32 = 16;
/// Vector Control: Mask Bit.
pub const MSIX_ENTRY_MASKED: u32 = 1;

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

    /// Reads and decodes the MSI-X capability `cap` of `bdf` (whose `header` is Message Control).
    /// Errors: [`CapError::BadBar`].
    pub fn read<C: ConfigAccess + ?Sized>(cfg: &C, bdf: Bdf, cap: &Capability) -> Result<Self, CapError> {
        Self::decode(cap.header, cfg.read(bdf, cap.offset + 4))
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

/// Enables MSI-X on `bdf` (capability at `cap_offset`) with `messages[i]` in table entry `i`, unmasked, and
/// every other entry masked. The entries are written while Function Mask is set; then it is cleared.
/// `write_table(offset, dword)` writes one dword of the table, `offset` bytes from its start (the caller has
/// checked the table against its BAR with [`MsixCap::check_fits`]). Errors: [`CapError::TableTooSmall`].
pub fn enable<C: ConfigAccess + ?Sized>(
    cfg: &mut C,
    bdf: Bdf,
    cap_offset: u16,
    cap: &MsixCap,
    messages: &[MsiMessage],
    write_table: &mut dyn FnMut(u32, u32),
) -> Result<(), CapError> {
    if messages.len() > usize::from(cap.table_size) {
        return Err(CapError::TableTooSmall { entries: cap.table_size, need: messages.len() });
    }
    let control_at = cap_offset + 2;
    let control = cfg.read16(bdf, control_at);
    cfg.write16(bdf, control_at, control | MSIX_ENABLE | MSIX_FUNCTION_MASK);
    for i in 0..cap.table_size {
        let Some(at) = cap.entry_offset(i) else { break };
        let words = match messages.get(usize::from(i)) {
            Some(m) => msix_entry(m.address, m.data, false),
            None => msix_entry(0, 0, true),
        };
        for (k, w) in (0u32..).zip(words) {
            write_table(at + 4 * k, w);
        }
    }
    cfg.write16(bdf, control_at, (control | MSIX_ENABLE) & !MSIX_FUNCTION_MASK);
    Ok(())
}

/// Disables MSI-X on `bdf` (capability at `cap_offset`): the function falls back to INTx or MSI.
pub fn disable<C: ConfigAccess + ?Sized>(cfg: &mut C, bdf: Bdf, cap_offset: u16) {
    let control = cfg.read16(bdf, cap_offset + 2);
    cfg.write16(bdf, cap_offset + 2, control & !MSIX_ENABLE);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::config::fake::FakeConfig;
    use alloc::vec;

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
    fn enable_programs_masked_then_unmasks() {
        let f = Bdf::new(0, 3, 0).unwrap();
        let mut c = FakeConfig::default();
        c.function(f, 0x1af4, 0x1041, 0x0200_0001, 0);
        c.set(f, 0x98, 0x0002_8411);
        c.set(f, 0x9c, 0x0000_0001);
        let cap = MsixCap::read(&c, f, &Capability { id: 0x11, offset: 0x98, header: 2 }).unwrap();
        let mut table = vec![0xffff_ffffu32; 12];
        let msg = MsiMessage { address: 0xFEE0_0000, data: 0x30 };
        enable(&mut c, f, 0x98, &cap, &[msg], &mut |at, v| table[at as usize / 4] = v).unwrap();
        assert_eq!(table, [0xFEE0_0000, 0, 0x30, 0, 0, 0, 0, 1, 0, 0, 0, 1]);
        let controls: alloc::vec::Vec<_> = c.writes.iter().map(|w| (w.2 >> 16) as u16).collect();
        assert_eq!(controls, [MSIX_ENABLE | MSIX_FUNCTION_MASK | 2, MSIX_ENABLE | 2], "masked while programming");
        assert_eq!(c.get(f, 0x98) & 0xffff, 0x8411, "ID and next pointer kept");
        disable(&mut c, f, 0x98);
        assert_eq!(c.get(f, 0x98) >> 16, 2);
        let too_many = [msg; 4];
        assert_eq!(
            enable(&mut c, f, 0x98, &cap, &too_many, &mut |_, _| {}),
            Err(CapError::TableTooSmall { entries: 3, need: 4 })
        );
    }
}
