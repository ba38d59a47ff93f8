//! Random bytes for `sys_read_entropy` (std's `HashMap` keys, `rand`'s `OsRng`): a ChaCha20 keystream keyed
//! from RDSEED/RDRAND when the CPU has them, else from TSC readings. Without those instructions (QEMU's
//! `qemu64` model lacks them) the key comes from timing alone and is not fit for cryptography — the boot log
//! says so once. Source: RFC 8439 §2.3 (the ChaCha20 block function).
#![forbid(unsafe_code)]

/// ChaCha20 in counter mode over a 256-bit key, as a byte stream.
pub struct ChaCha20 {
    key: [u32; 8],
    nonce: [u32; 3],
    counter: u32,
    block: [u8; 64],
    used: usize,
}

fn quarter(s: &mut [u32; 16], a: usize, b: usize, c: usize, d: usize) {
    s[a] = s[a].wrapping_add(s[b]);
    s[d] = (s[d] ^ s[a]).rotate_left(16);
    s[c] = s[c].wrapping_add(s[d]);
    s[b] = (s[b] ^ s[c]).rotate_left(12);
    s[a] = s[a].wrapping_add(s[b]);
    s[d] = (s[d] ^ s[a]).rotate_left(8);
    s[c] = s[c].wrapping_add(s[d]);
    s[b] = (s[b] ^ s[c]).rotate_left(7);
}

/// The ChaCha20 block for `key`, `counter`, `nonce` (RFC 8439 §2.3), serialised little-endian.
pub fn block(key: &[u32; 8], counter: u32, nonce: &[u32; 3]) -> [u8; 64] {
    let mut init = [0u32; 16];
    init[..4].copy_from_slice(&[0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574]);
    init[4..12].copy_from_slice(key);
    init[12] = counter;
    init[13..].copy_from_slice(nonce);
    let mut s = init;
    for _ in 0..10 {
        quarter(&mut s, 0, 4, 8, 12);
        quarter(&mut s, 1, 5, 9, 13);
        quarter(&mut s, 2, 6, 10, 14);
        quarter(&mut s, 3, 7, 11, 15);
        quarter(&mut s, 0, 5, 10, 15);
        quarter(&mut s, 1, 6, 11, 12);
        quarter(&mut s, 2, 7, 8, 13);
        quarter(&mut s, 3, 4, 9, 14);
    }
    let mut out = [0u8; 64];
    for i in 0..16 {
        out[i * 4..i * 4 + 4].copy_from_slice(&s[i].wrapping_add(init[i]).to_le_bytes());
    }
    out
}

impl ChaCha20 {
    /// A stream keyed with `seed` (32 bytes of key, 12 of nonce).
    pub fn new(seed: &[u8; 44]) -> Self {
        let word = |i: usize| u32::from_le_bytes([seed[i], seed[i + 1], seed[i + 2], seed[i + 3]]);
        Self {
            key: core::array::from_fn(|i| word(i * 4)),
            nonce: core::array::from_fn(|i| word(32 + i * 4)),
            counter: 0,
            block: [0; 64],
            used: 64,
        }
    }

    /// Fills `out` with the next keystream bytes; re-keys from its own output every 2^32 blocks.
    pub fn fill(&mut self, out: &mut [u8]) {
        for b in out {
            if self.used == 64 {
                self.block = block(&self.key, self.counter, &self.nonce);
                self.counter = self.counter.wrapping_add(1);
                if self.counter == 0 {
                    self.nonce[0] = self.nonce[0].wrapping_add(1);
                }
                self.used = 0;
            }
            *b = self.block[self.used];
            self.used += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc8439_block_function_test_vector() {
        // RFC 8439 §2.3.2: key 00..1f, nonce 00:00:00:09:00:00:00:4a:00:00:00:00, block counter 1.
        let key: [u32; 8] = core::array::from_fn(|i| {
            let b = (i * 4) as u8;
            u32::from_le_bytes([b, b + 1, b + 2, b + 3])
        });
        let nonce = [0x0900_0000, 0x4a00_0000, 0];
        let out = block(&key, 1, &nonce);
        assert_eq!(
            &out[..16],
            &[0x10, 0xf1, 0xe7, 0xe4, 0xd1, 0x3b, 0x59, 0x15, 0x50, 0x0f, 0xdd, 0x1f, 0xa3, 0x20, 0x71, 0xc4]
        );
        assert_eq!(&out[60..], &[0xa2, 0x50, 0x3c, 0x4e]);
    }

    #[test]
    fn stream_continues_across_calls() {
        let mut a = ChaCha20::new(&[7; 44]);
        let mut b = ChaCha20::new(&[7; 44]);
        let mut x = [0u8; 100];
        a.fill(&mut x);
        let (mut y1, mut y2) = ([0u8; 30], [0u8; 70]);
        b.fill(&mut y1);
        b.fill(&mut y2);
        assert_eq!(&x[..30], &y1);
        assert_eq!(&x[30..], &y2);
        assert_ne!(x, [0u8; 100]);
    }
}
