//! `diskbench`: checks and measures the first disk (`zirvium::dev::block_devices()`, e.g. virtio-blk), on the
//! raw device (`mode=raw`, the default) or through the VFS on its FAT filesystem at `/data` (`mode=vfs`).
//!
//! `mode=raw`:
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
//! `BlockError::ReadOnly`) and measures reads only.
//!
//! `mode=vfs` (the disk must carry FAT, e.g. from `images disk create`, mounted read-write at `/data`):
//! 1. Creates [`VFS_FILE`] with `zirvium::fs`, writes `mb=N` MiB of the pattern (word at file offset `8·w` is
//!    `(w + 1) · K`) in [`SEQ_CHUNK`] writes, then `sync_all` (data, metadata and a device flush): the timed
//!    sequential write, file creation and cluster allocation included.
//! 2. Reads the file back and compares (`verify ok: N bytes (vfs)`), then reads it again timed (sequential read).
//! 3. Random 4 KiB reads at 4 KiB-aligned file offsets (seek + read) for `rand-ms=N` ms, one at a time: a VFS
//!    disk operation blocks every task, so more tasks would only take turns (`qd=` is refused in this mode).
//! 4. Prints `diskbench: vfs seq-write X MB/s seq-read Y MB/s rand-read-4k Z IOPS (qd 1)`. The file stays.
//!
//! Large whole-sector transfers bypass the filesystem's sector cache (`fs::cache`), so neither mode measures a
//! data cache. Exit 0 on success, 1 on any failure, 2 for bad arguments.
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
use zirvium::fs::{self, File, SeekFrom};
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
/// The file `mode=vfs` writes and reads.
pub const VFS_FILE: &str = "/data/diskbench.bin";
/// Default random-read tasks in flight (`mode=raw`).
pub const DEFAULT_QD: usize = 8;

/// What diskbench measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The first disk's sectors, through `BlockDevice`.
    Raw,
    /// A file on `/data` (FAT on the first disk), through `zirvium::fs`.
    Vfs,
}

/// The app's arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Args {
    /// Raw device or file through the VFS.
    pub mode: Mode,
    /// Region (or file) size (MiB).
    pub mb: u64,
    /// Random-read tasks in flight (1 in [`Mode::Vfs`]).
    pub qd: usize,
    /// Random-read duration (ms).
    pub rand_ms: u64,
}

impl Args {
    /// Parses `mode=raw|vfs`, `mb=N`, `qd=N`, `rand-ms=N`. Errors: the text to print for an unknown argument,
    /// a bad value, or `qd=` with `mode=vfs`.
    pub fn parse<'a>(args: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut a = Args { mode: Mode::Raw, mb: 8, qd: DEFAULT_QD, rand_ms: 1000 };
        let mut qd_given = false;
        for arg in args {
            let bad = |what: &str| format!("diskbench: `{arg}`: expected {what}");
            match arg.split_once('=') {
                Some(("mode", "raw")) => a.mode = Mode::Raw,
                Some(("mode", "vfs")) => a.mode = Mode::Vfs,
                Some(("mode", _)) => return Err(bad("mode=raw or mode=vfs")),
                Some(("mb", v)) => a.mb = v.parse().ok().filter(|n| *n >= 1).ok_or_else(|| bad("mb=N, N >= 1"))?,
                Some(("qd", v)) => {
                    a.qd = v.parse().ok().filter(|n| (1..=64).contains(n)).ok_or_else(|| bad("qd=N, 1..=64"))?;
                    qd_given = true;
                }
                Some(("rand-ms", v)) => {
                    a.rand_ms = v.parse().ok().filter(|n| *n >= 1).ok_or_else(|| bad("rand-ms=N, N >= 1"))?
                }
                _ => {
                    return Err(format!(
                        "diskbench: unknown argument `{arg}` (known: mode=raw|vfs mb=N qd=N rand-ms=N)"
                    ))
                }
            }
        }
        if a.mode == Mode::Vfs {
            if qd_given {
                return Err("diskbench: qd=N applies to mode=raw only (the VFS serves one request at a time)".into());
            }
            a.qd = 1;
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

/// A byte that is not the pattern: `(offset, expected, got)`.
pub type Mismatch = (u64, u8, u8);

/// The first byte where `got` differs from the pattern at absolute offset `at`.
pub fn first_mismatch(at: u64, got: &[u8]) -> Option<Mismatch> {
    let mut want = vec![0u8; got.len()];
    fill_pattern(at, &mut want);
    want.iter().zip(got).position(|(w, g)| w != g).map(|i| (at + i as u64, want[i], got[i]))
}

/// `bytes` over `elapsed` in MB/s (10^6 bytes per second), rounded down: one decimal from 1 MB/s ("123.4"),
/// three below ("0.031"), so slow configurations still show a figure.
pub fn mb_per_s(bytes: u64, elapsed: Duration) -> String {
    let ns = elapsed.as_nanos().max(1);
    let thousandths = u128::from(bytes) * 1_000_000 / ns;
    if thousandths >= 1000 {
        format!("{}.{}", thousandths / 1000, thousandths % 1000 / 100)
    } else {
        format!("0.{thousandths:03}")
    }
}

/// `ops` over `elapsed` per second as text, rounded down, with one decimal below 100 ("7.5").
pub fn per_second_text(ops: u64, elapsed: Duration) -> String {
    let tenths = (u128::from(ops) * 10_000_000_000 / elapsed.as_nanos().max(1)) as u64;
    if tenths >= 1000 {
        format!("{}", tenths / 10)
    } else {
        format!("{}.{}", tenths / 10, tenths % 10)
    }
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
    async fn read_region(&self, verify: bool) -> Result<(Duration, Option<Mismatch>), BlockError> {
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
    let result = match args.mode {
        Mode::Raw => bench(args).await,
        Mode::Vfs => bench_vfs(args),
    };
    match result {
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
        per_second_text(ops, t),
        args.qd
    );
    Ok(())
}

/// Checks that `/data` is a writable directory. Errors: what to attach.
fn check_data() -> Result<(), String> {
    let how = "attach a FAT disk: `images disk create FILE --size 64M`, then `images run diskbench --disk FILE`";
    match fs::metadata("/data") {
        Ok(m) if m.is_dir() && !m.read_only() => Ok(()),
        Ok(_) => Err(format!("mode=vfs needs a writable /data, but it is read-only; {how}")),
        Err(fs::Error::NotFound) => Err(format!("mode=vfs: /data is not mounted (no disk, or no FAT on it); {how}")),
        Err(e) => Err(format!("mode=vfs: /data: {e}")),
    }
}

/// Creates [`VFS_FILE`] and writes `len` bytes of the pattern in [`SEQ_CHUNK`] writes, then `sync_all`.
/// Returns the time spent in the file calls (pattern generation excluded).
fn vfs_write(len: u64) -> Result<Duration, fs::Error> {
    let mut buf = vec![0u8; SEQ_CHUNK];
    let t = Instant::now();
    let mut file = File::create(VFS_FILE)?;
    let mut busy = t.elapsed();
    let mut off = 0;
    while off < len {
        let n = SEQ_CHUNK.min((len - off) as usize);
        fill_pattern(off, &mut buf[..n]);
        let t = Instant::now();
        file.write_all(&buf[..n])?;
        busy += t.elapsed();
        off += n as u64;
    }
    let t = Instant::now();
    file.sync_all()?;
    Ok(busy + t.elapsed())
}

/// Reads [`VFS_FILE`] from the start in [`SEQ_CHUNK`] reads; with `verify`, returns the first byte that is not
/// the pattern. Errors also when the file is not `len` bytes long. Returns the time spent in the file calls.
fn vfs_read(len: u64, verify: bool) -> Result<(Duration, Option<Mismatch>), String> {
    let mut buf = vec![0u8; SEQ_CHUNK];
    let t = Instant::now();
    let mut file = File::open(VFS_FILE).map_err(|e| format!("opening {VFS_FILE}: {e}"))?;
    let size = file.metadata().map_err(|e| format!("{VFS_FILE}: {e}"))?.len();
    if size != len {
        return Err(format!("{VFS_FILE} is {size} bytes, expected {len}"));
    }
    let mut busy = t.elapsed();
    let mut off = 0;
    while off < len {
        let n = SEQ_CHUNK.min((len - off) as usize);
        let t = Instant::now();
        file.read_exact(&mut buf[..n]).map_err(|e| format!("reading {VFS_FILE} at {off}: {e}"))?;
        busy += t.elapsed();
        if verify {
            if let Some(m) = first_mismatch(off, &buf[..n]) {
                return Ok((busy, Some(m)));
            }
        }
        off += n as u64;
    }
    Ok((busy, None))
}

/// Random `io`-byte reads at `io`-aligned offsets of [`VFS_FILE`] (`len` bytes) for `ms` ms, one at a time;
/// each read's first word is checked against the pattern. Returns (reads, elapsed, mismatches).
fn vfs_random_reads(len: u64, io: usize, ms: u64) -> Result<(u64, Duration, u64), fs::Error> {
    let blocks = len / io as u64;
    let mut file = File::open(VFS_FILE)?;
    let mut rng = XorShift::new(0x2545_F491_4F6C_DD1D);
    let mut buf = vec![0u8; io];
    let (mut done, mut bad) = (0u64, 0u64);
    let start = Instant::now();
    let deadline = start.checked_add(Duration::from_millis(ms)).unwrap_or(start);
    while Instant::now() < deadline {
        let at = rng.below(blocks) * io as u64;
        file.seek(SeekFrom::Start(at))?;
        file.read_exact(&mut buf)?;
        if first_mismatch(at, &buf[..8]).is_some() {
            bad += 1;
        }
        done += 1;
    }
    Ok((done, start.elapsed(), bad))
}

/// `mode=vfs`: see the module docs.
fn bench_vfs(args: Args) -> Result<(), String> {
    check_data()?;
    let len = args.mb << 20;
    if len < RAND_IO as u64 {
        return Err(format!("mode=vfs: a {len}-byte file is smaller than one {RAND_IO}-byte random read"));
    }
    println!("diskbench: vfs file {VFS_FILE} length {len} bytes");
    let write = vfs_write(len).map_err(|e| format!("writing {VFS_FILE}: {e}"))?;
    let (_, mismatch) = vfs_read(len, true)?;
    if let Some((at, want, got)) = mismatch {
        return Err(format!(
            "verify failed: first mismatch in {VFS_FILE} at byte offset {at}: expected {want:#04x}, got {got:#04x}"
        ));
    }
    println!("verify ok: {len} bytes (vfs)");
    let (read, _) = vfs_read(len, false)?;
    let (ops, t, bad) =
        vfs_random_reads(len, RAND_IO, args.rand_ms).map_err(|e| format!("random reads of {VFS_FILE}: {e}"))?;
    if bad > 0 {
        return Err(format!("{bad} of {ops} random reads of {VFS_FILE} returned data that is not the pattern"));
    }
    println!(
        "diskbench: vfs seq-write {} MB/s seq-read {} MB/s rand-read-{}k {} IOPS (qd 1)",
        mb_per_s(len, write),
        mb_per_s(len, read),
        RAND_IO / 1024,
        per_second_text(ops, t)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_defaults_and_errors() {
        assert_eq!(Args::parse([]), Ok(Args { mode: Mode::Raw, mb: 8, qd: 8, rand_ms: 1000 }));
        assert_eq!(
            Args::parse(["mb=2", "qd=4", "rand-ms=50"]),
            Ok(Args { mode: Mode::Raw, mb: 2, qd: 4, rand_ms: 50 })
        );
        assert_eq!(Args::parse(["mb=0"]), Err("diskbench: `mb=0`: expected mb=N, N >= 1".into()));
        assert!(Args::parse(["qd=65"]).is_err());
        assert!(Args::parse(["size=1"]).unwrap_err().contains("unknown argument `size=1`"));
        assert_eq!(Args::parse(["mode=vfs", "mb=32"]), Ok(Args { mode: Mode::Vfs, mb: 32, qd: 1, rand_ms: 1000 }));
        assert_eq!(Args::parse(["mode=vfs", "mode=raw"]).map(|a| (a.mode, a.qd)), Ok((Mode::Raw, 8)));
        assert_eq!(Args::parse(["mode=ext4"]), Err("diskbench: `mode=ext4`: expected mode=raw or mode=vfs".into()));
        assert!(Args::parse(["mode=vfs", "qd=4"]).unwrap_err().contains("applies to mode=raw only"));
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
        assert_eq!(per_second_text(1, Duration::ZERO), "1000000000");
        assert_eq!(mb_per_s(1_000_000, Duration::from_secs(1)), "1.0");
        assert_eq!(mb_per_s(31_500, Duration::from_secs(1)), "0.031");
        assert_eq!(mb_per_s(0, Duration::from_secs(1)), "0.000");
        assert_eq!(per_second_text(500, Duration::from_millis(250)), "2000");
        assert_eq!(per_second_text(2, Duration::from_secs(3)), "0.6");
        assert_eq!(per_second_text(999, Duration::from_secs(10)), "99.9");
        let mut r = XorShift::new(0);
        assert!((0..100).map(|_| r.below(10)).all(|x| x < 10));
    }
}
