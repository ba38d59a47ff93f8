//! The Hyper-V integration services (ICs) Linux implements in `hv_utils`: heartbeat, shutdown, time
//! synchronisation and key-value pair exchange (KVP), each on its own VMBus channel. Every message is a
//! `vmbuspipe_hdr` (8 bytes) and an `icmsg_hdr` (20 bytes) followed by the service's data; the guest answers each
//! host request in the same buffer with `ICMSGHDRFLAG_TRANSACTION | ICMSGHDRFLAG_RESPONSE`. The first message on
//! every channel negotiates the framework and service versions (`vmbus_prep_negotiate_resp`). Source: Linux
//! `include/linux/hyperv.h` (`icmsg_hdr`, `icmsg_negotiate`, `shutdown_msg_data`, `heartbeat_msg_data`,
//! `ictimesync_data`, `ictimesync_ref_data`), `include/uapi/linux/hyperv.h` (`hv_kvp_msg`, `HV_S_*`),
//! `drivers/hv/hv_util.c`, `drivers/hv/hv_kvp.c`, `drivers/hv/channel_mgmt.c`.
//!
//! [`IcMessage`] is the checked view of both headers (field ranges for every message in a private `mod field`);
//! each service's handler reads and answers its request in place through it.
#![forbid(unsafe_code)]

use crate::vmbus::channel::Channel;
use crate::vmbus::guid::{self, Guid};
use crate::vmbus::packet;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use libos::wire::{read_u16, read_u32, read_u64, read_u8, write_u16, write_u32, write_u64, write_u8};

/// `ICMSG_HDR`: `vmbuspipe_hdr` + `icmsg_hdr` (bytes).
pub const ICMSG_HDR: usize = field::DATA;

mod field {
    use libos::wire::Field;

    // `vmbuspipe_hdr` (flags, msgsize) occupies bytes 0..8; `icmsg_hdr` follows.
    pub const ICVERFRAME: Field = 8..12;
    pub const ICMSGTYPE: Field = 12..14;
    pub const ICVERMSG: Field = 14..18;
    pub const STATUS: Field = 20..24;
    pub const ICFLAGS: Field = 25..26;
    /// The service's data after both headers.
    pub const DATA: usize = 28;

    /// `struct ic_version` (`major`, `minor`), relative to the version.
    pub mod version {
        use super::Field;
        pub const MAJOR: Field = 0..2;
        pub const MINOR: Field = 2..4;
        pub const LEN: usize = MINOR.end;
    }

    /// `icmsg_negotiate`.
    pub mod negotiate {
        use super::Field;
        pub const ICFRAME_VERCNT: Field = 28..30;
        pub const ICMSG_VERCNT: Field = 30..32;
        /// `icversion_data[]`, after a reserved u32.
        pub const ICVERSION_DATA: usize = 36;
    }

    /// `heartbeat_msg_data`.
    pub mod heartbeat {
        use super::Field;
        pub const SEQ_NUM: Field = 28..36;
    }

    /// `shutdown_msg_data` (`reason_code` and `timeout_seconds` come first).
    pub mod shutdown {
        use super::Field;
        pub const FLAGS: Field = 36..40;
    }

    /// `ictimesync_data` (versions before 4).
    pub mod timesync {
        use super::Field;
        pub const PARENTTIME: Field = 28..36;
        pub const FLAGS: Field = 52..53;
    }

    /// `ictimesync_ref_data` (version 4).
    pub mod timesync_ref {
        use super::Field;
        pub const PARENTTIME: Field = 28..36;
        pub const VMREFERENCETIME: Field = 36..44;
        pub const FLAGS: Field = 44..45;
    }

    /// `hv_kvp_msg`: `hv_kvp_hdr` (operation, pool, padding), then the body union.
    pub mod kvp {
        use super::Field;
        pub const OPERATION: Field = 28..29;
        pub const POOL: Field = 29..30;
        pub const BODY: usize = 32;
        /// `hv_kvp_msg_enumerate`: `index`, then an `hv_kvp_exchg_msg_value`.
        pub const ENUM_INDEX: Field = 32..36;
        pub const ENUM_DATA: usize = 36;
        /// `hv_kvp_msg_delete`: `key_size`, `key[512]`.
        pub const DELETE_KEY_SIZE: Field = 32..36;
        pub const DELETE_KEY: Field = 36..548;
    }

    /// `hv_kvp_exchg_msg_value`, relative to the structure.
    pub mod kvp_value {
        use super::Field;
        pub const VALUE_TYPE: Field = 0..4;
        pub const KEY_SIZE: Field = 4..8;
        pub const VALUE_SIZE: Field = 8..12;
        pub const KEY: Field = 12..524;
        pub const VALUE: Field = 524..2572;
        pub const LEN: usize = VALUE.end;
    }

    /// `hv_kvp_ipaddr_value` (UTF-16 strings), relative to the KVP body.
    pub mod kvp_ip {
        use super::Field;
        pub const ADDR_FAMILY: Field = 256..257;
        pub const DHCP_ENABLED: Field = 257..258;
        pub const IP_ADDR: Field = 258..2306;
        pub const SUB_NET: Field = 2306..4354;
        pub const GATE_WAY: Field = 4354..5378;
        pub const DNS_ADDR: Field = 5378..7426;
    }
}

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
    Truncated {
        /// The message, e.g. "negotiate" or "KVP enumerate".
        what: &'static str,
        /// Bytes available.
        len: usize,
        /// Bytes its layout needs.
        need: usize,
    },
    /// The negotiate message lists more versions than allowed or than fit.
    BadVersionCount {
        /// `icframe_vercnt`: framework versions listed.
        framework: usize,
        /// `icmsg_vercnt`: service versions listed.
        service: usize,
    },
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

/// A checked view of an IC message: `vmbuspipe_hdr` and `icmsg_hdr` (28 bytes), then the service's data.
/// [`IcMessage::new_checked`] proves both headers are present; the service handlers check their own layouts.
#[derive(Debug)]
pub struct IcMessage<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> IcMessage<T> {
    /// Wraps `buffer` without checks (accessors may panic on a short buffer).
    pub fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` after checking it holds both headers. Errors: [`IcError::Truncated`].
    pub fn new_checked(buffer: T) -> Result<Self, IcError> {
        let m = Self::new_unchecked(buffer);
        m.check(ICMSG_HDR, "header")?;
        Ok(m)
    }

    /// Checks that the message holds `need` bytes (a service's layout). Errors: [`IcError::Truncated`] naming
    /// `what`.
    pub fn check(&self, need: usize, what: &'static str) -> Result<(), IcError> {
        let len = self.buffer.as_ref().len();
        if len < need {
            return Err(IcError::Truncated { what, len, need });
        }
        Ok(())
    }

    fn bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// `icmsgtype` ([`msgtype`]).
    pub fn msgtype(&self) -> u16 {
        read_u16(self.bytes(), field::ICMSGTYPE)
    }

    /// `icflags`.
    pub fn flags(&self) -> u8 {
        read_u8(self.bytes(), field::ICFLAGS)
    }

    /// `status`.
    pub fn status(&self) -> u32 {
        read_u32(self.bytes(), field::STATUS)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> IcMessage<T> {
    fn bytes_mut(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }

    /// Sets `status`.
    pub fn set_status(&mut self, status: u32) {
        write_u32(self.bytes_mut(), field::STATUS, status)
    }

    /// Sets `icflags`.
    pub fn set_flags(&mut self, flags: u8) {
        write_u8(self.bytes_mut(), field::ICFLAGS, flags)
    }

    /// Sets `icverframe` and `icvermsg` (the versions the answer is in).
    pub fn set_versions(&mut self, framework: IcVersion, service: IcVersion) {
        put_version(&mut self.bytes_mut()[field::ICVERFRAME], framework);
        put_version(&mut self.bytes_mut()[field::ICVERMSG], service);
    }
}

/// Reads a `struct ic_version` as `major << 16 | minor`.
fn get_version(b: &[u8]) -> IcVersion {
    (u32::from(read_u16(b, field::version::MAJOR)) << 16) | u32::from(read_u16(b, field::version::MINOR))
}

/// Writes `v` (`major << 16 | minor`) as a `struct ic_version`.
fn put_version(b: &mut [u8], v: IcVersion) {
    write_u16(b, field::version::MAJOR, (v >> 16) as u16);
    write_u16(b, field::version::MINOR, v as u16);
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
    let m = IcMessage::new_checked(b)?;
    Ok(IcHeader { msgtype: m.msgtype(), flags: m.flags(), status: m.status() })
}

/// Turns a request into its response in place: status and `icflags = TRANSACTION | RESPONSE`. Errors: shorter
/// than [`ICMSG_HDR`].
pub fn make_response(b: &mut [u8], status: u32) -> Result<(), IcError> {
    let mut m = IcMessage::new_checked(b)?;
    m.set_status(status);
    m.set_flags(FLAG_TRANSACTION | FLAG_RESPONSE);
    Ok(())
}

/// Answers a negotiate message in place (`vmbus_prep_negotiate_resp`): picks the first framework version of
/// [`FW_VERSIONS`] and the first of `service` that the host lists; writes them as the only versions (counts 1/1),
/// or counts 0/0 when there is no common version. Returns the chosen `(framework, service)` versions.
/// Errors: [`IcError`] for a truncated message or version counts over 100 or past the buffer.
pub fn negotiate(b: &mut [u8], service: &[IcVersion]) -> Result<Option<(IcVersion, IcVersion)>, IcError> {
    use field::negotiate::*;
    let mut m = IcMessage::new_unchecked(&mut *b);
    m.check(ICVERSION_DATA, "negotiate")?;
    let nf = read_u16(m.bytes(), ICFRAME_VERCNT) as usize;
    let ns = read_u16(m.bytes(), ICMSG_VERCNT) as usize;
    let ver_at = |i: usize| ICVERSION_DATA + i * field::version::LEN;
    if nf > MAX_VERSION_COUNT || ns > MAX_VERSION_COUNT || m.bytes().len() < ver_at(nf + ns) {
        return Err(IcError::BadVersionCount { framework: nf, service: ns });
    }
    let ver = |i: usize| get_version(&m.bytes()[ver_at(i)..]);
    let fw = FW_VERSIONS.iter().copied().find(|v| (0..nf).any(|i| ver(i) == *v));
    let srv = service.iter().copied().find(|v| (nf..nf + ns).any(|i| ver(i) == *v));
    let chosen = fw.zip(srv);
    let count = u16::from(chosen.is_some());
    write_u16(m.bytes_mut(), ICFRAME_VERCNT, count);
    write_u16(m.bytes_mut(), ICMSG_VERCNT, count);
    if let Some((f, s)) = chosen {
        // icversion_data[0] = framework, [1] = service; the header's versions follow the choice.
        put_version(&mut m.bytes_mut()[ver_at(0)..], f);
        if m.bytes().len() >= ver_at(2) {
            put_version(&mut m.bytes_mut()[ver_at(1)..], s);
        }
        m.set_versions(f, s);
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

/// Decodes a shutdown message's flags (`shutdown_msg_data.flags`). Errors: truncated message.
pub fn shutdown_request(b: &[u8]) -> Result<ShutdownRequest, IcError> {
    let m = IcMessage::new_unchecked(b);
    m.check(field::shutdown::FLAGS.end, "shutdown")?;
    Ok(match read_u32(b, field::shutdown::FLAGS) {
        0 | 1 => ShutdownRequest::Poweroff,
        2 | 3 => ShutdownRequest::Reboot,
        4 | 5 => ShutdownRequest::Hibernate,
        other => ShutdownRequest::Invalid(other),
    })
}

/// Bumps a heartbeat's sequence number (`heartbeat_msg_data.seq_num += 1`). Errors: truncated message.
pub fn heartbeat(b: &mut [u8]) -> Result<u64, IcError> {
    IcMessage::new_unchecked(&*b).check(field::heartbeat::SEQ_NUM.end, "heartbeat")?;
    let seq = read_u64(b, field::heartbeat::SEQ_NUM).wrapping_add(1);
    write_u64(b, field::heartbeat::SEQ_NUM, seq);
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
    let m = IcMessage::new_unchecked(b);
    if version >= 4 << 16 {
        use field::timesync_ref::*;
        m.check(FLAGS.end, "timesync v4")?;
        Ok(TimeSample {
            host_time: read_u64(b, PARENTTIME),
            reference_time: Some(read_u64(b, VMREFERENCETIME)),
            flags: read_u8(b, FLAGS),
        })
    } else {
        use field::timesync::*;
        m.check(FLAGS.end, "timesync")?;
        Ok(TimeSample { host_time: read_u64(b, PARENTTIME), reference_time: None, flags: read_u8(b, FLAGS) })
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
const KVP_BODY: usize = field::kvp::BODY;
/// `hv_kvp_msg_enumerate.data` offset.
const KVP_ENUM_DATA: usize = field::kvp::ENUM_DATA;
/// Size of `hv_kvp_exchg_msg_value` (bytes).
const KVP_VALUE_STRUCT: usize = field::kvp_value::LEN;

/// Encodes `s` as NUL-terminated UTF-16LE into `dst` (truncating to fit); returns the bytes written.
pub fn utf16_into(s: &str, dst: &mut [u8]) -> usize {
    let mut n = 0;
    for u in s.encode_utf16().chain(core::iter::once(0)) {
        if n + 2 > dst.len() {
            break;
        }
        write_u16(dst, n..n + 2, u);
        n += 2;
    }
    n
}

/// Decodes NUL-terminated (or `len`-bounded) UTF-16LE.
pub fn utf16_from(src: &[u8]) -> String {
    let units: Vec<u16> = src.chunks_exact(2).map(|c| read_u16(c, 0..2)).take_while(|&u| u != 0).collect();
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

/// Fills an `hv_kvp_exchg_msg_value` answer: `REG_SZ`, the key (when given) and the value as UTF-16 with their
/// sizes in bytes (NUL included).
fn put_kvp_value(v: &mut [u8], key: Option<&str>, value: &str) {
    use field::kvp_value::*;
    if let Some(key) = key {
        let kn = utf16_into(key, &mut v[KEY]);
        write_u32(v, KEY_SIZE, kn as u32);
    }
    let vn = utf16_into(value, &mut v[VALUE]);
    write_u32(v, VALUE_TYPE, REG_SZ);
    write_u32(v, VALUE_SIZE, vn as u32);
}

/// Handles one KVP request in place (`hv_kvp.c` with the daemon's answers built in). Returns the status for the
/// IC header. Errors: truncated message.
pub fn kvp(b: &mut [u8], ctx: &Context, store: &mut KvpStore) -> Result<u32, IcError> {
    let m = IcMessage::new_unchecked(&*b);
    m.check(KVP_BODY + 4, "KVP")?;
    let op = read_u8(b, field::kvp::OPERATION);
    let pool = read_u8(b, field::kvp::POOL);
    match op {
        kvp_op::ENUMERATE => {
            m.check(KVP_ENUM_DATA + KVP_VALUE_STRUCT, "KVP enumerate")?;
            let index = read_u32(b, field::kvp::ENUM_INDEX) as usize;
            let entry = if pool == KVP_POOL_AUTO {
                kvp_auto_pool(ctx).get(index).cloned().map(|(k, v)| (String::from(k), v))
            } else {
                store.pools.iter().filter(|((p, _), _)| *p == pool).nth(index).map(|((_, k), v)| (k.clone(), v.clone()))
            };
            let Some((key, value)) = entry else { return Ok(HV_S_CONT) };
            put_kvp_value(&mut b[KVP_ENUM_DATA..KVP_ENUM_DATA + KVP_VALUE_STRUCT], Some(&key), &value);
            Ok(HV_S_OK)
        }
        kvp_op::SET | kvp_op::GET => {
            m.check(KVP_BODY + KVP_VALUE_STRUCT, "KVP get/set")?;
            use field::kvp_value::*;
            let v = &mut b[KVP_BODY..KVP_BODY + KVP_VALUE_STRUCT];
            let klen = (read_u32(v, KEY_SIZE) as usize).min(KVP_KEY_SIZE);
            let key = utf16_from(&v[KEY][..klen]);
            if op == kvp_op::SET {
                let vlen = (read_u32(v, VALUE_SIZE) as usize).min(KVP_VALUE_SIZE);
                let value = utf16_from(&v[VALUE][..vlen]);
                store.pools.insert((pool, key), value);
                return Ok(HV_S_OK);
            }
            let Some(value) = store.pools.get(&(pool, key)).cloned() else { return Ok(HV_E_FAIL) };
            put_kvp_value(v, None, &value);
            Ok(HV_S_OK)
        }
        kvp_op::DELETE => {
            use field::kvp::*;
            m.check(DELETE_KEY.end, "KVP delete")?;
            let klen = (read_u32(b, DELETE_KEY_SIZE) as usize).min(KVP_KEY_SIZE);
            let key = utf16_from(&b[DELETE_KEY][..klen]);
            Ok(if store.pools.remove(&(pool, key)).is_some() { HV_S_OK } else { HV_E_FAIL })
        }
        kvp_op::GET_IP_INFO => {
            use field::kvp_ip::*;
            m.check(KVP_BODY + DNS_ADDR.end, "KVP IP info")?;
            let Some(r) = (ctx.ip)() else { return Ok(HV_E_FAIL) };
            let v = &mut b[KVP_BODY..];
            write_u8(v, ADDR_FAMILY, 1); // ADDR_FAMILY_IPV4
            write_u8(v, DHCP_ENABLED, u8::from(r.dhcp));
            utf16_into(&r.address, &mut v[IP_ADDR]);
            utf16_into(&r.netmask, &mut v[SUB_NET]);
            utf16_into(&r.gateway, &mut v[GATE_WAY]);
            utf16_into(&r.dns, &mut v[DNS_ADDR]);
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
        if let Err(e) = make_response(&mut b, status) {
            log::warn!("{} IC: {e}", service.name());
            continue;
        }
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
        write_u16(&mut b, field::ICMSGTYPE, msgtype);
        write_u8(&mut b, field::ICFLAGS, FLAG_TRANSACTION | FLAG_REQUEST);
        b
    }

    fn negotiate_msg(fw: &[(u16, u16)], srv: &[(u16, u16)]) -> Vec<u8> {
        use field::negotiate::*;
        let mut b = msg(msgtype::NEGOTIATE, 8 + 4 * (fw.len() + srv.len()));
        write_u16(&mut b, ICFRAME_VERCNT, fw.len() as u16);
        write_u16(&mut b, ICMSG_VERCNT, srv.len() as u16);
        for (i, (maj, min)) in fw.iter().chain(srv).enumerate() {
            put_version(&mut b[ICVERSION_DATA + i * 4..], u32::from(*maj) << 16 | u32::from(*min));
        }
        b
    }

    fn version_at(b: &[u8], i: usize) -> (u16, u16) {
        let v = get_version(&b[field::negotiate::ICVERSION_DATA + i * 4..]);
        ((v >> 16) as u16, v as u16)
    }

    #[test]
    fn negotiation_picks_the_newest_common_versions() {
        let mut b = negotiate_msg(&[(1, 0), (3, 0)], &[(1, 0), (3, 0), (3, 2)]);
        let r = negotiate(&mut b, &SHUTDOWN_VERSIONS).unwrap();
        assert_eq!(r, Some((3 << 16, 3 << 16 | 2)));
        assert_eq!(read_u16(&b, field::negotiate::ICFRAME_VERCNT), 1);
        assert_eq!(read_u16(&b, field::negotiate::ICMSG_VERCNT), 1);
        assert_eq!(version_at(&b, 0), (3, 0));
        assert_eq!(version_at(&b, 1), (3, 2));
        assert_eq!(get_version(&b[field::ICVERFRAME]), 3 << 16, "icverframe follows the choice");
        assert_eq!(get_version(&b[field::ICVERMSG]), 3 << 16 | 2, "icvermsg follows the choice");
        let mut b = negotiate_msg(&[(3, 0)], &[(9, 9)]);
        assert_eq!(negotiate(&mut b, &HEARTBEAT_VERSIONS).unwrap(), None);
        assert_eq!(read_u16(&b, field::negotiate::ICFRAME_VERCNT), 0);
        let mut b = negotiate_msg(&[(3, 0)], &[(3, 0)]);
        write_u16(&mut b, field::negotiate::ICFRAME_VERCNT, 500);
        assert!(matches!(negotiate(&mut b, &HEARTBEAT_VERSIONS), Err(IcError::BadVersionCount { framework: 500, .. })));
    }

    #[test]
    fn heartbeat_shutdown_and_response_flags() {
        let mut b = msg(msgtype::HEARTBEAT, 40);
        b[ICMSG_HDR..ICMSG_HDR + 8].copy_from_slice(&41u64.to_le_bytes());
        assert_eq!(heartbeat(&mut b).unwrap(), 42);
        make_response(&mut b, HV_S_OK).unwrap();
        assert!(make_response(&mut [0u8; 27], HV_S_OK).is_err(), "short of the headers");
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
    fn short_messages_are_rejected() {
        let e = |what, len, need| IcError::Truncated { what, len, need };
        assert_eq!(header(&[0u8; 27]).unwrap_err(), e("header", 27, 28));
        assert_eq!(negotiate(&mut [0u8; 35], &HEARTBEAT_VERSIONS).unwrap_err(), e("negotiate", 35, 36));
        assert_eq!(shutdown_request(&[0u8; 39]).unwrap_err(), e("shutdown", 39, 40));
        assert_eq!(time_sample(&[0u8; 44], 4 << 16).unwrap_err(), e("timesync v4", 44, 45));
        assert_eq!(time_sample(&[0u8; 52], 3 << 16).unwrap_err(), e("timesync", 52, 53));
        let mut b = msg(msgtype::KVPEXCHANGE, 4 + 4 + 100);
        b[ICMSG_HDR] = kvp_op::ENUMERATE;
        let c = ctx();
        assert!(matches!(
            kvp(&mut b, &c, &mut KvpStore::default()),
            Err(IcError::Truncated { what: "KVP enumerate", .. })
        ));
        b[ICMSG_HDR] = kvp_op::GET_IP_INFO;
        assert!(matches!(
            kvp(&mut b, &c, &mut KvpStore::default()),
            Err(IcError::Truncated { what: "KVP IP info", .. })
        ));
        // A hostile version count past the buffer.
        let mut b = negotiate_msg(&[(3, 0)], &[(3, 0)]);
        write_u16(&mut b, field::negotiate::ICMSG_VERCNT, 50);
        assert_eq!(negotiate(&mut b, &HEARTBEAT_VERSIONS), Err(IcError::BadVersionCount { framework: 1, service: 50 }));
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
        assert_eq!(read_u32(&b[KVP_ENUM_DATA..], field::kvp_value::KEY_SIZE), 2 * 19, "key_size in bytes with the NUL");
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
