//! The virtio-blk driver (`drivers::virtio::blk::VirtioBlk`) against a mock device that may misbehave
//! (virtio 1.2 §2.7 split virtqueues, §5.2 block device): the configuration space and offered features come
//! from the fuzzer; each read, write or flush is polled while the fuzzer plays the device — honest service of
//! the available chains, used-ring entries with hostile ids and lengths, status bytes the spec does not define,
//! interrupts — and is abandoned if it does not complete. Invariants: no panic and no access outside the
//! driver's buffers (the device side copies only what the descriptors lend); a protocol violation disables the
//! device for good; while the device is honest every accepted request succeeds and reads return the disk.
#![no_main]

use drivers::irq::IrqSlot;
use drivers::virtio::blk::{
    VirtioBlk, F_BLK_SIZE, F_FLUSH, F_RO, F_SEG_MAX, F_SIZE_MAX, QUEUE_REQUEST, S_OK, T_IN, T_OUT,
};
use drivers::virtio::net::{IrqAck, F_RING_EVENT_IDX, F_RING_INDIRECT_DESC, F_VERSION_1};
use drivers::virtio::testing::{le32, le64, read_mem, write_mem, Desc, MockTransport, TestHal, VIRTQ_DESC_F_WRITE};
use libfuzzer_sys::fuzz_target;
use libos::dev::{BlockDevice, BlockError};
use virtio_drivers::transport::DeviceType;
use zirvium_fuzz::{disk_bytes, is_disk, poll_with, Input};

const QS: usize = 16;
type Transport = MockTransport<()>;
type Blk = VirtioBlk<TestHal, Transport, QS>;

struct Device {
    t: Transport,
    irq: &'static IrqSlot,
    honest: bool,
    /// Chains taken and not answered yet: (head, descriptors).
    taken: Vec<(u16, Vec<Desc>)>,
}

impl Device {
    fn take_all(&mut self) {
        while let Some(c) = self.t.take_chain(QUEUE_REQUEST) {
            self.taken.push(c);
        }
    }

    /// Answers every taken chain as a device following the spec does. After a used entry for a chain it never
    /// took, the device model's view of the available ring is stale (the driver may have freed those buffers),
    /// so it then only writes used entries, never driver memory.
    fn serve(&mut self) {
        self.take_all();
        for (head, descs) in self.taken.drain(..) {
            if !self.honest {
                self.t.push_used(QUEUE_REQUEST, u32::from(head), 1);
                continue;
            }
            let hdr = read_mem(descs[0].addr, descs[0].len.min(16) as usize);
            let (ty, sector) = (le32(&hdr[0..4]), le64(&hdr[8..16]));
            let mut at = sector * 512;
            let mut written = 1;
            let status = descs.last().expect("a chain");
            assert_eq!((status.len, status.flags & VIRTQ_DESC_F_WRITE), (1, VIRTQ_DESC_F_WRITE), "status byte last");
            for d in &descs[1..descs.len() - 1] {
                if ty == T_IN {
                    let mut bytes = vec![0u8; d.len as usize];
                    disk_bytes(at, &mut bytes);
                    write_mem(d.addr, &bytes);
                    written += d.len;
                } else if ty == T_OUT {
                    let _ = read_mem(d.addr, d.len as usize);
                }
                at += u64::from(d.len);
            }
            write_mem(status.addr, &[S_OK]);
            self.t.push_used(QUEUE_REQUEST, u32::from(head), written);
        }
        self.irq.wake();
    }

    fn act(&mut self, input: &mut Input<'_>) {
        match input.u8() % 6 {
            0..=2 => self.serve(),
            3 => {
                // A used entry with a fuzzer-chosen id and length, after writing a status byte (while the model's
                // view of the ring is still accurate).
                let accurate = self.honest;
                self.honest = false;
                self.take_all();
                if !self.taken.is_empty() {
                    let (head, descs) = self.taken.remove(input.below(self.taken.len()));
                    if accurate {
                        write_mem(descs.last().unwrap().addr, &[input.u8()]);
                    }
                    let id = if input.u8() & 1 == 0 { u32::from(head) } else { input.u32() };
                    self.t.push_used(QUEUE_REQUEST, id, input.u32());
                } else {
                    self.t.push_used(QUEUE_REQUEST, input.u32(), input.u32());
                }
                self.irq.wake();
            }
            4 => {
                self.honest = false;
                self.t.set_used_flags(QUEUE_REQUEST, input.u16());
            }
            _ => self.irq.wake(),
        }
    }
}

/// The device model's next move: the fuzzer's choice, or honest service once the input is used up.
fn step(dev: &mut Device, input: &mut Input<'_>) {
    if input.is_empty() {
        dev.serve();
    } else {
        dev.act(input);
    }
}

fuzz_target!(|data: &[u8]| {
    let irq = Box::into_raw(Box::new(IrqSlot::new()));
    // SAFETY: freed below after everything that holds it (the driver, the device model) is dropped.
    run(unsafe { &*irq }, &mut Input::new(data));
    // SAFETY: allocated by Box::into_raw above; nothing refers to it any more.
    drop(unsafe { Box::from_raw(irq) });
});

fn run(irq: &'static IrqSlot, input: &mut Input<'_>) {
    let offered =
        [F_VERSION_1, F_SIZE_MAX, F_SEG_MAX, F_RO, F_BLK_SIZE, F_FLUSH, F_RING_INDIRECT_DESC, F_RING_EVENT_IDX];
    let bits = input.u8();
    let features =
        offered.iter().enumerate().filter(|(i, _)| bits & (1 << i) != 0).fold(F_VERSION_1, |a, (_, f)| a | f);
    let mut config = vec![0u8; 32];
    config[0..8].copy_from_slice(&u64::from(input.u16()).to_le_bytes());
    config[8..12].copy_from_slice(&input.u32().to_le_bytes());
    config[12..16].copy_from_slice(&input.u32().to_le_bytes());
    config[20..24].copy_from_slice(&[512u32, 4096, 1024, input.u32()][input.below(4)].to_le_bytes());
    let t = MockTransport::new(DeviceType::Block, 1, features, config, ());
    let Ok(blk) = Blk::new(t.clone(), "virtio-blk@fuzz".into(), irq, IrqAck::None, &mut || Ok(())) else { return };
    let mut dev = Device { t, irq, honest: true, taken: Vec::new() };
    let sector_size = u64::from(blk.info().sector_size);
    let mut broken = false;
    while !input.is_empty() {
        let op = input.u8();
        let sector = u64::from(input.u16()) % (blk.info().capacity + 2);
        let len = (1 + usize::from(input.u8() % 40)) * sector_size as usize;
        let steps = 1 + usize::from(input.u8() % 8);
        let result = match op % 3 {
            0 => {
                let mut buf = vec![0u8; len];
                let r = poll_with(blk.read(sector, &mut buf), steps, || step(&mut dev, input));
                if let (Some(Ok(())), true) = (&r, dev.honest) {
                    let start = sector * sector_size;
                    assert!(is_disk(start, &buf), "wrong read data");
                }
                r
            }
            1 => poll_with(blk.write(sector, &vec![0xa5; len]), steps, || step(&mut dev, input)),
            _ => poll_with(blk.flush(), steps, || step(&mut dev, input)),
        };
        match result {
            Some(Ok(())) => {
                assert!(!broken || (op % 3 == 2 && !blk.info().flush), "a disabled device completed a request")
            }
            Some(Err(BlockError::Protocol { .. })) => {
                assert!(!dev.honest, "an honest device broke the driver");
                broken = true;
            }
            Some(Err(e)) => {
                let _ = e.to_string();
            }
            None => {}
        }
        blk.interrupt();
    }
    drop(blk);
}
