//! The partition reference clock (TLFS §12): the reference counter MSR (§12.3, 100 ns since the partition
//! started, one exit per read) and the reference TSC page (§12.7, the same time from the TSC with a scale and
//! offset the hypervisor keeps current, no exits), with the per-reading fallback from the page to the MSR.
#![forbid(unsafe_code)]

use super::{overlay_msr_value, HvError, HwAccess};
use crate::mem::Region;
use alloc::sync::Arc;

/// `HV_X64_MSR_TIME_REF_COUNT` (TLFS §12.3): partition reference counter, 100 ns units since the partition started.
pub const MSR_TIME_REF_COUNT: u32 = 0x4000_0020;
/// `HV_X64_MSR_REFERENCE_TSC` (TLFS §12.7.1): bit 0 enable, bits 63:12 the reference TSC page's GPA page number.
pub const MSR_REFERENCE_TSC: u32 = 0x4000_0021;

/// Which reference clock is in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockKind {
    /// The reference TSC page (TLFS §12.7): TSC-based, no exits.
    TscPage,
    /// The partition reference counter MSR (TLFS §12.3): one MSR read (an exit) per reading.
    ReferenceCounter,
}

/// A snapshot of the reference TSC page (TLFS §12.7.2, `HV_REFERENCE_TSC_PAGE`): `TscSequence` (u32 at 0),
/// `TscScale` (u64 at 8), `TscOffset` (i64 at 16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TscPage {
    /// Sequence number; 0 means the page is not valid and the reference counter MSR must be used.
    pub sequence: u32,
    /// Scale: reference time is `((tsc * scale) >> 64) + offset` (64.64 fixed point).
    pub scale: u64,
    /// Offset (100 ns units).
    pub offset: i64,
}

impl TscPage {
    /// Byte offset of `TscSequence` (read with an atomic load: the hypervisor updates the page live).
    pub const SEQUENCE: usize = 0;
    /// Byte offset of `TscScale`.
    pub const SCALE: usize = 8;
    /// Byte offset of `TscOffset`.
    pub const OFFSET: usize = 16;

    /// Reference time (100 ns units) at TSC value `tsc` (TLFS §12.7.3):
    /// `ReferenceTime = ((VirtualTsc * TscScale) >> 64) + TscOffset`.
    pub fn reference_time(&self, tsc: u64) -> u64 {
        let scaled = ((u128::from(tsc) * u128::from(self.scale)) >> 64) as u64;
        scaled.wrapping_add(self.offset as u64)
    }

    /// The TSC frequency (Hz) this scale implies: reference time runs at 10 MHz, so `hz = 10^7 · 2^64 / scale`.
    /// `None` for a zero scale.
    pub fn tsc_hz(&self) -> Option<u64> {
        if self.scale == 0 {
            return None;
        }
        u64::try_from((10_000_000u128 << 64) / u128::from(self.scale)).ok()
    }

    /// Loads the page's fields from `page` (atomic loads; the sequence protocol is [`read_tsc_page`]'s).
    /// Errors: a shared page access failed.
    fn load(page: &Region) -> Result<Self, HvError> {
        Ok(Self {
            sequence: page.load_u32(Self::SEQUENCE)?,
            scale: page.load_u64(Self::SCALE)?,
            offset: page.load_u64(Self::OFFSET)? as i64,
        })
    }
}

/// Reads the reference time from the TSC page in `page` with the sequence protocol of TLFS §12.7.3: read the
/// sequence, the scale and offset and the TSC, and retry while the sequence changed. Errors:
/// [`HvError::TscPageInvalid`] when the sequence is 0 (the caller then uses [`MSR_TIME_REF_COUNT`]).
pub fn read_tsc_page(page: &Region, hw: &dyn HwAccess) -> Result<u64, HvError> {
    loop {
        let snap = TscPage::load(page)?;
        if snap.sequence == 0 {
            return Err(HvError::TscPageInvalid);
        }
        let tsc = hw.rdtsc();
        if page.load_u32(TscPage::SEQUENCE)? == snap.sequence {
            return Ok(snap.reference_time(tsc));
        }
    }
}

/// The partition's reference clock: the TSC page when it is valid, else the reference counter MSR.
pub struct ReferenceClock {
    hw: Arc<dyn HwAccess>,
    page: Option<Region>,
}

impl ReferenceClock {
    /// Sets up the clock for `kind`: for [`ClockKind::TscPage`] enables the page at `page` (MSR 0x4000_0021) and
    /// falls back to the counter when the hypervisor leaves it invalid. Errors: [`HvError::MsrNotAccepted`].
    pub fn new(hw: Arc<dyn HwAccess>, kind: ClockKind, page: Option<Region>) -> Result<(Self, ClockKind), HvError> {
        if let (ClockKind::TscPage, Some(p)) = (kind, page) {
            let v = overlay_msr_value(hw.rdmsr(MSR_REFERENCE_TSC), p.gpa());
            hw.wrmsr(MSR_REFERENCE_TSC, v);
            let c = Self { hw: hw.clone(), page: Some(p) };
            if c.now_100ns_checked().is_ok() {
                return Ok((c, ClockKind::TscPage));
            }
            log::warn!("hyper-v: reference TSC page invalid after enabling; using the reference counter MSR");
        }
        Ok((Self { hw, page: None }, ClockKind::ReferenceCounter))
    }

    fn now_100ns_checked(&self) -> Result<u64, HvError> {
        match &self.page {
            Some(p) => read_tsc_page(p, &*self.hw),
            None => Ok(self.hw.rdmsr(MSR_TIME_REF_COUNT)),
        }
    }

    /// Reference time (100 ns units).
    pub fn now_100ns(&self) -> u64 {
        // The page can turn invalid (sequence 0) e.g. across live migration: fall back per reading (TLFS §12.7.3).
        self.now_100ns_checked().unwrap_or_else(|_| self.hw.rdmsr(MSR_TIME_REF_COUNT))
    }

    /// The TSC page snapshot, when the page is in use.
    pub fn tsc_page(&self) -> Option<TscPage> {
        TscPage::load(self.page.as_ref()?).ok()
    }
}

impl libos::time::ClockSource for ReferenceClock {
    fn now_ns(&self) -> u64 {
        self.now_100ns().saturating_mul(100)
    }
    fn name(&self) -> &'static str {
        if self.page.is_some() {
            "hyperv-tsc-page"
        } else {
            "hyperv-ref-counter"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::RecordedHw;
    use super::*;
    use crate::mem::host::HostMemory;
    use crate::mem::Dma;

    #[test]
    fn tsc_page_formula_matches_the_tlfs() {
        // A 2.5 GHz TSC: 4 TSC ticks per 100 ns... scale = 2^64 / 250 per tick (250 ticks per 100 ns).
        let scale = ((1u128 << 64) / 250) as u64;
        let p = TscPage { sequence: 3, scale, offset: -1000 };
        assert_eq!(p.reference_time(0), (-1000i64) as u64);
        assert_eq!(p.reference_time(2_500_000_000), 10_000_000 - 1000 - 1, "one second, scale rounded down");
        let hz = p.tsc_hz().unwrap();
        assert!((2_499_999_000..=2_500_001_000).contains(&hz), "{hz}");
        assert_eq!(TscPage { sequence: 1, scale: 0, offset: 0 }.tsc_hz(), None);
    }

    #[test]
    fn tsc_page_reading_and_fallback() {
        let mem = HostMemory::new();
        let page = mem.alloc(1).unwrap();
        let hw = Arc::new(RecordedHw::default());
        hw.msrs.lock().unwrap().insert(MSR_TIME_REF_COUNT, 777);
        *hw.tsc.lock().unwrap() = 1_000_000;
        // Sequence 0: invalid page → the counter MSR.
        let (c, kind) = ReferenceClock::new(hw.clone(), ClockKind::TscPage, Some(page.clone())).unwrap();
        assert_eq!(kind, ClockKind::ReferenceCounter);
        assert_eq!(c.now_100ns(), 777);
        // A valid page (recorded from a 2.1 GHz host).
        page.store_u32(TscPage::SEQUENCE, 5).unwrap();
        page.write_u64(TscPage::SCALE, 0x0138_1b91_e8f9_2c9b).unwrap();
        page.write_u64(TscPage::OFFSET, 0xffff_fff1_9e1b_a2f0).unwrap();
        let (c, kind) = ReferenceClock::new(hw.clone(), ClockKind::TscPage, Some(page.clone())).unwrap();
        assert_eq!(kind, ClockKind::TscPage);
        let expect = TscPage { sequence: 5, scale: 0x0138_1b91_e8f9_2c9b, offset: 0xffff_fff1_9e1b_a2f0u64 as i64 }
            .reference_time(1_000_000);
        assert_eq!(c.now_100ns(), expect);
        assert_eq!(libos::time::ClockSource::name(&c), "hyperv-tsc-page");
        let w = hw.writes.lock().unwrap().clone();
        assert!(w.contains(&(MSR_REFERENCE_TSC, page.gpa() | 1)));
        // The page turning invalid later falls back per reading.
        page.store_u32(TscPage::SEQUENCE, 0).unwrap();
        assert_eq!(c.now_100ns(), 777);
    }
}
