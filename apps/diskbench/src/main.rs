//! `diskbench`: checks and measures the first disk (`zirvium::dev::block_devices()`, e.g. virtio-blk).
//!
//! 1. Writes a pattern over a region of `mb=N` MiB (default 8) starting 1 MiB into the disk, flushes, reads it
//!    back and compares byte for byte: prints `verify ok: N bytes`, or the first mismatch and exits 1.
//! 2. Reads one sector past the end and expects `BlockError::OutOfRange` (exit 1 otherwise).
//! 3. Measures sequential write (1 MiB requests, then a flush), sequential read (1 MiB requests) and random
//!    4 KiB reads from `qd=N` tasks at once (default 8) for `rand-ms=N` ms (default 1000), and prints
//!    `diskbench: seq-write X MB/s seq-read Y MB/s rand-read-4k Z IOPS (qd 8)` (MB = 10^6 bytes).
//!
//! The pattern (the contract the integration test checks in the disk image): the 8-byte little-endian word at
//! absolute disk offset `8·w` is `(w + 1) · 0x9E37_79B9_7F4A_7C15` (wrapping), so every word differs and a
//! sector written to the wrong place is caught. A read-only disk skips the writes (a write must be refused with
//! `BlockError::ReadOnly`) and measures reads only. Exit 0 on success, 1 on any failure, 2 for bad arguments.
#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::time::Duration;
use zirvium::dev::{BlockDevice, BlockError};
use zirvium::println;
use zirvium::time::Instant;

zirvium::app!(run);

/// Where the region starts (bytes from the start of the disk); sector 0 and the rest of the first MiB stay
/// untouched (a partition table or filesystem header would live there).
pub const REGION_OFFSET: u64 = 1 << 20;
/// Request size of the sequential phases (bytes).
pub const SEQ_CHUNK: usize = 1 << 20;
/// Random read size (bytes), unless the sector is larger.
pub const RAND_IO: usize = 4096;
/// The pattern's multiplier (the 64-bit golden ratio, odd, so consecutive words never repeat).
pub const PATTERN_K: u64 = 0x9E37_79B9_7F4A_7C15;

/// The app's arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Args {
    /// Region size (MiB).
    pub mb: u64,
    /// Random-read tasks in flight.
    pub qd: usize,
    /// Random-read duration (ms).
    pub rand_ms: u64,
}

impl Args {
    /// Parses `mb=N`, `qd=N`, `rand-ms=N`. Errors: the text to print for an unknown argument or a bad value.
    pub fn parse<'a>(args: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut a = Args { mb: 8, qd: 8, rand_ms: 1000 };
        for arg in args {
            let bad = |what: &str| format!("diskbench: `{arg}`: expected {what}");
            match arg.split_once('=') {
                Some(("mb", v)) => a.mb = v.parse().ok().filter(|n| *n >= 1).ok_or_else(|| bad("mb=N, N >= 1"))?,
                Some(("qd", v)) => {
                    a.qd = v.parse().ok().filter(|n| (1..=64).contains(n)).ok_or_else(|| bad("qd=N, 1..=64"))?
                }
                Some(("rand-ms", v)) => {
                    a.rand_ms = v.parse().ok().filter(|n| *n >= 1).ok_or_else(|| bad("rand-ms=N, N >= 1"))?
                }
                _ => return Err(format!("diskbench: unknown argument `{arg}` (known: mb=N qd=N rand-ms=N)")),
            }
        }
        Ok(a)
    }
}

/// Fills `buf` with the pattern of the disk bytes starting at absolute offset `at` (a multiple of 8).
pub fn fill_pattern(at: u64, buf: &mut [u8]) {
    for (i, w) in buf.chunks_mut(8).enumerate() {
        let word = (at / 8 + i as u64 + 1).wrapping_mul(PATTERN_K).to_le_bytes();
        w.copy_from_slice(&word[..w.len()]);
    }
}

/// The first byte where `got` differs from the pattern at absolute offset `at`: `(offset, expected, got)`.
pub fn first_mismatch(at: u64, got: &[u8]) -> Option<(u64, u8, u8)> {
    let mut want = vec![0u8; got.len()];
    fill_pattern(at, &mut want);
    want.iter().zip(got).position(|(w, g)| w != g).map(|i| (at + i as u64, want[i], got[i]))
}

/// `bytes` over `elapsed` in MB/s (10^6 bytes per second) with one decimal, e.g. "123.4".
pub fn mb_per_s(bytes: u64, elapsed: Duration) -> String {
    let ns = elapsed.as_nanos().max(1);
    let tenths = u128::from(bytes) * 10_000 / ns;
    format!("{}.{}", tenths / 10, tenths % 10)
}

/// `ops` over `elapsed` per second, rounded down.
pub fn per_second(ops: u64, elapsed: Duration) -> u64 {
    (u128::from(ops) * 1_000_000_000 / elapsed.as_nanos().max(1)) as u64
}

/// xorshift64 (Marsaglia 2003): a few random block numbers without a crate.
pub struct XorShift(u64);

impl XorShift {
    /// A generator from a non-zero seed (0 is replaced).
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// The next value below `n` (`n` > 0; the small modulo bias does not matter here).
    pub fn below(&mut self, n: u64) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x % n
    }
}

/// The disk and the region under test.
struct Bench {
    dev: Arc<dyn BlockDevice>,
    /// Sector size (bytes).
    ss: u64,
    /// Region length (bytes, a multiple of the sector size).
    len: u64,
}

impl Bench {
    fn sector(&self, offset: u64) -> u64 {
        (REGION_OFFSET + offset) / self.ss
    }

    /// Writes the pattern over the region in [`SEQ_CHUNK`] requests; returns the time spent in the requests
    /// (pattern generation excluded) including the final flush.
    async fn write_region(&self) -> Result<Duration, BlockError> {
        let mut buf = vec![0u8; SEQ_CHUNK];
        let mut busy = Duration::ZERO;
        let mut off = 0;
        while off < self.len {
            let n = SEQ_CHUNK.min((self.len - off) as usize);
            fill_pattern(REGION_OFFSET + off, &mut buf[..n]);
            let t = Instant::now();
            self.dev.write(self.sector(off), &buf[..n]).await?;
            busy += t.elapsed();
            off += n as u64;
        }
        let t = Instant::now();
        self.dev.flush().await?;
        Ok(busy + t.elapsed())
    }

    /// Reads the region in [`SEQ_CHUNK`] requests; with `verify`, compares each with the pattern and returns
    /// the first mismatch. Returns the time spent in the requests.
    async fn read_region(&self, verify: bool) -> Result<(Duration, Option<(u64, u8, u8)>), BlockError> {
        let mut buf = vec![0u8; SEQ_CHUNK];
        let mut busy = Duration::ZERO;
        let mut off = 0;
        while off < self.len {
            let n = SEQ_CHUNK.min((self.len - off) as usize);
            let t = Instant::now();
            self.dev.read(self.sector(off), &mut buf[..n]).await?;
            busy += t.elapsed();
            if verify {
                if let Some(m) = first_mismatch(REGION_OFFSET + off, &buf[..n]) {
                    return Ok((busy, Some(m)));
                }
            }
            off += n as u64;
        }
        Ok((busy, None))
    }

    /// Random reads of `io` bytes inside the region from `qd` tasks for `ms` ms; each read's first word is
    /// checked against the pattern. Returns (reads, elapsed, pattern mismatches).
    async fn random_reads(&self, io: usize, qd: usize, ms: u64) -> Result<(u64, Duration, u64), BlockError> {
        let blocks = self.len / io as u64;
        let start = Instant::now();
        let deadline = start.checked_add(Duration::from_millis(ms)).unwrap_or(start);
        let tasks: Vec<_> = (0..qd)
            .map(|i| {
                let dev = self.dev.clone();
                let ss = self.ss;
                zirvium::task::spawn(async move {
                    let mut rng = XorShift::new(0x2545_F491_4F6C_DD1D ^ (i as u64 + 1));
                    let mut buf = vec![0u8; io];
                    let (mut done, mut bad) = (0u64, 0u64);
                    while Instant::now() < deadline {
                        let at = REGION_OFFSET + rng.below(blocks) * io as u64;
                        dev.read(at / ss, &mut buf).await?;
                        if first_mismatch(at, &buf[..8]).is_some() {
                            bad += 1;
                        }
                        done += 1;
                    }
                    Ok::<_, BlockError>((done, bad))
                })
            })
            .collect();
        let (mut done, mut bad) = (0, 0);
        for t in tasks {
            let (d, b) = t.await?;
            done += d;
            bad += b;
        }
        Ok((done, start.elapsed(), bad))
    }
}

async fn run() -> i32 {
    let args = match Args::parse(zirvium::env::args()) {
        Ok(a) => a,
        Err(e) => {
            println!("{e}");
            return 2;
        }
    };
    match bench(args).await {
        Ok(()) => 0,
        Err(e) => {
            println!("diskbench: {e}");
            1
        }
    }
}

async fn bench(args: Args) -> Result<(), String> {
    let Some(dev) = zirvium::dev::block_devices().into_iter().next() else {
        return Err("no disk (attach one with `images run diskbench --disk FILE`)".into());
    };
    let info = dev.info().clone();
    let ss = u64::from(info.sector_size);
    let len = args.mb << 20;
    println!(
        "diskbench: {} {} sectors of {} bytes ({} bytes){}{}",
        info.name,
        info.capacity,
        info.sector_size,
        info.bytes(),
        if info.read_only { ", read-only" } else { "" },
        if info.flush { ", write cache (flush)" } else { "" }
    );
    if ss == 0 || !REGION_OFFSET.is_multiple_of(ss) || !len.is_multiple_of(ss) || REGION_OFFSET + len > info.bytes() {
        return Err(format!(
            "region of {len} bytes at offset {REGION_OFFSET} does not fit the disk ({} bytes, {ss}-byte sectors)",
            info.bytes()
        ));
    }
    println!("diskbench: region offset {REGION_OFFSET} bytes length {len} bytes");
    let b = Bench { dev: dev.clone(), ss, len };
    let e = |what: &str| {
        let what = String::from(what);
        move |err: BlockError| format!("{what}: {err}")
    };

    if info.read_only {
        match dev.write(b.sector(0), &vec![0u8; ss as usize]).await {
            Err(BlockError::ReadOnly { .. }) => println!("read-only: write refused"),
            other => return Err(format!("write to a read-only disk returned {other:?}, expected ReadOnly")),
        }
    } else {
        b.write_region().await.map_err(e("writing the pattern"))?;
        let (_, mismatch) = b.read_region(true).await.map_err(e("reading the pattern back"))?;
        if let Some((at, want, got)) = mismatch {
            return Err(format!(
                "verify failed: first mismatch at byte offset {at} (sector {}): expected {want:#04x}, got {got:#04x}",
                at / ss
            ));
        }
        println!("verify ok: {len} bytes");
    }

    let mut one = vec![0u8; ss as usize];
    match dev.read(info.capacity, &mut one).await {
        Err(BlockError::OutOfRange { .. }) => println!("out-of-range read refused: OutOfRange"),
        other => return Err(format!("read at sector {} returned {other:?}, expected OutOfRange", info.capacity)),
    }

    let write = if info.read_only {
        String::from("n/a")
    } else {
        let t = b.write_region().await.map_err(e("sequential write"))?;
        mb_per_s(len, t)
    };
    let (t, _) = b.read_region(false).await.map_err(e("sequential read"))?;
    let read = mb_per_s(len, t);
    let io = RAND_IO.max(ss as usize);
    let (ops, t, bad) = b.random_reads(io, args.qd, args.rand_ms).await.map_err(e("random read"))?;
    if bad > 0 && !info.read_only {
        return Err(format!("{bad} of {ops} random reads returned data that is not the pattern"));
    }
    println!(
        "diskbench: seq-write {write} MB/s seq-read {read} MB/s rand-read-{}k {} IOPS (qd {})",
        io / 1024,
        per_second(ops, t),
        args.qd
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_defaults_and_errors() {
        assert_eq!(Args::parse([]), Ok(Args { mb: 8, qd: 8, rand_ms: 1000 }));
        assert_eq!(Args::parse(["mb=2", "qd=4", "rand-ms=50"]), Ok(Args { mb: 2, qd: 4, rand_ms: 50 }));
        assert_eq!(Args::parse(["mb=0"]), Err("diskbench: `mb=0`: expected mb=N, N >= 1".into()));
        assert!(Args::parse(["qd=65"]).is_err());
        assert!(Args::parse(["size=1"]).unwrap_err().contains("unknown argument `size=1`"));
    }

    #[test]
    fn pattern_words_depend_on_the_absolute_offset() {
        let mut a = [0u8; 24];
        fill_pattern(REGION_OFFSET, &mut a);
        assert_eq!(a[..8], ((REGION_OFFSET / 8 + 1).wrapping_mul(PATTERN_K)).to_le_bytes());
        let mut b = [0u8; 16];
        fill_pattern(REGION_OFFSET + 8, &mut b);
        assert_eq!(a[8..], b, "a buffer starting later continues the same pattern");
        assert_eq!(first_mismatch(REGION_OFFSET, &a), None);
        a[13] ^= 1;
        assert_eq!(first_mismatch(REGION_OFFSET, &a), Some((REGION_OFFSET + 13, a[13] ^ 1, a[13])));
        assert!(first_mismatch(0, &b).is_some(), "the same bytes at another offset do not match");
    }

    #[test]
    fn rates() {
        assert_eq!(mb_per_s(8 << 20, Duration::from_millis(100)), "83.8");
        assert_eq!(per_second(500, Duration::from_millis(250)), 2000);
        assert_eq!(per_second(1, Duration::ZERO), 1_000_000_000);
        let mut r = XorShift::new(0);
        assert!((0..100).map(|_| r.below(10)).all(|x| x < 10));
    }
}
