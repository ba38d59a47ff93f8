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
pub mod thread;
pub mod time;
pub mod wire;

// Guest exit statuses, one per way the VM can end (README "Exit statuses"). QEMU's isa-debug-exit reports
// status `v` as `(v << 1) | 1`; `images run` and the test harness undo that. Apps own 0..=100.

/// Guest exit status of an app that finished normally (its `main` returned `()`, `Ok(())` or 0).
pub const EXIT_SUCCESS: u8 = 0;
/// Guest exit status of an app whose `main` returned `Err(_)` (the error is printed as `error: …`); apps may
/// return any status up to [`EXIT_APP_MAX`] themselves.
pub const EXIT_APP_ERROR: u8 = 1;
/// The highest status an app should return: 101..=127 are the libos's own.
pub const EXIT_APP_MAX: u8 = 100;
/// Guest exit status after a panic (`panic at FILE:LINE:COL: …` and a backtrace on the console).
pub const EXIT_PANIC: u8 = 101;
/// Guest exit status after a CPU exception (`EXCEPTION <name> (vector N) …`, registers, the protection that
/// stopped a page fault, a backtrace), a stack overflow into a guard page included.
pub const EXIT_EXCEPTION: u8 = 102;
/// Guest exit status after a boot error (bad command line, no memory map, no platform, a driver that cannot
/// start, ...): `boot error: …` on the console.
pub const EXIT_BOOT_ERROR: u8 = 103;
/// Guest exit status after an allocation the heap could not satisfy (`out of memory: allocation of N bytes
/// (align A) failed`, the heap's figures and a backtrace to the call site; see `mem::heap`).
pub const EXIT_OUT_OF_MEMORY: u8 = 104;
/// Guest exit status when the watchdog (kernel option `watchdog=SECONDS`) saw no executor progress for that
/// long (`watchdog: no executor progress for N s`, the interrupted instruction and a backtrace; see
/// `task::watchdog`).
pub const EXIT_WATCHDOG: u8 = 105;

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
