//! Bring-up on a real Xen (bare target only): hypercall page, features, shared info, clock, exit hook, event
//! upcall vector, PV console; then grant table, xenstore, control node watch and the PV devices.
//! Source: Xen `docs/misc/pvh.pandoc`, `xen/include/public/hvm/params.h` (`HVM_PARAM_CALLBACK_IRQ` vector type),
//! `memory.h` (`XENMAPSPACE_shared_info`), `sched.h` (`SCHEDOP_shutdown`).
#![allow(unsafe_code)]

use crate::abi::{self, feature, hvm_param, DomId, XenErrno};
use crate::evtchn::{self, EventChannelOps, EvtchnPort};
use crate::gnttab::GrantTable;
use crate::shared::SharedPage;
use crate::xenstore::ring::XsRing;
use crate::xenstore::XenStore;
use crate::{blkfront, clock, hypercall, netfront, pvconsole::ConsoleRing, xenbus};
use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use libos::bootinfo::BootInfo;
use libos::cmdline::Cmdline;
use libos::hypervisor::{Detection, HypervisorKind};
use libos::irq::WakeSlot;
use libos::time::Duration;

static SHARED_INFO: spin::Once<&'static SharedPage> = spin::Once::new();

/// Event-channel operations through hypercalls.
pub struct Hypercalls;

impl EventChannelOps for Hypercalls {
    fn send(&self, port: EvtchnPort) -> Result<(), XenErrno> {
        hypercall::evtchn_send(port)
    }
    fn alloc_unbound(&self, remote: DomId) -> Result<EvtchnPort, XenErrno> {
        hypercall::evtchn_alloc_unbound(remote)
    }
    fn close(&self, port: EvtchnPort) -> Result<(), XenErrno> {
        hypercall::evtchn_close(port)
    }
}

/// The libos interrupt handler on the callback vector: scans vCPU 0's pending ports and wakes their slots.
/// Xen injects this vector directly (no LAPIC in-service bit), so libos's EOI after it is a no-op.
fn upcall(_vector: u8) {
    if let Some(page) = SHARED_INFO.get() {
        evtchn::scan(page, 0, |port| {
            evtchn::dispatch(port);
        });
    }
}

/// Binds `port` to a wake-up slot and unmasks it; a port that became pending while masked is re-raised.
/// Returns the slot the port's upcalls wake.
pub fn listen(port: EvtchnPort) -> Result<&'static WakeSlot, String> {
    let slot = evtchn::bind(port).map_err(|e| format!("{e}"))?.wake_slot();
    let page = SHARED_INFO.get().ok_or("event channels are not set up")?;
    if evtchn::unmask(page, port) {
        hypercall::evtchn_unmask(port).map_err(|e| format!("EVTCHNOP_unmask {port}: {e}"))?;
    }
    Ok(slot)
}

/// The exit hook: drains the PV console, prints the status on every console sink (the harness reads it from
/// the 0xE9 log), then `SCHEDOP_shutdown` — poweroff for a normal exit, crash for a panic, CPU exception or boot
/// error so the toolstack's `on_crash` applies.
fn shutdown_hook(code: u8) {
    let reason = match code {
        libos::EXIT_PANIC | libos::EXIT_EXCEPTION | libos::EXIT_BOOT_ERROR => abi::shutdown::CRASH,
        _ => abi::shutdown::POWEROFF,
    };
    let what = if reason == abi::shutdown::CRASH { "crash" } else { "poweroff" };
    libos::console::emergency_print(format_args!("xen: exit status {code} (SCHEDOP_shutdown {what})\n"));
    console_drain();
    let e = hypercall::sched_shutdown(reason);
    libos::console::emergency_print(format_args!("xen: SCHEDOP_shutdown refused: {e}\n"));
}

/// Brings the platform up; returns the features for the `platform:` line. Errors: a description naming the
/// step and Xen's answer.
pub fn init(d: &Detection, _boot: &BootInfo, _cmdline: &Cmdline) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let found = d.find(HypervisorKind::Xen).ok_or("no Xen CPUID leaves")?;
    let info = found.xen().ok_or("no Xen CPUID leaves")?;
    let hc = info.hypercall.ok_or("Xen CPUID leaf base+2 (hypercall MSR) missing")?;
    hypercall::install(hc.msr).map_err(|e| format!("{e}"))?;
    let (major, minor) = hypercall::version().map_err(|e| format!("XENVER_version: {e}"))?;
    let features = hypercall::features().map_err(|e| format!("XENVER_get_features: {e}"))?;
    out.push(format!("Xen {major}.{minor}"));
    log::info!("xen: version {major}.{minor}, features: {features}");
    libos::set_shutdown_hook(shutdown_hook);

    // Shared info: a heap page whose frame Xen replaces with the shared-info page.
    let page = SharedPage::new().map_err(|e| format!("shared info page: {e}"))?;
    hypercall::add_to_physmap(abi::XENMAPSPACE_SHARED_INFO, 0, page.frame())
        .map_err(|e| format!("XENMEM_add_to_physmap(shared_info): {e}"))?;
    let page: &'static SharedPage = alloc::boxed::Box::leak(alloc::boxed::Box::new(page));
    SHARED_INFO.call_once(|| page);
    out.push(clock::init(page)?);

    // Event channels: everything masked until someone listens, upcalls on a libos vector.
    if !features.has(feature::HVM_CALLBACK_VECTOR) {
        return Err(String::from("Xen does not offer XENFEAT_hvm_callback_vector; no way to receive events"));
    }
    evtchn::mask_all(page);
    let vector = libos::arch::x86_64::idt::allocate_vector(upcall).map_err(|e| format!("event upcall vector: {e}"))?;
    hypercall::hvm_set_param(hvm_param::CALLBACK_IRQ, abi::callback_via_vector(vector))
        .map_err(|e| format!("HVM_PARAM_CALLBACK_IRQ: {e}"))?;
    out.push(format!("event channels (2-level, vector {vector:#x})"));

    // PV console as a log sink (xenconsoled shows it with `xl console` and logs it).
    let con_pfn = hypercall::hvm_get_param(hvm_param::CONSOLE_PFN).unwrap_or(0);
    let con_port = hypercall::hvm_get_param(hvm_param::CONSOLE_EVTCHN).unwrap_or(0);
    let con_ok = con_pfn != 0 && con_port != 0 && con_port < u64::from(abi::EVTCHN_2L_NR_CHANNELS);
    if con_ok && console_init(con_pfn, EvtchnPort(con_port as u32)) {
        out.push(String::from("pv console"));
    }

    let grants = grant_table()?;
    out.push(format!("grant table v1 ({} entries)", grants.capacity()));
    let Some(xs) = xenstore()? else {
        log::warn!("xen: no xenstore (HVM_PARAM_STORE_PFN is 0): no PV devices, no control node");
        return Ok(out);
    };
    out.push(String::from("xenstore"));
    let events: Arc<dyn EventChannelOps> = Arc::new(Hypercalls);
    let listen_some = |port: EvtchnPort| listen(port).map(Some);
    let vifs = libos::task::wait(xenbus::discover(xs, "vif")).map_err(|e| format!("{e}"))?;
    for id in vifs {
        let fut = netfront::connect(xs, grants, events.clone(), &id, &listen_some);
        match libos::task::wait(libos::time::timeout(CONNECT_TIMEOUT, fut)) {
            Ok(Ok(dev)) => {
                out.push(format!("netfront vif/{id}"));
                libos::dev::register_net(Box::new(dev));
            }
            Ok(Err(e)) => log::error!("xen: vif/{id}: {e}"),
            Err(_) => log::error!("xen: vif/{id}: backend did not connect within {} s", CONNECT_TIMEOUT.as_secs()),
        }
    }
    let vbds = libos::task::wait(xenbus::discover(xs, "vbd")).map_err(|e| format!("{e}"))?;
    for id in vbds {
        let fut = blkfront::connect(xs, grants, events.clone(), &id, &listen_some);
        match libos::task::wait(libos::time::timeout(CONNECT_TIMEOUT, fut)) {
            Ok(Ok(dev)) => {
                out.push(format!("blkfront vbd/{id}"));
                libos::dev::register_block(Arc::new(dev));
            }
            Ok(Err(e)) => log::error!("xen: vbd/{id}: {e}"),
            Err(_) => log::error!("xen: vbd/{id}: backend did not connect within {} s", CONNECT_TIMEOUT.as_secs()),
        }
    }
    libos::task::spawn(async move {
        if let Err(e) = xenbus::control_loop(xs).await {
            log::error!("xen: control/shutdown watch stopped: {e}");
        }
    });
    out.push(String::from("control/shutdown watch"));
    Ok(out)
}

/// How long a backend may take to connect (hotplug scripts run in dom0 first; nested TCG is slow).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// Grant-table frames mapped at boot (512 entries each; netfront needs 514, blkfront a few hundred).
const GRANT_FRAMES: u32 = 8;

static GRANTS: spin::Once<GrantTable> = spin::Once::new();

/// Maps the grant table: `GNTTABOP_query_size`, then `XENMAPSPACE_grant_table` frame by frame onto heap pages.
/// The table lives for the rest of the run: its frames now belong to Xen and must never go back to the heap.
fn grant_table() -> Result<&'static GrantTable, String> {
    if let Some(t) = GRANTS.get() {
        return Ok(t);
    }
    let (_, max) = hypercall::gnttab_query_size().map_err(|e| format!("GNTTABOP_query_size: {e}"))?;
    let mut frames = Vec::new();
    for i in 0..max.clamp(1, GRANT_FRAMES) {
        let page = SharedPage::new().map_err(|e| format!("grant table frame: {e}"))?;
        hypercall::add_to_physmap(abi::XENMAPSPACE_GRANT_TABLE, u64::from(i), page.frame())
            .map_err(|e| format!("XENMEM_add_to_physmap(grant_table, {i}): {e}"))?;
        frames.push(page);
    }
    Ok(GRANTS.call_once(|| GrantTable::new(frames)))
}

static XENSTORE: spin::Once<XenStore> = spin::Once::new();

/// Connects to xenstore through the ring page and event channel the toolstack gave us (`None` without one).
fn xenstore() -> Result<Option<&'static XenStore>, String> {
    let pfn = hypercall::hvm_get_param(hvm_param::STORE_PFN).map_err(|e| format!("HVM_PARAM_STORE_PFN: {e}"))?;
    let port = hypercall::hvm_get_param(hvm_param::STORE_EVTCHN).map_err(|e| format!("HVM_PARAM_STORE_EVTCHN: {e}"))?;
    if pfn == 0 {
        return Ok(None);
    }
    let port =
        u32::try_from(port).map(EvtchnPort).map_err(|_| format!("xenstore event channel {port} out of range"))?;
    // SAFETY: the toolstack placed the xenstore page at `pfn` in a reserved region no allocator uses; libos's
    // page tables map all of the low 4 GiB.
    let page = unsafe { SharedPage::adopt(pfn * crate::shared::PAGE_SIZE as u64) };
    let slot = listen(port)?;
    let xs = XENSTORE.call_once(|| XenStore::new(XsRing::new(Arc::new(page)), Arc::new(Hypercalls), port, Some(slot)));
    Ok(Some(xs))
}

static CONSOLE: spin::Mutex<Option<(ConsoleRing, EvtchnPort)>> = spin::Mutex::new(None);

/// How long a full console ring may hold up output before it is dropped (ns).
const CONSOLE_STALL_NS: u64 = 500_000_000;

fn console_sink(s: &str) {
    // Callers hold libos's console lock (or a panic forced it); contention here means a panic interrupted a
    // writer: write anyway.
    let mut guard = match CONSOLE.try_lock() {
        Some(g) => g,
        None => {
            // SAFETY: single vCPU; the interrupted holder does not run again before we return.
            unsafe { CONSOLE.force_unlock() };
            CONSOLE.lock()
        }
    };
    let Some((ring, port)) = guard.as_mut() else { return };
    let mut rest = s.as_bytes();
    let mut stall_start = None;
    while !rest.is_empty() {
        match ring.write(rest) {
            Ok(0) => {
                let _ = hypercall::evtchn_send(*port);
                let now = libos::time::uptime_ns();
                if now.saturating_sub(*stall_start.get_or_insert(now)) > CONSOLE_STALL_NS {
                    return; // xenconsoled is not draining: drop rather than hang the guest
                }
                core::hint::spin_loop();
            }
            Ok(n) => {
                rest = &rest[n..];
                stall_start = None;
            }
            Err(_) => return,
        }
    }
    let _ = hypercall::evtchn_send(*port);
}

/// Waits (bounded) until xenconsoled has consumed everything written, e.g. before the domain shuts down.
fn console_drain() {
    let start = libos::time::uptime_ns();
    loop {
        let done = CONSOLE.try_lock().is_none_or(|mut g| {
            g.as_mut().is_none_or(|(ring, port)| {
                let left = ring.unconsumed().unwrap_or(0);
                if left > 0 {
                    let _ = hypercall::evtchn_send(*port);
                }
                left == 0
            })
        });
        if done || libos::time::uptime_ns().saturating_sub(start) > CONSOLE_STALL_NS {
            return;
        }
        core::hint::spin_loop();
    }
}

/// Adds the PV console (ring at guest frame `pfn`, event channel `port`) as a console sink. Returns false when
/// libos's sink table is full.
fn console_init(pfn: u64, port: EvtchnPort) -> bool {
    // SAFETY: the toolstack placed the console page at `pfn` in a reserved region no allocator uses; libos's
    // page tables map all of the low 4 GiB.
    let page = unsafe { SharedPage::adopt(pfn * crate::shared::PAGE_SIZE as u64) };
    *CONSOLE.lock() = Some((ConsoleRing::new(Arc::new(page)), port));
    libos::console::add_sink(console_sink)
}
