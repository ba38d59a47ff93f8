//! Checked views of the fixed-size structures that ring slots carry (`netif.h` and `blkif.h` requests and
//! responses), in smoltcp's `wire/` idiom: [`SlotView`] holds the bytes and proves with
//! [`check_len`](SlotView::check_len) that no accessor can read past them; each structure is a [`SlotLayout`]
//! (its name and length) whose view type is an alias of `SlotView` with the structure's own getters and setters,
//! built on `libos::wire`.
//! Source: Xen `xen/include/public/io/ring.h` (slots hold a request/response union in place).
#![forbid(unsafe_code)]

use core::fmt;
use core::marker::PhantomData;

/// A structure that lives in a ring slot: its C name (for errors) and length in bytes.
pub trait SlotLayout {
    /// The C structure, e.g. `"netif_rx_response"`.
    const NAME: &'static str;
    /// Its size (bytes).
    const LEN: usize;
}

/// A buffer too short for the ring structure a checked view was asked to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShortBuffer {
    /// The structure, e.g. `"blkif_response"`.
    pub what: &'static str,
    /// Bytes available.
    pub len: usize,
    /// Bytes the structure needs.
    pub need: usize,
}

impl fmt::Display for ShortBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} of {} bytes is shorter than its {}-byte layout", self.what, self.len, self.need)
    }
}

/// A view of structure `L` over the bytes `T` (a slot copied out of the ring, or a buffer being filled).
pub struct SlotView<L, T> {
    buffer: T,
    layout: PhantomData<L>,
}

impl<L: SlotLayout, T: AsRef<[u8]>> SlotView<L, T> {
    /// Wraps `buffer` without checks (accessors panic on a buffer shorter than `L::LEN`).
    pub fn new_unchecked(buffer: T) -> Self {
        Self { buffer, layout: PhantomData }
    }

    /// Wraps `buffer` after [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<Self, ShortBuffer> {
        let v = Self::new_unchecked(buffer);
        v.check_len()?;
        Ok(v)
    }

    /// Checks that the buffer holds the whole structure, so no accessor panics. Errors: [`ShortBuffer`].
    pub fn check_len(&self) -> Result<(), ShortBuffer> {
        let len = self.buffer.as_ref().len();
        if len < L::LEN {
            return Err(ShortBuffer { what: L::NAME, len, need: L::LEN });
        }
        Ok(())
    }

    /// The buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The bytes, for the structure's getters.
    pub(crate) fn bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

impl<L: SlotLayout, T: AsRef<[u8]> + AsMut<[u8]>> SlotView<L, T> {
    /// The bytes, for the structure's setters.
    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }
}

impl<L: SlotLayout, T: AsRef<[u8]>> fmt::Debug for SlotView<L, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({:02x?})", L::NAME, self.buffer.as_ref())
    }
}

/// The `N`-byte wire form that `emit` writes into a zeroed buffer (a slot's padding stays zero).
pub fn to_bytes<L: SlotLayout, const N: usize>(emit: impl FnOnce(&mut SlotView<L, &mut [u8]>)) -> [u8; N] {
    let mut b = [0u8; N];
    emit(&mut SlotView::new_unchecked(&mut b[..]));
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    enum Probe {}
    impl SlotLayout for Probe {
        const NAME: &'static str = "probe";
        const LEN: usize = 8;
    }

    #[test]
    fn short_buffers_are_named() {
        assert!(SlotView::<Probe, _>::new_checked(&[0u8; 8][..]).is_ok());
        let e = SlotView::<Probe, _>::new_checked(&[0u8; 7][..]).unwrap_err();
        assert_eq!(e, ShortBuffer { what: "probe", len: 7, need: 8 });
        assert_eq!(alloc::format!("{e}"), "probe of 7 bytes is shorter than its 8-byte layout");
    }

    #[test]
    fn to_bytes_starts_from_zero() {
        let b: [u8; 8] = to_bytes::<Probe, 8>(|v| v.bytes_mut()[1] = 7);
        assert_eq!(b, [0, 7, 0, 0, 0, 0, 0, 0]);
        assert_eq!(SlotView::<Probe, _>::new_unchecked(&b[..]).into_inner(), &b[..]);
    }
}
