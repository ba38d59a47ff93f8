//! virtio-blk driver over any `virtio-drivers` [`Transport`], implementing [`libos::dev::BlockDevice`]: one
//! request virtqueue of `QS` descriptors, one descriptor chain per request (header, data, status), several
//! requests in flight, completions reaped by the interrupt handler, which wakes each request's task — the
//! request virtqueue is a `crate::block` [`Queue`] and the requests run on that shared engine.
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
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use libos::dev::{BlockDevice, BlockError, BlockFuture, BlockInfo};
use virtio_drivers::queue::VirtQueue;
use virtio_drivers::transport::{DeviceStatus, Transport};
use virtio_drivers::Hal;

pub use geometry::{feature_names, Geometry, GeometryError, RawConfig};

use super::init::{self, StartError};
use super::net::{IrqAck, F_VERSION_1};
use super::pool::InFlight;
use crate::block::{BlockQueue, Disk, Op, Piece, Queue};
use crate::irq::IrqSlot;

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
    /// The kind of an engine piece.
    pub fn of(op: Op) -> Self {
        match op {
            Op::Read => Kind::Read,
            Op::Write => Kind::Write,
            Op::Flush => Kind::Flush,
        }
    }

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
    /// A start-up step every virtio driver shares failed (features, the request queue, configuration space read,
    /// interrupt).
    Start(StartError),
    /// The configuration space holds values the driver cannot work with.
    Config {
        /// Device name, e.g. "virtio-blk@pci:00:04.0".
        device: String,
        /// Which configuration value is unusable.
        error: GeometryError,
    },
}

impl From<StartError> for BlkInitError {
    fn from(e: StartError) -> Self {
        Self::Start(e)
    }
}

impl fmt::Display for BlkInitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Start(e) => write!(f, "{e}"),
            Self::Config { device, error } => write!(f, "{device}: configuration space: {error}"),
        }
    }
}

/// One request's DMA memory: header, bounce buffer and status byte, owned by the driver so they outlive any
/// request future (the heap is identity mapped, hence DMA-able as is: see `hal.rs`).
struct Slot {
    header: Box<[u8; HEADER_LEN]>,
    data: Vec<u8>,
    status: Box<[u8; 1]>,
    /// The chain lent from this slot: kind, first logical sector (for errors), data bytes.
    lent: Option<(Kind, u64, usize)>,
}

/// The request virtqueue and its slots: the block engine's [`Queue`].
pub struct BlkQueue<H: Hal, T: Transport, const QS: usize> {
    name: String,
    transport: T,
    queue: VirtQueue<H, QS>,
    slots: Vec<Slot>,
    /// Descriptor head → slot index.
    lent: InFlight<usize>,
    ack: IrqAck,
    /// Logical sector size (bytes); virtio sector numbers are 512-byte units whatever it is (§5.2.6).
    sector_size: u32,
}

impl<H: Hal + Send, T: Transport + Send, const QS: usize> Queue for BlkQueue<H, T, QS> {
    type Unit = ();

    fn name(&self) -> &str {
        &self.name
    }

    fn slots(&self) -> usize {
        self.slots.len()
    }

    fn buffer(&mut self, slot: usize, len: usize) -> Result<&mut [u8], BlockError> {
        Ok(crate::block::grow(&mut self.slots[slot].data, len))
    }

    fn has_room(&self, op: Op) -> bool {
        self.queue.available_desc() >= Kind::of(op).descriptors()
    }

    /// Lends slot `idx` to the device as a chain of `piece`'s kind; for writes the data is in its bounce buffer.
    fn submit(&mut self, idx: usize, _unit: (), piece: &Piece) -> Result<(), String> {
        let (kind, len) = (Kind::of(piece.op), piece.len);
        let slot = &mut self.slots[idx];
        *slot.header = header(kind.req_type(), piece.sector * u64::from(self.sector_size / geometry::VIRTIO_SECTOR));
        slot.status[0] = STATUS_UNWRITTEN;
        // SAFETY: the slot's header, data and status stay allocated (slots are never dropped while the device
        // may use them: a broken device is reset first, see `halt` and `Drop`) and are neither read, written nor
        // resized while `lent` is set, i.e. until `reap` pops this token with the same buffers.
        let added = unsafe {
            match kind {
                Kind::Read => self.queue.add(&[&slot.header[..]], &mut [&mut slot.data[..len], &mut slot.status[..]]),
                Kind::Write => self.queue.add(&[&slot.header[..], &slot.data[..len]], &mut [&mut slot.status[..]]),
                Kind::Flush => self.queue.add(&[&slot.header[..]], &mut [&mut slot.status[..]]),
            }
        };
        let token = added.map_err(|e| format!("requestq: adding a {} chain: {e}", kind.what()))?;
        slot.lent = Some((kind, piece.sector, len));
        self.lent.insert(token, idx).map_err(|(e, _)| format!("requestq: virtqueue returned head {token} twice: {e}"))
    }

    fn notify(&mut self) {
        if self.queue.should_notify() {
            self.transport.notify(QUEUE_REQUEST);
        }
    }

    fn acknowledge(&mut self) {
        if self.ack == IrqAck::Task {
            // Acknowledge before reaping: a chain used after this raises a new edge.
            self.transport.ack_interrupt();
        }
    }

    /// Pops every used chain and checks its length and status byte. A used ring that names a chain the driver
    /// did not lend, or reports a wrong length or status, breaks the device.
    fn reap(&mut self, done: &mut Vec<(usize, Result<(), BlockError>)>) -> Result<(), String> {
        while let Some(token) = self.queue.peek_used() {
            let idx = self
                .lent
                .take(token)
                .map_err(|e| format!("requestq: used ring names a chain the driver did not lend: {e}"))?;
            let slot = &mut self.slots[idx];
            let (kind, sector, len) = slot.lent.take().ok_or_else(|| {
                format!("requestq: descriptor head {token} maps to request slot {idx}, which is not lent")
            })?;
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
            let used = popped.map_err(|e| format!("requestq: popping used id {token}: {e}"))?;
            match completion(&self.name, kind, sector, len, used, slot.status[0]) {
                Ok(()) => done.push((idx, Ok(()))),
                Err(ChainError::Device(e)) => done.push((idx, Err(e))),
                Err(ChainError::Protocol(detail)) => return Err(format!("requestq: id {token}: {detail}")),
            }
        }
        Ok(())
    }

    /// Resets the device, so it stops touching the rings and the lent buffers (virtio 1.2 §2.4), and sets FAILED
    /// (§2.1). Lent slots stay lent forever: nothing frees memory the device was given.
    fn halt(&mut self) {
        self.transport.set_status(DeviceStatus::empty());
        self.transport.set_status(DeviceStatus::FAILED);
    }
}

impl<H: Hal, T: Transport, const QS: usize> Drop for BlkQueue<H, T, QS> {
    fn drop(&mut self) {
        // Reset first: the device must stop using the ring and the slots before they are freed.
        self.transport.set_status(DeviceStatus::empty());
    }
}

/// A virtio-blk device with a request virtqueue of `QS` descriptors: the disk on its request queue, the
/// negotiated features and the geometry. Created as an `Arc`, registered with `libos::dev::register_block`.
pub struct VirtioBlk<H: Hal + Send + 'static, T: Transport + Send + 'static, const QS: usize> {
    disk: Arc<Disk<BlkQueue<H, T, QS>>>,
    features: u64,
    geometry: Geometry,
}

impl<H: Hal + Send + 'static, T: Transport + Send + 'static, const QS: usize> VirtioBlk<H, T, QS> {
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
        let features = init::negotiate_features(&mut transport, &name, |f| f & DRIVER_FEATURES, feature_names)?;
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
            .map_err(|e| init::virtio_failed(&mut transport, &name, "configuration space", e))?;
        let geometry = Geometry::new(features, &raw, BOUNCE_MAX)
            .map_err(|error| init::failed(&mut transport, BlkInitError::Config { device: name.clone(), error }))?;
        init::check_queue_sizes(&mut transport, &name, &[(QUEUE_REQUEST, QS)])?;
        let queue = init::new_queue::<H, T, QS>(&mut transport, &name, QUEUE_REQUEST, "request queue")?;
        init::setup_interrupt(&mut transport, &name, setup_irq)?;
        let slots = (QS / 3).clamp(1, MAX_IN_FLIGHT);
        let info = BlockInfo {
            name: name.clone(),
            sector_size: geometry.sector_size,
            capacity: geometry.capacity,
            read_only: features & F_RO != 0,
            flush: features & F_FLUSH != 0,
            max_transfer: geometry.max_transfer,
        };
        let q = BlkQueue {
            name,
            transport,
            queue,
            slots: (0..slots)
                .map(|_| Slot {
                    header: Box::new([0; HEADER_LEN]),
                    data: Vec::new(),
                    status: Box::new([0]),
                    lent: None,
                })
                .collect(),
            lent: InFlight::new(QS),
            ack,
            sector_size: geometry.sector_size,
        };
        let queue = BlockQueue::new(q);
        irq.set_waker(&queue.irq_waker());
        queue.with_queue(|q| {
            q.transport.set_status(
                DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::FEATURES_OK | DeviceStatus::DRIVER_OK,
            )
        });
        Ok(Arc::new(Self { disk: Disk::new(queue, info, ()), features, geometry }))
    }

    /// Features negotiated with the device.
    pub fn features(&self) -> u64 {
        self.features
    }

    /// One line for the boot log: name, capacity, sector size, largest transfer ([`crate::block::describe`]),
    /// negotiated features, queue size.
    pub fn describe(&self) -> String {
        format!("{} features {} queue {}", crate::block::describe(self.info()), feature_names(self.features), QS)
    }

    /// The interrupt path: acknowledges edge-triggered interrupts, reaps the used ring, wakes the tasks
    /// whose requests completed. Also safe to call at any time (it only looks at the used ring).
    pub fn interrupt(&self) {
        self.disk.queue().interrupt();
    }

    /// Sector size, capacity and transfer limits in use.
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }
}

impl<H: Hal + Send + 'static, T: Transport + Send + 'static, const QS: usize> BlockDevice for VirtioBlk<H, T, QS> {
    fn info(&self) -> &BlockInfo {
        self.disk.info()
    }

    fn read<'a>(&'a self, sector: u64, buf: &'a mut [u8]) -> BlockFuture<'a> {
        self.disk.read(sector, buf)
    }

    fn write<'a>(&'a self, sector: u64, buf: &'a [u8]) -> BlockFuture<'a> {
        self.disk.write(sector, buf)
    }

    fn flush(&self) -> BlockFuture<'_> {
        self.disk.flush()
    }
}

#[cfg(test)]
mod tests;
