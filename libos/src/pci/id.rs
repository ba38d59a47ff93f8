//! PCI identifiers: a function's address ([`Bdf`]), the IDs in its configuration header ([`VendorId`],
//! [`DeviceId`], [`ClassCode`]) and its header layout ([`HeaderType`]).
//! Source: PCI Local Bus Specification 3.0 §3.2.2.3.2 (bus/device/function numbers), §6.2.1 (Vendor ID, Device
//! ID, Class Code, Header Type), Appendix D (class codes); PCI-to-PCI Bridge Architecture 1.2 §3.2 (type 1).
#![forbid(unsafe_code)]

use core::fmt;

/// A function's address on segment 0: bus, device (0..32) and function (0..8). Displays as `bb:dd.f`
/// (`00:03.0`), the form Linux and QEMU print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bdf {
    bus: u8,
    device: u8,
    function: u8,
}

impl Bdf {
    /// Devices on one bus.
    pub const DEVICES: u8 = 32;
    /// Functions of one device.
    pub const FUNCTIONS: u8 = 8;

    /// The function `bus:device.function`; `None` when `device` ≥ 32 or `function` ≥ 8.
    pub const fn new(bus: u8, device: u8, function: u8) -> Option<Self> {
        if device < Self::DEVICES && function < Self::FUNCTIONS {
            Some(Self { bus, device, function })
        } else {
            None
        }
    }

    /// Bus number.
    pub const fn bus(self) -> u8 {
        self.bus
    }

    /// Device number (0..32).
    pub const fn device(self) -> u8 {
        self.device
    }

    /// Function number (0..8).
    pub const fn function(self) -> u8 {
        self.function
    }
}

impl fmt::Display for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus, self.device, self.function)
    }
}

/// A Vendor ID (PCI-SIG assigned). Displays as four hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VendorId(pub u16);

impl VendorId {
    /// What a read of an absent function returns: no device there.
    pub const NONE: Self = Self(0xffff);
    /// Red Hat / Qumranet, the virtio vendor (virtio 1.2 §4.1.2).
    pub const VIRTIO: Self = Self(0x1af4);
}

/// A Device ID (assigned by the vendor). Displays as four hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceId(pub u16);

impl fmt::Display for VendorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04x}", self.0)
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04x}", self.0)
    }
}

/// The Class Code register: base class, subclass and programming interface (e.g. 01:08:02 = NVMe).
/// Displays as `cc:ss:pp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClassCode {
    /// Base class (01 mass storage, 02 network, 06 bridge, ...).
    pub class: u8,
    /// Subclass within the base class.
    pub subclass: u8,
    /// Programming interface (register-level interface).
    pub prog_if: u8,
}

impl ClassCode {
    /// Decodes the dword at offset 0x08 (Revision ID in bits 7:0, class code in 31:8) into the class code
    /// and the revision.
    pub const fn from_register(dword: u32) -> (Self, u8) {
        let class = Self { class: (dword >> 24) as u8, subclass: (dword >> 16) as u8, prog_if: (dword >> 8) as u8 };
        (class, dword as u8)
    }

    /// A short English name of the class for logs ("network controller", "host bridge", ...).
    pub fn name(&self) -> &'static str {
        match (self.class, self.subclass) {
            (0x01, 0x01) => "IDE controller",
            (0x01, 0x06) => "SATA controller",
            (0x01, 0x08) => "NVM controller",
            (0x01, _) => "storage controller",
            (0x02, _) => "network controller",
            (0x03, _) => "display controller",
            (0x06, 0x00) => "host bridge",
            (0x06, 0x01) => "ISA bridge",
            (0x06, 0x04) => "PCI bridge",
            (0x06, _) => "bridge",
            (0x0c, 0x05) => "SMBus controller",
            _ => "device",
        }
    }
}

impl fmt::Display for ClassCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}:{:02x}:{:02x}", self.class, self.subclass, self.prog_if)
    }
}

/// The layout of a function's configuration header (Header Type bits 6:0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderType {
    /// Type 0: an endpoint, six BARs.
    Standard,
    /// Type 1: a PCI-to-PCI bridge, two BARs and bus numbers.
    Bridge,
    /// Type 2: a CardBus bridge.
    CardBus,
    /// A reserved value.
    Unknown(u8),
}

impl HeaderType {
    /// Decodes the Header Type byte (bit 7, multi-function, ignored).
    pub const fn from_byte(b: u8) -> Self {
        match b & 0x7f {
            0 => Self::Standard,
            1 => Self::Bridge,
            2 => Self::CardBus,
            other => Self::Unknown(other),
        }
    }

    /// BARs this header has (6, 2 for a bridge, none otherwise).
    pub const fn bars(self) -> u8 {
        match self {
            Self::Standard => 6,
            Self::Bridge => 2,
            Self::CardBus | Self::Unknown(_) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    #[test]
    fn bdf_range_and_format() {
        assert_eq!(format!("{}", Bdf::new(0, 0x1f, 3).unwrap()), "00:1f.3");
        assert_eq!(format!("{}", Bdf::new(0x12, 1, 0).unwrap()), "12:01.0");
        assert_eq!(Bdf::new(0, 32, 0), None);
        assert_eq!(Bdf::new(0, 0, 8), None);
        let b = Bdf::new(3, 4, 5).unwrap();
        assert_eq!((b.bus(), b.device(), b.function()), (3, 4, 5));
    }

    #[test]
    fn ids_and_class() {
        assert_eq!(format!("{}:{}", VendorId(0x1af4), DeviceId(0x1041)), "1af4:1041");
        let (c, rev) = ClassCode::from_register(0x0108_0201);
        assert_eq!((c, rev), (ClassCode { class: 1, subclass: 8, prog_if: 2 }, 1));
        assert_eq!(format!("{c}"), "01:08:02");
        assert_eq!(c.name(), "NVM controller");
        assert_eq!(ClassCode { class: 6, subclass: 4, prog_if: 0 }.name(), "PCI bridge");
        assert_eq!(HeaderType::from_byte(0x80), HeaderType::Standard, "multi-function bit ignored");
        assert_eq!(HeaderType::from_byte(0x81).bars(), 2);
        assert_eq!(HeaderType::from_byte(0x7f), HeaderType::Unknown(0x7f));
    }
}
