//! MSI: the message a function writes to raise an interrupt ([`MsiMessage`], made by
//! `arch::x86_64::apic::msi_message`) and the MSI capability that holds one such message in configuration
//! space (32- or 64-bit address, optional per-vector mask bits). Zirvium enables a single message.
//! Source: PCI Local Bus Specification 3.0 §6.8.1 (MSI capability structure, Message Control), §6.8.3.1
//! (MSI programming); Intel SDM Vol. 3A §11.11 (message address and data on x86).
#![forbid(unsafe_code)]

use super::caps::Capability;
use super::config::ConfigAccess;
use super::Bdf;

/// One interrupt message: the function writes `data` (32 bits; MSI sends the low 16) to `address`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsiMessage {
    /// Message Address (bytes; 0xFEEx_xxxx on x86, naming the destination APIC).
    pub address: u64,
    /// Message Data (the vector and delivery mode on x86).
    pub data: u32,
}

/// Message Control: MSI Enable.
pub const MSI_ENABLE: u16 = 1 << 0;
/// Message Control: Multiple Message Enable (bits 6:4, log2 of the messages enabled).
const MULTIPLE_MESSAGE_ENABLE: u16 = 0b111 << 4;
/// Message Control: 64 bit address capable.
const ADDRESS_64: u16 = 1 << 7;
/// Message Control: Per-vector masking capable.
const PER_VECTOR_MASK: u16 = 1 << 8;

/// The MSI capability of a function: its layout, decoded from Message Control.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsiCap {
    /// Offset of the capability in configuration space (bytes).
    pub offset: u16,
    /// The Message Address is 64 bits (an upper-address register follows the lower).
    pub address_64: bool,
    /// Mask and Pending registers follow Message Data.
    pub per_vector_mask: bool,
    /// Messages the function can send: 1, 2, 4, ... 32 (Multiple Message Capable).
    pub messages: u8,
}

impl MsiCap {
    /// Decodes the MSI capability `cap` (whose `header` is Message Control).
    pub fn decode(cap: &Capability) -> Self {
        let c = cap.header;
        Self {
            offset: cap.offset,
            address_64: c & ADDRESS_64 != 0,
            per_vector_mask: c & PER_VECTOR_MASK != 0,
            messages: 1 << ((c >> 1) & 0b111).min(5),
        }
    }

    fn control(&self) -> u16 {
        self.offset + 2
    }

    fn data(&self) -> u16 {
        self.offset + if self.address_64 { 0x0c } else { 0x08 }
    }

    fn mask(&self) -> u16 {
        self.offset + if self.address_64 { 0x10 } else { 0x0c }
    }
}

/// Programs `message` as the function's only MSI message and enables MSI (with per-vector masking, message 0
/// unmasked). MSI is disabled while the registers change. A 32-bit capability drops the upper address bits,
/// which are 0 for x86 interrupt messages.
pub fn enable<C: ConfigAccess + ?Sized>(cfg: &mut C, bdf: Bdf, cap: &MsiCap, message: MsiMessage) {
    let control = cfg.read16(bdf, cap.control());
    cfg.write16(bdf, cap.control(), control & !(MSI_ENABLE | MULTIPLE_MESSAGE_ENABLE));
    cfg.write(bdf, cap.offset + 4, message.address as u32);
    if cap.address_64 {
        cfg.write(bdf, cap.offset + 8, (message.address >> 32) as u32);
    }
    cfg.write16(bdf, cap.data(), message.data as u16);
    if cap.per_vector_mask {
        cfg.write(bdf, cap.mask(), 0);
    }
    cfg.write16(bdf, cap.control(), (control & !MULTIPLE_MESSAGE_ENABLE) | MSI_ENABLE);
}

/// Disables MSI on `bdf`.
pub fn disable<C: ConfigAccess + ?Sized>(cfg: &mut C, bdf: Bdf, cap: &MsiCap) {
    let control = cfg.read16(bdf, cap.control());
    cfg.write16(bdf, cap.control(), control & !MSI_ENABLE);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::caps::CAP_ID_MSI;
    use crate::pci::config::fake::FakeConfig;

    fn setup(control: u16) -> (FakeConfig, Bdf, MsiCap) {
        let f = Bdf::new(0, 4, 0).unwrap();
        let mut c = FakeConfig::default();
        c.function(f, 0x8086, 0x10d3, 0x0200_0000, 0);
        c.set(f, 0x50, u32::from(control) << 16 | CAP_ID_MSI as u32);
        let cap = MsiCap::decode(&Capability { id: CAP_ID_MSI, offset: 0x50, header: control });
        (c, f, cap)
    }

    #[test]
    fn sixty_four_bit_with_masking() {
        // e1000e: 64-bit, 1 message; with per-vector masking added to check the mask register.
        let (mut c, f, cap) = setup(ADDRESS_64 | PER_VECTOR_MASK);
        assert_eq!(cap, MsiCap { offset: 0x50, address_64: true, per_vector_mask: true, messages: 1 });
        c.set(f, 0x60, 1); // message 0 masked
        enable(&mut c, f, &cap, MsiMessage { address: 0xFEE0_1000, data: 0x31 });
        assert_eq!([c.get(f, 0x54), c.get(f, 0x58), c.get(f, 0x5c), c.get(f, 0x60)], [0xFEE0_1000, 0, 0x31, 0]);
        assert_eq!(c.get(f, 0x50) >> 16, u32::from(ADDRESS_64 | PER_VECTOR_MASK | MSI_ENABLE));
        disable(&mut c, f, &cap);
        assert_eq!(c.get(f, 0x50) >> 16, u32::from(ADDRESS_64 | PER_VECTOR_MASK));
    }

    #[test]
    fn thirty_two_bit_multi_message() {
        let (mut c, f, cap) = setup(0b010 << 1 | 0b010 << 4); // capable of 4, 4 enabled by someone
        assert_eq!((cap.address_64, cap.messages), (false, 4));
        enable(&mut c, f, &cap, MsiMessage { address: 0xFEE0_0000, data: 0x4041 });
        assert_eq!([c.get(f, 0x54), c.get(f, 0x58)], [0xFEE0_0000, 0x4041]);
        assert_eq!(c.get(f, 0x50) >> 16, u32::from(0b010 << 1 | MSI_ENABLE), "one message enabled");
    }
}
