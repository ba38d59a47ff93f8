//! NVMe completion queue entries and Identify data as the driver sees them (`drivers::nvme`, NVMe Base 2.0
//! §4.2.1 completion queue entry, §3.3.1 queue model, NVM Command Set 1.0 §4.1.5 Identify Namespace, Base 2.0
//! §5.17.2.1 Identify Controller): the input is decoded as a completion entry and as Identify Controller,
//! Identify Namespace and Active Namespace ID data, then drives a queue pair (`QueuePair`) while the fuzzer
//! plays the controller — honest completions of the submitted commands in order, entries with fuzzer-chosen
//! SQ head, SQ id, command id and phase, raw bytes anywhere in the completion queue.
//! Invariants: no panic; parse → emit → parse round-trips (completion, status, both Identify structures); a
//! geometry the driver accepts has 512..=65536-byte power-of-two blocks; a completion `pop` returns belongs to
//! the queue and names an SQ head inside it; once `pop` reports a protocol error the queue is abandoned;
//! while the controller is honest every completion arrives, in order, unchanged, and no error is reported.
#![no_main]

use drivers::nvme::command::{CommandId, IDENTIFY_LEN, SQE_LEN};
use drivers::nvme::completion::{Completion, Cqe, Status, CQE_LEN};
use drivers::nvme::identify::{active_namespaces, ControllerRepr, NamespaceRepr};
use drivers::nvme::queue::QueuePair;
use libfuzzer_sys::fuzz_target;
use std::collections::VecDeque;
use zirvium_fuzz::Input;

fuzz_target!(|data: &[u8]| {
    completion(data);
    identify(data);
    queue(&mut Input::new(data));
});

fn completion(data: &[u8]) {
    let Ok(e) = Cqe::new_checked(data) else {
        assert!(data.len() < CQE_LEN);
        return;
    };
    let c = Completion::parse(&e);
    let again = Completion::parse(&Cqe::new_unchecked(&c.to_bytes()[..]));
    assert_eq!(again, c, "completion parse -> emit -> parse changed it");
    let s = Status::decode(c.status.encode());
    assert_eq!(s, c.status, "status decode -> encode -> decode changed it");
    let _ = (s.name(), s.type_name(), s.to_string());
}

fn identify(data: &[u8]) {
    let mut page = [0u8; IDENTIFY_LEN];
    let n = data.len().min(IDENTIFY_LEN);
    page[..n].copy_from_slice(&data[..n]);
    assert_eq!(ControllerRepr::parse(data).is_ok(), data.len() >= IDENTIFY_LEN);
    assert_eq!(NamespaceRepr::parse(data).is_ok(), data.len() >= IDENTIFY_LEN);
    let _ = active_namespaces(data);

    let c = ControllerRepr::parse(&page).expect("a whole Identify page");
    let mut out = [0u8; IDENTIFY_LEN];
    c.emit(&mut out);
    assert_eq!(ControllerRepr::parse(&out).as_ref(), Ok(&c), "Identify Controller round trip");
    let _ = (c.oncs_names(), c.accepts_entry_sizes(6, 4));

    let ns = NamespaceRepr::parse(&page).expect("a whole Identify page");
    ns.emit(&mut out);
    assert_eq!(NamespaceRepr::parse(&out).as_ref(), Ok(&ns), "Identify Namespace round trip");
    match ns.geometry() {
        Ok((blocks, block)) => {
            assert!(blocks == ns.size && blocks > 0);
            assert!(block.is_power_of_two() && (512..=65536).contains(&block), "block size {block}");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    let ids = active_namespaces(&page).expect("a whole Identify page");
    assert!(ids.len() <= IDENTIFY_LEN / 4 && ids.iter().all(|&id| id != 0));
}

/// The controller's side of one queue pair.
struct Controller {
    entries: u16,
    /// Commands submitted and not yet completed: (command id, SQ index after it).
    submitted: VecDeque<(u16, u16)>,
    cq_tail: u16,
    phase: bool,
}

impl Controller {
    /// Posts `c` at the completion queue's tail with the current phase tag.
    fn post(&mut self, q: &QueuePair, mut c: Completion) -> Completion {
        c.phase = self.phase;
        assert!(q.post_completion(self.cq_tail, &c.to_bytes()));
        self.cq_tail = (self.cq_tail + 1) % self.entries;
        if self.cq_tail == 0 {
            self.phase = !self.phase;
        }
        c
    }
}

fn queue(input: &mut Input<'_>) {
    let qid = u16::from(input.u8() % 4);
    let entries = 2 + input.u8() as u16 % 15;
    let Ok(mut q) = QueuePair::new(qid, entries) else { return };
    let mut ctl = Controller { entries: q.entries(), submitted: VecDeque::new(), cq_tail: 0, phase: true };
    let mut expected: VecDeque<Completion> = VecDeque::new();
    let (mut honest, mut next_cid, mut outstanding) = (true, 0u16, 0usize);
    while !input.is_empty() {
        match input.u8() % 8 {
            0 | 1 => {
                let free = q.free_entries();
                match q.push(&[next_cid as u8; SQE_LEN]) {
                    Ok(tail) => {
                        assert!(free > 0 && tail < ctl.entries);
                        ctl.submitted.push_back((next_cid, tail));
                        next_cid = next_cid.wrapping_add(1);
                        outstanding += 1;
                    }
                    Err(e) => {
                        assert_eq!(free, 0, "push refused with {free} free entries: {e}");
                        let _ = e.to_string();
                    }
                }
            }
            2 | 3 => {
                // Honest: the oldest submitted command completes, the SQ head moves past it.
                if let Some((cid, sq_head)) = ctl.submitted.pop_front() {
                    let status = if input.u8() & 1 == 0 { Status::SUCCESS } else { Status::error(0, 2) };
                    let c = Completion { dw0: 0, sq_head, sq_id: qid, cid: CommandId(cid), phase: true, status };
                    expected.push_back(ctl.post(&q, c));
                }
            }
            4 => {
                honest = false;
                let c = Completion::parse(&Cqe::new_unchecked(&input.array::<CQE_LEN>()[..]));
                ctl.post(&q, c);
            }
            5 => {
                honest = false;
                let at = input.u16() % ctl.entries;
                q.post_completion(at, &input.array::<CQE_LEN>());
            }
            _ => match q.pop(outstanding) {
                Ok(Some(c)) => {
                    assert_eq!(c.sq_id, qid, "a completion of another queue was accepted");
                    assert!(c.sq_head < ctl.entries, "SQ head {} past the queue", c.sq_head);
                    assert!(q.cq_head() < ctl.entries && q.free_entries() < ctl.entries);
                    outstanding = outstanding.saturating_sub(1);
                    if honest {
                        assert_eq!(Some(c), expected.pop_front(), "completions lost, reordered or changed");
                    }
                }
                Ok(None) => assert!(!honest || expected.is_empty(), "a posted completion was not seen"),
                Err(e) => {
                    assert!(!honest, "an honest controller broke the queue: {e}");
                    let _ = e.to_string();
                    return;
                }
            },
        }
    }
}
