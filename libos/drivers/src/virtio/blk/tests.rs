//! The driver against a mock virtio-blk device written from the spec: the shared [`MockTransport`] records
//! registers, and a device side here serves the descriptor chains it takes from the available ring against an
//! in-memory disk and writes the used ring (virtio 1.2 §2.7, §5.2.6), in host memory that the test HAL shares
//! by identity. Interrupts are simulated by waking the device's `IrqSlot`, as the libos handler does.

use super::*;
use crate::virtio::net::{F_RING_EVENT_IDX, F_RING_INDIRECT_DESC};
use crate::virtio::testing::VIRTQ_DESC_F_WRITE;
use crate::virtio::testing::{
    counter, drive, le32, le64, poll_block as poll, read_mem, write_mem, Desc, MockTransport, TestHal,
};
use core::task::{Poll, Waker};
use virtio_drivers::transport::DeviceType;

const QS: usize = 16;
const DISK_SECTORS: u64 = 256;

/// The device side's backing store.
#[derive(Default)]
struct Disk {
    /// `DISK_SECTORS` × 512 bytes.
    data: Vec<u8>,
    /// `VIRTIO_BLK_T_FLUSH` requests served.
    flushes: u32,
}

type FakeTransport = MockTransport<Disk>;

/// A request chain the device took from the available ring, decoded.
#[derive(Debug, Clone)]
struct Chain {
    head: u16,
    descs: Vec<Desc>,
    req_type: u32,
    sector: u64,
}

impl Chain {
    /// Data length (bytes): every descriptor between the header and the status byte.
    fn data_len(&self) -> usize {
        self.descs[1..self.descs.len() - 1].iter().map(|d| d.len as usize).sum()
    }
}

impl FakeTransport {
    /// Takes the next available request chain and checks its shape (§5.2.6): a device-readable header, a
    /// device-writable status byte last.
    fn take(&self) -> Option<Chain> {
        let (head, descs) = self.take_chain(QUEUE_REQUEST)?;
        let hdr = read_mem(descs[0].addr, descs[0].len as usize);
        assert_eq!(hdr.len(), HEADER_LEN);
        assert_eq!(descs[0].flags & VIRTQ_DESC_F_WRITE, 0, "header is device-readable");
        let last = descs.last().unwrap();
        assert_eq!((last.len, last.flags & VIRTQ_DESC_F_WRITE), (1, VIRTQ_DESC_F_WRITE), "status byte last");
        Some(Chain { head, descs, req_type: le32(&hdr[0..4]), sector: le64(&hdr[8..16]) })
    }

    /// Serves `c` against the disk with `status` and returns the used length the spec asks for.
    fn serve(&self, c: &Chain, status: u8) -> u32 {
        let disk = &mut self.0.lock().unwrap().ext;
        let mut at = c.sector as usize * 512;
        let data = &c.descs[1..c.descs.len() - 1];
        let mut written = 1u32;
        if status == S_OK {
            match c.req_type {
                T_IN => {
                    for x in data {
                        assert_eq!(x.flags & VIRTQ_DESC_F_WRITE, VIRTQ_DESC_F_WRITE, "read data is device-writable");
                        write_mem(x.addr, &disk.data[at..at + x.len as usize]);
                        at += x.len as usize;
                        written += x.len;
                    }
                }
                T_OUT => {
                    for x in data {
                        assert_eq!(x.flags & VIRTQ_DESC_F_WRITE, 0, "write data is device-readable");
                        let bytes = read_mem(x.addr, x.len as usize);
                        disk.data[at..at + bytes.len()].copy_from_slice(&bytes);
                        at += x.len as usize;
                    }
                }
                T_FLUSH => {
                    assert!(data.is_empty(), "a flush carries no data");
                    disk.flushes += 1;
                }
                other => panic!("unexpected request type {other}"),
            }
        }
        write_mem(c.descs.last().unwrap().addr, &[status]);
        written
    }

    /// Takes and serves every available chain with status OK, in order; returns them.
    fn serve_all(&self) -> Vec<Chain> {
        let mut out = Vec::new();
        while let Some(c) = self.take() {
            let len = self.serve(&c, S_OK);
            self.push_used(QUEUE_REQUEST, u32::from(c.head), len);
            out.push(c);
        }
        out
    }

    fn disk(&self, at: usize, len: usize) -> Vec<u8> {
        self.0.lock().unwrap().ext.data[at..at + len].to_vec()
    }
}

/// What QEMU's virtio-blk offers for a raw file with the default cache: more than the driver takes.
const QEMU_FEATURES: u64 = F_VERSION_1
    | F_SEG_MAX
    | F_GEOMETRY
    | F_BLK_SIZE
    | F_FLUSH
    | F_TOPOLOGY
    | F_CONFIG_WCE
    | F_MQ
    | F_DISCARD
    | F_WRITE_ZEROES
    | F_RING_INDIRECT_DESC
    | F_RING_EVENT_IDX;

fn device(features: u64) -> FakeTransport {
    let mut config = vec![0u8; 32];
    config[0..8].copy_from_slice(&DISK_SECTORS.to_le_bytes());
    config[12..16].copy_from_slice(&(QS as u32 - 2).to_le_bytes());
    config[20..24].copy_from_slice(&512u32.to_le_bytes());
    let data = (0..DISK_SECTORS as usize * 512).map(|i| (i / 512) as u8 ^ (i % 251) as u8).collect();
    MockTransport::new(DeviceType::Block, 1, features, config, Disk { data, flushes: 0 })
}

type Blk = VirtioBlk<TestHal, FakeTransport, QS>;

struct Started {
    dev: Arc<Blk>,
    irq: &'static IrqSlot,
}

fn start_with(t: &FakeTransport, ack: IrqAck) -> Result<Started, BlkInitError> {
    let irq: &'static IrqSlot = Box::leak(Box::new(IrqSlot::new()));
    let mut calls = 0;
    let dev = Blk::new(t.clone(), "virtio-blk@test".into(), irq, ack, &mut || {
        calls += 1;
        Ok(())
    })?;
    assert_eq!(calls, 1, "interrupt setup runs once");
    Ok(Started { dev, irq })
}

fn start(t: &FakeTransport) -> Started {
    start_with(t, IrqAck::None).unwrap()
}

/// Polls `f` to completion: the device serves what is available, an interrupt arrives.
fn complete(t: &FakeTransport, irq: &IrqSlot, f: BlockFuture<'_>) -> Result<(), BlockError> {
    drive(f, || drop(t.serve_all()), || irq.wake())
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

#[test]
fn init_negotiates_and_reports() {
    let t = device(QEMU_FEATURES);
    let s = start(&t);
    {
        let d = t.0.lock().unwrap();
        assert_eq!(d.driver_features, F_VERSION_1 | F_SEG_MAX | F_BLK_SIZE | F_FLUSH);
        assert!(DeviceStatus::from_bits_truncate(d.status).contains(DeviceStatus::DRIVER_OK));
        assert_eq!(d.notifies, [0]);
    }
    let i = s.dev.info();
    assert_eq!((i.sector_size, i.capacity, i.read_only, i.flush), (512, DISK_SECTORS, false, true));
    assert_eq!(i.max_transfer, BOUNCE_MAX);
    assert_eq!(
        s.dev.describe(),
        "virtio-blk@test capacity 256 sectors (128 KiB) sector 512 bytes max transfer 128 KiB \
         features SEG_MAX,BLK_SIZE,FLUSH,VERSION_1 queue 16"
    );
    assert_eq!(s.dev.geometry().capacity, DISK_SECTORS);
    assert_eq!(s.dev.features(), F_VERSION_1 | F_SEG_MAX | F_BLK_SIZE | F_FLUSH);
}

#[test]
fn write_flush_read_round_trip_is_interrupt_driven() {
    let t = device(QEMU_FEATURES);
    let s = start(&t);
    let data = pattern(4096, 7);
    let (c, w) = counter();
    let mut f = s.dev.write(8, &data);
    assert!(poll(&mut f, &w).is_pending());
    assert_eq!(t.notifies()[0], 1, "one notification for the chain");
    let chains = t.serve_all();
    assert_eq!(chains.len(), 1);
    assert_eq!((chains[0].req_type, chains[0].sector, chains[0].data_len()), (T_OUT, 8, 4096));
    assert_eq!(chains[0].descs.len(), 3, "header, data, status");
    assert_eq!(c.get(), 0, "nothing wakes the request before the interrupt");
    s.irq.wake();
    assert_eq!(c.get(), 1, "the interrupt handler completed the chain and woke the request");
    assert_eq!(poll(&mut f, &w), Poll::Ready(Ok(())));
    drop(f);
    assert_eq!(t.disk(8 * 512, 4096), data);

    complete(&t, s.irq, s.dev.flush()).unwrap();
    assert_eq!(t.0.lock().unwrap().ext.flushes, 1, "VIRTIO_BLK_T_FLUSH sent");

    let mut back = vec![0u8; 4096];
    complete(&t, s.irq, s.dev.read(8, &mut back)).unwrap();
    assert_eq!(back, data);
    // An unaligned caller buffer works the same (the data goes through the bounce buffer).
    let mut odd = vec![0u8; 513];
    complete(&t, s.irq, s.dev.read(9, &mut odd[1..])).unwrap();
    assert_eq!(&odd[1..], &data[512..1024]);
}

#[test]
fn several_requests_in_flight_complete_out_of_order() {
    let t = device(QEMU_FEATURES);
    let s = start(&t);
    let mut bufs: Vec<Vec<u8>> = (0..4).map(|_| vec![0u8; 1024]).collect();
    let counters: Vec<_> = (0..4).map(|_| counter()).collect();
    let mut futs: Vec<BlockFuture<'_>> =
        bufs.iter_mut().enumerate().map(|(i, b)| s.dev.read(10 * i as u64, &mut b[..])).collect();
    for (f, (_, w)) in futs.iter_mut().zip(&counters) {
        assert!(poll(f, w).is_pending());
    }
    let mut chains = Vec::new();
    while let Some(c) = t.take() {
        chains.push(c);
    }
    assert_eq!(chains.len(), 4, "all four chains available at once");
    // Complete the second one first, then the rest in reverse.
    for c in [&chains[1], &chains[3], &chains[2], &chains[0]] {
        let len = t.serve(c, S_OK);
        t.push_used(QUEUE_REQUEST, u32::from(c.head), len);
        if c.head == chains[1].head {
            s.irq.wake();
            assert_eq!(counters[1].0.get(), 1, "only the completed request is woken");
            assert_eq!(counters[0].0.get() + counters[2].0.get() + counters[3].0.get(), 0);
        }
    }
    s.irq.wake();
    for (f, (c, w)) in futs.iter_mut().zip(&counters) {
        assert_eq!(c.get(), 1);
        assert_eq!(poll(f, w), Poll::Ready(Ok(())));
    }
    drop(futs);
    for (i, b) in bufs.iter().enumerate() {
        assert_eq!(*b, t.disk(10 * i * 512, 1024), "request {i}");
    }
}

#[test]
fn large_requests_are_split_at_size_max() {
    let t = device(QEMU_FEATURES | F_SIZE_MAX);
    t.0.lock().unwrap().config[8..12].copy_from_slice(&8192u32.to_le_bytes());
    let s = start(&t);
    assert_eq!(s.dev.info().max_transfer, 8192);
    // 6 chains of 8 KiB; a 16-descriptor queue has 5 request slots and one request takes at most 3 of them.
    let data = pattern(6 * 8192, 3);
    let (c, w) = counter();
    let mut f = s.dev.write(4, &data);
    let mut rounds = Vec::new();
    let mut sectors = Vec::new();
    loop {
        let before = t.notifies()[0];
        if let Poll::Ready(r) = poll(&mut f, &w) {
            r.unwrap();
            break;
        }
        assert_eq!(t.notifies()[0], before + 1, "one notification per batch of chains");
        let served = t.serve_all();
        rounds.push(served.len());
        for ch in &served {
            assert_eq!((ch.req_type, ch.data_len()), (T_OUT, 8192));
            sectors.push(ch.sector);
        }
        let woke = c.get();
        s.irq.wake();
        assert!(c.get() > woke, "each batch completes by interrupt");
    }
    drop(f);
    assert_eq!(rounds, [3, 3], "chains submitted together, at most half the slots per request");
    assert_eq!(sectors, (0..6).map(|i| 4 + 16 * i).collect::<Vec<u64>>());
    assert_eq!(t.disk(4 * 512, data.len()), data);
    let mut back = vec![0u8; data.len() - 512];
    complete(&t, s.irq, s.dev.read(5, &mut back)).unwrap();
    assert_eq!(back, data[512..]);
}

#[test]
fn a_large_request_leaves_slots_for_others() {
    let t = device(QEMU_FEATURES | F_SIZE_MAX);
    t.0.lock().unwrap().config[8..12].copy_from_slice(&512u32.to_le_bytes());
    let s = start(&t);
    let (_, w) = counter();
    let mut big = vec![0u8; 64 * 512];
    let mut f = s.dev.read(0, &mut big);
    assert!(poll(&mut f, &w).is_pending());
    let mut small = [0u8; 512];
    let mut g = s.dev.read(100, &mut small);
    assert!(poll(&mut g, &w).is_pending());
    let served = t.serve_all();
    assert_eq!(served.len(), 4, "3 chains of the large read, 1 of the small one");
    assert_eq!(served[3].sector, 100);
    s.irq.wake();
    assert_eq!(poll(&mut g, &w), Poll::Ready(Ok(())));
    drop(g);
    assert_eq!(small[..], t.disk(100 * 512, 512)[..]);
    drop(f);
}

#[test]
fn logical_sectors_of_4k_are_converted_to_512_byte_units() {
    let t = device(QEMU_FEATURES);
    t.0.lock().unwrap().config[20..24].copy_from_slice(&4096u32.to_le_bytes());
    let s = start(&t);
    assert_eq!((s.dev.info().sector_size, s.dev.info().capacity), (4096, DISK_SECTORS / 8));
    let (_, w) = counter();
    let mut back = vec![0u8; 4096];
    let mut f = s.dev.read(3, &mut back);
    assert!(poll(&mut f, &w).is_pending());
    let c = t.take().unwrap();
    assert_eq!((c.sector, c.data_len()), (24, 4096), "logical sector 3 of 4 KiB is virtio sector 24");
    let len = t.serve(&c, S_OK);
    t.push_used(QUEUE_REQUEST, u32::from(c.head), len);
    s.irq.wake();
    assert_eq!(poll(&mut f, &w), Poll::Ready(Ok(())));
    drop(f);
    assert_eq!(back, t.disk(24 * 512, 4096));
    let e = s.dev.info().check(0, 512).unwrap_err();
    assert!(matches!(e, BlockError::Misaligned { sector_size: 4096, .. }));
}

#[test]
fn read_only_devices_refuse_writes() {
    let t = device(QEMU_FEATURES | F_RO);
    let s = start(&t);
    assert!(s.dev.info().read_only);
    let (_, w) = counter();
    let data = [0u8; 512];
    let mut f = s.dev.write(0, &data);
    assert_eq!(poll(&mut f, &w), Poll::Ready(Err(BlockError::ReadOnly { device: "virtio-blk@test".into() })));
    assert!(t.take().is_none(), "nothing reaches the device");
    let mut back = [0u8; 512];
    complete(&t, s.irq, s.dev.read(0, &mut back)).unwrap();
    assert!(s.dev.describe().contains(" read-only features SEG_MAX,RO,"), "{}", s.dev.describe());
}

#[test]
fn flush_is_a_no_op_without_the_feature() {
    let t = device(F_VERSION_1);
    let s = start(&t);
    assert!(!s.dev.info().flush);
    let (_, w) = counter();
    assert_eq!(poll(&mut s.dev.flush(), &w), Poll::Ready(Ok(())));
    assert!(t.take().is_none());
    assert_eq!(t.notifies()[0], 0);
}

#[test]
fn error_statuses_name_device_and_sector() {
    let t = device(QEMU_FEATURES);
    let s = start(&t);
    let (_, w) = counter();
    let mut back = [0u8; 1024];
    let mut f = s.dev.read(17, &mut back);
    assert!(poll(&mut f, &w).is_pending());
    let c = t.take().unwrap();
    let len = t.serve(&c, S_IOERR);
    t.push_used(QUEUE_REQUEST, u32::from(c.head), len);
    s.irq.wake();
    let Poll::Ready(Err(e)) = poll(&mut f, &w) else { panic!("expected an error") };
    drop(f);
    assert_eq!(
        e.to_string(),
        "virtio-blk@test: I/O error at sector 17: VIRTIO_BLK_S_IOERR for a read (VIRTIO_BLK_T_IN) of 1024 bytes"
    );
    // The device keeps working.
    let mut f = s.dev.flush();
    assert!(poll(&mut f, &w).is_pending());
    let c = t.take().unwrap();
    t.serve(&c, S_UNSUPP);
    t.push_used(QUEUE_REQUEST, u32::from(c.head), 1);
    s.irq.wake();
    assert_eq!(
        poll(&mut f, &w),
        Poll::Ready(Err(BlockError::Unsupported { device: "virtio-blk@test".into(), what: Kind::Flush.what() }))
    );
    drop(f);
    complete(&t, s.irq, s.dev.read(0, &mut back)).unwrap();
    assert_eq!(back[..], t.disk(0, 1024)[..]);
}

/// Starts a read at sector 1 and returns its chain; the caller answers it.
fn pending_read<'a>(t: &FakeTransport, s: &'a Started, buf: &'a mut [u8], w: &Waker) -> (BlockFuture<'a>, Chain) {
    let mut f = s.dev.read(1, buf);
    assert!(poll(&mut f, w).is_pending());
    (f, t.take().unwrap())
}

fn assert_broken(t: &FakeTransport, s: &Started, e: &BlockError, what: &str) {
    let BlockError::Protocol { device, detail } = e else { panic!("expected a protocol error, got {e:?}") };
    assert_eq!(device, "virtio-blk@test");
    assert!(detail.starts_with("requestq: ") && detail.contains(what), "{detail}");
    assert!(t.status().contains(DeviceStatus::FAILED), "device marked FAILED");
    let (_, w) = counter();
    let mut again = [0u8; 512];
    assert_eq!(poll(&mut s.dev.read(0, &mut again), &w), Poll::Ready(Err(e.clone())), "stays broken");
    assert_eq!(poll(&mut s.dev.flush(), &w), Poll::Ready(Err(e.clone())));
}

#[test]
fn hostile_used_id_is_a_protocol_error() {
    for id in [5u32, QS as u32, 0xffff] {
        let t = device(QEMU_FEATURES);
        let s = start(&t);
        let (c, w) = counter();
        let mut buf = [0u8; 512];
        let (mut f, chain) = pending_read(&t, &s, &mut buf, &w);
        assert_ne!(u32::from(chain.head), id);
        t.push_used(QUEUE_REQUEST, id, 513);
        s.irq.wake();
        assert_eq!(c.get(), 1, "the waiting request is woken to see the failure");
        let Poll::Ready(Err(e)) = poll(&mut f, &w) else { panic!("id {id}: expected an error") };
        drop(f);
        assert_broken(&t, &s, &e, "did not lend");
    }
}

#[test]
fn hostile_used_length_is_a_protocol_error() {
    for (len, what) in [(514, "used length 514"), (100, "used length 100"), (u32::MAX, "used length 4294967295")] {
        let t = device(QEMU_FEATURES);
        let s = start(&t);
        let (_, w) = counter();
        let mut buf = [0u8; 512];
        let (mut f, chain) = pending_read(&t, &s, &mut buf, &w);
        t.serve(&chain, S_OK);
        t.push_used(QUEUE_REQUEST, u32::from(chain.head), len);
        s.irq.wake();
        let Poll::Ready(Err(e)) = poll(&mut f, &w) else { panic!("len {len}: expected an error") };
        drop(f);
        assert_broken(&t, &s, &e, what);
    }
    // A status byte the device never wrote.
    let t = device(QEMU_FEATURES);
    let s = start(&t);
    let (_, w) = counter();
    let mut buf = [0u8; 512];
    let (mut f, chain) = pending_read(&t, &s, &mut buf, &w);
    t.push_used(QUEUE_REQUEST, u32::from(chain.head), 513);
    s.irq.wake();
    let Poll::Ready(Err(e)) = poll(&mut f, &w) else { panic!("expected an error") };
    drop(f);
    assert_broken(&t, &s, &e, "status byte 0xff");
}

#[test]
fn a_dropped_request_frees_its_slot_on_completion() {
    let t = device(QEMU_FEATURES);
    let s = start(&t);
    let (c, w) = counter();
    let slots = QS / 3;
    let mut bufs: Vec<[u8; 512]> = vec![[0; 512]; slots + 1];
    let (first, rest) = bufs.split_first_mut().unwrap();
    let mut dropped = s.dev.read(0, first);
    assert!(poll(&mut dropped, &w).is_pending());
    let (middle, last) = rest.split_at_mut(slots - 1);
    let mut others: Vec<_> = middle.iter_mut().map(|b| s.dev.read(1, b)).collect();
    for f in &mut others {
        assert!(poll(f, &w).is_pending());
    }
    let (waiter_c, waiter_w) = counter();
    let mut waiter = s.dev.read(2, &mut last[0]);
    assert!(poll(&mut waiter, &waiter_w).is_pending(), "all slots busy");
    drop(dropped);
    // The device still owns the dropped request's chain; it completes later and frees the slot.
    let served = t.serve_all();
    assert_eq!(served.len(), slots);
    let before = c.get();
    s.irq.wake();
    assert!(waiter_c.get() >= 1, "a freed slot wakes the waiting request");
    assert_eq!(c.get() - before, slots - 1, "the dropped request is not woken");
    assert!(poll(&mut waiter, &waiter_w).is_pending());
    assert_eq!(t.serve_all().len(), 1);
    s.irq.wake();
    assert_eq!(poll(&mut waiter, &waiter_w), Poll::Ready(Ok(())));
    for f in &mut others {
        assert_eq!(poll(f, &w), Poll::Ready(Ok(())));
    }
}

#[test]
fn edge_triggered_interrupts_are_acknowledged_by_the_handler() {
    let t = device(QEMU_FEATURES);
    let s = start_with(&t, IrqAck::Task).unwrap();
    let mut buf = [0u8; 512];
    let (_, w) = counter();
    let (mut f, chain) = pending_read(&t, &s, &mut buf, &w);
    let len = t.serve(&chain, S_OK);
    t.push_used(QUEUE_REQUEST, u32::from(chain.head), len);
    s.irq.wake();
    let (acks, isr) = {
        let d = t.0.lock().unwrap();
        (d.acks, d.isr)
    };
    assert_eq!((acks, isr), (1, 0), "InterruptStatus -> InterruptACK");
    assert_eq!(poll(&mut f, &w), Poll::Ready(Ok(())));
    let t2 = device(QEMU_FEATURES);
    let s2 = start(&t2);
    s2.irq.wake();
    assert_eq!(t2.0.lock().unwrap().acks, 0, "MSI-X needs no acknowledgement");
}

#[test]
fn requests_are_checked_before_the_device_sees_them() {
    let t = device(QEMU_FEATURES);
    let s = start(&t);
    let (_, w) = counter();
    let mut buf = vec![0u8; 1024];
    let Poll::Ready(Err(e)) = poll(&mut s.dev.read(DISK_SECTORS - 1, &mut buf), &w) else { panic!() };
    assert!(matches!(e, BlockError::OutOfRange { sector: 255, count: 2, capacity: 256, .. }), "{e:?}");
    let Poll::Ready(Err(e)) = poll(&mut s.dev.write(0, &buf[..100]), &w) else { panic!() };
    assert!(matches!(e, BlockError::Misaligned { len: 100, .. }), "{e:?}");
    assert!(t.take().is_none());
}

#[test]
fn init_errors() {
    let t = device(QEMU_FEATURES);
    t.0.lock().unwrap().refuse_features = true;
    let e = start_with(&t, IrqAck::None).err().unwrap();
    let features = F_VERSION_1 | F_SEG_MAX | F_BLK_SIZE | F_FLUSH;
    assert_eq!(
        e,
        BlkInitError::Start(StartError::FeaturesRejected {
            device: "virtio-blk@test".into(),
            features,
            names: feature_names(features)
        })
    );
    assert!(e.to_string().contains("SEG_MAX,BLK_SIZE,FLUSH,VERSION_1"));
    let t = device(QEMU_FEATURES);
    t.0.lock().unwrap().queue_max = 8;
    let e = start_with(&t, IrqAck::None).err().unwrap();
    assert_eq!(
        e,
        BlkInitError::Start(StartError::QueueTooSmall {
            device: "virtio-blk@test".into(),
            queue: QUEUE_REQUEST,
            max: 8,
            need: QS
        })
    );
    let t = device(QEMU_FEATURES);
    t.0.lock().unwrap().config[20..24].copy_from_slice(&100u32.to_le_bytes());
    let e = start_with(&t, IrqAck::None).err().unwrap();
    assert_eq!(
        e.to_string(),
        "virtio-blk@test: configuration space: blk_size 100 is not a power of two between 512 and 65536 bytes"
    );
    assert!(t.status().contains(DeviceStatus::FAILED));
    let t = device(QEMU_FEATURES);
    let irq: &'static IrqSlot = Box::leak(Box::new(IrqSlot::new()));
    let e = Blk::new(t.clone(), "b".into(), irq, IrqAck::None, &mut || Err("no vector".into())).err().unwrap();
    assert_eq!(e.to_string(), "b: interrupt setup: no vector");
}

#[test]
fn completion_decodes_lengths_and_statuses() {
    assert_eq!(completion("d", Kind::Write, 0, 4096, 1, S_OK), Ok(()));
    assert_eq!(completion("d", Kind::Write, 0, 4096, 0, S_OK), Ok(()), "a write may report 0 bytes written");
    assert_eq!(completion("d", Kind::Read, 0, 4096, 4097, S_OK), Ok(()));
    assert!(matches!(completion("d", Kind::Read, 0, 4096, 4096, S_OK), Err(ChainError::Protocol(_))));
    assert!(matches!(
        completion("d", Kind::Read, 3, 4096, 1, S_IOERR),
        Err(ChainError::Device(BlockError::Io { sector: 3, .. }))
    ));
    assert!(matches!(completion("d", Kind::Flush, 0, 0, 2, S_OK), Err(ChainError::Protocol(_))));
    assert!(matches!(
        completion("d", Kind::Write, 9, 512, 1, S_IOERR),
        Err(ChainError::Device(BlockError::Io { sector: 9, .. }))
    ));
    let bad_status = completion("d", Kind::Write, 0, 512, 1, 7);
    assert!(matches!(&bad_status, Err(ChainError::Protocol(d)) if d.contains("status byte 0x07")), "{bad_status:?}");
    assert_eq!(header(T_OUT, 0x0102), [1, 0, 0, 0, 0, 0, 0, 0, 2, 1, 0, 0, 0, 0, 0, 0]);
}
