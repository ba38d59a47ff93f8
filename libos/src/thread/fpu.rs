//! FPU/SSE for threads: turning SSE on (the kernel itself is built soft-float and never touches the x87/SSE
//! registers, so only threads of programs compiled with SSE need this) and saving/restoring the x87/SSE state
//! with FXSAVE64/FXRSTOR64 (512-byte area, 16-byte aligned).
//! Source: Intel SDM Vol. 3A §2.5 (CR0.MP/EM/TS/NE, CR4.OSFXSR/OSXMMEXCPT), §13.1.4 (initialising SSE),
//! Vol. 2A "FXSAVE" (area layout), Vol. 1 §10.2.3.1 (MXCSR default 0x1F80).
#![allow(unsafe_code)]

use core::arch::asm;

const CR0_MP: u64 = 1 << 1;
const CR0_EM: u64 = 1 << 2;
const CR0_TS: u64 = 1 << 3;
const CR0_NE: u64 = 1 << 5;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;

/// The x87/SSE register state of one thread (FXSAVE area).
#[repr(C, align(16))]
#[derive(Clone)]
pub struct FxState(pub [u8; 512]);

/// Enables x87 and SSE instructions (clears EM/TS, sets MP/NE, OSFXSR, OSXMMEXCPT) and returns the initial
/// state a new thread starts with (after FNINIT, MXCSR = 0x1F80: all exceptions masked, round to nearest).
pub fn enable() -> FxState {
    let mut cr0: u64;
    let mut cr4: u64;
    // SAFETY: reading control registers has no side effects.
    unsafe {
        asm!("mov {}, cr0", out(reg) cr0, options(nomem, nostack, preserves_flags));
        asm!("mov {}, cr4", out(reg) cr4, options(nomem, nostack, preserves_flags));
    }
    cr0 = (cr0 & !(CR0_EM | CR0_TS)) | CR0_MP | CR0_NE;
    cr4 |= CR4_OSFXSR | CR4_OSXMMEXCPT;
    let mxcsr: u32 = 0x1F80;
    let mut init = FxState([0; 512]);
    // SAFETY: these bits only allow x87/SSE instructions to run (SDM §13.1.4); the kernel's code never uses
    // them, so no kernel state changes. FNINIT/LDMXCSR set the default state, FXSAVE64 writes 512 bytes into
    // the 16-aligned area.
    unsafe {
        asm!("mov cr0, {}", in(reg) cr0, options(nostack, preserves_flags));
        asm!("mov cr4, {}", in(reg) cr4, options(nostack, preserves_flags));
        asm!("fninit", "ldmxcsr [{m}]", "fxsave64 [{a}]", m = in(reg) &mxcsr, a = in(reg) init.0.as_mut_ptr(),
             options(nostack, preserves_flags));
    }
    init
}

/// Saves the live x87/SSE registers into `area`. SSE must be enabled ([`enable`]).
pub fn save(area: &mut FxState) {
    // SAFETY: FXSAVE64 writes exactly the 512-byte, 16-aligned area.
    unsafe { asm!("fxsave64 [{}]", in(reg) area.0.as_mut_ptr(), options(nostack, preserves_flags)) };
}

/// Loads the x87/SSE registers from `area` (saved by [`save`] or made by [`enable`]).
pub fn restore(area: &FxState) {
    // SAFETY: FXRSTOR64 reads the 16-aligned area; its contents came from FXSAVE64, so reserved MXCSR bits
    // are clear and it cannot fault.
    unsafe { asm!("fxrstor64 [{}]", in(reg) area.0.as_ptr(), options(nostack, preserves_flags, readonly)) };
}
