//! Bringing an NVMe controller up (NVMe Base 2.0 §3.5.1, memory-based controller initialization): reset (CC.EN
//! to 0, wait for CSTS.RDY to clear), the admin queue (AQA, ASQ, ACQ), the command set, page size and queue
//! entry sizes in CC, enable and wait for CSTS.RDY — every wait bounded by CAP.TO — then admin commands,
//! polled (interrupts are not on yet at boot): Identify, Set Features Number of Queues, Create I/O Completion
//! and Submission Queue. Errors are [`NvmeError`]s naming the controller and what it did.
#![forbid(unsafe_code)]

use super::command::{cns, Command, CommandId, Submission, FEATURE_NUMBER_OF_QUEUES, IDENTIFY_LEN};
use super::completion::{Completion, Status};
use super::identify::{self, ControllerRepr, NamespaceRepr};
use super::queue::{QueueError, QueuePair};
use super::regs::{self, Cap, Cc, Doorbell, Registers, CSTS_CFS, CSTS_RDY};
use crate::dma::DmaBuffer;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// Admin queue entries (each queue).
pub const ADMIN_ENTRIES: u16 = 32;
/// How long an admin command may take (ms). The specification sets no bound; Linux waits 60 s, a cloud
/// controller answers Identify in microseconds.
pub const ADMIN_TIMEOUT_MS: u64 = 10_000;
/// Shortest wait for CSTS.RDY, whatever CAP.TO says (ms).
pub const MIN_READY_TIMEOUT_MS: u64 = 500;
/// Submission queue entry size exponent (64 bytes).
pub const IOSQES: u8 = 6;
/// Completion queue entry size exponent (16 bytes).
pub const IOCQES: u8 = 4;

/// Why a controller could not be brought up or answered wrongly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NvmeError {
    /// CSTS.RDY did not reach `ready` within `ms` milliseconds (CAP.TO).
    Timeout {
        /// The controller's name (`nvme@pci:` and its PCI bus:device.function).
        device: String,
        /// The CSTS.RDY value waited for (true: enabling, false: resetting).
        ready: bool,
        /// How long the driver waited (ms): CAP.TO's 500 ms units, at least [`MIN_READY_TIMEOUT_MS`].
        ms: u64,
    },
    /// An admin command got no completion within `ms` milliseconds.
    CommandTimeout {
        /// The controller's name (`nvme@pci:` and its PCI bus:device.function).
        device: String,
        /// The admin command that got no completion.
        command: Command,
        /// How long the driver waited (ms): [`ADMIN_TIMEOUT_MS`].
        ms: u64,
    },
    /// CSTS.CFS: the controller reports a fatal error (or reads as all ones: it is gone).
    Fatal {
        /// The controller's name (`nvme@pci:` and its PCI bus:device.function).
        device: String,
        /// The Controller Status register (CSTS) as read; all ones when the device is gone.
        csts: u32,
    },
    /// The controller needs something the driver does not do.
    Unsupported {
        /// The controller's name (`nvme@pci:` and its PCI bus:device.function).
        device: String,
        /// What the driver lacks, with the register field that asks for it (e.g. CAP.MPSMIN).
        what: String,
    },
    /// An admin command completed with an error status.
    Command {
        /// The controller's name (`nvme@pci:` and its PCI bus:device.function).
        device: String,
        /// The admin command that failed.
        command: Command,
        /// Its completion's Status Field: Status Code Type (SCT) and Status Code (SC) (NVMe 2.0 §4.2.3).
        status: Status,
    },
    /// The controller broke the queue protocol.
    Protocol {
        /// The controller's name (`nvme@pci:` and its PCI bus:device.function).
        device: String,
        /// What the controller wrote wrongly (queue, entry, value).
        detail: String,
    },
    /// No memory for queues or Identify data.
    Memory {
        /// The controller's name (`nvme@pci:` and its PCI bus:device.function).
        device: String,
        /// Which allocation failed and why.
        detail: String,
    },
}

impl fmt::Display for NvmeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout { device, ready, ms } => {
                write!(f, "{device}: CSTS.RDY did not become {} within {ms} ms (CAP.TO)", u8::from(*ready))
            }
            Self::CommandTimeout { device, command, ms } => {
                write!(f, "{device}: admin queue: no completion for {command} within {ms} ms")
            }
            Self::Fatal { device, csts } => write!(f, "{device}: controller fatal status (CSTS {csts:#010x})"),
            Self::Unsupported { device, what } => write!(f, "{device}: unsupported: {what}"),
            Self::Command { device, command, status } => write!(f, "{device}: admin queue: {command} failed: {status}"),
            Self::Protocol { device, detail } => write!(f, "{device}: protocol violation: {detail}"),
            Self::Memory { device, detail } => write!(f, "{device}: {detail}"),
        }
    }
}

/// A controller that is enabled, with its admin queue, driven by polling.
pub struct Controller<R: Registers> {
    name: String,
    regs: R,
    cap: Cap,
    admin: QueuePair,
    next_cid: u16,
    /// Monotonic nanoseconds (libos uptime on the bare target, a fake clock in tests).
    clock: fn() -> u64,
}

impl<R: Registers> Controller<R> {
    /// Resets and enables the controller behind `regs` (§3.5.1 steps 1–6) with a fresh admin queue.
    /// Errors: a page size or command set the driver cannot use, a CSTS.RDY timeout, a fatal status, no memory.
    pub fn start(regs: R, name: String, clock: fn() -> u64) -> Result<Self, NvmeError> {
        let cap = Cap::decode(regs.read64(regs::CAP));
        let unsupported = |what: String| NvmeError::Unsupported { device: name.clone(), what };
        if cap.mps_min > 0 {
            return Err(unsupported(format!(
                "smallest memory page size is {} bytes (CAP.MPSMIN), the driver uses 4096",
                4096u64 << cap.mps_min
            )));
        }
        let css = cap
            .command_set_selection()
            .ok_or_else(|| unsupported(format!("no NVM command set (CAP.CSS {:#04x})", cap.command_sets)))?;
        let admin = QueuePair::new(0, ADMIN_ENTRIES)
            .map_err(|e| NvmeError::Memory { device: name.clone(), detail: format!("admin queue: {e}") })?;
        let mut c = Self { name, regs, cap, admin, next_cid: 0, clock };
        let cc = c.regs.read32(regs::CC);
        if cc & 1 != 0 {
            // Firmware (SeaBIOS, OVMF) may leave the controller enabled. Clearing EN while RDY is still 0 is
            // undefined (§3.1.3.6), so let an enable in progress finish first; a timeout there is not fatal.
            if c.regs.read32(regs::CSTS) & (CSTS_RDY | CSTS_CFS) == 0 {
                let _ = c.wait_ready(true);
            }
            c.regs.write32(regs::CC, cc & !1);
        }
        c.wait_ready(false)?;
        c.regs.write32(regs::AQA, regs::aqa(ADMIN_ENTRIES, ADMIN_ENTRIES));
        c.regs.write64(regs::ASQ, c.admin.sq_paddr());
        c.regs.write64(regs::ACQ, c.admin.cq_paddr());
        let cc = Cc { enable: true, command_set: css, mps: 0, iosqes: IOSQES, iocqes: IOCQES };
        c.regs.write32(regs::CC, cc.encode());
        c.wait_ready(true)?;
        Ok(c)
    }

    /// The controller's name, e.g. "nvme@pci:00:04.0".
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its capabilities.
    pub fn cap(&self) -> &Cap {
        &self.cap
    }

    /// The NVMe version (VS).
    pub fn version(&self) -> regs::Version {
        regs::Version(self.regs.read32(regs::VS))
    }

    fn timeout_ms(&self) -> u64 {
        self.cap.timeout_ms().max(MIN_READY_TIMEOUT_MS)
    }

    /// Waits for CSTS.RDY to equal `ready`. Errors: CSTS.CFS or all ones, a timeout after CAP.TO.
    fn wait_ready(&mut self, ready: bool) -> Result<(), NvmeError> {
        let start = (self.clock)();
        let ms = self.timeout_ms();
        loop {
            let csts = self.regs.read32(regs::CSTS);
            if csts == u32::MAX || (ready && csts & CSTS_CFS != 0) {
                return Err(NvmeError::Fatal { device: self.name.clone(), csts });
            }
            if (csts & CSTS_RDY != 0) == ready {
                return Ok(());
            }
            if (self.clock)().saturating_sub(start) > ms * 1_000_000 {
                return Err(NvmeError::Timeout { device: self.name.clone(), ready, ms });
            }
            core::hint::spin_loop();
        }
    }

    fn protocol(&self, e: QueueError) -> NvmeError {
        NvmeError::Protocol { device: self.name.clone(), detail: format!("admin queue: {e}") }
    }

    /// Runs one admin command with data at `prp1` (one page or none) and polls for its completion.
    /// Errors: [`NvmeError::Command`] for an error status, [`NvmeError::CommandTimeout`], and
    /// [`NvmeError::Protocol`] for a completion that names another command or breaks the queue rules.
    pub fn admin(&mut self, command: Command, prp1: u64) -> Result<Completion, NvmeError> {
        let cid = CommandId(self.next_cid);
        self.next_cid = self.next_cid.wrapping_add(1);
        let tail =
            self.admin.push(&Submission { cid, command, prp1, prp2: 0 }.to_bytes()).map_err(|e| self.protocol(e))?;
        let dstrd = self.cap.doorbell_stride;
        self.regs.write32(regs::doorbell(0, Doorbell::SubmissionTail, dstrd), u32::from(tail));
        let start = (self.clock)();
        loop {
            match self.admin.pop(1).map_err(|e| self.protocol(e))? {
                Some(c) => {
                    self.regs
                        .write32(regs::doorbell(0, Doorbell::CompletionHead, dstrd), u32::from(self.admin.cq_head()));
                    if c.cid != cid {
                        let detail = format!(
                            "admin queue: completion names command id {}, the command outstanding is {cid}",
                            c.cid
                        );
                        return Err(NvmeError::Protocol { device: self.name.clone(), detail });
                    }
                    if !c.status.is_success() {
                        return Err(NvmeError::Command { device: self.name.clone(), command, status: c.status });
                    }
                    return Ok(c);
                }
                None if (self.clock)().saturating_sub(start) > ADMIN_TIMEOUT_MS * 1_000_000 => {
                    return Err(NvmeError::CommandTimeout { device: self.name.clone(), command, ms: ADMIN_TIMEOUT_MS });
                }
                None => core::hint::spin_loop(),
            }
        }
    }

    fn memory(&self, what: &str, e: impl fmt::Display) -> NvmeError {
        NvmeError::Memory { device: self.name.clone(), detail: format!("{what}: {e}") }
    }

    /// Runs Identify `cns` for `nsid` into a fresh page and returns the data.
    fn identify(&mut self, cns: u8, nsid: u32) -> Result<DmaBuffer, NvmeError> {
        let buf = DmaBuffer::new(IDENTIFY_LEN).map_err(|e| self.memory("Identify data", e))?;
        self.admin(Command::Identify { cns, nsid }, buf.paddr())?;
        Ok(buf)
    }

    /// Identify Controller.
    pub fn identify_controller(&mut self) -> Result<ControllerRepr, NvmeError> {
        let buf = self.identify(cns::CONTROLLER, 0)?;
        ControllerRepr::parse(buf.as_slice()).map_err(|e| self.memory("Identify Controller", e))
    }

    /// The active namespaces: the Active Namespace ID list, or — when the controller refuses that CNS (NVMe
    /// before 1.1) — every NSID up to `nn`, at most `max`.
    pub fn namespaces(&mut self, nn: u32, max: usize) -> Result<Vec<u32>, NvmeError> {
        match self.identify(cns::ACTIVE_NAMESPACES, 0) {
            Ok(buf) => {
                let mut ids =
                    identify::active_namespaces(buf.as_slice()).map_err(|e| self.memory("namespace list", e))?;
                ids.truncate(max);
                Ok(ids)
            }
            Err(NvmeError::Command { .. }) => Ok((1..=nn.min(max as u32)).collect()),
            Err(e) => Err(e),
        }
    }

    /// Identify Namespace `nsid` (NVM command set).
    pub fn identify_namespace(
        &mut self,
        nsid: u32,
    ) -> Result<Result<NamespaceRepr, identify::NamespaceError>, NvmeError> {
        let buf = self.identify(cns::NAMESPACE, nsid)?;
        Ok(NamespaceRepr::parse(buf.as_slice()))
    }

    /// Set Features Number of Queues asking for `pairs` I/O submission and completion queues. Returns how many
    /// the controller allocated (the smaller of the two counts). Errors: as [`admin`](Self::admin).
    pub fn set_queue_count(&mut self, pairs: u16) -> Result<u16, NvmeError> {
        let want = u32::from(pairs.saturating_sub(1));
        let c = self.admin(Command::SetFeatures { fid: FEATURE_NUMBER_OF_QUEUES, value: want << 16 | want }, 0)?;
        let (sq, cq) = (c.dw0 & 0xffff, c.dw0 >> 16);
        Ok(sq.min(cq) as u16 + 1)
    }

    /// Creates I/O queue pair `qid` of `entries`, its completion queue interrupting on vector `vector` (MSI-X
    /// entry, or 0 for INTx and MSI). Errors: as [`admin`](Self::admin), no memory.
    pub fn create_io_queues(&mut self, qid: u16, entries: u16, vector: u16) -> Result<QueuePair, NvmeError> {
        let qp = QueuePair::new(qid, entries).map_err(|e| self.memory("I/O queues", e))?;
        self.admin(Command::CreateIoCq { qid, entries: qp.entries(), vector, interrupts: true }, qp.cq_paddr())?;
        self.admin(Command::CreateIoSq { qid, entries: qp.entries(), cqid: qid }, qp.sq_paddr())?;
        Ok(qp)
    }

    /// Hands over the registers and the admin queue (which must stay allocated while the controller is
    /// enabled: ASQ and ACQ point at it).
    pub fn into_parts(self) -> (R, Cap, QueuePair) {
        (self.regs, self.cap, self.admin)
    }
}
