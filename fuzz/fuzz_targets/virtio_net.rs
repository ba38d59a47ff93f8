//! The virtio-net driver (`drivers::virtio::net::VirtioNet`) against a mock device that may misbehave
//! (virtio 1.2 §2.7 split virtqueues, §5.1 network device): offered features and configuration from the
//! fuzzer; the fuzzer interleaves honest deliveries into posted receive buffers and honest transmit
//! completions with used-ring entries carrying hostile ids and lengths, `VIRTQ_USED_F_NO_NOTIFY` flips,
//! interrupts, and the driver's receive, recycle, transmit and flush. Invariants: no panic and no access
//! outside lent buffers; frames fit the posted buffers; a protocol violation disables the device for good;
//! while the device is honest every delivered frame arrives whole and in order.
#![no_main]

use drivers::irq::IrqSlot;
use drivers::virtio::net::{
    header_len, IrqAck, VirtioNet, F_CSUM, F_MAC, F_MRG_RXBUF, F_MTU, F_RING_EVENT_IDX, F_RING_INDIRECT_DESC, F_STATUS,
    F_VERSION_1, QUEUE_RECEIVE, QUEUE_TRANSMIT,
};
use drivers::virtio::testing::{write_mem, Desc, MockTransport, TestHal};
use libfuzzer_sys::fuzz_target;
use libos::dev::{DeviceError, NetDevice};
use std::collections::VecDeque;
use virtio_drivers::transport::DeviceType;
use zirvium_fuzz::Input;

const QS: usize = 8;
type Transport = MockTransport<()>;
type Net = VirtioNet<TestHal, Transport, QS>;

fuzz_target!(|data: &[u8]| {
    let irq = Box::into_raw(Box::new(IrqSlot::new()));
    // SAFETY: freed below after the driver, the only holder, is dropped inside `run`.
    run(unsafe { &*irq }, &mut Input::new(data));
    // SAFETY: allocated by Box::into_raw above; nothing refers to it any more.
    drop(unsafe { Box::from_raw(irq) });
});

fn run(irq: &'static IrqSlot, input: &mut Input<'_>) {
    let offered = [F_MAC, F_STATUS, F_MTU, F_CSUM, F_MRG_RXBUF, F_RING_EVENT_IDX, F_RING_INDIRECT_DESC];
    let bits = input.u8();
    let features =
        offered.iter().enumerate().filter(|(i, _)| bits & (1 << i) != 0).fold(F_VERSION_1, |a, (_, f)| a | f);
    let mut config = vec![0u8; 12];
    config[..6].copy_from_slice(&[0x52, 0x54, 0, 0x12, 0x34, 0x56]);
    config[6..8].copy_from_slice(&input.u16().to_le_bytes());
    config[10..12].copy_from_slice(&[1500u16, 9000, 68, 576, input.u16()][input.below(5)].to_le_bytes());
    let t = MockTransport::new(DeviceType::Network, 2, features, config, ());
    let ack = if bits & 0x80 != 0 { IrqAck::Task } else { IrqAck::None };
    let Ok(mut dev) = Net::new(t.clone(), "virtio-net@fuzz".into(), irq, ack, &mut || Ok(())) else { return };
    let hdr = header_len(dev.features());
    let mut honest = true;
    let mut broken = false;
    let mut delivered: VecDeque<Vec<u8>> = VecDeque::new();
    let mut rx_taken: Vec<(u16, Vec<Desc>)> = Vec::new();
    while !input.is_empty() {
        match input.u8() % 9 {
            0 | 1 => {
                // An honest delivery into the next posted buffer.
                if let Some((head, descs)) = t.take_chain(QUEUE_RECEIVE) {
                    // After a used entry for a chain it never took, the device model's view of the available
                    // ring is stale (the driver reclaimed and may have freed those buffers): it writes no more
                    // driver memory then.
                    if !honest {
                        t.push_used(QUEUE_RECEIVE, u32::from(head), hdr as u32 + 1);
                        continue;
                    }
                    let room = descs[0].len as usize;
                    let n = usize::from(input.u16()).min(room.saturating_sub(hdr)).max(1).min(room - hdr);
                    let mut pkt = vec![0u8; hdr];
                    // The next input byte (peeked, not consumed) salts the pattern; read once, not per byte.
                    let salt = input.clone().u8();
                    pkt.extend((0..n).map(|i| (i as u8) ^ salt));
                    write_mem(descs[0].addr, &pkt);
                    t.push_used(QUEUE_RECEIVE, u32::from(head), pkt.len() as u32);
                    if n > 0 {
                        delivered.push_back(pkt[hdr..].to_vec());
                    }
                }
            }
            2 => {
                honest = false;
                if let Some(c) = t.take_chain(QUEUE_RECEIVE) {
                    rx_taken.push(c);
                }
                let id = match rx_taken.pop() {
                    Some((head, _)) if input.u8() & 1 == 0 => u32::from(head),
                    _ => input.u32(),
                };
                t.push_used(QUEUE_RECEIVE, id, input.u32());
            }
            3 | 4 => match dev.receive() {
                Ok(Some(f)) => {
                    assert!(!broken, "a disabled device delivered a frame");
                    assert!(f.offset + f.len <= f.buf.len(), "frame outside its buffer");
                    if honest {
                        assert_eq!(Some(f.frame().to_vec()), delivered.pop_front(), "frames lost or changed");
                    }
                    if dev.recycle(f).is_err() {
                        assert!(!honest);
                        broken = true;
                    }
                }
                Ok(None) => assert!(!broken, "a disabled device reported no error"),
                Err(e) => {
                    assert!(!honest, "an honest device broke the driver: {e}");
                    broken = true;
                }
            },
            5 => {
                let len = input.below(1600);
                let byte = input.u8();
                match dev.transmit(len, &mut |b| b.fill(byte)) {
                    Ok(()) | Err(DeviceError::Busy { .. } | DeviceError::TooLarge { .. }) => {}
                    Err(e) => {
                        assert!(!honest || broken, "transmit failed with an honest device: {e}");
                        broken = true;
                    }
                }
            }
            6 => {
                // Transmit completions: honest, or with a hostile id or length.
                let hostile = input.u8();
                while let Some((head, _)) = t.take_chain(QUEUE_TRANSMIT) {
                    if hostile & 1 == 1 {
                        honest = false;
                        t.push_used(QUEUE_TRANSMIT, input.u32(), input.u32());
                    } else {
                        t.push_used(QUEUE_TRANSMIT, u32::from(head), 0);
                    }
                }
            }
            7 => {
                if dev.flush().is_err() {
                    assert!(!honest, "flush failed with an honest device");
                    broken = true;
                }
                let _ = dev.can_transmit();
                // The net stack asks for one slot per open merged frame plus two.
                let _ = dev.transmit_slots(1 + input.below(10));
            }
            _ => {
                t.set_used_flags(QUEUE_RECEIVE, input.u16() & 1);
                irq.wake();
            }
        }
    }
    let _ = dev.describe();
}
