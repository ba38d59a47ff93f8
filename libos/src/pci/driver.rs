//! The PCI driver table: each [`Driver`] declares the functions it takes ([`Match`]: vendor/device pairs,
//! class codes) and a probe function; a scan hands every function to the first driver that matches and
//! collects what was bound in a [`Report`] for the boot log.
#![forbid(unsafe_code)]

use super::{Bdf, Device, DeviceId, Function, VendorId};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// Functions a driver takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    /// One vendor/device pair.
    Id {
        /// Vendor ID.
        vendor: VendorId,
        /// Device ID.
        device: DeviceId,
    },
    /// A base class and subclass, and the programming interface unless `None` (e.g. NVMe: 01:08:02).
    Class {
        /// Base class code (e.g. 0x01 mass storage).
        class: u8,
        /// Subclass code (e.g. 0x08 non-volatile memory).
        subclass: u8,
        /// Programming interface (e.g. 0x02 NVMe), or `None` for any.
        prog_if: Option<u8>,
    },
}

impl Match {
    /// Matches `vendor:device`.
    pub const fn id(vendor: u16, device: u16) -> Self {
        Self::Id { vendor: VendorId(vendor), device: DeviceId(device) }
    }

    /// Matches a class code; `prog_if` `None` matches any programming interface.
    pub const fn class(class: u8, subclass: u8, prog_if: Option<u8>) -> Self {
        Self::Class { class, subclass, prog_if }
    }

    /// Whether `f` is one of the functions this entry names.
    pub fn matches(&self, f: &Function) -> bool {
        match *self {
            Self::Id { vendor, device } => f.vendor == vendor && f.device == device,
            Self::Class { class, subclass, prog_if } => {
                f.class.class == class && f.class.subclass == subclass && prog_if.is_none_or(|p| p == f.class.prog_if)
            }
        }
    }
}

/// How a bound function delivers its interrupts (for the boot log).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Interrupts {
    /// MSI-X messages.
    MsiX,
    /// An MSI message.
    Msi,
    /// The INTx pin through the I/O APIC.
    Intx,
    /// None: the driver polls.
    Polled,
}

impl fmt::Display for Interrupts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::MsiX => "MSI-X",
            Self::Msi => "MSI",
            Self::Intx => "INTx",
            Self::Polled => "polled",
        })
    }
}

/// What a successful probe reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    /// The interrupt mode the driver set up.
    pub interrupts: Interrupts,
}

/// A probe: starts the driver on the function (BARs are assigned, decoding and bus mastering are the driver's
/// to enable), registers what it brings up (e.g. with `libos::dev`) and logs one line naming the device.
/// Errors: a message naming the device and what failed; the scan logs it and goes on.
pub type Probe = fn(&mut Device) -> Result<Bound, String>;

/// A PCI driver: its name (for logs), the functions it takes, and its probe.
pub struct Driver {
    /// Short name, e.g. "virtio-pci".
    pub name: &'static str,
    /// Functions it takes; the first driver in the table with a matching entry gets the function.
    pub matches: &'static [Match],
    /// Starts it on one function.
    pub probe: Probe,
}

impl Driver {
    /// Whether one of the driver's entries matches `f`.
    pub fn claims(&self, f: &Function) -> bool {
        self.matches.iter().any(|m| m.matches(f))
    }
}

/// The first driver in `drivers` that claims `f`.
pub fn driver_for<'d>(drivers: &[&'d Driver], f: &Function) -> Option<&'d Driver> {
    drivers.iter().copied().find(|d| d.claims(f))
}

/// One function a driver took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding {
    /// The driver's name.
    pub driver: &'static str,
    /// The function.
    pub bdf: Bdf,
    /// How it interrupts.
    pub interrupts: Interrupts,
}

/// What a scan did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Functions a driver started, in scan order.
    pub bound: Vec<Binding>,
    /// Functions whose driver's probe failed.
    pub failed: usize,
    /// Functions no driver claimed.
    pub unclaimed: usize,
}

impl Report {
    /// Feature strings for the `platform:` line: one per driver and interrupt mode in use, e.g.
    /// `"virtio-pci (MSI-X)"`; drivers in the order they first bound a function, modes from MSI-X to polled.
    pub fn features(&self) -> Vec<String> {
        let mut drivers: Vec<&'static str> = Vec::new();
        for b in &self.bound {
            if !drivers.contains(&b.driver) {
                drivers.push(b.driver);
            }
        }
        let mut out = Vec::new();
        for d in drivers {
            let mut modes: Vec<Interrupts> =
                self.bound.iter().filter(|b| b.driver == d).map(|b| b.interrupts).collect();
            modes.sort();
            modes.dedup();
            out.extend(modes.iter().map(|m| format!("{d} ({m})")));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::{ClassCode, HeaderType};

    fn function(vendor: u16, device: u16, class: (u8, u8, u8)) -> Function {
        Function {
            bdf: Bdf::new(0, 3, 0).unwrap(),
            vendor: VendorId(vendor),
            device: DeviceId(device),
            class: ClassCode { class: class.0, subclass: class.1, prog_if: class.2 },
            revision: 0,
            header: HeaderType::Standard,
        }
    }

    fn never(_: &mut Device) -> Result<Bound, String> {
        Err(String::from("not probed in host tests"))
    }

    static VIRTIO: Driver = Driver { name: "virtio-pci", matches: &[Match::id(0x1af4, 0x1000)], probe: never };
    static NVME: Driver = Driver { name: "nvme", matches: &[Match::class(1, 8, Some(2))], probe: never };
    static ANY_STORAGE: Driver = Driver { name: "storage", matches: &[Match::class(1, 8, None)], probe: never };

    #[test]
    fn first_matching_driver_wins() {
        let table: &[&Driver] = &[&VIRTIO, &NVME, &ANY_STORAGE];
        let name = |f: &Function| driver_for(table, f).map(|d| d.name);
        assert_eq!(name(&function(0x1af4, 0x1000, (2, 0, 0))), Some("virtio-pci"));
        assert_eq!(name(&function(0x1af4, 0x1001, (1, 0, 0))), None, "device ID not listed");
        assert_eq!(name(&function(0x1b36, 0x0010, (1, 8, 2))), Some("nvme"));
        assert_eq!(name(&function(0x1b36, 0x0010, (1, 8, 3))), Some("storage"), "prog-if wildcard");
        assert_eq!(name(&function(0x8086, 0x29c0, (6, 0, 0))), None);
    }

    #[test]
    fn features_group_by_driver_and_mode() {
        let at = |d| Bdf::new(0, d, 0).unwrap();
        let b = |driver, d, interrupts| Binding { driver, bdf: at(d), interrupts };
        let r = Report {
            bound: [
                b("virtio-pci", 1, Interrupts::Intx),
                b("nvme", 2, Interrupts::MsiX),
                b("virtio-pci", 3, Interrupts::MsiX),
                b("virtio-pci", 4, Interrupts::MsiX),
            ]
            .into(),
            failed: 0,
            unclaimed: 3,
        };
        assert_eq!(r.features(), ["virtio-pci (MSI-X)", "virtio-pci (INTx)", "nvme (MSI-X)"]);
        assert_eq!(Report::default().features(), [] as [String; 0]);
    }
}
