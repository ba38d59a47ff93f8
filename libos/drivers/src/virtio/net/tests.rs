//! The driver against a mock virtio-net device written from the spec: the shared [`MockTransport`] records
//! registers and plays the device side, reading the descriptor table and available ring and writing the used
//! ring (virtio 1.2 §2.7), in host memory that the test HAL shares by identity.

use super::*;
use crate::virtio::testing::{counter, read_mem, write_mem, MockTransport, TestHal};
use alloc::boxed::Box;
use virtio_drivers::transport::DeviceType;

const QS: usize = 8;

type FakeTransport = MockTransport<()>;

/// A single-descriptor chain the device took from the available ring.
#[derive(Debug)]
struct Taken {
    head: u16,
    addr: u64,
    len: u32,
    flags: u16,
}

impl FakeTransport {
    /// Takes the next available chain of `queue` (§2.7.6, §2.7.13.2): its head descriptor.
    fn take_avail(&self, queue: u16) -> Option<Taken> {
        let (head, descs) = self.take_chain(queue)?;
        Some(Taken { head, addr: descs[0].addr, len: descs[0].len, flags: descs[0].flags })
    }

    /// Writes `bytes` into a device-writable buffer.
    fn write_buf(&self, t: &Taken, bytes: &[u8]) {
        assert!(bytes.len() <= t.len as usize);
        write_mem(t.addr, bytes);
    }

    fn read_buf(&self, t: &Taken) -> Vec<u8> {
        read_mem(t.addr, t.len as usize)
    }
}

const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

fn device(features: u64) -> FakeTransport {
    let mut config = vec![0u8; 12];
    config[..6].copy_from_slice(&MAC);
    config[6] = 1; // link up
    config[10..12].copy_from_slice(&1500u16.to_le_bytes());
    MockTransport::new(DeviceType::Network, 2, features, config, ())
}

/// What QEMU's virtio-net offers (user networking): more than the driver takes.
const QEMU_FEATURES: u64 =
    F_VERSION_1 | F_MAC | F_STATUS | F_MRG_RXBUF | F_CTRL_VQ | F_RING_EVENT_IDX | F_RING_INDIRECT_DESC;

type Net = VirtioNet<TestHal, FakeTransport, QS>;

fn start(t: &FakeTransport, ack: IrqAck) -> Result<Net, NetInitError> {
    let slot: &'static IrqSlot = Box::leak(Box::new(IrqSlot::new()));
    let mut calls = 0;
    let r = Net::new(t.clone(), "virtio-net@test".into(), slot, ack, &mut || {
        calls += 1;
        Ok(())
    });
    if r.is_ok() {
        assert_eq!(calls, 1, "interrupt setup runs once");
    }
    r
}

#[test]
fn init_negotiates_posts_and_reports() {
    let t = device(QEMU_FEATURES);
    let dev = start(&t, IrqAck::None).unwrap();
    {
        let d = t.0.lock().unwrap();
        assert_eq!(d.driver_features, F_VERSION_1 | F_MAC | F_STATUS);
        assert!(DeviceStatus::from_bits_truncate(d.status).contains(DeviceStatus::DRIVER_OK));
        assert_eq!(d.notifies, [1, 0], "receive queue kicked once after DRIVER_OK");
    }
    assert_eq!(dev.info().mac, MAC);
    assert_eq!(dev.info().mtu, 1500);
    assert_eq!(dev.info().offloads, NetOffloads::default(), "no CSUM offered (user networking)");
    assert_eq!(dev.describe(), "virtio-net@test mac 52:54:00:12:34:56 mtu 1500 queue 8 features MAC,STATUS,VERSION_1");
    let mut n = 0;
    while let Some(b) = t.take_avail(QUEUE_RECEIVE) {
        assert_eq!(b.len as usize, 12 + 1500 + 18);
        assert_eq!(b.flags, 2, "VIRTQ_DESC_F_WRITE, single descriptor");
        n += 1;
    }
    assert_eq!(n, QS);
    assert_eq!(t.avail_flags(QUEUE_TRANSMIT), 1, "transmit interrupts off until the queue fills");
}

#[test]
fn receive_lends_and_recycle_reposts() {
    let t = device(QEMU_FEATURES);
    let mut dev = start(&t, IrqAck::None).unwrap();
    assert!(dev.receive().unwrap().is_none());
    let b = t.take_avail(QUEUE_RECEIVE).unwrap();
    let mut pkt = vec![0u8; 12];
    pkt.extend_from_slice(b"\xff\xff\xff\xff\xff\xffframe-bytes");
    t.write_buf(&b, &pkt);
    t.push_used(QUEUE_RECEIVE, u32::from(b.head), pkt.len() as u32);
    let f = dev.receive().unwrap().unwrap();
    assert_eq!(f.frame(), &pkt[12..]);
    assert_eq!((f.offset, f.token), (12, u32::from(b.head)));
    assert!(dev.receive().unwrap().is_none());
    dev.recycle(f).unwrap();
    dev.flush().unwrap();
    assert_eq!(t.notifies(), [2, 0], "one kick for the recycled buffer");
    dev.flush().unwrap();
    assert_eq!(t.notifies(), [2, 0], "nothing new, no kick");
    // Drain the 7 still-posted buffers, then the recycled one comes round again.
    for _ in 0..QS - 1 {
        t.take_avail(QUEUE_RECEIVE).unwrap();
    }
    let again = t.take_avail(QUEUE_RECEIVE).unwrap();
    assert_eq!(again.addr, b.addr, "the same buffer, no copy");
}

#[test]
fn empty_frames_are_reposted_not_returned() {
    let t = device(QEMU_FEATURES);
    let mut dev = start(&t, IrqAck::None).unwrap();
    let b = t.take_avail(QUEUE_RECEIVE).unwrap();
    t.push_used(QUEUE_RECEIVE, u32::from(b.head), 12);
    assert!(dev.receive().unwrap().is_none());
    for _ in 0..QS - 1 {
        t.take_avail(QUEUE_RECEIVE).unwrap();
    }
    assert_eq!(t.take_avail(QUEUE_RECEIVE).map(|x| x.addr), Some(b.addr));
}

#[test]
fn hostile_used_length_is_a_protocol_error() {
    for bad_len in [12 + 1500 + 18 + 1, u32::MAX as usize, 5] {
        let t = device(QEMU_FEATURES);
        let mut dev = start(&t, IrqAck::None).unwrap();
        let b = t.take_avail(QUEUE_RECEIVE).unwrap();
        t.push_used(QUEUE_RECEIVE, u32::from(b.head), bad_len as u32);
        let e = dev.receive().err().unwrap();
        let DeviceError::Protocol { device, detail } = &e else { panic!("{e:?}") };
        assert_eq!(device, "virtio-net@test");
        assert!(detail.starts_with("receiveq1: used length"), "{detail}");
        assert_eq!(dev.receive().err(), Some(e.clone()), "the device stays broken");
        assert!(!dev.can_transmit());
        assert_eq!(dev.flush(), Err(e));
    }
}

#[test]
fn hostile_used_id_is_a_protocol_error() {
    for id in [QS as u32, 0xffff, 0x8000] {
        let t = device(QEMU_FEATURES);
        let mut dev = start(&t, IrqAck::None).unwrap();
        t.push_used(QUEUE_RECEIVE, id, 100);
        let e = dev.receive().err().unwrap();
        assert!(matches!(&e, DeviceError::Protocol { detail, .. } if detail.contains("did not lend")), "{id}: {e}");
    }
    // A transmit completion for a descriptor that was never queued.
    let t = device(QEMU_FEATURES);
    let mut dev = start(&t, IrqAck::None).unwrap();
    t.push_used(QUEUE_TRANSMIT, 3, 0);
    let e = dev.flush().err().unwrap();
    assert!(matches!(&e, DeviceError::Protocol { detail, .. } if detail.starts_with("transmitq1:")), "{e}");
}

#[test]
fn transmit_batches_one_notification_per_flush() {
    let t = device(QEMU_FEATURES);
    let mut dev = start(&t, IrqAck::None).unwrap();
    for i in 0..3u8 {
        assert!(dev.can_transmit());
        dev.transmit(60 + usize::from(i), &mut |b| b.fill(i)).unwrap();
    }
    assert_eq!(t.notifies()[1], 0, "no kick before flush");
    dev.flush().unwrap();
    assert_eq!(t.notifies()[1], 1, "one kick for three frames");
    for i in 0..3u8 {
        let d = t.take_avail(QUEUE_TRANSMIT).unwrap();
        let bytes = t.read_buf(&d);
        assert_eq!(bytes.len(), 12 + 60 + usize::from(i));
        assert_eq!(&bytes[..12], &[0; 12], "virtio_net_hdr: no offload, GSO_NONE");
        assert!(bytes[12..].iter().all(|&x| x == i));
        assert_eq!(d.flags, 0, "device-readable, single descriptor");
        t.push_used(QUEUE_TRANSMIT, u32::from(d.head), 0);
    }
    // Device suppresses notifications: queued frames are not kicked.
    t.set_used_flags(QUEUE_TRANSMIT, 1);
    dev.transmit(60, &mut |b| b.fill(9)).unwrap();
    dev.flush().unwrap();
    assert_eq!(t.notifies()[1], 1);
}

#[test]
fn full_transmit_queue_is_busy_until_a_completion() {
    let t = device(QEMU_FEATURES);
    let mut dev = start(&t, IrqAck::None).unwrap();
    for _ in 0..QS {
        dev.transmit(60, &mut |b| b.fill(1)).unwrap();
    }
    assert!(!dev.can_transmit());
    assert_eq!(t.avail_flags(QUEUE_TRANSMIT), 0, "transmit interrupts on while full");
    assert_eq!(dev.transmit(60, &mut |_| {}), Err(DeviceError::Busy { device: "virtio-net@test".into() }));
    let d = t.take_avail(QUEUE_TRANSMIT).unwrap();
    t.push_used(QUEUE_TRANSMIT, u32::from(d.head), 0);
    assert!(dev.can_transmit());
    assert_eq!(t.avail_flags(QUEUE_TRANSMIT), 1, "and off again once there is room");
    dev.transmit(60, &mut |_| {}).unwrap();
}

#[test]
fn oversized_frames_are_refused() {
    let t = device(QEMU_FEATURES);
    let mut dev = start(&t, IrqAck::None).unwrap();
    assert_eq!(
        dev.transmit(1519, &mut |_| {}),
        Err(DeviceError::TooLarge { device: "virtio-net@test".into(), len: 1519, max: 1518 })
    );
    dev.transmit(1518, &mut |_| {}).unwrap();
}

#[test]
fn edge_triggered_ack_before_the_last_look() {
    let t = device(QEMU_FEATURES);
    let mut dev = start(&t, IrqAck::Task).unwrap();
    t.0.lock().unwrap().isr = 1;
    assert!(dev.receive().unwrap().is_none());
    let (acks, isr) = {
        let d = t.0.lock().unwrap();
        (d.acks, d.isr)
    };
    assert_eq!((acks, isr), (1, 0), "acknowledged (InterruptStatus -> InterruptACK) on the empty ring");
    let b = t.take_avail(QUEUE_RECEIVE).unwrap();
    t.write_buf(&b, &[0; 80]);
    t.push_used(QUEUE_RECEIVE, u32::from(b.head), 80);
    let f = dev.receive().unwrap().unwrap();
    assert_eq!(t.0.lock().unwrap().acks, 1, "no register access while frames are waiting");
    assert_eq!(f.len, 68);
    assert!(dev.receive().unwrap().is_none());
    assert_eq!(t.0.lock().unwrap().acks, 2);
    let t2 = device(QEMU_FEATURES);
    let mut msix = start(&t2, IrqAck::None).unwrap();
    assert!(msix.receive().unwrap().is_none());
    assert_eq!(t2.0.lock().unwrap().acks, 0, "MSI-X needs no acknowledgement");
}

#[test]
fn legacy_device_uses_the_10_byte_header() {
    let t = device(F_MAC | F_STATUS);
    let mut dev = start(&t, IrqAck::None).unwrap();
    assert_eq!(t.0.lock().unwrap().driver_features, F_MAC | F_STATUS);
    let b = t.take_avail(QUEUE_RECEIVE).unwrap();
    assert_eq!(b.len as usize, 10 + 1500 + 18);
    t.write_buf(&b, &[7; 70]);
    t.push_used(QUEUE_RECEIVE, u32::from(b.head), 70);
    let f = dev.receive().unwrap().unwrap();
    assert_eq!((f.offset, f.len), (10, 60));
    dev.transmit(60, &mut |x| x.fill(3)).unwrap();
    dev.flush().unwrap();
    assert_eq!(t.read_buf(&t.take_avail(QUEUE_TRANSMIT).unwrap()).len(), 70);
}

#[test]
fn init_errors() {
    let t = device(QEMU_FEATURES);
    t.0.lock().unwrap().refuse_features = true;
    let e = start(&t, IrqAck::None).err().unwrap();
    assert_eq!(
        e,
        NetInitError::FeaturesRejected { device: "virtio-net@test".into(), features: F_VERSION_1 | F_MAC | F_STATUS }
    );
    assert!(e.to_string().contains("MAC,STATUS,VERSION_1"));
    assert!(DeviceStatus::from_bits_truncate(t.0.lock().unwrap().status).contains(DeviceStatus::FAILED));
    let t = device(QEMU_FEATURES);
    t.0.lock().unwrap().queue_max = 4;
    let e = start(&t, IrqAck::None).err().unwrap();
    assert_eq!(e, NetInitError::QueueTooSmall { device: "virtio-net@test".into(), queue: 0, max: 4, need: QS });
    let t = device(QEMU_FEATURES);
    let slot: &'static IrqSlot = Box::leak(Box::new(IrqSlot::new()));
    let e = Net::new(t.clone(), "n".into(), slot, IrqAck::None, &mut || Err("no vector".into())).err().unwrap();
    assert_eq!(e.to_string(), "n: interrupt setup: no vector");
    assert_eq!(t.0.lock().unwrap().status, 0, "reset on the way out");
}

#[test]
fn mtu_from_config_sizes_buffers() {
    let t = device(QEMU_FEATURES | F_MTU);
    t.0.lock().unwrap().config[10..12].copy_from_slice(&9000u16.to_le_bytes());
    let dev = start(&t, IrqAck::None).unwrap();
    assert_eq!(dev.info().mtu, 9000);
    assert_eq!(t.take_avail(QUEUE_RECEIVE).unwrap().len as usize, 12 + 9000 + 18);
}

#[test]
fn feature_name_list() {
    assert_eq!(feature_names(0), "");
    assert_eq!(feature_names(F_CSUM | F_VERSION_1 | (1 << 40)), "CSUM,VERSION_1,bit40");
    assert_eq!(header_len(F_VERSION_1), 12);
    assert_eq!(header_len(F_MRG_RXBUF), 12);
    assert_eq!(header_len(F_MAC), 10);
}

#[test]
fn waker_goes_to_the_irq_slot() {
    let t = device(QEMU_FEATURES);
    let slot: &'static IrqSlot = Box::leak(Box::new(IrqSlot::new()));
    let mut dev = Net::new(t, "n".into(), slot, IrqAck::None, &mut || Ok(())).unwrap();
    let (c, w) = counter();
    dev.set_waker(&w);
    slot.wake();
    assert_eq!(c.get(), 1);
}

#[test]
fn receive_ring_grows_with_traffic() {
    const BIG: usize = 128;
    let t = device(QEMU_FEATURES);
    let slot: &'static IrqSlot = Box::leak(Box::new(IrqSlot::new()));
    let mut dev =
        VirtioNet::<TestHal, FakeTransport, BIG>::new(t.clone(), "n".into(), slot, IrqAck::None, &mut || Ok(()))
            .unwrap();
    let mut posted = Vec::new();
    while let Some(b) = t.take_avail(QUEUE_RECEIVE) {
        posted.push(b);
    }
    assert_eq!(posted.len(), RX_INITIAL, "only the initial buffers are allocated at start");
    for b in posted.iter().take(3) {
        t.push_used(QUEUE_RECEIVE, u32::from(b.head), 80);
        let f = dev.receive().unwrap().unwrap();
        dev.recycle(f).unwrap();
    }
    let mut more = 0;
    while t.take_avail(QUEUE_RECEIVE).is_some() {
        more += 1;
    }
    assert_eq!(more, 3 + 3, "one new buffer per frame received, plus the three recycled");
}

#[test]
fn transmit_checksum_offload_when_offered() {
    let t = device(QEMU_FEATURES | F_CSUM | F_GUEST_CSUM);
    let mut dev = start(&t, IrqAck::None).unwrap();
    assert_eq!(t.0.lock().unwrap().driver_features, F_VERSION_1 | F_MAC | F_STATUS | F_CSUM);
    assert_eq!(dev.info().offloads, NetOffloads { rx_checksum: false, tx_checksum: true });
    // Ethernet + IPv4 (20) + UDP (8) + 4 bytes payload, UDP checksum left 0 by the stack.
    let mut frame = vec![0xffu8; 12];
    frame.extend_from_slice(&[0x08, 0x00, 0x45, 0, 0, 32, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 2, 15, 10, 0, 2, 2]);
    frame.extend_from_slice(&[0, 68, 0, 67, 0, 12, 0, 0, 1, 2, 3, 4]);
    dev.transmit(frame.len(), &mut |b| b.copy_from_slice(&frame)).unwrap();
    let arp = [0u8; 42];
    dev.transmit(arp.len(), &mut |b| b.copy_from_slice(&arp)).unwrap();
    let udp = t.read_buf(&t.take_avail(QUEUE_TRANSMIT).unwrap());
    assert_eq!(udp[0], 1, "VIRTIO_NET_HDR_F_NEEDS_CSUM");
    assert_eq!(u16::from_le_bytes([udp[6], udp[7]]), 34, "csum_start after Ethernet + IPv4");
    assert_eq!(u16::from_le_bytes([udp[8], udp[9]]), 6, "csum_offset of the UDP checksum");
    assert_ne!(&udp[12 + 40..12 + 42], &[0, 0], "pseudo-header sum stored in the field");
    let other = t.read_buf(&t.take_avail(QUEUE_TRANSMIT).unwrap());
    assert_eq!(&other[..12], &[0; 12], "non-IP frames go without offload");
}

#[test]
fn device_type_names() {
    use crate::virtio::virtio_name;
    assert_eq!(virtio_name(DeviceType::Network), "virtio-net");
    assert_eq!(virtio_name(DeviceType::EntropySource), "virtio-rng");
    assert_eq!(virtio_name(DeviceType::GPU), "virtio-gpu");
}
