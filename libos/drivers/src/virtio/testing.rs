//! Test doubles shared by the virtio driver tests: an identity [`TestHal`] over the host heap, a
//! [`MockTransport`] that records the registers a driver writes (virtio 1.2 §4.1.4, §4.2.2), and the device
//! side of split virtqueues — walking descriptor chains from the available ring and writing the used ring
//! (virtio 1.2 §2.7.5, §2.7.6, §2.7.8) — in host memory that the HAL shares by identity. Host tests and the
//! fuzz targets only (feature `testing`).
extern crate std;

use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};
use core::task::Waker;
use core::task::{Context, Poll};
use libos::dev::{BlockError, BlockFuture};
use std::sync::Mutex;
use std::task::Wake;
use virtio_drivers::transport::{DeviceStatus, DeviceType, InterruptStatus, Transport};
use virtio_drivers::{BufferDirection, Error as VirtioError, Hal, PhysAddr, PAGE_SIZE};
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// Identity HAL over the host heap: "physical" addresses are host pointers.
pub struct TestHal;

// SAFETY: zeroed page-aligned allocations freed with the same layout; buffers shared by address.
unsafe impl Hal for TestHal {
    fn dma_alloc(pages: usize, _d: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let layout = std::alloc::Layout::from_size_align(pages * PAGE_SIZE, PAGE_SIZE).unwrap();
        // SAFETY: non-zero size.
        let p = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) }).unwrap();
        (p.as_ptr() as PhysAddr, p)
    }
    unsafe fn dma_dealloc(_paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) -> i32 {
        let layout = std::alloc::Layout::from_size_align(pages * PAGE_SIZE, PAGE_SIZE).unwrap();
        // SAFETY: allocated in `dma_alloc` with this layout.
        unsafe { std::alloc::dealloc(vaddr.as_ptr(), layout) };
        0
    }
    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        NonNull::new(paddr as *mut u8).unwrap()
    }
    unsafe fn share(buffer: NonNull<[u8]>, _d: BufferDirection) -> PhysAddr {
        buffer.as_ptr() as *mut u8 as PhysAddr
    }
    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _d: BufferDirection) {}
}

// Device-side ring access. SAFETY (for all helpers): the addresses come from `queue_set`, i.e. rings the
// driver allocated through `TestHal` (host heap, identity "physical" addresses) and keeps alive while the
// test runs; descriptor addresses point at buffers the driver lent and keeps alive until it pops the chain.
/// Reads a `u16` the driver shares.
pub fn rd16(a: u64) -> u16 {
    // SAFETY: see above.
    unsafe { core::ptr::read_volatile(a as *const u16) }
}
/// Writes a `u16` the driver shares.
pub fn wr16(a: u64, v: u16) {
    // SAFETY: see above.
    unsafe { core::ptr::write_volatile(a as *mut u16, v) }
}
/// Writes a `u32` the driver shares.
pub fn wr32(a: u64, v: u32) {
    // SAFETY: see above.
    unsafe { core::ptr::write_volatile(a as *mut u32, v) }
}
/// Copies `len` bytes out of driver memory.
pub fn read_mem(addr: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0; len];
    // SAFETY: see above; `len` is the descriptor's length.
    unsafe { core::ptr::copy_nonoverlapping(addr as *const u8, v.as_mut_ptr(), len) };
    v
}
/// Copies `bytes` into driver memory.
pub fn write_mem(addr: u64, bytes: &[u8]) {
    // SAFETY: see above; callers check the length against the descriptor.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), addr as *mut u8, bytes.len()) };
}
/// Reads a little-endian `u32` at the start of `b` (at least 4 bytes).
pub fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes(b[..4].try_into().unwrap())
}
/// Reads a little-endian `u64` at the start of `b` (at least 8 bytes).
pub fn le64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b[..8].try_into().unwrap())
}

/// `VIRTQ_DESC_F_NEXT` (virtio 1.2 §2.7.5).
pub const VIRTQ_DESC_F_NEXT: u16 = 1;
/// `VIRTQ_DESC_F_WRITE`: device-writable buffer (virtio 1.2 §2.7.5).
pub const VIRTQ_DESC_F_WRITE: u16 = 2;

/// One descriptor of a chain (virtio 1.2 §2.7.5 `struct virtq_desc`).
#[derive(Debug, Clone, Copy)]
pub struct Desc {
    /// Buffer address (identity "physical" address: a host pointer).
    pub addr: u64,
    /// Buffer length (bytes).
    pub len: u32,
    /// `VIRTQ_DESC_F_*` flags.
    pub flags: u16,
}

/// A split virtqueue as the device sees it: the ring addresses from `queue_set` and its own position.
#[derive(Default, Clone, Copy)]
pub struct Queue {
    /// Queue size (descriptors).
    pub size: u32,
    /// Descriptor table address.
    pub desc: u64,
    /// Driver area (available ring) address.
    pub driver: u64,
    /// Device area (used ring) address.
    pub device: u64,
    /// `queue_ready` as the driver set it.
    pub ready: bool,
    /// Device's next index into the available ring.
    pub last_avail: u16,
}

impl Queue {
    /// Takes the next available chain (§2.7.6, §2.7.13.2), walking `next` links (§2.7.5): its head and
    /// descriptors. `None` when the driver made nothing new available.
    pub fn take(&mut self) -> Option<(u16, Vec<Desc>)> {
        if rd16(self.driver + 2) == self.last_avail {
            return None;
        }
        let head = rd16(self.driver + 4 + 2 * u64::from(self.last_avail % self.size as u16));
        self.last_avail = self.last_avail.wrapping_add(1);
        let mut descs = Vec::new();
        let mut i = head;
        loop {
            let da = self.desc + 16 * u64::from(i);
            let d = Desc { addr: le64(&read_mem(da, 8)), len: le32(&read_mem(da + 8, 4)), flags: rd16(da + 12) };
            descs.push(d);
            assert!(descs.len() <= self.size as usize, "descriptor loop");
            if d.flags & VIRTQ_DESC_F_NEXT == 0 {
                return Some((head, descs));
            }
            i = rd16(da + 14);
        }
    }

    /// Puts `(id, len)` on the used ring (§2.7.8).
    pub fn push_used(&self, id: u32, len: u32) {
        let idx = rd16(self.device + 2);
        let slot = u64::from(idx % self.size as u16);
        wr32(self.device + 4 + 8 * slot, id);
        wr32(self.device + 8 + 8 * slot, len);
        core::sync::atomic::fence(Ordering::SeqCst);
        wr16(self.device + 2, idx.wrapping_add(1));
    }
}

/// Registers of a mock virtio device plus `X`, the device-specific state (e.g. a disk).
#[derive(Default)]
pub struct MockDevice<X> {
    /// Device type the transport reports (`None`: invalid).
    pub device_type: Option<DeviceType>,
    /// Feature bits the device offers (virtio 1.2 §2.2).
    pub device_features: u64,
    /// Feature bits the driver accepted.
    pub driver_features: u64,
    /// Device status register (virtio 1.2 §2.1).
    pub status: u32,
    /// Drop `FEATURES_OK` when the driver sets it (a device refusing the feature subset, §3.1.1 step 6).
    pub refuse_features: bool,
    /// Largest queue size the device offers.
    pub queue_max: u32,
    /// The virtqueues, by index.
    pub queues: Vec<Queue>,
    /// Notifications per queue.
    pub notifies: Vec<u32>,
    /// Device configuration space bytes.
    pub config: Vec<u8>,
    /// ISR status register (virtio 1.2 §4.1.4.5).
    pub isr: u32,
    /// `ack_interrupt` calls.
    pub acks: u32,
    /// Called after each notification with the transport and the queue (a device model that serves at once).
    pub on_notify: Option<fn(&MockTransport<X>, u16)>,
    /// Device-specific state (e.g. a disk).
    pub ext: X,
}

/// A `Transport` over a shared [`MockDevice`]: the test keeps a clone to play the device side.
pub struct MockTransport<X>(pub Arc<Mutex<MockDevice<X>>>);

// Not derived: a clone shares the device, so `X` need not be `Clone`.
impl<X> Clone for MockTransport<X> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<X: Default> MockTransport<X> {
    /// A device of `device_type` with `queues` virtqueues of at most 256 descriptors, offering `features`,
    /// with configuration space `config` and device state `ext`.
    pub fn new(device_type: DeviceType, queues: usize, features: u64, config: Vec<u8>, ext: X) -> Self {
        Self(Arc::new(Mutex::new(MockDevice {
            device_type: Some(device_type),
            device_features: features,
            queue_max: 256,
            queues: vec![Queue::default(); queues],
            notifies: vec![0; queues],
            config,
            ext,
            ..Default::default()
        })))
    }
}

impl<X> MockTransport<X> {
    /// The queue as last set by the driver.
    pub fn q(&self, queue: u16) -> Queue {
        self.0.lock().unwrap().queues[usize::from(queue)]
    }

    /// Takes the next available chain of `queue` (see [`Queue::take`]).
    pub fn take_chain(&self, queue: u16) -> Option<(u16, Vec<Desc>)> {
        self.0.lock().unwrap().queues[usize::from(queue)].take()
    }

    /// Puts `(id, len)` on the used ring of `queue` (§2.7.8) and raises the used-buffer bit of the interrupt
    /// status (§4.1.4.5, §4.2.2).
    pub fn push_used(&self, queue: u16, id: u32, len: u32) {
        self.q(queue).push_used(id, len);
        self.0.lock().unwrap().isr |= 1;
    }

    /// Sets the used ring's `flags` (1 = `VIRTQ_USED_F_NO_NOTIFY`, §2.7.10).
    pub fn set_used_flags(&self, queue: u16, flags: u16) {
        wr16(self.q(queue).device, flags);
    }

    /// The available ring's `flags` (1 = `VIRTQ_AVAIL_F_NO_INTERRUPT`, §2.7.7).
    pub fn avail_flags(&self, queue: u16) -> u16 {
        rd16(self.q(queue).driver)
    }

    /// Notifications per queue so far.
    pub fn notifies(&self) -> Vec<u32> {
        self.0.lock().unwrap().notifies.clone()
    }

    /// The device status register.
    pub fn status(&self) -> DeviceStatus {
        DeviceStatus::from_bits_truncate(self.0.lock().unwrap().status)
    }
}

impl<X> Transport for MockTransport<X> {
    fn device_type(&self) -> DeviceType {
        self.0.lock().unwrap().device_type.unwrap()
    }
    fn read_device_features(&mut self) -> u64 {
        self.0.lock().unwrap().device_features
    }
    fn write_driver_features(&mut self, f: u64) {
        self.0.lock().unwrap().driver_features = f;
    }
    fn max_queue_size(&mut self, _queue: u16) -> u32 {
        self.0.lock().unwrap().queue_max
    }
    fn notify(&mut self, queue: u16) {
        let hook = {
            let mut d = self.0.lock().unwrap();
            d.notifies[usize::from(queue)] += 1;
            d.on_notify
        };
        if let Some(serve) = hook {
            serve(self, queue);
        }
    }
    fn get_status(&self) -> DeviceStatus {
        self.status()
    }
    fn set_status(&mut self, status: DeviceStatus) {
        let mut d = self.0.lock().unwrap();
        let mut s = status.bits();
        if d.refuse_features {
            s &= !DeviceStatus::FEATURES_OK.bits();
        }
        d.status = s;
    }
    fn set_guest_page_size(&mut self, _size: u32) {}
    fn requires_legacy_layout(&self) -> bool {
        false
    }
    fn queue_set(&mut self, queue: u16, size: u32, desc: PhysAddr, driver: PhysAddr, device: PhysAddr) {
        let q = &mut self.0.lock().unwrap().queues[usize::from(queue)];
        *q = Queue { size, desc, driver, device, ready: true, last_avail: 0 };
    }
    fn queue_unset(&mut self, queue: u16) {
        self.0.lock().unwrap().queues[usize::from(queue)].ready = false;
    }
    fn queue_used(&mut self, queue: u16) -> bool {
        self.0.lock().unwrap().queues[usize::from(queue)].ready
    }
    fn ack_interrupt(&mut self) -> InterruptStatus {
        let mut d = self.0.lock().unwrap();
        d.acks += 1;
        InterruptStatus::from_bits_truncate(core::mem::take(&mut d.isr))
    }
    fn read_config_generation(&self) -> u32 {
        0
    }
    fn read_config_space<C: FromBytes + IntoBytes>(&self, offset: usize) -> Result<C, VirtioError> {
        let d = self.0.lock().unwrap();
        let mut v = C::new_zeroed();
        let n = core::mem::size_of::<C>();
        v.as_mut_bytes().copy_from_slice(d.config.get(offset..offset + n).ok_or(VirtioError::ConfigSpaceTooSmall)?);
        Ok(v)
    }
    fn write_config_space<C: IntoBytes + Immutable>(&mut self, offset: usize, value: C) -> Result<(), VirtioError> {
        let mut d = self.0.lock().unwrap();
        let n = core::mem::size_of::<C>();
        d.config.get_mut(offset..offset + n).ok_or(VirtioError::ConfigSpaceTooSmall)?.copy_from_slice(value.as_bytes());
        Ok(())
    }
}

/// A waker that counts its wake-ups.
pub struct WakeCount(AtomicUsize);

impl Wake for WakeCount {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl WakeCount {
    /// Wake-ups so far.
    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// A fresh counting waker and its counter.
pub fn counter() -> (Arc<WakeCount>, Waker) {
    let c = Arc::new(WakeCount(AtomicUsize::new(0)));
    let w = Waker::from(c.clone());
    (c, w)
}

/// Polls a block request once with waker `w`.
pub fn poll_block(f: &mut BlockFuture<'_>, w: &Waker) -> Poll<Result<(), BlockError>> {
    f.as_mut().poll(&mut Context::from_waker(w))
}

/// Polls `f` to completion the way a task and a device meet: after each pending poll the device side serves
/// what it was given (`serve`) and an interrupt arrives (`interrupt`), which must wake `f` before it is polled
/// again. Panics after 64 rounds.
pub fn drive(mut f: BlockFuture<'_>, mut serve: impl FnMut(), mut interrupt: impl FnMut()) -> Result<(), BlockError> {
    let (c, w) = counter();
    for _ in 0..64 {
        let before = c.get();
        if let Poll::Ready(r) = poll_block(&mut f, &w) {
            return r;
        }
        serve();
        interrupt();
        assert!(c.get() > before, "the interrupt woke the request");
    }
    panic!("request did not complete");
}
