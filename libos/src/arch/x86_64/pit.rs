//! Legacy 8254 PIT channel 0, used only to calibrate the TSC when no hypervisor tells its frequency.
//! Channel 0's gate is always on, so this needs no port 0x61 (absent on microvm). IRQ0 stays masked.
//! Source: Intel 82C54 datasheet (counter latch command, mode 0).

use super::cpu::{inb, outb, rdtsc};
use crate::time::tsc::PIT_HZ;

fn read_count() -> u16 {
    outb(0x43, 0b0000_0000); // latch channel 0
    let lo = inb(0x40);
    let hi = inb(0x40);
    u16::from_le_bytes([lo, hi])
}

/// One PIT reading with the TSC around it: `(count, TSC midpoint, TSC spread)`.
fn sample() -> (u16, u64, u64) {
    let before = rdtsc();
    let count = read_count();
    let after = rdtsc();
    (count, before + (after - before) / 2, after - before)
}

/// The reading with the smallest TSC spread of three: a host preemption or a slow port access during one
/// reading would otherwise skew the window's edge.
fn best_sample() -> (u16, u64) {
    let mut best = sample();
    for _ in 0..2 {
        let s = sample();
        if s.2 < best.2 {
            best = s;
        }
    }
    (best.0, best.1)
}

/// Counts TSC ticks across `us` microseconds (100..=50_000) of PIT time, running `during` once right after
/// the window opened (e.g. to start another counter against the same window). Returns `(tsc_ticks, pit_ns)`
/// measured, or `None` when the PIT does not count (absent or stuck). Each edge is the TSC midpoint of a
/// PIT reading, so the error is about half a port access (~1 µs under TCG: ~0.05 % over 1 ms).
pub fn measure_tsc_ticks(us: u32, during: &mut dyn FnMut()) -> Option<(u64, u64)> {
    let target = PIT_HZ * u64::from(us.clamp(100, 50_000)) / 1_000_000;
    outb(0x43, 0b0011_0000); // channel 0, lobyte/hibyte, mode 0, binary
    outb(0x40, 0xff);
    outb(0x40, 0xff);
    let (first, tsc0) = best_sample();
    during();
    let limit = tsc0 + (1u64 << 33);
    loop {
        let now = read_count();
        let elapsed = u64::from(first.wrapping_sub(now));
        if elapsed >= target {
            let (last, tsc1) = best_sample();
            let elapsed = u64::from(first.wrapping_sub(last));
            return Some((tsc1 - tsc0, elapsed * 1_000_000_000 / PIT_HZ));
        }
        if rdtsc() > limit {
            return None;
        }
    }
}
