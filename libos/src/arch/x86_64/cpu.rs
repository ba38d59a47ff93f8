//! Thin, safe wrappers over the instructions libos needs: port I/O, MSRs, CPUID, TSC, RDSEED/RDRAND,
//! interrupt flag, halt.
//! Source: Intel SDM Vol. 2 (instruction reference).

use core::arch::asm;

/// Reads CPUID `leaf`/`subleaf`; returns `[eax, ebx, ecx, edx]`.
pub fn cpuid(leaf: u32, subleaf: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// A [`crate::hypervisor::CpuidSource`] over the real instruction.
pub struct NativeCpuid;

impl crate::hypervisor::CpuidSource for NativeCpuid {
    fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
        cpuid(leaf, subleaf)
    }
}

/// Reads the time-stamp counter (ticks).
#[inline]
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC is unprivileged-safe and has no memory effects.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// A hardware random word: RDSEED when CPUID.(EAX=07H):EBX[18] says it exists, else RDRAND
/// (CPUID.01H:ECX[30]); `None` without either, or when the instruction reported no entropy (CF=0) ten times in
/// a row. Source: Intel SDM Vol. 1 §7.3.17, Vol. 2 "RDSEED", "RDRAND".
pub fn hardware_random_u64() -> Option<u64> {
    let rdseed = cpuid(7, 0)[1] & (1 << 18) != 0;
    let rdrand = cpuid(1, 0)[2] & (1 << 30) != 0;
    for _ in 0..10 {
        let (v, ok): (u64, u8);
        if rdseed {
            // SAFETY: CPUID says RDSEED exists; it only writes the output registers and flags.
            unsafe { asm!("rdseed {}", "setc {}", out(reg) v, out(reg_byte) ok, options(nomem, nostack)) };
        } else if rdrand {
            // SAFETY: CPUID says RDRAND exists; as above.
            unsafe { asm!("rdrand {}", "setc {}", out(reg) v, out(reg_byte) ok, options(nomem, nostack)) };
        } else {
            return None;
        }
        if ok != 0 {
            return Some(v);
        }
    }
    None
}

/// Reads MSR `msr`. The caller must know the MSR exists (a missing one raises #GP, which the exception
/// handler reports and exits on).
pub fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: reading an MSR has no memory effects; a bad index faults into the exception handler.
    unsafe { asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Writes MSR `msr`.
///
/// # Safety
/// MSR writes change CPU behaviour (paging, interrupts, clocks); the caller must know the effect is sound.
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: forwarded to the caller.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32,
             options(nostack, preserves_flags))
    };
}

/// Writes a byte to an I/O port. Port I/O reaches only devices, never memory.
pub fn outb(port: u16, v: u8) {
    // SAFETY: port I/O does not touch guest memory; devices at these ports are owned by libos.
    unsafe { asm!("out dx, al", in("dx") port, in("al") v, options(nomem, nostack, preserves_flags)) };
}

/// Writes a 16-bit word to an I/O port.
pub fn outw(port: u16, v: u16) {
    // SAFETY: as for `outb`.
    unsafe { asm!("out dx, ax", in("dx") port, in("ax") v, options(nomem, nostack, preserves_flags)) };
}

/// Writes a 32-bit word to an I/O port.
pub fn outl(port: u16, v: u32) {
    // SAFETY: as for `outb`.
    unsafe { asm!("out dx, eax", in("dx") port, in("eax") v, options(nomem, nostack, preserves_flags)) };
}

/// Reads a byte from an I/O port.
pub fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: as for `outb`.
    unsafe { asm!("in al, dx", in("dx") port, out("al") v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Reads a 32-bit word from an I/O port.
pub fn inl(port: u16) -> u32 {
    let v: u32;
    // SAFETY: as for `outb`.
    unsafe { asm!("in eax, dx", in("dx") port, out("eax") v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Reads a 16-bit word from an I/O port.
pub fn inw(port: u16) -> u16 {
    let v: u16;
    // SAFETY: as for `outb`.
    unsafe { asm!("in ax, dx", in("dx") port, out("ax") v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Whether RFLAGS.IF is set.
pub fn interrupts_enabled() -> bool {
    let flags: u64;
    // SAFETY: reads RFLAGS through the stack.
    unsafe { asm!("pushfq; pop {}", out(reg) flags, options(nomem, preserves_flags)) };
    flags & (1 << 9) != 0
}

/// Sets RFLAGS.IF.
pub fn enable_interrupts() {
    // SAFETY: handlers are installed before the first `sti` (see `boot`).
    unsafe { asm!("sti", options(nomem, nostack)) };
}

/// Clears RFLAGS.IF.
pub fn disable_interrupts() {
    // SAFETY: masking interrupts is always sound.
    unsafe { asm!("cli", options(nomem, nostack)) };
}

/// Runs `f` with interrupts masked, restoring the previous state after.
pub fn without_interrupts<R>(f: impl FnOnce() -> R) -> R {
    let was = interrupts_enabled();
    if was {
        disable_interrupts();
    }
    let r = f();
    if was {
        enable_interrupts();
    }
    r
}

/// Atomically enables interrupts and halts until the next one (`sti; hlt`: the interrupt shadow of STI
/// guarantees no wake-up is lost between the check and the halt). Returns with interrupts enabled.
pub fn enable_interrupts_and_halt() {
    // SAFETY: handlers are installed; halting is sound.
    unsafe { asm!("sti; hlt", options(nomem, nostack)) };
}

/// Halts forever with interrupts off.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: masking interrupts and halting is always sound.
        unsafe { asm!("cli; hlt", options(nomem, nostack)) };
    }
}

/// Reads CR2 (the faulting linear address of the last page fault).
pub fn cr2() -> u64 {
    let v: u64;
    // SAFETY: reading a control register has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Reads CR3 (page-table root, bytes).
pub fn cr3() -> u64 {
    let v: u64;
    // SAFETY: as for `cr2`.
    unsafe { asm!("mov {}, cr3", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Reads the frame pointer of the caller (RBP).
#[inline(always)]
pub fn frame_pointer() -> u64 {
    let v: u64;
    // SAFETY: reads a register.
    unsafe { asm!("mov {}, rbp", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// CR4.UMIP: SGDT, SIDT, SLDT, SMSW and STR fault outside ring 0 (Intel SDM Vol. 3A §2.5).
pub const CR4_UMIP: u64 = 1 << 11;
/// CR4.SMEP: ring 0 may not execute code on user pages (Intel SDM Vol. 3A §4.6.1).
pub const CR4_SMEP: u64 = 1 << 20;
/// CR4.SMAP: ring 0 may not read or write user pages unless RFLAGS.AC is set (Intel SDM Vol. 3A §4.6.1).
pub const CR4_SMAP: u64 = 1 << 21;

/// The CPU protections in force, for the boot log's `cpu:` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Protections {
    /// EFER.NXE: no-execute pages (data, heap, stacks) — set by the boot stub when CPUID has it.
    pub nx: bool,
    /// CR4.SMEP enabled (CPUID.(EAX=7,ECX=0):EBX[7]).
    pub smep: bool,
    /// CR4.SMAP enabled (CPUID.(EAX=7,ECX=0):EBX[20]).
    pub smap: bool,
    /// CR4.UMIP enabled (CPUID.(EAX=7,ECX=0):ECX[2]).
    pub umip: bool,
}

impl core::fmt::Display for Protections {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let on = |b: bool| if b { "on" } else { "off (not in CPUID)" };
        write!(f, "NX {}, SMEP {}, SMAP {}, UMIP {}", on(self.nx), on(self.smep), on(self.smap), on(self.umip))
    }
}

/// The CR4 bits to set for what CPUID leaf 7 (`[eax, ebx, ecx, edx]` of subleaf 0) offers.
pub fn protection_bits(leaf7: [u32; 4]) -> u64 {
    let mut bits = 0;
    if leaf7[1] & (1 << 7) != 0 {
        bits |= CR4_SMEP;
    }
    if leaf7[1] & (1 << 20) != 0 {
        bits |= CR4_SMAP;
    }
    if leaf7[2] & (1 << 2) != 0 {
        bits |= CR4_UMIP;
    }
    bits
}

/// Reads CR4.
pub fn cr4() -> u64 {
    let v: u64;
    // SAFETY: as for `cr2`.
    unsafe { asm!("mov {}, cr4", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Turns on SMEP, SMAP and UMIP where CPUID offers them (no page of the kernel's map is a user page, so none
/// changes what ring-0 code may do; they stop a future user mapping from being executed or touched by the
/// kernel) and returns what is in force, NX included (EFER bit 11).
pub fn enable_protections() -> Protections {
    let max_leaf = cpuid(0, 0)[0];
    let bits = if max_leaf >= 7 { protection_bits(cpuid(7, 0)) } else { 0 };
    // SAFETY: only bits CPUID reports are set (others would #GP); they restrict ring 0's access to user pages,
    // of which there are none, and ring 3's use of descriptor-table instructions, which nothing runs.
    unsafe { asm!("mov cr4, {}", in(reg) cr4() | bits, options(nostack, preserves_flags)) };
    let c = cr4();
    Protections {
        nx: rdmsr(0xC000_0080) & (1 << 11) != 0,
        smep: c & CR4_SMEP != 0,
        smap: c & CR4_SMAP != 0,
        umip: c & CR4_UMIP != 0,
    }
}
