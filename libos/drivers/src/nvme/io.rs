//! The NVMe I/O queue pair as the block engine's [`Queue`]: each request slot owns a page-aligned bounce buffer
//! and, for transfers over two pages, a PRP list page; a piece becomes one Read, Write or Flush whose command
//! identifier encodes the slot and a generation; completions are taken by phase tag and matched to the command
//! outstanding in their slot. A completion for a command never issued (or already completed), an SQ head or
//! SQ identifier the queue rejects, or a phase tag out of order breaks the queue: the controller is disabled
//! (CC.EN = 0), which stops it from touching the buffers. Error statuses fail the piece with the status's name.
//! Source: NVMe Base 2.0 §3.3.1 (queue model), §4.1 (CID), §4.2 (completion); NVM Command Set 1.0 §3.2.
#![forbid(unsafe_code)]

use super::command::{Command, CommandId, Submission};
use super::prp;
use super::queue::QueuePair;
use super::regs::{self, Doorbell, Registers};
use crate::block::{Op, Piece, Queue};
use crate::dma::DmaBuffer;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use libos::dev::BlockError;

/// Slot bits of a command identifier; the bits above are the generation.
const SLOT_BITS: u16 = 7;
/// Most request slots (the slot must fit [`SLOT_BITS`]).
pub const MAX_SLOTS: usize = 1 << SLOT_BITS;

/// A namespace as the I/O queue addresses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Namespace {
    /// NSID.
    pub nsid: u32,
    /// log2 of the LBA data size (9..=16).
    pub lba_shift: u8,
}

/// The command outstanding in a slot.
#[derive(Debug, Clone, Copy)]
struct Issued {
    cid: CommandId,
    command: Command,
    sector: u64,
}

/// One request slot's memory.
#[derive(Default)]
struct Slot {
    buffer: Option<DmaBuffer>,
    /// PRP list page, for transfers over two pages.
    list: Option<DmaBuffer>,
    issued: Option<Issued>,
}

/// An I/O submission/completion queue pair of one controller.
pub struct IoQueue<R: Registers> {
    /// Controller name ("nvme@pci:00:04.0").
    name: String,
    regs: R,
    dstrd: u8,
    qp: QueuePair,
    /// The admin queue: kept allocated, the enabled controller holds its addresses.
    _admin: QueuePair,
    slots: Vec<Slot>,
    generation: u16,
    outstanding: usize,
    /// The tail to ring at the next notify.
    doorbell: Option<u16>,
}

impl<R: Registers> IoQueue<R> {
    /// The queue pair `qp` of controller `name` (registers `regs`, doorbell stride `dstrd`), with `slots` request
    /// slots (at most [`MAX_SLOTS`] and fewer than the queue's entries).
    pub fn new(name: String, regs: R, dstrd: u8, qp: QueuePair, admin: QueuePair, slots: usize) -> Self {
        let slots = slots.clamp(1, MAX_SLOTS.min(usize::from(qp.entries()) - 1));
        Self {
            name,
            regs,
            dstrd,
            qp,
            _admin: admin,
            slots: (0..slots).map(|_| Slot::default()).collect(),
            generation: 0,
            outstanding: 0,
            doorbell: None,
        }
    }

    /// The queue pair's identifier.
    pub fn qid(&self) -> u16 {
        self.qp.qid()
    }

    /// Entries per queue.
    pub fn entries(&self) -> u16 {
        self.qp.entries()
    }

    fn disk_name(&self, nsid: u32) -> String {
        format!("{}/n{nsid}", self.name)
    }

    /// A protocol error's text: which queue, what.
    fn violation(&self, what: impl core::fmt::Display) -> String {
        format!("I/O queue {}: {what}", self.qp.qid())
    }
}

impl<R: Registers> Queue for IoQueue<R> {
    type Unit = Namespace;

    fn name(&self) -> &str {
        &self.name
    }

    fn slots(&self) -> usize {
        self.slots.len()
    }

    fn buffer(&mut self, slot: usize, len: usize) -> Result<&mut [u8], BlockError> {
        let device = self.name.clone();
        let s = &mut self.slots[slot];
        if len == 0 && s.buffer.is_none() {
            // A flush moves no data: no page for it.
            return Ok(&mut []);
        }
        if s.buffer.as_ref().is_none_or(|b| b.len() < len) {
            let b = DmaBuffer::new(len).map_err(|e| BlockError::Io {
                device,
                sector: 0,
                detail: format!("bounce buffer: {e}"),
            })?;
            s.buffer = Some(b);
        }
        // Just made sure it exists.
        Ok(s.buffer.as_mut().map_or(&mut [][..], |b| b.as_mut_slice()))
    }

    fn has_room(&self, _op: Op) -> bool {
        self.qp.free_entries() > 0
    }

    fn submit(&mut self, slot: usize, ns: Namespace, piece: &Piece) -> Result<(), String> {
        let blocks = (piece.len >> ns.lba_shift) as u32;
        let command = match piece.op {
            Op::Read => Command::Read { nsid: ns.nsid, slba: piece.sector, blocks, fua: false },
            Op::Write => Command::Write { nsid: ns.nsid, slba: piece.sector, blocks, fua: false },
            Op::Flush => Command::Flush { nsid: ns.nsid },
        };
        let s = &mut self.slots[slot];
        let (prp1, prp2) = if piece.op == Op::Flush {
            (0, 0)
        } else {
            let Some(buf) = s.buffer.as_ref().filter(|b| b.len() >= piece.len) else {
                return Err(format!("request slot {slot}: transfer of {} bytes exceeds its bounce buffer", piece.len));
            };
            if piece.len > 2 * prp::PAGE as usize && s.list.is_none() {
                s.list = Some(DmaBuffer::new(prp::PAGE as usize).map_err(|e| format!("PRP list: {e}"))?);
            }
            let list_addr = s.list.as_ref().map_or(0, |l| l.paddr());
            let p = prp::build(buf.paddr(), piece.len, list_addr).map_err(|e| format!("request slot {slot}: {e}"))?;
            if let Some(list) = &s.list {
                let bytes: Vec<u8> = p.list.iter().flat_map(|a| a.to_le_bytes()).collect();
                list.write(0, &bytes);
            }
            (p.prp1, p.prp2)
        };
        self.generation = self.generation.wrapping_add(1);
        let cid = CommandId((self.generation << SLOT_BITS) | slot as u16);
        let tail = self.qp.push(&Submission { cid, command, prp1, prp2 }.to_bytes()).map_err(|e| self.violation(e))?;
        self.slots[slot].issued = Some(Issued { cid, command, sector: piece.sector });
        self.outstanding += 1;
        self.doorbell = Some(tail);
        Ok(())
    }

    fn notify(&mut self) {
        if let Some(tail) = self.doorbell.take() {
            self.regs.write32(regs::doorbell(self.qp.qid(), Doorbell::SubmissionTail, self.dstrd), u32::from(tail));
        }
    }

    fn reap(&mut self, done: &mut Vec<(usize, Result<(), BlockError>)>) -> Result<(), String> {
        let mut consumed = false;
        let result = loop {
            let c = match self.qp.pop(self.outstanding) {
                Ok(Some(c)) => c,
                Ok(None) => break Ok(()),
                Err(e) => break Err(self.violation(e)),
            };
            consumed = true;
            let slot = usize::from(c.cid.0 & ((1 << SLOT_BITS) - 1));
            let Some(issued) = self.slots.get_mut(slot).and_then(|s| s.issued.take_if(|i| i.cid == c.cid)) else {
                break Err(self.violation(format_args!(
                    "completion names command id {}, which was never issued or already completed",
                    c.cid
                )));
            };
            self.outstanding -= 1;
            let result = if c.status.is_success() {
                Ok(())
            } else {
                let detail = format!("{}: {} (I/O queue {})", issued.command, c.status, self.qp.qid());
                Err(BlockError::Io { device: self.disk_name(issued.command.nsid()), sector: issued.sector, detail })
            };
            done.push((slot, result));
        };
        if consumed {
            let head = u32::from(self.qp.cq_head());
            self.regs.write32(regs::doorbell(self.qp.qid(), Doorbell::CompletionHead, self.dstrd), head);
        }
        result
    }

    fn halt(&mut self) {
        // A controller reset (CC.EN = 0) stops all queues and their DMA (Base 2.0 §3.7.2).
        let cc = self.regs.read32(regs::CC);
        self.regs.write32(regs::CC, cc & !1);
    }
}
