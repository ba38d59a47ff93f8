//! `hello`: prints `hello from Zirvium on <platform>`, its arguments, the wall-clock time, sleeps 10 ms on a
//! timer and exits 0. Test hooks: the argument `fault=pagefault|divide|write-text|panic|stack-overflow`
//! triggers that failure on purpose, to check the exception and panic reports; `sleeps=N` sleeps 10 ms N more
//! times and prints how late the timer woke it (`N sleeps of 10 ms: late min/mean/max A/B/C us`); `memory=S`
//! stays up S seconds and prints the memory figures (`memory: total T free F ballooned B bytes`) at the start and
//! whenever the balloon changes them, for the hypervisors' balloon tests.
#![allow(unsafe_code)]
#![cfg_attr(target_os = "none", no_std, no_main)]

extern crate alloc;

use alloc::vec::Vec;
use zirvium::println;
use zirvium::time::{sleep, Duration, Instant, SystemTime};

zirvium::app!(run);

async fn run() -> i32 {
    println!("hello from Zirvium on {}", zirvium::env::platform());
    let args: Vec<&str> = zirvium::env::args().collect();
    println!("args: {args:?}");
    match SystemTime::now() {
        Some(t) => println!("time: {t}"),
        None => println!("time: unknown (no wall clock)"),
    }
    if let Some(f) = args.iter().find_map(|a| a.strip_prefix("fault=")) {
        fault(f);
    }
    let t0 = Instant::now();
    sleep(Duration::from_millis(10)).await;
    println!("slept 10 ms (measured {} us)", t0.elapsed().as_micros());
    if let Some(n) = args.iter().find_map(|a| a.strip_prefix("sleeps=")).and_then(|n| n.parse::<u32>().ok()) {
        sleeps(n).await;
    }
    if let Some(s) = args.iter().find_map(|a| a.strip_prefix("memory=")).and_then(|s| s.parse::<u64>().ok()) {
        watch_memory(Duration::from_secs(s)).await;
    }
    0
}

/// Prints the memory figures now and, for `how_long`, each time the ballooned amount changes (checked every
/// 100 ms).
async fn watch_memory(how_long: Duration) {
    let show = |m: zirvium::mem::MemStats| {
        println!("memory: total {} free {} ballooned {} bytes", m.total_bytes, m.free_bytes, m.ballooned_bytes)
    };
    let mut last = zirvium::mem::stats();
    show(last);
    let end = Instant::now() + how_long;
    while Instant::now() < end {
        sleep(Duration::from_millis(100)).await;
        let now = zirvium::mem::stats();
        if now.ballooned_bytes != last.ballooned_bytes {
            show(now);
            last = now;
        }
    }
}

/// Sleeps 10 ms `n` times and prints the minimum, mean and maximum lateness of the wake-ups (µs).
async fn sleeps(n: u32) {
    let want = Duration::from_millis(10);
    let (mut min, mut max, mut sum) = (u128::MAX, 0u128, 0u128);
    for _ in 0..n {
        let t0 = Instant::now();
        sleep(want).await;
        let late = t0.elapsed().saturating_sub(want).as_micros();
        (min, max, sum) = (min.min(late), max.max(late), sum + late);
    }
    let mean = sum / u128::from(n.max(1));
    println!("{n} sleeps of 10 ms: late min/mean/max {}/{mean}/{max} us", if n == 0 { 0 } else { min });
}

#[inline(never)]
fn fault(kind: &str) {
    match kind {
        "pagefault" => {
            // The identity map covers RAM and the 32-bit MMIO hole only, so 1 TiB is not present.
            let p = core::hint::black_box(0x100_0000_0000u64) as *const u64;
            // SAFETY: deliberately unsound: this read must fault.
            println!("read {}", unsafe { core::ptr::read_volatile(p) });
        }
        "divide" => {
            let zero = core::hint::black_box(0u32);
            let q: u32;
            // SAFETY: deliberately divides by zero to raise #DE (Rust's `/` would panic before trapping).
            unsafe { core::arch::asm!("div {0:e}", in(reg) zero, inout("eax") 1u32 => q, inout("edx") 0u32 => _) };
            println!("quotient {q}");
        }
        "write-text" => {
            let f = core::hint::black_box(fault as *const () as usize) as *mut u8;
            // SAFETY: deliberately writes to kernel text, which must fault (W^X).
            unsafe { core::ptr::write_volatile(f, 0xcc) };
            println!("wrote to text: W^X does not hold");
        }
        "stack-overflow" => {
            // Recurses until the guard page under the stack stops it (the depth check never triggers).
            fn recurse(n: u64) -> u64 {
                let buf = core::hint::black_box([n; 64]);
                if core::hint::black_box(n) == u64::MAX {
                    return buf[0];
                }
                buf[0] + recurse(n + 1)
            }
            println!("{}", recurse(0));
        }
        "panic" => panic!("panic requested by fault=panic"),
        other => println!("unknown fault kind {other:?}"),
    }
}
