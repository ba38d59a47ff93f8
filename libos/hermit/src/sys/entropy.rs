//! `sys_read_entropy`: random bytes from a ChaCha20 stream (see `crate::entropy`) keyed at first use from
//! RDSEED, else RDRAND, else TSC timing.
//! Source: Intel SDM Vol. 1 §7.3.17 (RDRAND/RDSEED, CPUID.01H:ECX[30], CPUID.(EAX=07H):EBX[18]).
// `#[no_mangle]` counts as unsafe code: every function here is a symbol std links against. No `unsafe` block
// here; the caller's pointers go through `crate::user` (`sys::tests` checks).
#![allow(unsafe_code)]

use super::{call, len};
use crate::entropy::ChaCha20;
use crate::errno::Errno;
use crate::user;
use spin::Mutex;

/// `getrandom`-style flags this call accepts (`GRND_NONBLOCK`, `GRND_RANDOM`: both meaningless here).
const KNOWN_FLAGS: u32 = 0b11;

static STREAM: Mutex<Option<ChaCha20>> = Mutex::new(None);

#[cfg(target_os = "none")]
fn hardware_word() -> Option<u64> {
    libos::arch::x86_64::cpu::hardware_random_u64()
}

#[cfg(not(target_os = "none"))]
fn hardware_word() -> Option<u64> {
    None
}

/// 44 seed bytes: hardware random words, or TSC readings around short busy loops when there are none.
fn seed() -> [u8; 44] {
    let mut out = [0u8; 44];
    let mut weak = false;
    for chunk in out.chunks_mut(8) {
        let w = hardware_word().unwrap_or_else(|| {
            weak = true;
            let t0 = libos::time::uptime_ns();
            let mut x = t0;
            for _ in 0..(t0 & 0xff) {
                x = x.rotate_left(7) ^ libos::time::uptime_ns();
            }
            x ^ libos::time::uptime_ns().rotate_left(32)
        });
        chunk.copy_from_slice(&w.to_le_bytes()[..chunk.len()]);
    }
    if weak {
        log::warn!("std: no RDSEED/RDRAND: random numbers are seeded from timing only (not for cryptography)");
    }
    out
}

/// Fills `len` bytes at `buf` with random data; returns `len`. Errors: `EINVAL` for unknown `flags` or a
/// length over `isize::MAX`, `EFAULT`.
#[no_mangle]
pub extern "C" fn sys_read_entropy(buf: *mut u8, n: usize, flags: u32) -> isize {
    call(|| {
        if flags & !KNOWN_FLAGS != 0 {
            return Err(Errno::EINVAL);
        }
        let out = user::slice_mut(buf, n)?;
        STREAM.lock().get_or_insert_with(|| ChaCha20::new(&seed())).fill(out);
        len(n)
    })
}
