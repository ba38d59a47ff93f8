//! storvsc, the Hyper-V synthetic SCSI disk driver, as a [`BlockDevice`]: the initialisation sequence
//! (BEGIN_INITIALIZATION, QUERY_PROTOCOL_VERSION from 6.0 down to 2.0, QUERY_PROPERTIES, END_INITIALIZATION),
//! READ CAPACITY(16), and READ(16) / WRITE(16) / SYNCHRONIZE CACHE(10) as EXECUTE_SRB packets whose data pages go
//! GPA-direct. Several requests may be in flight; each completion is routed to its request by transaction id.
//! The SCSI commands, their parameter data, sense decoding and the UNIT ATTENTION retry policy are
//! `drivers::scsi`'s, shared with virtio-scsi.
//! Source: Linux `drivers/scsi/storvsc_drv.c` (`storvsc_channel_init`, `storvsc_execute_vstor_op`,
//! `storvsc_do_io`, `storvsc_on_io_completion`).

pub mod vstor;

use crate::mem::{Region, PAGE_SIZE};
use crate::vmbus::channel::Channel;
use crate::vmbus::msg::Offer;
use crate::vmbus::packet::{self, GpaRange};
use crate::vmbus::{self, Vmbus};
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::task::Waker;
use drivers::scsi::{self, CapacityRepr, Command, ScsiStatus, Verdict};
use libos::dev::{BlockDevice, BlockError, BlockFuture, BlockInfo};
use libos::irq::critical;
use libos::time::Duration;
use spin::Mutex;
use vstor::{data_in, op, Body, BodyKind, Srb, VstorPacket};

/// Largest transfer per request (bytes): 32 pages, what one `hv_multipage_buffer` describes
/// (`MAX_MULTIPAGE_BUFFER_COUNT`).
pub const MAX_TRANSFER: usize = 32 * PAGE_SIZE;
/// Bounce buffers kept for reuse.
const BOUNCE_POOL: usize = 8;
/// Bytes of READ CAPACITY(16) data asked for.
const CAPACITY_ALLOC: u32 = scsi::data::CAPACITY16_LEN as u32;

/// Tunables.
#[derive(Debug, Clone)]
pub struct Config {
    /// Pages of each ring, control page included.
    pub ring_pages: usize,
    /// How long initialisation steps may take.
    pub response_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self { ring_pages: 16, response_timeout: Duration::from_secs(5) }
    }
}

/// Why storvsc could not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The VMBus channel failed.
    Vmbus(vmbus::Error),
    /// The host accepted none of the storage protocol versions 6.0 … 2.0.
    NoProtocolVersion,
    /// The host refused an initialisation step.
    HostRefused {
        /// The step's `vstor_packet` operation, e.g. "QUERY_PROTOCOL_VERSION".
        what: &'static str,
        /// `status` of the `vstor_packet` (an NTSTATUS; 0 = success).
        status: u32,
    },
    /// No answer within the timeout.
    Timeout {
        /// The step whose completion never came, e.g. "BEGIN_INITIALIZATION".
        what: &'static str,
    },
    /// A request failed.
    Block(BlockError),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Vmbus(e) => write!(f, "storvsc: {e}"),
            Self::NoProtocolVersion => write!(f, "storvsc: the host accepted none of the protocol versions 6.0 … 2.0"),
            Self::HostRefused { what, status } => write!(f, "storvsc: host refused {what} (status {status:#x})"),
            Self::Timeout { what } => write!(f, "storvsc: no {what} from the host in time"),
            Self::Block(e) => write!(f, "storvsc: {e}"),
        }
    }
}

impl From<vmbus::Error> for Error {
    fn from(e: vmbus::Error) -> Self {
        Self::Vmbus(e)
    }
}

#[derive(Default)]
struct Slot {
    done: Option<Vec<u8>>,
    waker: Option<Waker>,
}

#[derive(Default)]
struct State {
    next_tag: u64,
    inflight: BTreeMap<u64, Slot>,
    bounce: Vec<Region>,
    broken: Option<BlockError>,
}

/// The result of one SCSI request.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Completion {
    srb_status: u8,
    scsi_status: u8,
    transferred: u32,
    sense: [u8; 20],
}

/// A storvsc disk (target 0, LUN 0 of the synthetic SCSI controller).
pub struct Storvsc {
    info: BlockInfo,
    ch: Channel,
    protocol: u16,
    pkt_len: usize,
    sense_len: u8,
    state: Mutex<State>,
    flushes: core::sync::atomic::AtomicU64,
}

impl Storvsc {
    /// Opens `offer`'s channel, runs the initialisation sequence and reads the capacity. Errors: [`Error`].
    pub async fn new(bus: &Arc<Vmbus>, offer: &Offer, cfg: &Config) -> Result<Arc<Self>, Error> {
        let ch = bus.open_channel(offer, cfg.ring_pages, cfg.ring_pages).await?;
        let mut dev = Self {
            info: BlockInfo {
                name: format!("storvsc@vmbus:{}", offer.child_relid),
                sector_size: 512,
                capacity: 0,
                read_only: false,
                flush: true,
                max_transfer: MAX_TRANSFER,
            },
            ch,
            protocol: 0,
            pkt_len: vstor::PACKET_LEN_PRE_WIN8,
            sense_len: vstor::SENSE_LEN_PRE_WIN8,
            state: Mutex::new(State { next_tag: 1, ..State::default() }),
            flushes: core::sync::atomic::AtomicU64::new(0),
        };
        let t = cfg.response_timeout;
        dev.init_step(op::BEGIN_INITIALIZATION, Body::None, "BEGIN_INITIALIZATION", t).await?;
        for &v in vstor::version::ALL.iter() {
            let body = Body::Version { major_minor: v, revision: 0 };
            match dev.init_step(op::QUERY_PROTOCOL_VERSION, body, "QUERY_PROTOCOL_VERSION", t).await {
                Ok(_) => {
                    dev.protocol = v;
                    break;
                }
                Err(Error::HostRefused { .. }) => {
                    log::debug!("{}: host refused protocol {}", dev.info.name, vstor::version::display(v))
                }
                Err(e) => return Err(e),
            }
        }
        if dev.protocol == 0 {
            return Err(Error::NoProtocolVersion);
        }
        if dev.protocol >= vstor::version::WIN8 {
            dev.pkt_len = vstor::PACKET_LEN_WIN8;
            dev.sense_len = vstor::SENSE_LEN_WIN8;
        }
        let props = dev.init_step(op::QUERY_PROPERTIES, Body::None, "QUERY_PROPERTIES", t).await?;
        let max_transfer = match VstorPacket::parse(&props, BodyKind::Properties).map(|p| p.body) {
            Ok(Body::Properties { max_transfer_bytes, .. }) if max_transfer_bytes >= 512 => max_transfer_bytes as usize,
            _ => MAX_TRANSFER,
        };
        dev.info.max_transfer = max_transfer.min(MAX_TRANSFER) & !511;
        dev.init_step(op::END_INITIALIZATION, Body::None, "END_INITIALIZATION", t).await?;
        let (capacity, sector_size) = dev.read_capacity().await?;
        dev.info.capacity = capacity;
        dev.info.sector_size = sector_size;
        dev.info.max_transfer = (dev.info.max_transfer / sector_size as usize).max(1) * sector_size as usize;
        log::info!(
            "{}: protocol {}, {} sectors of {} bytes ({} MiB), max transfer {} KiB",
            dev.info.name,
            vstor::version::display(dev.protocol),
            capacity,
            sector_size,
            (capacity * u64::from(sector_size)) >> 20,
            dev.info.max_transfer >> 10
        );
        Ok(Arc::new(dev))
    }

    /// The negotiated storage protocol version (`major << 8 | minor`).
    pub fn protocol(&self) -> u16 {
        self.protocol
    }

    /// The channel (diagnostics and tests).
    pub fn channel(&self) -> &Channel {
        &self.ch
    }

    /// SYNCHRONIZE CACHE commands completed.
    pub fn flushes(&self) -> u64 {
        self.flushes.load(core::sync::atomic::Ordering::Relaxed)
    }

    fn err_protocol(&self, detail: String) -> BlockError {
        BlockError::Protocol { device: self.info.name.clone(), detail }
    }

    /// One initialisation request; returns the completion packet bytes. A non-zero status is
    /// [`Error::HostRefused`].
    async fn init_step(&self, operation: u32, body: Body, what: &'static str, t: Duration) -> Result<Vec<u8>, Error> {
        let pkt = VstorPacket { operation, flags: vstor::REQUEST_COMPLETION_FLAG, status: 0, body };
        let bytes = pkt.emit(self.pkt_len);
        let fut = self.roundtrip(&bytes, None);
        let raw = match libos::time::timeout(t, fut).await {
            Ok(r) => r.map_err(Error::Block)?,
            Err(_) => return Err(Error::Timeout { what }),
        };
        let p = VstorPacket::parse(&raw, BodyKind::None).map_err(|e| Error::Block(self.err_protocol(e.to_string())))?;
        if p.operation != op::COMPLETE_IO || p.status != 0 {
            return Err(Error::HostRefused { what, status: p.status });
        }
        Ok(raw)
    }

    async fn read_capacity(&self) -> Result<(u64, u32), Error> {
        let buf = self.alloc_bounce().map_err(Error::Block)?;
        let command = Command::ReadCapacity16 { allocation_length: CAPACITY_ALLOC };
        let r = self.scsi(command, data_in::READ, CAPACITY_ALLOC, Some(&buf)).await;
        let mut d = [0u8; CAPACITY_ALLOC as usize];
        let read = buf.read(0, &mut d);
        self.free_bounce(buf);
        r.map_err(Error::Block)?;
        read.map_err(|e| Error::Block(self.err_protocol(e.to_string())))?;
        CapacityRepr::parse(&d).and_then(|c| c.geometry()).map_err(|e| {
            Error::Block(self.err_protocol(format!("READ CAPACITY(16) data {:02x?} is invalid: {e}", &d[..12])))
        })
    }

    fn alloc_bounce(&self) -> Result<Region, BlockError> {
        if let Some(r) = critical(|| self.state.lock().bounce.pop()) {
            return Ok(r);
        }
        self.ch.bus().dma().alloc(MAX_TRANSFER / PAGE_SIZE).map_err(|e| BlockError::Io {
            device: self.info.name.clone(),
            sector: 0,
            detail: e.to_string(),
        })
    }

    fn free_bounce(&self, r: Region) {
        critical(|| {
            let mut st = self.state.lock();
            if st.bounce.len() < BOUNCE_POOL {
                st.bounce.push(r);
            }
        });
    }

    fn broken(&self) -> Option<BlockError> {
        critical(|| self.state.lock().broken.clone())
    }

    fn break_with(&self, e: BlockError) -> BlockError {
        log::error!("{e}");
        critical(|| {
            let mut st = self.state.lock();
            st.broken.get_or_insert(e.clone());
            for s in st.inflight.values_mut() {
                if let Some(w) = s.waker.take() {
                    w.wake();
                }
            }
        });
        e
    }

    fn vmbus_err(&self, e: vmbus::Error) -> BlockError {
        match e {
            vmbus::Error::Rescinded { .. } => self.break_with(self.err_protocol(format!("{e}; the disk is gone"))),
            other => self.break_with(self.err_protocol(other.to_string())),
        }
    }

    /// Routes every completion waiting in the ring to its request.
    fn pump(&self) -> Result<(), BlockError> {
        if let Some(e) = self.broken() {
            return Err(e);
        }
        loop {
            let p = match self.ch.try_recv() {
                Ok(Some(p)) => p,
                Ok(None) => return Ok(()),
                Err(e) => return Err(self.vmbus_err(e)),
            };
            match p.desc.ty {
                packet::ty::COMP => {
                    let tid = p.desc.trans_id;
                    let payload = p.payload().to_vec();
                    let known = critical(|| {
                        let mut st = self.state.lock();
                        match st.inflight.get_mut(&tid) {
                            Some(s) => {
                                s.done = Some(payload);
                                if let Some(w) = s.waker.take() {
                                    w.wake();
                                }
                                true
                            }
                            None => false,
                        }
                    });
                    if !known {
                        return Err(
                            self.break_with(self.err_protocol(format!("completion for unknown request {tid:#x}")))
                        );
                    }
                }
                _ => match VstorPacket::parse(p.payload(), BodyKind::None) {
                    Ok(v) if v.operation == op::ENUMERATE_BUS => {
                        log::info!("{}: host asks for a bus rescan (ignored)", self.info.name)
                    }
                    Ok(v) if v.operation == op::REMOVE_DEVICE => {
                        log::warn!("{}: host removes the device", self.info.name)
                    }
                    Ok(v) => log::debug!("{}: ignoring unsolicited operation {}", self.info.name, v.operation),
                    Err(e) => log::debug!("{}: ignoring malformed packet: {e}", self.info.name),
                },
            }
        }
    }

    /// Sends `pkt` (with `data` pages GPA-direct when given) and waits for its completion packet.
    async fn roundtrip(&self, pkt: &[u8], data: Option<(&Region, u32)>) -> Result<Vec<u8>, BlockError> {
        let tag = critical(|| {
            let mut st = self.state.lock();
            let t = st.next_tag;
            st.next_tag += 1;
            st.inflight.insert(t, Slot::default());
            t
        });
        let r = self.roundtrip_tagged(tag, pkt, data).await;
        critical(|| self.state.lock().inflight.remove(&tag));
        r
    }

    async fn roundtrip_tagged(
        &self,
        tag: u64,
        pkt: &[u8],
        data: Option<(&Region, u32)>,
    ) -> Result<Vec<u8>, BlockError> {
        let send = || match data {
            Some((region, len)) => {
                let pages = (len as usize).div_ceil(PAGE_SIZE);
                let range = GpaRange { len, offset: 0, pfns: (0..pages).map(|i| region.pfn(i)).collect() };
                self.ch.send_gpa_direct(tag, &[range], pkt)
            }
            None => self.ch.send_inband(tag, pkt, true),
        };
        // Send, waiting for ring space when full; completions free space too, so route them meanwhile and this
        // task's own progress is not blocked.
        core::future::poll_fn(|cx| self.ch.poll_send(cx, send, || self.pump(), |e| self.vmbus_err(e))).await?;
        let events = self.ch.events();
        core::future::poll_fn(|cx| {
            let waker = cx.waker().clone();
            events.wake.poll_until(cx, || {
                if let Err(e) = self.pump() {
                    return Some(Err(e));
                }
                critical(|| {
                    let mut st = self.state.lock();
                    let s = st.inflight.get_mut(&tag)?;
                    let done = s.done.take();
                    if done.is_none() {
                        // Another task's pump may route this completion: it wakes the request's waker.
                        s.waker = Some(waker.clone());
                    }
                    done
                })
                .map(Ok)
            })
        })
        .await
    }

    /// Runs one SCSI command: `command`, direction, `len` bytes in `buf` (page 0 onwards). Retries UNIT
    /// ATTENTION (`drivers::scsi::judge`); any other failure is [`BlockError::Io`] with the SRB status, the SCSI
    /// status and the decoded sense.
    async fn scsi(&self, command: Command, dir: u8, len: u32, buf: Option<&Region>) -> Result<Completion, BlockError> {
        let mut cdb20 = [0u8; 20];
        command.emit(&mut cdb20);
        let flags = vstor::srb_flags::DISABLE_SYNCH_TRANSFER
            | match dir {
                data_in::READ => vstor::srb_flags::DATA_IN,
                data_in::WRITE => vstor::srb_flags::DATA_OUT,
                _ => 0,
            };
        let pkt = VstorPacket {
            operation: op::EXECUTE_SRB,
            flags: vstor::REQUEST_COMPLETION_FLAG,
            status: 0,
            body: Body::Srb(Srb {
                srb_status: 0,
                scsi_status: 0,
                port: 0,
                path_id: 0,
                target_id: 0,
                lun: 0,
                cdb_length: command.len() as u8,
                sense_info_length: self.sense_len,
                data_in: dir,
                data_transfer_length: len,
                cdb_or_sense: cdb20,
                srb_flags: flags,
            }),
        }
        .emit(self.pkt_len);
        let mut retries = 0;
        loop {
            let raw = self.roundtrip(&pkt, buf.map(|b| (b, len))).await?;
            let c = match VstorPacket::parse(&raw, BodyKind::Srb) {
                Ok(VstorPacket { body: Body::Srb(s), .. }) => Completion {
                    srb_status: s.srb_status,
                    scsi_status: s.scsi_status,
                    transferred: s.data_transfer_length,
                    sense: s.cdb_or_sense,
                },
                Ok(_) => return Err(self.err_protocol(String::from("completion without an SRB"))),
                Err(e) => return Err(self.break_with(self.err_protocol(e.to_string()))),
            };
            let srb_ok = c.srb_status & 0x3f == vstor::SRB_STATUS_SUCCESS;
            let sense = &c.sense[..usize::from(self.sense_len).min(c.sense.len())];
            let sector = command.lba().unwrap_or(0);
            let detail = match scsi::judge(&command, ScsiStatus(c.scsi_status), sense, retries) {
                Verdict::Good if srb_ok => return Ok(c),
                Verdict::Good => format!("{command}: SRB status {:#04x}", c.srb_status),
                Verdict::Retry { why } => {
                    log::debug!("{}: {command}: {why}; retrying", self.info.name);
                    retries += 1;
                    continue;
                }
                Verdict::Fail(e) => format!("{e} (SRB status {:#04x})", c.srb_status),
            };
            return Err(BlockError::Io { device: self.info.name.clone(), sector, detail });
        }
    }

    async fn rw(
        &self,
        write: bool,
        sector: u64,
        rbuf: Option<&mut [u8]>,
        wbuf: Option<&[u8]>,
    ) -> Result<(), BlockError> {
        let len = rbuf.as_ref().map(|b| b.len()).or(wbuf.map(|b| b.len())).unwrap_or(0);
        self.info.check(sector, len)?;
        if write && self.info.read_only {
            return Err(BlockError::ReadOnly { device: self.info.name.clone() });
        }
        let ss = self.info.sector_size as usize;
        let bounce = self.alloc_bounce()?;
        let mut rbuf = rbuf;
        let mut done = 0;
        let mut result = Ok(());
        while done < len {
            let n = (len - done).min(self.info.max_transfer);
            let lba = sector + (done / ss) as u64;
            if let Some(w) = wbuf {
                if let Err(e) = bounce.write(0, &w[done..done + n]) {
                    result = Err(BlockError::Io { device: self.info.name.clone(), sector: lba, detail: e.to_string() });
                    break;
                }
            }
            let blocks = (n / ss) as u32;
            let (command, dir) = if write {
                (Command::Write16 { lba, blocks, fua: false }, data_in::WRITE)
            } else {
                (Command::Read16 { lba, blocks, fua: false }, data_in::READ)
            };
            match self.scsi(command, dir, n as u32, Some(&bounce)).await {
                Ok(c) if c.transferred as usize != n => {
                    result = Err(BlockError::Io {
                        device: self.info.name.clone(),
                        sector: lba,
                        detail: format!("short transfer: {} of {n} bytes", c.transferred),
                    });
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
            if let Some(r) = rbuf.as_deref_mut() {
                if let Err(e) = bounce.read(0, &mut r[done..done + n]) {
                    result = Err(BlockError::Io { device: self.info.name.clone(), sector: lba, detail: e.to_string() });
                    break;
                }
            }
            done += n;
        }
        self.free_bounce(bounce);
        result
    }
}

impl BlockDevice for Storvsc {
    fn info(&self) -> &BlockInfo {
        &self.info
    }

    fn read<'a>(&'a self, sector: u64, buf: &'a mut [u8]) -> BlockFuture<'a> {
        Box::pin(self.rw(false, sector, Some(buf), None))
    }

    fn write<'a>(&'a self, sector: u64, buf: &'a [u8]) -> BlockFuture<'a> {
        Box::pin(self.rw(true, sector, None, Some(buf)))
    }

    fn flush(&self) -> BlockFuture<'_> {
        Box::pin(async move {
            self.scsi(Command::SYNCHRONIZE_ALL, data_in::UNKNOWN, 0, None).await?;
            self.flushes.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
            Ok(())
        })
    }
}
