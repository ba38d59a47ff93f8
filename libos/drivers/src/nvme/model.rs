//! An NVMe controller model for the host tests, written from NVMe Base 2.0 and the NVM Command Set 1.0: the
//! registers (CAP, VS, CC, CSTS with a configurable ready delay or a fatal status, AQA/ASQ/ACQ, doorbells at
//! the CAP.DSTRD stride), submission queues fetched on tail doorbell writes, completion queues posted with
//! phase tags, Identify (controller, namespace, active namespace list), Set Features Number of Queues, Create
//! I/O Completion/Submission Queue, Read/Write through PRP entries and lists, Flush — and the hostile cases a
//! test injects (arbitrary completion entries, error statuses). Guest memory is host memory addressed by
//! identity, as the driver's DMA buffers are on the host. Tests only.

use super::command::{cns, Command, Space, Sqe, Submission, FEATURE_NUMBER_OF_QUEUES, SQE_LEN};
use super::completion::{sct, Completion, Status, CQE_LEN};
use super::identify::{ControllerRepr, LbaFormat, NamespaceRepr};
use super::regs::{self, Cap, Cc, Registers};
use crate::virtio::testing::{read_mem, write_mem};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

const PAGE: u64 = 4096;

/// A submission queue as the controller sees it.
#[derive(Debug, Clone, Copy)]
pub struct Sq {
    pub base: u64,
    pub entries: u16,
    pub head: u16,
    pub tail: u16,
    pub cqid: u16,
}

/// A completion queue as the controller sees it.
#[derive(Debug, Clone, Copy)]
pub struct Cq {
    pub base: u64,
    pub entries: u16,
    pub tail: u16,
    pub phase: bool,
    pub head: u16,
    pub vector: u16,
}

/// A namespace: its Identify data and contents.
pub struct Ns {
    pub id: NamespaceRepr,
    pub data: Vec<u8>,
}

impl Ns {
    /// A namespace of `blocks` blocks of `1 << lbads` bytes filled with a pattern.
    pub fn new(blocks: u64, lbads: u8) -> Self {
        let id = NamespaceRepr {
            size: blocks,
            capacity: blocks,
            format_index: 0,
            extended_metadata: false,
            formats: vec![LbaFormat { metadata: 0, lbads }],
            write_protected: false,
        };
        let data = (0..(blocks << lbads) as usize).map(|i| (i / 512) as u8 ^ (i % 251) as u8).collect();
        Self { id, data }
    }

    fn block_size(&self) -> usize {
        self.id.geometry().map_or(512, |(_, bs)| bs as usize)
    }
}

/// Everything the model holds.
pub struct State {
    pub cap: Cap,
    pub vs: u32,
    pub cc: u32,
    pub csts: u32,
    pub aqa: u32,
    pub asq: u64,
    pub acq: u64,
    /// CSTS reads before RDY follows EN (None: never).
    pub ready_delay: Option<u32>,
    pending_ready: Option<(bool, u32)>,
    /// Set CSTS.CFS instead of RDY on enable.
    pub fatal_on_enable: bool,
    pub controller: ControllerRepr,
    pub namespaces: BTreeMap<u32, Ns>,
    /// Answer Identify CNS 02h with Invalid Field (a controller before NVMe 1.1).
    pub refuse_namespace_list: bool,
    pub sqs: BTreeMap<u16, Sq>,
    pub cqs: BTreeMap<u16, Cq>,
    /// I/O commands fetched and not yet completed (when not `auto_io`).
    pub held: Vec<(u16, Submission)>,
    /// Complete I/O commands as soon as they are fetched.
    pub auto_io: bool,
    /// Fail I/O commands touching this LBA with this status.
    pub fail_lba: Option<(u64, Status)>,
    pub flushes: u32,
    /// Every command fetched, in order.
    pub log: Vec<Submission>,
    /// Doorbell writes (offset, value).
    pub doorbells: Vec<(usize, u32)>,
    /// Completion queue head doorbell values per queue.
    pub cq_heads: BTreeMap<u16, u16>,
    /// Register writes outside the known registers and doorbells (the driver should make none).
    pub stray_writes: Vec<usize>,
}

/// The model: a `Registers` over shared state, so the test keeps a clone to play the controller's side.
#[derive(Clone)]
pub struct Model(pub Arc<Mutex<State>>);

impl Model {
    /// A controller like QEMU 10's: MQES 2048, TO 7.5 s, stride `dstrd`, NVM + I/O command sets, MDTS 7,
    /// volatile write cache, one namespace of `blocks` 512-byte blocks.
    pub fn new(blocks: u64, dstrd: u8) -> Self {
        let cap = Cap {
            max_queue_entries: 2048,
            contiguous_queues_required: true,
            timeout_500ms: 15,
            doorbell_stride: dstrd,
            command_sets: Cap::CSS_NVM | Cap::CSS_IO_SETS,
            mps_min: 0,
            mps_max: 4,
        };
        let controller = ControllerRepr::qemu();
        let mut namespaces = BTreeMap::new();
        namespaces.insert(1, Ns::new(blocks, 9));
        Self(Arc::new(Mutex::new(State {
            cap,
            vs: 0x0001_0400,
            cc: 0,
            csts: 0,
            aqa: 0,
            asq: 0,
            acq: 0,
            ready_delay: Some(2),
            pending_ready: None,
            fatal_on_enable: false,
            controller,
            namespaces,
            refuse_namespace_list: false,
            sqs: BTreeMap::new(),
            cqs: BTreeMap::new(),
            held: Vec::new(),
            auto_io: false,
            fail_lba: None,
            flushes: 0,
            log: Vec::new(),
            doorbells: Vec::new(),
            cq_heads: BTreeMap::new(),
            stray_writes: Vec::new(),
        })))
    }

    /// The state, locked.
    pub fn st(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap()
    }

    /// Takes the I/O commands fetched and not completed.
    pub fn take_held(&self) -> Vec<(u16, Submission)> {
        std::mem::take(&mut self.st().held)
    }

    /// Executes and completes `sub` (fetched from `sqid`) with its natural status, or `status` when given.
    pub fn complete(&self, sqid: u16, sub: &Submission, status: Option<Status>) {
        let mut st = self.st();
        let s = match status {
            Some(s) => s,
            None => st.execute_io(sub),
        };
        st.post(sqid, sub.cid.0, 0, s);
    }

    /// Completes every held command in order; returns them.
    pub fn serve_all(&self) -> Vec<Submission> {
        let held = self.take_held();
        for (q, s) in &held {
            self.complete(*q, s, None);
        }
        held.into_iter().map(|(_, s)| s).collect()
    }

    /// Writes `c` into entry `index` of completion queue `cqid` without moving its tail (a hostile controller).
    pub fn write_cqe(&self, cqid: u16, index: u16, c: &Completion) {
        let st = self.st();
        let cq = st.cqs[&cqid];
        write_mem(cq.base + u64::from(index) * CQE_LEN as u64, &c.to_bytes());
    }

    /// Posts `c` at completion queue `cqid`'s tail with the current phase tag, moving the tail.
    pub fn post_raw(&self, cqid: u16, c: Completion) {
        let mut st = self.st();
        let cq = st.cqs.get_mut(&cqid).unwrap();
        let c = Completion { phase: cq.phase, ..c };
        write_mem(cq.base + u64::from(cq.tail) * CQE_LEN as u64, &c.to_bytes());
        cq.tail = (cq.tail + 1) % cq.entries;
        if cq.tail == 0 {
            cq.phase = !cq.phase;
        }
    }

    /// The contents of namespace `nsid` at byte `at`.
    pub fn disk(&self, nsid: u32, at: usize, len: usize) -> Vec<u8> {
        self.st().namespaces[&nsid].data[at..at + len].to_vec()
    }
}

/// The pages a transfer of `len` bytes at `prp1`/`prp2` covers (§4.1.1), following PRP lists (whose last entry
/// chains to the next list page when more follow). Errors: PRP Offset Invalid.
fn prp_segments(prp1: u64, prp2: u64, len: usize) -> Result<Vec<(u64, usize)>, Status> {
    let invalid = Status::error(sct::GENERIC, 0x13);
    let first = len.min((PAGE - prp1 % PAGE) as usize);
    let mut out = vec![(prp1, first)];
    let mut rest = len - first;
    if rest == 0 {
        return Ok(out);
    }
    if rest <= PAGE as usize {
        if !prp2.is_multiple_of(PAGE) {
            return Err(invalid);
        }
        out.push((prp2, rest));
        return Ok(out);
    }
    let mut entry = prp2;
    while rest > 0 {
        let v = u64::from_le_bytes(read_mem(entry, 8).try_into().unwrap());
        if entry % PAGE == PAGE - 8 && rest > PAGE as usize {
            entry = v;
            continue;
        }
        if v % PAGE != 0 {
            return Err(invalid);
        }
        let n = rest.min(PAGE as usize);
        out.push((v, n));
        rest -= n;
        entry += 8;
    }
    Ok(out)
}

impl State {
    fn dstrd(&self) -> u8 {
        self.cap.doorbell_stride
    }

    /// Posts a completion for `cid` of `sqid` on its completion queue.
    fn post(&mut self, sqid: u16, cid: u16, dw0: u32, status: Status) {
        let sq = self.sqs[&sqid];
        let cq = self.cqs.get_mut(&sq.cqid).unwrap();
        let c = Completion {
            dw0,
            sq_head: sq.head,
            sq_id: sqid,
            cid: super::command::CommandId(cid),
            phase: cq.phase,
            status,
        };
        write_mem(cq.base + u64::from(cq.tail) * CQE_LEN as u64, &c.to_bytes());
        cq.tail = (cq.tail + 1) % cq.entries;
        if cq.tail == 0 {
            cq.phase = !cq.phase;
        }
    }

    fn write_data(prp1: u64, prp2: u64, data: &[u8]) -> Result<(), Status> {
        let mut at = 0;
        for (addr, n) in prp_segments(prp1, prp2, data.len())? {
            write_mem(addr, &data[at..at + n]);
            at += n;
        }
        Ok(())
    }

    fn read_data(prp1: u64, prp2: u64, len: usize) -> Result<Vec<u8>, Status> {
        let mut out = Vec::with_capacity(len);
        for (addr, n) in prp_segments(prp1, prp2, len)? {
            out.extend(read_mem(addr, n));
        }
        Ok(out)
    }

    /// Runs an admin command; returns (DW0, status).
    fn execute_admin(&mut self, s: &Submission) -> (u32, Status) {
        let invalid_field = Status::error(sct::GENERIC, 0x02);
        let ok = |dw0| (dw0, Status::SUCCESS);
        match s.command {
            Command::Identify { cns: c, nsid } => {
                let mut page = vec![0u8; 4096];
                match c {
                    cns::CONTROLLER => self.controller.emit(&mut page),
                    // An inactive NSID reads as zeros (§5.17.2.1).
                    cns::NAMESPACE => {
                        if let Some(ns) = self.namespaces.get(&nsid) {
                            ns.id.emit(&mut page)
                        }
                    }
                    cns::ACTIVE_NAMESPACES if !self.refuse_namespace_list => {
                        for (i, id) in self.namespaces.keys().filter(|&&id| id > nsid).take(1024).enumerate() {
                            page[4 * i..4 * i + 4].copy_from_slice(&id.to_le_bytes());
                        }
                    }
                    _ => return (0, invalid_field),
                }
                match Self::write_data(s.prp1, s.prp2, &page) {
                    Ok(()) => ok(0),
                    Err(e) => (0, e),
                }
            }
            Command::SetFeatures { fid: FEATURE_NUMBER_OF_QUEUES, value } => {
                let (nsq, ncq) = ((value & 0xffff).min(63), (value >> 16).min(63));
                ok(ncq << 16 | nsq)
            }
            Command::CreateIoCq { qid, entries, vector, .. } => {
                if qid == 0 || self.cqs.contains_key(&qid) {
                    return (0, Status::error(sct::COMMAND_SPECIFIC, 0x01));
                }
                if u32::from(entries) > self.cap.max_queue_entries {
                    return (0, Status::error(sct::COMMAND_SPECIFIC, 0x02));
                }
                self.cqs.insert(qid, Cq { base: s.prp1, entries, tail: 0, phase: true, head: 0, vector });
                ok(0)
            }
            Command::CreateIoSq { qid, entries, cqid } => {
                if !self.cqs.contains_key(&cqid) {
                    return (0, Status::error(sct::COMMAND_SPECIFIC, 0x00));
                }
                self.sqs.insert(qid, Sq { base: s.prp1, entries, head: 0, tail: 0, cqid });
                ok(0)
            }
            _ => (0, Status::error(sct::GENERIC, 0x01)),
        }
    }

    /// Runs an I/O command against the namespaces; returns its status.
    fn execute_io(&mut self, s: &Submission) -> Status {
        let (nsid, slba, blocks, write) = match s.command {
            Command::Read { nsid, slba, blocks, .. } => (nsid, slba, blocks, false),
            Command::Write { nsid, slba, blocks, .. } => (nsid, slba, blocks, true),
            Command::Flush { nsid } if self.namespaces.contains_key(&nsid) => {
                self.flushes += 1;
                return Status::SUCCESS;
            }
            _ => return Status::error(sct::GENERIC, 0x0B),
        };
        if let Some((lba, status)) = self.fail_lba {
            if (slba..slba + u64::from(blocks)).contains(&lba) {
                return status;
            }
        }
        let Some(ns) = self.namespaces.get_mut(&nsid) else { return Status::error(sct::GENERIC, 0x0B) };
        if slba + u64::from(blocks) > ns.id.size {
            return Status::error(sct::GENERIC, 0x80);
        }
        let bs = ns.block_size();
        let (at, len) = (slba as usize * bs, blocks as usize * bs);
        let r = if write {
            Self::read_data(s.prp1, s.prp2, len).map(|d| ns.data[at..at + len].copy_from_slice(&d))
        } else {
            Self::write_data(s.prp1, s.prp2, &ns.data[at..at + len])
        };
        r.err().unwrap_or(Status::SUCCESS)
    }

    /// Fetches what submission queue `qid` holds up to its tail and runs admin commands (and I/O commands
    /// with `auto_io`) at once.
    fn fetch(&mut self, qid: u16) {
        while let Some(sq) = self.sqs.get(&qid).copied().filter(|q| q.head != q.tail) {
            let raw = read_mem(sq.base + u64::from(sq.head) * SQE_LEN as u64, SQE_LEN);
            self.sqs.get_mut(&qid).unwrap().head = (sq.head + 1) % sq.entries;
            let space = if qid == 0 { Space::Admin } else { Space::Io };
            let Ok(sub) = Submission::parse(&Sqe::new_unchecked(&raw[..]), space) else {
                let cid = u16::from_le_bytes([raw[2], raw[3]]);
                self.post(qid, cid, 0, Status::error(sct::GENERIC, 0x01));
                continue;
            };
            self.log.push(sub);
            if qid == 0 {
                let (dw0, status) = self.execute_admin(&sub);
                self.post(0, sub.cid.0, dw0, status);
            } else if self.auto_io {
                let status = self.execute_io(&sub);
                self.post(qid, sub.cid.0, 0, status);
            } else {
                self.held.push((qid, sub));
            }
        }
    }

    fn write_cc(&mut self, v: u32) {
        let was = Cc::decode(self.cc).enable;
        self.cc = v;
        let cc = Cc::decode(v);
        if cc.enable && !was {
            if self.fatal_on_enable {
                self.csts |= regs::CSTS_CFS;
                return;
            }
            let n = |v: u32| (v & 0xfff) as u16 + 1;
            self.sqs.insert(0, Sq { base: self.asq, entries: n(self.aqa), head: 0, tail: 0, cqid: 0 });
            self.cqs
                .insert(0, Cq { base: self.acq, entries: n(self.aqa >> 16), tail: 0, phase: true, head: 0, vector: 0 });
            self.pending_ready = self.ready_delay.map(|d| (true, d));
        } else if !cc.enable && was {
            // Controller reset: every queue is gone (§3.7.2).
            self.sqs.clear();
            self.cqs.clear();
            self.held.clear();
            self.pending_ready = Some((false, 0));
        }
    }
}

impl Registers for Model {
    fn read32(&self, offset: usize) -> u32 {
        let mut st = self.st();
        match offset {
            regs::CAP => st.cap.encode() as u32,
            o if o == regs::CAP + 4 => (st.cap.encode() >> 32) as u32,
            regs::VS => st.vs,
            regs::CC => st.cc,
            regs::CSTS => {
                if let Some((ready, left)) = st.pending_ready {
                    if left == 0 {
                        st.csts = (st.csts & !regs::CSTS_RDY) | u32::from(ready);
                        st.pending_ready = None;
                    } else {
                        st.pending_ready = Some((ready, left - 1));
                    }
                }
                st.csts
            }
            regs::AQA => st.aqa,
            _ => 0,
        }
    }

    fn write32(&mut self, offset: usize, v: u32) {
        let mut st = self.st();
        let lo = |old: u64| (old & !0xffff_ffff) | u64::from(v);
        let hi = |old: u64| (old & 0xffff_ffff) | u64::from(v) << 32;
        match offset {
            regs::CC => st.write_cc(v),
            regs::AQA => st.aqa = v,
            regs::ASQ => st.asq = lo(st.asq),
            o if o == regs::ASQ + 4 => st.asq = hi(st.asq),
            regs::ACQ => st.acq = lo(st.acq),
            o if o == regs::ACQ + 4 => st.acq = hi(st.acq),
            regs::INTMS | regs::INTMC => {}
            o if o >= regs::DOORBELLS => {
                st.doorbells.push((o, v));
                let stride = 4usize << st.dstrd();
                let idx = (o - regs::DOORBELLS) / stride;
                let qid = (idx / 2) as u16;
                if !(o - regs::DOORBELLS).is_multiple_of(stride) {
                    st.stray_writes.push(o);
                } else if idx.is_multiple_of(2) {
                    if let Some(sq) = st.sqs.get_mut(&qid) {
                        sq.tail = v as u16 % sq.entries;
                    }
                    st.fetch(qid);
                } else {
                    if let Some(cq) = st.cqs.get_mut(&qid) {
                        cq.head = v as u16;
                    }
                    st.cq_heads.insert(qid, v as u16);
                }
            }
            o => st.stray_writes.push(o),
        }
    }
}
