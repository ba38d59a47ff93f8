//! blkfront: a Xen virtual block device (`vbd`) as a [`BlockDevice`]. One ring of 32 request slots; data moves
//! through driver-owned bounce pages granted to the backend once (writable) and reused, so neither the caller's
//! buffers nor freed memory are ever exposed. Transfers of more than 11 pages use indirect descriptors when the
//! backend offers them; flushes use `BLKIF_OP_FLUSH_DISKCACHE` (or a write barrier). Several requests may be in
//! flight from different tasks; whichever task polls consumes the responses. Responses are copied out once and
//! checked (id, operation, status); a bad one fails the device with a [`BlockError::Protocol`].
//! Sectors on the ring are 512-byte units (`feature-large-sector-size` is not requested); the disk's logical
//! sector size from `sector-size` is what [`BlockInfo`] reports. The ring structures' wire formats are in
//! [`wire`].
//! Source: Xen `xen/include/public/io/blkif.h` (`VDISK_*`, xenstore keys `ring-ref`,
//! `event-channel`, `protocol`, `sectors`, `sector-size`, `info`, `feature-flush-cache`, `feature-barrier`,
//! `feature-max-indirect-segments`), `io/protocols.h`, `io/ring.h`.
#![forbid(unsafe_code)]

use crate::abi::DomId;
use crate::evtchn::{EventChannelOps, EvtchnPort};
use crate::gnttab::{GrantError, GrantRef, GrantTable};
use crate::ring::{ring_size, FrontRing};
use crate::shared::{SharedPage, PAGE_SIZE};
use crate::xenbus::{feature, Flavour, Frontend, Step, XenbusError};
use crate::xenstore::{parse_u64, XenStore, XsError};
use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::task::Poll;
use libos::dev::{BlockDevice, BlockError, BlockFuture, BlockInfo};
use libos::irq::WakeSlot;
use spin::Mutex;
use wire::{
    RequestRepr, Response, ResponseRepr, SegmentRepr, MAX_SEGMENTS, OP_FLUSH_DISKCACHE, OP_INDIRECT, OP_READ, OP_WRITE,
    OP_WRITE_BARRIER, RSP_EOPNOTSUPP, RSP_OKAY, SEGMENT_LEN, SLOT,
};

pub mod wire;

/// Request slots in the one-page ring.
pub const RING_SLOTS: usize = ring_size(SLOT) as usize;
/// Indirect segments used per request at most (one indirect page; Linux blkfront's default is 32 too).
pub const MAX_INDIRECT_SEGMENTS: usize = 32;
/// `VDISK_READONLY` bit of the backend's `info`.
pub const VDISK_READONLY: u64 = 4;
/// `XEN_IO_PROTO_ABI_X86_64`.
pub const PROTOCOL: &str = "x86_64-abi";
/// Bounce pages the driver grants at most (1 MiB).
pub const POOL_MAX: usize = 256;

/// Why a blkfront could not be brought up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlkfrontError {
    /// Xenstore or xenbus handshake failure.
    Xenbus(XenbusError),
    /// Granting a page failed.
    Grant(GrantError),
    /// Out of memory for the ring.
    NoMemory,
    /// The backend's geometry is unusable.
    BadGeometry(String),
    /// Event channel setup failed.
    Event(String),
}

impl From<XsError> for BlkfrontError {
    fn from(e: XsError) -> Self {
        Self::Xenbus(XenbusError::Store(e))
    }
}
impl From<XenbusError> for BlkfrontError {
    fn from(e: XenbusError) -> Self {
        Self::Xenbus(e)
    }
}
impl From<GrantError> for BlkfrontError {
    fn from(e: GrantError) -> Self {
        Self::Grant(e)
    }
}

impl fmt::Display for BlkfrontError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Xenbus(e) => write!(f, "{e}"),
            Self::Grant(e) => write!(f, "{e}"),
            Self::NoMemory => f.write_str("out of memory for the ring"),
            Self::BadGeometry(d) => write!(f, "unusable disk geometry: {d}"),
            Self::Event(e) => write!(f, "event channel: {e}"),
        }
    }
}

/// What the backend offers, read from its xenstore directory after it connects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// `sectors`: capacity in units of `sector_size`.
    pub sectors: u64,
    /// `sector-size` (bytes): a power of two, 512..=4096.
    pub sector_size: u32,
    /// `info & VDISK_READONLY`, or `mode` = "r".
    pub read_only: bool,
    /// `feature-flush-cache`.
    pub flush_cache: bool,
    /// `feature-barrier`.
    pub barrier: bool,
    /// `feature-max-indirect-segments` (0 = none).
    pub max_indirect_segments: u32,
}

impl Geometry {
    /// Checks the numbers. Errors: [`BlkfrontError::BadGeometry`].
    pub fn check(&self) -> Result<(), BlkfrontError> {
        if !self.sector_size.is_power_of_two() || !(512..=4096).contains(&self.sector_size) {
            return Err(BlkfrontError::BadGeometry(format!(
                "sector-size {} is not a power of two between 512 and 4096",
                self.sector_size
            )));
        }
        if self.sectors.checked_mul(u64::from(self.sector_size)).is_none() {
            return Err(BlkfrontError::BadGeometry(format!("{} sectors overflow a byte count", self.sectors)));
        }
        Ok(())
    }

    /// Segments per request: indirect (up to [`MAX_INDIRECT_SEGMENTS`]) when the backend offers more than 11.
    pub fn segments_per_request(&self) -> usize {
        if self.max_indirect_segments as usize > MAX_SEGMENTS {
            (self.max_indirect_segments as usize).min(MAX_INDIRECT_SEGMENTS)
        } else {
            MAX_SEGMENTS
        }
    }
}

struct Buf {
    page: Arc<SharedPage>,
    gref: GrantRef,
}

enum SlotState {
    Free,
    InFlight { operation: u8, inner_op: u8, pages: Vec<Buf>, abandoned: bool },
    Done { status: i16, pages: Vec<Buf> },
}

struct Core {
    ring: FrontRing<SLOT>,
    slots: Vec<SlotState>,
    pool: Vec<Buf>,
    pool_total: usize,
    indirect: Vec<Option<Buf>>,
    broken: Option<BlockError>,
}

/// A connected vbd.
pub struct Blkfront {
    info: BlockInfo,
    core: Mutex<Core>,
    grants: &'static GrantTable,
    backend: DomId,
    handle: u16,
    /// Ring (512-byte) sectors per logical sector.
    ring_per_sector: u64,
    segments: usize,
    flush_op: Option<u8>,
    events: Arc<dyn EventChannelOps>,
    port: EvtchnPort,
    slot: Option<&'static WakeSlot>,
}

/// The ring of a vbd before the backend connects, and the grant to publish as `ring-ref`.
pub struct BlkRing {
    ring: FrontRing<SLOT>,
    /// Grant of the ring page.
    pub gref: GrantRef,
}

impl BlkRing {
    /// Allocates the ring page and grants it (writable) to `backend`.
    pub fn new(grants: &GrantTable, backend: DomId) -> Result<Self, BlkfrontError> {
        let page = Arc::new(SharedPage::new().map_err(|_| BlkfrontError::NoMemory)?);
        let ring = FrontRing::new(page);
        let gref = grants.grant(backend, ring.page().clone(), false)?;
        Ok(Self { ring, gref })
    }

    /// The ring page (backend peers).
    pub fn page(&self) -> &Arc<SharedPage> {
        self.ring.page()
    }

    /// The front-end nodes to publish (`io/blkif.h`).
    pub fn xenstore_pairs(&self, port: EvtchnPort) -> Vec<(&'static str, String)> {
        vec![
            ("ring-ref", format!("{}", self.gref)),
            ("event-channel", format!("{port}")),
            ("protocol", String::from(PROTOCOL)),
        ]
    }
}

enum Data<'a> {
    Read(&'a mut [u8]),
    Write(&'a [u8]),
    None,
}

impl Blkfront {
    /// A connected device. `name` names it in logs and errors; `handle` is the vdev number; `geometry` comes
    /// from the backend ([`Geometry::check`] must have passed).
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        name: String,
        handle: u16,
        geometry: Geometry,
        ring: BlkRing,
        grants: &'static GrantTable,
        backend: DomId,
        events: Arc<dyn EventChannelOps>,
        port: EvtchnPort,
        slot: Option<&'static WakeSlot>,
    ) -> Self {
        let segments = geometry.segments_per_request();
        let flush_op = if geometry.flush_cache {
            Some(OP_FLUSH_DISKCACHE)
        } else if geometry.barrier {
            Some(OP_WRITE_BARRIER)
        } else {
            None
        };
        Self {
            info: BlockInfo {
                name,
                sector_size: geometry.sector_size,
                capacity: geometry.sectors,
                read_only: geometry.read_only,
                flush: flush_op.is_some(),
                max_transfer: segments * PAGE_SIZE,
            },
            core: Mutex::new(Core {
                ring: ring.ring,
                slots: (0..RING_SLOTS).map(|_| SlotState::Free).collect(),
                pool: Vec::new(),
                pool_total: 0,
                indirect: (0..RING_SLOTS).map(|_| None).collect(),
                broken: None,
            }),
            grants,
            backend,
            handle,
            ring_per_sector: u64::from(geometry.sector_size / 512),
            segments,
            flush_op,
            events,
            port,
            slot,
        }
    }

    fn protocol(&self, core: &mut Core, detail: String) -> BlockError {
        let e = BlockError::Protocol { device: self.info.name.clone(), detail };
        log::error!("{e}; device disabled");
        core.broken = Some(e.clone());
        e
    }

    fn grant_page(&self) -> Result<Buf, BlockError> {
        let page = Arc::new(SharedPage::new().map_err(|e| BlockError::Io {
            device: self.info.name.clone(),
            sector: 0,
            detail: format!("bounce page: {e}"),
        })?);
        let gref = self.grants.grant(self.backend, page.clone(), false).map_err(|e| BlockError::Io {
            device: self.info.name.clone(),
            sector: 0,
            detail: format!("{e}"),
        })?;
        Ok(Buf { page, gref })
    }

    /// Consumes every published response, moving its slot to `Done` (or freeing an abandoned one), and re-arms
    /// `rsp_event`. A response that does not match an in-flight request breaks the device.
    fn collect(&self, core: &mut Core) -> Result<(), BlockError> {
        loop {
            let raw = match core.ring.next_response() {
                Ok(Some(raw)) => raw,
                Ok(None) => match core.ring.final_check_for_responses() {
                    Ok(true) => continue,
                    Ok(false) => return Ok(()),
                    Err(e) => return Err(self.protocol(core, format!("{e}"))),
                },
                Err(e) => return Err(self.protocol(core, format!("{e}"))),
            };
            // A copied-out slot always holds a response.
            let r = match ResponseRepr::parse(&Response::new_unchecked(&raw[..])) {
                Ok(r) => r,
                Err(e) => return Err(self.protocol(core, format!("{e}"))),
            };
            let Some(slot) = usize::try_from(r.id).ok().filter(|&i| i < RING_SLOTS) else {
                return Err(self.protocol(core, format!("response id {} is not a request slot", r.id)));
            };
            let (operation, inner_op, abandoned) = match &core.slots[slot] {
                SlotState::InFlight { operation, inner_op, abandoned, .. } => (*operation, *inner_op, *abandoned),
                _ => return Err(self.protocol(core, format!("response for id {} which is not in flight", r.id))),
            };
            if r.operation != operation && r.operation != inner_op {
                return Err(self.protocol(
                    core,
                    format!("response operation {} for request {} of operation {operation}", r.operation, r.id),
                ));
            }
            let SlotState::InFlight { pages, .. } = core::mem::replace(&mut core.slots[slot], SlotState::Free) else {
                // Checked just above.
                continue;
            };
            if abandoned {
                core.pool.extend(pages);
            } else {
                core.slots[slot] = SlotState::Done { status: r.status, pages };
            }
        }
    }

    /// One request: waits for a free slot and bounce pages, sends, and waits for the response. `sector` is in
    /// ring (512-byte) units.
    async fn transfer(&self, op: u8, sector: u64, mut data: Data<'_>) -> Result<(), BlockError> {
        let len = match &data {
            Data::Read(b) => b.len(),
            Data::Write(b) => b.len(),
            Data::None => 0,
        };
        let npages = len.div_ceil(PAGE_SIZE);
        let slot = core::future::poll_fn(|cx| {
            if let Some(s) = self.slot {
                s.register(cx.waker());
            }
            let mut core = self.core.lock();
            if let Some(e) = &core.broken {
                return Poll::Ready(Err(e.clone()));
            }
            if let Err(e) = self.collect(&mut core) {
                return Poll::Ready(Err(e));
            }
            let Some(slot) = core.slots.iter().position(|s| matches!(s, SlotState::Free)) else {
                return Poll::Pending;
            };
            if core.ring.free_requests() == 0 {
                return Poll::Pending;
            }
            while core.pool.len() < npages && core.pool_total < POOL_MAX {
                match self.grant_page() {
                    Ok(b) => {
                        core.pool.push(b);
                        core.pool_total += 1;
                    }
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
            if core.pool.len() < npages {
                return Poll::Pending;
            }
            let at = core.pool.len() - npages;
            let pages: Vec<Buf> = core.pool.drain(at..).collect();
            let mut segments = Vec::with_capacity(npages);
            for (i, b) in pages.iter().enumerate() {
                let bytes = (len - i * PAGE_SIZE).min(PAGE_SIZE);
                if let Data::Write(src) = &data {
                    b.page.write(0, &src[i * PAGE_SIZE..i * PAGE_SIZE + bytes]);
                }
                segments.push(SegmentRepr { gref: b.gref, first_sect: 0, last_sect: (bytes / 512 - 1) as u8 });
            }
            let request = if npages > MAX_SEGMENTS {
                if core.indirect[slot].is_none() {
                    match self.grant_page() {
                        Ok(b) => core.indirect[slot] = Some(b),
                        Err(e) => {
                            core.pool.extend(pages);
                            return Poll::Ready(Err(e));
                        }
                    }
                }
                let Some(ind) = &core.indirect[slot] else { return Poll::Pending };
                for (i, s) in segments.iter().enumerate() {
                    ind.page.write(i * SEGMENT_LEN, &s.to_bytes());
                }
                RequestRepr::Indirect {
                    indirect_op: op,
                    nr_segments: npages as u16,
                    id: slot as u64,
                    sector,
                    handle: self.handle,
                    indirect_grefs: vec![ind.gref],
                }
            } else {
                RequestRepr::Direct { operation: op, handle: self.handle, id: slot as u64, sector, segments }
            };
            let operation = if npages > MAX_SEGMENTS { OP_INDIRECT } else { op };
            // A free slot was checked above.
            core.ring.queue_request(&request.to_bytes());
            core.slots[slot] = SlotState::InFlight { operation, inner_op: op, pages, abandoned: false };
            let notify = core.ring.push_requests();
            drop(core);
            if notify {
                if let Err(e) = self.events.send(self.port) {
                    log::warn!("{}: EVTCHNOP_send on port {}: {e}", self.info.name, self.port);
                }
            }
            Poll::Ready(Ok(slot))
        })
        .await?;

        /// Marks the slot abandoned if the caller stops waiting: the backend may still write its pages, which
        /// go back to the pool only when the response arrives.
        struct Abandon<'a>(&'a Blkfront, usize, bool);
        impl Drop for Abandon<'_> {
            fn drop(&mut self) {
                if self.2 {
                    return;
                }
                let mut core = self.0.core.lock();
                match core::mem::replace(&mut core.slots[self.1], SlotState::Free) {
                    SlotState::InFlight { operation, inner_op, pages, .. } => {
                        core.slots[self.1] = SlotState::InFlight { operation, inner_op, pages, abandoned: true }
                    }
                    SlotState::Done { pages, .. } => core.pool.extend(pages),
                    SlotState::Free => {}
                }
            }
        }
        let mut guard = Abandon(self, slot, false);
        let (status, pages) = core::future::poll_fn(|cx| {
            if let Some(s) = self.slot {
                s.register(cx.waker());
            }
            let mut core = self.core.lock();
            if let Err(e) = self.collect(&mut core) {
                return Poll::Ready(Err(e));
            }
            match core::mem::replace(&mut core.slots[slot], SlotState::Free) {
                SlotState::Done { status, pages } => Poll::Ready(Ok((status, pages))),
                other => {
                    core.slots[slot] = other;
                    Poll::Pending
                }
            }
        })
        .await?;
        guard.2 = true;
        if status == RSP_OKAY {
            if let Data::Read(dst) = &mut data {
                for (i, b) in pages.iter().enumerate() {
                    let bytes = (len - i * PAGE_SIZE).min(PAGE_SIZE);
                    b.page.read(0, &mut dst[i * PAGE_SIZE..i * PAGE_SIZE + bytes]);
                }
            }
        }
        self.core.lock().pool.extend(pages);
        match status {
            RSP_OKAY => Ok(()),
            RSP_EOPNOTSUPP => Err(BlockError::Unsupported {
                device: self.info.name.clone(),
                what: if op == OP_FLUSH_DISKCACHE || op == OP_WRITE_BARRIER { "flush" } else { "this request" },
            }),
            s => Err(BlockError::Io {
                device: self.info.name.clone(),
                sector: sector / self.ring_per_sector,
                detail: format!("backend status {s}"),
            }),
        }
    }

    /// Splits a request into transfers of at most `segments` pages, issued one after another.
    async fn rw(&self, op: u8, sector: u64, mut data: Data<'_>) -> Result<(), BlockError> {
        let chunk = self.segments * PAGE_SIZE;
        let mut ring_sector = sector * self.ring_per_sector;
        match &mut data {
            Data::Read(buf) => {
                for part in buf.chunks_mut(chunk) {
                    let n = part.len() as u64 / 512;
                    self.transfer(op, ring_sector, Data::Read(part)).await?;
                    ring_sector += n;
                }
            }
            Data::Write(buf) => {
                for part in buf.chunks(chunk) {
                    let n = part.len() as u64 / 512;
                    self.transfer(op, ring_sector, Data::Write(part)).await?;
                    ring_sector += n;
                }
            }
            Data::None => {}
        }
        Ok(())
    }
}

impl BlockDevice for Blkfront {
    fn info(&self) -> &BlockInfo {
        &self.info
    }

    fn read<'a>(&'a self, sector: u64, buf: &'a mut [u8]) -> BlockFuture<'a> {
        Box::pin(async move {
            self.info.check(sector, buf.len())?;
            self.rw(OP_READ, sector, Data::Read(buf)).await
        })
    }

    fn write<'a>(&'a self, sector: u64, buf: &'a [u8]) -> BlockFuture<'a> {
        Box::pin(async move {
            self.info.check(sector, buf.len())?;
            if self.info.read_only {
                return Err(BlockError::ReadOnly { device: self.info.name.clone() });
            }
            self.rw(OP_WRITE, sector, Data::Write(buf)).await
        })
    }

    fn flush(&self) -> BlockFuture<'_> {
        Box::pin(async move {
            match self.flush_op {
                Some(op) => self.transfer(op, 0, Data::None).await,
                None => Ok(()),
            }
        })
    }
}

/// Reads the backend's geometry and features (after it reached `Connected`).
async fn read_geometry(fe: &Frontend<'_>) -> Result<Geometry, BlkfrontError> {
    let node = |k: &'static str| fe.backend_node(k);
    let sectors_v = node("sectors").await?.ok_or_else(|| BlkfrontError::BadGeometry(String::from("no sectors")))?;
    let sectors = parse_u64(&format!("{}/sectors", fe.backend), &sectors_v)?;
    let sector_size = match node("sector-size").await? {
        Some(v) => u32::try_from(parse_u64("sector-size", &v)?).unwrap_or(0),
        None => 512,
    };
    let info = match node("info").await? {
        Some(v) => parse_u64("info", &v)?,
        None => 0,
    };
    let mode_ro = node("mode").await?.is_some_and(|m| m.trim() == "r");
    let max_indirect = match node("feature-max-indirect-segments").await? {
        Some(v) => u32::try_from(parse_u64("feature-max-indirect-segments", &v)?).unwrap_or(u32::MAX),
        None => 0,
    };
    let g = Geometry {
        sectors,
        sector_size,
        read_only: info & VDISK_READONLY != 0 || mode_ro,
        flush_cache: feature(node("feature-flush-cache").await?.as_deref()),
        barrier: feature(node("feature-barrier").await?.as_deref()),
        max_indirect_segments: max_indirect,
    };
    g.check()?;
    Ok(g)
}

/// Connects the vbd at `device/vbd/<id>`: ring and event channel, `Initialised`, waits for the backend to
/// connect, reads its geometry, `Connected`. Errors: [`BlkfrontError`].
pub async fn connect(
    xs: &XenStore,
    grants: &'static GrantTable,
    events: Arc<dyn EventChannelOps>,
    id: &str,
    listen: &dyn Fn(EvtchnPort) -> Result<Option<&'static WakeSlot>, String>,
) -> Result<Blkfront, BlkfrontError> {
    let path = format!("device/vbd/{id}");
    let mut fe = Frontend::open(xs, &path, Flavour::Block).await?;
    loop {
        if fe.next_step().await? == Step::Publish {
            break;
        }
    }
    let ring = BlkRing::new(grants, fe.backend_id)?;
    let port = events.alloc_unbound(fe.backend_id).map_err(|e| BlkfrontError::Event(format!("{e}")))?;
    let slot = listen(port).map_err(BlkfrontError::Event)?;
    fe.publish(&ring.xenstore_pairs(port)).await?;
    loop {
        if fe.next_step().await? == Step::Connected {
            break;
        }
    }
    let g = read_geometry(&fe).await?;
    fe.connected().await?;
    let name = format!("xen-vbd{id}");
    log::info!(
        "{name}: {} sectors of {} bytes ({} MiB){}, backend {} (domain {}), event channel {port}, {} segments per \
         request{}{}",
        g.sectors,
        g.sector_size,
        (g.sectors * u64::from(g.sector_size)) >> 20,
        if g.read_only { ", read-only" } else { "" },
        fe.backend,
        fe.backend_id,
        g.segments_per_request(),
        if g.segments_per_request() > MAX_SEGMENTS { " (indirect)" } else { "" },
        if g.flush_cache {
            ", flush-cache"
        } else if g.barrier {
            ", barrier"
        } else {
            ""
        },
    );
    let backend = fe.backend_id;
    fe.finish().await?;
    // The vdev number is the device id (e.g. 51712 = xvda); blkif handles are 16 bits.
    let handle = id.parse::<u32>().map_or(0, |v| v as u16);
    Ok(Blkfront::start(name, handle, g, ring, grants, backend, events, port, slot))
}

#[cfg(test)]
mod tests;
