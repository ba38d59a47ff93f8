//! Console and logging: every byte goes to the console sinks (COM1 16550 at boot, Xen's debug port 0xE9 when
//! CPUID shows Xen; a platform may add one with [`add_sink`], e.g. the Xen PV console), `log` records get a boot
//! timestamp, and `print!`/`println!` serve apps.
//! Source: `log` crate facade; 16550 UART through the `uart_16550` crate (PC COM1 at I/O port 0x3F8); Xen
//! `xen/arch/x86/hvm/hvm.c` (`hvm_print_line`: HVM/PVH guests' writes to port 0xE9, logged per line as `(dN)`).
#![allow(unsafe_code)]

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, Ordering};
use spin::Mutex;

/// A console sink: receives text as it is printed.
pub type Sink = fn(&str);

const MAX_SINKS: usize = 4;
/// Set once each, lock-free to read (a panic may print while a sink is being added).
static SINKS: [spin::Once<Sink>; MAX_SINKS] = [const { spin::Once::new() }; MAX_SINKS];
static LOCK: Mutex<()> = Mutex::new(());
static PANICKING: AtomicBool = AtomicBool::new(false);

/// Adds a sink (at most 4; further ones are ignored and reported with `false`).
pub fn add_sink(sink: Sink) -> bool {
    for slot in &SINKS {
        let mut taken = false;
        slot.call_once(|| {
            taken = true;
            sink
        });
        if taken {
            return true;
        }
    }
    false
}

fn emit(s: &str) {
    for f in SINKS.iter().filter_map(spin::Once::get) {
        f(s);
    }
}

struct Writer;

impl Write for Writer {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        emit(s);
        Ok(())
    }
}

/// Prints formatted text on the console (used by `print!`). Lines from different tasks or interrupt handlers
/// never interleave within one call.
pub fn print(args: fmt::Arguments<'_>) {
    if PANICKING.load(Ordering::Relaxed) {
        let _ = Writer.write_fmt(args);
        return;
    }
    crate::arch_without_interrupts(|| {
        let _g = LOCK.lock();
        let _ = Writer.write_fmt(args);
    });
}

/// Prints without taking the console lock: for panic and exception reports, which may interrupt a holder.
pub fn emergency_print(args: fmt::Arguments<'_>) {
    PANICKING.store(true, Ordering::Relaxed);
    let _ = Writer.write_fmt(args);
}

/// Prints to the console, like `std::print!`.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::print(format_args!($($arg)*)) };
}

/// Prints a line to the console, like `std::println!`.
#[macro_export]
macro_rules! println {
    () => { $crate::console::print(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::console::print(format_args!("{}\n", format_args!($($arg)*))) };
}

struct Logger;

static LOGGER: Logger = Logger;

impl log::Log for Logger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &log::Record<'_>) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let ns = crate::time::uptime_ns();
        let target = r.target().split("::").next().unwrap_or("");
        print(format_args!(
            "[{:5}.{:06} {:5} {}] {}\n",
            ns / 1_000_000_000,
            (ns / 1000) % 1_000_000,
            r.level(),
            target,
            r.args()
        ));
    }

    fn flush(&self) {}
}

/// Installs the logger at `level`. Called once at boot.
pub fn init_log(level: log::LevelFilter) {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

/// COM1: the boot console.
#[cfg(target_os = "none")]
pub mod serial {
    use spin::Mutex;
    use uart_16550::{Config, Uart16550};

    static COM1: Mutex<Option<Uart16550<uart_16550::backend::PioBackend>>> = Mutex::new(None);

    fn sink(s: &str) {
        // Console callers hold the console lock (or are panicking), so contention here only comes from a
        // panic that interrupted a writer: then write anyway.
        let mut guard = match COM1.try_lock() {
            Some(g) => g,
            // SAFETY-free fallback: force the lock (single CPU; the holder was interrupted and will not resume).
            None => {
                // SAFETY: single vCPU; the interrupted holder is not running concurrently.
                unsafe { COM1.force_unlock() };
                COM1.lock()
            }
        };
        if let Some(uart) = guard.as_mut() {
            for chunk in s.split_inclusive('\n') {
                if let Some(line) = chunk.strip_suffix('\n') {
                    uart.send_bytes_exact(line.as_bytes());
                    uart.send_bytes_exact(b"\r\n");
                } else {
                    uart.send_bytes_exact(chunk.as_bytes());
                }
            }
        }
    }

    /// Xen's debug console: each byte written to I/O port 0xE9 by an HVM/PVH guest goes to Xen's log.
    fn xen_debug_sink(s: &str) {
        for b in s.bytes() {
            crate::arch::x86_64::cpu::outb(0xe9, b);
        }
    }

    /// Whether CPUID names Xen at leaf 0x4000_0000 or 0x4000_0100 (the latter with viridian). Source: Xen
    /// `arch-x86/cpuid.h` (signature "XenVMMXenVMM" in EBX, ECX, EDX).
    fn xen_present() -> bool {
        use crate::arch::x86_64::cpu::cpuid;
        cpuid(1, 0)[2] & crate::hypervisor::CPUID1_ECX_HYPERVISOR != 0
            && [0x4000_0000, 0x4000_0100]
                .iter()
                .any(|&leaf| cpuid(leaf, 0)[1..] == [0x566e_6558, 0x6558_4d4d, 0x4d4d_566e])
    }

    /// Adds port 0xE9 as a sink when running under Xen (a PVH domU has no COM1), then initialises COM1
    /// (I/O port 0x3F8, 115200 8N1) and adds it as a console sink. COM1 is silently skipped when the UART is
    /// absent (the loopback check fails): output then only reaches other sinks.
    pub fn init() {
        if xen_present() {
            super::add_sink(xen_debug_sink);
        }
        // SAFETY: 0x3F8 is the PC COM1 port block; libos is its only user.
        let Ok(mut uart) = (unsafe { Uart16550::new_port(0x3f8) }) else { return };
        if uart.init(Config::default()).is_err() {
            return;
        }
        *COM1.lock() = Some(uart);
        super::add_sink(sink);
    }
}
