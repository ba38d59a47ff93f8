//! Zirvium's core: boot (PVH entry), memory (frames, page tables, `talc` heap, DMA), CPU (GDT/TSS, IDT with
//! exception dumps, LAPIC/IOAPIC), clocks, console/log, the async executor, device traits, hypervisor
//! detection and the platform interface, ACPI tables and PCI (enumeration, BARs, MSI/MSI-X, the driver table).
//! Apps use it through the `zirvium` crate.
//!
//! Hardware code is built only for the bare target (`target_os = "none"`); everything else — boot-info and
//! command-line parsing, CPUID decoding, clock math, frame accounting, ACPI and PCI decoding — also builds and
//! is unit-tested on the host.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod acpi;
#[cfg(target_os = "none")]
pub mod arch;
pub mod bootinfo;
pub mod cmdline;
pub mod console;
pub mod dev;
pub mod hypervisor;
pub mod irq;
pub mod mem;
pub mod panic;
pub mod pci;
pub mod platform;
pub mod shutdown;
#[cfg(target_os = "none")]
pub mod start;
pub mod task;
pub mod time;
pub mod wire;

/// Guest exit status after a panic.
pub const EXIT_PANIC: u8 = 101;
/// Guest exit status after a CPU exception.
pub const EXIT_EXCEPTION: u8 = 102;
/// Guest exit status after a boot error (bad command line, no memory map, ...).
pub const EXIT_BOOT_ERROR: u8 = 103;

/// A platform-specific way to end the VM (e.g. Xen `SCHEDOP_shutdown`), tried before the QEMU devices.
pub type ShutdownHook = fn(code: u8);

static SHUTDOWN_HOOK: spin::Once<ShutdownHook> = spin::Once::new();

/// Installs the platform's shutdown hook (first caller wins).
pub fn set_shutdown_hook(hook: ShutdownHook) {
    SHUTDOWN_HOOK.call_once(|| hook);
}

/// Ends the VM with `code` (0..=127 survive QEMU's isa-debug-exit encoding `(code << 1) | 1`).
///
/// Order: the platform's hook; QEMU's isa-debug-exit (I/O port 0xF4); ACPI PM1a sleep (QEMU q35 port 0x604,
/// piix4 0xB004, S5); then halt with interrupts off.
pub fn exit(code: u8) -> ! {
    if let Some(h) = SHUTDOWN_HOOK.get() {
        h(code);
    }
    #[cfg(target_os = "none")]
    {
        use arch::x86_64::cpu::{halt_forever, outl, outw};
        outl(0xf4, u32::from(code));
        outw(0x604, 0x2000);
        outw(0xB004, 0x2000);
        halt_forever()
    }
    #[cfg(not(target_os = "none"))]
    panic!("libos::exit({code}) outside a VM")
}

// Small arch shims so portable modules (heap, executor, console, timers) need no cfg of their own. On the
// host they are no-ops so the same code runs under `cargo test`.

#[cfg(target_os = "none")]
pub(crate) fn arch_without_interrupts<R>(f: impl FnOnce() -> R) -> R {
    arch::x86_64::cpu::without_interrupts(f)
}
#[cfg(not(target_os = "none"))]
pub(crate) fn arch_without_interrupts<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_os = "none")]
fn arch_disable_interrupts() {
    arch::x86_64::cpu::disable_interrupts()
}
#[cfg(not(target_os = "none"))]
fn arch_disable_interrupts() {}

#[cfg(target_os = "none")]
fn arch_enable_interrupts() {
    arch::x86_64::cpu::enable_interrupts()
}
#[cfg(not(target_os = "none"))]
fn arch_enable_interrupts() {}

#[cfg(target_os = "none")]
fn arch_enable_interrupts_and_halt() {
    arch::x86_64::cpu::enable_interrupts_and_halt()
}
#[cfg(not(target_os = "none"))]
fn arch_enable_interrupts_and_halt() {
    core::hint::spin_loop()
}

#[cfg(target_os = "none")]
fn arch_arm_timer(deadline_ns: u64) {
    start::arm_timer_at(deadline_ns)
}
#[cfg(not(target_os = "none"))]
fn arch_arm_timer(_deadline_ns: u64) {}

#[cfg(target_os = "none")]
fn arch_disarm_timer() {
    arch::x86_64::apic::cancel()
}
#[cfg(not(target_os = "none"))]
fn arch_disarm_timer() {}
