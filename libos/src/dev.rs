//! Device traits that platforms implement and `net`/`fs` consume without knowing the platform, and the
//! registry platforms fill at boot. A NIC is a [`NetDevice`] whether it is virtio-net (virtio 1.2 §5.1),
//! Xen netfront (`xen/include/public/io/netif.h`) or Hyper-V netvsc (NVSP + RNDIS).

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::task::Waker;
use spin::Mutex;

/// Errors a device reports; each names the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceError {
    /// No free slot in the transmit ring right now; retry after a completion wakes the waker.
    Busy { device: String },
    /// The frame does not fit the device's buffers (bytes).
    TooLarge { device: String, len: usize, max: usize },
    /// The device or its backend broke the protocol (a bad ring index, length or status); the device is
    /// unusable from here on.
    Protocol { device: String, detail: String },
    /// The device reported an I/O error.
    Io { device: String, detail: String },
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
    /// The device verifies TCP/UDP checksums of received frames (a frame reaching us is good).
    pub rx_checksum: bool,
    /// The device fills TCP/UDP checksums of transmitted frames.
    pub tx_checksum: bool,
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

/// Devices found at boot. Platforms push; `net`/`fs` take.
#[derive(Default)]
pub struct Devices {
    /// NICs in discovery order.
    pub net: Vec<Box<dyn NetDevice>>,
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
