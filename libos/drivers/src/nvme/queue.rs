//! One NVMe submission/completion queue pair in driver memory: the submission queue's tail (the driver's) and
//! head (as the controller last reported it), the completion queue's head and phase tag. Entries are taken
//! from the completion queue by phase tag, and everything the controller writes is checked before it is
//! believed: the SQ Identifier must be this queue's, the SQ Head Pointer must lie between the last reported
//! head and the tail (the controller cannot have fetched entries never submitted), and a new entry may not
//! appear past a head entry that is still old (the controller posts in order). Command identifiers are the
//! caller's to check. Source: NVMe Base 2.0 §3.3.1 (queue model: empty and full conditions, §3.3.1.2 phase
//! tag), §4.2.1 (completion queue entry: SQHD, SQID, P).
#![forbid(unsafe_code)]

use super::command::SQE_LEN;
use super::completion::{Completion, Cqe, CQE_LEN};
use crate::dma::DmaBuffer;
use core::fmt;
use libos::mem::dma::DmaAllocError;

/// A controller write that breaks the queue protocol, or a full queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueError {
    /// The submission queue has no free entry (the caller checks [`QueuePair::free_entries`] first).
    Full {
        /// Queue Identifier (QID) of the pair (0: admin).
        qid: u16,
    },
    /// A completion's SQ Head Pointer is not between the last reported head and the tail.
    SqHead {
        /// Queue Identifier (QID) of the pair (0: admin).
        qid: u16,
        /// SQ Head Pointer (SQHD) of the completion (NVMe 2.0 §4.2.1), an entry index.
        sq_head: u16,
        /// The submission queue head as last reported (entry index).
        head: u16,
        /// The submission queue tail the driver last wrote (entry index).
        tail: u16,
        /// Entries in the submission queue.
        entries: u16,
    },
    /// A completion names another submission queue.
    SqId {
        /// Queue Identifier (QID) of the pair (0: admin).
        qid: u16,
        /// SQ Identifier (SQID) of the completion (NVMe 2.0 §4.2.1).
        sq_id: u16,
    },
    /// The head entry still carries the old phase tag while a later one carries the new one.
    PhaseOutOfOrder {
        /// Queue Identifier (QID) of the pair (0: admin).
        qid: u16,
        /// The completion queue head entry (index), still carrying the old Phase Tag (P).
        head: u16,
        /// The later completion queue entry (index) carrying the new Phase Tag.
        at: u16,
    },
}

impl fmt::Display for QueueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Full { qid } => write!(f, "submission queue {qid} is full"),
            Self::SqHead { qid, sq_head, head, tail, entries } => write!(
                f,
                "completion queue {qid}: SQ head pointer {sq_head} is outside the submitted entries {head}..={tail} \
                 of the {entries}-entry submission queue"
            ),
            Self::SqId { qid, sq_id } => {
                write!(f, "completion queue {qid}: entry names submission queue {sq_id}, expected {qid}")
            }
            Self::PhaseOutOfOrder { qid, head, at } => write!(
                f,
                "completion queue {qid}: entry {at} carries the new phase tag while head entry {head} does not \
                 (posted out of order)"
            ),
        }
    }
}

/// A submission queue and its completion queue, both of `entries` entries, identifier `qid` (0 = admin).
pub struct QueuePair {
    qid: u16,
    entries: u16,
    sq: DmaBuffer,
    cq: DmaBuffer,
    sq_tail: u16,
    /// SQ head as the controller last reported it.
    sq_head: u16,
    cq_head: u16,
    /// The phase tag of new entries in this pass over the completion queue (starts at 1, §3.3.1.2).
    phase: bool,
}

impl QueuePair {
    /// Queues `qid` of `entries` (2..=4096) entries each, zeroed (every phase tag 0). Errors: no DMA memory.
    pub fn new(qid: u16, entries: u16) -> Result<Self, DmaAllocError> {
        let entries = entries.clamp(2, 4096);
        Ok(Self {
            qid,
            entries,
            sq: DmaBuffer::new(usize::from(entries) * SQE_LEN)?,
            cq: DmaBuffer::new(usize::from(entries) * CQE_LEN)?,
            sq_tail: 0,
            sq_head: 0,
            cq_head: 0,
            phase: true,
        })
    }

    /// Queue identifier.
    pub fn qid(&self) -> u16 {
        self.qid
    }

    /// Entries per queue.
    pub fn entries(&self) -> u16 {
        self.entries
    }

    /// Address of the submission queue (for ASQ or Create I/O Submission Queue).
    pub fn sq_paddr(&self) -> u64 {
        self.sq.paddr()
    }

    /// Address of the completion queue.
    pub fn cq_paddr(&self) -> u64 {
        self.cq.paddr()
    }

    /// The completion queue head, for the head doorbell.
    pub fn cq_head(&self) -> u16 {
        self.cq_head
    }

    /// Entries submitted that the controller has not reported fetched.
    fn in_use(&self) -> u16 {
        (self.sq_tail + self.entries - self.sq_head) % self.entries
    }

    /// Submission entries free: one always stays empty (full is tail + 1 = head, §3.3.1.5).
    pub fn free_entries(&self) -> u16 {
        self.entries - 1 - self.in_use()
    }

    /// Places `sqe` at the tail. Returns the new tail for the doorbell. Errors: [`QueueError::Full`].
    pub fn push(&mut self, sqe: &[u8; SQE_LEN]) -> Result<u16, QueueError> {
        if self.free_entries() == 0 {
            return Err(QueueError::Full { qid: self.qid });
        }
        let at = usize::from(self.sq_tail) * SQE_LEN;
        // In range: sq_tail < entries and the queue holds `entries` entries.
        self.sq.write(at, sqe);
        self.sq_tail = (self.sq_tail + 1) % self.entries;
        Ok(self.sq_tail)
    }

    /// Writes completion queue entry `i` as the controller would (device models: the tests and the fuzz targets
    /// through feature `testing`). Returns false when `i` is past the queue.
    #[cfg(any(test, feature = "testing"))]
    pub fn post_completion(&self, i: u16, cqe: &[u8; CQE_LEN]) -> bool {
        self.cq.write(usize::from(i) * CQE_LEN, cqe)
    }

    /// The phase tag of completion entry `i` (< entries).
    fn phase_at(&self, i: u16) -> bool {
        self.cq.read_u32(usize::from(i) * CQE_LEN + 12).is_some_and(|dw3| dw3 >> 16 & 1 != 0)
    }

    /// Takes the next completion, if the controller posted one; `outstanding` is the number of commands
    /// submitted and not yet completed (bounding where a misplaced entry could be). Errors: a [`QueueError`]
    /// describing what the controller did wrong; the queue should be abandoned.
    pub fn pop(&mut self, outstanding: usize) -> Result<Option<Completion>, QueueError> {
        let n = self.entries;
        if self.phase_at(self.cq_head) != self.phase {
            // Nothing new at the head. A new entry further on means the controller skipped the head; entries are
            // posted in order, so once a later one is visible the head one would be too: re-read it to be sure.
            let look = outstanding.min(usize::from(n)) as u16;
            for i in 1..look {
                let at = (self.cq_head + i) % n;
                let new_tag = self.phase ^ (self.cq_head + i >= n);
                if self.phase_at(at) == new_tag {
                    if self.phase_at(self.cq_head) != self.phase {
                        return Err(QueueError::PhaseOutOfOrder { qid: self.qid, head: self.cq_head, at });
                    }
                    break;
                }
            }
            if self.phase_at(self.cq_head) != self.phase {
                return Ok(None);
            }
        }
        let mut raw = [0u8; CQE_LEN];
        // In range: cq_head < entries.
        self.cq.read(usize::from(self.cq_head) * CQE_LEN, &mut raw);
        let c = Completion::parse(&Cqe::new_unchecked(&raw[..]));
        self.cq_head = (self.cq_head + 1) % n;
        if self.cq_head == 0 {
            self.phase = !self.phase;
        }
        if c.sq_id != self.qid {
            return Err(QueueError::SqId { qid: self.qid, sq_id: c.sq_id });
        }
        // The new head lies in [head, tail] going forward from the last reported head.
        let fetched = (c.sq_head.wrapping_add(n).wrapping_sub(self.sq_head)) % n;
        if c.sq_head >= n || fetched > self.in_use() {
            return Err(QueueError::SqHead {
                qid: self.qid,
                sq_head: c.sq_head,
                head: self.sq_head,
                tail: self.sq_tail,
                entries: n,
            });
        }
        self.sq_head = c.sq_head;
        Ok(Some(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nvme::command::CommandId;
    use crate::nvme::completion::Status;

    /// Writes a completion into entry `i` of `q`'s completion queue, as the controller would.
    fn post(q: &QueuePair, i: u16, cid: u16, sq_head: u16, phase: bool) {
        let c = Completion { dw0: 0, sq_head, sq_id: q.qid, cid: CommandId(cid), phase, status: Status::SUCCESS };
        assert!(q.post_completion(i, &c.to_bytes()));
    }

    fn sqe(tag: u8) -> [u8; SQE_LEN] {
        [tag; SQE_LEN]
    }

    #[test]
    fn submit_until_full_and_complete_across_the_wrap() {
        let mut q = QueuePair::new(1, 4).unwrap();
        assert_eq!(q.free_entries(), 3);
        assert_eq!(q.push(&sqe(1)), Ok(1));
        assert_eq!(q.push(&sqe(2)), Ok(2));
        assert_eq!(q.push(&sqe(3)), Ok(3));
        assert_eq!(q.push(&sqe(4)), Err(QueueError::Full { qid: 1 }));
        let mut first = [0u8; 8];
        assert!(q.sq.read(SQE_LEN, &mut first));
        assert_eq!(first, [2; 8], "entry 1 holds the second command");
        assert_eq!(q.pop(3), Ok(None));
        // Three completions, then two more after the wrap (phase 0 on the second pass).
        for (i, cid) in [(0, 10), (1, 11), (2, 12)] {
            post(&q, i, cid, i + 1, true);
        }
        for cid in [10, 11, 12] {
            assert_eq!(q.pop(3).unwrap().map(|c| c.cid.0), Some(cid));
        }
        assert_eq!(q.free_entries(), 3);
        assert_eq!(q.push(&sqe(5)), Ok(0));
        assert_eq!(q.push(&sqe(6)), Ok(1));
        post(&q, 3, 13, 0, true);
        post(&q, 0, 14, 1, false);
        assert_eq!(q.pop(2).unwrap().map(|c| c.cid.0), Some(13));
        assert_eq!(q.cq_head(), 0);
        assert_eq!(q.pop(1).unwrap().map(|c| c.cid.0), Some(14), "second pass: phase 0 is new");
        assert_eq!(q.pop(0), Ok(None), "entry 1 still holds the first pass's phase 1");
    }

    #[test]
    fn hostile_completions_are_caught() {
        // An SQ head beyond the tail: the controller cannot have fetched what was never submitted.
        let mut q = QueuePair::new(1, 8).unwrap();
        q.push(&sqe(1)).unwrap();
        post(&q, 0, 1, 5, true);
        let e = q.pop(1).unwrap_err();
        assert_eq!(e, QueueError::SqHead { qid: 1, sq_head: 5, head: 0, tail: 1, entries: 8 });
        assert_eq!(
            e.to_string(),
            "completion queue 1: SQ head pointer 5 is outside the submitted entries 0..=1 of the 8-entry submission queue"
        );
        // An SQ head past the queue's size.
        let mut q = QueuePair::new(1, 8).unwrap();
        q.push(&sqe(1)).unwrap();
        post(&q, 0, 1, 0xffff, true);
        assert!(matches!(q.pop(1), Err(QueueError::SqHead { sq_head: 0xffff, .. })));
        // Another queue's entry.
        let mut q = QueuePair::new(1, 8).unwrap();
        q.push(&sqe(1)).unwrap();
        let c = Completion { dw0: 0, sq_head: 1, sq_id: 3, cid: CommandId(1), phase: true, status: Status::SUCCESS };
        q.post_completion(0, &c.to_bytes());
        assert_eq!(q.pop(1), Err(QueueError::SqId { qid: 1, sq_id: 3 }));
        // A new entry at head + 2 while the head is old.
        let mut q = QueuePair::new(1, 8).unwrap();
        for t in 0..3 {
            q.push(&sqe(t)).unwrap();
        }
        post(&q, 2, 3, 3, true);
        let e = q.pop(3).unwrap_err();
        assert_eq!(e, QueueError::PhaseOutOfOrder { qid: 1, head: 0, at: 2 });
        assert!(e.to_string().contains("posted out of order"), "{e}");
        // With only one command outstanding nothing further on is looked at.
        let mut q = QueuePair::new(1, 8).unwrap();
        q.push(&sqe(0)).unwrap();
        post(&q, 3, 1, 1, true);
        assert_eq!(q.pop(1), Ok(None));
    }

    #[test]
    fn out_of_order_check_follows_the_wrap() {
        // Head at entry 3 of 4 in the first pass; a second-pass entry (phase 0) at entry 0 is out of order, a
        // first-pass leftover (phase 1) there is not.
        let mut q = QueuePair::new(2, 4).unwrap();
        for t in 0..3 {
            q.push(&sqe(t)).unwrap();
        }
        for i in 0..3 {
            post(&q, i, i, i + 1, true);
            q.pop(3).unwrap().unwrap();
        }
        q.push(&sqe(9)).unwrap();
        q.push(&sqe(9)).unwrap();
        assert_eq!(q.cq_head(), 3);
        assert_eq!(q.pop(2), Ok(None), "entry 0 is the first pass's, not new");
        post(&q, 0, 7, 0, false);
        assert_eq!(q.pop(2), Err(QueueError::PhaseOutOfOrder { qid: 2, head: 3, at: 0 }));
    }
}
