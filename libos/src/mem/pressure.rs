//! Memory pressure: how short the kernel heap is of free bytes, so the network stack and servers shed load before
//! an allocation fails (which ends the VM with [`crate::EXIT_OUT_OF_MEMORY`]). Two levels, each a share of the
//! heap with a floor in bytes:
//!
//! | level | free heap below | who sheds |
//! |---|---|---|
//! | [`Pressure::Low`] | max([`LOW_FLOOR_BYTES`], total / [`LOW_DIVISOR`]) | servers answer new connections 503 with `Connection: close`; the network stack keeps one listening socket per port |
//! | [`Pressure::Critical`] | max([`CRITICAL_FLOOR_BYTES`], total / [`CRITICAL_DIVISOR`]) | the network stack makes no new sockets: SYNs to a listening port are answered RST |
//!
//! "Free" is the heap's bytes minus its live allocations; fragmentation is not counted, hence the margins. The
//! heap's total and free bytes leave out what a balloon driver gave the hypervisor (`balloon`): a guest ballooned
//! down to its floor is a smaller guest, not one short of memory.
#![forbid(unsafe_code)]

/// Below this many free heap bytes (or [`LOW_DIVISOR`]th of the heap, whichever is larger) memory is low.
pub const LOW_FLOOR_BYTES: u64 = 256 * 1024;
/// Memory is low below `total / LOW_DIVISOR` free heap bytes (or [`LOW_FLOOR_BYTES`]).
pub const LOW_DIVISOR: u64 = 4;
/// Below this many free heap bytes (or [`CRITICAL_DIVISOR`]th of the heap, whichever is larger) memory is critical.
pub const CRITICAL_FLOOR_BYTES: u64 = 128 * 1024;
/// Memory is critical below `total / CRITICAL_DIVISOR` free heap bytes (or [`CRITICAL_FLOOR_BYTES`]).
pub const CRITICAL_DIVISOR: u64 = 8;

/// How short of memory the heap is; ordered, so `p >= Pressure::Low` means "low or worse".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Pressure {
    /// Enough free heap: serve everything.
    Normal,
    /// Free heap under the low threshold: refuse new work politely (HTTP 503).
    Low,
    /// Free heap under the critical threshold: refuse new connections outright (TCP RST).
    Critical,
}

/// The level for a heap of `total_bytes` with `free_bytes` not allocated.
pub fn classify(total_bytes: u64, free_bytes: u64) -> Pressure {
    if free_bytes < CRITICAL_FLOOR_BYTES.max(total_bytes / CRITICAL_DIVISOR) {
        Pressure::Critical
    } else if free_bytes < LOW_FLOOR_BYTES.max(total_bytes / LOW_DIVISOR) {
        Pressure::Low
    } else {
        Pressure::Normal
    }
}

/// The kernel heap's level now. On the host, where there is no kernel heap, the level [`simulate`] set
/// ([`Pressure::Normal`] unless set), so the shedding of the network stack and servers is unit-tested.
pub fn current() -> Pressure {
    #[cfg(target_os = "none")]
    {
        // Against the memory the guest has now: ballooned pages are the hypervisor's (the heap counts them
        // allocated), pages it gave back are free.
        let s = super::heap::stats();
        let (ballooned, returned) = super::balloon::global::held_bytes();
        classify(s.total_bytes.saturating_sub(ballooned), s.free_bytes().saturating_add(returned))
    }
    #[cfg(not(target_os = "none"))]
    match SIMULATED.load(core::sync::atomic::Ordering::Relaxed) {
        0 => Pressure::Normal,
        1 => Pressure::Low,
        _ => Pressure::Critical,
    }
}

/// The level [`current`] reports on the host (0 normal, 1 low, 2 critical).
#[cfg(not(target_os = "none"))]
static SIMULATED: core::sync::atomic::AtomicU8 = core::sync::atomic::AtomicU8::new(0);

/// Host tests only: makes [`current`] report `p` (the process-wide level; tests that set it run serially).
#[cfg(not(target_os = "none"))]
pub fn simulate(p: Pressure) {
    SIMULATED.store(p as u8, core::sync::atomic::Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_heaps_use_the_floors() {
        let total = 512 * 1024;
        assert_eq!(classify(total, 300 * 1024), Pressure::Normal);
        assert_eq!(classify(total, 255 * 1024), Pressure::Low);
        assert_eq!(classify(total, 127 * 1024), Pressure::Critical);
        assert_eq!(classify(total, 0), Pressure::Critical);
    }

    #[test]
    fn large_heaps_use_their_share() {
        let total = 256 << 20;
        assert_eq!(classify(total, 65 << 20), Pressure::Normal);
        assert_eq!(classify(total, 63 << 20), Pressure::Low);
        assert_eq!(classify(total, 31 << 20), Pressure::Critical);
        assert!(Pressure::Critical > Pressure::Low && Pressure::Low > Pressure::Normal);
    }
}
