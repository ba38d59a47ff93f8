//! NVMe over PCIe: the driver for PCI class 01:08:02 — the disks of AWS Nitro (EBS and instance store), GCE
//! and Azure. One controller: reset and enable bounded by CAP.TO, the admin queue polled at boot, Identify
//! Controller and each active namespace, one I/O queue pair interrupting through MSI-X entry 0 (INTx
//! otherwise), and every usable namespace a `libos::dev::BlockDevice` ([`Disk`]) on the shared request engine:
//! several commands in flight, PRP lists, transfers split at MDTS, Flush when a volatile write cache is present.
//! Source: NVM Express Base Specification 2.0 (cited per module: §3.1.3 registers, §3.3.1 queues, §3.5.1
//! initialization, §4 data structures, §5 admin commands), NVM Command Set Specification 1.0, NVMe over PCIe
//! Transport Specification 1.0 (doorbells, interrupts).
//!
//! Everything but the register window and the PCI probe (`hw.rs`, bare target) runs on the host against a
//! controller model written from the specification (`model.rs`, tests only).

pub mod command;
pub mod completion;
pub mod controller;
#[cfg(target_os = "none")]
#[allow(unsafe_code)]
mod hw;
pub mod identify;
pub mod io;
#[cfg(test)]
mod model;
pub mod prp;
pub mod queue;
pub mod regs;

#[cfg(target_os = "none")]
pub use hw::DRIVER;

use crate::block::{self, BlockQueue};
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
pub use controller::{Controller, NvmeError};
use identify::{ControllerRepr, NamespaceError};
pub use io::{IoQueue, Namespace};
use libos::dev::BlockInfo;
use libos::pci::Match;
use regs::Registers;

/// The functions the driver takes: mass storage, non-volatile memory controller, NVM Express (01:08:02).
pub const MATCHES: &[Match] = &[Match::class(0x01, 0x08, Some(0x02))];
/// I/O queue entries asked for (fewer when CAP.MQES allows fewer).
pub const IO_ENTRIES: u16 = 64;
/// Request slots on the I/O queue (commands in flight).
pub const SLOTS: usize = 16;
/// Largest transfer per command, hence the bounce buffer size (bytes); less when MDTS says so.
pub const BOUNCE_MAX: usize = 128 * 1024;
/// Most namespaces brought up per controller.
pub const MAX_NAMESPACES: usize = 16;

/// The disk type of an NVMe namespace.
pub type Disk<R> = block::Disk<IoQueue<R>>;

/// A controller brought up: what Identify said, its I/O queue, its usable namespaces and the ones skipped.
pub struct Started<R: Registers + 'static> {
    /// Identify Controller.
    pub controller: ControllerRepr,
    /// NVMe version (VS).
    pub version: regs::Version,
    /// The I/O queue all namespaces share.
    pub queue: Arc<BlockQueue<IoQueue<R>>>,
    /// One disk per usable namespace, in NSID order.
    pub disks: Vec<Arc<Disk<R>>>,
    /// Namespaces found but not usable, and why.
    pub skipped: Vec<(u32, NamespaceError)>,
    /// Largest transfer per command (bytes).
    pub max_transfer: usize,
}

/// The largest transfer (bytes) for a controller with `mdts` (units of the 4 KiB minimum page; 0 = no limit)
/// and blocks of `1 << lba_shift` bytes: the bounce buffer size or MDTS, whole blocks, at most 65536 blocks.
pub fn max_transfer(mdts: u8, lba_shift: u8) -> usize {
    let mut max = BOUNCE_MAX.min(prp::max_len(0));
    if mdts > 0 {
        max = max.min(4096usize.saturating_mul(1usize.checked_shl(u32::from(mdts)).unwrap_or(usize::MAX)));
    }
    let bs = 1usize << lba_shift;
    (max / bs * bs).min(command::MAX_BLOCKS as usize * bs)
}

/// Brings a started controller's I/O path up (§3.5.1 steps 7–8 and queue creation): Identify Controller
/// (entry sizes checked), Number of Queues, one I/O queue pair interrupting on `vector` (MSI-X entry, 0 for
/// INTx), the active namespaces. Errors: [`NvmeError`]; a namespace the driver cannot use is skipped, not an
/// error.
pub fn bring_up<R: Registers + 'static>(mut ctrl: Controller<R>, vector: u16) -> Result<Started<R>, NvmeError> {
    let id = ctrl.identify_controller()?;
    let name = String::from(ctrl.name());
    if !id.accepts_entry_sizes(controller::IOSQES, controller::IOCQES) {
        let what = format!("queue entry sizes (SQES {:#04x}, CQES {:#04x}) exclude 64/16 bytes", id.sqes, id.cqes);
        return Err(NvmeError::Unsupported { device: name, what });
    }
    ctrl.set_queue_count(1)?;
    let entries = IO_ENTRIES.min(ctrl.cap().max_queue_entries.min(4096) as u16);
    let mut namespaces = Vec::new();
    let mut skipped = Vec::new();
    for nsid in ctrl.namespaces(id.nn, MAX_NAMESPACES)? {
        let usable = ctrl.identify_namespace(nsid)?.and_then(|ns| {
            let (blocks, bs) = ns.geometry()?;
            let (max, mdts_bytes) = (max_transfer(id.mdts, bs.trailing_zeros() as u8), 4096usize << id.mdts.min(32));
            if max == 0 {
                return Err(NamespaceError::Transfer { max: mdts_bytes, block: bs });
            }
            Ok((blocks, bs, ns.write_protected, max))
        });
        match usable {
            Ok((blocks, bs, ro, max)) => namespaces.push((nsid, blocks, bs, ro, max)),
            Err(e) => skipped.push((nsid, e)),
        }
    }
    let qp = ctrl.create_io_queues(1, entries, vector)?;
    let version = ctrl.version();
    let (regs, cap, admin) = ctrl.into_parts();
    let queue = BlockQueue::new(IoQueue::new(name.clone(), regs, cap.doorbell_stride, qp, admin, SLOTS));
    let mut largest = 0;
    let disks = namespaces
        .into_iter()
        .map(|(nsid, blocks, bs, read_only, max)| {
            let lba_shift = bs.trailing_zeros() as u8;
            largest = largest.max(max);
            let info = BlockInfo {
                name: format!("{name}/n{nsid}"),
                sector_size: bs,
                capacity: blocks,
                read_only,
                flush: id.volatile_write_cache,
                max_transfer: max,
            };
            Disk::new(queue.clone(), info, Namespace { nsid, lba_shift })
        })
        .collect();
    Ok(Started { controller: id, version, queue, disks, skipped, max_transfer: largest })
}

impl<R: Registers + 'static> Started<R> {
    /// The controller's boot log line (without its name and interrupt): model, serial, firmware, version,
    /// namespaces, MDTS, queues, write cache, optional commands.
    pub fn describe(&self) -> String {
        let c = &self.controller;
        let (qid, entries) = self.queue.with_queue(|q| (q.qid(), q.entries()));
        let mdts = if c.mdts == 0 { String::from("none") } else { format!("{} KiB", (4u64 << c.mdts).min(1 << 40)) };
        format!(
            "{} serial {} firmware {} NVMe {} namespaces {} mdts {mdts} I/O queue {qid} of {entries} entries \
             ({} slots) write cache {} oncs {}",
            c.model,
            c.serial,
            c.firmware,
            self.version,
            self.disks.len(),
            SLOTS.min(usize::from(entries) - 1),
            if c.volatile_write_cache { "yes (flush)" } else { "no" },
            c.oncs_names()
        )
    }
}

/// A namespace's boot log line: [`crate::block::describe`] plus its NSID.
pub fn describe_namespace<R: Registers + 'static>(d: &Disk<R>) -> String {
    use libos::dev::BlockDevice;
    format!("{} namespace {}", block::describe(d.info()), d.unit().nsid)
}

#[cfg(test)]
mod tests;
