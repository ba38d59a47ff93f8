//! PCI on pc/q35: configuration space through ECAM (base from the ACPI MCFG table) or port I/O
//! (0xCF8/0xCFC), enumeration of bus 0 and the secondary buses of bridges the firmware numbered, BAR
//! assignment for BARs the firmware left at 0, memory decoding and bus mastering, and virtio-pci devices
//! through virtio-drivers' `PciTransport` with MSI-X (INTx through the I/O APIC when MSI-X is missing or
//! refused). Source: PCI Local Bus Specification 3.0 §3.2.2.3.2 (configuration mechanism #1), §6.1–6.2
//! (configuration header, command register, BARs), §6.8.2 (MSI-X); PCI Express Base 4.0 §7.2.2 (ECAM);
//! PCI-to-PCI Bridge Architecture 1.2 §3.2.5.3 (bus numbers); virtio 1.2 §4.1.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use libos::arch::x86_64::{apic, cpu, idt, ioapic};
use libos::bootinfo::BootInfo;
use virtio_drivers::transport::pci::bus::{
    BarInfo, Command, ConfigurationAccess, DeviceFunction, DeviceFunctionInfo, HeaderType, MemoryBarType, PciRoot,
};
use virtio_drivers::transport::pci::{virtio_device_type, PciTransport};
use virtio_drivers::transport::DeviceType;

use super::acpi::{self, EcamWindow, PhysRead};
use super::bars::{MmioWindow, WINDOW_END, WINDOW_START};
use super::blk::VirtioBlk;
use super::caps::{self, MsixCap, VirtioPciCap};
use super::hal::VirtioHal;
use super::irq::{self, IrqSlot};
use super::net::{IrqAck, VirtioNet};
use super::virtio_name;

const FOUR_GIB: u64 = 1 << 32;
const CONFIG_ADDRESS: u16 = 0xCF8;
const CONFIG_DATA: u16 = 0xCFC;

/// Configuration space access: ECAM when MCFG gave a window for segment 0 starting at bus 0, else port
/// I/O. Our own (rather than virtio-drivers' `MmioCam`) because `PciRoot` keeps its access private and we
/// also write the MSI-X capability; it is `Copy`, stateless apart from the ECAM window.
#[derive(Debug, Clone, Copy)]
pub struct ConfigSpace {
    ecam: Option<EcamWindow>,
}

impl ConfigSpace {
    fn ecam_address(w: &EcamWindow, df: DeviceFunction, offset: u8) -> Option<u64> {
        (df.bus <= w.end_bus && df.valid()).then(|| {
            w.base
                + ((u64::from(df.bus) << 20)
                    | (u64::from(df.device) << 15)
                    | (u64::from(df.function) << 12)
                    | u64::from(offset & 0xfc))
        })
    }

    fn port_address(df: DeviceFunction, offset: u8) -> u32 {
        0x8000_0000
            | (u32::from(df.bus) << 16)
            | (u32::from(df.device & 31) << 11)
            | (u32::from(df.function & 7) << 8)
            | u32::from(offset & 0xfc)
    }
}

impl ConfigurationAccess for ConfigSpace {
    fn read_word(&self, df: DeviceFunction, offset: u8) -> u32 {
        match &self.ecam {
            Some(w) => match Self::ecam_address(w, df, offset) {
                // SAFETY: inside the ECAM window MCFG declared, identity mapped uncached (below 4 GiB, or
                // mapped by `init`); configuration reads have no side effects on memory.
                Some(a) => unsafe { core::ptr::read_volatile(a as usize as *const u32) },
                None => u32::MAX,
            },
            None => {
                let a = Self::port_address(df, offset);
                cpu::without_interrupts(|| {
                    cpu::outl(CONFIG_ADDRESS, a);
                    cpu::inl(CONFIG_DATA)
                })
            }
        }
    }

    fn write_word(&mut self, df: DeviceFunction, offset: u8, data: u32) {
        match &self.ecam {
            Some(w) => {
                if let Some(a) = Self::ecam_address(w, df, offset) {
                    // SAFETY: as in `read_word`; the write goes to a device's configuration register.
                    unsafe { core::ptr::write_volatile(a as usize as *mut u32, data) };
                }
            }
            None => {
                let a = Self::port_address(df, offset);
                cpu::without_interrupts(|| {
                    cpu::outl(CONFIG_ADDRESS, a);
                    cpu::outl(CONFIG_DATA, data);
                });
            }
        }
    }

    unsafe fn unsafe_clone(&self) -> Self {
        *self
    }
}

/// Guest-physical memory below 4 GiB, identity mapped by libos (page 0 excepted).
struct LowMemory;

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

/// The ECAM window for segment 0 / bus 0 from the ACPI tables, if any. Without an RSDP from the loader the
/// BIOS area is scanned, unless `scan` is false.
fn find_ecam(boot: &BootInfo, scan: bool) -> Option<EcamWindow> {
    let mem = LowMemory;
    let rsdp = boot.rsdp.or_else(|| {
        if !scan {
            return None;
        }
        let area = mem.read(acpi::BIOS_AREA_START, (acpi::BIOS_AREA_END - acpi::BIOS_AREA_START) as usize)?;
        acpi::find_rsdp_in(&area, acpi::BIOS_AREA_START)
    })?;
    match acpi::ecam_windows(&mem, rsdp) {
        Ok(ws) => {
            log::debug!("pci: RSDP at {rsdp:#x}, MCFG windows {ws:x?}");
            ws.into_iter().find(|w| w.segment == 0 && w.start_bus == 0 && w.base + (1 << 20) <= FOUR_GIB)
        }
        Err(e) => {
            log::warn!("pci: {e}; using port I/O configuration access");
            None
        }
    }
}

/// One function found by enumeration.
struct Function {
    df: DeviceFunction,
    info: DeviceFunctionInfo,
}

fn class_name(info: &DeviceFunctionInfo) -> &'static str {
    match (info.class, info.subclass) {
        (0x01, 0x01) => "IDE controller",
        (0x01, 0x06) => "SATA controller",
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

/// Functions on `bus` and, recursively, behind its bridges (numbered by the firmware).
fn enumerate(cfg: &ConfigSpace, bus: u8, seen: &mut Vec<u8>, out: &mut Vec<Function>) {
    if seen.contains(&bus) {
        return;
    }
    seen.push(bus);
    for device in 0..32 {
        let f0 = DeviceFunction { bus, device, function: 0 };
        if cfg.read_word(f0, 0) & 0xffff == 0xffff {
            continue;
        }
        let multi = (cfg.read_word(f0, 0x0c) >> 16) & 0x80 != 0;
        for function in 0..if multi { 8 } else { 1 } {
            let df = DeviceFunction { bus, device, function };
            let id = cfg.read_word(df, 0);
            if id & 0xffff == 0xffff {
                continue;
            }
            let class = cfg.read_word(df, 0x08);
            let header_type = ((cfg.read_word(df, 0x0c) >> 16) & 0x7f) as u8;
            let info = DeviceFunctionInfo {
                vendor_id: id as u16,
                device_id: (id >> 16) as u16,
                class: (class >> 24) as u8,
                subclass: (class >> 16) as u8,
                prog_if: (class >> 8) as u8,
                revision: class as u8,
                header_type: header_type.into(),
            };
            let what = match virtio_device_type(&info) {
                Some(t) => virtio_name(t),
                None if info.vendor_id == virtio_drivers::transport::pci::VIRTIO_VENDOR_ID => {
                    String::from("virtio (unknown type)")
                }
                None => String::from(class_name(&info)),
            };
            log::info!("pci {df} {:04x}:{:04x} {what}", info.vendor_id, info.device_id);
            out.push(Function { df, info });
            if header_type == 1 {
                let secondary = (cfg.read_word(df, 0x18) >> 8) as u8;
                if secondary != 0 {
                    enumerate(cfg, secondary, seen, out);
                }
            }
        }
    }
}

/// Assigns memory BARs the firmware left at 0 (only when some virtio function has one: the scan of every
/// BAR costs configuration cycles, i.e. VM exits). Reserves RAM, the ECAM window and all assigned BARs.
fn assign_bars(root: &mut PciRoot<ConfigSpace>, fns: &[Function], boot: &BootInfo, ecam: Option<EcamWindow>) {
    let unassigned = |root: &mut PciRoot<ConfigSpace>, df| {
        root.bars(df).map(|bars| {
            bars.iter()
                .enumerate()
                .filter_map(|(i, b)| match b {
                    Some(BarInfo::Memory { address: 0, size, address_type, .. }) if *size > 0 => {
                        Some((i as u8, *size, *address_type))
                    }
                    _ => None,
                })
                .collect::<Vec<_>>()
        })
    };
    let targets: Vec<_> = fns
        .iter()
        .filter(|f| virtio_device_type(&f.info).is_some() && f.info.header_type == HeaderType::Standard)
        .filter_map(|f| Some((f.df, unassigned(root, f.df).ok()?)))
        .filter(|(_, u)| !u.is_empty())
        .collect();
    if targets.is_empty() {
        return;
    }
    let mut window = MmioWindow::new(WINDOW_START, WINDOW_END);
    for r in boot.regions() {
        window.reserve(r.start, r.len);
    }
    if let Some(w) = ecam {
        window.reserve(w.base, (u64::from(w.end_bus) + 1) << 20);
    }
    for f in fns {
        if let Ok(bars) = root.bars(f.df) {
            for b in bars.iter().flatten() {
                if let BarInfo::Memory { address, size, .. } = b {
                    if *address != 0 {
                        window.reserve(*address, *size);
                    }
                }
            }
        }
    }
    for (df, bars) in targets {
        for (index, size, ty) in bars {
            match window.alloc(size) {
                Ok(at) => {
                    if ty == MemoryBarType::Width64 {
                        root.set_bar_64(df, index, at);
                    } else {
                        root.set_bar_32(df, index, at as u32);
                    }
                    log::info!("pci {df} BAR{index}: assigned {at:#x} ({size:#x} bytes)");
                }
                Err(e) => log::warn!("pci {df} BAR{index}: {e}"),
            }
        }
    }
}

/// Reads the `(address, size)` of memory BAR `index`, mapping it when above 4 GiB.
fn memory_bar(root: &mut PciRoot<ConfigSpace>, df: DeviceFunction, index: u8) -> Result<(u64, u64), String> {
    match root.bar_info(df, index).map_err(|e| format!("BAR{index}: {e}"))? {
        Some(BarInfo::Memory { address, size, .. }) if address != 0 => {
            if address.saturating_add(size) > FOUR_GIB {
                libos::mem::paging::map_mmio(address & !0xfff, (address & 0xfff) + size)
                    .map_err(|e| format!("BAR{index}: {e}"))?;
            }
            Ok((address, size))
        }
        Some(BarInfo::Memory { .. }) => Err(format!("BAR{index} is not assigned")),
        Some(BarInfo::IO { .. }) => Err(format!("BAR{index} is an I/O BAR, expected memory")),
        None => Err(format!("BAR{index} is not implemented")),
    }
}

/// Locations the driver touches itself.
struct VirtioLayout {
    /// Address of `virtio_pci_common_cfg`.
    common: u64,
    /// Address of the ISR status byte.
    isr: u64,
    /// MSI-X capability: (config-space offset, decoded).
    msix: Option<(u8, MsixCap)>,
}

fn read_layout(root: &mut PciRoot<ConfigSpace>, cfg: &ConfigSpace, df: DeviceFunction) -> Result<VirtioLayout, String> {
    let mut common = None;
    let mut isr = None;
    let mut msix = None;
    let caps: Vec<_> = root.capabilities(df).collect();
    for c in caps {
        match c.id {
            caps::CAP_ID_VENDOR => {
                let d = [0, 4, 8, 12].map(|o| cfg.read_word(df, c.offset + o));
                let Ok(vc) = VirtioPciCap::decode(d) else { continue };
                let need = match vc.cfg_type {
                    caps::VIRTIO_PCI_CAP_COMMON_CFG if common.is_none() => caps::COMMON_CFG_LEN,
                    caps::VIRTIO_PCI_CAP_ISR_CFG if isr.is_none() => 1,
                    _ => continue,
                };
                let (base, size) = memory_bar(root, df, vc.bar)?;
                vc.check_fits(need, size).map_err(|e| format!("virtio structure {}: {e}", vc.cfg_type))?;
                let at = base + u64::from(vc.offset);
                if vc.cfg_type == caps::VIRTIO_PCI_CAP_COMMON_CFG {
                    common = Some(at);
                } else {
                    isr = Some(at);
                }
            }
            caps::CAP_ID_MSIX if msix.is_none() => {
                let m = MsixCap::decode(c.private_header, cfg.read_word(df, c.offset + 4))
                    .map_err(|e| format!("MSI-X: {e}"))?;
                msix = Some((c.offset, m));
            }
            _ => {}
        }
    }
    Ok(VirtioLayout {
        common: common.ok_or("no virtio common configuration capability")?,
        isr: isr.ok_or("no virtio ISR capability")?,
        msix,
    })
}

fn write16(addr: u64, v: u16) {
    // SAFETY: `addr` lies inside a virtio structure of a memory BAR checked against the BAR size by
    // `read_layout` and identity mapped uncached; register writes only configure the device.
    unsafe { core::ptr::write_volatile(addr as usize as *mut u16, v) }
}

fn read16(addr: u64) -> u16 {
    // SAFETY: as in `write16`.
    unsafe { core::ptr::read_volatile(addr as usize as *const u16) }
}

fn write32(addr: u64, v: u32) {
    // SAFETY: as in `write16`, for the MSI-X table (checked against its BAR by `MsixCap::check_fits`).
    unsafe { core::ptr::write_volatile(addr as usize as *mut u32, v) }
}

/// Programs MSI-X table entry 0 with `vector` (all others masked) and enables MSI-X.
fn enable_msix(
    root: &mut PciRoot<ConfigSpace>,
    cfg: &mut ConfigSpace,
    df: DeviceFunction,
    cap_offset: u8,
    m: &MsixCap,
    vector: u8,
) -> Result<(), String> {
    let (bar, size) = memory_bar(root, df, m.table_bar)?;
    m.check_fits(size).map_err(|e| format!("MSI-X table: {e}"))?;
    let table = bar + u64::from(m.table_offset);
    let head = cfg.read_word(df, cap_offset);
    let control = (head >> 16) as u16;
    let set_control =
        |cfg: &mut ConfigSpace, c: u16| cfg.write_word(df, cap_offset, (head & 0xffff) | (u32::from(c) << 16));
    set_control(cfg, control | caps::MSIX_ENABLE | caps::MSIX_FUNCTION_MASK);
    let (address, data) = apic::msi_message(vector);
    for i in 0..m.table_size {
        let Some(off) = m.entry_offset(i) else { break };
        let words = if i == 0 { caps::msix_entry(address, data, false) } else { caps::msix_entry(0, 0, true) };
        for (k, w) in words.iter().enumerate() {
            write32(table + u64::from(off) + 4 * k as u64, *w);
        }
    }
    set_control(cfg, (control | caps::MSIX_ENABLE) & !caps::MSIX_FUNCTION_MASK);
    Ok(())
}

/// Routes the function's INTx pin through the I/O APIC (level, active low). The GSI is the Interrupt Line
/// SeaBIOS wrote (the PIRQ's ISA IRQ): right on pc (PIIX routes PIRQs to ISA IRQs = GSIs 0..15) and, as
/// measured, on QEMU 10's q35 too; in general q35's ICH9 PIRQs are GSIs 16..23 named only by ACPI `_PRT`
/// (AML), which we do not interpret — MSI-X is the normal path there.
fn route_intx(cfg: &ConfigSpace, df: DeviceFunction, slot: &IrqSlot, vector: u8, isr: u64) -> Result<u32, String> {
    let r = cfg.read_word(df, 0x3c);
    let (line, pin) = (r & 0xff, (r >> 8) & 0xff);
    if pin == 0 || line == 0xff {
        return Err(format!("no INTx (pin {pin}, line {line})"));
    }
    slot.bind(vector, isr as usize);
    ioapic::route(line, vector, ioapic::Trigger::LevelLow).map_err(|e| format!("{e}"))?;
    Ok(line)
}

/// Starts a virtio-net or virtio-blk function (`kind`). Returns the interrupt mode for the feature list.
fn start_device(
    root: &mut PciRoot<ConfigSpace>,
    cfg: &mut ConfigSpace,
    df: DeviceFunction,
    kind: DeviceType,
    transitional: bool,
) -> Result<&'static str, String> {
    let layout = read_layout(root, cfg, df)?;
    let transport = PciTransport::new::<VirtioHal, _>(root, df).map_err(|e| format!("{e}"))?;
    let name = format!("{}@pci:{df}", virtio_name(kind));
    let queues: &[u16] = match kind {
        DeviceType::Block => &[super::blk::QUEUE_REQUEST],
        _ => &[super::net::QUEUE_RECEIVE, super::net::QUEUE_TRANSMIT],
    };
    let slot = irq::claim().ok_or("no free interrupt slot")?;
    let vector = idt::allocate_vector(irq::handler).map_err(|e| format!("{e}"))?;
    let mut mode = String::new();
    let mut irq_kind = "INTx";
    let mut msix_ok = false;
    if let Some((off, m)) = layout.msix {
        match enable_msix(root, cfg, df, off, &m, vector) {
            Ok(()) => msix_ok = true,
            Err(e) => log::warn!("{name}: MSI-X unusable ({e}); using INTx"),
        }
    }
    // Runs after queue setup, before DRIVER_OK: the vector registers are per queue (virtio 1.2 §4.1.5.1.2).
    let mut setup = || -> Result<(), String> {
        if msix_ok {
            write16(layout.common + u64::from(caps::COMMON_CONFIG_MSIX_VECTOR), 0);
            let mut accepted = read16(layout.common + u64::from(caps::COMMON_CONFIG_MSIX_VECTOR)) == 0;
            for &q in queues {
                write16(layout.common + u64::from(caps::COMMON_QUEUE_SELECT), q);
                write16(layout.common + u64::from(caps::COMMON_QUEUE_MSIX_VECTOR), 0);
                accepted &= read16(layout.common + u64::from(caps::COMMON_QUEUE_MSIX_VECTOR)) == 0;
            }
            if accepted {
                slot.bind(vector, 0);
                mode = format!("MSI-X entry 0 -> vector {vector:#x}");
                irq_kind = "MSI-X";
                return Ok(());
            }
            log::warn!("{name}: device refused MSI-X vector 0 (read back VIRTIO_MSI_NO_VECTOR); using INTx");
            if let Some((off, _)) = layout.msix {
                let head = cfg.read_word(df, off);
                cfg.write_word(df, off, head & !(u32::from(caps::MSIX_ENABLE) << 16));
            }
        }
        let gsi = route_intx(cfg, df, slot, vector, layout.isr)?;
        mode = format!("INTx gsi {gsi} level -> vector {vector:#x}");
        Ok(())
    };
    let transport_kind = if transitional { "transitional" } else { "modern" };
    if kind == DeviceType::Block {
        let dev = VirtioBlk::<VirtioHal, _, 256>::new(transport, name.clone(), slot, IrqAck::None, &mut setup)
            .map_err(|e| format!("{e}"))?;
        log::info!("{} transport {transport_kind} irq {mode}", dev.describe());
        libos::dev::register_block(dev);
        return Ok(irq_kind);
    }
    let dev = VirtioNet::<VirtioHal, _, 256>::new(transport, name.clone(), slot, IrqAck::None, &mut setup)
        .map_err(|e| format!("{e}"))?;
    super::log_nic(&dev, transport_kind, &mode);
    libos::dev::register_net(Box::new(dev));
    Ok(irq_kind)
}

/// Enumerates PCI and starts virtio devices. Returns `"virtio-pci (MSI-X)"` / `"virtio-pci (INTx)"` when
/// a NIC or disk started; nothing when there is no PCI bus (microvm). `acpi_scan`: whether to look for an
/// RSDP in the BIOS area when the loader gave none (false when the command line names virtio-mmio devices:
/// QEMU does that only with `acpi=off`).
pub fn init(boot: &BootInfo, acpi_scan: bool) -> Vec<String> {
    let host_bridge = DeviceFunction { bus: 0, device: 0, function: 0 };
    // Every PC chipset has a host bridge at 00:00.0 answering port I/O; microvm reads all ones.
    let port_bus = ConfigSpace { ecam: None }.read_word(host_bridge, 0) & 0xffff != 0xffff;
    // ECAM first (one access per register instead of two); a PCIe host without port I/O (microvm with
    // pcie=on) is found only this way.
    let ecam = if port_bus || acpi_scan || boot.rsdp.is_some() { find_ecam(boot, acpi_scan) } else { None };
    let mut cfg = ConfigSpace { ecam };
    if ecam.is_none() && !port_bus {
        return Vec::new();
    }
    match ecam {
        Some(w) => log::info!("pci: ECAM at {:#x} (buses {}..={}) from ACPI MCFG", w.base, w.start_bus, w.end_bus),
        None => log::info!("pci: port I/O configuration access (0xCF8/0xCFC)"),
    }
    let mut fns = Vec::new();
    enumerate(&cfg, 0, &mut Vec::new(), &mut fns);
    let mut root = PciRoot::new(cfg);
    assign_bars(&mut root, &fns, boot, ecam);
    let mut modes = Vec::new();
    for f in &fns {
        let Some(t) = virtio_device_type(&f.info) else { continue };
        let name = virtio_name(t);
        let (_, command) = root.get_status_command(f.df);
        root.set_command(f.df, command | Command::MEMORY_SPACE | Command::BUS_MASTER);
        if !matches!(t, DeviceType::Network | DeviceType::Block) {
            log::info!("pci {} {name}: no driver, skipped", f.df);
            continue;
        }
        let transitional = f.info.device_id < 0x1040;
        match start_device(&mut root, &mut cfg, f.df, t, transitional) {
            Ok(kind) => modes.push(kind),
            Err(e) => log::error!("pci {} {name}: {e}", f.df),
        }
    }
    let mut out = Vec::new();
    for kind in ["MSI-X", "INTx"] {
        if modes.contains(&kind) {
            out.push(format!("virtio-pci ({kind})"));
        }
    }
    out
}
