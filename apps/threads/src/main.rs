//! `threads`: exercises libos kernel threads from a no_std app and prints one line per check, then `threads: all
//! ok` and exits 0 (1 on a failed check). Checks: two CPU-bound threads both progress while the executor keeps
//! its 10 ms timers (preemption); each keeps its SSE register and errno across switches; a thread sleeps on the
//! executor's timers; join; a TLS block (FS base). The argument `fault=stack-overflow` overflows a thread stack
//! into its guard page instead (the VM then exits with the exception status).
#![cfg_attr(target_os = "none", no_std, no_main)]
// The checks read and write xmm0 and the FS-relative TLS block with inline asm.
#![allow(unsafe_code)]
// The checks run only in the image; the host build (`zirvium::app!`'s hint) leaves them unused.
#![cfg_attr(not(target_os = "none"), allow(dead_code))]

extern crate alloc;

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use libos::thread::{self, SpawnOptions, Tid, TlsTemplate};
use zirvium::println;
use zirvium::time::{sleep, Duration, Instant};

zirvium::app!(run);

/// Ticks of the executor's 10 ms timer the CPU-bound threads must let through (only preemption can) before
/// they are told to stop: counted, not timed, so a loaded host that runs the VM in bursts cannot fail it.
const TICKS: u32 = 10;
/// Longest the CPU-bound threads spin (ns of uptime): without preemption the executor never ticks.
const SPIN_LIMIT_NS: u64 = 5_000_000_000;

static SPINS: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
static FAILED: AtomicBool = AtomicBool::new(false);
/// Set by the executor after its [`TICKS`] ticks: the spinners stop.
static STOP: AtomicBool = AtomicBool::new(false);
static DONE: AtomicU32 = AtomicU32::new(0);
static SLEPT_US: AtomicU64 = AtomicU64::new(0);
static JOINER_SAW: AtomicU32 = AtomicU32::new(0);
static TLS_IMAGE: [u8; 4] = [0xa1, 0xb2, 0xc3, 0xd4];

fn fail(what: core::fmt::Arguments<'_>) {
    println!("threads: FAILED: {what}");
    FAILED.store(true, Ordering::SeqCst);
}

#[cfg(target_os = "none")]
fn set_xmm0(v: u64) {
    // SAFETY: writes xmm0 only; the kernel is soft-float and never reads it, so only this thread sees it.
    unsafe { core::arch::asm!("movq xmm0, {}", in(reg) v, options(nomem, nostack)) };
}

#[cfg(target_os = "none")]
fn xmm0() -> u64 {
    let v: u64;
    // SAFETY: reads xmm0.
    unsafe { core::arch::asm!("movq {}, xmm0", out(reg) v, options(nomem, nostack)) };
    v
}

/// Spins without yielding until [`STOP`] (at most [`SPIN_LIMIT_NS`]), checking its xmm0 and errno after every
/// round.
#[cfg(target_os = "none")]
extern "C" fn spinner(i: usize) {
    let pattern = 0x5a5a_0000_0000_0000u64 | i as u64;
    set_xmm0(pattern);
    thread::set_errno(40 + i as i32);
    let end = zirvium::time::uptime_ns() + SPIN_LIMIT_NS;
    while !STOP.load(Ordering::SeqCst) && zirvium::time::uptime_ns() < end {
        SPINS[i].fetch_add(1, Ordering::Relaxed);
        if xmm0() != pattern {
            fail(format_args!("spinner {i}: xmm0 {:#x}, want {pattern:#x}", xmm0()));
            break;
        }
        if thread::errno() != 40 + i as i32 {
            fail(format_args!("spinner {i}: errno {}, want {}", thread::errno(), 40 + i));
            break;
        }
    }
    DONE.fetch_add(1, Ordering::SeqCst);
}

/// Sleeps 20 ms on the executor's timers, then joins thread `target`.
extern "C" fn sleeper(target: usize) {
    let t0 = Instant::now();
    thread::sleep_until(zirvium::time::uptime_ns() + 20_000_000);
    SLEPT_US.store(t0.elapsed().as_micros() as u64, Ordering::SeqCst);
    match thread::join(Tid(target as u32)) {
        Ok(()) => JOINER_SAW.store(DONE.load(Ordering::SeqCst), Ordering::SeqCst),
        Err(e) => fail(format_args!("join: {e}")),
    }
    DONE.fetch_add(1, Ordering::SeqCst);
}

/// Reads its TLS block through FS: the self-pointer at fs:0 and the image right below the thread pointer.
#[cfg(target_os = "none")]
extern "C" fn tls_reader(_: usize) {
    let (tp, word): (u64, u32);
    // SAFETY: FS points at this thread's TLS block (mem_size 12, align 8: the image starts at fs:-16).
    unsafe {
        core::arch::asm!("mov {}, fs:0", out(reg) tp, options(nostack, readonly));
        core::arch::asm!("mov {:e}, fs:[-16]", out(reg) word, options(nostack, readonly));
    }
    if tp == 0 || word != u32::from_le_bytes(TLS_IMAGE) {
        fail(format_args!("TLS: fs:0 = {tp:#x}, fs:-16 = {word:#x}"));
    }
    DONE.fetch_add(1, Ordering::SeqCst);
}

/// Recurses with 512-byte frames until the guard page below the thread's stack stops it.
extern "C" fn overflow(depth: usize) {
    let frame = core::hint::black_box([depth as u8; 512]);
    if core::hint::black_box(depth) != usize::MAX {
        overflow(depth + 1);
    }
    core::hint::black_box(frame);
}

fn spawn(entry: extern "C" fn(usize), arg: usize, tls: Option<TlsTemplate>) -> Option<Tid> {
    match thread::spawn(entry, arg, SpawnOptions { stack_bytes: 64 * 1024, tls }) {
        Ok(t) => Some(t),
        Err(e) => {
            fail(format_args!("spawn: {e}"));
            None
        }
    }
}

async fn wait_done(n: u32, limit: Duration) -> bool {
    let t0 = Instant::now();
    while DONE.load(Ordering::SeqCst) < n {
        if t0.elapsed() > limit {
            return false;
        }
        sleep(Duration::from_millis(5)).await;
    }
    true
}

#[cfg(target_os = "none")]
async fn run() -> i32 {
    if zirvium::env::args().any(|a| a == "fault=stack-overflow") {
        spawn(overflow, 0, None);
        sleep(Duration::from_secs(5)).await;
        println!("threads: the overflow did not fault");
        return 1;
    }
    // Preemption: two spinners never yield; the executor must still get its 10 ms ticks, then stops them.
    let a = spawn(spinner, 0, None);
    spawn(spinner, 1, None);
    let mut ticks = 0;
    let mut late_us = 0;
    while ticks < TICKS && DONE.load(Ordering::SeqCst) < 2 {
        let t = Instant::now();
        sleep(Duration::from_millis(10)).await;
        late_us = late_us.max(t.elapsed().as_micros() as u64);
        ticks += 1;
    }
    STOP.store(true, Ordering::SeqCst);
    let stopped = wait_done(2, Duration::from_secs(10)).await;
    let (s0, s1) = (SPINS[0].load(Ordering::SeqCst), SPINS[1].load(Ordering::SeqCst));
    println!("threads: spinners {s0} and {s1} rounds, executor ticked {ticks} times (slowest 10 ms tick {late_us} us)");
    if s0 == 0 || s1 == 0 || ticks < TICKS || !stopped {
        fail(format_args!("preemption: both spinners and the executor must progress"));
    } else {
        println!("threads: preemption ok");
    }
    if !FAILED.load(Ordering::SeqCst) {
        println!("threads: sse and errno kept across switches");
    }
    // Sleep and join: a thread sleeps on the executor's timers, then joins the first spinner.
    if let Some(a) = a {
        spawn(sleeper, a.0 as usize, None);
        if !wait_done(3, Duration::from_secs(5)).await {
            fail(format_args!("sleeper did not finish"));
        }
        let us = SLEPT_US.load(Ordering::SeqCst);
        println!("threads: slept 20 ms (measured {us} us)");
        if us < 20_000 {
            fail(format_args!("a 20 ms sleep returned after {us} us"));
        }
        if JOINER_SAW.load(Ordering::SeqCst) >= 2 {
            println!("threads: join ok");
        }
    }
    // TLS: the FS base points at a block built from the template.
    let tls = TlsTemplate { init: &TLS_IMAGE, mem_size: 12, align: 8 };
    spawn(tls_reader, 0, Some(tls));
    if wait_done(4, Duration::from_secs(5)).await && !FAILED.load(Ordering::SeqCst) {
        println!("threads: tls ok");
    }
    println!("threads: {} live after all exited", thread::live());
    if FAILED.load(Ordering::SeqCst) {
        return 1;
    }
    println!("threads: all ok");
    0
}

#[cfg(not(target_os = "none"))]
async fn run() -> i32 {
    0
}
