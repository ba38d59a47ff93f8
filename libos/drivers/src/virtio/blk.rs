//! virtio-blk driver over any `virtio-drivers` [`Transport`], implementing [`libos::dev::BlockDevice`]: one
//! request virtqueue of `QS` descriptors, one descriptor chain per request (header, data, status), several
//! requests in flight, completions reaped by the interrupt handler, which wakes each request's task.
//! Source: virtio 1.2 §3.1.1 (device initialisation), §5.2.3 (feature bits), §5.2.4 (configuration layout),
//! §5.2.6 (`virtio_blk_req`, request types, status values), §2.7.8 (used ring).
//!
//! Data goes through driver-owned bounce buffers (one per request slot, grown on demand up to the largest
//! transfer), never through the caller's buffer: a request future dropped while the device still owns its
//! chain then leaves the device writing into memory the driver keeps, not into a freed caller buffer.
//! Requests larger than [`BlockInfo::max_transfer`] are split into several chains, submitted together.
//! Like the virtio-net driver this one sits on `virtio_drivers::queue::VirtQueue` (no `VIRTIO_F_EVENT_IDX`,
//! whose notify test in virtio-drivers 0.13 breaks at index wrap; no indirect descriptors: chains are 3 long).

pub mod geometry;

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::sync::{Arc, Weak};
use alloc::task::Wake;
use alloc::vec::Vec;
use core::fmt;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};
use libos::dev::{BlockDevice, BlockError, BlockFuture, BlockInfo};
use spin::Mutex;
use virtio_drivers::queue::VirtQueue;
use virtio_drivers::transport::{DeviceStatus, Transport};
use virtio_drivers::{Error as VirtioError, Hal};

pub use geometry::{feature_names, Geometry, GeometryError, RawConfig};

use super::irq::IrqSlot;
use super::net::{IrqAck, F_VERSION_1};
use super::pool::InFlight;
use libos::irq::critical;

/// Index of requestq1 (the only queue without `VIRTIO_BLK_F_MQ`).
pub const QUEUE_REQUEST: u16 = 0;

/// `VIRTIO_BLK_F_SIZE_MAX`: `size_max` is the largest single segment (bytes).
pub const F_SIZE_MAX: u64 = 1 << 1;
/// `VIRTIO_BLK_F_SEG_MAX`: `seg_max` is the most segments in a request.
pub const F_SEG_MAX: u64 = 1 << 2;
/// `VIRTIO_BLK_F_GEOMETRY`: the legacy cylinder/head/sector geometry is valid.
pub const F_GEOMETRY: u64 = 1 << 4;
/// `VIRTIO_BLK_F_RO`: the device is read-only.
pub const F_RO: u64 = 1 << 5;
/// `VIRTIO_BLK_F_BLK_SIZE`: `blk_size` is the logical block size (bytes).
pub const F_BLK_SIZE: u64 = 1 << 6;
/// `VIRTIO_BLK_F_FLUSH`: the device has a write cache and accepts `VIRTIO_BLK_T_FLUSH`.
pub const F_FLUSH: u64 = 1 << 9;
/// `VIRTIO_BLK_F_TOPOLOGY`: physical block topology is valid.
pub const F_TOPOLOGY: u64 = 1 << 10;
/// `VIRTIO_BLK_F_CONFIG_WCE`: the write cache mode can be read and set in `writeback`.
pub const F_CONFIG_WCE: u64 = 1 << 11;
/// `VIRTIO_BLK_F_MQ`: several request queues.
pub const F_MQ: u64 = 1 << 12;
/// `VIRTIO_BLK_F_DISCARD`: `VIRTIO_BLK_T_DISCARD` is accepted.
pub const F_DISCARD: u64 = 1 << 13;
/// `VIRTIO_BLK_F_WRITE_ZEROES`: `VIRTIO_BLK_T_WRITE_ZEROES` is accepted.
pub const F_WRITE_ZEROES: u64 = 1 << 14;

/// Features this driver accepts. One data segment per chain, so `SEG_MAX` only has to allow one; without
/// `CONFIG_WCE`, a device with `FLUSH` runs in write-back mode (§5.2.5) and the driver flushes on request.
pub const DRIVER_FEATURES: u64 = F_VERSION_1 | F_SIZE_MAX | F_SEG_MAX | F_RO | F_BLK_SIZE | F_FLUSH;

/// `VIRTIO_BLK_T_IN`: read.
pub const T_IN: u32 = 0;
/// `VIRTIO_BLK_T_OUT`: write.
pub const T_OUT: u32 = 1;
/// `VIRTIO_BLK_T_FLUSH`: empty the write cache.
pub const T_FLUSH: u32 = 4;
/// `VIRTIO_BLK_S_OK`.
pub const S_OK: u8 = 0;
/// `VIRTIO_BLK_S_IOERR`.
pub const S_IOERR: u8 = 1;
/// `VIRTIO_BLK_S_UNSUPP`.
pub const S_UNSUPP: u8 = 2;

/// Length of the device-readable part of `virtio_blk_req`: `le32 type, le32 reserved, le64 sector` (bytes).
pub const HEADER_LEN: usize = 16;
/// Largest bounce buffer per request slot, hence the largest transfer unless `size_max` is smaller (bytes).
pub const BOUNCE_MAX: usize = 128 * 1024;
/// Most chains in flight; fewer when the queue cannot hold 3 descriptors for each. One request (split into
/// several chains) holds at most half of them.
pub const MAX_IN_FLIGHT: usize = 16;
/// The status byte before the device writes it: not a valid status, so a chain returned without its status
/// written is caught.
const STATUS_UNWRITTEN: u8 = 0xff;

/// The `virtio_blk_req` header for a request of `req_type` at `sector` (512-byte units), little-endian
/// (virtio 1.2 §5.2.6; legacy devices on x86 are little-endian too).
pub fn header(req_type: u32, sector: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..4].copy_from_slice(&req_type.to_le_bytes());
    h[8..16].copy_from_slice(&sector.to_le_bytes());
    h
}

/// What a request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `VIRTIO_BLK_T_IN`.
    Read,
    /// `VIRTIO_BLK_T_OUT`.
    Write,
    /// `VIRTIO_BLK_T_FLUSH`.
    Flush,
}

impl Kind {
    /// The request type field.
    pub fn req_type(self) -> u32 {
        match self {
            Kind::Read => T_IN,
            Kind::Write => T_OUT,
            Kind::Flush => T_FLUSH,
        }
    }

    /// Descriptors in one chain of this kind.
    fn descriptors(self) -> usize {
        match self {
            Kind::Flush => 2,
            Kind::Read | Kind::Write => 3,
        }
    }

    /// Name for errors.
    pub fn what(self) -> &'static str {
        match self {
            Kind::Read => "read (VIRTIO_BLK_T_IN)",
            Kind::Write => "write (VIRTIO_BLK_T_OUT)",
            Kind::Flush => "flush (VIRTIO_BLK_T_FLUSH)",
        }
    }

    /// Bytes of the chain the device must write: the data of a read plus the status byte.
    pub fn writable(self, data_len: usize) -> usize {
        match self {
            Kind::Read => data_len + 1,
            Kind::Write | Kind::Flush => 1,
        }
    }
}

/// How a completed chain failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainError {
    /// The device reported a failure: [`BlockError::Io`] for `VIRTIO_BLK_S_IOERR`, [`BlockError::Unsupported`]
    /// for `VIRTIO_BLK_S_UNSUPP`. The device stays usable.
    Device(BlockError),
    /// The device broke the protocol (the text says how); the device is unusable.
    Protocol(String),
}

/// Outcome of one completed chain, from its used length and status byte (virtio 1.2 §2.7.8, §5.2.6).
/// `sector` is the chain's first sector in the device's logical sectors (for the error text).
///
/// # Errors
/// [`ChainError::Device`] for an error status; [`ChainError::Protocol`] for a used length beyond the chain's
/// writable bytes, a successful read shorter than its data plus status, or an unknown status.
pub fn completion(
    device: &str,
    kind: Kind,
    sector: u64,
    data_len: usize,
    used_len: u32,
    status: u8,
) -> Result<(), ChainError> {
    let writable = kind.writable(data_len);
    let used = used_len as usize;
    // A write or flush writes only the status byte; some devices report 0 for it, which is harmless since
    // the status byte is checked below. A successful read must cover its data and the status; a failed one
    // may have written nothing but the status.
    if used > writable || (kind == Kind::Read && status == S_OK && used < writable) {
        return Err(ChainError::Protocol(format!(
            "used length {used_len} for a {} of {data_len} bytes at sector {sector}, expected {writable}",
            kind.what()
        )));
    }
    match status {
        S_OK => Ok(()),
        S_IOERR => Err(ChainError::Device(BlockError::Io {
            device: device.into(),
            sector,
            detail: format!("VIRTIO_BLK_S_IOERR for a {} of {data_len} bytes", kind.what()),
        })),
        S_UNSUPP => Err(ChainError::Device(BlockError::Unsupported { device: device.into(), what: kind.what() })),
        other => {
            Err(ChainError::Protocol(format!("status byte {other:#04x} for a {} at sector {sector}", kind.what())))
        }
    }
}

/// Why a virtio-blk device could not be started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlkInitError {
    /// The device did not accept our feature subset (FEATURES_OK did not stick).
    FeaturesRejected {
        /// Device name, e.g. "virtio-blk@pci:00:04.0".
        device: String,
        /// The feature bits the driver wrote (device features masked to the driver's subset).
        features: u64,
    },
    /// The request virtqueue is smaller than the driver's queue size.
    QueueTooSmall {
        /// Device name, e.g. "virtio-blk@pci:00:04.0".
        device: String,
        /// The queue's maximum size (`queue_size` / `QueueNumMax`, descriptors).
        max: u32,
        /// The driver's queue size (descriptors).
        need: usize,
    },
    /// `virtio-drivers` refused an operation (queue setup, configuration read).
    Virtio {
        /// Device name, e.g. "virtio-blk@pci:00:04.0".
        device: String,
        /// What was being set up or read, e.g. "request queue".
        what: &'static str,
        /// The `virtio-drivers` error.
        error: VirtioError,
    },
    /// The configuration space holds values the driver cannot work with.
    Config {
        /// Device name, e.g. "virtio-blk@pci:00:04.0".
        device: String,
        /// Which configuration value is unusable.
        error: GeometryError,
    },
    /// Interrupt setup failed.
    Interrupt {
        /// Device name, e.g. "virtio-blk@pci:00:04.0".
        device: String,
        /// Why interrupt setup failed.
        detail: String,
    },
}

impl fmt::Display for BlkInitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::FeaturesRejected { device, features } => {
                write!(f, "{device}: device refused features {}", feature_names(*features))
            }
            Self::QueueTooSmall { device, max, need } => {
                write!(f, "{device}: requestq holds at most {max} descriptors, the driver needs {need}")
            }
            Self::Virtio { device, what, error } => write!(f, "{device}: {what}: {error}"),
            Self::Config { device, error } => write!(f, "{device}: configuration space: {error}"),
            Self::Interrupt { device, detail } => write!(f, "{device}: interrupt setup: {detail}"),
        }
    }
}

/// Where a request slot is.
enum Phase {
    /// Not lent; its buffers may be refilled.
    Free,
    /// Lent to the device as one chain.
    InFlight {
        kind: Kind,
        /// First logical sector of the chain (for errors).
        sector: u64,
        /// Data bytes in the chain.
        len: usize,
        /// The task waiting for it.
        waker: Option<Waker>,
        /// Its future was dropped: free the slot on completion instead of reporting.
        abandoned: bool,
    },
    /// Completed; the result waits for its future.
    Done(Result<(), BlockError>),
}

/// One request's DMA memory: header, bounce buffer and status byte, owned by the driver so they outlive any
/// request future (the heap is identity mapped, hence DMA-able as is: see `hal.rs`).
struct Slot {
    header: Box<[u8; HEADER_LEN]>,
    data: Vec<u8>,
    status: Box<[u8; 1]>,
    phase: Phase,
}

/// Everything behind the device lock.
struct State<H: Hal, T: Transport, const QS: usize> {
    name: String,
    transport: T,
    queue: VirtQueue<H, QS>,
    slots: Vec<Slot>,
    free: Vec<usize>,
    /// Descriptor head → slot index.
    lent: InFlight<usize>,
    /// Futures waiting for a free slot.
    slot_waiters: Vec<Waker>,
    ack: IrqAck,
    /// Set on the first protocol violation; every later request returns it.
    broken: Option<BlockError>,
}

impl<H: Hal, T: Transport, const QS: usize> State<H, T, QS> {
    /// Lends slot `idx` to the device as a chain of `kind` for `len` data bytes at 512-byte `vsector`.
    /// For writes the data must already be in the slot's bounce buffer.
    fn submit(&mut self, idx: usize, kind: Kind, vsector: u64, sector: u64, len: usize) -> Result<(), BlockError> {
        let slot = &mut self.slots[idx];
        *slot.header = header(kind.req_type(), vsector);
        slot.status[0] = STATUS_UNWRITTEN;
        // SAFETY: the slot's header, data and status stay allocated (slots are never dropped while the device
        // may use them, see `fail` and `Drop`) and are neither read, written nor resized while the phase is
        // `InFlight`, i.e. until `reap` pops this token with the same buffers.
        let added = unsafe {
            match kind {
                Kind::Read => self.queue.add(&[&slot.header[..]], &mut [&mut slot.data[..len], &mut slot.status[..]]),
                Kind::Write => self.queue.add(&[&slot.header[..], &slot.data[..len]], &mut [&mut slot.status[..]]),
                Kind::Flush => self.queue.add(&[&slot.header[..]], &mut [&mut slot.status[..]]),
            }
        };
        let token = match added {
            Ok(t) => t,
            Err(e) => {
                self.free.push(idx);
                return Err(self.fail(format!("adding a {} chain: {e}", kind.what()), &mut Vec::new()));
            }
        };
        slot.phase = Phase::InFlight { kind, sector, len, waker: None, abandoned: false };
        if let Err((e, _)) = self.lent.insert(token, idx) {
            return Err(self.fail(format!("virtqueue returned head {token} twice: {e}"), &mut Vec::new()));
        }
        Ok(())
    }

    /// Pops every used chain, records its result in its slot and collects the wakers to wake. A used ring
    /// that names a chain the driver did not lend, or reports a wrong length or status, breaks the device.
    fn reap(&mut self, wake: &mut Vec<Waker>) {
        let mut freed = false;
        while self.broken.is_none() {
            let Some(token) = self.queue.peek_used() else { break };
            let idx = match self.lent.take(token) {
                Ok(i) => i,
                Err(e) => {
                    self.fail(format!("used ring names a chain the driver did not lend: {e}"), wake);
                    break;
                }
            };
            let slot = &mut self.slots[idx];
            let (kind, sector, len) = match &slot.phase {
                Phase::InFlight { kind, sector, len, .. } => (*kind, *sector, *len),
                _ => {
                    self.fail(format!("descriptor head {token} maps to request slot {idx}, which is not lent"), wake);
                    break;
                }
            };
            // SAFETY: the same buffers (address and length) that `submit` added under this token.
            let popped = unsafe {
                match kind {
                    Kind::Read => self.queue.pop_used(
                        token,
                        &[&slot.header[..]],
                        &mut [&mut slot.data[..len], &mut slot.status[..]],
                    ),
                    Kind::Write => {
                        self.queue.pop_used(token, &[&slot.header[..], &slot.data[..len]], &mut [&mut slot.status[..]])
                    }
                    Kind::Flush => self.queue.pop_used(token, &[&slot.header[..]], &mut [&mut slot.status[..]]),
                }
            };
            let used = match popped {
                Ok(n) => n,
                Err(e) => {
                    self.fail(format!("popping used id {token}: {e}"), wake);
                    break;
                }
            };
            let result = match completion(&self.name, kind, sector, len, used, slot.status[0]) {
                Ok(()) => Ok(()),
                Err(ChainError::Device(e)) => Err(e),
                Err(ChainError::Protocol(detail)) => {
                    // The chain is back with the driver, so the slot may be reused; the device is not.
                    slot.phase = Phase::Free;
                    self.free.push(idx);
                    self.fail(format!("id {token}: {detail}"), wake);
                    break;
                }
            };
            match core::mem::replace(&mut slot.phase, Phase::Free) {
                Phase::InFlight { abandoned: true, .. } => {
                    self.free.push(idx);
                    freed = true;
                }
                Phase::InFlight { waker, .. } => {
                    slot.phase = Phase::Done(result);
                    wake.extend(waker);
                }
                other => slot.phase = other,
            }
        }
        if freed {
            wake.append(&mut self.slot_waiters);
        }
    }

    /// Returns slot `idx` to the free list and wakes the futures waiting for one.
    fn release(&mut self, idx: usize, wake: &mut Vec<Waker>) {
        self.slots[idx].phase = Phase::Free;
        self.free.push(idx);
        wake.append(&mut self.slot_waiters);
    }

    /// Marks the device broken by a protocol violation: resets it, so it stops touching the rings and the
    /// lent buffers (virtio 1.2 §2.4), sets FAILED (§2.1), and wakes every waiting future so it sees the error.
    /// Lent slots stay lent forever: nothing frees memory the device was given.
    fn fail(&mut self, detail: String, wake: &mut Vec<Waker>) -> BlockError {
        let e = BlockError::Protocol { device: self.name.clone(), detail: format!("requestq: {detail}") };
        log::error!("{e}");
        self.broken = Some(e.clone());
        self.transport.set_status(DeviceStatus::empty());
        self.transport.set_status(DeviceStatus::FAILED);
        for s in &mut self.slots {
            if let Phase::InFlight { waker, .. } = &mut s.phase {
                wake.extend(waker.take());
            }
        }
        wake.append(&mut self.slot_waiters);
        e
    }
}

/// A virtio-blk device with a request virtqueue of `QS` descriptors. Created as an `Arc` (its interrupt
/// waker holds a weak reference), registered with `libos::dev::register_block`.
pub struct VirtioBlk<H: Hal, T: Transport, const QS: usize> {
    info: BlockInfo,
    features: u64,
    geometry: Geometry,
    state: Mutex<State<H, T, QS>>,
}

/// The waker bound to the device's [`IrqSlot`]: an interrupt reaps the used ring.
struct IrqWaker<H: Hal, T: Transport, const QS: usize>(Weak<VirtioBlk<H, T, QS>>);

impl<H: Hal + 'static, T: Transport + Send + 'static, const QS: usize> Wake for IrqWaker<H, T, QS> {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(dev) = self.0.upgrade() {
            dev.interrupt();
        }
    }
}

impl<H: Hal + 'static, T: Transport + Send + 'static, const QS: usize> VirtioBlk<H, T, QS> {
    /// Initialises the device (virtio 1.2 §3.1.1, §5.2.5): reset, feature negotiation, the request queue,
    /// capacity/`size_max`/`seg_max`/`blk_size` from the configuration space, `setup_irq` (e.g. MSI-X vector
    /// registers, which must follow queue setup and precede `DRIVER_OK`), `DRIVER_OK`; then binds `irq` to
    /// the device. `ack`: whether the interrupt path acknowledges (edge-triggered virtio-mmio).
    /// Errors: [`BlkInitError`]; the device is left FAILED.
    pub fn new(
        mut transport: T,
        name: String,
        irq: &'static IrqSlot,
        ack: IrqAck,
        setup_irq: &mut dyn FnMut() -> Result<(), String>,
    ) -> Result<Arc<Self>, BlkInitError> {
        transport.set_status(DeviceStatus::empty());
        transport.set_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER);
        let features = transport.read_device_features() & DRIVER_FEATURES;
        transport.write_driver_features(features);
        transport.set_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::FEATURES_OK);
        // Legacy devices have no FEATURES_OK handshake; modern ones clear it to refuse (§3.1.1 step 6).
        if features & F_VERSION_1 != 0 && !transport.get_status().contains(DeviceStatus::FEATURES_OK) {
            transport.set_status(DeviceStatus::FAILED);
            return Err(BlkInitError::FeaturesRejected { device: name, features });
        }
        let vio = |what: &'static str, name: &str| {
            let device = String::from(name);
            move |error| BlkInitError::Virtio { device, what, error }
        };
        let raw = transport
            .read_consistent(|| {
                // Two 32-bit halves: virtio-drivers refuses 8-byte config reads (only 4-byte alignment is
                // guaranteed, §4.2.2.2); `read_consistent` keeps the halves from one generation (§2.5.1).
                let lo = transport.read_config_space::<u32>(geometry::CONFIG_CAPACITY)?;
                let hi = transport.read_config_space::<u32>(geometry::CONFIG_CAPACITY + 4)?;
                Ok(RawConfig {
                    capacity: u64::from(lo) | u64::from(hi) << 32,
                    size_max: transport.read_config_space::<u32>(geometry::CONFIG_SIZE_MAX)?,
                    seg_max: transport.read_config_space::<u32>(geometry::CONFIG_SEG_MAX)?,
                    blk_size: transport.read_config_space::<u32>(geometry::CONFIG_BLK_SIZE)?,
                })
            })
            .map_err(|e| {
                transport.set_status(DeviceStatus::FAILED);
                vio("configuration space", &name)(e)
            })?;
        let geometry = match Geometry::new(features, &raw, BOUNCE_MAX) {
            Ok(g) => g,
            Err(error) => {
                transport.set_status(DeviceStatus::FAILED);
                return Err(BlkInitError::Config { device: name, error });
            }
        };
        transport.set_guest_page_size(virtio_drivers::PAGE_SIZE as u32);
        let max = transport.max_queue_size(QUEUE_REQUEST);
        if (max as usize) < QS {
            transport.set_status(DeviceStatus::FAILED);
            return Err(BlkInitError::QueueTooSmall { device: name, max, need: QS });
        }
        let queue = VirtQueue::<H, QS>::new(&mut transport, QUEUE_REQUEST, false, false).map_err(|e| {
            transport.set_status(DeviceStatus::FAILED);
            vio("request queue", &name)(e)
        })?;
        if let Err(detail) = setup_irq() {
            transport.set_status(DeviceStatus::FAILED);
            return Err(BlkInitError::Interrupt { device: name, detail });
        }
        let slots = (QS / 3).clamp(1, MAX_IN_FLIGHT);
        let info = BlockInfo {
            name: name.clone(),
            sector_size: geometry.sector_size,
            capacity: geometry.capacity,
            read_only: features & F_RO != 0,
            flush: features & F_FLUSH != 0,
            max_transfer: geometry.max_transfer,
        };
        let state = State {
            name,
            transport,
            queue,
            slots: (0..slots)
                .map(|_| Slot {
                    header: Box::new([0; HEADER_LEN]),
                    data: Vec::new(),
                    status: Box::new([0]),
                    phase: Phase::Free,
                })
                .collect(),
            // Popped from the back: slot 0 first.
            free: (0..slots).rev().collect(),
            lent: InFlight::new(QS),
            slot_waiters: Vec::new(),
            ack,
            broken: None,
        };
        let dev = Arc::new_cyclic(|weak| {
            irq.set_waker(&Waker::from(Arc::new(IrqWaker(weak.clone()))));
            Self { info, features, geometry, state: Mutex::new(state) }
        });
        dev.with_state(|st| {
            st.transport.set_status(
                DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::FEATURES_OK | DeviceStatus::DRIVER_OK,
            )
        });
        Ok(dev)
    }

    /// Features negotiated with the device.
    pub fn features(&self) -> u64 {
        self.features
    }

    /// One line for the boot log: name, capacity, sector size, largest transfer, negotiated features,
    /// queue size.
    pub fn describe(&self) -> String {
        let i = &self.info;
        format!(
            "{} capacity {} sectors ({}) sector {} bytes max transfer {} KiB{} features {} queue {}",
            i.name,
            i.capacity,
            geometry::human_size(i.bytes()),
            i.sector_size,
            i.max_transfer / 1024,
            if i.read_only { " read-only" } else { "" },
            feature_names(self.features),
            QS
        )
    }

    /// The interrupt path: acknowledges edge-triggered interrupts, reaps the used ring, wakes the tasks
    /// whose requests completed. Also safe to call at any time (it only looks at the used ring).
    pub fn interrupt(&self) {
        let mut wake = Vec::new();
        self.with_state(|st| {
            if st.ack == IrqAck::Task {
                // Acknowledge before reaping: a chain used after this raises a new edge.
                st.transport.ack_interrupt();
            }
            st.reap(&mut wake);
        });
        wake.into_iter().for_each(Waker::wake);
    }

    fn with_state<R>(&self, f: impl FnOnce(&mut State<H, T, QS>) -> R) -> R {
        critical(|| f(&mut self.state.lock()))
    }

    fn request<'a>(&'a self, kind: Kind, sector: u64, buf: Buf<'a>) -> Request<'a, H, T, QS> {
        let total = match &buf {
            Buf::Read(b) => b.len(),
            Buf::Write(b) => b.len(),
            Buf::None => 0,
        };
        Request { dev: self, kind, sector, buf, total, next: 0, flush_sent: false, pieces: Vec::new() }
    }

    fn check(&self, sector: u64, len: usize) -> Result<(), BlockError> {
        if let Some(e) = self.with_state(|st| st.broken.clone()) {
            return Err(e);
        }
        self.info.check(sector, len)
    }
}

impl<H: Hal, T: Transport, const QS: usize> Drop for VirtioBlk<H, T, QS> {
    fn drop(&mut self) {
        // Reset first: the device must stop using the ring and the slots before they are freed.
        self.state.get_mut().transport.set_status(DeviceStatus::empty());
    }
}

/// The caller's buffer of a request.
enum Buf<'a> {
    Read(&'a mut [u8]),
    Write(&'a [u8]),
    None,
}

/// A chain of a request, in flight: slot, offset of its data in the caller's buffer, length (bytes).
#[derive(Debug, Clone, Copy)]
struct Piece {
    slot: usize,
    offset: usize,
    len: usize,
}

/// The future of one read, write or flush: submits chains while slots are free, copies completed reads
/// out of the bounce buffers, finishes when every chain has completed or at the first error.
struct Request<'a, H: Hal, T: Transport, const QS: usize> {
    dev: &'a VirtioBlk<H, T, QS>,
    kind: Kind,
    /// First logical sector.
    sector: u64,
    buf: Buf<'a>,
    total: usize,
    /// Bytes handed to the device so far.
    next: usize,
    flush_sent: bool,
    pieces: Vec<Piece>,
}

impl<H: Hal + 'static, T: Transport + Send + 'static, const QS: usize> Request<'_, H, T, QS> {
    fn more_to_submit(&self) -> bool {
        match self.kind {
            Kind::Flush => !self.flush_sent,
            Kind::Read | Kind::Write => self.next < self.total,
        }
    }

    fn step(&mut self, st: &mut State<H, T, QS>, waker: &Waker, wake: &mut Vec<Waker>) -> Poll<Result<(), BlockError>> {
        st.reap(wake);
        if let Some(e) = &st.broken {
            return Poll::Ready(Err(e.clone()));
        }
        let mut i = 0;
        while i < self.pieces.len() {
            let p = self.pieces[i];
            let slot = &mut st.slots[p.slot];
            match &mut slot.phase {
                Phase::InFlight { waker: w, .. } => {
                    if !w.as_ref().is_some_and(|old| old.will_wake(waker)) {
                        *w = Some(waker.clone());
                    }
                    i += 1;
                }
                Phase::Done(result) => {
                    let result = core::mem::replace(result, Ok(()));
                    if let (Ok(()), Buf::Read(buf)) = (&result, &mut self.buf) {
                        buf[p.offset..p.offset + p.len].copy_from_slice(&slot.data[..p.len]);
                    }
                    st.release(p.slot, wake);
                    self.pieces.swap_remove(i);
                    result?;
                }
                Phase::Free => {
                    self.pieces.swap_remove(i);
                    let name = st.name.clone();
                    return Poll::Ready(Err(BlockError::Protocol {
                        device: name,
                        detail: format!("request slot {} was freed while its chain was in flight", p.slot),
                    }));
                }
            }
        }
        let ss = u64::from(self.dev.info.sector_size);
        let max = self.dev.info.max_transfer;
        let mut added = false;
        while self.more_to_submit() {
            // A request keeps at most half the slots, so a large one cannot starve the others.
            if st.queue.available_desc() < self.kind.descriptors() || self.pieces.len() >= st.slots.len().div_ceil(2) {
                break;
            }
            let Some(idx) = st.free.pop() else { break };
            let len = max.min(self.total - self.next);
            let sector = self.sector + (self.next as u64) / ss;
            let data = &mut st.slots[idx].data;
            if data.len() < len {
                data.resize(len, 0);
            }
            if let Buf::Write(buf) = &self.buf {
                data[..len].copy_from_slice(&buf[self.next..self.next + len]);
            }
            // Virtio sector numbers are 512-byte units whatever the logical sector size (§5.2.6).
            st.submit(idx, self.kind, sector * (ss / 512), sector, len)?;
            if let Phase::InFlight { waker: w, .. } = &mut st.slots[idx].phase {
                *w = Some(waker.clone());
            }
            self.pieces.push(Piece { slot: idx, offset: self.next, len });
            self.next += len;
            self.flush_sent = true;
            added = true;
        }
        if added && st.queue.should_notify() {
            st.transport.notify(QUEUE_REQUEST);
        }
        if self.more_to_submit() && !st.slot_waiters.iter().any(|w| w.will_wake(waker)) {
            st.slot_waiters.push(waker.clone());
        }
        if self.pieces.is_empty() && !self.more_to_submit() {
            return Poll::Ready(Ok(()));
        }
        Poll::Pending
    }
}

impl<H: Hal + 'static, T: Transport + Send + 'static, const QS: usize> Future for Request<'_, H, T, QS> {
    type Output = Result<(), BlockError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let mut wake = Vec::new();
        let r = this.dev.with_state(|st| this.step(st, cx.waker(), &mut wake));
        wake.into_iter().for_each(Waker::wake);
        r
    }
}

impl<H: Hal, T: Transport, const QS: usize> Drop for Request<'_, H, T, QS> {
    fn drop(&mut self) {
        if self.pieces.is_empty() {
            return;
        }
        let mut wake = Vec::new();
        critical(|| {
            let mut st = self.dev.state.lock();
            for p in self.pieces.drain(..) {
                match &mut st.slots[p.slot].phase {
                    Phase::InFlight { abandoned, waker, .. } => {
                        *abandoned = true;
                        *waker = None;
                    }
                    Phase::Done(_) => st.release(p.slot, &mut wake),
                    Phase::Free => {}
                }
            }
        });
        wake.into_iter().for_each(Waker::wake);
    }
}

impl<H: Hal + 'static, T: Transport + Send + 'static, const QS: usize> BlockDevice for VirtioBlk<H, T, QS> {
    fn info(&self) -> &BlockInfo {
        &self.info
    }

    fn read<'a>(&'a self, sector: u64, buf: &'a mut [u8]) -> BlockFuture<'a> {
        if let Err(e) = self.check(sector, buf.len()) {
            return Box::pin(core::future::ready(Err(e)));
        }
        Box::pin(self.request(Kind::Read, sector, Buf::Read(buf)))
    }

    fn write<'a>(&'a self, sector: u64, buf: &'a [u8]) -> BlockFuture<'a> {
        if self.info.read_only {
            return Box::pin(core::future::ready(Err(BlockError::ReadOnly { device: self.info.name.clone() })));
        }
        if let Err(e) = self.check(sector, buf.len()) {
            return Box::pin(core::future::ready(Err(e)));
        }
        Box::pin(self.request(Kind::Write, sector, Buf::Write(buf)))
    }

    fn flush(&self) -> BlockFuture<'_> {
        if let Some(e) = self.with_state(|st| st.broken.clone()) {
            return Box::pin(core::future::ready(Err(e)));
        }
        if !self.info.flush {
            // No volatile write cache: completed writes are already durable (§5.2.6.2).
            return Box::pin(core::future::ready(Ok(())));
        }
        Box::pin(self.request(Kind::Flush, 0, Buf::None))
    }
}

impl<H: Hal, T: Transport, const QS: usize> VirtioBlk<H, T, QS> {
    /// Sector size, capacity and transfer limits in use.
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }
}

#[cfg(test)]
mod tests;
