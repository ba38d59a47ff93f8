//! The context switch between threads and the first frame of a new thread. A switch saves the callee-saved
//! registers (System V AMD64 ABI §3.2.1: rbx, rbp, r12–r15) on the old stack, stores the stack pointer,
//! loads the new one and pops the new thread's registers; everything else is saved by the caller (a Rust call
//! site, or the interrupt entry stub for a preemption). FPU/SSE state and the FS base are switched by the
//! caller (`thread::mod`).
#![allow(unsafe_code)]

use core::arch::global_asm;

global_asm!(
    r#"
    .section .text
    .global libos_thread_switch
libos_thread_switch:
    push rbp
    push rbx
    push r12
    push r13
    push r14
    push r15
    mov [rdi], rsp
    mov rsp, rsi
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret

    /* First return of a new thread: r12 = entry, r13 = argument (see `initial_frame`). */
    .global libos_thread_trampoline
libos_thread_trampoline:
    mov rdi, r12
    mov rsi, r13
    xor ebp, ebp
    call libos_thread_start
    ud2
    "#
);

extern "C" {
    fn libos_thread_switch(save_rsp: *mut u64, load_rsp: u64);
    fn libos_thread_trampoline();
}

/// Saves the current thread's registers and stack pointer into `*save_rsp` and resumes the thread whose
/// stack pointer is `load_rsp`. Returns when some thread switches back to the saved stack pointer.
///
/// # Safety
/// Interrupts must be off. `save_rsp` must stay valid until the switch back; `load_rsp` must be a stack
/// pointer saved by this function or made by [`initial_frame`], of a stack that is still allocated.
pub unsafe fn switch(save_rsp: *mut u64, load_rsp: u64) {
    // SAFETY: forwarded to the caller; the asm preserves the ABI's callee-saved registers across the switch.
    unsafe { libos_thread_switch(save_rsp, load_rsp) }
}

/// Words of the first frame: r15, r14, r13, r12, rbx, rbp, return address, then two pad words, so the
/// trampoline runs with `rsp = top - 16` and its `call` enters `libos_thread_start` with `rsp + 8` 16-byte
/// aligned, as the ABI wants at a function's entry (System V AMD64 ABI §3.2.2).
pub const FRAME_WORDS: usize = 9;

/// Writes a new thread's first frame below `top` (16-byte aligned stack top) and returns the stack pointer to
/// [`switch`] to: the switch "returns" into the trampoline, which calls `libos_thread_start(entry, arg)`.
///
/// # Safety
/// `[top - FRAME_WORDS * 8, top)` must be writable memory owned by the new thread's stack; `top` 16-aligned.
pub unsafe fn initial_frame(top: u64, entry: u64, arg: u64) -> u64 {
    let rsp = top - (FRAME_WORDS as u64) * 8;
    let words: [u64; FRAME_WORDS] = [0, 0, arg, entry, 0, 0, libos_thread_trampoline as *const () as u64, 0, 0];
    // SAFETY: the caller owns this range of the stack; it is 8-aligned because `top` is 16-aligned.
    unsafe { core::ptr::copy_nonoverlapping(words.as_ptr(), rsp as *mut u64, FRAME_WORDS) };
    rsp
}
