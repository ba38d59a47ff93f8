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
        assert_eq!(d.driver_features, F_VERSION_1 | F_MAC | F_STATUS | F_MRG_RXBUF);
        assert!(DeviceStatus::from_bits_truncate(d.status).contains(DeviceStatus::DRIVER_OK));
        assert_eq!(d.notifies, [1, 0], "receive queue kicked once after DRIVER_OK");
    }
    assert_eq!(dev.info().mac, MAC);
    assert_eq!(dev.info().mtu, 1500);
    assert_eq!(dev.info().offloads, NetOffloads::default(), "no CSUM offered (user networking)");
    assert_eq!(
        dev.describe(),
        "virtio-net@test mac 52:54:00:12:34:56 mtu 1500 queue 8 features MAC,MRG_RXBUF,STATUS,VERSION_1"
    );
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
    let features = F_VERSION_1 | F_MAC | F_STATUS | F_MRG_RXBUF;
    assert_eq!(
        e,
        NetInitError::Start(StartError::FeaturesRejected {
            device: "virtio-net@test".into(),
            features,
            names: feature_names(features)
        })
    );
    assert!(e.to_string().contains("MAC,MRG_RXBUF,STATUS,VERSION_1"));
    assert!(DeviceStatus::from_bits_truncate(t.0.lock().unwrap().status).contains(DeviceStatus::FAILED));
    let t = device(QEMU_FEATURES);
    t.0.lock().unwrap().queue_max = 4;
    let e = start(&t, IrqAck::None).err().unwrap();
    assert_eq!(
        e,
        NetInitError::Start(StartError::QueueTooSmall { device: "virtio-net@test".into(), queue: 0, max: 4, need: QS })
    );
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
    assert_eq!(
        t.0.lock().unwrap().driver_features,
        F_VERSION_1 | F_MAC | F_STATUS | F_CSUM | F_GUEST_CSUM | F_MRG_RXBUF
    );
    assert_eq!(dev.info().offloads, NetOffloads { tx_checksum: true, rx_checksum: true, ..Default::default() });
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

#[test]
fn negotiation_keeps_offload_prerequisites() {
    let all = DRIVER_FEATURES | F_HOST_ECN | F_GUEST_TSO6 | F_HOST_TSO6;
    assert_eq!(negotiate(all), DRIVER_FEATURES);
    assert_eq!(negotiate(all & !F_CSUM) & F_HOST_TSO4, 0, "HOST_TSO4 needs CSUM");
    assert_eq!(negotiate(all & !F_GUEST_CSUM) & F_GUEST_TSO4, 0, "GUEST_TSO4 needs GUEST_CSUM");
    assert_eq!(negotiate(all & !F_MRG_RXBUF) & F_GUEST_TSO4, 0, "large frames only in mergeable buffers");
}

/// An Ethernet + IPv4 + TCP frame with `payload` bytes, IP checksum right, TCP checksum 0.
fn tcp_frame(payload: usize) -> Vec<u8> {
    let mut f = vec![0x52, 0x54, 0, 0, 0, 2, 0x52, 0x54, 0, 0x12, 0x34, 0x56, 0x08, 0x00];
    let total = (40 + payload) as u16;
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x40, 0, 64, 6, 0, 0, 10, 77, 0, 2, 10, 77, 0, 1]);
    f.extend_from_slice(&[0, 80, 0xc0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0x50, 0x10, 0xff, 0xff, 0, 0, 0, 0]);
    f.extend((0..payload).map(|i| i as u8));
    f
}

#[test]
fn transmit_gso_is_a_two_descriptor_chain_with_a_tcpv4_header() {
    let t = device(QEMU_FEATURES | F_CSUM | F_HOST_TSO4);
    let mut dev = start(&t, IrqAck::None).unwrap();
    assert!(dev.info().offloads.tso4);
    let slots = dev.transmit_slots(1);
    assert_eq!(slots, QS / 2, "each GSO frame may take two descriptors");
    let frame = tcp_frame(4000);
    let gso = Gso { kind: GsoKind::TcpV4, hdr_len: 54, mss: 1460 };
    dev.transmit_gso(frame.clone(), gso).unwrap();
    dev.flush().unwrap();
    let (head, descs) = t.take_chain(QUEUE_TRANSMIT).unwrap();
    assert_eq!(descs.len(), 2);
    let header = read_mem(descs[0].addr, descs[0].len as usize);
    assert_eq!(header.len(), 12);
    let h = hdr::NetHdr::new_checked(&header[..]).unwrap();
    assert_eq!(h.flags(), hdr::F_NEEDS_CSUM, "§5.1.6.2: GSO needs NEEDS_CSUM");
    assert_eq!(h.gso_type(), hdr::GSO_TCPV4);
    assert_eq!((h.hdr_len(), h.gso_size()), (54, 1460));
    assert_eq!((h.csum_start(), h.csum_offset()), (34, 16));
    let sent = read_mem(descs[1].addr, descs[1].len as usize);
    assert_eq!(sent.len(), frame.len());
    assert_eq!(sent[..50], frame[..50]);
    assert_eq!(sent[54..], frame[54..], "payload untouched");
    // The TCP checksum field holds the folded pseudo-header sum over the whole TCP length (40 + 4000 - 20).
    let mut sum: u32 = [0x0a4d, 0x0002, 0x0a4d, 0x0001, 6, 4020].iter().sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    assert_eq!(u16::from_be_bytes([sent[50], sent[51]]), sum as u16);
    assert_eq!(dev.transmit_slots(1), slots - 1);
    t.push_used(QUEUE_TRANSMIT, u32::from(head), 0);
    dev.flush().unwrap();
    assert_eq!(dev.transmit_slots(1), slots, "the chain came back");
    let too_big = vec![0u8; MAX_GSO_FRAME + 1];
    assert!(matches!(dev.transmit_gso(too_big, gso), Err((DeviceError::TooLarge { .. }, _))));
}

/// The floods test's hang: the net stack wants a slot per open merged frame plus two; with fewer free (but
/// not none) it stops taking received frames, so the device must arm the transmit interrupt and acknowledge
/// the edge a used receive buffer left pending, or nothing wakes the net task again.
#[test]
fn too_few_transmit_slots_arm_the_completion_interrupt() {
    let t = device(QEMU_FEATURES | F_CSUM | F_HOST_TSO4);
    let mut dev = start(&t, IrqAck::Task).unwrap();
    let gso = Gso { kind: GsoKind::TcpV4, hdr_len: 54, mss: 1460 };
    for _ in 0..QS / 2 - 1 {
        dev.transmit_gso(tcp_frame(3000), gso).unwrap();
    }
    dev.flush().unwrap();
    assert_eq!(t.avail_flags(QUEUE_TRANSMIT), 1, "completions need no interrupt while there is room");
    t.0.lock().unwrap().isr = 1; // a receive buffer used meanwhile: the line is high
    assert_eq!(dev.transmit_slots(1), 1, "one is enough: nothing armed");
    let acks = t.0.lock().unwrap().acks;
    assert_eq!((t.avail_flags(QUEUE_TRANSMIT), acks), (1, 0));
    assert_eq!(dev.transmit_slots(3), 1);
    assert_eq!(t.avail_flags(QUEUE_TRANSMIT), 0, "transmit interrupts on while short of `want`");
    let (acks, isr) = {
        let d = t.0.lock().unwrap();
        (d.acks, d.isr)
    };
    assert_eq!((acks, isr), (1, 0), "the pending edge acknowledged");
    let mut chains = Vec::new();
    while let Some((head, _)) = t.take_chain(QUEUE_TRANSMIT) {
        chains.push(head);
    }
    assert_eq!(chains.len(), QS / 2 - 1);
    t.push_used(QUEUE_TRANSMIT, u32::from(chains[0]), 0);
    assert_eq!(dev.transmit_slots(3), 2, "still short: stays armed");
    assert_eq!(t.avail_flags(QUEUE_TRANSMIT), 0);
    t.push_used(QUEUE_TRANSMIT, u32::from(chains[1]), 0);
    assert_eq!(dev.transmit_slots(3), 3);
    assert_eq!(t.avail_flags(QUEUE_TRANSMIT), 1, "and off again once `want` are free");
}

#[test]
fn transmit_gso_without_host_tso4_is_refused() {
    let t = device(QEMU_FEATURES | F_CSUM);
    let mut dev = start(&t, IrqAck::None).unwrap();
    let gso = Gso { kind: GsoKind::TcpV4, hdr_len: 54, mss: 1460 };
    let (e, back) = dev.transmit_gso(tcp_frame(3000), gso).unwrap_err();
    assert!(matches!(e, DeviceError::TooLarge { .. }));
    assert_eq!(back.len(), 54 + 3000, "the frame is handed back");
}

/// Writes a received frame over `bufs.len()` mergeable buffers: header (with num_buffers) in the first.
fn receive_merged(t: &FakeTransport, flags: u8, gso_type: u8, frame: &[u8], parts: usize) {
    let mut header = [0u8; 12];
    hdr::NetHdrRepr {
        flags,
        gso_type,
        num_buffers: parts as u16,
        csum_start: 34,
        csum_offset: 16,
        ..Default::default()
    }
    .emit(&mut header, 12);
    let mut bytes = header.to_vec();
    bytes.extend_from_slice(frame);
    let mut rest = &bytes[..];
    for _ in 0..parts {
        let b = t.take_avail(QUEUE_RECEIVE).unwrap();
        let n = rest.len().min(b.len as usize);
        t.write_buf(&b, &rest[..n]);
        t.q(QUEUE_RECEIVE).push_used(u32::from(b.head), n as u32);
        rest = &rest[n..];
    }
    assert!(rest.is_empty(), "frame does not fit {parts} buffers");
    t.0.lock().unwrap().isr |= 1;
}

#[test]
fn mergeable_buffers_gather_a_large_frame_and_its_checksum_flag() {
    let t = device(QEMU_FEATURES | F_CSUM | F_GUEST_CSUM | F_GUEST_TSO4);
    let mut dev = start(&t, IrqAck::None).unwrap();
    assert!(dev.info().offloads.rx_gso && dev.info().offloads.rx_checksum);
    let frame = tcp_frame(3000);
    receive_merged(&t, hdr::F_NEEDS_CSUM, hdr::GSO_TCPV4, &frame, 3);
    let f = dev.receive().unwrap().unwrap();
    assert_eq!(f.frame(), &frame[..], "one frame, bytes in order");
    assert!(f.checksum_valid, "NEEDS_CSUM from the host counts as valid");
    dev.recycle(f).unwrap();
    dev.flush().unwrap();
    // The three buffers went back to the device (plus those never used).
    let mut posted = 0;
    while t.take_avail(QUEUE_RECEIVE).is_some() {
        posted += 1;
    }
    assert_eq!(posted, QS - 3 + 3);
}

#[test]
fn mergeable_buffers_take_the_largest_frame_and_no_more() {
    // A queue as large as QEMU's: the largest frame needs 44 buffers.
    const BIG: usize = 128;
    let t = device(QEMU_FEATURES | F_CSUM | F_GUEST_CSUM | F_GUEST_TSO4);
    let slot: &'static IrqSlot = Box::leak(Box::new(IrqSlot::new()));
    let new = VirtioNet::<TestHal, FakeTransport, BIG>::new;
    let mut dev = new(t.clone(), "virtio-net@test".into(), slot, IrqAck::None, &mut || Ok(())).unwrap();
    let buf_len = dev.rx_buf_len;
    // 14 + 65535 bytes: the IPv4 total length's limit, one frame in as many buffers as it needs.
    let frame = tcp_frame(65535 - 40);
    assert_eq!(frame.len(), MAX_GSO_FRAME);
    let parts = (12 + frame.len()).div_ceil(buf_len);
    receive_merged(&t, hdr::F_NEEDS_CSUM, hdr::GSO_TCPV4, &frame, parts);
    let f = dev.receive().unwrap().unwrap();
    assert_eq!(f.frame(), &frame[..], "the largest frame arrives whole");
    dev.recycle(f).unwrap();
    // One byte more is a protocol error, not a larger frame.
    let mut over = tcp_frame(65535 - 40);
    over.push(0);
    receive_merged(&t, hdr::F_NEEDS_CSUM, hdr::GSO_TCPV4, &over, (12 + over.len()).div_ceil(buf_len));
    assert!(matches!(dev.receive(), Err(DeviceError::Protocol { .. })));
}

#[test]
fn hostile_receive_headers() {
    // num_buffers naming more buffers than the used ring has: protocol error.
    let t = device(QEMU_FEATURES | F_CSUM | F_GUEST_CSUM | F_GUEST_TSO4);
    let mut dev = start(&t, IrqAck::None).unwrap();
    let b = t.take_avail(QUEUE_RECEIVE).unwrap();
    let mut pkt = [0u8; 80];
    pkt[10] = 4;
    t.write_buf(&b, &pkt);
    t.push_used(QUEUE_RECEIVE, u32::from(b.head), 80);
    assert!(matches!(dev.receive(), Err(DeviceError::Protocol { .. })));

    // NEEDS_CSUM pointing past the frame, or an unknown gso_type: the frame is dropped, the device lives on.
    for (flags, gso_type, csum_start) in [(hdr::F_NEEDS_CSUM, 0u8, 70u16), (0, 9, 0)] {
        let t = device(QEMU_FEATURES | F_CSUM | F_GUEST_CSUM);
        let mut dev = start(&t, IrqAck::None).unwrap();
        let b = t.take_avail(QUEUE_RECEIVE).unwrap();
        let mut pkt = [0u8; 80];
        hdr::NetHdrRepr { flags, gso_type, csum_start, csum_offset: 16, num_buffers: 1, ..Default::default() }
            .emit(&mut pkt, 12);
        t.write_buf(&b, &pkt);
        t.push_used(QUEUE_RECEIVE, u32::from(b.head), 80);
        assert!(dev.receive().unwrap().is_none(), "dropped");
        let b = t.take_avail(QUEUE_RECEIVE).unwrap();
        let mut ok = [0u8; 80];
        hdr::NetHdrRepr { flags: hdr::F_DATA_VALID, num_buffers: 1, ..Default::default() }.emit(&mut ok, 12);
        t.write_buf(&b, &ok);
        t.push_used(QUEUE_RECEIVE, u32::from(b.head), 80);
        assert!(dev.receive().unwrap().unwrap().checksum_valid, "DATA_VALID");
    }
}
