//! The boot-time scan: choose the configuration mechanism (ECAM from ACPI MCFG, else port I/O, else no PCI at
//! all), enumerate once, hand each function to the first driver in the table that claims it, after placing the
//! memory BARs the firmware left unassigned on the claimed functions.
#![forbid(unsafe_code)]

use super::bar::{self, Bar};
use super::config::{reg, ConfigAccess};
use super::driver::{driver_for, Binding, Driver, Report};
use super::window::{MmioWindow, WINDOW_END, WINDOW_START};
use super::{enumerate, Bdf, ConfigSpace, Device, Function, HeaderType, VendorId};
use crate::acpi::{self, EcamWindow, LowMemory, PhysRead};
use crate::bootinfo::BootInfo;
use alloc::vec::Vec;

const FOUR_GIB: u64 = 1 << 32;

/// The ECAM window for segment 0 from bus 0 in the ACPI tables, if any, mapped when it reaches above 4 GiB.
/// Without an RSDP from the loader the BIOS area is scanned, unless `scan_bios` is false.
fn find_ecam(boot: &BootInfo, scan_bios: bool) -> Option<EcamWindow> {
    let mem = LowMemory;
    let rsdp = boot.rsdp.or_else(|| {
        if !scan_bios {
            return None;
        }
        let area = mem.read(acpi::BIOS_AREA_START, (acpi::BIOS_AREA_END - acpi::BIOS_AREA_START) as usize)?;
        acpi::find_rsdp_in(&area, acpi::BIOS_AREA_START)
    })?;
    let windows = match acpi::ecam_windows(&mem, rsdp) {
        Ok(ws) => ws,
        Err(e) => {
            log::warn!("pci: {e}; using port I/O configuration access");
            return None;
        }
    };
    log::debug!("pci: RSDP at {rsdp:#x}, MCFG windows {windows:x?}");
    let w = windows.into_iter().find(|w| w.segment == 0 && w.start_bus == 0 && w.base + (1 << 20) <= FOUR_GIB)?;
    if w.base + w.size() > FOUR_GIB {
        if let Err(e) = crate::mem::paging::map_mmio(w.base, w.size()) {
            log::warn!("pci: ECAM at {:#x}: {e}; using port I/O configuration access", w.base);
            return None;
        }
    }
    Some(w)
}

/// The configuration mechanism, or `None` when there is no PCI bus (microvm, a Xen PVH guest: port I/O reads
/// all ones and ACPI has no MCFG). `scan_bios`: whether to look for an RSDP in the BIOS area when the loader
/// gave none.
fn config_space(boot: &BootInfo, scan_bios: bool) -> Option<ConfigSpace> {
    let host_bridge = Bdf::new(0, 0, 0)?;
    // Every PC chipset has a host bridge at 00:00.0 answering port I/O.
    let port_bus = VendorId(ConfigSpace::PORT_IO.read(host_bridge, reg::ID) as u16) != VendorId::NONE;
    // ECAM first (one access per register instead of two); a PCIe host bridge without port I/O is found only
    // this way, when the firmware lists it in MCFG (QEMU's microvm with pcie=on does not).
    let ecam = if port_bus || scan_bios || boot.rsdp.is_some() { find_ecam(boot, scan_bios) } else { None };
    match ecam {
        Some(w) => {
            log::info!("pci: ECAM at {:#x} (buses {}..={}) from ACPI MCFG", w.base, w.start_bus, w.end_bus);
            Some(ConfigSpace::ecam(w))
        }
        None if port_bus => {
            log::info!("pci: port I/O configuration access (0xCF8/0xCFC)");
            Some(ConfigSpace::PORT_IO)
        }
        None => None,
    }
}

/// Assigns the memory BARs the firmware left at 0 on `claimed` functions (only when one has such a BAR:
/// sizing every BAR costs configuration cycles, i.e. VM exits). Keeps clear of RAM, the ECAM window and every
/// assigned BAR of every function.
fn assign_bars(cfg: &mut ConfigSpace, all: &[Function], claimed: &[Function], boot: &BootInfo) {
    let unassigned = |cfg: &mut ConfigSpace, f: &Function| -> Vec<(u8, u64, bar::Width)> {
        let Ok(bars) = bar::probe_all(cfg, f.bdf, f.header.bars()) else { return Vec::new() };
        (0u8..)
            .zip(bars)
            .filter_map(|(i, b)| match b {
                Some(Bar::Memory { address: 0, size, width, .. }) if size > 0 => Some((i, size, width)),
                _ => None,
            })
            .collect()
    };
    let targets: Vec<_> = claimed
        .iter()
        .filter(|f| f.header == HeaderType::Standard)
        .map(|f| (f.bdf, unassigned(cfg, f)))
        .filter(|(_, u)| !u.is_empty())
        .collect();
    if targets.is_empty() {
        return;
    }
    let mut window = MmioWindow::new(WINDOW_START, WINDOW_END);
    for r in boot.regions() {
        window.reserve(r.start, r.len);
    }
    if let Some(w) = cfg.ecam_window() {
        window.reserve(w.base, w.size());
    }
    for f in all {
        if let Ok(bars) = bar::probe_all(cfg, f.bdf, f.header.bars()) {
            for b in bars.iter().flatten() {
                if let Bar::Memory { address, size, .. } = *b {
                    if address != 0 {
                        window.reserve(address, size);
                    }
                }
            }
        }
    }
    for (bdf, bars) in targets {
        for (index, size, width) in bars {
            match window.alloc(size) {
                Ok(at) => {
                    bar::set_memory_address(cfg, bdf, index, width, at);
                    log::info!("pci {bdf} BAR{index}: assigned {at:#x} ({size:#x} bytes)");
                }
                Err(e) => log::warn!("pci {bdf} BAR{index}: {e}"),
            }
        }
    }
}

/// Enumerates PCI once and starts the first driver in `drivers` that claims each function; functions no driver
/// claims are logged at debug level. Without a PCI bus this costs one port read (plus the ACPI walk when the
/// loader passed an RSDP) and finds nothing. `scan_bios`: whether to search the BIOS area for the RSDP when the
/// loader gave none (QEMU's microvm names virtio-mmio devices on the command line only with `acpi=off`, when
/// there is nothing to find). A probe that fails is logged and counted; the boot goes on.
pub fn scan(boot: &BootInfo, scan_bios: bool, drivers: &[&Driver]) -> Report {
    let mut report = Report::default();
    let Some(mut cfg) = config_space(boot, scan_bios) else {
        log::debug!("pci: no configuration space (port I/O reads all ones, no ACPI MCFG)");
        return report;
    };
    let all = enumerate(&cfg);
    let mut claimed = Vec::new();
    for f in &all {
        match driver_for(drivers, f) {
            Some(d) => claimed.push((*f, d)),
            None => {
                log::debug!("pci {} {}:{} {} ({}): no driver", f.bdf, f.vendor, f.device, f.class.name(), f.class);
                report.unclaimed += 1;
            }
        }
    }
    let functions: Vec<Function> = claimed.iter().map(|(f, _)| *f).collect();
    assign_bars(&mut cfg, &all, &functions, boot);
    for (f, d) in claimed {
        let mut dev = Device::new(f, cfg);
        match (d.probe)(&mut dev) {
            Ok(b) => report.bound.push(Binding { driver: d.name, bdf: f.bdf, interrupts: b.interrupts }),
            Err(e) => {
                log::error!("pci {} {}:{} {}: {e}", f.bdf, f.vendor, f.device, d.name);
                report.failed += 1;
            }
        }
    }
    report
}
