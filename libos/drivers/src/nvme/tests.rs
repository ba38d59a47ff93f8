//! The NVMe driver against the controller model (`model.rs`): bring-up, the I/O path through the block engine,
//! and what a hostile controller can do — completions for commands never issued, phase tags out of order, SQ
//! head pointers out of range, error statuses — each a clear error, never a short read or memory corruption.

use super::command::{cns, Command, CommandId};
use super::completion::{sct, Completion, Status};
use super::model::{Model, Ns};
use super::*;
use crate::virtio::testing::{counter, drive, poll_block as poll};
use core::sync::atomic::{AtomicU64, Ordering};
use core::task::{Poll, Waker};
use libos::dev::{BlockDevice, BlockError, BlockFuture};

/// A clock that advances 1 ms per reading, so CAP.TO waits end quickly.
fn clock() -> u64 {
    static NOW: AtomicU64 = AtomicU64::new(0);
    NOW.fetch_add(1_000_000, Ordering::SeqCst)
}

fn start(m: &Model) -> Result<Started<Model>, NvmeError> {
    let ctrl = Controller::start(m.clone(), "nvme@test".into(), clock)?;
    bring_up(ctrl, 0)
}

/// Polls `f` to completion: the model serves what is held, then the interrupt reaps.
fn complete(m: &Model, s: &Started<Model>, f: BlockFuture<'_>) -> Result<(), BlockError> {
    drive(f, || drop(m.serve_all()), || s.queue.irq_waker().wake_by_ref())
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

#[test]
fn bring_up_follows_the_initialization_sequence() {
    let m = Model::new(256, 0);
    let s = start(&m).unwrap();
    {
        let st = m.st();
        let cc = regs::Cc::decode(st.cc);
        assert_eq!(cc, regs::Cc { enable: true, command_set: 0b110, mps: 0, iosqes: 6, iocqes: 4 });
        assert_eq!(st.aqa, regs::aqa(32, 32));
        let cmds: Vec<Command> = st.log.iter().map(|s| s.command).collect();
        assert_eq!(
            cmds,
            [
                Command::Identify { cns: cns::CONTROLLER, nsid: 0 },
                Command::SetFeatures { fid: 7, value: 0 },
                Command::Identify { cns: cns::ACTIVE_NAMESPACES, nsid: 0 },
                Command::Identify { cns: cns::NAMESPACE, nsid: 1 },
                Command::CreateIoCq { qid: 1, entries: 64, vector: 0, interrupts: true },
                Command::CreateIoSq { qid: 1, entries: 64, cqid: 1 },
            ]
        );
        assert!(st.stray_writes.is_empty(), "{:x?}", st.stray_writes);
        assert_eq!(st.cq_heads.get(&0), Some(&6), "each admin completion's head is rung");
        assert_eq!((st.cqs[&1].entries, st.cqs[&1].vector, st.sqs[&1].cqid), (64, 0, 1));
    }
    assert_eq!(s.disks.len(), 1);
    let d = &s.disks[0];
    let i = d.info();
    assert_eq!(
        (i.name.as_str(), i.sector_size, i.capacity, i.read_only, i.flush),
        ("nvme@test/n1", 512, 256, false, true)
    );
    assert_eq!(i.max_transfer, BOUNCE_MAX, "MDTS 7 allows 512 KiB; the bounce buffer is smaller");
    assert_eq!(
        s.describe(),
        "QEMU NVMe Ctrl serial zirvium-d0 firmware 10.0.2 NVMe 1.4 namespaces 1 mdts 512 KiB I/O queue 1 of 64 \
         entries (16 slots) write cache yes (flush) oncs COMPARE,DSM,WRITE_ZEROES,SAVE_SELECT,TIMESTAMP,COPY"
    );
    assert_eq!(
        describe_namespace(d),
        "nvme@test/n1 capacity 256 sectors (128 KiB) sector 512 bytes max transfer 128 KiB namespace 1"
    );
}

#[test]
fn write_flush_read_round_trip_is_interrupt_driven() {
    let m = Model::new(256, 0);
    let s = start(&m).unwrap();
    let d = &s.disks[0];
    let data = pattern(4096, 7);
    let (c, w) = counter();
    let mut f = d.write(8, &data);
    assert!(poll(&mut f, &w).is_pending());
    assert_eq!(m.st().doorbells.last(), Some(&(0x1008, 1)), "SQ 1 tail doorbell");
    let served = m.serve_all();
    assert_eq!(served.len(), 1);
    assert!(matches!(served[0].command, Command::Write { nsid: 1, slba: 8, blocks: 8, fua: false }));
    assert_eq!(c.get(), 0, "nothing wakes the request before the interrupt");
    s.queue.irq_waker().wake_by_ref();
    assert_eq!(c.get(), 1);
    assert_eq!(poll(&mut f, &w), Poll::Ready(Ok(())));
    drop(f);
    assert_eq!(m.disk(1, 8 * 512, 4096), data);
    assert_eq!(m.st().cq_heads.get(&1), Some(&1), "CQ 1 head doorbell");
    complete(&m, &s, d.flush()).unwrap();
    assert_eq!(m.st().flushes, 1);
    let mut back = vec![0u8; 4096];
    complete(&m, &s, d.read(8, &mut back)).unwrap();
    assert_eq!(back, data);
}

#[test]
fn several_commands_in_flight_complete_out_of_order() {
    let m = Model::new(256, 0);
    let s = start(&m).unwrap();
    let d = &s.disks[0];
    let mut bufs: Vec<Vec<u8>> = (0..4).map(|_| vec![0u8; 1024]).collect();
    let counters: Vec<_> = (0..4).map(|_| counter()).collect();
    let mut futs: Vec<BlockFuture<'_>> =
        bufs.iter_mut().enumerate().map(|(i, b)| d.read(10 * i as u64, &mut b[..])).collect();
    for (f, (_, w)) in futs.iter_mut().zip(&counters) {
        assert!(poll(f, w).is_pending());
    }
    let held = m.take_held();
    assert_eq!(held.len(), 4, "all four commands in flight");
    let cids: Vec<CommandId> = held.iter().map(|(_, s)| s.cid).collect();
    assert!(cids.iter().enumerate().all(|(i, c)| !cids[..i].contains(c)), "distinct command ids {cids:?}");
    for k in [1, 3, 2, 0] {
        m.complete(held[k].0, &held[k].1, None);
        s.queue.interrupt();
        assert_eq!(counters[k].0.get(), 1, "command {k} woke its request only");
    }
    for (f, (_, w)) in futs.iter_mut().zip(&counters) {
        assert_eq!(poll(f, w), Poll::Ready(Ok(())));
    }
    drop(futs);
    for (i, b) in bufs.iter().enumerate() {
        assert_eq!(*b, m.disk(1, 10 * i * 512, 1024), "read {i}");
    }
}

#[test]
fn transfers_split_at_mdts_with_prp_lists() {
    let m = Model::new(1024, 0);
    m.st().controller.mdts = 2; // 16 KiB
    let s = start(&m).unwrap();
    let d = &s.disks[0];
    assert_eq!(d.info().max_transfer, 16 * 1024);
    let data = pattern(50 * 1024, 3);
    let (_, w) = counter();
    let mut f = d.write(4, &data);
    let mut commands = Vec::new();
    loop {
        if let Poll::Ready(r) = poll(&mut f, &w) {
            r.unwrap();
            break;
        }
        for (q, sub) in m.take_held() {
            commands.push(sub);
            m.complete(q, &sub, None);
        }
        s.queue.interrupt();
    }
    drop(f);
    let shape: Vec<(u64, u32, bool)> = commands
        .iter()
        .map(|c| match c.command {
            Command::Write { slba, blocks, .. } => (slba, blocks, c.prp2 != 0 && c.prp2 != c.prp1 + 4096),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(shape, [(4, 32, true), (36, 32, true), (68, 32, true), (100, 4, false)], "PRP lists past 2 pages");
    assert_eq!(m.disk(1, 4 * 512, data.len()), data);
    let mut back = vec![0u8; 8192];
    complete(&m, &s, d.read(36, &mut back)).unwrap();
    assert_eq!(back, data[16 * 1024..16 * 1024 + 8192]);
}

#[test]
fn four_kib_blocks_and_write_protected_namespaces() {
    let m = Model::new(64, 0);
    {
        let mut st = m.st();
        st.namespaces.insert(1, Ns::new(16, 12));
        let mut ro = Ns::new(32, 9);
        ro.id.write_protected = true;
        st.namespaces.insert(2, ro);
        st.controller.volatile_write_cache = false;
    }
    let s = start(&m).unwrap();
    assert_eq!(s.disks.len(), 2);
    let (a, b) = (&s.disks[0], &s.disks[1]);
    assert_eq!((a.info().sector_size, a.info().capacity, a.info().flush), (4096, 16, false));
    let mut back = vec![0u8; 4096];
    let (_, w) = counter();
    let mut f = a.read(3, &mut back);
    assert!(poll(&mut f, &w).is_pending());
    let held = m.take_held();
    assert!(matches!(held[0].1.command, Command::Read { nsid: 1, slba: 3, blocks: 1, .. }));
    m.complete(held[0].0, &held[0].1, None);
    s.queue.interrupt();
    assert_eq!(poll(&mut f, &w), Poll::Ready(Ok(())));
    drop(f);
    assert_eq!(back, m.disk(1, 3 * 4096, 4096));
    assert!(b.info().read_only);
    assert_eq!(
        poll(&mut b.write(0, &[0; 512]), &w),
        Poll::Ready(Err(BlockError::ReadOnly { device: "nvme@test/n2".into() }))
    );
    assert_eq!(poll(&mut a.flush(), &w), Poll::Ready(Ok(())), "no volatile write cache: nothing to flush");
    assert!(m.take_held().is_empty());
}

#[test]
fn error_statuses_name_device_queue_and_status_and_never_return_data() {
    let m = Model::new(256, 0);
    let s = start(&m).unwrap();
    let d = &s.disks[0];
    m.st().fail_lba = Some((18, Status::error(sct::MEDIA, 0x81)));
    let mut back = vec![0x5au8; 1024];
    let e = complete(&m, &s, d.read(17, &mut back)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "nvme@test/n1: I/O error at sector 17: Read of 2 blocks at LBA 17 (NSID 1): Unrecovered Read Error \
         (SCT 2h SC 81h, do not retry) (I/O queue 1)"
    );
    assert!(back.iter().all(|&b| b == 0x5a), "a failed read leaves the caller's buffer alone");
    // A status the model would not give on its own: LBA Out of Range on a write.
    let (_, w) = counter();
    let data = [1u8; 512];
    let mut f = d.write(3, &data);
    assert!(poll(&mut f, &w).is_pending());
    let held = m.take_held();
    m.complete(held[0].0, &held[0].1, Some(Status::error(sct::GENERIC, 0x80)));
    s.queue.interrupt();
    let Poll::Ready(Err(BlockError::Io { sector: 3, detail, .. })) = poll(&mut f, &w) else { panic!() };
    assert!(detail.contains("LBA Out of Range (SCT 0h SC 80h"), "{detail}");
    drop(f);
    // The queue keeps working.
    m.st().fail_lba = None;
    complete(&m, &s, d.read(17, &mut back)).unwrap();
    assert_eq!(back, m.disk(1, 17 * 512, 1024));
}

/// Starts one read and returns its future and command; the caller plays the controller.
fn pending_read<'a>(m: &Model, d: &'a Disk<Model>, buf: &'a mut [u8], w: &Waker) -> (BlockFuture<'a>, Submission) {
    let mut f = d.read(1, buf);
    assert!(poll(&mut f, w).is_pending());
    let held = m.take_held();
    (f, held[0].1)
}

use super::command::Submission;

fn assert_broken(m: &Model, s: &Started<Model>, e: &BlockError, what: &str) {
    let BlockError::Protocol { device, detail } = e else { panic!("expected a protocol error, got {e:?}") };
    assert_eq!(device, "nvme@test");
    assert!(
        detail.starts_with("I/O queue 1: completion queue 1: ") || detail.starts_with("I/O queue 1: completion names"),
        "{detail}"
    );
    assert!(detail.contains(what), "{detail} lacks {what:?}");
    assert!(!regs::Cc::decode(m.st().cc).enable, "the controller was disabled (CC.EN = 0)");
    let (_, w) = counter();
    let mut again = [0u8; 512];
    assert_eq!(poll(&mut s.disks[0].read(0, &mut again), &w), Poll::Ready(Err(e.clone())), "stays broken");
}

fn hostile(c: impl FnOnce(&Model, &Submission), what: &str) {
    let m = Model::new(256, 0);
    let s = start(&m).unwrap();
    let (counter_, w) = counter();
    let mut buf = [0x77u8; 512];
    let (mut f, sub) = pending_read(&m, &s.disks[0], &mut buf, &w);
    c(&m, &sub);
    s.queue.interrupt();
    assert_eq!(counter_.get(), 1, "the waiting request is woken to see the failure");
    let Poll::Ready(Err(e)) = poll(&mut f, &w) else { panic!("{what}: expected an error") };
    drop(f);
    assert_broken(&m, &s, &e, what);
    assert!(buf.iter().all(|&b| b == 0x77), "nothing was copied to the caller");
}

fn completion(cid: u16, sq_head: u16) -> Completion {
    Completion { dw0: 0, sq_head, sq_id: 1, cid: CommandId(cid), phase: true, status: Status::SUCCESS }
}

#[test]
fn a_completion_for_a_command_never_issued_breaks_the_queue() {
    hostile(
        |m, _| m.post_raw(1, completion(0x7f7f, 1)),
        "command id 0x7f7f, which was never issued or already completed",
    );
    // The right slot, a stale generation.
    hostile(|m, sub| m.post_raw(1, completion(sub.cid.0 ^ 0x100, 1)), "was never issued");
}

#[test]
fn a_completion_repeated_breaks_the_queue() {
    let m = Model::new(256, 0);
    let s = start(&m).unwrap();
    let (_, w) = counter();
    let mut a = [0u8; 512];
    let (f, sub) = pending_read(&m, &s.disks[0], &mut a, &w);
    let mut b = [0u8; 512];
    let mut g = s.disks[0].read(2, &mut b);
    assert!(poll(&mut g, &w).is_pending());
    m.complete(1, &sub, None);
    m.post_raw(1, completion(sub.cid.0, 2)); // the same command completed twice
    s.queue.interrupt();
    let Poll::Ready(Err(e)) = poll(&mut g, &w) else { panic!("expected an error") };
    drop(g);
    drop(f);
    assert_broken(&m, &s, &e, &format!("command id {}, which was never issued or already completed", sub.cid));
}

#[test]
fn a_phase_tag_out_of_order_breaks_the_queue() {
    let m = Model::new(256, 0);
    let s = start(&m).unwrap();
    let d = &s.disks[0];
    let (_, w) = counter();
    let mut bufs = vec![[0u8; 512]; 3];
    let mut futs: Vec<BlockFuture<'_>> = bufs.iter_mut().map(|b| d.read(0, &mut b[..])).collect();
    for f in &mut futs {
        assert!(poll(f, &w).is_pending());
    }
    let held = m.take_held();
    // Entry 2 gets a completion with the new phase tag; entries 0 and 1 stay old.
    m.write_cqe(1, 2, &completion(held[2].1.cid.0, 3));
    s.queue.interrupt();
    let Poll::Ready(Err(e)) = poll(&mut futs[0], &w) else { panic!("expected an error") };
    drop(futs);
    assert_broken(&m, &s, &e, "entry 2 carries the new phase tag while head entry 0 does not");
}

#[test]
fn an_sq_head_pointer_out_of_range_breaks_the_queue() {
    hostile(
        |m, sub| m.post_raw(1, completion(sub.cid.0, 40)),
        "SQ head pointer 40 is outside the submitted entries 0..=1",
    );
    hostile(
        |m, sub| m.post_raw(1, Completion { sq_id: 0, ..completion(sub.cid.0, 1) }),
        "entry names submission queue 0, expected 1",
    );
}

#[test]
fn init_errors_are_clear() {
    let m = Model::new(256, 0);
    m.st().ready_delay = None;
    let e = start(&m).err().unwrap();
    assert_eq!(e.to_string(), "nvme@test: CSTS.RDY did not become 1 within 7500 ms (CAP.TO)");
    let m = Model::new(256, 0);
    m.st().fatal_on_enable = true;
    assert!(matches!(start(&m).err().unwrap(), NvmeError::Fatal { csts: 2, .. }));
    let m = Model::new(256, 0);
    m.st().cap.mps_min = 1;
    assert_eq!(
        start(&m).err().unwrap().to_string(),
        "nvme@test: unsupported: smallest memory page size is 8192 bytes (CAP.MPSMIN), the driver uses 4096"
    );
    let m = Model::new(256, 0);
    m.st().cap.command_sets = regs::Cap::CSS_ADMIN_ONLY;
    assert!(start(&m).err().unwrap().to_string().contains("no NVM command set (CAP.CSS 0x80)"));
    let m = Model::new(256, 0);
    m.st().controller.sqes = 0x77;
    assert!(start(&m).err().unwrap().to_string().contains("queue entry sizes (SQES 0x77, CQES 0x44)"));
}

#[test]
fn firmware_enabled_controllers_are_reset_first() {
    let m = Model::new(256, 0);
    {
        let mut st = m.st();
        st.cc = regs::Cc { enable: true, ..Default::default() }.encode();
        st.csts = regs::CSTS_RDY;
    }
    let s = start(&m).unwrap();
    assert_eq!(s.disks.len(), 1);
    assert!(regs::Cc::decode(m.st().cc).enable);
}

#[test]
fn namespaces_without_the_active_list_and_unusable_formats() {
    let m = Model::new(256, 0);
    {
        let mut st = m.st();
        st.refuse_namespace_list = true;
        st.controller.nn = 4;
        let mut meta = Ns::new(16, 9);
        meta.id.formats[0].metadata = 8;
        st.namespaces.insert(3, meta);
        st.namespaces.insert(4, Ns::new(16, 12));
    }
    let s = start(&m).unwrap();
    let names: Vec<&str> = s.disks.iter().map(|d| d.info().name.as_str()).collect();
    assert_eq!(names, ["nvme@test/n1", "nvme@test/n4"], "NSIDs 1..=NN tried");
    let skipped: Vec<String> = s.skipped.iter().map(|(id, e)| format!("{id}: {e}")).collect();
    assert_eq!(
        skipped,
        ["2: namespace size 0 (not active)", "3: LBA format with 8 bytes of metadata per block (not supported)"]
    );
}

#[test]
fn doorbells_follow_the_stride() {
    let m = Model::new(256, 2);
    let s = start(&m).unwrap();
    let mut b = [0u8; 512];
    complete(&m, &s, s.disks[0].read(0, &mut b)).unwrap();
    let st = m.st();
    assert!(st.doorbells.contains(&(0x1000 + 2 * 16, 1)), "SQ 1 tail at 1000h + 2 × 16");
    assert!(st.doorbells.contains(&(0x1000 + 3 * 16, 1)), "CQ 1 head at 1000h + 3 × 16");
    assert!(st.stray_writes.is_empty());
}

#[test]
fn max_transfer_rules() {
    assert_eq!(max_transfer(0, 9), BOUNCE_MAX, "no MDTS limit");
    assert_eq!(max_transfer(1, 9), 8192);
    assert_eq!(max_transfer(5, 12), 128 * 1024);
    assert_eq!(max_transfer(40, 9), BOUNCE_MAX, "a huge MDTS does not overflow");
    assert_eq!(max_transfer(1, 16), 0, "an MDTS below one block leaves nothing");
}
