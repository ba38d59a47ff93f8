//! Host tests: stacks joined by an in-memory [`pipe::PipeNic`] pair, run on libos's executor (on the host
//! its idle is a spin loop) with a clock backed by `std::time::Instant`. The executor is process-global,
//! so tests that use it take [`LOCK`] through [`run`].

mod config;
mod dhcp;
mod dns;
mod nonblocking;
pub(crate) mod pipe;
mod tcp;
mod udp;

use crate::{Config, IpSetup, Stack, StaticIpv4};
use libos::dev::NetOffloads;
use libos::task::JoinHandle;
use libos::time::{ClockSource, Duration, Instant};
use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, OnceLock};

struct HostClock;

impl ClockSource for HostClock {
    fn now_ns(&self) -> u64 {
        static START: OnceLock<std::time::Instant> = OnceLock::new();
        START.get_or_init(std::time::Instant::now).elapsed().as_nanos() as u64
    }
    fn name(&self) -> &'static str {
        "host"
    }
}

static LOCK: Mutex<()> = Mutex::new(());

/// Installs the host clock (once per process).
pub fn clock() {
    libos::time::set_clock(&HostClock);
}

/// Runs `f` on libos's executor, at most 60 s.
pub fn run<F>(f: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    clock();
    libos::task::block_on(async move {
        libos::time::timeout(Duration::from_secs(60), f).await.expect("test did not finish within 60 s")
    })
}

/// Static setup 10.0.0.`host`/24 with gateway 10.0.0.254 (absent) and `dns`.
pub fn static_ip(host: u8, dns: Option<Ipv4Addr>) -> IpSetup {
    IpSetup::Static(StaticIpv4 {
        address: Ipv4Addr::new(10, 0, 0, host),
        prefix_len: 24,
        gateway: Some(Ipv4Addr::new(10, 0, 0, 254)),
        dns,
    })
}

/// A static setup at `address`/24 without gateway or DNS.
pub fn static_ip_at(address: Ipv4Addr) -> StaticIpv4 {
    StaticIpv4 { address, prefix_len: 24, gateway: None, dns: None }
}

/// Two stacks (side 0 = `a` at 10.0.0.1, side 1 = `b` at 10.0.0.2) on a pipe, their net tasks running.
pub struct Net {
    pub a: Arc<Stack>,
    pub b: Arc<Stack>,
    pub pipe: pipe::Pipe,
    tasks: Vec<JoinHandle<crate::Result<()>>>,
}

impl Net {
    /// Must be called on the executor (inside [`run`]).
    pub fn new(cfg_a: Config, cfg_b: Config) -> Net {
        Self::with(cfg_a, static_ip(1, None), cfg_b, static_ip(2, None), NetOffloads::default())
    }

    pub fn with(cfg_a: Config, ip_a: IpSetup, cfg_b: Config, ip_b: IpSetup, offloads: NetOffloads) -> Net {
        let (nic_a, nic_b, pipe) = pipe::pair(offloads);
        let a = Stack::new(Box::new(nic_a), ip_a, cfg_a).expect("stack a");
        let b = Stack::new(Box::new(nic_b), ip_b, cfg_b).expect("stack b");
        let tasks = vec![libos::task::spawn(a.clone().run()), libos::task::spawn(b.clone().run())];
        Net { a, b, pipe, tasks }
    }

    /// Stops both net tasks.
    pub async fn stop(self) {
        for t in self.tasks {
            if let Some(r) = t.cancel().await {
                r.expect("net task failed");
            }
        }
    }

    /// Checks both NICs: every received frame was recycled, no device errors.
    pub fn assert_frames_recycled(&self) {
        for side in 0..2 {
            let c = self.pipe.counters(side);
            assert!(c.received > 0, "side {side} received nothing: {c:?}");
            assert_eq!(c.received, c.recycled, "side {side}: frames not given back: {c:?}");
            assert_eq!(c.errors, 0, "side {side}: {c:?}");
        }
    }
}

/// The 10.0.0.1 address of stack `a` with `port`.
pub fn addr_a(port: u16) -> std::net::SocketAddr {
    (Ipv4Addr::new(10, 0, 0, 1), port).into()
}

/// Waits (up to `secs` seconds) until `cond` holds; returns whether it did.
pub async fn eventually(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if cond() {
            return true;
        }
        libos::time::sleep(Duration::from_millis(2)).await;
    }
    cond()
}

/// Deterministic test bytes (xorshift32).
pub fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

#[test]
fn handles_can_move_between_tasks() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Stack>();
    send_sync::<crate::TcpListener>();
    send_sync::<crate::TcpStream>();
    send_sync::<crate::UdpSocket>();
}

/// One end of a hand-built frame: MAC, IPv4 address, TCP port.
#[derive(Clone, Copy)]
pub struct End {
    pub mac: [u8; 6],
    pub ip: Ipv4Addr,
    pub port: u16,
}

/// A TCP segment carrying `payload` from `src` to `dst` (Ethernet + IPv4 + TCP, checksums filled, window 65535,
/// MSS option 1460 on a SYN) with `control`, sequence number `seq` and acknowledgment number `ack` if any.
pub fn tcp_segment(
    src: End,
    dst: End,
    control: smoltcp::wire::TcpControl,
    (seq, ack): (i32, Option<i32>),
    payload: &[u8],
) -> Vec<u8> {
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{
        EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, IpProtocol, Ipv4Packet, Ipv4Repr, TcpPacket,
        TcpRepr, TcpSeqNumber,
    };
    let caps = ChecksumCapabilities::default();
    let tcp = TcpRepr {
        src_port: src.port,
        dst_port: dst.port,
        control,
        seq_number: TcpSeqNumber(seq),
        ack_number: ack.map(TcpSeqNumber),
        window_len: 65535,
        window_scale: None,
        max_seg_size: (control == smoltcp::wire::TcpControl::Syn).then_some(1460),
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload,
    };
    let ip_repr = Ipv4Repr {
        src_addr: src.ip,
        dst_addr: dst.ip,
        next_header: IpProtocol::Tcp,
        payload_len: tcp.buffer_len(),
        hop_limit: 64,
    };
    let mut out = vec![0u8; 14 + 20 + tcp.buffer_len()];
    let mut eth = EthernetFrame::new_unchecked(&mut out[..]);
    EthernetRepr {
        src_addr: EthernetAddress(src.mac),
        dst_addr: EthernetAddress(dst.mac),
        ethertype: EthernetProtocol::Ipv4,
    }
    .emit(&mut eth);
    let mut ip = Ipv4Packet::new_unchecked(eth.payload_mut());
    ip_repr.emit(&mut ip, &caps);
    tcp.emit(&mut TcpPacket::new_unchecked(ip.payload_mut()), &src.ip.into(), &dst.ip.into(), &caps);
    out
}
