//! VMBus ring buffers (`platform_hyperv::vmbus::ring`: `hv_ring_buffer` control page, 8-byte aligned packets
//! with trailers) between the guest and a host that may misbehave: the fuzzer interleaves well-formed host
//! writes, raw writes of the host-owned indices and ring data, guest reads, commits and guest writes. Invariants:
//! no panic and no access outside the ring (the host model's memory would panic); every packet the guest reads
//! is a checked packet no larger than the data area; while the host only writes well-formed packets, the guest
//! reads exactly those packets in order and the guest's packets reach the host intact.
#![no_main]

use libfuzzer_sys::fuzz_target;
use platform_hyperv::mem::host::HostMemory;
use platform_hyperv::mem::{Dma, PAGE_SIZE};
use platform_hyperv::vmbus::packet::{inband, Packet};
use platform_hyperv::vmbus::ring::host_side::HostRing;
use platform_hyperv::vmbus::ring::{
    Direction, InRing, OutRing, FEATURE_BITS, INTERRUPT_MASK, PENDING_SEND_SZ, READ_INDEX, WRITE_INDEX,
};
use std::collections::VecDeque;
use zirvium_fuzz::Input;

const PAGES: usize = 3;

fuzz_target!(|data: &[u8]| {
    let mem = HostMemory::new();
    let region = mem.alloc(2 * PAGES).expect("host memory");
    let mut out = OutRing::init(region.clone(), 0, PAGES).expect("outbound ring");
    let mut inr = InRing::init(region.clone(), PAGES * PAGE_SIZE, PAGES).expect("inbound ring");
    let h_out = HostRing::new(region.clone(), 0, PAGES, Direction::Outbound).unwrap();
    let h_in = HostRing::new(region.clone(), PAGES * PAGE_SIZE, PAGES, Direction::Inbound).unwrap();
    let data_size = inr.data_size();
    let mut hostile = false;
    let mut sent_in: VecDeque<Vec<u8>> = VecDeque::new();
    let mut sent_out: VecDeque<Vec<u8>> = VecDeque::new();
    let mut input = Input::new(data);
    let mut trans = 0u64;
    while !input.is_empty() {
        match input.u8() % 10 {
            0 => {
                let payload = input.bytes(usize::from(input.clone().u16()) % 5000 + 2);
                trans += 1;
                if let Some(p) = inband(trans, 0, payload) {
                    if h_in.write(&p).is_ok() {
                        sent_in.push_back(p);
                    }
                }
            }
            1 => {
                hostile = true;
                let _ = h_in.poke(WRITE_INDEX, input.u32());
            }
            2 => {
                hostile = true;
                let pos = input.u32();
                let _ = h_in.poke_data(pos, input.chunk());
            }
            3 => {
                let field = [PENDING_SEND_SZ, FEATURE_BITS, INTERRUPT_MASK][input.below(3)];
                let _ = h_in.poke(field, input.u32());
                let _ = h_out.poke(field, input.u32());
            }
            4 | 5 => match inr.read() {
                Ok(Some(p)) => {
                    assert!(p.raw.len() <= data_size && p.raw.len() % 8 == 0, "packet of {} bytes", p.raw.len());
                    assert!(Packet::new_checked(p.raw.clone()).is_ok(), "the guest got an unchecked packet");
                    if !hostile {
                        assert_eq!(Some(p.raw), sent_in.pop_front(), "packets lost, changed or reordered");
                    }
                }
                Ok(None) => assert!(hostile || sent_in.is_empty(), "the guest missed a packet"),
                Err(e) => {
                    assert!(hostile, "a well-behaved host was called hostile: {e}");
                    let _ = e.to_string();
                }
            },
            6 => {
                let _ = inr.commit();
                let _ = inr.has_data();
            }
            7 => {
                let payload = input.bytes(usize::from(input.clone().u16()) % 3000 + 2);
                trans += 1;
                if let Some(p) = inband(trans, 1, payload) {
                    match out.write(&[&p[..16], &p[16..]]) {
                        Ok(_) => sent_out.push_back(p),
                        Err(e) => {
                            let _ = e.to_string();
                        }
                    }
                }
                let _ = out.free_bytes();
            }
            8 => match h_out.drain() {
                Ok(got) => {
                    if !hostile {
                        for p in got {
                            assert_eq!(Some(p), sent_out.pop_front(), "guest packets lost or changed");
                        }
                    }
                }
                Err(e) => assert!(hostile, "the guest wrote garbage: {e}"),
            },
            _ => {
                hostile = true;
                let _ = h_out.poke(READ_INDEX, input.u32());
            }
        }
    }
});
