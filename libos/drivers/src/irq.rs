//! Interrupt slots for the devices of this crate (virtio, NVMe): each device owns one [`IrqSlot`] bound to a
//! libos vector (an MSI-X message, or an I/O APIC route for INTx / virtio-mmio). The waking is libos's
//! [`WakeSlot`]; what a slot adds is the bound vector and, for a level-triggered virtio-pci INTx, the ISR status
//! byte the handler reads, which deasserts the line (virtio 1.2 §4.1.4.5) — without that the interrupt would
//! fire again at once after EOI. A device's persistent waker reaps its completions (an NVMe completion queue's
//! head doorbell write deasserts its INTx the same way, NVMe 1.4 §7.5.1, in 2.0 the PCIe transport
//! specification); everything else (edge-triggered virtio-mmio's InterruptACK included) happens on the task side.

use core::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use core::task::Waker;
use libos::irq::WakeSlot;

/// Most devices with interrupts (virtio and NVMe together).
pub const MAX_SLOTS: usize = 16;

/// The address of a virtio-pci ISR status byte, checked by the virtio-pci driver to lie inside a memory BAR
/// `libos::pci` decoded and mapped (only that driver makes one), for the handler to read on INTx.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IsrStatus(usize);

impl IsrStatus {
    /// The ISR status byte at `address`, which the caller has checked lies inside a mapped memory BAR.
    #[cfg_attr(not(target_os = "none"), allow(dead_code))] // made by the virtio-pci probe, bare target only
    pub(crate) fn checked(address: usize) -> Self {
        Self(address)
    }
}

/// One device's interrupt state: the task wake-up ([`WakeSlot`]), the vector it is bound to and, for INTx,
/// the ISR status byte to read.
pub struct IrqSlot {
    claimed: AtomicBool,
    wake: WakeSlot,
    vector: AtomicU8,
    /// Address of the virtio-pci ISR status byte (INTx only, from an [`IsrStatus`]), 0 = none.
    isr: AtomicUsize,
}

impl IrqSlot {
    /// An unclaimed, unbound slot (the kernel uses the static ones through [`claim`]).
    pub const fn new() -> Self {
        Self {
            claimed: AtomicBool::new(false),
            wake: WakeSlot::new(),
            vector: AtomicU8::new(0),
            isr: AtomicUsize::new(0),
        }
    }

    /// Binds the slot to `vector`; `isr` is the ISR status byte to read on each interrupt (level-triggered
    /// INTx), or `None`.
    pub fn bind(&self, vector: u8, isr: Option<IsrStatus>) {
        self.isr.store(isr.map_or(0, |i| i.0), Ordering::Release);
        self.vector.store(vector, Ordering::Release);
    }

    /// The vector bound with [`bind`](Self::bind), 0 when none.
    pub fn vector(&self) -> u8 {
        self.vector.load(Ordering::Acquire)
    }

    /// Interrupts delivered to this slot since boot.
    pub fn count(&self) -> u64 {
        self.wake.events()
    }

    /// Registers the waker to wake on every interrupt (replacing a different previous one). Wakes it at once
    /// if an interrupt arrived while none was registered.
    pub fn set_waker(&self, waker: &Waker) {
        self.wake.set_waker(waker);
    }

    /// Called in interrupt context: wakes the registered task (or remembers the interrupt).
    pub fn wake(&self) {
        self.wake.wake();
    }
}

impl Default for IrqSlot {
    fn default() -> Self {
        Self::new()
    }
}

static SLOTS: [IrqSlot; MAX_SLOTS] = [const { IrqSlot::new() }; MAX_SLOTS];

/// Claims a free slot; `None` when all [`MAX_SLOTS`] are taken.
pub fn claim() -> Option<&'static IrqSlot> {
    SLOTS.iter().find(|s| s.claimed.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire).is_ok())
}

/// The libos interrupt handler for every vector these devices use: reads the ISR byte of INTx slots (which
/// deasserts the level-triggered line) and wakes every slot bound to `vector` (INTx lines may be shared).
#[cfg(target_os = "none")]
#[allow(unsafe_code)]
pub fn handler(vector: u8) {
    for s in SLOTS.iter().filter(|s| s.vector() == vector) {
        let isr = s.isr.load(Ordering::Acquire);
        if isr != 0 {
            // SAFETY: `isr` comes from an `IsrStatus`: the ISR status byte inside a memory BAR that the
            // virtio-pci probe mapped and checked against the BAR size; reading it only acknowledges the
            // interrupt (virtio 1.2 §4.1.4.5).
            let _ = unsafe { core::ptr::read_volatile(isr as *const u8) };
        }
        s.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::testing::counter;

    #[test]
    fn wakes_registered_waker_and_remembers_early_interrupts() {
        let s = IrqSlot::new();
        s.wake(); // before any waker
        let (c, w) = counter();
        s.set_waker(&w);
        assert_eq!(c.get(), 1, "the early interrupt is delivered on registration");
        s.set_waker(&w);
        assert_eq!(c.get(), 1, "only once");
        s.wake();
        s.wake();
        assert_eq!(c.get(), 3);
        assert_eq!(s.count(), 3);
        s.bind(0x31, None);
        assert_eq!(s.vector(), 0x31);
    }

    #[test]
    fn claims_distinct_slots() {
        let a = claim().unwrap();
        let b = claim().unwrap();
        assert!(!core::ptr::eq(a, b));
    }
}
