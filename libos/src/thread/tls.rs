//! Thread-local storage blocks for threads of a program linked with a `PT_TLS` segment (Rust `std` uses
//! `#[thread_local]` with the initial-exec model): x86-64 ELF TLS variant II — the block sits just below the
//! thread pointer, the thread pointer is the FS base, and the word at the thread pointer points to itself.
//! Source: Drepper, "ELF Handling For Thread-Local Storage" §2 (variant II) and §4.3/§4.4 (x86-64 initial-
//! and local-exec: `%fs:-offset`, `mov %fs:0` for the thread pointer); System V AMD64 ABI §3.4.6.
#![forbid(unsafe_code)]

use alloc::vec::Vec;
use core::fmt;

/// The program's TLS initialisation image, from its `PT_TLS` segment: `init` is `.tdata` (`p_filesz`
/// bytes), `mem_size` adds the zeroed `.tbss` (`p_memsz`, bytes), `align` is `p_align` (a power of two).
#[derive(Debug, Clone, Copy)]
pub struct TlsTemplate {
    /// Initial contents (`.tdata`), copied into every block.
    pub init: &'static [u8],
    /// Block size in bytes (`.tdata` + `.tbss`); at least `init.len()`.
    pub mem_size: usize,
    /// Block alignment in bytes (power of two, at most [`MAX_ALIGN`]).
    pub align: usize,
}

/// Largest TLS alignment supported (bytes): blocks are built from chunks of this alignment.
pub const MAX_ALIGN: usize = 128;
/// Bytes reserved at and above the thread pointer (the self-pointer, then zeros).
pub const TCB_BYTES: usize = 64;

/// Errors of [`TlsLayout::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsError {
    /// `align` is not a power of two or exceeds [`MAX_ALIGN`].
    BadAlign(usize),
    /// `init` is longer than `mem_size`.
    InitTooLong {
        /// Bytes of the initialisation image (`.tdata`).
        init: usize,
        /// Bytes of the whole TLS block (`.tdata` + `.tbss`).
        mem_size: usize,
    },
    /// The block would not fit in memory.
    TooLarge(usize),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadAlign(a) => write!(f, "TLS alignment {a} is not a power of two up to {MAX_ALIGN}"),
            Self::InitTooLong { init, mem_size } => {
                write!(f, "TLS image of {init} bytes is larger than the {mem_size}-byte TLS block")
            }
            Self::TooLarge(n) => write!(f, "TLS block of {n} bytes is too large"),
        }
    }
}

/// Where things go in a block: the TLS data from 0 (the image, then `.tbss` zeros, then padding up to
/// `tp_offset`), the thread pointer at `tp_offset`, [`TCB_BYTES`] above it. All in bytes from the block's start, which is `align`-aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsLayout {
    /// Total bytes of the block.
    pub size: usize,
    /// Alignment of the block's start (bytes).
    pub align: usize,
    /// Offset of the thread pointer: `mem_size` rounded up to `align` (variant II: the data starts that far
    /// below the thread pointer).
    pub tp_offset: usize,
}

impl TlsLayout {
    /// The layout for `t`. Errors: [`TlsError`].
    pub fn new(t: &TlsTemplate) -> Result<Self, TlsError> {
        if !t.align.is_power_of_two() || t.align > MAX_ALIGN {
            return Err(TlsError::BadAlign(t.align));
        }
        if t.init.len() > t.mem_size {
            return Err(TlsError::InitTooLong { init: t.init.len(), mem_size: t.mem_size });
        }
        let tp_offset = t.mem_size.checked_next_multiple_of(t.align).ok_or(TlsError::TooLarge(t.mem_size))?;
        let size = tp_offset.checked_add(TCB_BYTES).ok_or(TlsError::TooLarge(t.mem_size))?;
        Ok(Self { size, align: t.align, tp_offset })
    }
}

#[derive(Clone, Copy)]
#[repr(C, align(128))]
struct Chunk([u8; MAX_ALIGN]);

/// One thread's TLS block; the thread pointer ([`TlsBlock::thread_pointer`]) goes into the FS base.
pub struct TlsBlock {
    chunks: Vec<Chunk>,
    tp_offset: usize,
}

impl TlsBlock {
    /// A block for `t`: the image, zeros for `.tbss`, the self-pointer at the thread pointer. Errors:
    /// [`TlsError`].
    pub fn new(t: &TlsTemplate) -> Result<Self, TlsError> {
        let layout = TlsLayout::new(t)?;
        let chunks = alloc::vec![Chunk([0; MAX_ALIGN]); layout.size.div_ceil(MAX_ALIGN)];
        let mut block = Self { chunks, tp_offset: layout.tp_offset };
        // The data starts at `tp - round_up(mem_size, align)`, the block's start; padding (if any) follows the
        // `.tbss` zeros, right below the thread pointer (Drepper §3.4.2, `tlsoffset` of the first module).
        block.write(0, t.init);
        let tp = block.thread_pointer() as u64;
        block.write(layout.tp_offset, &tp.to_le_bytes());
        Ok(block)
    }

    fn write(&mut self, at: usize, data: &[u8]) {
        for (i, &b) in data.iter().enumerate() {
            let o = at + i;
            self.chunks[o / MAX_ALIGN].0[o % MAX_ALIGN] = b;
        }
    }

    /// The thread pointer (address) for the FS base.
    pub fn thread_pointer(&self) -> usize {
        self.chunks.as_ptr() as usize + self.tp_offset
    }

    /// Byte `i` of the block (for tests and diagnostics); `None` past its end.
    pub fn byte(&self, i: usize) -> Option<u8> {
        self.chunks.get(i / MAX_ALIGN).map(|c| c.0[i % MAX_ALIGN])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static IMAGE: [u8; 5] = [1, 2, 3, 4, 5];

    #[test]
    fn layout_rounds_the_block_to_its_alignment() {
        let t = TlsTemplate { init: &IMAGE, mem_size: 20, align: 16 };
        assert_eq!(TlsLayout::new(&t), Ok(TlsLayout { size: 32 + TCB_BYTES, align: 16, tp_offset: 32 }));
        let t = TlsTemplate { init: &[], mem_size: 0, align: 1 };
        assert_eq!(TlsLayout::new(&t).map(|l| l.tp_offset), Ok(0));
    }

    #[test]
    fn bad_templates_are_errors() {
        assert_eq!(TlsLayout::new(&TlsTemplate { init: &IMAGE, mem_size: 8, align: 24 }), Err(TlsError::BadAlign(24)));
        assert_eq!(
            TlsLayout::new(&TlsTemplate { init: &IMAGE, mem_size: 8, align: 256 }),
            Err(TlsError::BadAlign(256))
        );
        assert_eq!(
            TlsLayout::new(&TlsTemplate { init: &IMAGE, mem_size: 4, align: 8 }),
            Err(TlsError::InitTooLong { init: 5, mem_size: 4 })
        );
        assert_eq!(
            TlsLayout::new(&TlsTemplate { init: &[], mem_size: usize::MAX - 3, align: 8 }),
            Err(TlsError::TooLarge(usize::MAX - 3))
        );
    }

    #[test]
    fn block_holds_image_zeros_and_self_pointer() {
        let t = TlsTemplate { init: &IMAGE, mem_size: 20, align: 16 };
        let b = TlsBlock::new(&t).unwrap();
        let tp = b.thread_pointer();
        assert_eq!(tp % 16, 0, "the thread pointer keeps the block's alignment");
        let bytes: alloc::vec::Vec<u8> = (0..40).map(|i| b.byte(i).unwrap()).collect();
        // mem_size 20 rounds to 32: data at tp - 32 = block start, image first, then .tbss zeros and padding.
        assert_eq!(&bytes[0..5], &IMAGE);
        assert!(bytes[5..32].iter().all(|&x| x == 0));
        assert_eq!(&bytes[32..40], &(tp as u64).to_le_bytes(), "fs:0 holds the thread pointer");
    }
}
