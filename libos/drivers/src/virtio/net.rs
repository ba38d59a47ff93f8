//! virtio-net driver over any `virtio-drivers` [`Transport`], implementing [`libos::dev::NetDevice`]:
//! one receive and one transmit virtqueue of `QS` descriptors, receive buffers lent to the net stack
//! without a copy, a transmit buffer pool, one device notification per [`NetDevice::flush`].
//! Source: virtio 1.2 §3.1.1 (device initialisation), §5.1.3 (feature bits), §5.1.4 (config layout),
//! §5.1.6 (`virtio_net_hdr`, packet transmission and reception), §2.7.7/§2.7.10 (notification suppression).
//!
//! Built on `virtio_drivers::queue::VirtQueue` rather than `VirtIONetRaw`: the latter notifies the device
//! once per buffer (no batching), negotiates `VIRTIO_F_EVENT_IDX` whose notify test in virtio-drivers 0.13
//! (`avail_idx >= avail_event + 1`) stops kicking the device once the 16-bit ring index wraps, and keeps
//! the transport private (no place to program MSI-X vectors between queue setup and `DRIVER_OK`).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::task::Waker;
use hdr::{NetHdr, NetHdrRepr};
use libos::dev::{DeviceError, Gso, GsoKind, NetDevice, NetInfo, NetOffloads, RxFrame};
use virtio_drivers::queue::VirtQueue;
use virtio_drivers::transport::{DeviceStatus, Transport};
use virtio_drivers::{Error as VirtioError, Hal};

use super::init::{self, StartError};
use super::pool::{InFlight, PoolError, TxPool};
use crate::irq::IrqSlot;

/// Index of receiveq1.
pub const QUEUE_RECEIVE: u16 = 0;
/// Index of transmitq1.
pub const QUEUE_TRANSMIT: u16 = 1;

/// `VIRTIO_NET_F_CSUM`: the device completes partial checksums of transmitted packets.
pub const F_CSUM: u64 = 1 << 0;
/// `VIRTIO_NET_F_GUEST_CSUM`: the driver accepts packets with partial checksums.
pub const F_GUEST_CSUM: u64 = 1 << 1;
/// `VIRTIO_NET_F_GUEST_TSO4`: the driver takes TCP/IPv4 frames larger than the MTU (coalesced by the host).
pub const F_GUEST_TSO4: u64 = 1 << 7;
/// `VIRTIO_NET_F_GUEST_TSO6`: the same for TCP/IPv6.
pub const F_GUEST_TSO6: u64 = 1 << 8;
/// `VIRTIO_NET_F_HOST_TSO4`: the device segments large TCP/IPv4 frames.
pub const F_HOST_TSO4: u64 = 1 << 11;
/// `VIRTIO_NET_F_HOST_TSO6`: the same for TCP/IPv6.
pub const F_HOST_TSO6: u64 = 1 << 12;
/// `VIRTIO_NET_F_HOST_ECN`: the device segments frames with ECN bits.
pub const F_HOST_ECN: u64 = 1 << 13;
/// `VIRTIO_NET_F_MTU`: the `mtu` config field is valid.
pub const F_MTU: u64 = 1 << 3;
/// `VIRTIO_NET_F_MAC`: the `mac` config field is valid.
pub const F_MAC: u64 = 1 << 5;
/// `VIRTIO_NET_F_MRG_RXBUF`: the driver can merge receive buffers.
pub const F_MRG_RXBUF: u64 = 1 << 15;
/// `VIRTIO_NET_F_STATUS`: the `status` config field (link state) is valid.
pub const F_STATUS: u64 = 1 << 16;
/// `VIRTIO_NET_F_CTRL_VQ`: a control virtqueue exists.
pub const F_CTRL_VQ: u64 = 1 << 17;
/// `VIRTIO_NET_F_MQ`: multiqueue.
pub const F_MQ: u64 = 1 << 22;
/// `VIRTIO_F_INDIRECT_DESC`.
pub const F_RING_INDIRECT_DESC: u64 = 1 << 28;
/// `VIRTIO_F_EVENT_IDX`.
pub const F_RING_EVENT_IDX: u64 = 1 << 29;
/// `VIRTIO_F_VERSION_1`: a modern (virtio 1.x) device.
pub const F_VERSION_1: u64 = 1 << 32;
/// `VIRTIO_F_ACCESS_PLATFORM`: the device sits behind an IOMMU.
pub const F_ACCESS_PLATFORM: u64 = 1 << 33;

/// Features this driver accepts: checksum offload both ways (a received frame's `DATA_VALID`/`NEEDS_CSUM`
/// becomes [`RxFrame::checksum_valid`]), TCP/IPv4 segmentation offload both ways, and mergeable receive
/// buffers (so a 64 KiB frame from the host fits in page-sized buffers). Indirect descriptors are useless with
/// chains of at most two descriptors; `VIRTIO_F_EVENT_IDX` is left out (see the module docs); IPv6 TSO and
/// `HOST_ECN` too: the stack speaks IPv4 only and sends no ECN. See [`negotiate`] for the dependencies.
pub const DRIVER_FEATURES: u64 =
    F_VERSION_1 | F_MAC | F_STATUS | F_MTU | F_CSUM | F_GUEST_CSUM | F_HOST_TSO4 | F_GUEST_TSO4 | F_MRG_RXBUF;

/// The features to accept from what the device offers: [`DRIVER_FEATURES`] less what lacks its prerequisite
/// (virtio 1.2 §5.1.3.1: `HOST_TSO4` needs `CSUM`, `GUEST_TSO4` needs `GUEST_CSUM`; and this driver takes
/// large received frames only in mergeable buffers).
pub fn negotiate(offered: u64) -> u64 {
    let mut f = offered & DRIVER_FEATURES;
    if f & F_CSUM == 0 {
        f &= !F_HOST_TSO4;
    }
    if f & (F_GUEST_CSUM | F_MRG_RXBUF) != F_GUEST_CSUM | F_MRG_RXBUF {
        f &= !F_GUEST_TSO4;
    }
    f
}

/// Largest frame [`NetDevice::transmit_gso`] takes (bytes): a 64 KiB IPv4 packet plus the Ethernet header.
pub const MAX_GSO_FRAME: usize = 14 + 65535;

const FEATURE_NAMES: &[(u64, &str)] = &[
    (F_CSUM, "CSUM"),
    (F_GUEST_CSUM, "GUEST_CSUM"),
    (F_MTU, "MTU"),
    (F_GUEST_TSO4, "GUEST_TSO4"),
    (F_GUEST_TSO6, "GUEST_TSO6"),
    (F_HOST_TSO4, "HOST_TSO4"),
    (F_HOST_TSO6, "HOST_TSO6"),
    (F_HOST_ECN, "HOST_ECN"),
    (F_MAC, "MAC"),
    (F_MRG_RXBUF, "MRG_RXBUF"),
    (F_STATUS, "STATUS"),
    (F_CTRL_VQ, "CTRL_VQ"),
    (F_MQ, "MQ"),
    (F_RING_INDIRECT_DESC, "INDIRECT_DESC"),
    (F_RING_EVENT_IDX, "EVENT_IDX"),
    (F_VERSION_1, "VERSION_1"),
    (F_ACCESS_PLATFORM, "ACCESS_PLATFORM"),
];

/// Names of the known feature bits in `bits`, comma-separated (unknown bits as `bitN`).
pub fn feature_names(bits: u64) -> String {
    super::feature_list(bits, FEATURE_NAMES)
}

/// Length of `virtio_net_hdr` (bytes): 12 for virtio 1.x or with `MRG_RXBUF` (`num_buffers` present),
/// 10 for legacy devices (virtio 1.2 §5.1.6, "Legacy Interface: Device Operation").
pub fn header_len(features: u64) -> usize {
    if features & (F_VERSION_1 | F_MRG_RXBUF) != 0 {
        hdr::LEN
    } else {
        hdr::LEN_LEGACY
    }
}

/// Ethernet header (14) plus one 802.1Q tag (4): what a frame adds to the IP MTU (bytes).
const L2_OVERHEAD: usize = 18;
/// Default IP MTU when the device reports none (bytes).
const DEFAULT_MTU: usize = 1500;
/// Transmit buffers allocated at start (the rest as they are first needed, [`TxPool::take_free`]).
pub const TX_INITIAL: usize = 4;

/// Receive buffers posted at start; one more is added per frame received until the queue is full (or the heap
/// share, [`ring_buffers`]). Fresh memory is slow to touch under some hypervisors (nested KVM here: ~0.3 ms per
/// page), so a NIC that sees little traffic never pays for a full ring.
pub const RX_INITIAL: usize = 64;
/// Each of the receive and transmit buffer sets takes at most this fraction of the heap (1/32 each). A full
/// 256-entry ring each way is 2 × 394 KiB, which a 2.4 MiB heap (`-m 5`) cannot spare: grown one buffer per
/// frame, it kept the heap under the low-memory mark (`libos::mem::pressure`) for good after ~70 requests. From
/// a 16 MiB heap up the ring is full.
pub const RING_HEAP_DIVISOR: u64 = 32;
/// Fewest buffers each way whatever the heap: enough for a 16-frame burst.
pub const RING_MIN_BUFFERS: usize = 16;

/// Buffers of `buf_len` bytes a queue of `queue_size` gets each way: the heap share [`RING_HEAP_DIVISOR`],
/// between [`RING_MIN_BUFFERS`] and `queue_size`; `queue_size` on the host.
pub fn ring_buffers(queue_size: usize, buf_len: usize) -> usize {
    let Some(heap) = libos::mem::heap_bytes() else { return queue_size };
    let share = usize::try_from(heap / RING_HEAP_DIVISOR).unwrap_or(usize::MAX) / buf_len.max(1);
    share.clamp(RING_MIN_BUFFERS.min(queue_size), queue_size)
}

/// Why a virtio-net device could not be started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetInitError {
    /// A start-up step every virtio driver shares failed (features, virtqueues, configuration space, interrupt).
    Start(StartError),
    /// The receive buffers could not be posted.
    Buffers {
        /// Device name, e.g. "virtio-net@pci:00:03.0".
        device: String,
        /// Why posting failed.
        detail: String,
    },
}

impl From<StartError> for NetInitError {
    fn from(e: StartError) -> Self {
        Self::Start(e)
    }
}

impl fmt::Display for NetInitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Start(e) => write!(f, "{e}"),
            Self::Buffers { device, detail } => write!(f, "{device}: posting receive buffers: {detail}"),
        }
    }
}

/// How the driver learns about used buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IrqAck {
    /// Nothing to acknowledge on the task side (MSI-X, or INTx whose handler reads the ISR byte).
    None,
    /// Edge-triggered line (virtio-mmio through the I/O APIC): the task acknowledges (InterruptStatus →
    /// InterruptACK) before its final look at the used rings, so a buffer used after that raises a new edge.
    Task,
}

/// A virtio-net device with virtqueues of `QS` descriptors.
pub struct VirtioNet<H: Hal, T: Transport, const QS: usize> {
    info: NetInfo,
    transport: T,
    rx: VirtQueue<H, QS>,
    tx: VirtQueue<H, QS>,
    features: u64,
    hdr_len: usize,
    rx_buf_len: usize,
    rx_lent: InFlight<Vec<u8>>,
    /// Receive buffers allocated so far (at most `rx_target`).
    rx_allocated: usize,
    /// Receive buffers to grow to: [`ring_buffers`].
    rx_target: usize,
    /// Receive buffers not yet posted (the queue was full when they were recycled).
    rx_spare: Vec<Vec<u8>>,
    tx_pool: TxPool,
    /// GSO frames lent to the device: (header, frame) per descriptor head.
    tx_gso: InFlight<(Vec<u8>, Vec<u8>)>,
    rx_added: bool,
    tx_added: bool,
    /// Whether used-buffer notifications are enabled on the transmit queue (only while it is full).
    tx_irq: bool,
    ack: IrqAck,
    irq: &'static IrqSlot,
    /// Set on the first protocol violation; every later call returns it.
    broken: Option<DeviceError>,
}

impl<H: Hal, T: Transport, const QS: usize> VirtioNet<H, T, QS> {
    /// Initialises the device (virtio 1.2 §3.1.1): reset, feature negotiation, both virtqueues, MAC/MTU
    /// from the config space, `setup_irq` (e.g. MSI-X vector registers, which must follow queue setup and
    /// precede `DRIVER_OK`), `QS` receive buffers posted, `DRIVER_OK`, receive queue notified.
    /// `name` names the device in logs and errors. Errors: [`NetInitError`]; the device is reset.
    pub fn new(
        mut transport: T,
        name: String,
        irq: &'static IrqSlot,
        ack: IrqAck,
        setup_irq: &mut dyn FnMut() -> Result<(), String>,
    ) -> Result<Self, NetInitError> {
        let features = init::negotiate_features(&mut transport, &name, negotiate, feature_names)?;
        init::check_queue_sizes(&mut transport, &name, &[(QUEUE_RECEIVE, QS), (QUEUE_TRANSMIT, QS)])?;
        let rx = init::new_queue::<H, T, QS>(&mut transport, &name, QUEUE_RECEIVE, "receive queue")?;
        let tx = init::new_queue::<H, T, QS>(&mut transport, &name, QUEUE_TRANSMIT, "transmit queue")?;
        let mac = if features & F_MAC != 0 {
            let mut mac = [0u8; 6];
            for (i, b) in mac.iter_mut().enumerate() {
                *b = transport
                    .read_config_space::<u8>(i)
                    .map_err(|e| init::virtio_failed(&mut transport, &name, "config space (mac)", e))?;
            }
            mac
        } else {
            // No MAC from the device (§5.1.5: the driver picks one): locally administered, unicast.
            [0x02, 0, 0, 0, 0, 1]
        };
        let mtu = if features & F_MTU != 0 {
            let mtu = transport.read_config_space::<u16>(10);
            usize::from(mtu.map_err(|e| init::virtio_failed(&mut transport, &name, "config space (mtu)", e))?)
        } else {
            DEFAULT_MTU
        };
        let hdr_len = header_len(features);
        let buf_len = hdr_len + mtu.max(DEFAULT_MTU) + L2_OVERHEAD;
        let mut dev = Self {
            info: NetInfo {
                name,
                mac,
                mtu,
                offloads: NetOffloads {
                    rx_checksum: features & F_GUEST_CSUM != 0,
                    tx_checksum: features & F_CSUM != 0,
                    tso4: features & F_HOST_TSO4 != 0,
                    rx_gso: features & F_GUEST_TSO4 != 0,
                    // 0: net::gso's own limit, MAX_GSO_FRAME, which virtio-net takes.
                    gso_max_frame: 0,
                },
            },
            transport,
            rx,
            tx,
            features,
            hdr_len,
            rx_buf_len: buf_len,
            rx_lent: InFlight::new(QS),
            rx_allocated: 0,
            rx_target: ring_buffers(QS, buf_len),
            rx_spare: Vec::new(),
            tx_pool: TxPool::new(QS, ring_buffers(QS, buf_len), buf_len),
            tx_gso: InFlight::new(QS),
            rx_added: false,
            tx_added: false,
            tx_irq: false,
            ack,
            irq,
            broken: None,
        };
        init::setup_interrupt(&mut dev.transport, &dev.info.name, setup_irq)?;
        // Transmit completions are reclaimed lazily; interrupts only while the queue is full.
        dev.tx.set_dev_notify(false);
        for _ in 0..RX_INITIAL.min(dev.rx_target) {
            dev.grow_rx()
                .map_err(|e| NetInitError::Buffers { device: dev.info.name.clone(), detail: format!("{e}") })?;
        }
        dev.tx_pool.preallocate(TX_INITIAL);
        dev.transport.finish_init();
        dev.transport.notify(QUEUE_RECEIVE);
        dev.rx_added = false;
        Ok(dev)
    }

    /// Features negotiated with the device.
    pub fn features(&self) -> u64 {
        self.features
    }

    /// Descriptors per virtqueue.
    pub fn queue_size(&self) -> usize {
        QS
    }

    /// One line for the boot log: name, MAC, MTU, queue size, negotiated features.
    pub fn describe(&self) -> String {
        let m = self.info.mac;
        format!(
            "{} mac {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x} mtu {} queue {} features {}",
            self.info.name,
            m[0],
            m[1],
            m[2],
            m[3],
            m[4],
            m[5],
            self.info.mtu,
            QS,
            feature_names(self.features)
        )
    }

    fn protocol(&mut self, queue: u16, detail: impl fmt::Display) -> DeviceError {
        let q = if queue == QUEUE_RECEIVE { "receiveq1" } else { "transmitq1" };
        let e = DeviceError::Protocol { device: self.info.name.clone(), detail: format!("{q}: {detail}") };
        self.broken = Some(e.clone());
        e
    }

    fn check(&self) -> Result<(), DeviceError> {
        match &self.broken {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Makes `buf` available on the receive queue (no notification). A full queue keeps it as a spare.
    fn post_rx(&mut self, mut buf: Vec<u8>) -> Result<(), DeviceError> {
        // SAFETY: the buffer's heap storage is owned by `rx_lent` from here until `receive` takes it back
        // after the device returned this token, and is neither read, written nor freed in between.
        let token = match unsafe { self.rx.add(&[], &mut [&mut buf[..]]) } {
            Ok(t) => t,
            Err(VirtioError::QueueFull) => {
                self.rx_spare.push(buf);
                return Ok(());
            }
            Err(e) => return Err(self.protocol(QUEUE_RECEIVE, format_args!("adding a buffer: {e}"))),
        };
        self.rx_added = true;
        if let Err((e, buf)) = self.rx_lent.insert(token, buf) {
            // The device may write into this buffer: never free it.
            core::mem::forget(buf);
            return Err(self.protocol(QUEUE_RECEIVE, e));
        }
        Ok(())
    }

    /// Allocates one more receive buffer and posts it, while fewer than `QS` exist — unless memory is critical
    /// (`libos::mem::pressure`) or the heap refuses: the ring then stays smaller (a later call grows it) rather
    /// than the VM ending for want of one frame buffer.
    fn grow_rx(&mut self) -> Result<(), DeviceError> {
        if self.rx_allocated < self.rx_target
            && libos::mem::pressure::current() < libos::mem::pressure::Pressure::Critical
        {
            let Some(buf) = libos::mem::try_zeroed(self.rx_buf_len) else { return Ok(()) };
            self.rx_allocated += 1;
            self.post_rx(buf)?;
        }
        Ok(())
    }

    /// Pops every completed transmission and returns its buffer to the pool.
    fn reclaim_tx(&mut self) -> Result<usize, DeviceError> {
        let mut n = 0;
        while let Some(token) = self.tx.peek_used() {
            if let Ok((hdr, frame)) = self.tx_gso.get(token) {
                // SAFETY: the same two slices were added under this token in `transmit_gso`, untouched since.
                let popped = unsafe { self.tx.pop_used(token, &[&hdr[..], &frame[..]], &mut []) };
                if let Err(e) = popped {
                    return Err(self.protocol(QUEUE_TRANSMIT, format_args!("popping used id {token}: {e}")));
                }
                // Cannot fail: `get` just found the token.
                let _ = self.tx_gso.take(token);
                n += 1;
                continue;
            }
            let (index, len) = match self.tx_pool.lent(token) {
                Ok(v) => v,
                Err(e) => return Err(self.protocol(QUEUE_TRANSMIT, used_error(e))),
            };
            // SAFETY: the same buffer slice (same address and length) was added under this token in
            // `transmit`, and the pool has not touched it since.
            let popped = unsafe { self.tx.pop_used(token, &[self.tx_pool.queued(index, len)], &mut []) };
            if let Err(e) = popped {
                return Err(self.protocol(QUEUE_TRANSMIT, format_args!("popping used id {token}: {e}")));
            }
            if let Err(e) = self.tx_pool.complete(token) {
                return Err(self.protocol(QUEUE_TRANSMIT, e));
            }
            n += 1;
        }
        Ok(n)
    }

    fn tx_room(&self) -> bool {
        self.tx_pool.has_free() && self.tx.available_desc() > 0
    }

    /// Frames that can be queued now, counting each as a two-descriptor GSO chain.
    fn tx_slots(&self) -> usize {
        self.tx_pool.free_count().min(self.tx.available_desc() / 2)
    }

    /// Takes back the receive buffer the device used under `token`, with the length it wrote.
    fn pop_rx(&mut self, token: u16) -> Result<(Vec<u8>, usize), DeviceError> {
        let mut buf = match self.rx_lent.take(token) {
            Ok(b) => b,
            Err(e) => return Err(self.protocol(QUEUE_RECEIVE, used_error(e))),
        };
        // SAFETY: `buf` is the buffer (same address and length) added under `token` in `post_rx`.
        match unsafe { self.rx.pop_used(token, &[], &mut [&mut buf[..]]) } {
            Ok(len) => Ok((buf, len as usize)),
            Err(e) => {
                // The device may still write into this buffer: never free it.
                core::mem::forget(buf);
                Err(self.protocol(QUEUE_RECEIVE, format_args!("popping used id {token}: {e}")))
            }
        }
    }

    /// Takes the rest of a frame spread over `count` more mergeable receive buffers (virtio 1.2 §5.1.6.4,
    /// `num_buffers`), appending their bytes to `frame` when `keep` and posting each buffer again. `first`: the
    /// bytes of the first buffer (device header included); errors when the whole exceeds a 64 KiB frame.
    fn take_merged(&mut self, frame: &mut Vec<u8>, first: usize, count: u16, keep: bool) -> Result<(), DeviceError> {
        let mut total = first;
        for i in 1..=count {
            let Some(token) = self.rx.peek_used() else {
                return Err(self.protocol(
                    QUEUE_RECEIVE,
                    format_args!("num_buffers says {} buffers, the used ring has {i}", count + 1),
                ));
            };
            let (buf, used) = self.pop_rx(token)?;
            if used > buf.len() || total + used > MAX_GSO_FRAME + self.hdr_len {
                return Err(self.protocol(
                    QUEUE_RECEIVE,
                    format_args!("used length {used} for id {token} overruns the buffer or a 64 KiB frame"),
                ));
            }
            total += used;
            if keep {
                frame.extend_from_slice(&buf[..used]);
            }
            self.post_rx(buf)?;
        }
        Ok(())
    }

    /// Reclaims transmissions; while `room` is still false, enables transmit interrupts (and acknowledges a
    /// pending edge) and looks once more, so the completion that frees a slot wakes the task. The
    /// acknowledgement also covers receive buffers already used: with the line held high by an
    /// unacknowledged InterruptStatus (virtio-mmio, edge-triggered here), no completion could raise an edge.
    fn make_tx_room(&mut self, room: impl Fn(&Self) -> bool) -> Result<bool, DeviceError> {
        self.reclaim_tx()?;
        if room(self) {
            if self.tx_irq {
                self.tx.set_dev_notify(false);
                self.tx_irq = false;
            }
            return Ok(true);
        }
        if !self.tx_irq {
            self.tx.set_dev_notify(true);
            self.tx_irq = true;
        }
        if self.ack == IrqAck::Task {
            self.transport.ack_interrupt();
        }
        self.reclaim_tx()?;
        Ok(room(self))
    }
}

/// `RxFrame::token` of a frame gathered from several mergeable buffers (its buffer is the driver's to free).
const MERGED: u32 = u32::MAX;

impl<H: Hal, T: Transport, const QS: usize> VirtioNet<H, T, QS> {
    /// Checks a received header for a frame of `len` bytes; `Some(checksum_valid)`, or `None` (logged) when
    /// the frame is to be dropped for a header the spec does not allow.
    fn check_header(&self, raw: &[u8; hdr::LEN], len: usize) -> Option<bool> {
        // Without GUEST_CSUM the device must send flags 0 and GSO_NONE: nothing in the header is used then.
        if self.features & F_GUEST_CSUM == 0 {
            return Some(false);
        }
        match NetHdrRepr::parse(&NetHdr::new_unchecked(&raw[..]), len, QS) {
            Ok(r) => Some(r.checksum_valid()),
            Err(e) => {
                log::debug!("{}: frame dropped: {e}", self.info.name);
                None
            }
        }
    }
}

fn used_error(e: PoolError) -> String {
    format!("used ring names a buffer the driver did not lend: {e}")
}

impl<H: Hal, T: Transport + Send, const QS: usize> NetDevice for VirtioNet<H, T, QS> {
    fn info(&self) -> &NetInfo {
        &self.info
    }

    fn receive(&mut self) -> Result<Option<RxFrame>, DeviceError> {
        self.check()?;
        loop {
            let token = match self.rx.peek_used() {
                Some(t) => t,
                None if self.ack == IrqAck::Task => {
                    // Acknowledge before the last look: a buffer used after this raises a new edge.
                    self.transport.ack_interrupt();
                    match self.rx.peek_used() {
                        Some(t) => t,
                        None => return Ok(None),
                    }
                }
                None => return Ok(None),
            };
            let (buf, used) = self.pop_rx(token)?;
            if used > buf.len() || used < self.hdr_len {
                let len = buf.len();
                let hdr = self.hdr_len;
                return Err(self.protocol(
                    QUEUE_RECEIVE,
                    format_args!("used length {used} for id {token} is outside {hdr}..={len} (header..buffer)"),
                ));
            }
            // A legacy header has no num_buffers: read it as a modern one with num_buffers 1.
            let mut raw = [0u8; hdr::LEN];
            raw[..self.hdr_len].copy_from_slice(&buf[..self.hdr_len]);
            // num_buffers only exists with MRG_RXBUF; a 0 there (the spec says ≥ 1) is read as 1.
            if self.features & F_MRG_RXBUF == 0 || raw[10..12] == [0, 0] {
                raw[10..12].copy_from_slice(&1u16.to_le_bytes());
            }
            let view = NetHdr::new_unchecked(&raw[..]);
            let more = view.num_buffers().saturating_sub(1);
            if more > 0 {
                // A frame spread over several buffers: gathered into one of its own (the buffers go back).
                // Short of memory for it, the frame is dropped (TCP sends it again) rather than the guest.
                let mut frame = Vec::new();
                let keep = frame.try_reserve_exact(MAX_GSO_FRAME + self.hdr_len).is_ok();
                if keep {
                    frame.extend_from_slice(&buf[..used]);
                }
                self.post_rx(buf)?;
                if usize::from(more) >= QS {
                    return Err(self.protocol(QUEUE_RECEIVE, hdr::HdrError::NumBuffers(more + 1)));
                }
                self.take_merged(&mut frame, used, more, keep)?;
                if !keep {
                    log::debug!("{}: frame of {} buffers dropped: no memory to gather it", self.info.name, more + 1);
                    continue;
                }
                let len = frame.len() - self.hdr_len;
                let Some(valid) = self.check_header(&raw, len) else { continue };
                return Ok(Some(RxFrame {
                    buf: frame,
                    offset: self.hdr_len,
                    len,
                    token: MERGED,
                    checksum_valid: valid,
                }));
            }
            if used == self.hdr_len {
                self.post_rx(buf)?; // an empty frame: nothing to hand up
                continue;
            }
            let len = used - self.hdr_len;
            let Some(valid) = self.check_header(&raw, len) else {
                self.post_rx(buf)?;
                continue;
            };
            self.grow_rx()?;
            return Ok(Some(RxFrame {
                buf,
                offset: self.hdr_len,
                len,
                token: u32::from(token),
                checksum_valid: valid,
            }));
        }
    }

    fn recycle(&mut self, frame: RxFrame) -> Result<(), DeviceError> {
        self.check()?;
        if frame.token == MERGED {
            return Ok(()); // gathered from buffers already posted again: freed here
        }
        let mut buf = frame.buf;
        // A buffer of another size (not one of ours) is brought to ours; the device only sees rx_buf_len.
        buf.resize(self.rx_buf_len, 0);
        self.post_rx(buf)
    }

    fn can_transmit(&mut self) -> bool {
        if self.broken.is_some() {
            return false;
        }
        self.tx_room() || self.make_tx_room(Self::tx_room).unwrap_or(false)
    }

    fn transmit_slots(&mut self, want: usize) -> usize {
        if self.broken.is_some() {
            return 0;
        }
        let want = want.max(1);
        if self.tx_slots() < want {
            // Errors leave the device broken; the next call returns 0.
            let _ = self.make_tx_room(|d| d.tx_slots() >= want);
        }
        if self.broken.is_some() {
            return 0;
        }
        self.tx_slots()
    }

    fn transmit_gso(&mut self, mut frame: Vec<u8>, gso: Gso) -> Result<(), (DeviceError, Vec<u8>)> {
        if let Err(e) = self.check() {
            return Err((e, frame));
        }
        let GsoKind::TcpV4 = gso.kind;
        if self.features & F_HOST_TSO4 == 0 || frame.len() > MAX_GSO_FRAME {
            let (device, len) = (self.info.name.clone(), frame.len());
            let max = if self.features & F_HOST_TSO4 == 0 { self.info.mtu + 14 } else { MAX_GSO_FRAME };
            return Err((DeviceError::TooLarge { device, len, max }, frame));
        }
        if self.tx_slots() == 0 && !matches!(self.make_tx_room(|d| d.tx_slots() > 0), Ok(true))
            || self.tx.available_desc() < 2
        {
            return Err((DeviceError::Busy { device: self.info.name.clone() }, frame));
        }
        // §5.1.6.2: GSO needs NEEDS_CSUM; the TCP checksum field holds the pseudo-header sum of the whole.
        let Some(p) = crate::csum::prepare(&mut frame) else {
            let detail = String::from("GSO frame is not TCP over IPv4");
            return Err((DeviceError::Protocol { device: self.info.name.clone(), detail }, frame));
        };
        let repr = NetHdrRepr {
            flags: hdr::F_NEEDS_CSUM,
            gso_type: hdr::GSO_TCPV4,
            hdr_len: gso.hdr_len,
            gso_size: gso.mss,
            csum_start: p.start,
            csum_offset: p.offset,
            num_buffers: 0,
        };
        let mut header = alloc::vec![0u8; self.hdr_len];
        repr.emit(&mut header, self.hdr_len);
        // SAFETY: both buffers stay in `tx_gso`, unmoved and untouched, until `reclaim_tx` pops the token.
        let token = match unsafe { self.tx.add(&[&header[..], &frame[..]], &mut []) } {
            Ok(t) => t,
            Err(VirtioError::QueueFull) => return Err((DeviceError::Busy { device: self.info.name.clone() }, frame)),
            Err(e) => {
                let e = self.protocol(QUEUE_TRANSMIT, format_args!("adding a GSO chain: {e}"));
                return Err((e, frame));
            }
        };
        self.tx_added = true;
        if let Err((e, (_, frame))) = self.tx_gso.insert(token, (header, frame)) {
            // The device may read these buffers: never free them.
            core::mem::forget(frame);
            return Err((self.protocol(QUEUE_TRANSMIT, e), Vec::new()));
        }
        Ok(())
    }

    fn transmit(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> Result<(), DeviceError> {
        self.check()?;
        let max = self.tx_pool.buf_len() - self.hdr_len;
        if len > max {
            return Err(DeviceError::TooLarge { device: self.info.name.clone(), len, max });
        }
        if !self.tx_room() && !self.make_tx_room(Self::tx_room)? {
            return Err(DeviceError::Busy { device: self.info.name.clone() });
        }
        let Some(index) = self.tx_pool.take_free() else {
            return Err(DeviceError::Busy { device: self.info.name.clone() });
        };
        let total = self.hdr_len + len;
        let hdr_len = self.hdr_len;
        let buf = self.tx_pool.buffer_mut(index);
        let (hdr, frame) = buf[..total].split_at_mut(hdr_len);
        fill(frame);
        let mut repr = NetHdrRepr::default(); // flags 0, GSO_NONE, num_buffers 0
        if self.info.offloads.tx_checksum {
            if let Some(p) = crate::csum::prepare(frame) {
                repr.flags = hdr::F_NEEDS_CSUM;
                repr.csum_start = p.start;
                repr.csum_offset = p.offset;
            }
        }
        repr.emit(hdr, hdr_len);
        // SAFETY: the pool keeps this buffer untouched until `reclaim_tx` pops the token.
        let token = match unsafe { self.tx.add(&[self.tx_pool.queued(index, total)], &mut []) } {
            Ok(t) => t,
            Err(VirtioError::QueueFull) => {
                self.tx_pool.put_back(index);
                return Err(DeviceError::Busy { device: self.info.name.clone() });
            }
            Err(e) => {
                self.tx_pool.put_back(index);
                return Err(self.protocol(QUEUE_TRANSMIT, format_args!("adding a buffer: {e}")));
            }
        };
        self.tx_added = true;
        if let Err(e) = self.tx_pool.lend(token, index, total) {
            return Err(self.protocol(QUEUE_TRANSMIT, e));
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), DeviceError> {
        self.check()?;
        self.reclaim_tx()?;
        while let Some(buf) = self.rx_spare.pop() {
            if self.rx.available_desc() == 0 {
                self.rx_spare.push(buf);
                break;
            }
            self.post_rx(buf)?;
        }
        // One notification per queue for everything added since the last flush, unless the device
        // suppressed notifications (VIRTQ_USED_F_NO_NOTIFY, §2.7.10).
        if core::mem::take(&mut self.rx_added) && self.rx.should_notify() {
            self.transport.notify(QUEUE_RECEIVE);
        }
        if core::mem::take(&mut self.tx_added) && self.tx.should_notify() {
            self.transport.notify(QUEUE_TRANSMIT);
        }
        Ok(())
    }

    fn set_waker(&mut self, waker: &Waker) {
        self.irq.set_waker(waker);
    }
}

impl<H: Hal, T: Transport, const QS: usize> Drop for VirtioNet<H, T, QS> {
    fn drop(&mut self) {
        // Reset first: the device must stop using the rings and buffers before they are freed.
        self.transport.set_status(DeviceStatus::empty());
    }
}

pub mod hdr;
#[cfg(test)]
mod tests;
