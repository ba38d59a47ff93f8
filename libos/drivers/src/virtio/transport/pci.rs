//! virtio-pci: the entry of `libos::pci`'s driver table that takes virtio-net, virtio-blk and virtio-scsi
//! functions and starts them through virtio-drivers' `PciTransport`, with MSI-X entry 0 for the configuration
//! and every queue (INTx through the I/O APIC when MSI-X is missing, unusable or refused by the device).
//! Source: virtio 1.2 §4.1.2 (PCI device discovery, device IDs), §4.1.4 (virtio structure capabilities),
//! §4.1.5.1.2 (MSI-X vector configuration), §4.1.4.5 (ISR status for INTx).

pub mod cap;
// virtio-drivers' configuration access and the common configuration's vector registers.
#[cfg(target_os = "none")]
#[allow(unsafe_code)]
mod hw;

use libos::pci::{DeviceId, Match, VendorId};
use virtio_drivers::transport::DeviceType;

/// Functions the virtio-pci driver takes: virtio-net, virtio-blk and virtio-scsi, by their transitional
/// (0x1000, 0x1001, 0x1004) and modern (0x1040 + device type) device IDs.
pub const MATCHES: &[Match] = &[
    Match::id(VendorId::VIRTIO.0, 0x1000),
    Match::id(VendorId::VIRTIO.0, 0x1001),
    Match::id(VendorId::VIRTIO.0, 0x1004),
    Match::id(VendorId::VIRTIO.0, 0x1041),
    Match::id(VendorId::VIRTIO.0, 0x1042),
    Match::id(VendorId::VIRTIO.0, 0x1048),
];

/// Modern device IDs are 0x1040 plus the virtio device type.
const MODERN_BASE: u16 = 0x1040;

/// The virtio device type of a virtio-pci Device ID: the transitional IDs of network (0x1000), block (0x1001)
/// and SCSI host (0x1004) devices (§4.1.2.3), or a modern ID; `None` for other IDs.
pub fn device_type(id: DeviceId) -> Option<DeviceType> {
    match id.0 {
        0x1000 => Some(DeviceType::Network),
        0x1001 => Some(DeviceType::Block),
        0x1004 => Some(DeviceType::ScsiHost),
        id if id >= MODERN_BASE => DeviceType::try_from(id - MODERN_BASE).ok(),
        _ => None,
    }
}

/// Whether `id` is a transitional device (legacy interface next to the modern one, §4.1.2.3).
pub fn is_transitional(id: DeviceId) -> bool {
    id.0 < MODERN_BASE
}

#[cfg(target_os = "none")]
pub use probe::DRIVER;

#[cfg(target_os = "none")]
mod probe {
    use super::cap::{self, VirtioPciCap};
    use super::hw::{self, Cam, CommonCfg};
    use super::{device_type, is_transitional, MATCHES};
    use crate::irq;
    use crate::irq::IsrStatus;
    use crate::virtio::hal::VirtioHal;
    use crate::virtio::net::IrqAck;
    use crate::virtio::{blk, net, scsi, virtio_name};
    use alloc::format;
    use alloc::string::{String, ToString};
    use libos::arch::x86_64::idt;
    use libos::pci::caps::CAP_ID_VENDOR;
    use libos::pci::config::command;
    use libos::pci::{Bound, Device, Driver, Interrupts, PciError};
    use virtio_drivers::transport::pci::bus::{DeviceFunction, PciRoot};
    use virtio_drivers::transport::pci::PciTransport;
    use virtio_drivers::transport::DeviceType;

    /// The virtio-pci driver.
    pub static DRIVER: Driver = Driver { name: "virtio-pci", matches: MATCHES, probe };

    /// The virtio structures the driver touches itself.
    struct Layout {
        common: CommonCfg,
        isr: IsrStatus,
    }

    /// Maps the memory BAR of every virtio structure (virtio-drivers' transport then reaches them through the
    /// identity map) and finds the common configuration and the ISR status byte, each checked to lie inside
    /// its BAR.
    fn read_layout(dev: &mut Device) -> Result<Layout, String> {
        let mut common = None;
        let mut isr = None;
        let vendor: alloc::vec::Vec<_> = dev.capabilities().filter(|c| c.id == CAP_ID_VENDOR).collect();
        for c in vendor {
            let d = [0, 4, 8, 12].map(|o| dev.read(c.offset + o));
            let Ok(vc) = VirtioPciCap::decode(d) else { continue };
            let need = match vc.cfg_type {
                cap::VIRTIO_PCI_CAP_COMMON_CFG if common.is_none() => cap::COMMON_CFG_LEN,
                cap::VIRTIO_PCI_CAP_ISR_CFG if isr.is_none() => 1,
                cap::VIRTIO_PCI_CAP_NOTIFY_CFG | cap::VIRTIO_PCI_CAP_DEVICE_CFG => 0,
                _ => continue,
            };
            let bar = dev.memory_bar(vc.bar).map_err(|e| e.to_string())?;
            vc.check_fits(need, bar.size()).map_err(|e| format!("virtio structure {}: {e}", vc.cfg_type))?;
            match vc.cfg_type {
                cap::VIRTIO_PCI_CAP_COMMON_CFG => common = CommonCfg::new(&bar, vc.offset),
                cap::VIRTIO_PCI_CAP_ISR_CFG => isr = hw::isr(&bar, vc.offset),
                _ => {}
            }
        }
        Ok(Layout {
            common: common.ok_or("no virtio common configuration capability")?,
            isr: isr.ok_or("no virtio ISR capability")?,
        })
    }

    /// Starts a virtio-net, virtio-blk or virtio-scsi function.
    fn probe(dev: &mut Device) -> Result<Bound, String> {
        let f = *dev.function();
        let bdf = f.bdf;
        let kind = device_type(f.device).ok_or_else(|| format!("device ID {} is no virtio device", f.device))?;
        let name = format!("{}@pci:{bdf}", virtio_name(kind));
        dev.enable(command::MEMORY_SPACE | command::BUS_MASTER);
        let layout = read_layout(dev).map_err(|e| format!("{name}: {e}"))?;
        let df = DeviceFunction { bus: bdf.bus(), device: bdf.device(), function: bdf.function() };
        let transport = PciTransport::new::<VirtioHal, _>(&mut PciRoot::new(Cam(dev.config_space())), df)
            .map_err(|e| format!("{name}: {e}"))?;
        let queues: &[u16] = match kind {
            DeviceType::Block => &[blk::QUEUE_REQUEST],
            DeviceType::ScsiHost => &[scsi::QUEUE_CONTROL, scsi::QUEUE_EVENT, scsi::QUEUE_REQUEST],
            _ => &[net::QUEUE_RECEIVE, net::QUEUE_TRANSMIT],
        };
        let slot = irq::claim().ok_or_else(|| format!("{name}: no free interrupt slot"))?;
        let vector = idt::allocate_vector(irq::handler).map_err(|e| format!("{name}: {e}"))?;
        let msix = match dev.enable_msix(&[vector]) {
            Ok(cap_offset) => Some(cap_offset),
            Err(PciError::NoCapability { .. }) => None,
            Err(e) => {
                log::warn!("{name}: MSI-X unusable ({e}); using INTx");
                None
            }
        };
        let mut interrupts = Interrupts::Intx;
        // Runs after queue setup, before DRIVER_OK: the vector registers are per queue (virtio 1.2 §4.1.5.1.2).
        let mut setup = || -> Result<String, String> {
            if let Some(cap_offset) = msix {
                if layout.common.set_msix_vectors(queues, 0) {
                    slot.bind(vector, None);
                    interrupts = Interrupts::MsiX;
                    return Ok(format!("MSI-X entry 0 -> vector {vector:#x}"));
                }
                log::warn!("{name}: device refused MSI-X vector 0 (read back VIRTIO_MSI_NO_VECTOR); using INTx");
                dev.disable_msix(cap_offset);
            }
            slot.bind(vector, Some(layout.isr));
            let intx = dev.route_intx(vector).map_err(|e| e.to_string())?;
            Ok(format!("INTx gsi {} level -> vector {vector:#x}", intx.line))
        };
        let version = if is_transitional(f.device) { "transitional" } else { "modern" };
        let how = format!("{version} ({}:{})", f.vendor, f.device);
        crate::virtio::start(transport, name.clone(), &how, slot, IrqAck::None, &mut setup)?;
        Ok(Bound { interrupts })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libos::pci::{Bdf, ClassCode, Function, HeaderType};

    #[test]
    fn ids_and_types() {
        assert_eq!(device_type(DeviceId(0x1000)), Some(DeviceType::Network));
        assert_eq!(device_type(DeviceId(0x1001)), Some(DeviceType::Block));
        assert_eq!(device_type(DeviceId(0x1041)), Some(DeviceType::Network));
        assert_eq!(device_type(DeviceId(0x1042)), Some(DeviceType::Block));
        assert_eq!(device_type(DeviceId(0x1044)), Some(DeviceType::EntropySource));
        assert_eq!(device_type(DeviceId(0x0fff)), None);
        assert!(is_transitional(DeviceId(0x1001)) && !is_transitional(DeviceId(0x1042)));
        let f = |device| Function {
            bdf: Bdf::new(0, 1, 0).unwrap(),
            vendor: VendorId::VIRTIO,
            device: DeviceId(device),
            class: ClassCode { class: 2, subclass: 0, prog_if: 0 },
            revision: 0,
            header: HeaderType::Standard,
        };
        let claimed = |device| MATCHES.iter().any(|m| m.matches(&f(device)));
        assert!(claimed(0x1000) && claimed(0x1001) && claimed(0x1041) && claimed(0x1042));
        assert!(claimed(0x1004) && claimed(0x1048), "virtio-scsi, transitional and modern");
        assert_eq!(device_type(DeviceId(0x1004)), Some(DeviceType::ScsiHost));
        assert_eq!(device_type(DeviceId(0x1048)), Some(DeviceType::ScsiHost));
        assert!(!claimed(0x1044), "virtio-rng has no driver: left to the scan's debug line");
    }
}
