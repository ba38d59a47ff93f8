//! Panics print `panic at FILE:LINE:COL: MESSAGE` and a frame-pointer backtrace on the console, then end the
//! VM with [`crate::EXIT_PANIC`]. A panic right after the heap refused an allocation — `alloc`'s `memory
//! allocation of N bytes failed` (stable Rust has no `#[alloc_error_handler]`) or a crate's own abort — is
//! reported as out of memory instead — size, alignment, the heap's figures and the backtrace to the call site —
//! and ends the VM with [`crate::EXIT_OUT_OF_MEMORY`]. Images are built with frame pointers (`-C force-frame-pointers=yes`); the
//! host symbolises the frames (`images::symbols`).
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

/// The message `alloc`'s default error handler panics with (library/alloc/src/alloc.rs, `__rdl_oom`).
pub const OOM_MESSAGE_PREFIX: &str = "memory allocation of ";

/// Whether `args` formats to text starting with `prefix`, without allocating.
pub fn starts_with(args: core::fmt::Arguments<'_>, prefix: &str) -> bool {
    struct Prefix<'a> {
        rest: &'a str,
        ok: bool,
    }
    impl core::fmt::Write for Prefix<'_> {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            let n = s.len().min(self.rest.len());
            if s.as_bytes()[..n] != self.rest.as_bytes()[..n] {
                self.ok = false;
                return Err(core::fmt::Error);
            }
            self.rest = &self.rest[n..];
            Ok(())
        }
    }
    let mut w = Prefix { rest: prefix, ok: true };
    let _ = core::fmt::write(&mut w, args);
    w.ok && w.rest.is_empty()
}

#[cfg(all(target_os = "none", not(test)))]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    crate::arch::x86_64::cpu::disable_interrupts();
    let p = crate::console::emergency_print;
    // A panic right after the heap refused an allocation (none has succeeded since) is that failure: alloc's
    // `handle_alloc_error`, or a crate that aborts on its own (async-task's "aborting the process").
    if let Some(f) = crate::mem::heap::last_failure() {
        p(format_args!(
            "\nout of memory: allocation of {} bytes (align {}) failed; heap {} bytes, {} allocated, {} free; \
             call site: the first backtrace frame outside alloc\n",
            f.size,
            f.align,
            f.heap.total_bytes,
            f.heap.allocated_bytes,
            f.heap.free_bytes()
        ));
        if !starts_with(format_args!("{}", info.message()), OOM_MESSAGE_PREFIX) {
            if let Some(l) = info.location() {
                p(format_args!("  raised as a panic at {}:{}: {}\n", l.file(), l.line(), info.message()));
            }
        }
        p(format_args!("backtrace:\n"));
        print_backtrace(crate::arch::x86_64::cpu::frame_pointer(), 0);
        crate::exit(crate::EXIT_OUT_OF_MEMORY)
    }
    match info.location() {
        Some(l) => p(format_args!("\npanic at {}:{}:{}: {}\n", l.file(), l.line(), l.column(), info.message())),
        None => p(format_args!("\npanic at <unknown location>: {}\n", info.message())),
    }
    p(format_args!("backtrace:\n"));
    print_backtrace(crate::arch::x86_64::cpu::frame_pointer(), 0);
    crate::exit(crate::EXIT_PANIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_the_oom_message() {
        let size = 2048;
        assert!(starts_with(format_args!("memory allocation of {size} bytes failed"), OOM_MESSAGE_PREFIX));
        assert!(starts_with(format_args!("{}{}", "memory ", "allocation of 1 bytes failed"), OOM_MESSAGE_PREFIX));
        assert!(!starts_with(format_args!("memory alloc"), OOM_MESSAGE_PREFIX));
        assert!(!starts_with(format_args!("index out of bounds"), OOM_MESSAGE_PREFIX));
    }
}
