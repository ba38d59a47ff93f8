//! virtio-scsi driver (GCE's default boot disk controller) over any `virtio-drivers` [`Transport`]: the control,
//! event and first request virtqueue, the logical units found by REPORT LUNS on each target (every target up to
//! `max_target`; LUN 0 alone where REPORT LUNS is refused), each direct-access unit that answers INQUIRY, TEST
//! UNIT READY and READ CAPACITY(16) becoming a `libos::dev::BlockDevice` on the shared request engine:
//! READ(16)/WRITE(16)/SYNCHRONIZE CACHE(10) from driver-owned bounce buffers, several in flight, UNIT ATTENTION
//! retried, any other sense or status a clear error, never a short read passed off as data.
//!
//! Everything the device writes is checked: the used length against the chain's writable bytes, the response
//! value, `sense_len` against the sense buffer, `residual` against the data buffer; a violation breaks the
//! device (reset, FAILED) and fails every request with an error naming the device, queue and value.
//! Source: virtio 1.2 §5.6 (SCSI host device: §5.6.3 features, §5.6.4 configuration, §5.6.5 initialization,
//! §5.6.6 operation), §3.1.1 (device initialization), §2.7.8 (used ring); the SCSI command layer is
//! `crate::scsi` (SPC-5, SBC-4).

pub mod wire;

use crate::block::{BlockQueue, Op, Piece, Queue};
use crate::irq::IrqSlot;
use crate::scsi::{self, CapacityRepr, Command, InquiryRepr, Lun, ReportLunsRepr, ScsiError, ScsiStatus, Verdict};
use crate::virtio::init::{self, StartError};
use crate::virtio::net::{IrqAck, F_VERSION_1};
use crate::virtio::pool::InFlight;
use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use libos::dev::{BlockDevice, BlockError, BlockInfo};
use virtio_drivers::queue::VirtQueue;
use virtio_drivers::transport::{DeviceStatus, Transport};
use virtio_drivers::Hal;
use wire::{response, ConfigRepr, EventRepr, ReqRepr, RespRepr, REQ_HEADER, RESP_HEADER};

/// The control virtqueue.
pub const QUEUE_CONTROL: u16 = 0;
/// The event virtqueue.
pub const QUEUE_EVENT: u16 = 1;
/// The first request virtqueue (the only one used).
pub const QUEUE_REQUEST: u16 = 2;
/// Descriptors of the control and event virtqueues.
pub const SMALL_QUEUE: usize = 16;
/// Event buffers kept posted.
pub const EVENT_BUFFERS: usize = 8;
/// Features the driver accepts: hot-plug and parameter-change events are logged.
pub const DRIVER_FEATURES: u64 = F_VERSION_1 | wire::F_HOTPLUG | wire::F_CHANGE;
/// Largest transfer per command, the bounce buffer size (bytes); less when `max_sectors` says so.
pub const BOUNCE_MAX: usize = 128 * 1024;
/// Most commands in flight (request slots); fewer when the queue cannot hold 3 descriptors for each.
pub const MAX_IN_FLIGHT: usize = 16;
/// Most targets scanned (the LUN field carries the target in one byte).
pub const MAX_TARGETS: usize = 256;
/// Most logical units brought up per target.
pub const MAX_LUNS: usize = 64;
/// How long one command may take at boot, when completions are polled (ms).
pub const COMMAND_TIMEOUT_MS: u64 = 5_000;
/// Bytes of REPORT LUNS data asked for: the header and [`MAX_LUNS`] entries.
const REPORT_LUNS_ALLOC: usize = scsi::data::REPORT_LUNS_HEADER + 8 * MAX_LUNS;
/// The response byte before the device writes it: not a response value, so an unwritten response is caught.
const RESPONSE_UNWRITTEN: u8 = 0xff;
/// Largest `cdb_size` and `sense_size` accepted (bytes): the fields are 32 bits, buffers are sized from them.
const MAX_CONFIG_SIZE: u32 = 256;

/// A logical unit as the request queue addresses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unit {
    /// Target (the LUN field's byte 1).
    pub target: u8,
    /// LUN.
    pub lun: Lun,
    /// log2 of the logical block length.
    pub block_shift: u8,
}

/// Data direction of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    None,
    /// Data-in of this many bytes (device-writable).
    In(usize),
    /// Data-out of this many bytes (device-readable).
    Out(usize),
}

impl Dir {
    fn data_len(self) -> usize {
        match self {
            Dir::None => 0,
            Dir::In(n) | Dir::Out(n) => n,
        }
    }

    fn descriptors(self) -> usize {
        match self {
            Dir::None => 2,
            Dir::In(_) | Dir::Out(_) => 3,
        }
    }
}

/// The command lent in a slot.
#[derive(Debug, Clone, Copy)]
struct Issued {
    command: Command,
    target: u8,
    lun: Lun,
    dir: Dir,
    /// The caller's logical sector (for errors).
    sector: u64,
    retries: u32,
}

/// One request's DMA memory: header, response, bounce buffer, owned by the driver so they outlive any request
/// future (the heap is identity mapped, hence DMA-able as is: see `hal.rs`).
struct Slot {
    header: Box<[u8]>,
    resp: Box<[u8]>,
    data: Vec<u8>,
    issued: Option<Issued>,
}

/// A response the device wrote, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The transport response ([`wire::response`]).
    pub response: u8,
    /// SCSI status.
    pub status: ScsiStatus,
    /// The sense bytes written.
    pub sense: Vec<u8>,
    /// Data bytes transferred (the buffer minus the residual).
    pub transferred: usize,
}

/// Checks the response of a chain with `resp` (response buffer, `sense_size` bytes of sense) and `data_len`
/// data bytes (in either direction), whose used length is `used`; what the data-in buffer
/// holds is the buffer minus `residual`, never more than was asked for.
///
/// # Errors
/// A protocol violation's text: a used length past the writable bytes or short of the response's fixed
/// fields, a response value the specification does not define (or none written), `sense_len` past the sense
/// buffer, `residual` past the data buffer.
pub fn check_response(resp: &[u8], data_len: usize, used: u32) -> Result<Answer, String> {
    // The used length counts the bytes written into the device-writable part (§2.7.8), but QEMU counts a
    // write's data-out as well (`virtio_scsi_complete_req` pushes the data and response sizes): allow the
    // data buffer in either direction. Nothing is read on the strength of the used length beyond this bound.
    let writable = resp.len() + data_len;
    let used = used as usize;
    if used > writable {
        return Err(format!("used length {used} past the {writable} bytes the device may write"));
    }
    let r = RespRepr::parse(resp).filter(|_| used >= RESP_HEADER).ok_or_else(|| {
        format!("used length {used} is short of the {RESP_HEADER}-byte response (virtio_scsi_resp_cmd)")
    })?;
    if response::name(r.response).is_none() {
        return Err(format!("response {:#04x} is not a virtio-scsi response value", r.response));
    }
    let sense_size = resp.len() - RESP_HEADER;
    if r.sense_len as usize > sense_size {
        return Err(format!("sense_len {} past the {sense_size}-byte sense buffer", r.sense_len));
    }
    if r.residual as usize > data_len {
        return Err(format!("residual {} past the {data_len}-byte data buffer", r.residual));
    }
    Ok(Answer {
        response: r.response,
        status: ScsiStatus(r.status),
        sense: resp[RESP_HEADER..RESP_HEADER + r.sense_len as usize].to_vec(),
        transferred: data_len - r.residual as usize,
    })
}

/// What to do with a checked answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Success; the bytes of data transferred.
    Done(usize),
    /// Send the command again (UNIT ATTENTION).
    Retry(String),
    /// The transport response was not OK (e.g. VIRTIO_SCSI_S_BAD_TARGET): its value.
    Response(u8),
    /// The SCSI command failed.
    Scsi(ScsiError),
    /// A READ(16)/WRITE(16) moved fewer bytes than asked, with GOOD status.
    Short {
        /// Bytes moved: the data buffer's length less the response's `residual` (virtio 1.2 §5.6.6).
        transferred: usize,
        /// Bytes the command asked for (its TRANSFER LENGTH in bytes).
        expected: usize,
    },
}

/// The outcome of `command` (moving `data_len` bytes) answered with `a` after `retries` UNIT ATTENTION retries.
pub fn outcome(command: &Command, a: &Answer, data_len: usize, retries: u32) -> Outcome {
    if a.response != response::OK {
        return Outcome::Response(a.response);
    }
    match scsi::judge(command, a.status, &a.sense, retries) {
        Verdict::Retry { why } => Outcome::Retry(why),
        Verdict::Fail(e) => Outcome::Scsi(e),
        Verdict::Good => match command {
            Command::Read16 { .. } | Command::Write16 { .. } if a.transferred != data_len => {
                Outcome::Short { transferred: a.transferred, expected: data_len }
            }
            _ => Outcome::Done(a.transferred),
        },
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Done(n) => write!(f, "done, {n} bytes"),
            Self::Retry(why) => write!(f, "retry: {why}"),
            Self::Response(r) => write!(f, "response {}", response::name(*r).unwrap_or("unknown")),
            Self::Scsi(e) => write!(f, "{e}"),
            Self::Short { transferred, expected } => {
                write!(f, "short transfer: {transferred} of {expected} bytes with GOOD status")
            }
        }
    }
}

/// Why a virtio-scsi device could not be started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScsiInitError {
    /// A start-up step every virtio driver shares failed (features, virtqueues, configuration space read,
    /// interrupt).
    Start(StartError),
    /// The configuration space holds values the driver cannot work with.
    Config {
        /// The device's name (`virtio-scsi@pci:` or `virtio-scsi@mmio:` and its address).
        device: String,
        /// The configuration field at fault (`num_queues`, `cdb_size`, `sense_size`, `seg_max`) and its value.
        detail: String,
    },
    /// The device broke the protocol during the scan.
    Protocol {
        /// The device's name (`virtio-scsi@pci:` or `virtio-scsi@mmio:` and its address).
        device: String,
        /// What the device did wrong (queue, slot, used length, `response`, `sense_len` or `residual`) and the value.
        detail: String,
    },
    /// A command got no answer in time during the scan.
    Timeout {
        /// The device's name (`virtio-scsi@pci:` or `virtio-scsi@mmio:` and its address).
        device: String,
        /// The SCSI command that got no answer within [`COMMAND_TIMEOUT_MS`].
        command: Command,
        /// The target addressed (byte 1 of the request's `lun` field, virtio 1.2 §5.6.6).
        target: u8,
        /// The logical unit addressed.
        lun: Lun,
    },
}

impl From<StartError> for ScsiInitError {
    fn from(e: StartError) -> Self {
        Self::Start(e)
    }
}

impl fmt::Display for ScsiInitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Start(e) => write!(f, "{e}"),
            Self::Config { device, detail } => write!(f, "{device}: configuration space: {detail}"),
            Self::Protocol { device, detail } => write!(f, "{device}: protocol violation: {detail}"),
            Self::Timeout { device, command, target, lun } => {
                write!(
                    f,
                    "{device}: no answer to {command} for target {target} LUN {lun} within {COMMAND_TIMEOUT_MS} ms"
                )
            }
        }
    }
}

/// The device's queues and request slots: the block engine's [`Queue`].
pub struct ScsiQueue<H: Hal, T: Transport, const QS: usize> {
    name: String,
    transport: T,
    /// Set up as the device expects; no task management is issued.
    _control: VirtQueue<H, SMALL_QUEUE>,
    event: VirtQueue<H, SMALL_QUEUE>,
    request: VirtQueue<H, QS>,
    events: Vec<Box<[u8]>>,
    /// Event queue head → event buffer.
    events_lent: InFlight<usize>,
    slots: Vec<Slot>,
    /// Request queue head → slot.
    lent: InFlight<usize>,
    ack: IrqAck,
    next_id: u64,
    notify_pending: bool,
    config: ConfigRepr,
}

impl<H: Hal, T: Transport, const QS: usize> ScsiQueue<H, T, QS> {
    fn unit_name(&self, target: u8, lun: Lun) -> String {
        format!("{}/{target}:{lun}", self.name)
    }

    /// Fills `idx`'s header for `issued`, marks its response unwritten and lends it (header, data-out /
    /// response, data-in). Errors: the virtqueue refused the chain or returned a head twice.
    fn lend(&mut self, idx: usize, issued: Issued) -> Result<(), String> {
        let mut cdb = [0u8; scsi::cdb::MAX_LEN];
        issued.command.emit(&mut cdb);
        self.next_id = self.next_id.wrapping_add(1);
        let slot = &mut self.slots[idx];
        ReqRepr { target: issued.target, lun: issued.lun, id: self.next_id, cdb }.emit(&mut slot.header);
        slot.resp.fill(0);
        slot.resp[RESP_HEADER - 1] = RESPONSE_UNWRITTEN;
        let n = issued.dir.data_len();
        if slot.data.len() < n {
            slot.data.resize(n, 0);
        }
        // SAFETY: the slot's header, response and data stay allocated (slots are never dropped while lent: a
        // broken device is reset first, see `halt` and `Drop`) and are neither read, written nor resized while
        // `issued` is set, i.e. until `unlend` pops this token with the same buffers.
        let added = unsafe {
            match issued.dir {
                Dir::None => self.request.add(&[&slot.header[..]], &mut [&mut slot.resp[..]]),
                Dir::In(n) => self.request.add(&[&slot.header[..]], &mut [&mut slot.resp[..], &mut slot.data[..n]]),
                Dir::Out(n) => self.request.add(&[&slot.header[..], &slot.data[..n]], &mut [&mut slot.resp[..]]),
            }
        };
        let token = added.map_err(|e| format!("requestq: adding a {} chain: {e}", issued.command.name()))?;
        slot.issued = Some(issued);
        self.lent
            .insert(token, idx)
            .map_err(|(e, _)| format!("requestq: virtqueue returned head {token} twice: {e}"))?;
        self.notify_pending = true;
        Ok(())
    }

    /// Pops the used chain `token` and checks its response. Returns the slot and the answer. Errors: a
    /// protocol violation's text.
    fn unlend(&mut self, token: u16) -> Result<(usize, Issued, Answer), String> {
        let idx = self
            .lent
            .take(token)
            .map_err(|e| format!("requestq: used ring names a chain the driver did not lend: {e}"))?;
        let slot = &mut self.slots[idx];
        let issued = slot
            .issued
            .take()
            .ok_or_else(|| format!("requestq: head {token} maps to slot {idx}, which is not lent"))?;
        // SAFETY: the same buffers (addresses and lengths) that `lend` added under this token.
        let popped = unsafe {
            match issued.dir {
                Dir::None => self.request.pop_used(token, &[&slot.header[..]], &mut [&mut slot.resp[..]]),
                Dir::In(n) => {
                    self.request.pop_used(token, &[&slot.header[..]], &mut [&mut slot.resp[..], &mut slot.data[..n]])
                }
                Dir::Out(n) => {
                    self.request.pop_used(token, &[&slot.header[..], &slot.data[..n]], &mut [&mut slot.resp[..]])
                }
            }
        };
        let used = popped.map_err(|e| format!("requestq: popping used id {token}: {e}"))?;
        let n = issued.dir.data_len();
        let answer = check_response(&slot.resp, n, used).map_err(|e| {
            format!("requestq: {} for target {} LUN {}: {e}", issued.command, issued.target, issued.lun)
        })?;
        Ok((idx, issued, answer))
    }

    fn do_notify(&mut self) {
        if core::mem::take(&mut self.notify_pending) && self.request.should_notify() {
            self.transport.notify(QUEUE_REQUEST);
        }
    }

    /// Posts event buffer `i`.
    fn post_event(&mut self, i: usize) -> Result<(), String> {
        // SAFETY: event buffers live as long as the queue and are only read after `pop_used` returns them.
        let token = unsafe { self.event.add(&[], &mut [&mut self.events[i][..]]) }
            .map_err(|e| format!("eventq: adding a buffer: {e}"))?;
        self.events_lent.insert(token, i).map_err(|(e, _)| format!("eventq: head {token} twice: {e}"))
    }

    /// Logs every event the device reported and posts its buffer again. Errors: a protocol violation's text.
    fn reap_events(&mut self) -> Result<(), String> {
        let mut posted = false;
        while let Some(token) = self.event.peek_used() {
            let i =
                self.events_lent.take(token).map_err(|e| format!("eventq: used ring names a buffer not lent: {e}"))?;
            // SAFETY: the buffer `post_event` added under this token.
            let used = unsafe { self.event.pop_used(token, &[], &mut [&mut self.events[i][..]]) }
                .map_err(|e| format!("eventq: popping used id {token}: {e}"))?;
            match EventRepr::parse(&self.events[i][..(used as usize).min(self.events[i].len())]) {
                Some(e) => log::warn!("{}: {e}; LUNs are not rescanned while running", self.name),
                None => log::warn!("{}: event of {used} bytes ignored (needs {})", self.name, wire::EVENT_LEN),
            }
            self.post_event(i)?;
            posted = true;
        }
        if posted && self.event.should_notify() {
            self.transport.notify(QUEUE_EVENT);
        }
        Ok(())
    }

    /// Runs `command` on `target`/`lun` with `data_in` bytes of data-in and polls for the answer (boot, before
    /// interrupts), retrying UNIT ATTENTION. Returns the outcome and the data transferred.
    fn command_polled(
        &mut self,
        target: u8,
        lun: Lun,
        command: Command,
        data_in: usize,
        clock: fn() -> u64,
    ) -> Result<(Outcome, Vec<u8>), ScsiInitError> {
        let dir = if data_in > 0 { Dir::In(data_in) } else { Dir::None };
        let mut issued = Issued { command, target, lun, dir, sector: 0, retries: 0 };
        let protocol = |device: &str, detail: String| ScsiInitError::Protocol { device: device.into(), detail };
        loop {
            self.lend(0, issued).map_err(|d| protocol(&self.name, d))?;
            self.do_notify();
            let start = clock();
            let token = loop {
                if self.ack == IrqAck::Task {
                    self.transport.ack_interrupt();
                }
                if let Some(t) = self.request.peek_used() {
                    break t;
                }
                if clock().saturating_sub(start) > COMMAND_TIMEOUT_MS * 1_000_000 {
                    // The chain stays lent: the device must not be used further (the caller gives up on it).
                    return Err(ScsiInitError::Timeout { device: self.name.clone(), command, target, lun });
                }
                core::hint::spin_loop();
            };
            let (idx, done, answer) = self.unlend(token).map_err(|d| protocol(&self.name, d))?;
            if idx != 0 {
                return Err(protocol(&self.name, format!("requestq: completion for slot {idx} while polling slot 0")));
            }
            match outcome(&command, &answer, data_in, done.retries) {
                Outcome::Retry(_) => issued.retries = done.retries + 1,
                o => {
                    let data = self.slots[0].data[..answer.transferred.min(data_in)].to_vec();
                    return Ok((o, data));
                }
            }
        }
    }
}

impl<H: Hal + Send, T: Transport + Send, const QS: usize> Queue for ScsiQueue<H, T, QS> {
    type Unit = Unit;

    fn name(&self) -> &str {
        &self.name
    }

    fn slots(&self) -> usize {
        self.slots.len()
    }

    fn buffer(&mut self, slot: usize, len: usize) -> Result<&mut [u8], BlockError> {
        Ok(crate::block::grow(&mut self.slots[slot].data, len))
    }

    fn has_room(&self, op: Op) -> bool {
        let dir = if op == Op::Flush { Dir::None } else { Dir::In(1) };
        self.request.available_desc() >= dir.descriptors()
    }

    fn submit(&mut self, slot: usize, unit: Unit, piece: &Piece) -> Result<(), String> {
        let blocks = (piece.len >> unit.block_shift) as u32;
        let (command, dir) = match piece.op {
            Op::Read => (Command::Read16 { lba: piece.sector, blocks, fua: false }, Dir::In(piece.len)),
            Op::Write => (Command::Write16 { lba: piece.sector, blocks, fua: false }, Dir::Out(piece.len)),
            Op::Flush => (Command::SYNCHRONIZE_ALL, Dir::None),
        };
        let issued = Issued { command, target: unit.target, lun: unit.lun, dir, sector: piece.sector, retries: 0 };
        self.lend(slot, issued)
    }

    fn notify(&mut self) {
        self.do_notify();
    }

    fn acknowledge(&mut self) {
        if self.ack == IrqAck::Task {
            // Acknowledge before reaping: a chain used after this raises a new edge.
            self.transport.ack_interrupt();
        }
    }

    fn reap(&mut self, done: &mut Vec<(usize, Result<(), BlockError>)>) -> Result<(), String> {
        self.reap_events()?;
        while let Some(token) = self.request.peek_used() {
            let (idx, issued, answer) = self.unlend(token)?;
            let result = match outcome(&issued.command, &answer, issued.dir.data_len(), issued.retries) {
                Outcome::Done(_) => Ok(()),
                Outcome::Retry(why) => {
                    log::debug!("{}: {}: {why}; retrying", self.unit_name(issued.target, issued.lun), issued.command);
                    self.lend(idx, Issued { retries: issued.retries + 1, ..issued })?;
                    continue;
                }
                o => Err(BlockError::Io {
                    device: self.unit_name(issued.target, issued.lun),
                    sector: issued.sector,
                    detail: match o {
                        Outcome::Scsi(e) => format!("{e} (requestq)"),
                        other => format!("{}: {other} (requestq)", issued.command),
                    },
                }),
            };
            done.push((idx, result));
        }
        self.do_notify();
        Ok(())
    }

    fn halt(&mut self) {
        // A reset stops the device from using the rings and the lent buffers (virtio 1.2 §2.4).
        self.transport.set_status(DeviceStatus::empty());
        self.transport.set_status(DeviceStatus::FAILED);
    }
}

impl<H: Hal, T: Transport, const QS: usize> Drop for ScsiQueue<H, T, QS> {
    fn drop(&mut self) {
        // Reset first: the device must stop using the rings and the slots before they are freed.
        self.transport.set_status(DeviceStatus::empty());
    }
}

/// The disk type of a virtio-scsi logical unit.
pub type Disk<H, T, const QS: usize> = crate::block::Disk<ScsiQueue<H, T, QS>>;

/// A logical unit found but not brought up, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Target.
    pub target: u8,
    /// LUN.
    pub lun: Lun,
    /// Why.
    pub why: String,
}

/// A started device: its configuration, queue, disks (one per usable logical unit), what INQUIRY said of
/// each, and the units skipped.
pub struct VirtioScsi<H: Hal + Send + 'static, T: Transport + Send + 'static, const QS: usize> {
    /// Negotiated features.
    pub features: u64,
    /// The configuration read at start.
    pub config: ConfigRepr,
    /// The queue all disks share.
    pub queue: Arc<BlockQueue<ScsiQueue<H, T, QS>>>,
    /// The disks with their INQUIRY data.
    pub disks: Vec<(Arc<Disk<H, T, QS>>, InquiryRepr)>,
    /// Units found and not used.
    pub skipped: Vec<Skipped>,
}

impl<H: Hal + Send + 'static, T: Transport + Send + 'static, const QS: usize> VirtioScsi<H, T, QS> {
    /// Initialises the device (virtio 1.2 §3.1.1, §5.6.5): reset, features, configuration, the three
    /// virtqueues, `setup_irq` (between queue setup and `DRIVER_OK`), `DRIVER_OK`, event buffers; then scans
    /// the targets with commands whose completions are polled (`clock`: monotonic ns), and binds `irq` to the
    /// queue. `ack`: whether the interrupt path acknowledges (edge-triggered virtio-mmio).
    /// Errors: [`ScsiInitError`]; the device is left FAILED.
    pub fn new(
        mut transport: T,
        name: String,
        irq: &'static IrqSlot,
        ack: IrqAck,
        clock: fn() -> u64,
        setup_irq: &mut dyn FnMut() -> Result<(), String>,
    ) -> Result<Self, ScsiInitError> {
        let features = init::negotiate_features(&mut transport, &name, |f| f & DRIVER_FEATURES, feature_names)?;
        let raw = transport.read_consistent(|| {
            let mut b = [0u8; wire::CONFIG_LEN];
            for at in ConfigRepr::WORDS {
                b[at..at + 4].copy_from_slice(&transport.read_config_space::<u32>(at)?.to_le_bytes());
            }
            Ok(b)
        });
        let config = ConfigRepr::from_array(
            &raw.map_err(|e| init::virtio_failed(&mut transport, &name, "configuration space", e))?,
        );
        let bad = |detail: String| ScsiInitError::Config { device: name.clone(), detail };
        let check = if config.num_queues == 0 {
            Err(bad(String::from("num_queues is 0: no request queue")))
        } else if !(16..=MAX_CONFIG_SIZE).contains(&config.cdb_size) {
            Err(bad(format!(
                "cdb_size {} is outside 16..={MAX_CONFIG_SIZE} (16-byte CDBs are needed)",
                config.cdb_size
            )))
        } else if config.sense_size > MAX_CONFIG_SIZE {
            Err(bad(format!("sense_size {} is over {MAX_CONFIG_SIZE}", config.sense_size)))
        } else if config.seg_max == 0 {
            Err(bad(String::from("seg_max is 0: no data segment allowed per request")))
        } else {
            Ok(())
        };
        check.map_err(|e| init::failed(&mut transport, e))?;
        let queues = [(QUEUE_CONTROL, SMALL_QUEUE), (QUEUE_EVENT, SMALL_QUEUE), (QUEUE_REQUEST, QS)];
        init::check_queue_sizes(&mut transport, &name, &queues)?;
        let control = init::new_queue::<H, T, SMALL_QUEUE>(&mut transport, &name, QUEUE_CONTROL, "control queue")?;
        let event = init::new_queue::<H, T, SMALL_QUEUE>(&mut transport, &name, QUEUE_EVENT, "event queue")?;
        let request = init::new_queue::<H, T, QS>(&mut transport, &name, QUEUE_REQUEST, "request queue")?;
        init::setup_interrupt(&mut transport, &name, setup_irq)?;
        let event_len = (config.event_info_size as usize).clamp(wire::EVENT_LEN, MAX_CONFIG_SIZE as usize);
        let slots = (QS / 3).clamp(1, MAX_IN_FLIGHT);
        let mut q = ScsiQueue {
            name: name.clone(),
            transport,
            _control: control,
            event,
            request,
            events: (0..EVENT_BUFFERS).map(|_| vec![0u8; event_len].into_boxed_slice()).collect(),
            events_lent: InFlight::new(SMALL_QUEUE),
            slots: (0..slots)
                .map(|_| Slot {
                    header: vec![0u8; REQ_HEADER + config.cdb_size as usize].into_boxed_slice(),
                    resp: vec![0u8; RESP_HEADER + config.sense_size as usize].into_boxed_slice(),
                    data: Vec::new(),
                    issued: None,
                })
                .collect(),
            lent: InFlight::new(QS),
            ack,
            next_id: 0,
            notify_pending: false,
            config,
        };
        q.transport.set_status(
            DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::FEATURES_OK | DeviceStatus::DRIVER_OK,
        );
        let posted = (0..EVENT_BUFFERS).try_for_each(|i| q.post_event(i));
        if let Err(detail) = posted {
            return Err(ScsiInitError::Protocol { device: name, detail });
        }
        if q.event.should_notify() {
            q.transport.notify(QUEUE_EVENT);
        }
        let max_transfer = match config.max_sectors {
            0 => BOUNCE_MAX,
            s => BOUNCE_MAX.min(s as usize * 512),
        };
        let (units, skipped) = scan(&mut q, clock)?;
        let queue = BlockQueue::new(q);
        irq.set_waker(&queue.irq_waker());
        let mut disks = Vec::new();
        let mut skipped = skipped;
        for (target, lun, inquiry, blocks, block_length) in units {
            let bl = block_length as usize;
            let max = max_transfer / bl * bl;
            if max == 0 {
                let why = format!("max_sectors {} is less than one {bl}-byte block", config.max_sectors);
                skipped.push(Skipped { target, lun, why });
                continue;
            }
            let info = BlockInfo {
                name: format!("{name}/{target}:{lun}"),
                sector_size: block_length,
                capacity: blocks,
                read_only: false,
                flush: true,
                max_transfer: max,
            };
            let unit = Unit { target, lun, block_shift: block_length.trailing_zeros() as u8 };
            disks.push((crate::block::Disk::new(queue.clone(), info, unit), inquiry));
        }
        Ok(Self { features, config, queue, disks, skipped })
    }

    /// The device's boot log line (name first): features, configuration, queue size, units found.
    pub fn describe(&self) -> String {
        let c = &self.config;
        let name = self.queue.with_queue(|q| q.name.clone());
        format!(
            "{name} features {} request queues {} (using 1 of {QS} descriptors) cdb {} sense {} max_target {} \
             max_lun {} max_sectors {} seg_max {} disks {}",
            feature_names(self.features),
            c.num_queues,
            c.cdb_size,
            c.sense_size,
            c.max_target,
            c.max_lun,
            c.max_sectors,
            c.seg_max,
            self.disks.len()
        )
    }
}

/// A logical unit's boot log line: [`crate::block::describe`] plus its INQUIRY identification and address.
pub fn describe_unit<Q: Queue<Unit = Unit> + 'static>(d: &crate::block::Disk<Q>, inquiry: &InquiryRepr) -> String {
    let u = d.unit();
    format!(
        "{} {} {} {} target {} LUN {}",
        crate::block::describe(d.info()),
        inquiry.vendor,
        inquiry.product,
        inquiry.revision,
        u.target,
        u.lun
    )
}

const FEATURE_NAMES: &[(u64, &str)] = &[
    (wire::F_INOUT, "INOUT"),
    (wire::F_HOTPLUG, "HOTPLUG"),
    (wire::F_CHANGE, "CHANGE"),
    (wire::F_T10_PI, "T10_PI"),
    (F_VERSION_1, "VERSION_1"),
];

/// Names of the known virtio-scsi feature bits in `bits`, comma-separated.
pub fn feature_names(bits: u64) -> String {
    crate::virtio::feature_list(bits, FEATURE_NAMES)
}

/// A usable unit: target, LUN, INQUIRY, blocks, block length.
type Found = (u8, Lun, InquiryRepr, u64, u32);

/// Finds the logical units: REPORT LUNS on LUN 0 of every target up to `max_target` (`BAD_TARGET`: no such
/// target; a refused REPORT LUNS: LUN 0 alone), then INQUIRY, TEST UNIT READY and READ CAPACITY(16) on each.
fn scan<H: Hal, T: Transport, const QS: usize>(
    q: &mut ScsiQueue<H, T, QS>,
    clock: fn() -> u64,
) -> Result<(Vec<Found>, Vec<Skipped>), ScsiInitError> {
    let mut found = Vec::new();
    let mut skipped = Vec::new();
    let lun0 = Lun::ZERO;
    let last = usize::from(q.config.max_target).min(MAX_TARGETS - 1);
    for target in 0..=last as u8 {
        let report = Command::ReportLuns { select_report: 0, allocation_length: REPORT_LUNS_ALLOC as u32 };
        let luns = match q.command_polled(target, lun0, report, REPORT_LUNS_ALLOC, clock)? {
            (Outcome::Response(response::BAD_TARGET), _) => continue,
            (Outcome::Done(_), data) => match ReportLunsRepr::parse(&data) {
                Ok(r) => {
                    if r.truncated || r.skipped > 0 {
                        log::warn!("{}: target {target}: {} LUNs beyond the first {MAX_LUNS} or in unsupported formats not used", q.name, r.skipped);
                    }
                    r.luns
                }
                Err(e) => {
                    skipped.push(Skipped { target, lun: lun0, why: format!("REPORT LUNS: {e}") });
                    continue;
                }
            },
            // REPORT LUNS is mandatory since SPC-3, but LUN 0 is always addressable.
            _ => vec![lun0],
        };
        let max_lun = q.config.max_lun;
        for lun in luns.into_iter().filter(|l| u32::from(l.get()) <= max_lun).take(MAX_LUNS) {
            match probe_unit(q, target, lun, clock)? {
                Ok(f) => found.push(f),
                Err(why) => skipped.push(Skipped { target, lun, why }),
            }
        }
    }
    Ok((found, skipped))
}

/// INQUIRY, TEST UNIT READY and READ CAPACITY(16) of one unit: the unit, or why it is not used.
fn probe_unit<H: Hal, T: Transport, const QS: usize>(
    q: &mut ScsiQueue<H, T, QS>,
    target: u8,
    lun: Lun,
    clock: fn() -> u64,
) -> Result<Result<Found, String>, ScsiInitError> {
    let inquiry = Command::Inquiry { evpd: false, page_code: 0, allocation_length: scsi::data::INQUIRY_LEN as u16 };
    let inq = match q.command_polled(target, lun, inquiry, scsi::data::INQUIRY_LEN, clock)? {
        (Outcome::Done(_), data) => match InquiryRepr::parse(&data) {
            Ok(i) => i,
            Err(e) => return Ok(Err(format!("INQUIRY: {e}"))),
        },
        (o, _) => return Ok(Err(format!("INQUIRY: {o}"))),
    };
    if !inq.is_disk() {
        let why = format!("peripheral qualifier {} device type {:#04x}: not a disk", inq.qualifier, inq.device_type);
        return Ok(Err(why));
    }
    // TEST UNIT READY collects a pending UNIT ATTENTION (retried) and says whether the medium is there.
    match q.command_polled(target, lun, Command::TestUnitReady, 0, clock)? {
        (Outcome::Done(_), _) => {}
        (o, _) => return Ok(Err(format!("TEST UNIT READY: {o}"))),
    }
    let alloc = scsi::data::CAPACITY16_LEN;
    let read_capacity = Command::ReadCapacity16 { allocation_length: alloc as u32 };
    let (blocks, bl) = match q.command_polled(target, lun, read_capacity, alloc, clock)? {
        (Outcome::Done(_), data) => match CapacityRepr::parse(&data).and_then(|c| c.geometry()) {
            Ok(g) => g,
            Err(e) => return Ok(Err(format!("READ CAPACITY(16): {e}"))),
        },
        (o, _) => return Ok(Err(format!("READ CAPACITY(16): {o}"))),
    };
    Ok(Ok((target, lun, inq, blocks, bl)))
}

/// Logs the device, its units and the units skipped, and registers each disk with `libos::dev`; `how` and
/// `irq` describe the transport and interrupt for the device's line. Returns the number of disks.
pub fn register<H: Hal + Send + 'static, T: Transport + Send + 'static, const QS: usize>(
    dev: &VirtioScsi<H, T, QS>,
    how: &str,
    irq: &str,
) -> usize {
    log::info!("{} transport {how} irq {irq}", dev.describe());
    let name = dev.queue.with_queue(|q| q.name.clone());
    for s in &dev.skipped {
        log::info!("{name}/{}:{}: not used: {}", s.target, s.lun, s.why);
    }
    for (d, inquiry) in &dev.disks {
        log::info!("{}", describe_unit(d, inquiry));
        libos::dev::register_block(d.clone());
    }
    dev.disks.len()
}

#[cfg(test)]
mod tests;
