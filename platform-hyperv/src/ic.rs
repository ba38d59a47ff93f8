//! The Hyper-V integration services (ICs) Linux implements in `hv_utils`: heartbeat, shutdown, time
//! synchronisation and key-value pair exchange (KVP), each on its own VMBus channel. Every message is a
//! `vmbuspipe_hdr` (8 bytes) and an `icmsg_hdr` (20 bytes) followed by the service's data; the guest answers each
//! host request in the same buffer with `ICMSGHDRFLAG_TRANSACTION | ICMSGHDRFLAG_RESPONSE`. The first message on
//! every channel negotiates the framework and service versions (`vmbus_prep_negotiate_resp`). Source: Linux
//! `include/linux/hyperv.h` (`icmsg_hdr`, `icmsg_negotiate`, `shutdown_msg_data`, `heartbeat_msg_data`,
//! `ictimesync_data`, `ictimesync_ref_data`), `include/uapi/linux/hyperv.h` (`hv_kvp_msg`, `HV_S_*`),
//! `drivers/hv/hv_util.c`, `drivers/hv/hv_kvp.c`, `drivers/hv/channel_mgmt.c`.

use crate::vmbus::channel::Channel;
use crate::vmbus::guid::{self, Guid};
use crate::vmbus::packet;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

/// `ICMSG_HDR`: `vmbuspipe_hdr` + `icmsg_hdr` (bytes).
pub const ICMSG_HDR: usize = 28;
/// Offset of `icmsg_hdr` in the buffer.
const IC_HDR: usize = 8;

/// `ICMSGTYPE_*`.
pub mod msgtype {
    /// Version negotiation.
    pub const NEGOTIATE: u16 = 0;
    /// Heartbeat.
    pub const HEARTBEAT: u16 = 1;
    /// KVP exchange.
    pub const KVPEXCHANGE: u16 = 2;
    /// Shutdown.
    pub const SHUTDOWN: u16 = 3;
    /// Time synchronisation.
    pub const TIMESYNC: u16 = 4;
}

/// `ICMSGHDRFLAG_TRANSACTION`.
pub const FLAG_TRANSACTION: u8 = 1;
/// `ICMSGHDRFLAG_REQUEST`.
pub const FLAG_REQUEST: u8 = 2;
/// `ICMSGHDRFLAG_RESPONSE`.
pub const FLAG_RESPONSE: u8 = 4;

/// `HV_S_OK`.
pub const HV_S_OK: u32 = 0;
/// `HV_E_FAIL`.
pub const HV_E_FAIL: u32 = 0x8000_4005;
/// `HV_S_CONT`: KVP enumeration has no entry at this index (ends the host's iteration).
pub const HV_S_CONT: u32 = 0x8007_0103;

/// 100 ns intervals between 1601-01-01 and 1970-01-01 (`WLTIMEDELTA`).
pub const WLTIMEDELTA: u64 = 116_444_736_000_000_000;

/// An IC version (`struct ic_version`), `major << 16 | minor` as in `hv_util.c`.
pub type IcVersion = u32;

/// Framework versions offered: 3.0 (`UTIL_FW_VERSION`) and 1.0 (`UTIL_WS2K8_FW_VERSION`).
pub const FW_VERSIONS: [IcVersion; 2] = [3 << 16, 1 << 16];
/// Heartbeat versions: 3.0, 1.0.
pub const HEARTBEAT_VERSIONS: [IcVersion; 2] = [3 << 16, 1 << 16];
/// Shutdown versions: 3.2, 3.1, 3.0, 1.0.
pub const SHUTDOWN_VERSIONS: [IcVersion; 4] = [3 << 16 | 2, 3 << 16 | 1, 3 << 16, 1 << 16];
/// Time sync versions: 4.0, 3.0, 1.0.
pub const TIMESYNC_VERSIONS: [IcVersion; 3] = [4 << 16, 3 << 16, 1 << 16];
/// KVP versions: 4.0 (Windows 8), 3.0 (Windows 7), 1.0 (Server 2008).
pub const KVP_VERSIONS: [IcVersion; 3] = [4 << 16, 3 << 16, 1 << 16];
/// Most versions a negotiate message may list (`IC_VERSION_NEGOTIATION_MAX_VER_COUNT`).
pub const MAX_VERSION_COUNT: usize = 100;

/// Which service a channel carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// Heartbeat.
    Heartbeat,
    /// Shutdown.
    Shutdown,
    /// Time synchronisation.
    Timesync,
    /// Key-value pairs.
    Kvp,
}

impl Service {
    /// The service of a device class GUID.
    pub fn from_class(g: &Guid) -> Option<Self> {
        Some(match *g {
            guid::HEARTBEAT => Self::Heartbeat,
            guid::SHUTDOWN => Self::Shutdown,
            guid::TIMESYNC => Self::Timesync,
            guid::KVP => Self::Kvp,
            _ => return None,
        })
    }

    /// Versions this guest speaks, newest first.
    pub fn versions(self) -> &'static [IcVersion] {
        match self {
            Self::Heartbeat => &HEARTBEAT_VERSIONS,
            Self::Shutdown => &SHUTDOWN_VERSIONS,
            Self::Timesync => &TIMESYNC_VERSIONS,
            Self::Kvp => &KVP_VERSIONS,
        }
    }

    /// Name for logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Heartbeat => "heartbeat",
            Self::Shutdown => "shutdown",
            Self::Timesync => "timesync",
            Self::Kvp => "KVP",
        }
    }
}

/// Why an IC message could not be handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IcError {
    /// Shorter than its layout.
    Truncated { what: &'static str, len: usize, need: usize },
    /// The negotiate message lists more versions than allowed or than fit.
    BadVersionCount { framework: usize, service: usize },
}

impl fmt::Display for IcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated { what, len, need } => write!(f, "IC {what}: {len} bytes, needs {need}"),
            Self::BadVersionCount { framework, service } => {
                write!(f, "IC negotiate lists {framework} framework and {service} service versions")
            }
        }
    }
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(x)
}

/// The `icmsg_hdr` fields a service looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcHeader {
    /// `icmsgtype`.
    pub msgtype: u16,
    /// `icflags`.
    pub flags: u8,
    /// `status`.
    pub status: u32,
}

/// Reads the IC header of a message. Errors: shorter than [`ICMSG_HDR`].
pub fn header(b: &[u8]) -> Result<IcHeader, IcError> {
    if b.len() < ICMSG_HDR {
        return Err(IcError::Truncated { what: "header", len: b.len(), need: ICMSG_HDR });
    }
    Ok(IcHeader { msgtype: u16_at(b, IC_HDR + 4), flags: b[IC_HDR + 17], status: u32_at(b, IC_HDR + 12) })
}

/// Turns a request into its response in place: status and `icflags = TRANSACTION | RESPONSE`.
pub fn make_response(b: &mut [u8], status: u32) {
    b[IC_HDR + 12..IC_HDR + 16].copy_from_slice(&status.to_le_bytes());
    b[IC_HDR + 17] = FLAG_TRANSACTION | FLAG_RESPONSE;
}

/// Answers a negotiate message in place (`vmbus_prep_negotiate_resp`): picks the first framework version of
/// [`FW_VERSIONS`] and the first of `service` that the host lists; writes them as the only versions (counts 1/1),
/// or counts 0/0 when there is no common version. Returns the chosen `(framework, service)` versions.
/// Errors: [`IcError`] for a truncated message or version counts over 100 or past the buffer.
pub fn negotiate(b: &mut [u8], service: &[IcVersion]) -> Result<Option<(IcVersion, IcVersion)>, IcError> {
    let base = ICMSG_HDR;
    if b.len() < base + 8 {
        return Err(IcError::Truncated { what: "negotiate", len: b.len(), need: base + 8 });
    }
    let nf = u16_at(b, base) as usize;
    let ns = u16_at(b, base + 2) as usize;
    if nf > MAX_VERSION_COUNT || ns > MAX_VERSION_COUNT || b.len() < base + 8 + (nf + ns) * 4 {
        return Err(IcError::BadVersionCount { framework: nf, service: ns });
    }
    let ver = |i: usize| (u32::from(u16_at(b, base + 8 + i * 4)) << 16) | u32::from(u16_at(b, base + 10 + i * 4));
    let fw = FW_VERSIONS.iter().copied().find(|v| (0..nf).any(|i| ver(i) == *v));
    let srv = service.iter().copied().find(|v| (nf..nf + ns).any(|i| ver(i) == *v));
    let chosen = fw.zip(srv);
    let (cf, cs) = match chosen {
        Some(_) => (1u16, 1u16),
        None => (0, 0),
    };
    b[base..base + 2].copy_from_slice(&cf.to_le_bytes());
    b[base + 2..base + 4].copy_from_slice(&cs.to_le_bytes());
    if let Some((f, s)) = chosen {
        // icversion_data[0] = framework, [1] = service; the header's versions follow the choice.
        b[base + 8..base + 10].copy_from_slice(&((f >> 16) as u16).to_le_bytes());
        b[base + 10..base + 12].copy_from_slice(&(f as u16).to_le_bytes());
        if b.len() >= base + 16 {
            b[base + 12..base + 14].copy_from_slice(&((s >> 16) as u16).to_le_bytes());
            b[base + 14..base + 16].copy_from_slice(&(s as u16).to_le_bytes());
        }
        b[IC_HDR..IC_HDR + 2].copy_from_slice(&((f >> 16) as u16).to_le_bytes());
        b[IC_HDR + 2..IC_HDR + 4].copy_from_slice(&(f as u16).to_le_bytes());
        b[IC_HDR + 6..IC_HDR + 8].copy_from_slice(&((s >> 16) as u16).to_le_bytes());
        b[IC_HDR + 8..IC_HDR + 10].copy_from_slice(&(s as u16).to_le_bytes());
    }
    Ok(chosen)
}

/// What the host asked the shutdown IC for (`shutdown_msg_data.flags`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownRequest {
    /// Flags 0 or 1 (1 = forced): power off.
    Poweroff,
    /// Flags 2 or 3: reboot.
    Reboot,
    /// Flags 4 or 5: hibernate (not supported here).
    Hibernate,
    /// Anything else.
    Invalid(u32),
}

/// Decodes a shutdown message's flags (at `ICMSG_HDR + 8`). Errors: truncated message.
pub fn shutdown_request(b: &[u8]) -> Result<ShutdownRequest, IcError> {
    if b.len() < ICMSG_HDR + 12 {
        return Err(IcError::Truncated { what: "shutdown", len: b.len(), need: ICMSG_HDR + 12 });
    }
    Ok(match u32_at(b, ICMSG_HDR + 8) {
        0 | 1 => ShutdownRequest::Poweroff,
        2 | 3 => ShutdownRequest::Reboot,
        4 | 5 => ShutdownRequest::Hibernate,
        other => ShutdownRequest::Invalid(other),
    })
}

/// Bumps a heartbeat's sequence number (`seq_num += 1`, u64 at `ICMSG_HDR`). Errors: truncated message.
pub fn heartbeat(b: &mut [u8]) -> Result<u64, IcError> {
    if b.len() < ICMSG_HDR + 8 {
        return Err(IcError::Truncated { what: "heartbeat", len: b.len(), need: ICMSG_HDR + 8 });
    }
    let seq = u64_at(b, ICMSG_HDR).wrapping_add(1);
    b[ICMSG_HDR..ICMSG_HDR + 8].copy_from_slice(&seq.to_le_bytes());
    Ok(seq)
}

/// A host time sample (`ictimesync_data` or, from version 4, `ictimesync_ref_data`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeSample {
    /// Host time, 100 ns since 1601-01-01.
    pub host_time: u64,
    /// The partition reference time (100 ns) the sample was taken at (version 4), else `None`.
    pub reference_time: Option<u64>,
    /// `ICTIMESYNCFLAG_*` (1 = SYNC: set the clock; 2 = SAMPLE).
    pub flags: u8,
}

impl TimeSample {
    /// `ICTIMESYNCFLAG_SYNC`.
    pub const SYNC: u8 = 1;

    /// Unix time (ns) of the sample.
    pub fn unix_ns(&self) -> u64 {
        self.host_time.saturating_sub(WLTIMEDELTA).saturating_mul(100)
    }
}

/// Decodes a time sample for service version `version`. Errors: truncated message.
pub fn time_sample(b: &[u8], version: IcVersion) -> Result<TimeSample, IcError> {
    if version >= 4 << 16 {
        if b.len() < ICMSG_HDR + 17 {
            return Err(IcError::Truncated { what: "timesync v4", len: b.len(), need: ICMSG_HDR + 17 });
        }
        Ok(TimeSample {
            host_time: u64_at(b, ICMSG_HDR),
            reference_time: Some(u64_at(b, ICMSG_HDR + 8)),
            flags: b[ICMSG_HDR + 16],
        })
    } else {
        if b.len() < ICMSG_HDR + 25 {
            return Err(IcError::Truncated { what: "timesync", len: b.len(), need: ICMSG_HDR + 25 });
        }
        Ok(TimeSample { host_time: u64_at(b, ICMSG_HDR), reference_time: None, flags: b[ICMSG_HDR + 24] })
    }
}

/// KVP operations (`enum hv_kvp_exchg_op`).
pub mod kvp_op {
    /// KVP_OP_GET.
    pub const GET: u8 = 0;
    /// KVP_OP_SET.
    pub const SET: u8 = 1;
    /// KVP_OP_DELETE.
    pub const DELETE: u8 = 2;
    /// KVP_OP_ENUMERATE.
    pub const ENUMERATE: u8 = 3;
    /// KVP_OP_GET_IP_INFO.
    pub const GET_IP_INFO: u8 = 4;
}

/// KVP pool the host enumerates for guest intrinsic data (`KVP_POOL_AUTO`).
pub const KVP_POOL_AUTO: u8 = 2;
/// `REG_SZ` value type.
pub const REG_SZ: u32 = 1;
/// Key field size (bytes, `HV_KVP_EXCHANGE_MAX_KEY_SIZE`).
pub const KVP_KEY_SIZE: usize = 512;
/// Value field size (bytes, `HV_KVP_EXCHANGE_MAX_VALUE_SIZE`).
pub const KVP_VALUE_SIZE: usize = 2048;
/// Offset of `hv_kvp_msg`'s body (after `hv_kvp_hdr`).
const KVP_BODY: usize = ICMSG_HDR + 4;
/// `hv_kvp_msg_enumerate.data` offset.
const KVP_ENUM_DATA: usize = KVP_BODY + 4;
/// Size of `hv_kvp_exchg_msg_value` (bytes).
const KVP_VALUE_STRUCT: usize = 12 + KVP_KEY_SIZE + KVP_VALUE_SIZE;

/// Encodes `s` as NUL-terminated UTF-16LE into `dst` (truncating to fit); returns the bytes written.
pub fn utf16_into(s: &str, dst: &mut [u8]) -> usize {
    let mut n = 0;
    for u in s.encode_utf16().chain(core::iter::once(0)) {
        if n + 2 > dst.len() {
            break;
        }
        dst[n..n + 2].copy_from_slice(&u.to_le_bytes());
        n += 2;
    }
    n
}

/// Decodes NUL-terminated (or `len`-bounded) UTF-16LE.
pub fn utf16_from(src: &[u8]) -> String {
    let units: Vec<u16> =
        src.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).take_while(|&u| u != 0).collect();
    char::decode_utf16(units).map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER)).collect()
}

/// The guest's IPv4 configuration as KVP reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IpReport {
    /// Address, e.g. "10.0.0.2".
    pub address: String,
    /// Subnet mask, e.g. "255.255.255.0".
    pub netmask: String,
    /// Gateway, "" when none.
    pub gateway: String,
    /// DNS servers, comma separated.
    pub dns: String,
    /// Whether DHCP configured it.
    pub dhcp: bool,
}

/// What the ICs need from the rest of the system.
#[derive(Clone)]
pub struct Context {
    /// The application's name (KVP `FullyQualifiedDomainName` and `OSName` detail).
    pub app_name: String,
    /// Zirvium's version (KVP `OSVersion`, `IntegrationServicesVersion`).
    pub os_version: String,
    /// The current IPv4 configuration, when the network is up.
    pub ip: Arc<dyn Fn() -> Option<IpReport> + Send + Sync>,
    /// What to do on a host shutdown request (after the response went out).
    pub on_shutdown: Arc<dyn Fn(ShutdownRequest) + Send + Sync>,
    /// The partition reference time now (100 ns), for version 4 time samples.
    pub reference_time: Option<Arc<dyn Fn() -> u64 + Send + Sync>>,
    /// What to do with a host time sample: `(unix_ns, sync)`.
    pub on_time: Arc<dyn Fn(u64, bool) + Send + Sync>,
}

/// The KVP auto-pool entries in the index order Microsoft defines (`include/uapi/linux/hyperv.h`).
pub fn kvp_auto_pool(ctx: &Context) -> [(&'static str, String); 10] {
    let ip = (ctx.ip)().map(|r| r.address).unwrap_or_default();
    let mut parts = ctx.os_version.split('.');
    let major = String::from(parts.next().unwrap_or("0"));
    let minor = String::from(parts.next().unwrap_or("0"));
    [
        ("FullyQualifiedDomainName", ctx.app_name.clone()),
        ("IntegrationServicesVersion", ctx.os_version.clone()),
        ("NetworkAddressIPv4", ip),
        ("NetworkAddressIPv6", String::new()),
        ("OSBuildNumber", ctx.os_version.clone()),
        ("OSName", alloc::format!("Zirvium ({})", ctx.app_name)),
        ("OSMajorVersion", major),
        ("OSMinorVersion", minor),
        ("OSVersion", ctx.os_version.clone()),
        ("ProcessorArchitecture", String::from("x86_64")),
    ]
}

/// State of one KVP channel: the pools the host set.
#[derive(Default)]
pub struct KvpStore {
    pools: BTreeMap<(u8, String), String>,
}

/// Handles one KVP request in place (`hv_kvp.c` with the daemon's answers built in). Returns the status for the
/// IC header. Errors: truncated message.
pub fn kvp(b: &mut [u8], ctx: &Context, store: &mut KvpStore) -> Result<u32, IcError> {
    if b.len() < KVP_BODY + 4 {
        return Err(IcError::Truncated { what: "KVP", len: b.len(), need: KVP_BODY + 4 });
    }
    let op = b[ICMSG_HDR];
    let pool = b[ICMSG_HDR + 1];
    let value_at = |base: usize| (base, base + 4, base + 8, base + 12, base + 12 + KVP_KEY_SIZE);
    match op {
        kvp_op::ENUMERATE => {
            if b.len() < KVP_ENUM_DATA + KVP_VALUE_STRUCT {
                return Err(IcError::Truncated {
                    what: "KVP enumerate",
                    len: b.len(),
                    need: KVP_ENUM_DATA + KVP_VALUE_STRUCT,
                });
            }
            let index = u32_at(b, KVP_BODY) as usize;
            let entry = if pool == KVP_POOL_AUTO {
                kvp_auto_pool(ctx).get(index).cloned().map(|(k, v)| (String::from(k), v))
            } else {
                store.pools.iter().filter(|((p, _), _)| *p == pool).nth(index).map(|((_, k), v)| (k.clone(), v.clone()))
            };
            let Some((key, value)) = entry else { return Ok(HV_S_CONT) };
            let (ty, ks, vs, k, v) = value_at(KVP_ENUM_DATA);
            let kn = utf16_into(&key, &mut b[k..k + KVP_KEY_SIZE]);
            let vn = utf16_into(&value, &mut b[v..v + KVP_VALUE_SIZE]);
            b[ty..ty + 4].copy_from_slice(&REG_SZ.to_le_bytes());
            b[ks..ks + 4].copy_from_slice(&(kn as u32).to_le_bytes());
            b[vs..vs + 4].copy_from_slice(&(vn as u32).to_le_bytes());
            Ok(HV_S_OK)
        }
        kvp_op::SET | kvp_op::GET => {
            if b.len() < KVP_BODY + KVP_VALUE_STRUCT {
                return Err(IcError::Truncated {
                    what: "KVP get/set",
                    len: b.len(),
                    need: KVP_BODY + KVP_VALUE_STRUCT,
                });
            }
            let (ty, ks, vs, k, v) = value_at(KVP_BODY);
            let klen = (u32_at(b, ks) as usize).min(KVP_KEY_SIZE);
            let key = utf16_from(&b[k..k + klen]);
            if op == kvp_op::SET {
                let vlen = (u32_at(b, vs) as usize).min(KVP_VALUE_SIZE);
                let value = utf16_from(&b[v..v + vlen]);
                store.pools.insert((pool, key), value);
                return Ok(HV_S_OK);
            }
            let Some(value) = store.pools.get(&(pool, key)).cloned() else { return Ok(HV_E_FAIL) };
            let vn = utf16_into(&value, &mut b[v..v + KVP_VALUE_SIZE]);
            b[ty..ty + 4].copy_from_slice(&REG_SZ.to_le_bytes());
            b[vs..vs + 4].copy_from_slice(&(vn as u32).to_le_bytes());
            Ok(HV_S_OK)
        }
        kvp_op::DELETE => {
            if b.len() < KVP_BODY + 4 + KVP_KEY_SIZE {
                return Err(IcError::Truncated { what: "KVP delete", len: b.len(), need: KVP_BODY + 4 + KVP_KEY_SIZE });
            }
            let klen = (u32_at(b, KVP_BODY) as usize).min(KVP_KEY_SIZE);
            let key = utf16_from(&b[KVP_BODY + 4..KVP_BODY + 4 + klen]);
            Ok(if store.pools.remove(&(pool, key)).is_some() { HV_S_OK } else { HV_E_FAIL })
        }
        kvp_op::GET_IP_INFO => {
            // hv_kvp_ipaddr_value: adapter_id[128] u16, addr_family u8, dhcp_enabled u8, ip_addr[1024] u16,
            // sub_net[1024] u16, gate_way[512] u16, dns_addr[1024] u16.
            let base = KVP_BODY;
            let (fam, dhcp, ip, mask, gw, dns) =
                (base + 256, base + 257, base + 258, base + 2306, base + 4354, base + 5378);
            if b.len() < dns + 2048 {
                return Err(IcError::Truncated { what: "KVP IP info", len: b.len(), need: dns + 2048 });
            }
            let Some(r) = (ctx.ip)() else { return Ok(HV_E_FAIL) };
            b[fam] = 1; // ADDR_FAMILY_IPV4
            b[dhcp] = u8::from(r.dhcp);
            utf16_into(&r.address, &mut b[ip..ip + 2048]);
            utf16_into(&r.netmask, &mut b[mask..mask + 2048]);
            utf16_into(&r.gateway, &mut b[gw..gw + 1024]);
            utf16_into(&r.dns, &mut b[dns..dns + 2048]);
            Ok(HV_S_OK)
        }
        _ => Ok(HV_E_FAIL),
    }
}

/// Runs one IC channel until it fails: answers negotiate and service messages, and acts on shutdown and time
/// requests through `ctx`. Returns the error that ended it (rescind, protocol violation).
pub async fn run(service: Service, ch: Channel, ctx: Context) -> crate::vmbus::Error {
    let mut version: IcVersion = 0;
    let mut store = KvpStore::default();
    loop {
        let p = match ch.recv().await {
            Ok(p) => p,
            Err(e) => return e,
        };
        if p.desc.ty != packet::ty::DATA_INBAND {
            continue;
        }
        let tid = p.desc.trans_id;
        let mut b = p.payload().to_vec();
        let hdr = match header(&b) {
            Ok(h) => h,
            Err(e) => {
                log::warn!("{} IC: {e}", service.name());
                continue;
            }
        };
        let mut after: Option<ShutdownRequest> = None;
        let status = match hdr.msgtype {
            msgtype::NEGOTIATE => match negotiate(&mut b, service.versions()) {
                Ok(Some((fw, v))) => {
                    version = v;
                    log::info!(
                        "{} IC: framework {}.{}, service version {}.{}",
                        service.name(),
                        fw >> 16,
                        fw & 0xffff,
                        v >> 16,
                        v & 0xffff
                    );
                    HV_S_OK
                }
                Ok(None) => {
                    log::warn!("{} IC: no common version with the host", service.name());
                    HV_S_OK
                }
                Err(e) => {
                    log::warn!("{} IC: {e}", service.name());
                    HV_E_FAIL
                }
            },
            msgtype::HEARTBEAT if service == Service::Heartbeat => match heartbeat(&mut b) {
                Ok(_) => HV_S_OK,
                Err(e) => {
                    log::warn!("heartbeat IC: {e}");
                    continue;
                }
            },
            msgtype::SHUTDOWN if service == Service::Shutdown => match shutdown_request(&b) {
                Ok(r @ (ShutdownRequest::Poweroff | ShutdownRequest::Reboot)) => {
                    after = Some(r);
                    HV_S_OK
                }
                Ok(r) => {
                    log::warn!("shutdown IC: unsupported request {r:?}");
                    HV_E_FAIL
                }
                Err(e) => {
                    log::warn!("shutdown IC: {e}");
                    continue;
                }
            },
            msgtype::TIMESYNC if service == Service::Timesync => match time_sample(&b, version) {
                Ok(s) => {
                    let mut unix = s.unix_ns();
                    if let (Some(taken), Some(now)) = (s.reference_time, ctx.reference_time.as_ref()) {
                        // v4: correct for the time since the host took the sample.
                        unix = unix.saturating_add(now().saturating_sub(taken).saturating_mul(100));
                    }
                    (ctx.on_time)(unix, s.flags & TimeSample::SYNC != 0);
                    HV_S_OK
                }
                Err(e) => {
                    log::warn!("timesync IC: {e}");
                    continue;
                }
            },
            msgtype::KVPEXCHANGE if service == Service::Kvp => match kvp(&mut b, &ctx, &mut store) {
                Ok(s) => s,
                Err(e) => {
                    log::warn!("KVP IC: {e}");
                    HV_E_FAIL
                }
            },
            other => {
                log::warn!("{} IC: unexpected message type {other}", service.name());
                HV_E_FAIL
            }
        };
        make_response(&mut b, status);
        if let Err(e) = ch.send_inband_wait(tid, &b, false).await {
            return e;
        }
        if let Some(r) = after {
            log::info!("shutdown IC: the host requests {r:?}");
            (ctx.on_shutdown)(r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn msg(msgtype: u16, body_len: usize) -> Vec<u8> {
        let mut b = vec![0u8; ICMSG_HDR + body_len];
        b[IC_HDR + 4..IC_HDR + 6].copy_from_slice(&msgtype.to_le_bytes());
        b[IC_HDR + 17] = FLAG_TRANSACTION | FLAG_REQUEST;
        b
    }

    fn negotiate_msg(fw: &[(u16, u16)], srv: &[(u16, u16)]) -> Vec<u8> {
        let mut b = msg(msgtype::NEGOTIATE, 8 + 4 * (fw.len() + srv.len()));
        b[ICMSG_HDR..ICMSG_HDR + 2].copy_from_slice(&(fw.len() as u16).to_le_bytes());
        b[ICMSG_HDR + 2..ICMSG_HDR + 4].copy_from_slice(&(srv.len() as u16).to_le_bytes());
        for (i, (maj, min)) in fw.iter().chain(srv).enumerate() {
            let o = ICMSG_HDR + 8 + i * 4;
            b[o..o + 2].copy_from_slice(&maj.to_le_bytes());
            b[o + 2..o + 4].copy_from_slice(&min.to_le_bytes());
        }
        b
    }

    #[test]
    fn negotiation_picks_the_newest_common_versions() {
        let mut b = negotiate_msg(&[(1, 0), (3, 0)], &[(1, 0), (3, 0), (3, 2)]);
        let r = negotiate(&mut b, &SHUTDOWN_VERSIONS).unwrap();
        assert_eq!(r, Some((3 << 16, 3 << 16 | 2)));
        assert_eq!(u16_at(&b, ICMSG_HDR), 1);
        assert_eq!(u16_at(&b, ICMSG_HDR + 2), 1);
        assert_eq!((u16_at(&b, ICMSG_HDR + 8), u16_at(&b, ICMSG_HDR + 10)), (3, 0));
        assert_eq!((u16_at(&b, ICMSG_HDR + 12), u16_at(&b, ICMSG_HDR + 14)), (3, 2));
        let mut b = negotiate_msg(&[(3, 0)], &[(9, 9)]);
        assert_eq!(negotiate(&mut b, &HEARTBEAT_VERSIONS).unwrap(), None);
        assert_eq!(u16_at(&b, ICMSG_HDR), 0);
        let mut b = negotiate_msg(&[(3, 0)], &[(3, 0)]);
        b[ICMSG_HDR..ICMSG_HDR + 2].copy_from_slice(&500u16.to_le_bytes());
        assert!(matches!(negotiate(&mut b, &HEARTBEAT_VERSIONS), Err(IcError::BadVersionCount { framework: 500, .. })));
    }

    #[test]
    fn heartbeat_shutdown_and_response_flags() {
        let mut b = msg(msgtype::HEARTBEAT, 40);
        b[ICMSG_HDR..ICMSG_HDR + 8].copy_from_slice(&41u64.to_le_bytes());
        assert_eq!(heartbeat(&mut b).unwrap(), 42);
        make_response(&mut b, HV_S_OK);
        let h = header(&b).unwrap();
        assert_eq!(h.flags, FLAG_TRANSACTION | FLAG_RESPONSE);
        assert_eq!(h.msgtype, msgtype::HEARTBEAT);
        let mut s = msg(msgtype::SHUTDOWN, 12 + 2048);
        assert_eq!(shutdown_request(&s).unwrap(), ShutdownRequest::Poweroff);
        s[ICMSG_HDR + 8] = 2;
        assert_eq!(shutdown_request(&s).unwrap(), ShutdownRequest::Reboot);
        s[ICMSG_HDR + 8] = 9;
        assert_eq!(shutdown_request(&s).unwrap(), ShutdownRequest::Invalid(9));
        assert!(heartbeat(&mut [0u8; 20]).is_err());
    }

    #[test]
    fn time_samples() {
        let mut b = msg(msgtype::TIMESYNC, 32);
        // 2024-01-01T00:00:00Z = 1704067200 s after the Unix epoch.
        let host = WLTIMEDELTA + 1_704_067_200 * 10_000_000;
        b[ICMSG_HDR..ICMSG_HDR + 8].copy_from_slice(&host.to_le_bytes());
        b[ICMSG_HDR + 8..ICMSG_HDR + 16].copy_from_slice(&5000u64.to_le_bytes());
        b[ICMSG_HDR + 16] = TimeSample::SYNC;
        let s = time_sample(&b, 4 << 16).unwrap();
        assert_eq!(s.unix_ns(), 1_704_067_200_000_000_000);
        assert_eq!(s.reference_time, Some(5000));
        b[ICMSG_HDR + 24] = 2;
        let s = time_sample(&b, 3 << 16).unwrap();
        assert_eq!((s.reference_time, s.flags), (None, 2));
    }

    fn ctx() -> Context {
        Context {
            app_name: "httpd".into(),
            os_version: "0.1.0".into(),
            ip: Arc::new(|| {
                Some(IpReport {
                    address: "10.0.0.2".into(),
                    netmask: "255.255.255.0".into(),
                    gateway: "10.0.0.1".into(),
                    dns: String::new(),
                    dhcp: false,
                })
            }),
            on_shutdown: Arc::new(|_| {}),
            reference_time: None,
            on_time: Arc::new(|_, _| {}),
        }
    }

    #[test]
    fn kvp_enumerates_the_auto_pool() {
        let c = ctx();
        let mut store = KvpStore::default();
        let mut b = msg(msgtype::KVPEXCHANGE, 4 + 4 + KVP_VALUE_STRUCT);
        b[ICMSG_HDR] = kvp_op::ENUMERATE;
        b[ICMSG_HDR + 1] = KVP_POOL_AUTO;
        b[KVP_BODY..KVP_BODY + 4].copy_from_slice(&2u32.to_le_bytes());
        assert_eq!(kvp(&mut b, &c, &mut store).unwrap(), HV_S_OK);
        let key = utf16_from(&b[KVP_ENUM_DATA + 12..KVP_ENUM_DATA + 12 + KVP_KEY_SIZE]);
        let val = utf16_from(&b[KVP_ENUM_DATA + 12 + KVP_KEY_SIZE..]);
        assert_eq!((key.as_str(), val.as_str()), ("NetworkAddressIPv4", "10.0.0.2"));
        assert_eq!(u32_at(&b, KVP_ENUM_DATA + 4), 2 * 19, "key_size in bytes with the NUL");
        b[KVP_BODY..KVP_BODY + 4].copy_from_slice(&10u32.to_le_bytes());
        assert_eq!(kvp(&mut b, &c, &mut store).unwrap(), HV_S_CONT, "past the last index");
        assert!(kvp(&mut [0u8; 40], &c, &mut store).is_err());
    }

    #[test]
    fn kvp_set_get_delete_and_ip_info() {
        let c = ctx();
        let mut store = KvpStore::default();
        let mut b = msg(msgtype::KVPEXCHANGE, 4 + KVP_VALUE_STRUCT);
        b[ICMSG_HDR] = kvp_op::SET;
        let kn = utf16_into("VirtualMachineName", &mut b[KVP_BODY + 12..KVP_BODY + 12 + KVP_KEY_SIZE]);
        let vn = utf16_into("vm1", &mut b[KVP_BODY + 12 + KVP_KEY_SIZE..]);
        b[KVP_BODY + 4..KVP_BODY + 8].copy_from_slice(&(kn as u32).to_le_bytes());
        b[KVP_BODY + 8..KVP_BODY + 12].copy_from_slice(&(vn as u32).to_le_bytes());
        assert_eq!(kvp(&mut b, &c, &mut store).unwrap(), HV_S_OK);
        b[ICMSG_HDR] = kvp_op::GET;
        b[KVP_BODY + 12 + KVP_KEY_SIZE..].fill(0);
        assert_eq!(kvp(&mut b, &c, &mut store).unwrap(), HV_S_OK);
        assert_eq!(utf16_from(&b[KVP_BODY + 12 + KVP_KEY_SIZE..]), "vm1");
        let mut ip = msg(msgtype::KVPEXCHANGE, 4 + 7426);
        ip[ICMSG_HDR] = kvp_op::GET_IP_INFO;
        assert_eq!(kvp(&mut ip, &c, &mut store).unwrap(), HV_S_OK);
        assert_eq!(ip[KVP_BODY + 256], 1);
        assert_eq!(utf16_from(&ip[KVP_BODY + 258..]), "10.0.0.2");
        assert_eq!(utf16_from(&ip[KVP_BODY + 2306..]), "255.255.255.0");
    }
}
