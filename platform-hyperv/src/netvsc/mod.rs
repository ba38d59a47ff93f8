//! netvsc, the Hyper-V synthetic NIC driver, as a [`NetDevice`]: NVSP version negotiation (6.1 down to 2), the
//! NDIS configuration (MTU, before the receive buffer, NVSP ≥ 3.2) and version, the receive buffer GPADL and its
//! section, the optional send buffer, RNDIS INITIALIZE / QUERY (MAC via OID_802_3_PERMANENT_ADDRESS, link state) /
//! SET (packet filter, checksum offload and IPv4 large send offload v2 when the host offers them), then the
//! data path: frames out as `REMOTE_NDIS_PACKET_MSG` in a send-buffer section (or GPA-direct pages), large sends
//! (net::gso's merged frames with a `TCP_LARGESEND_PKTINFO`) from GPA-direct pages of their own, frames in as
//! transfer-page ranges of the receive buffer (the host's checksum verdict as [`RxFrame::checksum_valid`]), each
//! acknowledged with a completion. Source: Linux `drivers/net/hyperv/netvsc.c`
//! (`netvsc_connect_vsp`, `netvsc_init_buf`, `netvsc_send`, `netvsc_receive`) and `rndis_filter.c`.

pub mod nvsp;
pub mod rndis;

use crate::mem::{Region, PAGE_SIZE};
use crate::vmbus::channel::Channel;
use crate::vmbus::msg::Offer;
use crate::vmbus::packet::{self, GpaRange, Packet};
use crate::vmbus::ring::RingError;
use crate::vmbus::{self, GpadlHandle, Vmbus};
use alloc::collections::{BTreeMap, VecDeque};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::task::Waker;
use libos::dev::{DeviceError, Gso, GsoKind, NetDevice, NetInfo, NetOffloads, RxFrame, MAX_GSO_FRAME};
use libos::time::Duration;
use nvsp::NvspMessage;
use rndis::RndisMessage;

/// Transaction ids of NVSP init messages.
const TID_INIT: u64 = 0x6e76_7370_0000_0000;
/// Transaction id tag of RNDIS control requests (low 32 bits = request id).
const TID_CONTROL: u64 = 0x6374_726c_0000_0000;
/// Transaction id tag of data frames (low 32 bits = sequence).
const TID_DATA: u64 = 0x7478_0000_0000_0000;
/// Most frames queued for the stack before new ones are dropped.
const RX_QUEUE_MAX: usize = 256;
/// Most frames in flight on the GPA-direct path (no send buffer).
const TX_DIRECT_SLOTS: usize = 64;
/// Most large sends in flight, each from pages of its own (~68 KiB), allocated on first use.
const TX_GSO_SLOTS: usize = 16;
/// Packets handled per pump before returning to the caller.
const PUMP_BUDGET: usize = 128;

/// Tunables.
#[derive(Debug, Clone)]
pub struct Config {
    /// IP MTU (bytes).
    pub mtu: usize,
    /// Receive buffer (bytes, page multiple).
    pub recv_buffer_bytes: usize,
    /// Send buffer (bytes, page multiple); 0 sends every frame from its own pages (GPA direct).
    pub send_buffer_bytes: usize,
    /// Pages of each ring, control page included.
    pub ring_pages: usize,
    /// How long each host response may take.
    pub response_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            mtu: 1500,
            recv_buffer_bytes: 1 << 20,
            send_buffer_bytes: 256 << 10,
            ring_pages: 16,
            response_timeout: Duration::from_secs(5),
        }
    }
}

/// Why netvsc could not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The VMBus channel failed.
    Vmbus(vmbus::Error),
    /// The host accepted none of the NVSP versions 6.1 … 2.
    NoNvspVersion,
    /// The host refused a step: `what`, its status.
    HostRefused {
        /// The step, e.g. "the receive buffer" or "RNDIS INITIALIZE".
        what: &'static str,
        /// The host's status: NVSP `status` (`NVSP_STAT_*`) or RNDIS `status` (`RNDIS_STATUS_*`).
        status: u32,
    },
    /// No answer within the timeout.
    Timeout {
        /// The answer waited for, e.g. "NVSP INIT_COMPLETE" or "receive buffer completion".
        what: &'static str,
    },
    /// The host sent something impossible.
    Protocol {
        /// What the host sent, and in answer to what.
        detail: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Vmbus(e) => write!(f, "netvsc: {e}"),
            Self::NoNvspVersion => write!(f, "netvsc: the host accepted none of the NVSP versions 6.1 … 2"),
            Self::HostRefused { what, status } => write!(f, "netvsc: host refused {what} (status {status:#x})"),
            Self::Timeout { what } => write!(f, "netvsc: no {what} from the host in time"),
            Self::Protocol { detail } => write!(f, "netvsc: protocol violation: {detail}"),
        }
    }
}

impl From<vmbus::Error> for Error {
    fn from(e: vmbus::Error) -> Self {
        Self::Vmbus(e)
    }
}

struct SendBuffer {
    region: Region,
    gpadl: GpadlHandle,
    section_size: usize,
    free: Vec<u32>,
}

enum TxSlot {
    Section(u32),
    Direct(Region),
    Gso(Region),
}

/// A netvsc NIC, opened and initialised.
pub struct Netvsc {
    info: NetInfo,
    ch: Channel,
    nvsp_version: u32,
    recv_buf: Region,
    recv_gpadl: GpadlHandle,
    recv_limit: usize,
    send: Option<SendBuffer>,
    ctrl: Region,
    tx_inflight: BTreeMap<u64, TxSlot>,
    tx_direct_free: Vec<Region>,
    tx_direct_allocated: usize,
    tx_gso_free: Vec<Region>,
    tx_gso_allocated: usize,
    tx_seq: u32,
    tx_scratch: Vec<u8>,
    rx: VecDeque<RxFrame>,
    rx_pool: Vec<Vec<u8>>,
    pending_acks: VecDeque<u64>,
    ctrl_responses: VecDeque<RndisMessage>,
    nvsp_completions: VecDeque<NvspMessage>,
    next_req_id: u32,
    waker: Option<Waker>,
    link_up: bool,
    broken: Option<DeviceError>,
    timeout: Duration,
    rx_dropped: u64,
}

impl Netvsc {
    /// Opens `offer`'s channel and runs the NVSP and RNDIS initialisation. Errors: [`Error`].
    pub async fn new(bus: &Arc<Vmbus>, offer: &Offer, cfg: &Config) -> Result<Self, Error> {
        let ch = bus.open_channel(offer, cfg.ring_pages, cfg.ring_pages).await?;
        let dma = bus.dma().clone();
        let recv_pages = cfg.recv_buffer_bytes.div_ceil(PAGE_SIZE).max(1);
        let recv_buf = dma.alloc(recv_pages).map_err(vmbus::Error::from)?;
        let ctrl = dma.alloc(1).map_err(vmbus::Error::from)?;
        let mut dev = Self {
            info: NetInfo {
                name: format!("netvsc@vmbus:{}", offer.child_relid),
                mac: [0; 6],
                mtu: cfg.mtu,
                offloads: NetOffloads::default(),
            },
            ch,
            nvsp_version: 0,
            recv_buf,
            recv_gpadl: GpadlHandle::default(),
            recv_limit: 0,
            send: None,
            ctrl,
            tx_inflight: BTreeMap::new(),
            tx_direct_free: Vec::new(),
            tx_direct_allocated: 0,
            tx_gso_free: Vec::new(),
            tx_gso_allocated: 0,
            tx_seq: 0,
            tx_scratch: Vec::new(),
            rx: VecDeque::new(),
            rx_pool: Vec::new(),
            pending_acks: VecDeque::new(),
            ctrl_responses: VecDeque::new(),
            nvsp_completions: VecDeque::new(),
            next_req_id: 1,
            waker: None,
            link_up: false,
            broken: None,
            timeout: cfg.response_timeout,
            rx_dropped: 0,
        };
        dev.negotiate().await?;
        dev.init_buffers(bus, cfg).await?;
        dev.init_rndis().await?;
        log::info!(
            "{}: MAC {}, MTU {}, NVSP {}, link {}, receive buffer {} KiB, {}, checksum offload {}, large send {}",
            dev.info.name,
            mac_text(&dev.info.mac),
            dev.info.mtu,
            nvsp::version::display(dev.nvsp_version),
            if dev.link_up { "up" } else { "down" },
            dev.recv_buf.len() >> 10,
            match &dev.send {
                Some(s) => format!("send buffer {} KiB in {}-byte sections", s.region.len() >> 10, s.section_size),
                None => String::from("no send buffer (GPA-direct frames)"),
            },
            if dev.info.offloads.tx_checksum { "on" } else { "off" },
            if dev.info.offloads.tso4 {
                format!("LSOv2 up to {} bytes", dev.info.offloads.gso_max_frame())
            } else {
                String::from("off")
            }
        );
        Ok(dev)
    }

    /// The negotiated NVSP version.
    pub fn nvsp_version(&self) -> u32 {
        self.nvsp_version
    }

    /// Whether the host reports the link up.
    pub fn link_up(&self) -> bool {
        self.link_up
    }

    /// The channel (diagnostics and tests).
    pub fn channel(&self) -> &Channel {
        &self.ch
    }

    /// GPADL handles of the receive buffer and, when in use, the send buffer.
    pub fn buffer_gpadls(&self) -> (GpadlHandle, Option<GpadlHandle>) {
        (self.recv_gpadl, self.send.as_ref().map(|s| s.gpadl))
    }

    /// Frames dropped because the stack did not take them fast enough.
    pub fn rx_dropped(&self) -> u64 {
        self.rx_dropped
    }

    fn send_nvsp(&self, tid: u64, m: &NvspMessage, completion: bool) -> Result<(), Error> {
        Ok(self.ch.send_inband(tid, &m.emit(), completion)?)
    }

    /// Pumps the channel until `f` finds what it waits for, with the response timeout.
    async fn wait<T>(&mut self, what: &'static str, mut f: impl FnMut(&mut Self) -> Option<T>) -> Result<T, Error> {
        let timeout = self.timeout;
        let events = self.ch.events();
        let fut = core::future::poll_fn(|cx| {
            events.wake.poll_until(cx, || match self.pump() {
                Ok(()) => f(self).map(Ok),
                Err(e) => Some(Err(Error::Protocol { detail: e.to_string() })),
            })
        });
        libos::time::timeout(timeout, fut).await.unwrap_or(Err(Error::Timeout { what }))
    }

    async fn wait_nvsp(&mut self, what: &'static str, ty: u32) -> Result<NvspMessage, Error> {
        self.wait(what, |d| {
            let i = d.nvsp_completions.iter().position(|m| m.msg_type() == ty)?;
            d.nvsp_completions.remove(i)
        })
        .await
    }

    /// NVSP INIT with each version from 6.1 down until the host's INIT_COMPLETE says success (Linux
    /// `negotiate_nvsp_ver`), then the NDIS configuration (NVSP ≥ 3.2) and the NDIS version.
    async fn negotiate(&mut self) -> Result<(), Error> {
        for &v in nvsp::version::ALL.iter() {
            self.send_nvsp(TID_INIT | 1, &NvspMessage::Init { min: v, max: v }, true)?;
            let r = self.wait_nvsp("NVSP INIT_COMPLETE", nvsp::msgtype::INIT_COMPLETE).await?;
            if let NvspMessage::InitComplete { status: nvsp::STATUS_SUCCESS, .. } = r {
                self.nvsp_version = v;
                break;
            }
            log::debug!("{}: host refused NVSP {}", self.info.name, nvsp::version::display(v));
        }
        if self.nvsp_version == 0 {
            return Err(Error::NoNvspVersion);
        }
        let v = self.nvsp_version;
        if v >= nvsp::version::V2 {
            let mut cap = nvsp::capability::IEEE8021Q;
            if v >= nvsp::version::V5 {
                // Teaming makes the host send link speed updates (SR-IOV is not asked for: no VF driver here).
                cap |= nvsp::capability::TEAMING;
            }
            let m = NvspMessage::SendNdisConfig { mtu: (self.info.mtu + 14) as u32, capability: cap };
            self.send_nvsp(TID_INIT | 2, &m, false)?;
        }
        let (major, minor) = nvsp::ndis_version(v);
        self.send_nvsp(TID_INIT | 3, &NvspMessage::SendNdisVersion { major, minor }, false)?;
        Ok(())
    }

    /// The receive buffer and (optionally) the send buffer (Linux `netvsc_init_buf`).
    async fn init_buffers(&mut self, bus: &Arc<Vmbus>, cfg: &Config) -> Result<(), Error> {
        let relid = self.ch.relid();
        self.recv_gpadl = bus.create_gpadl(relid, &self.recv_buf).await?;
        let m = NvspMessage::SendReceiveBuffer { gpadl: self.recv_gpadl, id: nvsp::RECEIVE_BUFFER_ID };
        self.send_nvsp(TID_INIT | 4, &m, true)?;
        match self.wait_nvsp("receive buffer completion", nvsp::msgtype::SEND_RECV_BUF_COMPLETE).await? {
            NvspMessage::SendReceiveBufferComplete { status: nvsp::STATUS_SUCCESS, sections } => {
                let len = self.recv_buf.len() as u64;
                let ok = sections.len() == 1 && {
                    let s = sections[0];
                    s.offset == 0
                        && s.sub_alloc_size >= 68
                        && u64::from(s.sub_alloc_size) * u64::from(s.num_sub_allocs) <= len
                        && u64::from(s.end_offset) <= len
                };
                if !ok {
                    return Err(Error::Protocol {
                        detail: format!("receive buffer sections {sections:?} do not fit {len} bytes"),
                    });
                }
                self.recv_limit = (sections[0].sub_alloc_size as usize * sections[0].num_sub_allocs as usize)
                    .max(sections[0].end_offset as usize);
            }
            NvspMessage::SendReceiveBufferComplete { status, .. } => {
                return Err(Error::HostRefused { what: "the receive buffer", status })
            }
            _ => return Err(Error::Protocol { detail: String::from("unexpected receive buffer reply") }),
        }
        if cfg.send_buffer_bytes == 0 {
            return Ok(());
        }
        let region = bus.dma().alloc(cfg.send_buffer_bytes.div_ceil(PAGE_SIZE)).map_err(vmbus::Error::from)?;
        let gpadl = bus.create_gpadl(relid, &region).await?;
        self.send_nvsp(TID_INIT | 5, &NvspMessage::SendSendBuffer { gpadl, id: nvsp::SEND_BUFFER_ID }, true)?;
        match self.wait_nvsp("send buffer completion", nvsp::msgtype::SEND_SEND_BUF_COMPLETE).await? {
            NvspMessage::SendSendBufferComplete { status: nvsp::STATUS_SUCCESS, section_size }
                if section_size >= 512 && section_size as usize <= region.len() =>
            {
                let n = region.len() / section_size as usize;
                self.send = Some(SendBuffer {
                    region,
                    gpadl,
                    section_size: section_size as usize,
                    free: (0..n as u32).rev().collect(),
                });
            }
            other => {
                log::warn!("{}: host declined the send buffer ({other:?}); sending GPA-direct", self.info.name);
                if let Err(e) = bus.teardown_gpadl(relid, gpadl).await {
                    log::warn!("{}: send buffer GPADL teardown: {e}", self.info.name);
                }
            }
        }
        Ok(())
    }

    /// Sends an RNDIS control request from the control page (GPA direct, channel type control) and waits for the
    /// completion with its request id.
    async fn rndis_request(
        &mut self,
        make: impl FnOnce(u32) -> RndisMessage,
        what: &'static str,
    ) -> Result<RndisMessage, Error> {
        let req_id = self.next_req_id;
        self.next_req_id = self.next_req_id.wrapping_add(1).max(1);
        let bytes = make(req_id).emit();
        self.ctrl.write(0, &bytes).map_err(vmbus::Error::from)?;
        let range = GpaRange { len: bytes.len() as u32, offset: 0, pfns: vec![self.ctrl.pfn(0)] };
        let carrier = NvspMessage::SendRndisPacket {
            channel_type: nvsp::CHANNEL_TYPE_CONTROL,
            section_index: nvsp::NO_SECTION,
            section_size: 0,
        };
        self.ch.send_gpa_direct(TID_CONTROL | u64::from(req_id), &[range], &carrier.emit())?;
        self.wait(what, |d| {
            let i = d.ctrl_responses.iter().position(|m| m.req_id() == Some(req_id))?;
            d.ctrl_responses.remove(i)
        })
        .await
    }

    async fn query(&mut self, oid: u32, input: Vec<u8>, what: &'static str) -> Result<Vec<u8>, Error> {
        match self.rndis_request(|req_id| RndisMessage::Query { req_id, oid, info: input }, what).await? {
            RndisMessage::QueryComplete { status: rndis::status::SUCCESS, info, .. } => Ok(info),
            RndisMessage::QueryComplete { status, .. } => Err(Error::HostRefused { what, status }),
            other => Err(Error::Protocol { detail: format!("{what}: unexpected reply {other:?}") }),
        }
    }

    async fn set(&mut self, oid: u32, info: Vec<u8>, what: &'static str) -> Result<(), Error> {
        match self.rndis_request(|req_id| RndisMessage::Set { req_id, oid, info }, what).await? {
            RndisMessage::SetComplete { status: rndis::status::SUCCESS, .. } => Ok(()),
            RndisMessage::SetComplete { status, .. } => Err(Error::HostRefused { what, status }),
            other => Err(Error::Protocol { detail: format!("{what}: unexpected reply {other:?}") }),
        }
    }

    /// RNDIS INITIALIZE, MAC and link queries, checksum offload, packet filter (Linux `rndis_filter_device_add`
    /// and `rndis_filter_open`).
    async fn init_rndis(&mut self) -> Result<(), Error> {
        let (major, minor) = rndis::RNDIS_VERSION;
        match self
            .rndis_request(
                |req_id| RndisMessage::Initialize { req_id, major, minor, max_xfer_size: rndis::MAX_XFER_SIZE },
                "RNDIS INITIALIZE",
            )
            .await?
        {
            RndisMessage::InitializeComplete { status: rndis::status::SUCCESS, .. } => {}
            RndisMessage::InitializeComplete { status, .. } => {
                return Err(Error::HostRefused { what: "RNDIS INITIALIZE", status })
            }
            other => return Err(Error::Protocol { detail: format!("RNDIS INITIALIZE: unexpected reply {other:?}") }),
        }
        let mac = self.query(rndis::oid::PERMANENT_ADDRESS, Vec::new(), "MAC address query").await?;
        if mac.len() < 6 {
            return Err(Error::Protocol { detail: format!("MAC address of {} bytes", mac.len()) });
        }
        self.info.mac.copy_from_slice(&mac[..6]);
        let link = self.query(rndis::oid::GEN_MEDIA_CONNECT_STATUS, Vec::new(), "link state query").await?;
        self.link_up = libos::wire::get_u32(&link, 0) == Some(0);
        if self.nvsp_version >= nvsp::version::V5 {
            match self.enable_offloads().await {
                Ok(o) => self.info.offloads = o,
                Err(e) => log::warn!("{}: checksum offload not enabled: {e}", self.info.name),
            }
        }
        let f = rndis::filter::DIRECTED | rndis::filter::BROADCAST | rndis::filter::ALL_MULTICAST;
        self.set(rndis::oid::GEN_CURRENT_PACKET_FILTER, f.to_le_bytes().to_vec(), "packet filter").await
    }

    /// Queries the host's offload capabilities and turns on IPv4 TCP and UDP checksums (transmit and receive)
    /// when both are offered, and with them IPv4 LSOv2 when the host segments 802.3 frames of two segments or
    /// more (what net::gso merges) larger than the MTU (`rndis_netdev_set_hwcaps`). Returns the offloads on.
    async fn enable_offloads(&mut self) -> Result<NetOffloads, Error> {
        let q = rndis::offload_caps_query();
        let caps = self.query(rndis::oid::TCP_OFFLOAD_HARDWARE_CAPABILITIES, q, "offload capabilities query").await?;
        let Some(ip4_txcsum) = rndis::offload_caps_ip4_txcsum(&caps) else {
            return Err(Error::Protocol {
                detail: format!(
                    "offload capabilities object of {} bytes, type {:#x}",
                    caps.len(),
                    caps.first().copied().unwrap_or(0)
                ),
            });
        };
        let tcp = ip4_txcsum & rndis::ndis::TXCSUM_ALL_TCP4 == rndis::ndis::TXCSUM_ALL_TCP4;
        let udp = ip4_txcsum & rndis::ndis::TXCSUM_UDP4 != 0;
        if !(tcp && udp) {
            return Ok(NetOffloads::default());
        }
        let min_frame = self.info.mtu + 14;
        let lso = rndis::offload_caps_lsov2_ip4(&caps).filter(|&(max, min)| min <= 2 && max as usize > min_frame);
        use rndis::ndis::{LSOV2_ENABLED, PARAM_TX_RX_DISABLED, PARAM_TX_RX_ENABLED};
        // The stack does IP header checksums; TCP and UDP checksums go to the host. LSOv2 0: no change.
        let lso_param = if lso.is_some() { LSOV2_ENABLED } else { 0 };
        let p = rndis::offload_params(PARAM_TX_RX_DISABLED, PARAM_TX_RX_ENABLED, PARAM_TX_RX_ENABLED, lso_param);
        self.set(rndis::oid::TCP_OFFLOAD_PARAMETERS, p, "offload parameters").await?;
        Ok(NetOffloads {
            rx_checksum: true,
            tx_checksum: true,
            tso4: lso.is_some(),
            rx_gso: false,
            gso_max_frame: lso.map_or(0, |(max, _)| max as usize),
        })
    }

    fn protocol(&mut self, detail: String) -> DeviceError {
        let e = DeviceError::Protocol { device: self.info.name.clone(), detail };
        log::error!("{e}");
        self.broken = Some(e.clone());
        e
    }

    fn vmbus_err(&mut self, e: vmbus::Error) -> DeviceError {
        match e {
            vmbus::Error::Ring { error: RingError::Full { .. }, .. } => {
                DeviceError::Busy { device: self.info.name.clone() }
            }
            other => self.protocol(other.to_string()),
        }
    }

    /// Handles every packet the host queued (up to a budget), then sends pending receive completions.
    fn pump(&mut self) -> Result<(), DeviceError> {
        if let Some(e) = &self.broken {
            return Err(e.clone());
        }
        for _ in 0..PUMP_BUDGET {
            match self.ch.try_recv() {
                Ok(Some(p)) => self.handle(p)?,
                Ok(None) => break,
                Err(e) => return Err(self.vmbus_err(e)),
            }
        }
        self.send_acks()
    }

    fn send_acks(&mut self) -> Result<(), DeviceError> {
        let ack = NvspMessage::SendRndisPacketComplete { status: nvsp::STATUS_SUCCESS }.emit();
        while let Some(&tid) = self.pending_acks.front() {
            match self.ch.send_completion(tid, &ack) {
                Ok(()) => {
                    self.pending_acks.pop_front();
                }
                Err(vmbus::Error::Ring { error: RingError::Full { .. }, .. }) => break,
                Err(e) => return Err(self.vmbus_err(e)),
            }
        }
        Ok(())
    }

    fn handle(&mut self, p: Packet) -> Result<(), DeviceError> {
        match p.desc.ty {
            packet::ty::COMP => {
                let m = NvspMessage::parse(p.payload()).map_err(|e| self.protocol(e.to_string()))?;
                if let NvspMessage::SendRndisPacketComplete { status } = m {
                    if status != nvsp::STATUS_SUCCESS {
                        log::debug!(
                            "{}: host completed packet {:#x} with status {status}",
                            self.info.name,
                            p.desc.trans_id
                        );
                    }
                    match self.tx_inflight.remove(&p.desc.trans_id) {
                        Some(TxSlot::Section(s)) => {
                            if let Some(sb) = &mut self.send {
                                sb.free.push(s);
                            }
                        }
                        Some(TxSlot::Direct(r)) => self.tx_direct_free.push(r),
                        Some(TxSlot::Gso(r)) => self.tx_gso_free.push(r),
                        // Control request completions carry no buffer to free.
                        None if p.desc.trans_id & 0xffff_ffff_0000_0000 == TID_CONTROL => {}
                        None => {
                            let tid = p.desc.trans_id;
                            return Err(self.protocol(format!("completion for unknown transaction {tid:#x}")));
                        }
                    }
                } else {
                    self.nvsp_completions.push_back(m);
                }
                Ok(())
            }
            packet::ty::DATA_USING_XFER_PAGES => {
                let (set, ranges) = p.transfer_ranges().map_err(|e| self.protocol(e.to_string()))?;
                let m = NvspMessage::parse(p.payload()).map_err(|e| self.protocol(e.to_string()))?;
                if set != nvsp::RECEIVE_BUFFER_ID || !matches!(m, NvspMessage::SendRndisPacket { .. }) {
                    return Err(self.protocol(format!("transfer-page packet for set {set:#x} carrying {m:?}")));
                }
                for (off, count) in ranges {
                    self.receive_range(off, count)?;
                }
                self.pending_acks.push_back(p.desc.trans_id);
                Ok(())
            }
            packet::ty::DATA_INBAND => {
                match NvspMessage::parse(p.payload()) {
                    Ok(NvspMessage::SendIndirectionTable { count, .. }) => {
                        log::debug!(
                            "{}: host sent a {count}-entry send indirection table (one channel: unused)",
                            self.info.name
                        )
                    }
                    Ok(NvspMessage::VfAssociation { allocated, serial }) => {
                        log::info!(
                            "{}: host offers VF association (allocated {allocated}, serial {serial}); not used",
                            self.info.name
                        )
                    }
                    Ok(other) => log::debug!("{}: ignoring in-band {other:?}", self.info.name),
                    Err(e) => return Err(self.protocol(e.to_string())),
                }
                if p.desc.flags & packet::FLAG_COMPLETION_REQUESTED != 0 {
                    self.pending_acks.push_back(p.desc.trans_id);
                }
                Ok(())
            }
            other => {
                log::debug!("{}: ignoring packet type {other:#x}", self.info.name);
                Ok(())
            }
        }
    }

    /// One transfer-page range of the receive buffer: an RNDIS message (data or control).
    fn receive_range(&mut self, off: u32, count: u32) -> Result<(), DeviceError> {
        let (off, count) = (off as usize, count as usize);
        if count == 0 || off.checked_add(count).is_none_or(|end| end > self.recv_limit) {
            let limit = self.recv_limit;
            return Err(self.protocol(format!(
                "receive range {count} bytes at {off:#x} outside the {limit:#x}-byte receive buffer"
            )));
        }
        let mut buf = self.rx_pool.pop().unwrap_or_default();
        buf.resize(count, 0);
        if let Err(e) = self.recv_buf.read(off, &mut buf) {
            return Err(self.protocol(e.to_string()));
        }
        if rndis::peek_msg_type(&buf) == Some(rndis::msgtype::PACKET) {
            let info = rndis::parse_packet(&buf).map_err(|e| self.protocol(e.to_string()))?;
            if info.csum.is_some_and(|c| c & (rndis::csum::RX_TCP_FAILED | rndis::csum::RX_UDP_FAILED) != 0) {
                // The host verified the checksum and found it wrong: drop like a NIC would.
                self.rx_pool.push(buf);
                return Ok(());
            }
            if self.rx.len() >= RX_QUEUE_MAX {
                self.rx_dropped += 1;
                self.rx_pool.push(buf);
                return Ok(());
            }
            let ok = rndis::csum::RX_TCP_SUCCEEDED | rndis::csum::RX_UDP_SUCCEEDED;
            let checksum_valid = info.csum.is_some_and(|c| c & ok != 0);
            let frame = RxFrame { offset: info.data.start, len: info.data.len(), buf, token: 0, checksum_valid };
            self.rx.push_back(frame);
            return Ok(());
        }
        let m = RndisMessage::parse(&buf).map_err(|e| self.protocol(e.to_string()))?;
        self.rx_pool.push(buf);
        match m {
            RndisMessage::IndicateStatus { status, .. } => match status {
                rndis::status::MEDIA_CONNECT => {
                    self.link_up = true;
                    log::info!("{}: link up", self.info.name);
                }
                rndis::status::MEDIA_DISCONNECT => {
                    self.link_up = false;
                    log::warn!("{}: link down", self.info.name);
                }
                other => log::debug!("{}: RNDIS status indication {other:#x}", self.info.name),
            },
            m if m.req_id().is_some() => self.ctrl_responses.push_back(m),
            other => log::debug!("{}: ignoring RNDIS {other:?}", self.info.name),
        }
        Ok(())
    }

    fn wake_if_ready(&self) {
        if let Some(w) = &self.waker {
            self.ch.register(w);
            if !self.rx.is_empty() {
                w.wake_by_ref();
            }
        }
    }
}

fn mac_text(m: &[u8; 6]) -> String {
    format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
}

impl NetDevice for Netvsc {
    fn info(&self) -> &NetInfo {
        &self.info
    }

    fn receive(&mut self) -> Result<Option<RxFrame>, DeviceError> {
        if self.rx.is_empty() {
            self.pump()?;
        }
        Ok(self.rx.pop_front())
    }

    fn recycle(&mut self, frame: RxFrame) -> Result<(), DeviceError> {
        if self.rx_pool.len() < RX_QUEUE_MAX {
            self.rx_pool.push(frame.buf);
        }
        Ok(())
    }

    fn can_transmit(&mut self) -> bool {
        if self.broken.is_some() {
            return false;
        }
        match &self.send {
            Some(s) if !s.free.is_empty() => true,
            _ => !self.tx_direct_free.is_empty() || self.tx_direct_allocated < TX_DIRECT_SLOTS,
        }
    }

    /// With large send offload: frames that may be sent now, each possibly a large send (the fewer of the free
    /// plain and large-send slots). `want` needs nothing more: every completion arrives as a VMBus packet on
    /// the channel's inbound ring, whose interrupt is never masked.
    fn transmit_slots(&mut self, _want: usize) -> usize {
        if !self.info.offloads.tso4 || self.broken.is_some() {
            return usize::from(self.can_transmit());
        }
        let sections = self.send.as_ref().map_or(0, |s| s.free.len());
        let plain = sections + self.tx_direct_free.len() + (TX_DIRECT_SLOTS - self.tx_direct_allocated);
        plain.min(self.tx_gso_free.len() + (TX_GSO_SLOTS - self.tx_gso_allocated))
    }

    /// Sends `frame` as one IPv4 large send (`TCP_LARGESEND_PKTINFO`, `lso_v2_transmit`: the host cuts it into
    /// `gso.mss` segments) from GPA-direct pages of its own. Errors: [`DeviceError::TooLarge`] without LSOv2 or
    /// beyond the host's size, [`DeviceError::Busy`], [`DeviceError::Protocol`] for a frame that is not TCP over
    /// IPv4.
    fn transmit_gso(&mut self, mut frame: Vec<u8>, gso: Gso) -> Result<(), (DeviceError, Vec<u8>)> {
        if let Some(e) = &self.broken {
            return Err((e.clone(), frame));
        }
        let GsoKind::TcpV4 = gso.kind;
        let (len, max) = (frame.len(), self.info.offloads.gso_max_frame());
        if !self.info.offloads.tso4 || len > max {
            let max = if self.info.offloads.tso4 { max } else { self.info.mtu + 14 };
            return Err((DeviceError::TooLarge { device: self.info.name.clone(), len, max }, frame));
        }
        let region = match self.take_gso_region() {
            Ok(r) => r,
            Err(e) => return Err((e, frame)),
        };
        let Some(tcp_offset) = drivers::csum::prepare_lso_v2(&mut frame) else {
            self.tx_gso_free.push(region);
            let detail = String::from("large send frame is not TCP over IPv4");
            return Err((DeviceError::Protocol { device: self.info.name.clone(), detail }, frame));
        };
        let ppis = [(rndis::ppi::TCP_LARGESEND, rndis::lso_v2_info(gso.mss, tcp_offset))];
        let mut hdr = vec![0u8; rndis::packet_header_len(ppis.len())];
        rndis::emit_packet_header(&mut hdr, len, &ppis);
        if let Err(e) = region.write(0, &hdr).and_then(|()| region.write(hdr.len(), &frame)) {
            self.tx_gso_free.push(region);
            return Err((DeviceError::Io { device: self.info.name.clone(), detail: e.to_string() }, frame));
        }
        self.tx_seq = self.tx_seq.wrapping_add(1);
        let tid = TID_DATA | u64::from(self.tx_seq);
        self.send_direct(tid, region, hdr.len() + len, true).map_err(|e| (e, Vec::new()))
    }

    fn transmit(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> Result<(), DeviceError> {
        if let Some(e) = &self.broken {
            return Err(e.clone());
        }
        let max = self.info.mtu + 14;
        if len > max {
            return Err(DeviceError::TooLarge { device: self.info.name.clone(), len, max });
        }
        // The header depends on the frame (checksum request): fill first, header right before the frame.
        let room = rndis::packet_header_len(1);
        let mut scratch = core::mem::take(&mut self.tx_scratch);
        scratch.resize(room + len, 0);
        fill(&mut scratch[room..]);
        let ppi = if self.info.offloads.tx_checksum { rndis::tx_checksum_info(&scratch[room..]) } else { None };
        let ppis: &[(u32, u32)] = match &ppi {
            Some(v) => &[(rndis::ppi::TCPIP_CHKSUM, *v)][..],
            None => &[],
        };
        let hdr = rndis::packet_header_len(ppis.len());
        rndis::emit_packet_header(&mut scratch[room - hdr..room], len, ppis);
        let msg = &scratch[room - hdr..];
        self.tx_seq = self.tx_seq.wrapping_add(1);
        let tid = TID_DATA | u64::from(self.tx_seq);
        let r = self.send_frame(tid, msg);
        self.tx_scratch = scratch;
        r
    }

    fn flush(&mut self) -> Result<(), DeviceError> {
        self.pump()?;
        self.wake_if_ready();
        Ok(())
    }

    fn set_waker(&mut self, waker: &Waker) {
        self.waker = Some(waker.clone());
        self.ch.register(waker);
    }
}

impl Netvsc {
    fn send_frame(&mut self, tid: u64, msg: &[u8]) -> Result<(), DeviceError> {
        let name = self.info.name.clone();
        if let Some(sb) = &mut self.send {
            if msg.len() <= sb.section_size {
                if let Some(s) = sb.free.pop() {
                    let write = sb.region.write(s as usize * sb.section_size, msg);
                    let carrier = NvspMessage::SendRndisPacket {
                        channel_type: nvsp::CHANNEL_TYPE_DATA,
                        section_index: s,
                        section_size: msg.len() as u32,
                    };
                    let r = write
                        .map_err(vmbus::Error::from)
                        .and_then(|()| self.ch.send_inband(tid, &carrier.emit(), true));
                    return match r {
                        Ok(()) => {
                            self.tx_inflight.insert(tid, TxSlot::Section(s));
                            Ok(())
                        }
                        Err(e) => {
                            if let Some(sb) = &mut self.send {
                                sb.free.push(s);
                            }
                            Err(self.vmbus_err(e))
                        }
                    };
                }
            }
        }
        // GPA direct: the frame in pages of its own.
        let region = match self.tx_direct_free.pop() {
            Some(r) => r,
            None if self.tx_direct_allocated < TX_DIRECT_SLOTS => {
                let pages = (self.info.mtu + 14 + rndis::packet_header_len(1)).div_ceil(PAGE_SIZE);
                let r = self
                    .ch
                    .bus()
                    .dma()
                    .alloc(pages)
                    .map_err(|e| DeviceError::Io { device: name.clone(), detail: e.to_string() })?;
                self.tx_direct_allocated += 1;
                r
            }
            None => return Err(DeviceError::Busy { device: name }),
        };
        if let Err(e) = region.write(0, msg) {
            self.tx_direct_free.push(region);
            return Err(DeviceError::Io { device: name, detail: e.to_string() });
        }
        self.send_direct(tid, region, msg.len(), false)
    }

    /// Sends the RNDIS message in the first `len` bytes of `region` GPA-direct; the region goes back to its pool
    /// (large-send when `gso`) at the completion, or now on failure.
    fn send_direct(&mut self, tid: u64, region: Region, len: usize, gso: bool) -> Result<(), DeviceError> {
        let pages = len.div_ceil(PAGE_SIZE);
        let range = GpaRange { len: len as u32, offset: 0, pfns: (0..pages).map(|i| region.pfn(i)).collect() };
        let carrier = NvspMessage::SendRndisPacket {
            channel_type: nvsp::CHANNEL_TYPE_DATA,
            section_index: nvsp::NO_SECTION,
            section_size: 0,
        };
        match self.ch.send_gpa_direct(tid, &[range], &carrier.emit()) {
            Ok(()) => {
                self.tx_inflight.insert(tid, if gso { TxSlot::Gso(region) } else { TxSlot::Direct(region) });
                Ok(())
            }
            Err(e) => {
                if gso {
                    self.tx_gso_free.push(region);
                } else {
                    self.tx_direct_free.push(region);
                }
                Err(self.vmbus_err(e))
            }
        }
    }

    /// A free large-send region (pages for the largest GSO frame and its RNDIS header), allocated while fewer than
    /// [`TX_GSO_SLOTS`] exist. Errors: [`DeviceError::Busy`], [`DeviceError::Io`] when allocation fails.
    fn take_gso_region(&mut self) -> Result<Region, DeviceError> {
        if let Some(r) = self.tx_gso_free.pop() {
            return Ok(r);
        }
        if self.tx_gso_allocated >= TX_GSO_SLOTS {
            return Err(DeviceError::Busy { device: self.info.name.clone() });
        }
        let pages = (MAX_GSO_FRAME + rndis::packet_header_len(1)).div_ceil(PAGE_SIZE);
        let r = self.ch.bus().dma().alloc(pages).map_err(|e| DeviceError::Io {
            device: self.info.name.clone(),
            detail: format!("allocating {pages} pages for large sends: {e}"),
        })?;
        self.tx_gso_allocated += 1;
        Ok(r)
    }
}
