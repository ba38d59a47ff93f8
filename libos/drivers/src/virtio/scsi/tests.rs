//! The virtio-scsi driver against a device model written from virtio 1.2 §5.6 and SPC-5/SBC-4: the shared
//! [`MockTransport`] records registers; the device side here takes request chains from the available ring
//! (readable part: header and data-out; writable part: response and data-in, gathered and scattered across
//! descriptors as the specification lets the driver lay them out), answers INQUIRY, REPORT LUNS, TEST UNIT
//! READY, READ CAPACITY(16), READ(16), WRITE(16) and SYNCHRONIZE CACHE(10) against in-memory logical units
//! (with UNIT ATTENTION once per unit, BAD_TARGET for absent targets), and writes the used ring. During the boot
//! scan it answers at once (the notification hook); afterwards tests answer by hand, hostile answers included.

use super::*;
use crate::scsi::data::{CapacityRepr, TYPE_DISK};
use crate::scsi::sense::{Format, SenseKey, SenseRepr};
use crate::virtio::testing::VIRTQ_DESC_F_WRITE;
use crate::virtio::testing::{counter, drive, poll_block as poll, read_mem, write_mem, Desc, MockTransport, TestHal};
use alloc::collections::BTreeMap;
use core::sync::atomic::{AtomicU64, Ordering};
use core::task::{Poll, Waker};
use libos::dev::BlockFuture;
use virtio_drivers::transport::DeviceType;

const QS: usize = 16;
const CDB_SIZE: usize = 32;
const SENSE_SIZE: usize = 96;
const RESP_LEN: usize = RESP_HEADER + SENSE_SIZE;

/// One logical unit of the model.
struct Lu {
    data: Vec<u8>,
    block: usize,
    inquiry: InquiryRepr,
    /// A UNIT ATTENTION condition is pending (reported to the next command but INQUIRY and REPORT LUNS).
    ua: bool,
}

#[derive(Default)]
struct Model {
    luns: BTreeMap<(u8, u16), Lu>,
    /// Answer requests as soon as the driver notifies (the boot scan).
    auto: bool,
    report_luns_refused: bool,
    flushes: u32,
    /// Every command answered: target, LUN, command.
    log: Vec<(u8, u16, Command)>,
    /// Fail commands touching this LBA with this sense.
    fail_lba: Option<(u64, SenseRepr)>,
    unit_attentions: u32,
}

type FakeTransport = MockTransport<Model>;

fn disk(blocks: usize, block: usize, device_type: u8) -> Lu {
    Lu {
        data: (0..blocks * block).map(|i| (i / 512) as u8 ^ (i % 251) as u8).collect(),
        block,
        inquiry: InquiryRepr {
            qualifier: 0,
            device_type,
            removable: false,
            version: 5,
            vendor: "QEMU".into(),
            product: "QEMU HARDDISK".into(),
            revision: "2.5+".into(),
        },
        ua: false,
    }
}

/// A request chain the device took, decoded.
#[derive(Debug, Clone)]
struct Req {
    head: u16,
    header: ReqRepr,
    command: Command,
    data_out: Vec<u8>,
    writable: Vec<Desc>,
}

impl Req {
    fn data_in_len(&self) -> usize {
        self.writable.iter().map(|d| d.len as usize).sum::<usize>() - RESP_LEN
    }
}

impl FakeTransport {
    /// Takes the next request chain: readable bytes are the header then data-out; writable bytes the response
    /// then data-in (§5.6.6.1).
    fn take(&self) -> Option<Req> {
        let (head, descs) = self.take_chain(QUEUE_REQUEST)?;
        let mut readable = Vec::new();
        let mut writable = Vec::new();
        for d in descs {
            if d.flags & VIRTQ_DESC_F_WRITE != 0 {
                writable.push(d);
            } else {
                assert!(writable.is_empty(), "readable descriptors precede writable ones");
                readable.extend(read_mem(d.addr, d.len as usize));
            }
        }
        assert!(readable.len() >= REQ_HEADER + CDB_SIZE, "header of cdb_size bytes");
        assert!(writable.iter().map(|d| d.len as usize).sum::<usize>() >= RESP_LEN, "room for the response");
        let header = ReqRepr::parse(&readable).expect("a request header");
        let command = Command::parse(&scsi::Cdb::new_unchecked(&header.cdb[..])).expect("a known CDB");
        Some(Req { head, header, command, data_out: readable[REQ_HEADER + CDB_SIZE..].to_vec(), writable })
    }

    /// Writes `bytes` across the writable descriptors starting at byte `at` of the writable space.
    fn scatter(req: &Req, mut at: usize, mut bytes: &[u8]) {
        for d in &req.writable {
            let len = d.len as usize;
            if at >= len {
                at -= len;
                continue;
            }
            let n = (len - at).min(bytes.len());
            write_mem(d.addr + at as u64, &bytes[..n]);
            bytes = &bytes[n..];
            at = 0;
            if bytes.is_empty() {
                break;
            }
        }
    }

    /// Writes a response and data-in; returns the used length (response plus data written).
    fn answer(&self, req: &Req, r: RespRepr, sense: &[u8], data: &[u8]) -> u32 {
        let mut resp = vec![0u8; RESP_LEN];
        r.emit(&mut resp, sense);
        Self::scatter(req, 0, &resp);
        Self::scatter(req, RESP_LEN, data);
        (RESP_LEN + data.len()) as u32
    }

    /// Answers `req` as the model's logical units would; returns the used length.
    fn serve(&self, req: &Req) -> u32 {
        let (r, sense, data) = self.0.lock().unwrap().ext.execute(req);
        let mut sense_bytes = vec![0u8; 32];
        let sense_len = sense.map_or(0, |s| {
            s.emit(&mut sense_bytes);
            s.buffer_len()
        });
        let r = RespRepr { sense_len: sense_len as u32, ..r };
        self.answer(req, r, &sense_bytes[..sense_len], &data)
    }

    /// Takes and serves every available request; returns them.
    fn serve_all(&self) -> Vec<Req> {
        let mut out = Vec::new();
        while let Some(r) = self.take() {
            let used = self.serve(&r);
            self.push_used(QUEUE_REQUEST, u32::from(r.head), used);
            out.push(r);
        }
        out
    }

    fn lu_data(&self, target: u8, lun: u16, at: usize, len: usize) -> Vec<u8> {
        self.0.lock().unwrap().ext.luns[&(target, lun)].data[at..at + len].to_vec()
    }
}

/// The notification hook: serve the request queue at once while `auto` is set.
fn auto_serve(t: &FakeTransport, queue: u16) {
    if queue == QUEUE_REQUEST && t.0.lock().unwrap().ext.auto {
        t.serve_all();
    }
}

const GOOD: RespRepr = RespRepr { sense_len: 0, residual: 0, status_qualifier: 0, status: 0, response: response::OK };

impl Model {
    /// The response, sense and data-in for `req`.
    fn execute(&mut self, req: &Req) -> (RespRepr, Option<SenseRepr>, Vec<u8>) {
        let (t, l) = (req.header.target, req.header.lun.get());
        self.log.push((t, l, req.command));
        if !self.luns.keys().any(|&(target, _)| target == t) {
            return (RespRepr { response: response::BAD_TARGET, ..GOOD }, None, Vec::new());
        }
        let room = req.data_in_len();
        let check = |key, asc| {
            (
                RespRepr { status: ScsiStatus::CHECK_CONDITION.0, residual: room as u32, ..GOOD },
                Some(SenseRepr::current(key, asc, 0)),
                Vec::new(),
            )
        };
        let with_data = |mut d: Vec<u8>| {
            d.truncate(room);
            (RespRepr { residual: (room - d.len()) as u32, ..GOOD }, None, d)
        };
        match req.command {
            Command::ReportLuns { .. } if self.report_luns_refused => return check(SenseKey::ILLEGAL_REQUEST, 0x20),
            Command::ReportLuns { .. } => {
                let luns: Vec<Lun> = self.luns.keys().filter(|k| k.0 == t).filter_map(|k| Lun::new(k.1)).collect();
                return with_data(ReportLunsRepr::emit(&luns));
            }
            Command::Inquiry { .. } => {
                let mut d = vec![0u8; 36];
                match self.luns.get(&(t, l)) {
                    Some(lu) => lu.inquiry.emit(&mut d),
                    None => d[0] = 0x7f, // qualifier 011b, type 1Fh: no logical unit here
                }
                return with_data(d);
            }
            _ => {}
        }
        let Some(lu) = self.luns.get_mut(&(t, l)) else { return check(SenseKey::ILLEGAL_REQUEST, 0x25) };
        if core::mem::take(&mut lu.ua) {
            self.unit_attentions += 1;
            return check(SenseKey::UNIT_ATTENTION, 0x29);
        }
        if let (Some((lba, sense)), Some(at)) = (self.fail_lba, req.command.lba()) {
            if let Command::Read16 { blocks, .. } | Command::Write16 { blocks, .. } = req.command {
                if (at..at + u64::from(blocks)).contains(&lba) {
                    return (RespRepr { status: 2, residual: room as u32, ..GOOD }, Some(sense), Vec::new());
                }
            }
        }
        let blocks_total = (lu.data.len() / lu.block) as u64;
        match req.command {
            Command::TestUnitReady => (GOOD, None, Vec::new()),
            Command::ReadCapacity16 { .. } => {
                let mut d = vec![0u8; 32];
                CapacityRepr {
                    last_lba: blocks_total - 1,
                    block_length: lu.block as u32,
                    protection: false,
                    blocks_per_physical_exp: 0,
                }
                .emit(&mut d);
                with_data(d)
            }
            Command::Read16 { lba, blocks, .. } | Command::Write16 { lba, blocks, .. } => {
                if lba + u64::from(blocks) > blocks_total {
                    return check(SenseKey::ILLEGAL_REQUEST, 0x21);
                }
                let (at, n) = (lba as usize * lu.block, blocks as usize * lu.block);
                if matches!(req.command, Command::Read16 { .. }) {
                    assert_eq!(room, n, "data-in buffer of the transfer length");
                    with_data(lu.data[at..at + n].to_vec())
                } else {
                    assert_eq!(req.data_out.len(), n, "data-out of the transfer length");
                    lu.data[at..at + n].copy_from_slice(&req.data_out);
                    (GOOD, None, Vec::new())
                }
            }
            Command::SynchronizeCache10 { .. } => {
                self.flushes += 1;
                (GOOD, None, Vec::new())
            }
            _ => check(SenseKey::ILLEGAL_REQUEST, 0x20),
        }
    }
}

fn config(max_target: u16) -> ConfigRepr {
    ConfigRepr {
        num_queues: 1,
        seg_max: 126,
        max_sectors: 0xffff,
        cmd_per_lun: 128,
        event_info_size: 16,
        sense_size: SENSE_SIZE as u32,
        cdb_size: CDB_SIZE as u32,
        max_channel: 0,
        max_target,
        max_lun: 16383,
    }
}

/// A device with targets 0 (a 256-block disk at LUN 0, a CD-ROM at LUN 1) and 2 (a 4 KiB-block disk with a
/// UNIT ATTENTION pending); target 1 absent.
fn device() -> FakeTransport {
    let mut m = Model { auto: true, ..Model::default() };
    m.luns.insert((0, 0), disk(256, 512, TYPE_DISK));
    m.luns.insert((0, 1), disk(4, 2048, 0x05));
    let mut four_k = disk(32, 4096, TYPE_DISK);
    four_k.ua = true;
    m.luns.insert((2, 0), four_k);
    let t = MockTransport::new(
        DeviceType::ScsiHost,
        3,
        F_VERSION_1 | wire::F_HOTPLUG | wire::F_INOUT,
        config(3).to_bytes().to_vec(),
        m,
    );
    t.0.lock().unwrap().on_notify = Some(auto_serve);
    t
}

fn clock() -> u64 {
    static NOW: AtomicU64 = AtomicU64::new(0);
    NOW.fetch_add(1_000_000, Ordering::SeqCst)
}

type Scsi = VirtioScsi<TestHal, FakeTransport, QS>;

fn start_with(t: &FakeTransport, ack: IrqAck) -> Result<(Scsi, &'static IrqSlot), ScsiInitError> {
    let irq: &'static IrqSlot = Box::leak(Box::new(IrqSlot::new()));
    let mut calls = 0;
    let dev = Scsi::new(t.clone(), "virtio-scsi@test".into(), irq, ack, clock, &mut || {
        calls += 1;
        Ok(())
    })?;
    assert_eq!(calls, 1, "interrupt setup runs once");
    // From here on the test answers by hand.
    t.0.lock().unwrap().ext.auto = false;
    Ok((dev, irq))
}

fn start(t: &FakeTransport) -> (Scsi, &'static IrqSlot) {
    start_with(t, IrqAck::None).unwrap()
}

fn complete(t: &FakeTransport, irq: &IrqSlot, f: BlockFuture<'_>) -> Result<(), BlockError> {
    drive(f, || drop(t.serve_all()), || irq.wake())
}

#[test]
fn the_scan_finds_disks_behind_report_luns_and_skips_the_rest() {
    let t = device();
    let (s, _) = start(&t);
    assert_eq!(s.features, F_VERSION_1 | wire::F_HOTPLUG, "INOUT is not taken");
    let names: Vec<&str> = s.disks.iter().map(|(d, _)| d.info().name.as_str()).collect();
    assert_eq!(names, ["virtio-scsi@test/0:0", "virtio-scsi@test/2:0"]);
    let (a, inq) = &s.disks[0];
    let b = &s.disks[1].0;
    assert_eq!(
        (a.info().sector_size, a.info().capacity, a.info().flush, a.info().max_transfer),
        (512, 256, true, BOUNCE_MAX)
    );
    assert_eq!((b.info().sector_size, b.info().capacity), (4096, 32));
    assert_eq!(
        s.skipped,
        [Skipped {
            target: 0,
            lun: Lun::new(1).unwrap(),
            why: "peripheral qualifier 0 device type 0x05: not a disk".into()
        }]
    );
    let log: Vec<(u8, u16, &str)> = t.0.lock().unwrap().ext.log.iter().map(|(t, l, c)| (*t, *l, c.name())).collect();
    assert_eq!(
        log,
        [
            (0, 0, "REPORT LUNS"),
            (0, 0, "INQUIRY"),
            (0, 0, "TEST UNIT READY"),
            (0, 0, "READ CAPACITY(16)"),
            (0, 1, "INQUIRY"),
            (1, 0, "REPORT LUNS"),
            (2, 0, "REPORT LUNS"),
            (2, 0, "INQUIRY"),
            (2, 0, "TEST UNIT READY"),
            (2, 0, "TEST UNIT READY"),
            (2, 0, "READ CAPACITY(16)"),
            (3, 0, "REPORT LUNS"),
        ],
        "target 1 answers BAD_TARGET; target 2's UNIT ATTENTION is retried"
    );
    assert_eq!(t.0.lock().unwrap().ext.unit_attentions, 1);
    assert_eq!(
        s.describe(),
        "virtio-scsi@test features HOTPLUG,VERSION_1 request queues 1 (using 1 of 16 descriptors) cdb 32 sense 96 \
         max_target 3 max_lun 16383 max_sectors 65535 seg_max 126 disks 2"
    );
    assert_eq!(
        describe_unit(a, inq),
        "virtio-scsi@test/0:0 capacity 256 sectors (128 KiB) sector 512 bytes max transfer 128 KiB QEMU QEMU HARDDISK \
         2.5+ target 0 LUN 0"
    );
    assert!(t.status().contains(DeviceStatus::DRIVER_OK));
    assert_eq!(t.avail_flags(QUEUE_EVENT), 0);
    assert_eq!(t.q(QUEUE_EVENT).size, SMALL_QUEUE as u32, "event queue set up");
    assert!(t.q(QUEUE_CONTROL).ready, "control queue set up");
}

#[test]
fn lun_0_alone_when_report_luns_is_refused() {
    let t = device();
    t.0.lock().unwrap().ext.report_luns_refused = true;
    let (s, _) = start(&t);
    let names: Vec<&str> = s.disks.iter().map(|(d, _)| d.info().name.as_str()).collect();
    assert_eq!(names, ["virtio-scsi@test/0:0", "virtio-scsi@test/2:0"], "LUN 1 of target 0 is not found then");
}

#[test]
fn write_flush_read_round_trip_is_interrupt_driven() {
    let t = device();
    let (s, irq) = start(&t);
    let d = &s.disks[0].0;
    let data: Vec<u8> = (0..4096).map(|i| (i * 7) as u8).collect();
    let (c, w) = counter();
    let mut f = d.write(8, &data);
    assert!(poll(&mut f, &w).is_pending());
    let served = t.serve_all();
    assert_eq!(served.len(), 1);
    assert_eq!(served[0].command, Command::Write16 { lba: 8, blocks: 8, fua: false });
    assert_eq!(served[0].writable.len(), 1, "a write's only writable buffer is the response");
    assert_eq!(c.get(), 0, "nothing wakes the request before the interrupt");
    irq.wake();
    assert_eq!(c.get(), 1);
    assert_eq!(poll(&mut f, &w), Poll::Ready(Ok(())));
    drop(f);
    assert_eq!(t.lu_data(0, 0, 8 * 512, 4096), data);
    complete(&t, irq, d.flush()).unwrap();
    assert_eq!(t.0.lock().unwrap().ext.flushes, 1, "SYNCHRONIZE CACHE(10) sent");
    let mut back = vec![0u8; 4096];
    complete(&t, irq, d.read(8, &mut back)).unwrap();
    assert_eq!(back, data);
    // The 4 KiB-block unit: logical block 3 is LBA 3.
    let b = &s.disks[1].0;
    let mut four = vec![0u8; 4096];
    complete(&t, irq, b.read(3, &mut four)).unwrap();
    assert_eq!(four, t.lu_data(2, 0, 3 * 4096, 4096));
    let log = &t.0.lock().unwrap().ext.log;
    assert_eq!(log.last().map(|e| (e.0, e.2)), Some((2, Command::Read16 { lba: 3, blocks: 1, fua: false })));
}

#[test]
fn several_requests_in_flight_and_unit_attention_retried() {
    let t = device();
    let (s, irq) = start(&t);
    let d = &s.disks[0].0;
    let mut bufs: Vec<Vec<u8>> = (0..3).map(|_| vec![0u8; 1024]).collect();
    let counters: Vec<_> = (0..3).map(|_| counter()).collect();
    let mut futs: Vec<BlockFuture<'_>> =
        bufs.iter_mut().enumerate().map(|(i, b)| d.read(20 * i as u64, &mut b[..])).collect();
    for (f, (_, w)) in futs.iter_mut().zip(&counters) {
        assert!(poll(f, w).is_pending());
    }
    let mut reqs = Vec::new();
    while let Some(r) = t.take() {
        reqs.push(r);
    }
    assert_eq!(reqs.len(), 3);
    // The second gets a UNIT ATTENTION (a reset happened); the driver sends it again by itself.
    t.0.lock().unwrap().ext.luns.get_mut(&(0, 0)).unwrap().ua = true;
    for k in [1, 2, 0] {
        let used = t.serve(&reqs[k]);
        t.push_used(QUEUE_REQUEST, u32::from(reqs[k].head), used);
        irq.wake();
    }
    assert_eq!(counters[1].0.get(), 0, "the retried request is not woken yet");
    let again = t.serve_all();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].command, Command::Read16 { lba: 20, blocks: 2, fua: false });
    irq.wake();
    for (f, (_, w)) in futs.iter_mut().zip(&counters) {
        assert_eq!(poll(f, w), Poll::Ready(Ok(())));
    }
    drop(futs);
    for (i, b) in bufs.iter().enumerate() {
        assert_eq!(*b, t.lu_data(0, 0, 20 * i * 512, 1024), "read {i}");
    }
}

#[test]
fn sense_of_any_kind_is_a_clear_error() {
    let t = device();
    let (s, irq) = start(&t);
    let d = &s.disks[0].0;
    let medium = SenseRepr::current(SenseKey::MEDIUM_ERROR, 0x11, 0);
    t.0.lock().unwrap().ext.fail_lba = Some((18, medium));
    let mut back = vec![0x5au8; 1024];
    let e = complete(&t, irq, d.read(17, &mut back)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "virtio-scsi@test/0:0: I/O error at sector 17: READ(16) of 2 blocks at LBA 17: status CHECK CONDITION (0x02), \
         sense key MEDIUM ERROR (0x3), ASC/ASCQ 0x11/0x00 (unrecovered read error) (requestq)"
    );
    assert!(back.iter().all(|&b| b == 0x5a), "nothing copied from a failed read");
    // Descriptor-format sense, a write-protected medium, on a write.
    let protect = SenseRepr { format: Format::Descriptor, ..SenseRepr::current(SenseKey::DATA_PROTECT, 0x27, 0) };
    t.0.lock().unwrap().ext.fail_lba = Some((40, protect));
    let e = complete(&t, irq, d.write(40, &[1u8; 512])).unwrap_err();
    assert!(e.to_string().contains("sense key DATA PROTECT (0x7), ASC/ASCQ 0x27/0x00 (write protected)"), "{e}");
    // The device keeps working.
    t.0.lock().unwrap().ext.fail_lba = None;
    complete(&t, irq, d.read(17, &mut back)).unwrap();
    assert_eq!(back, t.lu_data(0, 0, 17 * 512, 1024));
}

/// Starts a read of 2 blocks at sector 1 and returns its chain; the caller answers it.
fn pending_read<'a>(
    t: &FakeTransport,
    d: &'a Disk<TestHal, FakeTransport, QS>,
    buf: &'a mut [u8],
    w: &Waker,
) -> (BlockFuture<'a>, Req) {
    let mut f = d.read(1, buf);
    assert!(poll(&mut f, w).is_pending());
    (f, t.take().unwrap())
}

#[test]
fn transport_responses_and_short_reads_fail_the_request() {
    let t = device();
    let (s, irq) = start(&t);
    let d = &s.disks[0].0;
    let (_, w) = counter();
    let mut buf = vec![0x11u8; 1024];
    let (mut f, req) = pending_read(&t, d, &mut buf, &w);
    let used = t.answer(&req, RespRepr { response: response::BAD_TARGET, ..GOOD }, &[], &[]);
    t.push_used(QUEUE_REQUEST, u32::from(req.head), used);
    irq.wake();
    let Poll::Ready(Err(e)) = poll(&mut f, &w) else { panic!() };
    drop(f);
    assert!(
        e.to_string().ends_with("READ(16) of 2 blocks at LBA 1: response VIRTIO_SCSI_S_BAD_TARGET (requestq)"),
        "{e}"
    );
    // GOOD status with half the data: never passed off as a whole read.
    let (mut f, req) = pending_read(&t, d, &mut buf, &w);
    let used = t.answer(&req, RespRepr { residual: 512, ..GOOD }, &[], &[0xee; 512]);
    t.push_used(QUEUE_REQUEST, u32::from(req.head), used);
    irq.wake();
    let Poll::Ready(Err(e)) = poll(&mut f, &w) else { panic!() };
    drop(f);
    assert!(e.to_string().contains("short transfer: 512 of 1024 bytes with GOOD status"), "{e}");
    assert!(buf.iter().all(|&b| b == 0x11), "the caller's buffer is untouched");
    assert_eq!(s.queue.broken(), None, "device errors do not break the device");
}

fn assert_broken(t: &FakeTransport, s: &Scsi, e: &BlockError, what: &str) {
    let BlockError::Protocol { device, detail } = e else { panic!("expected a protocol error, got {e:?}") };
    assert_eq!(device, "virtio-scsi@test");
    assert!(detail.starts_with("requestq: ") && detail.contains(what), "{detail} lacks {what:?}");
    assert!(t.status().contains(DeviceStatus::FAILED), "device marked FAILED");
    let (_, w) = counter();
    let mut again = [0u8; 512];
    assert_eq!(poll(&mut s.disks[0].0.read(0, &mut again), &w), Poll::Ready(Err(e.clone())), "stays broken");
}

/// A read answered with `resp` (and `sense`, `data`) and used length `used` (None: what was written).
fn hostile(resp: RespRepr, sense: &[u8], data: &[u8], used: Option<u32>, what: &str) {
    let t = device();
    let (s, irq) = start(&t);
    let (c, w) = counter();
    let mut buf = vec![0x33u8; 1024];
    let (mut f, req) = pending_read(&t, &s.disks[0].0, &mut buf, &w);
    let written = t.answer(&req, resp, sense, data);
    t.push_used(QUEUE_REQUEST, u32::from(req.head), used.unwrap_or(written));
    irq.wake();
    assert_eq!(c.get(), 1, "the waiting request is woken to see the failure");
    let Poll::Ready(Err(e)) = poll(&mut f, &w) else { panic!("{what}: expected an error") };
    drop(f);
    assert_broken(&t, &s, &e, what);
    assert!(buf.iter().all(|&b| b == 0x33), "nothing copied to the caller");
}

#[test]
fn hostile_lengths_and_values_break_the_device() {
    let data = [0u8; 1024];
    hostile(
        GOOD,
        &[],
        &data,
        Some((RESP_LEN + 1025) as u32),
        "used length 1133 past the 1132 bytes the device may write",
    );
    hostile(GOOD, &[], &data, Some(11), "used length 11 is short of the 12-byte response");
    hostile(
        RespRepr { sense_len: 200, status: 2, ..GOOD },
        &[],
        &[],
        None,
        "sense_len 200 past the 96-byte sense buffer",
    );
    hostile(RespRepr { residual: 4096, ..GOOD }, &[], &[], None, "residual 4096 past the 1024-byte data buffer");
    hostile(RespRepr { response: 0x42, ..GOOD }, &[], &data, None, "response 0x42 is not a virtio-scsi response value");
    hostile(RespRepr { response: RESPONSE_UNWRITTEN, ..GOOD }, &[], &data, None, "response 0xff");
}

#[test]
fn hostile_used_ids_break_the_device() {
    let t = device();
    let (s, irq) = start(&t);
    let (_, w) = counter();
    let mut buf = vec![0u8; 1024];
    let (mut f, req) = pending_read(&t, &s.disks[0].0, &mut buf, &w);
    t.push_used(QUEUE_REQUEST, u32::from(req.head) + 5, RESP_LEN as u32);
    irq.wake();
    let Poll::Ready(Err(e)) = poll(&mut f, &w) else { panic!() };
    drop(f);
    assert_broken(&t, &s, &e, "used ring names a chain the driver did not lend");
}

#[test]
fn events_are_logged_and_their_buffers_posted_again() {
    let t = device();
    let (s, irq) = start_with(&t, IrqAck::Task).unwrap();
    let (head, descs) = t.take_chain(QUEUE_EVENT).expect("event buffers posted");
    assert_eq!((descs.len(), descs[0].len, descs[0].flags), (1, 16, VIRTQ_DESC_F_WRITE));
    let ev = EventRepr { event: wire::event::TRANSPORT_RESET, lun: wire::lun_field(0, Lun::ZERO), reason: 1 };
    write_mem(descs[0].addr, &ev.to_bytes());
    t.push_used(QUEUE_EVENT, u32::from(head), 16);
    // Drain the other posted buffers, then the interrupt posts the used one again.
    let mut posted = 1;
    while t.take_chain(QUEUE_EVENT).is_some() {
        posted += 1;
    }
    assert_eq!(posted, EVENT_BUFFERS);
    irq.wake();
    assert!(t.take_chain(QUEUE_EVENT).is_some(), "the buffer is posted again");
    assert!(t.0.lock().unwrap().acks >= 1, "edge-triggered interrupts are acknowledged");
    assert_eq!(s.queue.broken(), None);
}

#[test]
fn init_errors() {
    let t = device();
    t.0.lock().unwrap().config = ConfigRepr { num_queues: 0, ..config(3) }.to_bytes().to_vec();
    assert_eq!(
        start_with(&t, IrqAck::None).err().unwrap().to_string(),
        "virtio-scsi@test: configuration space: num_queues is 0: no request queue"
    );
    assert!(t.status().contains(DeviceStatus::FAILED));
    let t = device();
    t.0.lock().unwrap().config = ConfigRepr { cdb_size: 10, ..config(3) }.to_bytes().to_vec();
    assert!(start_with(&t, IrqAck::None).err().unwrap().to_string().contains("cdb_size 10 is outside 16..=256"));
    let t = device();
    t.0.lock().unwrap().config = ConfigRepr { sense_size: 4096, ..config(3) }.to_bytes().to_vec();
    assert!(start_with(&t, IrqAck::None).err().unwrap().to_string().contains("sense_size 4096 is over 256"));
    let t = device();
    t.0.lock().unwrap().refuse_features = true;
    assert!(matches!(start_with(&t, IrqAck::None), Err(ScsiInitError::Start(StartError::FeaturesRejected { .. }))));
    let t = device();
    t.0.lock().unwrap().queue_max = 8;
    assert_eq!(
        start_with(&t, IrqAck::None).err().unwrap(),
        ScsiInitError::Start(StartError::QueueTooSmall {
            device: "virtio-scsi@test".into(),
            queue: QUEUE_CONTROL,
            max: 8,
            need: SMALL_QUEUE
        })
    );
    // A device that never answers: the scan gives up after the command timeout.
    let t = device();
    t.0.lock().unwrap().ext.auto = false;
    let e = start_with(&t, IrqAck::None).err().unwrap();
    assert_eq!(e.to_string(), "virtio-scsi@test: no answer to REPORT LUNS for target 0 LUN 0 within 5000 ms");
    assert_eq!(t.status(), DeviceStatus::empty(), "the device is reset");
    let irq: &'static IrqSlot = Box::leak(Box::new(IrqSlot::new()));
    let e = Scsi::new(device(), "s".into(), irq, IrqAck::None, clock, &mut || Err("no vector".into())).err().unwrap();
    assert_eq!(e.to_string(), "s: interrupt setup: no vector");
}

#[test]
fn check_response_and_outcome() {
    let mut resp = vec![0u8; RESP_LEN];
    GOOD.emit(&mut resp, &[]);
    assert_eq!(check_response(&resp, 512, (RESP_LEN + 512) as u32).map(|a| a.transferred), Ok(512));
    assert_eq!(check_response(&resp, 512, RESP_LEN as u32).map(|a| a.transferred), Ok(512));
    assert!(check_response(&resp, 512, (RESP_LEN + 512) as u32).is_ok(), "QEMU counts a write's data-out");
    assert!(check_response(&resp, 512, (RESP_LEN + 513) as u32).is_err());
    let a = Answer { response: 0, status: ScsiStatus::GOOD, sense: vec![], transferred: 20 };
    let inq = Command::Inquiry { evpd: false, page_code: 0, allocation_length: 36 };
    assert_eq!(outcome(&inq, &a, 36, 0), Outcome::Done(20), "partial INQUIRY data is fine");
    let w = Command::Write16 { lba: 0, blocks: 1, fua: false };
    assert_eq!(outcome(&w, &a, 512, 0), Outcome::Short { transferred: 20, expected: 512 });
}
