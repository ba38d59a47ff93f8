//! IDT for all 256 vectors, asm entry stubs that save every general-purpose register into a
//! [`TrapFrame`], and the dispatcher: exceptions print a full dump and exit the VM with status
//! [`crate::EXIT_EXCEPTION`]; device vectors call the handler registered with [`register`].
//! Source: Intel SDM Vol. 3A §6.10–6.14 (IDT, gate descriptors, 64-bit interrupt stack frame), §6.15
//! (exception reference: which vectors push an error code).

use super::{apic, cpu, gdt};
use core::arch::global_asm;
use core::sync::atomic::{AtomicUsize, Ordering};

/// Registers saved by the entry stub, lowest address first, followed by the CPU's interrupt frame.
#[repr(C)]
#[derive(Debug)]
pub struct TrapFrame {
    /// R15 at the time of the interrupt.
    pub r15: u64,
    /// R14 at the time of the interrupt.
    pub r14: u64,
    /// R13 at the time of the interrupt.
    pub r13: u64,
    /// R12 at the time of the interrupt.
    pub r12: u64,
    /// R11 at the time of the interrupt.
    pub r11: u64,
    /// R10 at the time of the interrupt.
    pub r10: u64,
    /// R9 at the time of the interrupt.
    pub r9: u64,
    /// R8 at the time of the interrupt.
    pub r8: u64,
    /// RBP at the time of the interrupt.
    pub rbp: u64,
    /// RDI at the time of the interrupt.
    pub rdi: u64,
    /// RSI at the time of the interrupt.
    pub rsi: u64,
    /// RDX at the time of the interrupt.
    pub rdx: u64,
    /// RCX at the time of the interrupt.
    pub rcx: u64,
    /// RBX at the time of the interrupt.
    pub rbx: u64,
    /// RAX at the time of the interrupt.
    pub rax: u64,
    /// Vector number pushed by the stub.
    pub vector: u64,
    /// Error code pushed by the CPU (or 0 by the stub for vectors without one).
    pub error_code: u64,
    /// Interrupted instruction pointer (CPU frame; for faults, the faulting instruction).
    pub rip: u64,
    /// Interrupted code segment selector (CPU frame, zero-extended).
    pub cs: u64,
    /// Interrupted RFLAGS (CPU frame).
    pub rflags: u64,
    /// Interrupted stack pointer (CPU frame).
    pub rsp: u64,
    /// Interrupted stack segment selector (CPU frame, zero-extended).
    pub ss: u64,
}

// Vectors 8, 10–14, 17, 21, 29, 30 push an error code (SDM Vol. 3A Table 6-1); the others get a 0.
global_asm!(
    r#"
    .altmacro
    .macro TRAP_STUB n
    .balign 16
trap_stub_\n:
    .if \n == 8 || (\n >= 10 && \n <= 14) || \n == 17 || \n == 21 || \n == 29 || \n == 30
    .else
    push 0
    .endif
    push \n
    jmp trap_common
    .endm

    .section .text
    .set i, 0
    .rept 256
    TRAP_STUB %i
    .set i, i + 1
    .endr

trap_common:
    push rax
    push rbx
    push rcx
    push rdx
    push rsi
    push rdi
    push rbp
    push r8
    push r9
    push r10
    push r11
    push r12
    push r13
    push r14
    push r15
    mov rdi, rsp
    cld
    call libos_trap_dispatch
    pop r15
    pop r14
    pop r13
    pop r12
    pop r11
    pop r10
    pop r9
    pop r8
    pop rbp
    pop rdi
    pop rsi
    pop rdx
    pop rcx
    pop rbx
    pop rax
    add rsp, 16
    iretq

    .macro TRAP_ADDR n
    .quad trap_stub_\n
    .endm
    .section .rodata
    .balign 8
    .global libos_trap_stubs
libos_trap_stubs:
    .set i, 0
    .rept 256
    TRAP_ADDR %i
    .set i, i + 1
    .endr
    .noaltmacro
    "#
);

extern "C" {
    static libos_trap_stubs: [u64; 256];
}

#[repr(C, align(16))]
struct Idt([u128; 256]);

static mut IDT: Idt = Idt([0; 256]);

/// First vector handed out to devices by [`allocate_vector`].
pub const FIRST_DEVICE_VECTOR: u8 = 0x30;
/// Last vector handed out to devices (0xF0..0xFF are reserved for the LAPIC timer and spurious).
pub const LAST_DEVICE_VECTOR: u8 = 0xEF;

/// An interrupt handler: runs with interrupts masked, must not block or allocate large amounts; its job is to
/// acknowledge the source if needed and wake tasks.
pub type Handler = fn(vector: u8);

static HANDLERS: [AtomicUsize; 256] = [const { AtomicUsize::new(0) }; 256];
static NEXT_VECTOR: AtomicUsize = AtomicUsize::new(FIRST_DEVICE_VECTOR as usize);

/// Loads the IDT. Exceptions get interrupt gates (IF cleared on entry); #DF, NMI and #MC run on IST stacks.
pub fn init() {
    // SAFETY: single-threaded boot; `libos_trap_stubs` is a 256-entry table emitted above.
    unsafe {
        let idt = &raw mut IDT;
        for (v, &handler) in libos_trap_stubs.iter().enumerate() {
            let ist: u8 = match v {
                8 => gdt::IST_DOUBLE_FAULT,
                2 => gdt::IST_NMI,
                18 => gdt::IST_MACHINE_CHECK,
                _ => 0,
            };
            // 64-bit interrupt gate, present, DPL 0 (SDM Vol. 3A Figure 6-8).
            let low: u64 = (handler & 0xffff)
                | (u64::from(gdt::KERNEL_CS) << 16)
                | (u64::from(ist) << 32)
                | (0x8eu64 << 40)
                | (((handler >> 16) & 0xffff) << 48);
            (*idt).0[v] = u128::from(low) | (u128::from(handler >> 32) << 64);
        }
        let ptr = (4095u16, idt as u64);
        #[repr(C, packed)]
        struct Ptr(u16, u64);
        let p = Ptr(ptr.0, ptr.1);
        core::arch::asm!("lidt [{}]", in(reg) &p, options(readonly, nostack, preserves_flags));
    }
}

/// Error of [`allocate_vector`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VectorsExhausted;

impl core::fmt::Display for VectorsExhausted {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "all device interrupt vectors {FIRST_DEVICE_VECTOR:#x}..={LAST_DEVICE_VECTOR:#x} are in use")
    }
}

/// Allocates a free device vector and installs `handler` on it. Errors: [`VectorsExhausted`].
pub fn allocate_vector(handler: Handler) -> Result<u8, VectorsExhausted> {
    let v = NEXT_VECTOR.fetch_add(1, Ordering::Relaxed);
    if v > LAST_DEVICE_VECTOR as usize {
        return Err(VectorsExhausted);
    }
    register(v as u8, handler);
    Ok(v as u8)
}

/// Installs `handler` for `vector` (replacing any previous one).
pub fn register(vector: u8, handler: Handler) {
    HANDLERS[vector as usize].store(handler as usize, Ordering::Release);
}

const EXCEPTION_NAMES: [&str; 32] = [
    "Divide error",
    "Debug",
    "NMI",
    "Breakpoint",
    "Overflow",
    "BOUND range exceeded",
    "Invalid opcode",
    "Device not available",
    "Double fault",
    "Coprocessor segment overrun",
    "Invalid TSS",
    "Segment not present",
    "Stack-segment fault",
    "General protection fault",
    "Page fault",
    "Reserved",
    "x87 floating-point error",
    "Alignment check",
    "Machine check",
    "SIMD floating-point exception",
    "Virtualization exception",
    "Control protection exception",
    "Reserved",
    "Reserved",
    "Reserved",
    "Reserved",
    "Reserved",
    "Reserved",
    "Hypervisor injection exception",
    "VMM communication exception",
    "Security exception",
    "Reserved",
];

#[no_mangle]
extern "C" fn libos_trap_dispatch(frame: &mut TrapFrame) {
    let v = frame.vector as usize;
    if v < 32 {
        exception(frame);
    }
    if v == apic::SPURIOUS_VECTOR as usize {
        return; // no EOI for spurious interrupts (SDM Vol. 3A §11.9)
    }
    let h = HANDLERS[v].load(Ordering::Acquire);
    if h != 0 {
        // SAFETY: only `register` stores into HANDLERS, always a valid `Handler` fn pointer.
        let f: Handler = unsafe { core::mem::transmute::<usize, Handler>(h) };
        f(v as u8);
    }
    apic::eoi();
}

fn exception(frame: &TrapFrame) -> ! {
    use crate::console::emergency_print as p;
    let v = frame.vector as usize;
    let cr2 = cpu::cr2();
    p(format_args!(
        "\nEXCEPTION {} (vector {}) error=0x{:x} RIP=0x{:016x} CR2=0x{:016x}\n",
        EXCEPTION_NAMES[v], v, frame.error_code, frame.rip, cr2
    ));
    if v == 14 {
        let e = frame.error_code;
        p(format_args!(
            "  page fault: {} {} access in {} mode{}\n",
            if e & 1 != 0 { "protection violation on" } else { "not-present page on" },
            if e & 0x10 != 0 {
                "instruction-fetch"
            } else if e & 2 != 0 {
                "write"
            } else {
                "read"
            },
            if e & 4 != 0 { "user" } else { "supervisor" },
            if crate::mem::is_guard_page(cr2) { " — stack overflow into a guard page" } else { "" },
        ));
    }
    if v == 8 && crate::mem::is_guard_page(cr2) {
        p(format_args!("  CR2 is in a stack guard page: stack overflow\n"));
    }
    p(format_args!(
        "  RAX={:016x} RBX={:016x} RCX={:016x} RDX={:016x}\n  RSI={:016x} RDI={:016x} RBP={:016x} RSP={:016x}\n",
        frame.rax, frame.rbx, frame.rcx, frame.rdx, frame.rsi, frame.rdi, frame.rbp, frame.rsp
    ));
    p(format_args!(
        "  R8 ={:016x} R9 ={:016x} R10={:016x} R11={:016x}\n  R12={:016x} R13={:016x} R14={:016x} R15={:016x}\n",
        frame.r8, frame.r9, frame.r10, frame.r11, frame.r12, frame.r13, frame.r14, frame.r15
    ));
    p(format_args!("  CS={:04x} SS={:04x} RFLAGS={:016x} CR3={:016x}\n", frame.cs, frame.ss, frame.rflags, cpu::cr3()));
    p(format_args!("backtrace:\n  0: 0x{:016x}\n", frame.rip));
    crate::panic::print_backtrace(frame.rbp, 1);
    crate::exit(crate::EXIT_EXCEPTION);
}
