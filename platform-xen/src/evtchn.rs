//! Event channels, 2-level ABI: the pending and mask bitmaps in the shared-info page, the per-vCPU selector
//! word and upcall flag, the scan an upcall performs, and the binding of a port to the `libos::irq::WakeSlot`
//! of the tasks waiting on it. Sending, allocating and unmasking through Xen go through [`EventChannelOps`], so
//! drivers and their tests do not depend on hypercalls.
//! Source: Xen `xen/include/public/xen.h` (`struct shared_info`: `evtchn_pending`, `evtchn_mask`;
//! `struct vcpu_info`: `evtchn_upcall_pending`, `evtchn_pending_sel` and the order in which a guest clears
//! them), `event_channel.h` (`EVTCHNOP_*`, `EVTCHN_2L_NR_CHANNELS`).
#![forbid(unsafe_code)]

use crate::abi::{shared_info as si, DomId, XenErrno, EVTCHN_2L_NR_CHANNELS};
use crate::shared::SharedPage;
use core::sync::atomic::{AtomicU32, Ordering};
use libos::irq::WakeSlot;

pub use crate::abi::EvtchnPort;

/// What drivers need from Xen's event-channel operations (`EVTCHNOP_*`). The guest implements it with
/// hypercalls; tests with a backend peer.
pub trait EventChannelOps: Send + Sync {
    /// `EVTCHNOP_send`: notify the remote end of `port`.
    fn send(&self, port: EvtchnPort) -> Result<(), XenErrno>;
    /// `EVTCHNOP_alloc_unbound`: a fresh port that domain `remote` may bind.
    fn alloc_unbound(&self, remote: DomId) -> Result<EvtchnPort, XenErrno>;
    /// `EVTCHNOP_close`.
    fn close(&self, port: EvtchnPort) -> Result<(), XenErrno>;
}

/// Byte offset of `port`'s word in a bitmap and its bit; `None` outside the 2-level range.
fn bit_pos(EvtchnPort(port): EvtchnPort) -> Option<(usize, u64)> {
    (port < EVTCHN_2L_NR_CHANNELS).then(|| ((port / 64) as usize * 8, 1u64 << (port % 64)))
}

/// Sets the mask bit of every port (done once at boot, before the upcall is enabled: nothing arrives for ports
/// nobody listens to).
pub fn mask_all(shared: &SharedPage) {
    for w in 0..64 {
        shared.u64_at(si::EVTCHN_MASK + w * 8).store(u64::MAX, Ordering::SeqCst);
    }
}

/// Sets `port`'s mask bit. Ports outside the 2-level range are ignored.
pub fn mask(shared: &SharedPage, port: EvtchnPort) {
    if let Some((off, bit)) = bit_pos(port) {
        shared.u64_at(si::EVTCHN_MASK + off).fetch_or(bit, Ordering::SeqCst);
    }
}

/// Clears `port`'s mask bit. Returns true when the port was already pending: Xen did not raise the upcall for
/// that event (it was masked) and, while the pending bit stays set, raises none for later events either. The
/// mask bit is then set again and the caller must issue `EVTCHNOP_unmask`, which clears it and raises the
/// upcall — Xen re-raises only when it finds the mask bit set (`evtchn_2l_unmask`; Linux's
/// `evtchn_2l_unmask` re-masks for the same reason).
pub fn unmask(shared: &SharedPage, port: EvtchnPort) -> bool {
    let Some((off, bit)) = bit_pos(port) else { return false };
    let mask = shared.u64_at(si::EVTCHN_MASK + off);
    mask.fetch_and(!bit, Ordering::SeqCst);
    if shared.u64_at(si::EVTCHN_PENDING + off).load(Ordering::SeqCst) & bit == 0 {
        return false;
    }
    mask.fetch_or(bit, Ordering::SeqCst);
    true
}

/// Whether `port` is pending.
pub fn is_pending(shared: &SharedPage, port: EvtchnPort) -> bool {
    bit_pos(port).is_some_and(|(off, bit)| shared.u64_at(si::EVTCHN_PENDING + off).load(Ordering::SeqCst) & bit != 0)
}

/// The upcall scan for `vcpu`: clears `evtchn_upcall_pending` *before* looking (so an event arriving during the
/// scan raises a new upcall), takes the selector word, and for each selected word clears and reports every
/// pending, unmasked port in ascending order. Returns how many ports were reported.
pub fn scan(shared: &SharedPage, vcpu: usize, mut handle: impl FnMut(EvtchnPort)) -> usize {
    let vi = vcpu * si::VCPU_INFO_SIZE;
    let mut n = 0;
    loop {
        shared.u8_at(vi + si::VCPU_UPCALL_PENDING).store(0, Ordering::SeqCst);
        let mut sel = shared.u64_at(vi + si::VCPU_PENDING_SEL).swap(0, Ordering::SeqCst);
        if sel == 0 {
            return n;
        }
        while sel != 0 {
            let word = sel.trailing_zeros() as usize;
            sel &= sel - 1;
            let pending = shared.u64_at(si::EVTCHN_PENDING + word * 8);
            let mask = shared.u64_at(si::EVTCHN_MASK + word * 8).load(Ordering::SeqCst);
            let mut bits = pending.load(Ordering::SeqCst) & !mask;
            while bits != 0 {
                let b = bits.trailing_zeros();
                bits &= bits - 1;
                // Clear before handling: a new event during the handler sets it again.
                pending.fetch_and(!(1u64 << b), Ordering::SeqCst);
                handle(EvtchnPort(word as u32 * 64 + b));
                n += 1;
            }
        }
    }
}

/// Most ports with wake-up slots at once (xenstore, console, and two per NIC/disk with room to spare).
pub const MAX_SLOTS: usize = 32;

const FREE: u32 = u32::MAX;

/// A port's binding to the tasks it wakes: the port (or free) and the [`WakeSlot`] its upcalls wake. Drivers
/// hold the `WakeSlot` (persistent waker for a device's task, one-shot waiters for replies); only the binding is
/// Xen-specific.
pub struct PortSlot {
    port: AtomicU32,
    wake: WakeSlot,
}

impl PortSlot {
    const fn new() -> Self {
        Self { port: AtomicU32::new(FREE), wake: WakeSlot::new() }
    }

    /// The port this slot serves.
    pub fn port(&self) -> EvtchnPort {
        EvtchnPort(self.port.load(Ordering::Acquire))
    }

    /// The tasks this port wakes; events delivered since the slot was bound are its [`WakeSlot::events`].
    pub fn wake_slot(&self) -> &WakeSlot {
        &self.wake
    }
}

static SLOTS: [PortSlot; MAX_SLOTS] = [const { PortSlot::new() }; MAX_SLOTS];

/// Error of [`bind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindError {
    /// All [`MAX_SLOTS`] slots are taken.
    NoSlot {
        /// The port that could not be bound.
        port: EvtchnPort,
    },
    /// The port is outside the 2-level ABI's range.
    BadPort {
        /// The port.
        port: EvtchnPort,
    },
}

impl core::fmt::Display for BindError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NoSlot { port } => write!(f, "event channel {port}: all {MAX_SLOTS} wake-up slots are in use"),
            Self::BadPort { port } => {
                write!(f, "event channel {port} is outside the 2-level range 0..{EVTCHN_2L_NR_CHANNELS}")
            }
        }
    }
}

/// The wake-up slot for `port`, claiming a free one when the port has none yet. Errors: [`BindError`].
pub fn bind(port: EvtchnPort) -> Result<&'static PortSlot, BindError> {
    if port.0 >= EVTCHN_2L_NR_CHANNELS {
        return Err(BindError::BadPort { port });
    }
    if let Some(s) = slot(port) {
        return Ok(s);
    }
    SLOTS
        .iter()
        .find(|s| s.port.compare_exchange(FREE, port.0, Ordering::AcqRel, Ordering::Acquire).is_ok())
        .ok_or(BindError::NoSlot { port })
}

/// The slot bound to `port`, if any.
pub fn slot(port: EvtchnPort) -> Option<&'static PortSlot> {
    SLOTS.iter().find(|s| s.port() == port)
}

/// Wakes whoever waits on `port` (upcall dispatch). Returns false for a port nobody bound.
pub fn dispatch(port: EvtchnPort) -> bool {
    match slot(port) {
        Some(s) => {
            s.wake.wake();
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use alloc::sync::Arc;
    use alloc::task::Wake;
    use core::task::Waker;
    use std::vec;
    use EvtchnPort as P;

    struct Count(std::sync::atomic::AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// What Xen does to raise `port` for vCPU 0 (`evtchn_2l_set_pending`).
    fn raise(p: &SharedPage, port: u32) {
        let (off, bit) = bit_pos(P(port)).expect("port");
        let was = p.u64_at(si::EVTCHN_PENDING + off).fetch_or(bit, Ordering::SeqCst) & bit != 0;
        let masked = p.u64_at(si::EVTCHN_MASK + off).load(Ordering::SeqCst) & bit != 0;
        if !was && !masked {
            p.u64_at(si::VCPU_PENDING_SEL).fetch_or(1 << (port / 64), Ordering::SeqCst);
            p.u8_at(si::VCPU_UPCALL_PENDING).store(1, Ordering::SeqCst);
        }
    }

    /// What Xen does for `EVTCHNOP_unmask` (`evtchn_2l_unmask`): raises the upcall only if it clears a set mask
    /// bit of a pending port.
    fn xen_unmask(p: &SharedPage, port: u32) {
        let (off, bit) = bit_pos(P(port)).expect("port");
        let was_masked = p.u64_at(si::EVTCHN_MASK + off).fetch_and(!bit, Ordering::SeqCst) & bit != 0;
        let pending = p.u64_at(si::EVTCHN_PENDING + off).load(Ordering::SeqCst) & bit != 0;
        if was_masked && pending {
            let sel = p.u64_at(si::VCPU_PENDING_SEL).fetch_or(1 << (port / 64), Ordering::SeqCst);
            if sel & (1 << (port / 64)) == 0 {
                p.u8_at(si::VCPU_UPCALL_PENDING).store(1, Ordering::SeqCst);
            }
        }
    }

    #[test]
    fn event_pending_while_masked_is_delivered_after_unmask() {
        let p = SharedPage::new().expect("page");
        mask_all(&p);
        // The backend notifies before the port is unmasked: pending, but no upcall.
        raise(&p, 7);
        assert_eq!(p.u8_at(si::VCPU_UPCALL_PENDING).load(Ordering::SeqCst), 0);
        assert!(unmask(&p, P(7)), "pending: the caller must re-raise");
        assert!(!unmask(&p, P(8)), "nothing pending on port 8");
        xen_unmask(&p, 7);
        assert_eq!(p.u8_at(si::VCPU_UPCALL_PENDING).load(Ordering::SeqCst), 1, "EVTCHNOP_unmask raised the upcall");
        let mut seen = vec![];
        scan(&p, 0, |port| seen.push(port));
        assert_eq!(seen, [P(7)]);
        // Later events on the port raise upcalls again (the pending bit no longer swallows them).
        raise(&p, 7);
        assert_eq!(scan(&p, 0, |_| {}), 1);
    }

    #[test]
    fn scan_reports_unmasked_pending_ports_once() {
        let p = SharedPage::new().expect("page");
        mask_all(&p);
        for port in [3, 64, 4095, 100] {
            assert!(!unmask(&p, P(port)));
        }
        for port in [4095, 3, 100, 64, 5] {
            raise(&p, port);
        }
        let mut seen = vec![];
        assert_eq!(scan(&p, 0, |port| seen.push(port)), 4);
        assert_eq!(seen, [P(3), P(64), P(100), P(4095)]);
        assert_eq!(p.u8_at(0).load(Ordering::SeqCst), 0, "upcall flag cleared");
        assert!(!is_pending(&p, P(3)) && is_pending(&p, P(5)), "masked port 5 stays pending");
        // Nothing new: nothing reported.
        assert_eq!(scan(&p, 0, |_| panic!("no event")), 0);
        // Unmasking the pending port tells the caller to re-raise it.
        assert!(unmask(&p, P(5)));
        // Out-of-range ports are ignored, never index outside the bitmaps.
        mask(&p, P(4096));
        assert!(!unmask(&p, P(u32::MAX)));
        assert!(!is_pending(&p, P(99_999)));
    }

    #[test]
    fn selector_bits_without_pending_ports_are_harmless() {
        // A hostile or stale selector: words with nothing pending report nothing.
        let p = SharedPage::new().expect("page");
        p.u64_at(si::VCPU_PENDING_SEL).store(u64::MAX, Ordering::SeqCst);
        assert_eq!(scan(&p, 0, |_| panic!("no event")), 0);
    }

    #[test]
    fn slots_wake_persistent_and_one_shot_waiters() {
        let bound = bind(P(4000)).expect("slot");
        assert_eq!(bound.port(), P(4000));
        let slot = bound.wake_slot();
        assert_eq!(bind(P(4000)).map(|s| s as *const _), Ok(bound as *const _), "same port, same slot");
        assert_eq!(bind(P(5000)).err(), Some(BindError::BadPort { port: P(5000) }));
        // An event before anyone waits is remembered for the persistent waker.
        assert!(dispatch(P(4000)));
        let persistent = Arc::new(Count(Default::default()));
        slot.set_waker(&Waker::from(persistent.clone()));
        assert_eq!(persistent.0.load(Ordering::SeqCst), 1);
        let once = Arc::new(Count(Default::default()));
        slot.register(&Waker::from(once.clone()));
        slot.register(&Waker::from(once.clone()));
        assert!(dispatch(P(4000)));
        assert!(dispatch(P(4000)));
        assert_eq!(once.0.load(Ordering::SeqCst), 1, "one-shot waiters are woken once");
        assert_eq!(persistent.0.load(Ordering::SeqCst), 3);
        assert_eq!(slot.events(), 3);
        assert!(!dispatch(P(4001)));
    }
}
