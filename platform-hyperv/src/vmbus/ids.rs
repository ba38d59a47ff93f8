//! The identifiers VMBus hands around as bare `u32`s on the wire, as newtypes so a relid is never passed where a
//! GPADL handle belongs. Source: Linux `include/linux/hyperv.h` (`child_relid`, `gpadl`/`ringbuffer_gpadlhandle`).
#![forbid(unsafe_code)]

use core::fmt;

/// A channel's relative id (`child_relid`): names the channel in channel messages and, from VMBus 2.4, is its
/// event flag number in the SIEFP page and the interrupt page. Displays as the decimal number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct RelId(pub u32);

impl RelId {
    /// The event flag (bit) number of the channel (VMBus ≥ 2.4 flags each channel by its relid).
    pub fn event_flag(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for RelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A GPADL handle (Guest Physical Address Descriptor List): the guest-chosen name of a set of guest pages the
/// host maps (ring buffers, netvsc receive and send buffers). Displays in hex, as Linux logs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct GpadlHandle(pub u32);

impl fmt::Display for GpadlHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl fmt::LowerHex for GpadlHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    #[test]
    fn ids_display_as_logged() {
        assert_eq!(format!("channel {}", RelId(14)), "channel 14");
        assert_eq!(RelId(70).event_flag(), 70);
        assert_eq!(format!("{}", GpadlHandle(0xe1e10)), "0xe1e10");
        assert_eq!(format!("{:#x}", GpadlHandle(0xe1e10)), "0xe1e10");
    }
}
