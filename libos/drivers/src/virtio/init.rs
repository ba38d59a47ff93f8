//! The device initialisation steps every virtio driver here shares, and their error [`StartError`]: feature
//! negotiation, virtqueue size checks, virtqueue creation, interrupt setup, each setting `FAILED` when it fails.
//! Source: virtio 1.2 §3.1.1 (driver requirements: device initialization), §2.1 (device status field), §2.7
//! (split virtqueues), §4.2.4 (legacy virtio-mmio guest page size).
//!
//! A driver runs the steps in its own order around its own ones (configuration space, buffers):
//! [`negotiate_features`], [`check_queue_sizes`], [`new_queue`] per virtqueue, [`setup_interrupt`], then
//! `DRIVER_OK`. Its error enum wraps [`StartError`] in a `Start` variant.

use alloc::string::String;
use core::fmt;
use virtio_drivers::queue::VirtQueue;
use virtio_drivers::transport::{DeviceStatus, Transport};
use virtio_drivers::{Error as VirtioError, Hal};

use super::net::F_VERSION_1;

/// Why a virtio device could not be started, in a step every driver shares (virtio 1.2 §3.1.1). The device is
/// left `FAILED` (§2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartError {
    /// A modern (`VIRTIO_F_VERSION_1`) device did not accept the driver's feature subset: `FEATURES_OK` did not
    /// stick (§3.1.1 step 6).
    FeaturesRejected {
        /// Device name, e.g. "virtio-net@pci:00:03.0".
        device: String,
        /// The feature bits the driver wrote (the device's, narrowed to the driver's subset).
        features: u64,
        /// Their names from the driver's feature-bit table, comma-separated (e.g. "MAC,STATUS,VERSION_1").
        names: String,
    },
    /// A virtqueue is smaller than the driver needs (`queue_size` / `QueueNumMax`, §4.1.4.3, §4.2.2).
    QueueTooSmall {
        /// Device name, e.g. "virtio-blk@pci:00:04.0".
        device: String,
        /// Virtqueue index (the device type's numbering, e.g. 0 = receiveq1 for virtio-net).
        queue: u16,
        /// The queue's maximum size as the device reports it (descriptors).
        max: u32,
        /// The size the driver needs (descriptors).
        need: usize,
    },
    /// `virtio-drivers` refused an operation of the start-up (virtqueue setup, configuration space read).
    Virtio {
        /// Device name, e.g. "virtio-scsi@mmio:0xfeb00000".
        device: String,
        /// What was being set up or read, e.g. "request queue" or "config space (mac)".
        what: &'static str,
        /// The `virtio-drivers` error.
        error: VirtioError,
    },
    /// Interrupt setup (MSI-X vectors, an I/O APIC line) failed.
    Interrupt {
        /// Device name, e.g. "virtio-balloon@pci:00:05.0".
        device: String,
        /// Why interrupt setup failed.
        detail: String,
    },
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::FeaturesRejected { device, names, .. } => write!(f, "{device}: device refused features {names}"),
            Self::QueueTooSmall { device, queue, max, need } => {
                write!(f, "{device}: virtqueue {queue} holds at most {max} descriptors, the driver needs {need}")
            }
            Self::Virtio { device, what, error } => write!(f, "{device}: {what}: {error}"),
            Self::Interrupt { device, detail } => write!(f, "{device}: interrupt setup: {detail}"),
        }
    }
}

/// Sets `FAILED` on the device (virtio 1.2 §2.1: the driver gave up on it) and returns `error`.
pub fn failed<T: Transport, E>(transport: &mut T, error: E) -> E {
    transport.set_status(DeviceStatus::FAILED);
    error
}

/// [`StartError::Virtio`] for `what` on `device` after setting `FAILED`: the mapping of a configuration space
/// read's error.
pub fn virtio_failed<T: Transport>(
    transport: &mut T,
    device: &str,
    what: &'static str,
    error: VirtioError,
) -> StartError {
    failed(transport, StartError::Virtio { device: device.into(), what, error })
}

/// Steps 1-6 of virtio 1.2 §3.1.1: reset, `ACKNOWLEDGE | DRIVER`, the device's feature bits narrowed by
/// `select` (the driver's subset and its dependencies) written back, `FEATURES_OK`. Returns the features written.
/// Errors: [`StartError::FeaturesRejected`] (names from `names`, the driver's feature-bit table) when a modern
/// device cleared `FEATURES_OK`; legacy devices have no such handshake.
pub fn negotiate_features<T: Transport>(
    transport: &mut T,
    device: &str,
    select: impl FnOnce(u64) -> u64,
    names: fn(u64) -> String,
) -> Result<u64, StartError> {
    transport.set_status(DeviceStatus::empty());
    transport.set_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER);
    let features = select(transport.read_device_features());
    transport.write_driver_features(features);
    transport.set_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::FEATURES_OK);
    if features & F_VERSION_1 != 0 && !transport.get_status().contains(DeviceStatus::FEATURES_OK) {
        return Err(failed(
            transport,
            StartError::FeaturesRejected { device: device.into(), features, names: names(features) },
        ));
    }
    Ok(features)
}

/// Sets the guest page size (legacy virtio-mmio only, §4.2.4) and checks each `(virtqueue index, descriptors
/// needed)` of `queues` against the queue's maximum size, in order.
/// Errors: [`StartError::QueueTooSmall`] for the first queue too small.
pub fn check_queue_sizes<T: Transport>(
    transport: &mut T,
    device: &str,
    queues: &[(u16, usize)],
) -> Result<(), StartError> {
    transport.set_guest_page_size(virtio_drivers::PAGE_SIZE as u32);
    for &(queue, need) in queues {
        let max = transport.max_queue_size(queue);
        if (max as usize) < need {
            return Err(failed(transport, StartError::QueueTooSmall { device: device.into(), queue, max, need }));
        }
    }
    Ok(())
}

/// Allocates virtqueue `queue` with `SIZE` descriptors and hands it to the device (§3.1.1 step 7, §2.7), without
/// indirect descriptors or `VIRTIO_F_EVENT_IDX`. `what` names it in the error (e.g. "receive queue").
/// Errors: [`StartError::Virtio`] (DMA allocation, a queue already in use or too small).
pub fn new_queue<H: Hal, T: Transport, const SIZE: usize>(
    transport: &mut T,
    device: &str,
    queue: u16,
    what: &'static str,
) -> Result<VirtQueue<H, SIZE>, StartError> {
    VirtQueue::new(transport, queue, false, false).map_err(|error| virtio_failed(transport, device, what, error))
}

/// Runs `setup_irq` (e.g. programming MSI-X vectors, which must follow queue setup and precede `DRIVER_OK`).
/// Errors: [`StartError::Interrupt`] with its text.
pub fn setup_interrupt<T: Transport>(
    transport: &mut T,
    device: &str,
    setup_irq: &mut dyn FnMut() -> Result<(), String>,
) -> Result<(), StartError> {
    setup_irq().map_err(|detail| failed(transport, StartError::Interrupt { device: device.into(), detail }))
}
