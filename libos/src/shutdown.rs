//! Graceful shutdown requests from the host: Xen's `control/shutdown` xenstore node
//! (`xen/include/public/io/xs_wire.h`, values "poweroff"/"reboot"), the Hyper-V shutdown integration service,
//! or ACPI power button. The platform calls [`request`]; the app awaits [`requested`] and returns from `main`
//! when it has finished its work, which ends the VM.

use core::sync::atomic::{AtomicU8, Ordering};
use core::task::{Poll, Waker};
use spin::Mutex;

/// What the host asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownKind {
    /// Power off.
    Poweroff,
    /// Reboot (the VM exits; the toolstack restarts it if configured to).
    Reboot,
}

static STATE: AtomicU8 = AtomicU8::new(0);
static WAKERS: Mutex<alloc::vec::Vec<Waker>> = Mutex::new(alloc::vec::Vec::new());

/// Records a shutdown request and wakes every task awaiting [`requested`]. The first request wins.
pub fn request(kind: ShutdownKind) {
    let v = match kind {
        ShutdownKind::Poweroff => 1,
        ShutdownKind::Reboot => 2,
    };
    if STATE.compare_exchange(0, v, Ordering::AcqRel, Ordering::Acquire).is_ok() {
        log::info!("shutdown requested by the host: {kind:?}");
    }
    for w in core::mem::take(&mut *WAKERS.lock()) {
        w.wake();
    }
}

/// The pending request, if any.
pub fn pending() -> Option<ShutdownKind> {
    match STATE.load(Ordering::Acquire) {
        1 => Some(ShutdownKind::Poweroff),
        2 => Some(ShutdownKind::Reboot),
        _ => None,
    }
}

/// Completes when the host has asked the VM to shut down.
pub async fn requested() -> ShutdownKind {
    core::future::poll_fn(|cx| match pending() {
        Some(k) => Poll::Ready(k),
        None => {
            let mut w = WAKERS.lock();
            if !w.iter().any(|x| x.will_wake(cx.waker())) {
                w.push(cx.waker().clone());
            }
            drop(w);
            // A request between the check and the registration must not be lost.
            match pending() {
                Some(k) => Poll::Ready(k),
                None => Poll::Pending,
            }
        }
    })
    .await
}
