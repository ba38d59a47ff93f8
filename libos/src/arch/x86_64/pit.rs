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

/// Counts TSC ticks across `ms` milliseconds (1..=50) of PIT time. Returns `(tsc_ticks, pit_ns)` measured,
/// or `None` when the PIT does not count (absent or stuck).
pub fn measure_tsc_ticks(ms: u32) -> Option<(u64, u64)> {
    let target = PIT_HZ * u64::from(ms.clamp(1, 50)) / 1000;
    outb(0x43, 0b0011_0000); // channel 0, lobyte/hibyte, mode 0, binary
    outb(0x40, 0xff);
    outb(0x40, 0xff);
    let first = read_count();
    let tsc0 = rdtsc();
    let limit = tsc0 + (1u64 << 33);
    loop {
        let now = read_count();
        let elapsed = u64::from(first.wrapping_sub(now));
        let t = rdtsc();
        if elapsed >= target {
            return Some((t - tsc0, elapsed * 1_000_000_000 / PIT_HZ));
        }
        if t > limit {
            return None;
        }
    }
}
