//! A host-side model of a Hyper-V host, for testing platform-hyperv's guest code on the host: the hypervisor's
//! synthetic MSRs and hypercalls (TLFS §3, §11, §12), SynIC message delivery with MessagePending/EOM and event
//! flags, a VMBus server (InitiateContact with exact-match version negotiation, offers with the NIC offered late,
//! GPADLs, OpenChannel, rescind), and the device back ends: netvsp (NVSP + RNDIS, moving Ethernet frames to a
//! host-side NIC), storvsp (a SCSI disk in memory) and the heartbeat, shutdown, time sync and KVP services.
//!
//! It is written from the specifications (the TLFS and Linux's `hyperv.h`, `hyperv_net.h`, `storvsc_drv.c`,
//! `hv_util.c`, `hv_kvp.c` definitions), with its own byte-level encodings: it shares only the shared-memory
//! model ([`HostMemory`]), the ring buffer's host side and the [`HwAccess`] trait with the guest crate. The model
//! runs on its own thread, as a real host does; the guest signals it through hypercalls and it interrupts the
//! guest through an [`InterruptLine`].

mod ics;
mod netvsp;
mod storvsp;
pub mod wire;

use platform_hyperv::hv::HwAccess;
use platform_hyperv::mem::host::HostMemory;
use platform_hyperv::vmbus::guid::{self, Guid};
use platform_hyperv::vmbus::ring::host_side::HostRing;
use platform_hyperv::vmbus::ring::{self, Direction};
use platform_hyperv::vmbus::InterruptLine;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use ics::IcState;
pub use storvsp::DiskState;

// ---- byte helpers (little-endian, as every structure here) ----

pub(crate) fn rd16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
pub(crate) fn rd32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
pub(crate) fn rd64(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]))
}
pub(crate) fn wr16(b: &mut [u8], o: usize, v: u16) {
    b[o..o + 2].copy_from_slice(&v.to_le_bytes());
}
pub(crate) fn wr32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_le_bytes());
}
pub(crate) fn wr64(b: &mut [u8], o: usize, v: u64) {
    b[o..o + 8].copy_from_slice(&v.to_le_bytes());
}

// ---- TLFS constants (hypervisor side) ----

const MSR_GUEST_OS_ID: u32 = 0x4000_0000;
const MSR_HYPERCALL: u32 = 0x4000_0001;
const MSR_VP_INDEX: u32 = 0x4000_0002;
const MSR_TIME_REF_COUNT: u32 = 0x4000_0020;
const MSR_REFERENCE_TSC: u32 = 0x4000_0021;
const MSR_TSC_FREQUENCY: u32 = 0x4000_0022;
const MSR_SCONTROL: u32 = 0x4000_0080;
const MSR_SIEFP: u32 = 0x4000_0082;
const MSR_SIMP: u32 = 0x4000_0083;
const MSR_EOM: u32 = 0x4000_0084;
const MSR_SINT2: u32 = 0x4000_0092;
const HVCALL_POST_MESSAGE: u64 = 0x5c;
const HVCALL_SIGNAL_EVENT: u64 = 0x5d;
const HV_STATUS_INVALID_HYPERCALL_CODE: u64 = 2;
const HV_STATUS_INVALID_HYPERCALL_INPUT: u64 = 3;
const HV_STATUS_INVALID_PARAMETER: u64 = 5;
const HV_STATUS_INVALID_CONNECTION_ID: u64 = 0x12;
const SINT: usize = 2;
/// TSC frequency of the model (ticks per second): the TSC is nanoseconds since the host started.
const TSC_HZ: u64 = 1_000_000_000;

// ---- VMBus message types ----

pub(crate) mod msgtype {
    pub const OFFER: u32 = 1;
    pub const RESCIND: u32 = 2;
    pub const REQUEST_OFFERS: u32 = 3;
    pub const ALL_OFFERS_DELIVERED: u32 = 4;
    pub const OPEN: u32 = 5;
    pub const OPEN_RESULT: u32 = 6;
    pub const CLOSE: u32 = 7;
    pub const GPADL_HEADER: u32 = 8;
    pub const GPADL_BODY: u32 = 9;
    pub const GPADL_CREATED: u32 = 10;
    pub const GPADL_TEARDOWN: u32 = 11;
    pub const GPADL_TORNDOWN: u32 = 12;
    pub const RELID_RELEASED: u32 = 13;
    pub const INITIATE_CONTACT: u32 = 14;
    pub const VERSION_RESPONSE: u32 = 15;
    pub const UNLOAD: u32 = 16;
    pub const UNLOAD_RESPONSE: u32 = 17;
}

/// VMBus packet types.
pub(crate) mod pkt {
    pub const INBAND: u16 = 6;
    pub const XFER_PAGES: u16 = 7;
    pub const GPA_DIRECT: u16 = 9;
    pub const COMP: u16 = 11;
    pub const COMPLETION_REQUESTED: u16 = 1;

    /// A packet: descriptor, `extra` header bytes, payload at the next 8-byte boundary, padded to 8.
    pub fn build(ty: u16, tid: u64, flags: u16, extra: &[u8], payload: &[u8]) -> Vec<u8> {
        let off = (16 + extra.len() + 7) & !7;
        let len = (off + payload.len() + 7) & !7;
        let mut b = vec![0u8; len];
        super::wr16(&mut b, 0, ty);
        super::wr16(&mut b, 2, (off / 8) as u16);
        super::wr16(&mut b, 4, (len / 8) as u16);
        super::wr16(&mut b, 6, flags);
        super::wr64(&mut b, 8, tid);
        b[16..16 + extra.len()].copy_from_slice(extra);
        b[off..off + payload.len()].copy_from_slice(payload);
        b
    }

    pub fn inband(tid: u64, flags: u16, payload: &[u8]) -> Vec<u8> {
        build(INBAND, tid, flags, &[], payload)
    }

    pub fn comp(tid: u64, payload: &[u8]) -> Vec<u8> {
        build(COMP, tid, 0, &[], payload)
    }

    /// A transfer-page packet: set id, ranges `(offset, count)`.
    pub fn xfer(tid: u64, set: u16, ranges: &[(u32, u32)], payload: &[u8]) -> Vec<u8> {
        let mut e = vec![0u8; 8 + 8 * ranges.len()];
        super::wr16(&mut e, 0, set);
        super::wr32(&mut e, 4, ranges.len() as u32);
        for (i, (off, n)) in ranges.iter().enumerate() {
            super::wr32(&mut e, 8 + i * 8, *n);
            super::wr32(&mut e, 12 + i * 8, *off);
        }
        build(XFER_PAGES, tid, COMPLETION_REQUESTED, &e, payload)
    }
}

/// A packet the guest sent, with the fields the back ends need.
pub(crate) struct GuestPacket<'a> {
    pub ty: u16,
    pub flags: u16,
    pub tid: u64,
    pub raw: &'a [u8],
    pub payload: &'a [u8],
}

impl<'a> GuestPacket<'a> {
    fn parse(raw: &'a [u8]) -> Option<Self> {
        if raw.len() < 16 {
            return None;
        }
        let off = rd16(raw, 2) as usize * 8;
        let len = rd16(raw, 4) as usize * 8;
        if off < 16 || off > len || len != raw.len() {
            return None;
        }
        Some(Self { ty: rd16(raw, 0), flags: rd16(raw, 6), tid: rd64(raw, 8), raw, payload: &raw[off..] })
    }

    /// GPA-direct ranges: `(len, offset, pfns)`.
    pub fn gpa_ranges(&self) -> Vec<(u32, u32, Vec<u64>)> {
        let mut out = Vec::new();
        if self.ty != pkt::GPA_DIRECT || self.raw.len() < 24 {
            return out;
        }
        let n = rd32(self.raw, 20) as usize;
        let mut pos = 24;
        for _ in 0..n {
            let len = rd32(self.raw, pos);
            let off = rd32(self.raw, pos + 4);
            let pages = ((off as usize % 4096) + len as usize).div_ceil(4096);
            pos += 8;
            let pfns = (0..pages).map(|i| rd64(self.raw, pos + i * 8)).collect();
            pos += pages * 8;
            out.push((len, off, pfns));
        }
        out
    }
}

/// A guest buffer the host reaches by page frame numbers (a GPADL or a GPA-direct range).
#[derive(Clone, Debug, Default)]
pub(crate) struct PageList {
    pub pfns: Vec<u64>,
    pub offset: usize,
    pub len: usize,
}

impl PageList {
    pub fn read(&self, mem: &HostMemory, at: usize, out: &mut [u8]) -> bool {
        self.chunks(at, out.len(), |gpa, range| mem.read_gpa(gpa, &mut out[range]).is_ok())
    }

    pub fn write(&self, mem: &HostMemory, at: usize, data: &[u8]) -> bool {
        self.chunks(at, data.len(), |gpa, range| mem.write_gpa(gpa, &data[range]).is_ok())
    }

    fn chunks(&self, at: usize, n: usize, mut f: impl FnMut(u64, std::ops::Range<usize>) -> bool) -> bool {
        if at + n > self.len {
            return false;
        }
        let mut done = 0;
        while done < n {
            let pos = self.offset + at + done;
            let page = pos / 4096;
            let in_page = pos % 4096;
            let k = (4096 - in_page).min(n - done);
            let Some(pfn) = self.pfns.get(page) else { return false };
            if !f(pfn * 4096 + in_page as u64, done..done + k) {
                return false;
            }
            done += k;
        }
        true
    }
}

/// What a device back end may do while handling a packet or polling.
pub(crate) struct Io<'a> {
    pub mem: &'a HostMemory,
    pub gpadls: &'a HashMap<u32, PageList>,
    /// Packets to send to the guest on this channel.
    pub out: Vec<Vec<u8>>,
    /// Event log lines.
    pub events: &'a mut Vec<String>,
    pub now: Instant,
    pub start: Instant,
}

/// A device back end on one channel.
pub(crate) trait Backend: Send {
    /// The guest opened the channel.
    fn opened(&mut self, io: &mut Io);
    /// A packet from the guest.
    fn packet(&mut self, io: &mut Io, p: &GuestPacket);
    /// Periodic work.
    fn poll(&mut self, io: &mut Io);
}

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

/// Connection id the host assigns for signalling channel `relid`.
fn connection_id(relid: u32) -> u32 {
    0x2000 + relid
}

/// The message connection id the host hands out in a 5.x version response.
pub const HOST_MSG_CONN_ID: u32 = 0x7;

struct Channel {
    class: Guid,
    instance: Guid,
    offered: bool,
    rescinded: bool,
    rings: Option<(HostRing, HostRing)>,
    backlog: VecDeque<Vec<u8>>,
    backend: Box<dyn Backend>,
}

struct State {
    msrs: HashMap<u32, u64>,
    simp: Option<u64>,
    siefp: Option<u64>,
    to_guest: VecDeque<Vec<u8>>,
    from_guest: VecDeque<(u32, Vec<u8>)>,
    signaled: Vec<u32>,
    version: Option<u32>,
    offers_requested: bool,
    nic_due: Option<Instant>,
    gpadls: HashMap<u32, PageList>,
    gpadl_owner: HashMap<u32, u32>,
    partial: Option<(u32, u32, usize, PageList)>,
    channels: BTreeMap<u32, Channel>,
    released: Vec<u32>,
    events: Vec<String>,
    errors: Vec<String>,
    stop: bool,
}

struct Shared {
    mem: Arc<HostMemory>,
    cfg: HostConfig,
    st: Mutex<State>,
    cv: Condvar,
    line: Mutex<Option<Arc<InterruptLine>>>,
    start: Instant,
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
            let mut inst = [0u8; 16];
            inst[0] = relid as u8;
            inst[15] = 0x5d;
            channels.insert(
                relid,
                Channel {
                    class,
                    instance: Guid(inst),
                    offered: false,
                    rescinded: false,
                    rings: None,
                    backlog: VecDeque::new(),
                    backend,
                },
            );
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
        let shared = Arc::new(Shared {
            mem,
            cfg,
            st: Mutex::new(State {
                msrs: HashMap::new(),
                simp: None,
                siefp: None,
                to_guest: VecDeque::new(),
                from_guest: VecDeque::new(),
                signaled: Vec::new(),
                version: None,
                offers_requested: false,
                nic_due: None,
                gpadls: HashMap::new(),
                gpadl_owner: HashMap::new(),
                partial: None,
                channels,
                released: Vec::new(),
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
        let s = b"Microsoft Hv";
        vec![
            (1, 0, [0, 0, 1 << 31, 0]),
            (0x4000_0000, 0, [0x4000_0005, rd32(s, 0), rd32(s, 4), rd32(s, 8)]),
            (0x4000_0001, 0, [u32::from_le_bytes(*b"Hv#1"), 0, 0, 0]),
            (0x4000_0002, 0, [20348, 10 << 16, 0, 0]),
            (0x4000_0003, 0, [0xae7f, 0x3b8030, 0, 0xe0bed7b2]),
            (0x4000_0004, 0, [0x64e24, 0xfff, 0, 0]),
            (0x4000_0005, 0, [240, 1024, 0, 0]),
        ]
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
        lock(&self.shared.st).version
    }

    /// Whether the guest released `relid` after a rescind.
    pub fn relid_released(&self, relid: u32) -> bool {
        lock(&self.shared.st).released.contains(&relid)
    }

    /// Rescinds the channel `relid` (the device is removed).
    pub fn rescind(&self, relid: u32) {
        let mut st = lock(&self.shared.st);
        if let Some(c) = st.channels.get_mut(&relid) {
            c.rescinded = true;
            c.rings = None;
        }
        let mut m = vec![0u8; 12];
        wr32(&mut m, 0, msgtype::RESCIND);
        wr32(&mut m, 8, relid);
        st.events.push(format!("rescind {relid}"));
        st.to_guest.push_back(m);
        drop(st);
        self.shared.cv.notify_all();
    }

    /// Plays a hostile host: stores `value` into control field `field` (byte offset, e.g.
    /// [`ring::WRITE_INDEX`]) of the guest-bound ring of `relid`, then signals the guest.
    pub fn corrupt_inbound_ring(&self, relid: u32, field: usize, value: u32) {
        let st = lock(&self.shared.st);
        if let Some((_, inr)) = st.channels.get(&relid).and_then(|c| c.rings.as_ref()) {
            let _ = inr.poke(field, value);
        }
        drop(st);
        self.signal_guest(relid);
    }

    /// Plays a hostile host: writes a packet whose descriptor claims `len8` 8-byte units into the guest-bound ring
    /// of `relid` (the write index covers only the real packet), then signals the guest.
    pub fn send_hostile_packet(&self, relid: u32, len8: u16) {
        let st = lock(&self.shared.st);
        if let Some((_, inr)) = st.channels.get(&relid).and_then(|c| c.rings.as_ref()) {
            let mut p = pkt::comp(1, &[0u8; 16]);
            wr16(&mut p, 4, len8);
            let write = inr.peek_field(ring::WRITE_INDEX).unwrap_or(0);
            let _ = inr.poke_data(write, &p);
            let _ = inr.poke_data(write + p.len() as u32, &(u64::from(write) << 32).to_le_bytes());
            let _ = inr.poke(ring::WRITE_INDEX, write + p.len() as u32 + 8);
        }
        drop(st);
        self.signal_guest(relid);
    }

    fn signal_guest(&self, relid: u32) {
        let siefp = lock(&self.shared.st).siefp;
        if let Some(gpa) = siefp {
            set_event_flag(&self.shared.mem, gpa, relid);
        }
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

fn set_event_flag(mem: &HostMemory, siefp: u64, relid: u32) {
    let off = SINT * 256 + (relid as usize / 64) * 8;
    if let Some((r, base)) = mem.lookup(siefp) {
        let _ = r.fetch_or_u64(base + off, 1 << (relid % 64));
    }
}

fn raise(shared: &Shared) {
    let line = lock(&shared.line).clone();
    if let Some(l) = line {
        l.raise();
    }
}

/// Puts the next queued message into the SINT 2 slot when it is free. Returns whether to interrupt.
fn deliver(shared: &Shared, st: &mut State) -> bool {
    let (Some(simp), Some(_)) = (st.simp, st.to_guest.front()) else { return false };
    // Messages reach the guest only through an enabled SynIC with SINT 2 unmasked (TLFS §11.8).
    let scontrol = st.msrs.get(&MSR_SCONTROL).copied().unwrap_or(0);
    let sint = st.msrs.get(&MSR_SINT2).copied().unwrap_or(1 << 16);
    if scontrol & 1 == 0 || sint & (1 << 16) != 0 || sint & 0xff < 16 {
        return false;
    }
    let slot = simp + (SINT * 256) as u64;
    let mut ty = [0u8; 4];
    if shared.mem.read_gpa(slot, &mut ty).is_err() || u32::from_le_bytes(ty) != 0 {
        return false;
    }
    let Some(m) = st.to_guest.pop_front() else { return false };
    let mut raw = [0u8; 256];
    wr32(&mut raw, 0, 1);
    raw[4] = m.len().min(240) as u8;
    raw[5] = u8::from(!st.to_guest.is_empty());
    raw[16..16 + m.len().min(240)].copy_from_slice(&m[..m.len().min(240)]);
    // Payload first, type last: the guest reads the type to see a message.
    let _ = shared.mem.write_gpa(slot + 4, &raw[4..]);
    let _ = shared.mem.write_gpa(slot, &raw[..4]);
    true
}

/// The hypervisor side of [`HwAccess`].
struct Hypervisor {
    shared: Arc<Shared>,
}

impl HwAccess for Hypervisor {
    fn rdmsr(&self, msr: u32) -> u64 {
        let st = lock(&self.shared.st);
        match msr {
            MSR_TIME_REF_COUNT => self.shared.start.elapsed().as_nanos() as u64 / 100,
            MSR_TSC_FREQUENCY => TSC_HZ,
            MSR_VP_INDEX => 0,
            m => st.msrs.get(&m).copied().unwrap_or(0),
        }
    }

    fn wrmsr(&self, msr: u32, value: u64) {
        let mut st = lock(&self.shared.st);
        let mut interrupt = false;
        match msr {
            MSR_HYPERCALL => {
                // TLFS §3.13: the hypercall page cannot be enabled before the guest OS identity is set.
                if st.msrs.get(&MSR_GUEST_OS_ID).copied().unwrap_or(0) == 0 {
                    st.errors.push("hypercall MSR written before the guest OS ID".into());
                    return;
                }
                st.msrs.insert(msr, value);
            }
            MSR_REFERENCE_TSC => {
                st.msrs.insert(msr, value);
                if value & 1 != 0 {
                    // TscScale: 100 ns per 100 TSC ticks → scale = 2^64 / 100.
                    let mut p = [0u8; 24];
                    wr32(&mut p, 0, 1);
                    wr64(&mut p, 8, ((1u128 << 64) / 100) as u64);
                    wr64(&mut p, 16, 0);
                    let _ = self.shared.mem.write_gpa(value & !0xfff, &p);
                }
            }
            MSR_SIMP => {
                st.msrs.insert(msr, value);
                st.simp = (value & 1 != 0).then_some(value & !0xfff);
            }
            MSR_SIEFP => {
                st.msrs.insert(msr, value);
                st.siefp = (value & 1 != 0).then_some(value & !0xfff);
            }
            MSR_EOM => interrupt = deliver(&self.shared, &mut st),
            m => {
                st.msrs.insert(m, value);
            }
        }
        drop(st);
        if interrupt {
            raise(&self.shared);
        }
    }

    fn hypercall(&self, control: u64, input_gpa: u64, _output_gpa: u64) -> u64 {
        let mut st = lock(&self.shared.st);
        if st.msrs.get(&MSR_HYPERCALL).copied().unwrap_or(0) & 1 == 0 {
            st.errors.push("hypercall before the hypercall page was enabled".into());
            return HV_STATUS_INVALID_HYPERCALL_CODE;
        }
        if control & 0xffff != HVCALL_POST_MESSAGE || control & (1 << 16) != 0 {
            return HV_STATUS_INVALID_HYPERCALL_CODE;
        }
        if !input_gpa.is_multiple_of(8) {
            return HV_STATUS_INVALID_HYPERCALL_INPUT;
        }
        let mut input = [0u8; 256];
        if self.shared.mem.read_gpa(input_gpa, &mut input).is_err() {
            return HV_STATUS_INVALID_HYPERCALL_INPUT;
        }
        let conn = rd32(&input, 0);
        let size = rd32(&input, 12) as usize;
        if rd32(&input, 8) != 1 || !(8..=240).contains(&size) {
            return HV_STATUS_INVALID_PARAMETER;
        }
        let msg = input[16..16 + size].to_vec();
        let v = self.shared.cfg.vmbus_version;
        let ty = rd32(&msg, 0);
        let valid = if ty == msgtype::INITIATE_CONTACT {
            // Connection 4 exists only on hosts that speak VMBus 5.0 or later.
            conn == 1 || (conn == 4 && v >= 5 << 16)
        } else {
            match st.version {
                Some(nv) if nv >= 5 << 16 => conn == HOST_MSG_CONN_ID,
                _ => conn == 1,
            }
        };
        if !valid {
            st.events.push(format!("post message type {ty} on invalid connection {conn}"));
            return HV_STATUS_INVALID_CONNECTION_ID;
        }
        st.from_guest.push_back((conn, msg));
        drop(st);
        self.shared.cv.notify_all();
        0
    }

    fn hypercall_fast(&self, control: u64, input: u64) -> u64 {
        if control & 0xffff != HVCALL_SIGNAL_EVENT || control & (1 << 16) == 0 {
            return HV_STATUS_INVALID_HYPERCALL_CODE;
        }
        let conn = input as u32;
        let mut st = lock(&self.shared.st);
        let Some(relid) = st.channels.keys().copied().find(|r| connection_id(*r) == conn) else {
            return HV_STATUS_INVALID_CONNECTION_ID;
        };
        if !st.signaled.contains(&relid) {
            st.signaled.push(relid);
        }
        drop(st);
        self.shared.cv.notify_all();
        0
    }

    fn rdtsc(&self) -> u64 {
        self.shared.start.elapsed().as_nanos() as u64
    }
}

fn offer_message(relid: u32, c: &Channel) -> Vec<u8> {
    let mut m = vec![0u8; 196];
    wr32(&mut m, 0, msgtype::OFFER);
    m[8..24].copy_from_slice(&c.class.0);
    m[24..40].copy_from_slice(&c.instance.0);
    wr32(&mut m, 184, relid);
    wr32(&mut m, 192, connection_id(relid));
    m
}

fn queue_offers(shared: &Shared, st: &mut State, include_nic: bool) {
    let relids: Vec<u32> = st.channels.keys().copied().collect();
    for r in relids {
        let c = &st.channels[&r];
        if c.offered || c.rescinded || (r == relid::NIC && !include_nic) {
            continue;
        }
        let m = offer_message(r, c);
        st.to_guest.push_back(m);
        if let Some(c) = st.channels.get_mut(&r) {
            c.offered = true;
        }
        st.events.push(format!("offer {r} {}", guid::class_name(&st.channels[&r].class)));
    }
    let _ = shared;
}

/// One guest channel message.
fn handle_message(shared: &Shared, st: &mut State, msg: &[u8]) {
    let ty = rd32(msg, 0);
    let need = |n: usize, st: &mut State| {
        if msg.len() < n {
            st.errors.push(format!("message type {ty}: {} bytes, needs {n}", msg.len()));
            false
        } else {
            true
        }
    };
    match ty {
        msgtype::INITIATE_CONTACT if need(40, st) => {
            let v = rd32(msg, 8);
            let ok = v == shared.cfg.vmbus_version;
            st.events.push(format!(
                "initiate contact {}.{} -> {}",
                v >> 16,
                v & 0xffff,
                if ok { "accepted" } else { "refused" }
            ));
            if ok {
                if v >= 5 << 16 && msg[16] != SINT as u8 {
                    st.errors.push(format!("InitiateContact names message SINT {}", msg[16]));
                }
                if v < 5 << 16 && rd64(msg, 16) == 0 {
                    st.errors.push("InitiateContact without an interrupt page".into());
                }
                if rd64(msg, 24) == 0 || rd64(msg, 32) == 0 {
                    st.errors.push("InitiateContact without monitor pages".into());
                }
                st.version = Some(v);
            }
            let mut r = vec![0u8; 16];
            wr32(&mut r, 0, msgtype::VERSION_RESPONSE);
            r[8] = u8::from(ok);
            wr32(&mut r, 12, if ok && v >= 5 << 16 { HOST_MSG_CONN_ID } else { 0 });
            st.to_guest.push_back(r);
        }
        msgtype::REQUEST_OFFERS => {
            st.events.push("request offers".into());
            st.offers_requested = true;
            queue_offers(shared, st, false);
            let mut r = vec![0u8; 8];
            wr32(&mut r, 0, msgtype::ALL_OFFERS_DELIVERED);
            st.to_guest.push_back(r);
            st.events.push("all offers delivered".into());
            st.nic_due = Some(Instant::now() + shared.cfg.nic_delay);
        }
        msgtype::GPADL_HEADER if need(28, st) => {
            let relid = rd32(msg, 8);
            let gpadl = rd32(msg, 12);
            let range_buflen = rd16(msg, 16) as usize;
            let count = rd16(msg, 18);
            let total = range_buflen.saturating_sub(8) / 8;
            if count != 1 {
                st.errors.push(format!("GPADL {gpadl:#x} with {count} ranges"));
            }
            let mut pl = PageList { pfns: Vec::new(), offset: rd32(msg, 24) as usize, len: rd32(msg, 20) as usize };
            let here = (msg.len() - 28) / 8;
            for i in 0..here.min(total) {
                pl.pfns.push(rd64(msg, 28 + i * 8));
            }
            st.partial = Some((relid, gpadl, total, pl));
            finish_gpadl(st);
        }
        msgtype::GPADL_BODY if need(16, st) => {
            let gpadl = rd32(msg, 12);
            match st.partial.as_mut() {
                Some((_, g, total, pl)) if *g == gpadl => {
                    let here = (msg.len() - 16) / 8;
                    for i in 0..here {
                        if pl.pfns.len() < *total {
                            pl.pfns.push(rd64(msg, 16 + i * 8));
                        }
                    }
                }
                _ => st.errors.push(format!("GPADL body for unknown handle {gpadl:#x}")),
            }
            finish_gpadl(st);
        }
        msgtype::GPADL_TEARDOWN if need(16, st) => {
            let gpadl = rd32(msg, 12);
            st.gpadls.remove(&gpadl);
            st.gpadl_owner.remove(&gpadl);
            st.events.push(format!("gpadl teardown {gpadl:#x}"));
            let mut r = vec![0u8; 12];
            wr32(&mut r, 0, msgtype::GPADL_TORNDOWN);
            wr32(&mut r, 8, gpadl);
            st.to_guest.push_back(r);
        }
        msgtype::OPEN if need(148, st) => {
            let relid = rd32(msg, 8);
            let gpadl = rd32(msg, 16);
            let down = rd32(msg, 24) as usize;
            let mut status = 0u32;
            let pl = st.gpadls.get(&gpadl).cloned();
            match (st.channels.get_mut(&relid), pl) {
                (Some(c), Some(pl)) if !c.rescinded && down > 0 && down < pl.pfns.len() => {
                    match ring_pair(&shared.mem, &pl, down) {
                        Some((out, inr)) => {
                            let _ = inr.set_pending_send_feature();
                            c.rings = Some((out, inr));
                        }
                        None => status = 0xC000_0001,
                    }
                }
                _ => status = 0xC000_0001,
            }
            st.events.push(format!("open {relid} -> {status:#x}"));
            let mut r = vec![0u8; 20];
            wr32(&mut r, 0, msgtype::OPEN_RESULT);
            wr32(&mut r, 8, relid);
            wr32(&mut r, 12, rd32(msg, 12));
            wr32(&mut r, 16, status);
            st.to_guest.push_back(r);
            if status == 0 {
                run_backend(shared, st, relid, |b, io| b.opened(io));
            }
        }
        msgtype::CLOSE if need(12, st) => {
            let relid = rd32(msg, 8);
            if let Some(c) = st.channels.get_mut(&relid) {
                c.rings = None;
            }
            st.events.push(format!("close {relid}"));
        }
        msgtype::RELID_RELEASED if need(12, st) => {
            let relid = rd32(msg, 8);
            st.released.push(relid);
            st.events.push(format!("relid released {relid}"));
        }
        msgtype::UNLOAD => {
            let mut r = vec![0u8; 8];
            wr32(&mut r, 0, msgtype::UNLOAD_RESPONSE);
            st.to_guest.push_back(r);
        }
        other => {
            if min_len_ok(other, msg.len()) {
                st.errors.push(format!("unexpected message type {other}"));
            }
        }
    }
}

fn min_len_ok(_ty: u32, _len: usize) -> bool {
    true
}

/// Completes a GPADL whose PFNs have all arrived.
fn finish_gpadl(st: &mut State) {
    let done = matches!(&st.partial, Some((_, _, total, pl)) if pl.pfns.len() >= *total);
    if !done {
        return;
    }
    let Some((relid, gpadl, _, pl)) = st.partial.take() else { return };
    st.events.push(format!("gpadl created {gpadl:#x} relid {relid} pages {}", pl.pfns.len()));
    st.gpadls.insert(gpadl, pl);
    st.gpadl_owner.insert(gpadl, relid);
    let mut r = vec![0u8; 20];
    wr32(&mut r, 0, msgtype::GPADL_CREATED);
    wr32(&mut r, 8, relid);
    wr32(&mut r, 12, gpadl);
    st.to_guest.push_back(r);
}

/// The guest's rings inside the ring GPADL: its outbound ring in pages `0..down`, the inbound one after. The
/// rings are only usable when the GPADL's pages are contiguous in one allocation (they are: one DMA allocation).
fn ring_pair(mem: &HostMemory, pl: &PageList, down: usize) -> Option<(HostRing, HostRing)> {
    let first = pl.pfns[0];
    if pl.pfns.iter().enumerate().any(|(i, p)| *p != first + i as u64) {
        return None;
    }
    let (region, base) = mem.lookup(first * 4096)?;
    let out = HostRing::new(region.clone(), base, down, Direction::Outbound).ok()?;
    let inr = HostRing::new(region, base + down * 4096, pl.pfns.len() - down, Direction::Inbound).ok()?;
    Some((out, inr))
}

/// Runs `f` on the back end of `relid` and sends what it produced.
fn run_backend(shared: &Shared, st: &mut State, relid: u32, f: impl FnOnce(&mut dyn Backend, &mut Io)) {
    let State { channels, gpadls, events, .. } = st;
    let Some(c) = channels.get_mut(&relid) else { return };
    if c.rings.is_none() {
        return;
    }
    let mut io = Io { mem: &shared.mem, gpadls, out: Vec::new(), events, now: Instant::now(), start: shared.start };
    f(c.backend.as_mut(), &mut io);
    let out = std::mem::take(&mut io.out);
    c.backlog.extend(out);
}

/// Writes backlogged packets into the guest-bound ring; returns whether to signal the guest.
fn flush_backlog(c: &mut Channel) -> bool {
    let Some((_, inr)) = &c.rings else { return false };
    let mut signal = false;
    while let Some(p) = c.backlog.front() {
        match inr.write(p) {
            Ok(s) => {
                signal |= s;
                c.backlog.pop_front();
            }
            Err(ring::RingError::Full { .. }) => break,
            Err(_) => break,
        }
    }
    signal
}

/// Drains the guest's outbound ring of `relid` as a host does: interrupts masked while reading, then unmasked and
/// re-checked.
fn service_channel(shared: &Shared, st: &mut State, relid: u32) {
    loop {
        let Some((out, _)) = st.channels.get(&relid).and_then(|c| c.rings.clone()) else { return };
        let _ = out.set_interrupt_mask(true);
        let pkts = match out.drain() {
            Ok(p) => p,
            Err(e) => {
                st.errors.push(format!("channel {relid}: {e}"));
                return;
            }
        };
        for raw in &pkts {
            match GuestPacket::parse(raw) {
                Some(p) => run_backend(shared, st, relid, |b, io| b.packet(io, &p)),
                None => st.errors.push(format!("channel {relid}: malformed packet of {} bytes", raw.len())),
            }
        }
        let _ = out.set_interrupt_mask(false);
        // A guest blocked on a full ring waits for a signal once space is free.
        let pending = out.peek_field(ring::PENDING_SEND_SZ).unwrap_or(0);
        if pending != 0 {
            if let Some(siefp) = st.siefp {
                set_event_flag(&shared.mem, siefp, relid);
            }
        }
        let more = out.peek_field(ring::WRITE_INDEX).ok() != out.peek_field(ring::READ_INDEX).ok();
        if pkts.is_empty() && !more {
            return;
        }
        if !more {
            return;
        }
    }
}

fn run(shared: Arc<Shared>) {
    let mut last_poll = Instant::now();
    loop {
        let mut st = lock(&shared.st);
        if st.stop {
            return;
        }
        let mut interrupt = false;
        while let Some((_, msg)) = st.from_guest.pop_front() {
            handle_message(&shared, &mut st, &msg);
        }
        if st.nic_due.is_some_and(|t| Instant::now() >= t) {
            st.nic_due = None;
            queue_offers(&shared, &mut st, true);
        }
        let signaled = std::mem::take(&mut st.signaled);
        for relid in signaled {
            service_channel(&shared, &mut st, relid);
        }
        if last_poll.elapsed() >= Duration::from_millis(1) {
            last_poll = Instant::now();
            let relids: Vec<u32> = st.channels.keys().copied().collect();
            for r in relids {
                run_backend(&shared, &mut st, r, |b, io| b.poll(io));
            }
        }
        let relids: Vec<u32> = st.channels.keys().copied().collect();
        for r in relids {
            let signal = st.channels.get_mut(&r).is_some_and(flush_backlog);
            if signal {
                if let Some(siefp) = st.siefp {
                    set_event_flag(&shared.mem, siefp, r);
                }
                interrupt = true;
            }
        }
        interrupt |= deliver(&shared, &mut st);
        // Event flags set by the pending-send check also need an interrupt.
        if !interrupt {
            if let Some(siefp) = st.siefp {
                if let Some((region, base)) = shared.mem.lookup(siefp) {
                    interrupt = (0..32).any(|w| region.load_u64(base + SINT * 256 + w * 8).unwrap_or(0) != 0);
                }
            }
        }
        if interrupt {
            drop(st);
            raise(&shared);
            st = lock(&shared.st);
        }
        let busy = !st.from_guest.is_empty() || !st.signaled.is_empty();
        if !busy {
            let (g, _) = shared.cv.wait_timeout(st, Duration::from_millis(1)).unwrap_or_else(|e| e.into_inner());
            drop(g);
        }
    }
}
