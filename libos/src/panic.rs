//! Panics print `panic at FILE:LINE:COL: MESSAGE` and a frame-pointer backtrace on the console, then end the
//! VM with [`crate::EXIT_PANIC`]. Images are built with frame pointers (`-C force-frame-pointers=yes`).
#![allow(unsafe_code)]

/// Prints `rbp`-chain return addresses, numbered from `first`, at most 32, stopping at a null, misaligned or
/// non-increasing frame pointer (so a corrupt chain cannot loop or fault).
#[cfg_attr(not(target_os = "none"), allow(unused_mut))]
pub fn print_backtrace(mut rbp: u64, first: usize) {
    #[cfg(target_os = "none")]
    for i in first..first + 32 {
        if !rbp.is_multiple_of(8) || !(0x1000..=0x0000_7fff_ffff_ffff).contains(&rbp) {
            break;
        }
        // SAFETY: rbp is non-null, aligned and below the canonical hole; frames were laid out by the compiler
        // with frame pointers, and all RAM is mapped, so [rbp] and [rbp+8] are readable memory.
        let (next, ret) = unsafe { (*(rbp as *const u64), *((rbp + 8) as *const u64)) };
        if ret == 0 {
            break;
        }
        crate::console::emergency_print(format_args!("  {i}: 0x{ret:016x}\n"));
        if next <= rbp {
            break;
        }
        rbp = next;
    }
    #[cfg(not(target_os = "none"))]
    let _ = (rbp, first);
}

#[cfg(all(target_os = "none", not(test)))]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    crate::arch::x86_64::cpu::disable_interrupts();
    let p = crate::console::emergency_print;
    match info.location() {
        Some(l) => p(format_args!("\npanic at {}:{}:{}: {}\n", l.file(), l.line(), l.column(), info.message())),
        None => p(format_args!("\npanic at <unknown location>: {}\n", info.message())),
    }
    p(format_args!("backtrace:\n"));
    print_backtrace(crate::arch::x86_64::cpu::frame_pointer(), 0);
    crate::exit(crate::EXIT_PANIC)
}
