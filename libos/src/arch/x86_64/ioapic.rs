//! I/O APIC redirection table: routes a GSI (legacy IRQ lines, virtio-mmio interrupts on microvm) to a
//! vector on this CPU. Source: Intel 82093AA I/O APIC datasheet §3.2 (IOREGSEL/IOWIN, redirection entries).

use core::sync::atomic::{AtomicU64, Ordering};

static BASE: AtomicU64 = AtomicU64::new(0xFEC0_0000);

fn write(reg: u32, v: u32) {
    let base = BASE.load(Ordering::Relaxed);
    // SAFETY: the IOAPIC window is identity mapped uncached; IOREGSEL at +0, IOWIN at +0x10.
    unsafe {
        core::ptr::write_volatile(base as *mut u32, reg);
        core::ptr::write_volatile((base + 0x10) as *mut u32, v);
    }
}

fn read(reg: u32) -> u32 {
    let base = BASE.load(Ordering::Relaxed);
    // SAFETY: as in `write`.
    unsafe {
        core::ptr::write_volatile(base as *mut u32, reg);
        core::ptr::read_volatile((base + 0x10) as *const u32)
    }
}

/// Trigger mode of a routed line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Edge, active high (ISA default; virtio-mmio on microvm).
    Edge,
    /// Level, active low (PCI INTx).
    LevelLow,
}

/// Error of [`route`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoSuchPin {
    /// The GSI asked for.
    pub gsi: u32,
    /// Pins this IOAPIC has.
    pub pins: u32,
}

impl core::fmt::Display for NoSuchPin {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "GSI {} is not on the IOAPIC (it has {} pins)", self.gsi, self.pins)
    }
}

/// Number of redirection entries (pins).
pub fn pins() -> u32 {
    ((read(1) >> 16) & 0xff) + 1
}

/// Routes `gsi` to `vector` on this CPU, unmasked. Errors: [`NoSuchPin`].
pub fn route(gsi: u32, vector: u8, trigger: Trigger) -> Result<(), NoSuchPin> {
    let pins = pins();
    if gsi >= pins {
        return Err(NoSuchPin { gsi, pins });
    }
    let dest = super::apic::id() & 0xff;
    let mut low = u32::from(vector);
    if trigger == Trigger::LevelLow {
        low |= (1 << 15) | (1 << 13);
    }
    write(0x10 + 2 * gsi + 1, dest << 24);
    write(0x10 + 2 * gsi, low);
    Ok(())
}

/// Masks `gsi`.
pub fn mask(gsi: u32) {
    if gsi < pins() {
        write(0x10 + 2 * gsi, 1 << 16);
    }
}
