//! `sys_read_entropy`: random bytes from a ChaCha20 stream (see `crate::entropy`) keyed at first use from
//! RDSEED, else RDRAND, else TSC timing.
//! Source: Intel SDM Vol. 1 §7.3.17 (RDRAND/RDSEED, CPUID.01H:ECX[30], CPUID.(EAX=07H):EBX[18]).

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
    let rdseed = libos::arch::x86_64::cpu::cpuid(7, 0)[1] & (1 << 18) != 0;
    let rdrand = libos::arch::x86_64::cpu::cpuid(1, 0)[2] & (1 << 30) != 0;
    for _ in 0..10 {
        let (v, ok): (u64, u8);
        if rdseed {
            // SAFETY: CPUID says RDSEED exists; it only writes the output registers and flags.
            unsafe { core::arch::asm!("rdseed {}", "setc {}", out(reg) v, out(reg_byte) ok, options(nomem, nostack)) };
        } else if rdrand {
            // SAFETY: CPUID says RDRAND exists; as above.
            unsafe { core::arch::asm!("rdrand {}", "setc {}", out(reg) v, out(reg_byte) ok, options(nomem, nostack)) };
        } else {
            return None;
        }
        if ok != 0 {
            return Some(v);
        }
    }
    None
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
