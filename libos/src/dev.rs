//! Device traits that drivers (the `drivers` crate's and the platforms') implement and `net`/`fs` consume
//! without knowing the platform, and the registry drivers fill at boot. A NIC is a [`NetDevice`] whether it is virtio-net (virtio 1.2 §5.1),
//! Xen netfront (`xen/include/public/io/netif.h`) or Hyper-V netvsc (NVSP + RNDIS); a disk is a [`BlockDevice`]
//! whether it is virtio-blk (virtio 1.2 §5.2), Xen blkfront (`xen/include/public/io/blkif.h`) or Hyper-V storvsc.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::future::Future;
use core::pin::Pin;
use core::task::Waker;
use spin::Mutex;

/// Errors a device reports; each names the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceError {
    /// No free slot in the transmit ring right now; retry after a completion wakes the waker.
    Busy {
        /// Device name, e.g. "virtio-net@pci:00:03.0".
        device: String,
    },
    /// The frame does not fit the device's buffers (bytes).
    TooLarge {
        /// Device name, e.g. "virtio-net@pci:00:03.0".
        device: String,
        /// Frame length asked for (bytes).
        len: usize,
        /// Largest frame the device's buffers hold (bytes).
        max: usize,
    },
    /// The device or its backend broke the protocol (a bad ring index, length or status); the device is
    /// unusable from here on.
    Protocol {
        /// Device name, e.g. "netvsc@vmbus:14".
        device: String,
        /// What was wrong, with the offending value.
        detail: String,
    },
    /// The device reported an I/O error.
    Io {
        /// Device name, e.g. "xen-vif0".
        device: String,
        /// The device's error, as it reported it.
        detail: String,
    },
}

impl fmt::Display for DeviceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Busy { device } => write!(f, "{device}: transmit ring full"),
            Self::TooLarge { device, len, max } => write!(f, "{device}: frame of {len} bytes exceeds {max}"),
            Self::Protocol { device, detail } => write!(f, "{device}: protocol violation: {detail}"),
            Self::Io { device, detail } => write!(f, "{device}: I/O error: {detail}"),
        }
    }
}

/// Offloads a NIC offers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetOffloads {
    /// Received frames may carry [`RxFrame::checksum_valid`]: the device verified their TCP/UDP checksum
    /// (virtio `VIRTIO_NET_F_GUEST_CSUM`, netif `NETRXF_data_validated`, an RNDIS checksum info). Frames without
    /// the flag still need checking by software.
    pub rx_checksum: bool,
    /// The device fills TCP/UDP checksums of transmitted frames.
    pub tx_checksum: bool,
    /// The device segments TCP over IPv4 ([`NetDevice::transmit_gso`] with [`GsoKind::TcpV4`]): virtio
    /// `VIRTIO_NET_F_HOST_TSO4`, netif `feature-gso-tcpv4`, RNDIS LSOv2.
    pub tso4: bool,
    /// Received frames may be TCP segments larger than the MTU that the host coalesced (virtio
    /// `VIRTIO_NET_F_GUEST_TSO4` with mergeable receive buffers).
    pub rx_gso: bool,
    /// Largest frame [`NetDevice::transmit_gso`] takes (bytes, Ethernet header included), when below
    /// [`MAX_GSO_FRAME`]; 0 means [`MAX_GSO_FRAME`] (see [`NetOffloads::gso_max_frame`]).
    pub gso_max_frame: usize,
}

/// Largest GSO frame (bytes): the IPv4 total length field's limit plus the 14-byte Ethernet header.
pub const MAX_GSO_FRAME: usize = 14 + 65535;

impl NetOffloads {
    /// The largest frame [`NetDevice::transmit_gso`] takes (bytes): `gso_max_frame`, or [`MAX_GSO_FRAME`]
    /// when it is 0 or larger.
    pub fn gso_max_frame(&self) -> usize {
        match self.gso_max_frame {
            0 => MAX_GSO_FRAME,
            n => n.min(MAX_GSO_FRAME),
        }
    }
}

/// The kind of segmentation a large transmitted frame asks for (virtio 1.2 §5.1.6 `gso_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GsoKind {
    /// TCP over IPv4 (`VIRTIO_NET_HDR_GSO_TCPV4`).
    TcpV4,
}

/// How the device cuts a large TCP frame into segments: every segment gets a copy of the first `hdr_len`
/// bytes (Ethernet, IP and TCP headers) with the IP length, IP ID, TCP sequence number, PSH/FIN (last segment
/// only) and checksums made right, and at most `mss` bytes of the payload. Source: virtio 1.2 §5.1.6.2
/// (`hdr_len`, `gso_size`), `xen/include/public/io/netif.h` (`XEN_NETIF_EXTRA_TYPE_GSO`), MS-RNDIS LSOv2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gso {
    /// Protocol of the frame.
    pub kind: GsoKind,
    /// Length of the Ethernet + IP + TCP headers (bytes).
    pub hdr_len: u16,
    /// TCP payload per segment (bytes): the connection's MSS.
    pub mss: u16,
}

/// What a NIC is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetInfo {
    /// Name for logs and errors, e.g. "virtio-net@mmio:0xfeb00e00".
    pub name: String,
    /// MAC address.
    pub mac: [u8; 6],
    /// IP MTU (bytes, without the 14-byte Ethernet header), e.g. 1500.
    pub mtu: usize,
    /// Offloads in effect.
    pub offloads: NetOffloads,
}

/// A received frame lent by the device: `buf[offset..offset + len]` is the Ethernet frame (no device
/// header). Give it back with [`NetDevice::recycle`] so the buffer can be posted again without a copy.
pub struct RxFrame {
    /// The whole receive buffer.
    pub buf: Vec<u8>,
    /// Offset of the frame in `buf` (bytes).
    pub offset: usize,
    /// Frame length (bytes).
    pub len: usize,
    /// Device-private token identifying the buffer's slot.
    pub token: u32,
    /// The TCP/UDP checksum is known good: the device verified it (virtio `VIRTIO_NET_HDR_F_DATA_VALID`) or
    /// the frame never crossed a wire (virtio `VIRTIO_NET_HDR_F_NEEDS_CSUM` from the host's own stack). False
    /// means unknown, never "bad".
    pub checksum_valid: bool,
}

impl RxFrame {
    /// The Ethernet frame.
    pub fn frame(&self) -> &[u8] {
        &self.buf[self.offset..self.offset + self.len]
    }
}

/// A network interface card, polled by the net task. Methods never block.
pub trait NetDevice: Send {
    /// Identity and capabilities.
    fn info(&self) -> &NetInfo;

    /// Takes the next received frame, if any. Errors: [`DeviceError::Protocol`]/[`DeviceError::Io`].
    fn receive(&mut self) -> Result<Option<RxFrame>, DeviceError>;

    /// Returns a frame's buffer for reuse (posted to the device at the next [`flush`](Self::flush)).
    fn recycle(&mut self, frame: RxFrame) -> Result<(), DeviceError>;

    /// Whether a transmit slot is free.
    fn can_transmit(&mut self) -> bool;

    /// How many frames (each possibly a [`transmit_gso`](Self::transmit_gso) frame) could be queued now. When
    /// that is fewer than `want`, the device makes sure the completion that frees a slot wakes the waker
    /// ([`set_waker`](Self::set_waker)): a caller waiting for `want` slots (at most a few; the net stack asks
    /// for one per open merged frame plus two) is never left asleep with completions pending.
    fn transmit_slots(&mut self, want: usize) -> usize {
        let _ = want;
        usize::from(self.can_transmit())
    }

    /// Queues `frame` (an Ethernet frame, no device header, at most 64 KiB) for the device to cut into
    /// segments as `gso` says; the device completes the TCP checksum of each. Only for devices whose
    /// [`NetOffloads::tso4`] is set. The buffer is the device's until the transmission completes. Errors:
    /// [`DeviceError::Busy`] (the frame is handed back), [`DeviceError::TooLarge`] when the device cannot
    /// segment (the default).
    fn transmit_gso(&mut self, frame: Vec<u8>, gso: Gso) -> Result<(), (DeviceError, Vec<u8>)> {
        let _ = gso;
        let max = self.info().mtu + 14;
        Err((DeviceError::TooLarge { device: self.info().name.clone(), len: frame.len(), max }, frame))
    }

    /// Queues one frame of `len` bytes that `fill` writes (an Ethernet frame, no device header). The device
    /// is notified at the next [`flush`](Self::flush). Errors: [`DeviceError::Busy`] when no slot is free,
    /// [`DeviceError::TooLarge`].
    fn transmit(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> Result<(), DeviceError>;

    /// Reclaims completed transmissions, posts recycled receive buffers, and notifies the device once for
    /// everything queued since the last call (virtio event suppression / `RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`).
    fn flush(&mut self) -> Result<(), DeviceError>;

    /// Registers the waker the device's interrupt handler wakes on receive or transmit completion.
    fn set_waker(&mut self, waker: &Waker);
}

/// Errors a block device reports; each names the device, and those about a request name its first sector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockError {
    /// The request reaches past the end of the device: `count` sectors from `sector`, capacity in sectors.
    OutOfRange {
        /// Device name, e.g. "virtio-blk@pci:00:04.0".
        device: String,
        /// First sector of the request (units of the device's `sector_size`).
        sector: u64,
        /// Sectors in the request.
        count: u64,
        /// Device capacity (sectors).
        capacity: u64,
    },
    /// The buffer length (bytes) is not a non-zero multiple of the sector size.
    Misaligned {
        /// Device name, e.g. "virtio-blk@pci:00:04.0".
        device: String,
        /// Buffer length (bytes).
        len: usize,
        /// The device's logical sector size (bytes).
        sector_size: u32,
    },
    /// The device is read-only (virtio `VIRTIO_BLK_F_RO`, a read-only Xen vbd, ...).
    ReadOnly {
        /// Device name, e.g. "xen-vbd51712".
        device: String,
    },
    /// The device completed the request with an error status (virtio `VIRTIO_BLK_S_IOERR`, blkif
    /// `BLKIF_RSP_ERROR`, a SCSI check condition).
    Io {
        /// Device name, e.g. "storvsc@vmbus:15".
        device: String,
        /// First sector of the failed request (units of the device's `sector_size`).
        sector: u64,
        /// The device's status, e.g. "backend status -1" or the SCSI sense data.
        detail: String,
    },
    /// The device does not support the request (e.g. a discard).
    Unsupported {
        /// Device name, e.g. "virtio-blk@mmio:0xfeb00000".
        device: String,
        /// The request kind, e.g. "discard" or "flush".
        what: &'static str,
    },
    /// The device or its backend broke the protocol (bad ring index, id or length); the device is unusable.
    Protocol {
        /// Device name, e.g. "xen-vbd51712".
        device: String,
        /// What was wrong, with the offending index, id or length.
        detail: String,
    },
}

impl fmt::Display for BlockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutOfRange { device, sector, count, capacity } => {
                write!(f, "{device}: {count} sectors at sector {sector} exceed capacity of {capacity} sectors")
            }
            Self::Misaligned { device, len, sector_size } => {
                write!(f, "{device}: buffer of {len} bytes is not a multiple of the {sector_size}-byte sector")
            }
            Self::ReadOnly { device } => write!(f, "{device}: device is read-only"),
            Self::Io { device, sector, detail } => write!(f, "{device}: I/O error at sector {sector}: {detail}"),
            Self::Unsupported { device, what } => write!(f, "{device}: {what} not supported"),
            Self::Protocol { device, detail } => write!(f, "{device}: protocol violation: {detail}"),
        }
    }
}

/// What a disk is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockInfo {
    /// Name for logs and errors, e.g. "virtio-blk@pci:00:02.0".
    pub name: String,
    /// Logical sector size (bytes): the unit of `sector` numbers and buffer lengths, e.g. 512.
    pub sector_size: u32,
    /// Capacity (sectors of `sector_size` bytes).
    pub capacity: u64,
    /// Writes are refused with [`BlockError::ReadOnly`].
    pub read_only: bool,
    /// The device has a volatile write cache that [`BlockDevice::flush`] empties (virtio `VIRTIO_BLK_F_FLUSH`,
    /// blkif `feature-flush-cache`). When false, a completed write is already durable and `flush` is a no-op.
    pub flush: bool,
    /// Largest single request (bytes); larger requests are split by the driver.
    pub max_transfer: usize,
}

impl BlockInfo {
    /// Capacity in bytes.
    pub fn bytes(&self) -> u64 {
        self.capacity * self.sector_size as u64
    }

    /// Checks a request of `len` bytes at `sector` against size and alignment; the check every driver makes
    /// before touching its ring.
    ///
    /// # Errors
    /// [`BlockError::Misaligned`] unless `len` is a non-zero multiple of the sector size;
    /// [`BlockError::OutOfRange`] when the request ends past the capacity.
    pub fn check(&self, sector: u64, len: usize) -> Result<(), BlockError> {
        let ss = self.sector_size as usize;
        if len == 0 || ss == 0 || !len.is_multiple_of(ss) {
            return Err(BlockError::Misaligned { device: self.name.clone(), len, sector_size: self.sector_size });
        }
        let count = (len / ss) as u64;
        if sector.checked_add(count).is_none_or(|end| end > self.capacity) {
            return Err(BlockError::OutOfRange { device: self.name.clone(), sector, count, capacity: self.capacity });
        }
        Ok(())
    }
}

/// The future a [`BlockDevice`] request returns.
pub type BlockFuture<'a> = Pin<Box<dyn Future<Output = Result<(), BlockError>> + Send + 'a>>;

/// A disk. Requests take `&self` so several can be in flight at once from different tasks; each future
/// completes when the device has completed the request (interrupt-driven, never by busy polling).
pub trait BlockDevice: Send + Sync {
    /// Identity, geometry and capabilities.
    fn info(&self) -> &BlockInfo;

    /// Reads `buf.len() / sector_size` sectors starting at `sector` into `buf`.
    /// Errors: [`BlockError::Misaligned`], [`BlockError::OutOfRange`], [`BlockError::Io`], [`BlockError::Protocol`].
    fn read<'a>(&'a self, sector: u64, buf: &'a mut [u8]) -> BlockFuture<'a>;

    /// Writes `buf` to the sectors starting at `sector`. Completion means the device accepted the data; it is
    /// durable only after a following [`flush`](Self::flush) completes (when [`BlockInfo::flush`] is set).
    /// Errors: as for `read`, plus [`BlockError::ReadOnly`].
    fn write<'a>(&'a self, sector: u64, buf: &'a [u8]) -> BlockFuture<'a>;

    /// Empties the device's volatile write cache (virtio `VIRTIO_BLK_T_FLUSH`, blkif
    /// `BLKIF_OP_FLUSH_DISKCACHE`, SCSI SYNCHRONIZE CACHE): every write completed before this call is durable
    /// when the future completes. Errors: [`BlockError::Io`], [`BlockError::Protocol`].
    fn flush(&self) -> BlockFuture<'_>;
}

/// Devices found at boot. Platforms push; `net`/`fs` take.
#[derive(Default)]
pub struct Devices {
    /// NICs in discovery order.
    pub net: Vec<Box<dyn NetDevice>>,
    /// Disks in discovery order.
    pub block: Vec<Arc<dyn BlockDevice>>,
}

static DEVICES: Mutex<Option<Devices>> = Mutex::new(None);

/// Adds a NIC to the registry.
pub fn register_net(dev: Box<dyn NetDevice>) {
    DEVICES.lock().get_or_insert_with(Devices::default).net.push(dev);
}

/// Takes all registered NICs (each can be owned by one stack only).
pub fn take_net() -> Vec<Box<dyn NetDevice>> {
    DEVICES.lock().as_mut().map(|d| core::mem::take(&mut d.net)).unwrap_or_default()
}

/// Adds a disk to the registry.
pub fn register_block(dev: Arc<dyn BlockDevice>) {
    DEVICES.lock().get_or_insert_with(Devices::default).block.push(dev);
}

/// The registered disks in discovery order (shared handles; the registry keeps its own).
pub fn block_devices() -> Vec<Arc<dyn BlockDevice>> {
    DEVICES.lock().as_ref().map(|d| d.block.clone()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> BlockInfo {
        BlockInfo {
            name: "disk".into(),
            sector_size: 512,
            capacity: 100,
            read_only: false,
            flush: true,
            max_transfer: 65536,
        }
    }

    #[test]
    fn check_accepts_whole_sectors_inside_the_disk() {
        assert_eq!(info().check(0, 512), Ok(()));
        assert_eq!(info().check(99, 512), Ok(()));
        assert_eq!(info().check(0, 512 * 100), Ok(()));
        assert_eq!(info().bytes(), 51200);
    }

    #[test]
    fn check_rejects_partial_sectors_and_overruns() {
        assert!(matches!(info().check(0, 0), Err(BlockError::Misaligned { len: 0, .. })));
        assert!(matches!(info().check(0, 511), Err(BlockError::Misaligned { .. })));
        assert!(matches!(info().check(100, 512), Err(BlockError::OutOfRange { sector: 100, count: 1, .. })));
        assert!(matches!(info().check(u64::MAX, 512), Err(BlockError::OutOfRange { .. })));
        let e = info().check(99, 1024).unwrap_err();
        assert_eq!(e.to_string(), "disk: 2 sectors at sector 99 exceed capacity of 100 sectors");
    }
}
