//! The virtio-balloon driver against a device model: the model reads the page frame numbers of each inflateq and
//! deflateq buffer (virtio 1.2 §5.5.6) and keeps the set of pages it holds, holds the statsq buffer until the test
//! asks for figures (§5.5.6.3), and exposes `num_pages` / `actual` in its configuration space (§5.5.4).

use super::wire::{self, ConfigRepr, QUEUE_DEFLATE, QUEUE_INFLATE, QUEUE_STATS};
use super::*;
use crate::virtio::testing::{le64, read_mem, MockTransport, TestHal};
use alloc::boxed::Box;
use alloc::collections::BTreeSet;
use libos::mem::balloon::model::ModelHeap;
use libos::mem::balloon::Balloon;
use virtio_drivers::transport::DeviceType;

/// The device side: pages it holds, the stats buffer it keeps, the stats it was sent.
#[derive(Default)]
struct Host {
    held: BTreeSet<u64>,
    /// Head of the statsq chain the device holds.
    stats_head: Option<u16>,
    /// Each stats buffer received, as (tag, value) pairs.
    stats: Vec<Vec<(u16, u64)>>,
    /// Serve inflateq/deflateq buffers as soon as they are made available.
    auto: bool,
}

type Dev = MockTransport<Host>;

/// Serves what the driver made available on `queue`.
fn serve(t: &Dev, queue: u16) {
    while let Some((head, descs)) = t.take_chain(queue) {
        assert_eq!(descs.len(), 1, "one device-readable buffer per chain");
        let bytes = read_mem(descs[0].addr, descs[0].len as usize);
        match queue {
            QUEUE_STATS => {
                let pairs = bytes.chunks_exact(10).map(|c| (u16::from_le_bytes([c[0], c[1]]), le64(&c[2..]))).collect();
                let mut d = t.0.lock().unwrap();
                d.ext.stats.push(pairs);
                d.ext.stats_head = Some(head);
            }
            _ => {
                {
                    let mut d = t.0.lock().unwrap();
                    for c in bytes.chunks_exact(4) {
                        let pfn = u64::from(u32::from_le_bytes(c.try_into().unwrap()));
                        if queue == QUEUE_INFLATE {
                            assert!(d.ext.held.insert(pfn), "page {pfn:#x} inflated twice");
                        } else {
                            assert!(d.ext.held.remove(&pfn), "page {pfn:#x} deflated but not held");
                        }
                    }
                }
                t.push_used(queue, u32::from(head), 0);
            }
        }
    }
}

fn on_notify(t: &Dev, queue: u16) {
    if queue == QUEUE_STATS || t.0.lock().unwrap().ext.auto {
        serve(t, queue);
    }
}

/// A device offering `features` (VERSION_1 added), wanting `num_pages`, serving at once when `auto`.
fn device(features: u64, auto: bool) -> Dev {
    let t = MockTransport::new(
        DeviceType::MemoryBalloon,
        3,
        features | F_VERSION_1,
        alloc::vec![0u8; 16],
        Host { auto, ..Default::default() },
    );
    t.0.lock().unwrap().on_notify = Some(on_notify);
    t
}

fn set_num_pages(t: &Dev, n: u32) {
    t.0.lock().unwrap().config[0..4].copy_from_slice(&n.to_le_bytes());
}

fn config(t: &Dev) -> ConfigRepr {
    ConfigRepr::parse(&t.0.lock().unwrap().config).unwrap()
}

fn held(t: &Dev) -> usize {
    t.0.lock().unwrap().ext.held.len()
}

/// A 64 MiB guest (heap from 4 MiB) with an 8 MiB floor.
fn guest() -> Balloon<ModelHeap> {
    Balloon::new(ModelHeap::new(0x400, 16384), 8 << 20)
}

fn start(t: &Dev, b: &Balloon<ModelHeap>) -> VirtioBalloon<TestHal, Dev> {
    let irq = Box::leak(Box::new(IrqSlot::new()));
    VirtioBalloon::new(t.clone(), "virtio-balloon@test".into(), irq, IrqAck::Task, b, &mut || Ok(())).unwrap()
}

/// Polls until the driver has nothing more to do (at most 100 rounds).
fn settle(d: &mut VirtioBalloon<TestHal, Dev>, b: &mut Balloon<ModelHeap>) {
    for _ in 0..100 {
        if !d.poll_once(b).unwrap() {
            return;
        }
    }
    panic!("the driver did not settle");
}

#[test]
fn balloons_down_and_back_up_with_actual_written() {
    let t = device(wire::F_STATS_VQ, true);
    let mut b = guest();
    let mut d = start(&t, &b);
    assert_eq!(d.features(), wire::F_STATS_VQ | F_VERSION_1);
    assert!(d.describe().contains("features STATS_VQ,VERSION_1 queues inflateq,deflateq,statsq"), "{}", d.describe());
    set_num_pages(&t, 8192);
    settle(&mut d, &mut b);
    assert_eq!(held(&t), 8192);
    assert_eq!(config(&t), ConfigRepr { num_pages: 8192, actual: 8192 });
    assert_eq!(b.stats().ballooned_bytes, 32 << 20);
    assert!(t.0.lock().unwrap().ext.held.iter().all(|&p| (0x400..0x400 + 16384).contains(&p)), "heap pages only");
    set_num_pages(&t, 0);
    settle(&mut d, &mut b);
    assert_eq!((held(&t), config(&t).actual, b.ballooned_pages()), (0, 0, 0));
    assert!(b.source().allocs.is_empty(), "every chunk is back in the heap");
    assert_eq!(d.session().totals(), Totals { inflated: 8192, deflated: 8192, short: 0 });
}

#[test]
fn a_size_beyond_ram_gives_what_is_above_the_floor_and_says_so() {
    let t = device(0, true);
    let mut b = guest();
    let mut d = start(&t, &b);
    set_num_pages(&t, u32::MAX);
    settle(&mut d, &mut b);
    let above_floor = 16384 - (8 << 20) / 4096;
    assert_eq!((held(&t) as u64, u64::from(config(&t).actual)), (above_floor, above_floor));
    assert_eq!(b.stats().free_bytes, 8 << 20, "the floor stays free");
    let notifies = t.notifies();
    settle(&mut d, &mut b);
    assert_eq!(t.notifies(), notifies, "no retry for the same num_pages");
    assert_eq!(d.session().totals().short, 1);
    set_num_pages(&t, 0);
    settle(&mut d, &mut b);
    assert_eq!((held(&t), config(&t).actual), (0, 0));
}

#[test]
fn deflated_pages_are_the_guests_only_after_the_device_used_the_buffer() {
    let t = device(wire::F_MUST_TELL_HOST, true);
    let mut b = guest();
    let mut d = start(&t, &b);
    assert_eq!(d.features() & wire::F_MUST_TELL_HOST, wire::F_MUST_TELL_HOST);
    set_num_pages(&t, 512);
    settle(&mut d, &mut b);
    t.0.lock().unwrap().ext.auto = false;
    set_num_pages(&t, 0);
    assert!(!d.poll_once(&mut b).unwrap());
    assert_eq!(b.ballooned_pages(), 512, "the deflateq buffer is out, the pages still ballooned");
    assert_eq!(config(&t).actual, 512);
    serve(&t, QUEUE_DEFLATE);
    d.poll_once(&mut b).unwrap();
    assert_eq!((b.ballooned_pages(), config(&t).actual, held(&t)), (0, 0, 0));
}

#[test]
fn the_stats_buffer_is_answered_when_the_device_returns_it() {
    let t = device(wire::F_STATS_VQ, true);
    let mut b = guest();
    let mut d = start(&t, &b);
    let first = t.0.lock().unwrap().ext.stats[0].clone();
    assert_eq!(first, [(wire::tag::MEMFREE, 64 << 20), (wire::tag::MEMTOT, 64 << 20), (wire::tag::AVAIL, 64 << 20)]);
    set_num_pages(&t, 1024);
    settle(&mut d, &mut b);
    assert_eq!(t.0.lock().unwrap().ext.stats.len(), 1, "figures only when the device asks");
    let head = t.0.lock().unwrap().ext.stats_head.take().unwrap();
    t.push_used(QUEUE_STATS, u32::from(head), 0);
    settle(&mut d, &mut b);
    let s = t.0.lock().unwrap().ext.stats.clone();
    assert_eq!(s.len(), 2);
    assert_eq!(s[1][0], (wire::tag::MEMFREE, 60 << 20));
    assert_eq!(s[1][1], (wire::tag::MEMTOT, 60 << 20));
}

#[test]
fn hostile_used_ids_stop_the_driver_without_touching_memory() {
    let t = device(wire::F_STATS_VQ, false);
    let mut b = guest();
    let mut d = start(&t, &b);
    set_num_pages(&t, 100);
    assert!(!d.poll_once(&mut b).unwrap());
    let (head, _) = t.take_chain(QUEUE_INFLATE).unwrap();
    // A used id out of the queue's range, then one that was never lent.
    t.push_used(QUEUE_INFLATE, 1000, 0);
    let e = d.poll_once(&mut b).unwrap_err();
    assert!(matches!(&e, BalloonError::Protocol { queue: "inflateq", .. }), "{e}");
    assert!(e.to_string().contains("used id 1000"), "{e}");
    assert_eq!((b.ballooned_pages(), config(&t).actual), (100, 0), "nothing counted as given");
    let t2 = device(0, false);
    let mut b2 = guest();
    let mut d2 = start(&t2, &b2);
    set_num_pages(&t2, 100);
    d2.poll_once(&mut b2).unwrap();
    let (h2, _) = t2.take_chain(QUEUE_INFLATE).unwrap();
    t2.push_used(QUEUE_INFLATE, u32::from(h2) + 1, 0);
    assert!(d2.poll_once(&mut b2).is_err());
    // A statsq buffer used twice: the second is an id no longer lent.
    let _ = head;
    let t3 = device(wire::F_STATS_VQ, true);
    let mut b3 = guest();
    let mut d3 = start(&t3, &b3);
    let sh = t3.0.lock().unwrap().ext.stats_head.take().unwrap();
    t3.push_used(QUEUE_STATS, u32::from(sh), 0);
    t3.push_used(QUEUE_STATS, 7, 0);
    let e = d3.poll_once(&mut b3).and_then(|_| d3.poll_once(&mut b3)).unwrap_err();
    assert!(e.to_string().contains("statsq"), "{e}");
}

#[test]
fn a_device_refusing_the_features_is_failed() {
    let t = device(wire::F_STATS_VQ, true);
    t.0.lock().unwrap().refuse_features = true;
    let irq = Box::leak(Box::new(IrqSlot::new()));
    let b = guest();
    let r =
        VirtioBalloon::<TestHal, Dev>::new(t.clone(), "virtio-balloon@test".into(), irq, IrqAck::Task, &b, &mut || {
            Ok(())
        });
    assert!(matches!(r, Err(BalloonError::Start(StartError::FeaturesRejected { .. }))));
    assert!(t.status().contains(DeviceStatus::FAILED));
}
