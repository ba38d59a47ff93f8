//! A host-side model of a Hyper-V host, for testing platform-hyperv's guest code on the host: the hypervisor's
//! synthetic MSRs and hypercalls (TLFS §3, §11, §12), SynIC message delivery with MessagePending/EOM and event
//! flags (`hypervisor`), a VMBus server (InitiateContact with exact-match version negotiation, offers with the NIC
//! offered late, GPADLs, OpenChannel, rescind; `vmbus`), and the device back ends: netvsp (NVSP + RNDIS, moving
//! Ethernet frames to a host-side NIC), storvsp (a SCSI disk in memory) and the heartbeat, shutdown, time sync and
//! KVP services.
//!
//! It is written from the specifications (the TLFS and Linux's `hyperv.h`, `hyperv_net.h`, `storvsc_drv.c`,
//! `hv_util.c`, `hv_kvp.c` definitions), with its own byte-level encodings: it shares only the shared-memory
//! model ([`HostMemory`]), the ring buffer's host side and the [`HwAccess`] trait with the guest crate (its
//! `host-model` feature). The model runs on its own thread, as a real host does; the guest signals it through
//! hypercalls and it interrupts the guest through an [`InterruptLine`].

mod backend;
mod bytes;
mod hypervisor;
mod ics;
mod netvsp;
mod storvsp;
mod vmbus;
pub mod wire;

use backend::Backend;
use hypervisor::{raise, Hypervisor, Partition};
use platform_hyperv::hv::HwAccess;
use platform_hyperv::mem::host::HostMemory;
use platform_hyperv::vmbus::guid::{self, Guid};
use platform_hyperv::vmbus::InterruptLine;
use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use ics::IcState;
pub use storvsp::DiskState;
pub use vmbus::HOST_MSG_CONN_ID;

/// How the test host is set up.
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// The one VMBus version the host accepts (exact match), `major << 16 | minor`.
    pub vmbus_version: u32,
    /// The one NVSP version netvsp accepts.
    pub nvsp_version: u32,
    /// The one storage protocol version storvsp accepts (`major << 8 | minor`).
    pub storvsp_version: u16,
    /// Whether netvsp accepts a send buffer.
    pub send_buffer: bool,
    /// Whether netvsp offers TCP/UDP checksum offload (NVSP ≥ 5).
    pub checksum_offload: bool,
    /// Delay of the NIC offer after AllOffersDelivered.
    pub nic_delay: Duration,
    /// Offer a NIC.
    pub offer_nic: bool,
    /// Disk contents (size a multiple of 512); `None` offers no disk.
    pub disk: Option<Vec<u8>>,
    /// Answer the first SCSI command with UNIT ATTENTION, as a freshly attached disk does.
    pub unit_attention: bool,
    /// Offer the four integration services.
    pub offer_ics: bool,
    /// Heartbeat period.
    pub heartbeat_every: Duration,
    /// The NIC's MAC address.
    pub mac: [u8; 6],
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            vmbus_version: 5 << 16 | 3,
            nvsp_version: 0x60001,
            storvsp_version: 0x0600,
            send_buffer: true,
            checksum_offload: true,
            nic_delay: Duration::from_millis(30),
            offer_nic: true,
            disk: Some(vec![0u8; 4 << 20]),
            unit_attention: true,
            offer_ics: true,
            heartbeat_every: Duration::from_millis(20),
            mac: [0x00, 0x15, 0x5d, 0x12, 0x34, 0x56],
        }
    }
}

/// Relid of each offered device.
pub mod relid {
    /// netvsc.
    pub const NIC: u32 = 14;
    /// storvsc.
    pub const SCSI: u32 = 15;
    /// Heartbeat IC.
    pub const HEARTBEAT: u32 = 4;
    /// Shutdown IC.
    pub const SHUTDOWN: u32 = 5;
    /// Time sync IC.
    pub const TIMESYNC: u32 = 6;
    /// KVP IC.
    pub const KVP: u32 = 7;
}

/// Everything the host thread and the guest-facing hypervisor share, behind one lock.
pub(crate) struct State {
    /// The hypervisor's partition state.
    pub hv: Partition,
    /// The VMBus server.
    pub bus: vmbus::Server,
    /// Event log (what the host saw, in order).
    pub events: Vec<String>,
    /// Protocol violations the host detected.
    pub errors: Vec<String>,
    pub stop: bool,
}

pub(crate) struct Shared {
    pub mem: Arc<HostMemory>,
    pub cfg: HostConfig,
    pub st: Mutex<State>,
    pub cv: Condvar,
    pub line: Mutex<Option<Arc<InterruptLine>>>,
    pub start: Instant,
}

/// The host model: the hypervisor ([`Host::hw`]) and the VMBus host, running on its own thread.
pub struct Host {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// The host-side NIC the netvsp back end forwards the guest's frames to.
    pub wire: wire::Wire,
    /// State of the disk back end.
    pub disk: Arc<Mutex<DiskState>>,
    /// State of the integration services.
    pub ics: Arc<Mutex<IcState>>,
}

impl Host {
    /// Builds the host, its devices and its thread.
    pub fn start(cfg: HostConfig) -> Arc<Host> {
        let mem = HostMemory::new();
        let wire = wire::Wire::new(cfg.mac);
        let disk = Arc::new(Mutex::new(DiskState::new(cfg.disk.clone().unwrap_or_default())));
        let ics = Arc::new(Mutex::new(IcState::default()));
        let mut channels = BTreeMap::new();
        let mut add = |relid: u32, class: Guid, backend: Box<dyn Backend>| {
            channels.insert(relid, vmbus::Channel::new(relid, class, backend));
        };
        if cfg.offer_nic {
            add(relid::NIC, guid::NIC, Box::new(netvsp::NetVsp::new(&cfg, wire.clone())));
        }
        if cfg.disk.is_some() {
            add(relid::SCSI, guid::SCSI, Box::new(storvsp::StorVsp::new(&cfg, disk.clone())));
        }
        if cfg.offer_ics {
            for (r, class, kind) in [
                (relid::HEARTBEAT, guid::HEARTBEAT, ics::Kind::Heartbeat),
                (relid::SHUTDOWN, guid::SHUTDOWN, ics::Kind::Shutdown),
                (relid::TIMESYNC, guid::TIMESYNC, ics::Kind::Timesync),
                (relid::KVP, guid::KVP, ics::Kind::Kvp),
            ] {
                add(r, class, Box::new(ics::IcHost::new(kind, &cfg, ics.clone())));
            }
        }
        let bus = vmbus::Server::new(&cfg, channels);
        let shared = Arc::new(Shared {
            mem,
            cfg,
            st: Mutex::new(State {
                hv: Partition::default(),
                bus,
                events: Vec::new(),
                errors: Vec::new(),
                stop: false,
            }),
            cv: Condvar::new(),
            line: Mutex::new(None),
            start: Instant::now(),
        });
        let s2 = shared.clone();
        let thread = std::thread::Builder::new().name("hyperv-host".into()).spawn(move || run(s2)).ok();
        Arc::new(Host { shared, thread: Mutex::new(thread), wire, disk, ics })
    }

    /// The simulated guest memory (the guest's [`platform_hyperv::mem::Dma`]).
    pub fn memory(&self) -> Arc<HostMemory> {
        self.shared.mem.clone()
    }

    /// The hypervisor as the guest reaches it.
    pub fn hw(self: &Arc<Self>) -> Arc<dyn HwAccess> {
        Arc::new(Hypervisor { shared: self.shared.clone() })
    }

    /// Where the host raises the guest's SynIC interrupt.
    pub fn connect_interrupt(&self, line: Arc<InterruptLine>) {
        *lock(&self.shared.line) = Some(line);
    }

    /// CPUID leaves of this host as a guest sees them (Hyper-V 10.0 build 20348 with the privileges VMBus and
    /// the reference TSC page need).
    pub fn cpuid() -> Vec<(u32, u32, [u32; 4])> {
        hypervisor::cpuid()
    }

    /// Event log (what the host saw, in order).
    pub fn events(&self) -> Vec<String> {
        lock(&self.shared.st).events.clone()
    }

    /// Protocol violations the host detected in the guest's behaviour.
    pub fn errors(&self) -> Vec<String> {
        lock(&self.shared.st).errors.clone()
    }

    /// The negotiated VMBus version, once the guest connected.
    pub fn vmbus_version(&self) -> Option<u32> {
        lock(&self.shared.st).bus.version()
    }

    /// Whether the guest released `relid` after a rescind.
    pub fn relid_released(&self, relid: u32) -> bool {
        lock(&self.shared.st).bus.released(relid)
    }

    /// Rescinds the channel `relid` (the device is removed).
    pub fn rescind(&self, relid: u32) {
        vmbus::rescind(&mut lock(&self.shared.st), relid);
        self.shared.cv.notify_all();
    }

    /// Plays a hostile host: stores `value` into control field `field` (byte offset, e.g.
    /// `platform_hyperv::vmbus::ring::WRITE_INDEX`) of the guest-bound ring of `relid`, then signals the guest.
    pub fn corrupt_inbound_ring(&self, relid: u32, field: usize, value: u32) {
        let st = lock(&self.shared.st);
        if let Some(inr) = st.bus.inbound_ring(relid) {
            let _ = inr.poke(field, value);
        }
        drop(st);
        self.signal_guest(relid);
    }

    /// Plays a hostile host: writes a packet whose descriptor claims `len8` 8-byte units into the guest-bound ring
    /// of `relid` (the write index covers only the real packet), then signals the guest.
    pub fn send_hostile_packet(&self, relid: u32, len8: u16) {
        let st = lock(&self.shared.st);
        if let Some(inr) = st.bus.inbound_ring(relid) {
            let mut p = backend::pkt::comp(1, &[0u8; 16]);
            bytes::wr16(&mut p, 4, len8);
            let write = inr.peek_field(platform_hyperv::vmbus::ring::WRITE_INDEX).unwrap_or(0);
            let _ = inr.poke_data(write, &p);
            let _ = inr.poke_data(write + p.len() as u32, &(u64::from(write) << 32).to_le_bytes());
            let _ = inr.poke(platform_hyperv::vmbus::ring::WRITE_INDEX, write + p.len() as u32 + 8);
        }
        drop(st);
        self.signal_guest(relid);
    }

    fn signal_guest(&self, relid: u32) {
        lock(&self.shared.st).hv.set_event_flag(&self.shared.mem, relid);
        raise(&self.shared);
    }

    /// Asks the guest to shut down through the shutdown IC (`flags` 0 = power off, 2 = reboot).
    pub fn request_shutdown(&self, flags: u32) {
        lock(&self.ics).shutdown_request = Some(flags);
        self.shared.cv.notify_all();
    }

    /// Starts a new KVP enumeration of the auto pool (after the guest's network came up).
    pub fn refresh_kvp(&self) {
        lock(&self.ics).kvp_refresh = true;
        self.shared.cv.notify_all();
    }

    /// Stops the host thread.
    pub fn stop(&self) {
        lock(&self.shared.st).stop = true;
        self.shared.cv.notify_all();
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
    }

    /// Waits up to `timeout` for `f` to hold on the event log.
    pub fn wait_event(&self, timeout: Duration, f: impl Fn(&[String]) -> bool) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if f(&self.events()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        false
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.stop();
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The host thread: runs the VMBus server, delivers queued messages into the SynIC slot and interrupts the guest,
/// then sleeps until the guest posts or signals (or 1 ms, for the back ends' periodic work).
fn run(shared: Arc<Shared>) {
    let mut last_poll = Instant::now();
    loop {
        let mut st = lock(&shared.st);
        if st.stop {
            return;
        }
        let poll = last_poll.elapsed() >= Duration::from_millis(1);
        if poll {
            last_poll = Instant::now();
        }
        let mut interrupt = vmbus::step(&shared, &mut st, poll);
        interrupt |= st.hv.deliver(&shared.mem);
        // Event flags set by the pending-send check also need an interrupt.
        if !interrupt {
            interrupt = st.hv.event_flags_pending(&shared.mem);
        }
        if interrupt {
            drop(st);
            raise(&shared);
            st = lock(&shared.st);
        }
        if !st.bus.busy() {
            let (g, _) = shared.cv.wait_timeout(st, Duration::from_millis(1)).unwrap_or_else(|e| e.into_inner());
            drop(g);
        }
    }
}
