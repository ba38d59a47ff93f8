//! Local APIC in x2APIC mode (MSRs) when CPUID offers it, xAPIC (MMIO at the APIC base) otherwise; its timer
//! in TSC-deadline mode when offered, one-shot mode calibrated against the TSC otherwise.
//! Source: Intel SDM Vol. 3A §11.4 (xAPIC registers), §11.5.4 (APIC timer, TSC-deadline mode),
//! §11.12 (x2APIC, MSR 0x800 + offset/16).

use super::cpu::{cpuid, rdmsr, rdtsc, wrmsr};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Vector of the LAPIC timer.
pub const TIMER_VECTOR: u8 = 0xF0;
/// Spurious-interrupt vector (low 4 bits must be 1 on old APICs).
pub const SPURIOUS_VECTOR: u8 = 0xFF;

const IA32_APIC_BASE: u32 = 0x1B;
const IA32_TSC_DEADLINE: u32 = 0x6E0;
const REG_ID: u32 = 0x20;
const REG_TPR: u32 = 0x80;
const REG_EOI: u32 = 0xB0;
const REG_SVR: u32 = 0xF0;
const REG_LVT_TIMER: u32 = 0x320;
const REG_TIMER_INIT: u32 = 0x380;
const REG_TIMER_CUR: u32 = 0x390;
const REG_TIMER_DIV: u32 = 0x3E0;

static X2APIC: AtomicBool = AtomicBool::new(false);
static TSC_DEADLINE: AtomicBool = AtomicBool::new(false);
static MMIO_BASE: AtomicU64 = AtomicU64::new(0xFEE0_0000);
/// LAPIC timer ticks per 2^32 TSC ticks (one-shot mode only).
static TIMER_PER_TSC_FP32: AtomicU64 = AtomicU64::new(0);

fn read(reg: u32) -> u32 {
    if X2APIC.load(Ordering::Relaxed) {
        rdmsr(0x800 + (reg >> 4)) as u32
    } else {
        let addr = MMIO_BASE.load(Ordering::Relaxed) + u64::from(reg);
        // SAFETY: the xAPIC page is identity mapped uncached; registers are 32-bit aligned.
        unsafe { core::ptr::read_volatile(addr as *const u32) }
    }
}

fn write(reg: u32, v: u32) {
    if X2APIC.load(Ordering::Relaxed) {
        // SAFETY: x2APIC register MSRs only affect interrupt delivery, which libos owns.
        unsafe { wrmsr(0x800 + (reg >> 4), u64::from(v)) };
    } else {
        let addr = MMIO_BASE.load(Ordering::Relaxed) + u64::from(reg);
        // SAFETY: as in `read`.
        unsafe { core::ptr::write_volatile(addr as *mut u32, v) };
    }
}

/// What [`init`] enabled, for the boot log.
#[derive(Debug, Clone, Copy)]
pub struct ApicInfo {
    /// x2APIC (true) or xAPIC MMIO mode.
    pub x2apic: bool,
    /// Timer in TSC-deadline mode (true) or one-shot.
    pub tsc_deadline: bool,
    /// This CPU's APIC ID.
    pub id: u32,
}

/// Masks the legacy 8259 PICs (all IOAPIC routing from here on) and enables the local APIC.
pub fn init() -> ApicInfo {
    // 8259A: mask every line on both controllers.
    super::cpu::outb(0x21, 0xff);
    super::cpu::outb(0xA1, 0xff);
    let leaf1 = cpuid(1, 0);
    let has_x2 = leaf1[2] & (1 << 21) != 0;
    let has_deadline = leaf1[2] & (1 << 24) != 0;
    let mut base = rdmsr(IA32_APIC_BASE);
    MMIO_BASE.store(base & 0xF_FFFF_F000, Ordering::Relaxed);
    base |= 1 << 11; // global enable
    if has_x2 {
        base |= 1 << 10;
    }
    // SAFETY: enabling the local APIC (and x2APIC mode when CPUID offers it) at its current base.
    unsafe { wrmsr(IA32_APIC_BASE, base) };
    X2APIC.store(has_x2, Ordering::Relaxed);
    TSC_DEADLINE.store(has_deadline, Ordering::Relaxed);
    write(REG_TPR, 0);
    write(REG_SVR, 0x100 | u32::from(SPURIOUS_VECTOR));
    let mode = if has_deadline { 0b10 << 17 } else { 0 };
    write(REG_LVT_TIMER, mode | u32::from(TIMER_VECTOR) | (1 << 16)); // masked until armed
    write(REG_TIMER_DIV, 0b1011); // divide by 1
    let id = if has_x2 { read(REG_ID) } else { read(REG_ID) >> 24 };
    ApicInfo { x2apic: has_x2, tsc_deadline: has_deadline, id }
}

/// Starts the one-shot timer counting down from its maximum, for [`calibrate_finish`]; returns the TSC at
/// the start. A no-op (returns 0) in TSC-deadline mode.
pub fn calibrate_start() -> u64 {
    if TSC_DEADLINE.load(Ordering::Relaxed) {
        return 0;
    }
    write(REG_LVT_TIMER, u32::from(TIMER_VECTOR) | (1 << 16));
    write(REG_TIMER_INIT, u32::MAX);
    rdtsc()
}

/// Ends a calibration begun with [`calibrate_start`] at TSC `t0`: the one-shot timer rate against the TSC
/// is what the timer counted per TSC tick since then. A no-op in TSC-deadline mode.
pub fn calibrate_finish(t0: u64) {
    if TSC_DEADLINE.load(Ordering::Relaxed) {
        return;
    }
    // The TSC is read before the count: what runs after the read (an MMIO exit, under TCG the first
    // translation of the code that follows) would lengthen the window, understate the rate, and make every
    // one-shot fire early.
    let window = rdtsc().saturating_sub(t0).max(1);
    let elapsed = u64::from(u32::MAX - read(REG_TIMER_CUR));
    write(REG_TIMER_INIT, 0);
    let fp = ((u128::from(elapsed) << 32) / u128::from(window)) as u64;
    TIMER_PER_TSC_FP32.store(fp.max(1), Ordering::Relaxed);
}

/// Measures the one-shot timer rate against the TSC over `tsc_window` TSC ticks. Only needed without
/// TSC-deadline mode.
pub fn calibrate(tsc_window: u64) {
    let t0 = calibrate_start();
    if t0 == 0 {
        return;
    }
    while rdtsc() - t0 < tsc_window {
        core::hint::spin_loop();
    }
    calibrate_finish(t0);
}

/// Whether the one-shot timer rate is known (always true in TSC-deadline mode).
pub fn calibrated() -> bool {
    TSC_DEADLINE.load(Ordering::Relaxed) || TIMER_PER_TSC_FP32.load(Ordering::Relaxed) != 0
}

/// Sets the one-shot timer rate from a stated LAPIC timer frequency (Hz, e.g. the hypervisor timing leaf
/// 0x4000_0010 EBX) and the TSC frequency (Hz). Only needed without TSC-deadline mode.
pub fn set_timer_hz(timer_hz: u64, tsc_hz: u64) {
    let fp = ((u128::from(timer_hz) << 32) / u128::from(tsc_hz.max(1))) as u64;
    TIMER_PER_TSC_FP32.store(fp.max(1), Ordering::Relaxed);
}

/// Arms the timer to fire at TSC value `deadline` (ticks); a deadline in the past fires at once.
pub fn set_deadline(deadline: u64) {
    if TSC_DEADLINE.load(Ordering::Relaxed) {
        write(REG_LVT_TIMER, (0b10 << 17) | u32::from(TIMER_VECTOR));
        // SAFETY: arming the TSC-deadline timer only schedules an interrupt.
        unsafe { wrmsr(IA32_TSC_DEADLINE, deadline.max(1)) };
    } else {
        let now = rdtsc();
        let delta = deadline.saturating_sub(now);
        let fp = TIMER_PER_TSC_FP32.load(Ordering::Relaxed);
        let count = ((u128::from(delta) * u128::from(fp)) >> 32).clamp(1, u128::from(u32::MAX)) as u32;
        write(REG_LVT_TIMER, u32::from(TIMER_VECTOR));
        write(REG_TIMER_INIT, count);
    }
}

/// Disarms the timer.
pub fn cancel() {
    if TSC_DEADLINE.load(Ordering::Relaxed) {
        // SAFETY: writing 0 disarms the TSC-deadline timer.
        unsafe { wrmsr(IA32_TSC_DEADLINE, 0) };
    } else {
        write(REG_TIMER_INIT, 0);
    }
}

/// Signals end of interrupt.
pub fn eoi() {
    write(REG_EOI, 0);
}

/// This CPU's APIC ID (destination for MSI and IOAPIC routes).
pub fn id() -> u32 {
    if X2APIC.load(Ordering::Relaxed) {
        read(REG_ID)
    } else {
        read(REG_ID) >> 24
    }
}

/// The MSI address/data pair that delivers `vector` to this CPU, edge-triggered, fixed delivery.
/// Source: Intel SDM Vol. 3A §11.11 (message signalled interrupts). Shapes: `(address, data)`.
pub fn msi_message(vector: u8) -> (u64, u32) {
    let dest = id() & 0xff;
    (0xFEE0_0000 | (u64::from(dest) << 12), u32::from(vector))
}
