//! One network stack instance: a smoltcp `Interface` (Ethernet, RFC 894) over one [`NetDevice`], its
//! `SocketSet`, IPv4 setup (static, or DHCPv4 per RFC 2131), the net task that polls it, and the reaper that
//! removes sockets the app has dropped once their close handshake (RFC 9293 §3.6) is over.

use crate::config::{Config, IpSetup};
use crate::error::{Error, Result};
use crate::gso::Coalescer;
use crate::phy::{capabilities, Counters, Held, Phy};
use crate::table;
use crate::{arp, Ipv4Config, Ipv4State, NetStats};
use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::future::{poll_fn, Future};
use core::net::Ipv4Addr;
use core::ops::Bound;
use core::pin::Pin;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use core::task::{Context, Poll, Waker};
use core::time::Duration;
use libos::dev::{DeviceError, NetDevice};
use libos::time::{Instant, Sleep};
use smoltcp::iface::{Interface, PollIngressSingleResult, PollResult, SocketHandle, SocketSet};
use smoltcp::phy::DeviceCapabilities;
use smoltcp::socket::{dhcpv4, dns, tcp, udp};
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, IpListenEndpoint};
use spin::Mutex;

/// First port of the dynamic/ephemeral range (RFC 6335 §6).
pub(crate) const EPHEMERAL_FIRST: u16 = 49152;
const EPHEMERAL_COUNT: u32 = 65536 - EPHEMERAL_FIRST as u32;
/// An orphan whose reset could not be sent within this long after the abort is removed anyway.
const ABORT_GRACE: Duration = Duration::from_secs(1);
/// A connection still in SYN-RECEIVED this long after its SYN is dropped before `accept` (RFC 4987 §3.2, a
/// shorter SYN-RECEIVED timer): smoltcp has no SYN cache or cookies, so each SYN holds a socket and its buffers,
/// and a SYN from a spoofed address would hold it forever (its SYN-ACK never leaves without an ARP reply, so
/// smoltcp's retransmission timeout never starts). A client that lost its SYN-ACK retransmits the SYN and
/// gets a fresh socket.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// TCP frames that arrive before the DHCP lease are held this long at most.
const HOLD_FOR: Duration = Duration::from_secs(3);
/// A dropped UDP socket keeps its queued datagrams at most this long.
const UDP_DRAIN: Duration = Duration::from_secs(2);

pub(crate) fn smol_now(now: Instant) -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_micros(i64::try_from(now.as_nanos() / 1000).unwrap_or(i64::MAX))
}

/// The TCP sockets behind one `TcpListener`.
pub(crate) struct Listener {
    /// Sockets in LISTEN, each ready to take one SYN.
    pub listening: Vec<SocketHandle>,
    /// Sockets that left LISTEN (SYN-RECEIVED, ESTABLISHED, ...) and wait for `accept`, oldest first, with
    /// when the stack saw them leave LISTEN (for [`HANDSHAKE_TIMEOUT`]).
    pub pending: Vec<(SocketHandle, Instant)>,
    /// How many LISTEN sockets to keep.
    pub backlog: usize,
    /// The accepting task, registered on every socket created for this listener.
    pub waker: Option<Waker>,
}

#[derive(Clone, Copy)]
enum OrphanKind {
    /// A TCP socket; `port` is the ephemeral port to release on removal.
    Tcp { port: Option<u16> },
    /// A UDP socket bound to `port`.
    Udp { port: u16 },
}

/// A socket the app no longer holds; removed by the reaper once it is done.
struct Orphan {
    handle: SocketHandle,
    kind: OrphanKind,
    deadline: Instant,
    aborted: bool,
}

/// The state behind the stack's lock.
pub(crate) struct Inner {
    pub iface: Interface,
    pub sockets: SocketSet<'static>,
    pub device: Box<dyn NetDevice>,
    caps: DeviceCapabilities,
    dhcp: Option<SocketHandle>,
    pub dns: SocketHandle,
    pub ipv4: Option<Ipv4Config>,
    pub state: Ipv4State,
    pub listeners: BTreeMap<u16, Listener>,
    /// Local ports held by connections made with `connect` (and listeners bound to port 0).
    pub tcp_ports: BTreeSet<u16>,
    pub udp_ports: BTreeSet<u16>,
    next_port: u32,
    orphans: Vec<Orphan>,
    pub tcp_sockets: usize,
    pub udp_sockets: usize,
    /// Address to announce with a gratuitous ARP at the next round.
    garp: Option<Ipv4Addr>,
    config_waiters: Vec<Waker>,
    device_waker: Option<Waker>,
    failed: Option<DeviceError>,
    /// TCP frames that arrived before the DHCP lease (see `phy::worth_holding`).
    held: VecDeque<Held>,
    mac: [u8; 6],
    /// Merges TCP segments for a NIC with segmentation offload (`None` without).
    gso: Option<Coalescer>,
    /// Bytes of TCP sockets' buffers of the configured (large) size, and the most there may be.
    pub(crate) tcp_large_bytes: usize,
    tcp_budget: usize,
    /// Some TCP socket was made with small buffers since boot: [`Inner::top_up`] then looks for small
    /// listening sockets to replace with large ones while the budget allows.
    small_listening: bool,
    /// Most TCP + UDP sockets at once: [`socket_limit`].
    socket_limit: usize,
    /// How far `sockets` reaches (slots, highest handle), for [`Inner::compact_table`].
    reach: table::Reach,
    /// When [`Inner::compact_table`] may next rebuild the table.
    compact_at: Instant,
    /// Closed TCP sockets with the large buffers and when each was given up, oldest first, kept for
    /// [`Inner::add_tcp`] to reuse (at most [`TCP_POOL`], the newest first): a connection then costs no
    /// allocation and no zeroing of its buffers (768 KiB by default; most of a `Connection: close` request's
    /// time). Held outside the socket table, which smoltcp walks for every segment it sends and receives;
    /// still counted in `tcp_large_bytes`. Freed after [`TCP_POOL_IDLE`] unused or at once when memory is not
    /// [`Pressure::Normal`](libos::mem::pressure::Pressure::Normal).
    pub(crate) tcp_pool: Vec<(tcp::Socket<'static>, Instant)>,
}

/// A network stack over one NIC. [`crate::start`] makes the kernel's one instance; tests and multi-NIC
/// setups build their own with [`Stack::new`] and drive it with [`Stack::run`].
pub struct Stack {
    inner: Mutex<Inner>,
    net_waker: Mutex<Option<Waker>>,
    counters: Counters,
    pub(crate) config: Config,
    nic: String,
    mac: [u8; 6],
    pub(crate) ip_mtu: usize,
    pub(crate) tcp_connections: AtomicUsize,
    polls: AtomicU64,
}

/// Outcome of one poll round.
pub(crate) struct Round {
    /// When smoltcp next needs a poll (`None`: only on a wake-up).
    delay: Option<Duration>,
    /// Whether frames moved in this round.
    progressed: bool,
}

fn mix_seed(mut x: u64) -> u64 {
    // splitmix64 finaliser: spreads uptime and MAC bits over the whole seed.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn mac_string(mac: [u8; 6]) -> String {
    let [a, b, c, d, e, f] = mac;
    alloc::format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}

impl Stack {
    /// Builds a stack on `device` with IPv4 from `setup` and the tunables `config`. Nothing is sent until
    /// the net task ([`Stack::run`]) polls it. Errors: [`Error::InvalidConfig`] for a bad `config`, a
    /// non-unicast MAC or an MTU outside 576..=9216 bytes (RFC 791 minimum, jumbo maximum).
    pub fn new(mut device: Box<dyn NetDevice>, setup: IpSetup, config: Config) -> Result<Arc<Stack>> {
        config.validate()?;
        let info = device.info().clone();
        if !EthernetAddress(info.mac).is_unicast() {
            return Err(Error::InvalidConfig {
                key: "mac",
                value: mac_string(info.mac),
                expected: "a unicast MAC address from the device",
            });
        }
        if !(576..=9216).contains(&info.mtu) {
            return Err(Error::InvalidConfig {
                key: "mtu",
                value: alloc::format!("{}", info.mtu),
                expected: "an IP MTU of 576..=9216 bytes from the device",
            });
        }
        let caps = capabilities(&info);
        let counters = Counters::default();
        let now = Instant::now();
        let mac_bits = info.mac.iter().fold(0u64, |a, b| (a << 8) | u64::from(*b));
        let mut iface_config = smoltcp::iface::Config::new(HardwareAddress::Ethernet(EthernetAddress(info.mac)));
        let seed = mix_seed(now.as_nanos() ^ mac_bits.rotate_left(17));
        iface_config.random_seed = seed;
        let iface = {
            let mut held = VecDeque::new();
            let mut phy = Phy::new(&mut *device, caps.clone(), &counters, &mut held, None, None);
            Interface::new(iface_config, &mut phy, smol_now(now))
        };
        // The socket table at its largest from the start (app sockets + DHCP + DNS, ~0.5 KiB a slot): grown on
        // demand it would keep the high-water mark of a flood for good, and double (a large reallocation)
        // right when memory is scarcest. Its largest is what the heap can hold (`socket_limit`).
        let socket_limit = socket_limit(&config);
        let mut sockets = SocketSet::new(Vec::with_capacity(socket_limit + 2));
        let queries: Vec<Option<dns::DnsQuery>> = (0..config.dns_queries).map(|_| None).collect();
        let mut reach = table::Reach::new();
        let dns = table::add(&mut sockets, &mut reach, dns::Socket::new(&[], queries));
        let mut inner = Inner {
            iface,
            sockets,
            device,
            caps,
            dhcp: None,
            dns,
            ipv4: None,
            state: Ipv4State::DhcpDiscovering,
            listeners: BTreeMap::new(),
            tcp_ports: BTreeSet::new(),
            udp_ports: BTreeSet::new(),
            next_port: (seed >> 32) as u32 % EPHEMERAL_COUNT,
            orphans: Vec::new(),
            tcp_sockets: 0,
            udp_sockets: 0,
            garp: None,
            config_waiters: Vec::new(),
            device_waker: None,
            failed: None,
            held: VecDeque::new(),
            mac: info.mac,
            gso: info.offloads.tso4.then(|| Coalescer::new(info.offloads.gso_max_frame())),
            tcp_large_bytes: 0,
            tcp_budget: config.tcp_buffer_budget.unwrap_or_else(default_budget),
            small_listening: false,
            socket_limit,
            reach,
            compact_at: now,
            tcp_pool: Vec::new(),
        };
        let o = info.offloads;
        let offloads = match (o.rx_checksum, o.tx_checksum) {
            (false, false) => "none",
            (true, false) => "rx checksum",
            (false, true) => "tx checksum",
            (true, true) => "rx+tx checksum",
        };
        let offloads = alloc::format!(
            "{offloads}{}{}",
            if o.tso4 { ", tso4" } else { "" },
            if o.rx_gso { ", rx gso" } else { "" }
        );
        log::info!("using {} MAC {} MTU {} offloads: {offloads}", info.name, mac_string(info.mac), info.mtu);
        match setup {
            IpSetup::Static(s) => {
                let cfg = Ipv4Config {
                    address: s.address,
                    prefix_len: s.prefix_len,
                    gateway: s.gateway,
                    dns_servers: s.dns.into_iter().collect(),
                };
                log::info!("static IPv4 {cfg}");
                inner.apply_ipv4(Some(cfg));
                inner.state = Ipv4State::Static;
                inner.garp = Some(s.address);
            }
            IpSetup::Dhcp => {
                inner.dhcp = Some(table::add(&mut inner.sockets, &mut inner.reach, dhcpv4::Socket::new()));
                log::info!("DHCP: discovering");
            }
        }
        Ok(Arc::new(Stack {
            inner: Mutex::new(inner),
            net_waker: Mutex::new(None),
            counters,
            config,
            nic: info.name,
            mac: info.mac,
            ip_mtu: info.mtu,
            tcp_connections: AtomicUsize::new(0),
            polls: AtomicU64::new(0),
        }))
    }

    /// The tunables this stack was built with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Runs `f` on the locked stack state.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        f(&mut self.inner.lock())
    }

    /// Wakes the net task (the app queued data, read data that opens the window, or closed a socket).
    pub(crate) fn notify(&self) {
        if let Some(w) = self.net_waker.lock().as_ref() {
            w.wake_by_ref();
        }
    }

    /// The net task: polls the interface, flushes the device once per round, then sleeps until the device
    /// interrupts, an app operation needs a poll, or smoltcp's next timer (`poll_delay`) is due. Returns
    /// only on a fatal device error ([`Error::Io`]). Spawn it once per stack.
    pub async fn run(self: Arc<Self>) -> Result<()> {
        loop {
            let round = poll_fn(|cx| Poll::Ready(self.round(Some(cx.waker())))).await?;
            match round.delay {
                Some(d) if d.is_zero() && round.progressed => libos::task::yield_now().await,
                // Due now but nothing moved (e.g. transmit ring full): wait for the device or 1 ms, so a
                // stuck timer never turns into a busy loop.
                Some(d) if d.is_zero() => woken_or_after(Some(Duration::from_millis(1))).await,
                d => woken_or_after(d).await,
            }
        }
    }

    /// One poll round without a task context (for callers that drive the stack themselves). Returns when
    /// smoltcp next needs a poll. Errors: [`Error::Io`] after a fatal device error.
    pub fn poll(&self) -> Result<Option<Duration>> {
        self.round(None).map(|r| r.delay)
    }

    fn round(&self, waker: Option<&Waker>) -> Result<Round> {
        if let Some(w) = waker {
            let mut slot = self.net_waker.lock();
            if !slot.as_ref().is_some_and(|s| s.will_wake(w)) {
                *slot = Some(w.clone());
            }
        }
        self.polls.fetch_add(1, Ordering::Relaxed);
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        if let Some(e) = &inner.failed {
            return Err(Error::Io(e.clone()));
        }
        if let Some(w) = waker {
            if !inner.device_waker.as_ref().is_some_and(|s| s.will_wake(w)) {
                inner.device.set_waker(w);
                inner.device_waker = Some(w.clone());
            }
        }
        let frames =
            || self.counters.rx_frames.load(Ordering::Relaxed) + self.counters.tx_frames.load(Ordering::Relaxed);
        let before = frames();
        let now = Instant::now();
        let ts = smol_now(now);
        inner.expire_held(now);
        let mut fatal = inner.poll_interface(ts, now, &self.counters, &self.config);
        inner.poll_dhcp();
        inner.send_gratuitous_arp(self.mac, &self.counters);
        let reap_at = inner.reap(now, &self.config);
        if let Err(e) = inner.device.flush() {
            fatal.get_or_insert(e);
        }
        if let Some(e) = fatal {
            match e {
                DeviceError::Protocol { .. } | DeviceError::Io { .. } => {
                    log::error!("{e}; the network stack stops");
                    inner.failed = Some(e.clone());
                    return Err(Error::Io(e));
                }
                DeviceError::Busy { .. } | DeviceError::TooLarge { .. } => log::debug!("{e}"),
            }
        }
        let mut delay = inner.iface.poll_delay(ts, &inner.sockets).map(Duration::from);
        // Orphans past their close deadline are reset by the reaper, which only runs in a round; held
        // frames are released in the round after the lease, or expire.
        let held_at = inner.held.front().map(|h| match inner.ipv4 {
            Some(_) => now,
            None => Instant::from_nanos(h.at_ns) + HOLD_FOR,
        });
        for at in [reap_at, held_at].into_iter().flatten() {
            let d = at.saturating_duration_since(now);
            delay = Some(delay.map_or(d, |x| x.min(d)));
        }
        Ok(Round { delay, progressed: frames() != before })
    }

    /// Counters and state for monitoring (e.g. httpd's /health).
    pub fn stats(&self) -> NetStats {
        let c = &self.counters;
        let (tcp_sockets, udp_sockets, tcp_listeners, ipv4_state, ipv4, socket_slots) =
            self.with(|i| (i.tcp_sockets, i.udp_sockets, i.listeners.len(), i.state, i.ipv4.clone(), i.reach.slots));
        NetStats {
            nic: self.nic.clone(),
            rx_frames: c.rx_frames.load(Ordering::Relaxed),
            rx_bytes: c.rx_bytes.load(Ordering::Relaxed),
            tx_frames: c.tx_frames.load(Ordering::Relaxed),
            tx_bytes: c.tx_bytes.load(Ordering::Relaxed),
            tx_dropped: c.tx_dropped.load(Ordering::Relaxed),
            rx_errors: c.rx_errors.load(Ordering::Relaxed),
            rx_bad_checksum: c.rx_bad_checksum.load(Ordering::Relaxed),
            tx_gso_frames: c.tx_gso_frames.load(Ordering::Relaxed),
            polls: self.polls.load(Ordering::Relaxed),
            tcp_sockets,
            tcp_connections: self.tcp_connections.load(Ordering::Relaxed),
            tcp_listeners,
            udp_sockets,
            socket_slots,
            ipv4_state,
            ipv4,
        }
    }

    /// The IPv4 configuration in effect, if any (none while DHCP is discovering).
    pub fn ipv4_config(&self) -> Option<Ipv4Config> {
        self.with(|i| i.ipv4.clone())
    }

    /// Waits until the interface has an IPv4 address (at once with a static setup) and returns it.
    pub async fn wait_configured(&self) -> Ipv4Config {
        poll_fn(|cx| {
            self.with(|i| match &i.ipv4 {
                Some(c) => Poll::Ready(c.clone()),
                None => {
                    if !i.config_waiters.iter().any(|w| w.will_wake(cx.waker())) {
                        i.config_waiters.push(cx.waker().clone());
                    }
                    Poll::Pending
                }
            })
        })
        .await
    }
}

/// Completes when the task is woken (any wake: device, app, timer) or after `d`.
fn woken_or_after(d: Option<Duration>) -> WokenOrAfter {
    WokenOrAfter { polled: false, sleep: d.map(libos::time::sleep) }
}

struct WokenOrAfter {
    polled: bool,
    sleep: Option<Sleep>,
}

impl Future for WokenOrAfter {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // A task is polled again only after a wake, so the second poll means someone woke us.
        if self.polled {
            return Poll::Ready(());
        }
        self.polled = true;
        match self.sleep.as_mut().map(|s| Pin::new(s).poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(()),
            _ => Poll::Pending,
        }
    }
}

impl Inner {
    /// The TCP socket behind `h`. Handles held by the crate always name live TCP sockets.
    pub(crate) fn tcp(&mut self, h: SocketHandle) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(h)
    }

    /// The UDP socket behind `h`.
    pub(crate) fn udp(&mut self, h: SocketHandle) -> &mut udp::Socket<'static> {
        self.sockets.get_mut::<udp::Socket>(h)
    }

    /// The DNS socket.
    pub(crate) fn dns_socket(&mut self) -> &mut dns::Socket<'static> {
        self.sockets.get_mut::<dns::Socket>(self.dns)
    }

    fn app_sockets(&self) -> usize {
        self.tcp_sockets + self.udp_sockets
    }

    /// Errors with [`Error::TooManySockets`] when no further TCP/UDP socket may be created.
    pub(crate) fn check_limit(&self, config: &Config) -> Result<()> {
        if self.app_sockets() >= self.socket_limit.min(config.max_sockets) {
            Err(Error::TooManySockets { limit: self.socket_limit.min(config.max_sockets) })
        } else {
            Ok(())
        }
    }

    /// Adds a TCP socket: a kept closed one ([`Inner::tcp_pool`]) if any, for the caller to `listen` or
    /// `connect` (both reset it), else a new one with the configured buffers while they fit the budget
    /// ([`Config::tcp_buffer_budget`]), or with the small ones. The caller checked the limit. Errors:
    /// [`Error::LowMemory`] when the heap cannot spare the buffers (the VM keeps running; the SYN or connect is
    /// refused).
    pub(crate) fn add_tcp(&mut self, config: &Config) -> Result<SocketHandle> {
        if let Some((mut s, _)) = self.tcp_pool.pop() {
            // Closed or TIME-WAIT: `listen`/`connect` reset it (state, sequence space, buffers emptied) first.
            s.set_timeout(Some(config.tcp_timeout.into()));
            s.set_nagle_enabled(!config.tcp_nodelay);
            // `orphan_tcp` turned delayed ACKs off; reset does not touch the setting.
            s.set_ack_delay(Some(ACK_DELAY.into()));
            // Nor the congestion window: a new controller, so the connection starts in slow start again
            // rather than with the last one's window.
            let cc = s.congestion_control();
            s.set_congestion_control(cc);
            self.tcp_sockets += 1;
            return Ok(table::add(&mut self.sockets, &mut self.reach, s));
        }
        let large = config.tcp_rx_buffer + config.tcp_tx_buffer;
        let fits = self.tcp_large_bytes + large <= self.tcp_budget;
        let (rx, tx) = if fits {
            (config.tcp_rx_buffer, config.tcp_tx_buffer)
        } else {
            (SMALL_RX_BUFFER.min(config.tcp_rx_buffer), SMALL_TX_BUFFER.min(config.tcp_tx_buffer))
        };
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(libos::mem::try_zeroed(rx).ok_or(Error::LowMemory)?),
            tcp::SocketBuffer::new(libos::mem::try_zeroed(tx).ok_or(Error::LowMemory)?),
        );
        if fits {
            self.tcp_large_bytes += large;
        } else {
            self.small_listening = true;
        }
        s.set_timeout(Some(config.tcp_timeout.into()));
        s.set_nagle_enabled(!config.tcp_nodelay);
        self.tcp_sockets += 1;
        Ok(table::add(&mut self.sockets, &mut self.reach, s))
    }

    /// Adds a UDP socket with the configured buffers. The caller checked the limit.
    pub(crate) fn add_udp(&mut self, config: &Config) -> SocketHandle {
        let meta = || vec![udp::PacketMetadata::EMPTY; config.udp_packets];
        let s = udp::Socket::new(
            udp::PacketBuffer::new(meta(), vec![0u8; config.udp_rx_buffer]),
            udp::PacketBuffer::new(meta(), vec![0u8; config.udp_tx_buffer]),
        );
        self.udp_sockets += 1;
        table::add(&mut self.sockets, &mut self.reach, s)
    }

    pub(crate) fn remove_tcp(&mut self, h: SocketHandle) {
        self.release_tcp(h);
        self.tcp_sockets -= 1;
    }

    /// Gives up the TCP socket `h`: out of the table into the pool for reuse when it has the large buffers,
    /// is closed (a LISTEN socket is closed first; it holds no connection) and memory is normal; else removed,
    /// its large buffers returned to the budget.
    fn release_tcp(&mut self, h: SocketHandle) {
        use libos::mem::pressure::{self, Pressure};
        let s = self.sockets.get_mut::<tcp::Socket>(h);
        let bytes = s.recv_capacity() + s.send_capacity();
        let large = bytes > SMALL_RX_BUFFER + SMALL_TX_BUFFER;
        let poolable = large && self.tcp_pool.len() < TCP_POOL && pressure::current() == Pressure::Normal;
        if poolable && s.state() == tcp::State::Listen {
            s.abort();
        }
        let keep = poolable && !s.is_open();
        // `h` names a TCP socket (`get_mut` above would have panicked otherwise).
        if let smoltcp::socket::Socket::Tcp(s) = self.sockets.remove(h) {
            if keep {
                self.tcp_pool.push((s, Instant::now()));
            } else {
                self.free_tcp(s);
            }
        }
    }

    /// Frees a TCP socket taken out of the table, returning its large buffers to the budget.
    fn free_tcp(&mut self, s: tcp::Socket<'static>) {
        let bytes = s.recv_capacity() + s.send_capacity();
        if bytes > SMALL_RX_BUFFER + SMALL_TX_BUFFER {
            self.tcp_large_bytes = self.tcp_large_bytes.saturating_sub(bytes);
        }
    }

    /// A free ephemeral port (RFC 6335 §6) for TCP, not used by a connection or a listener.
    pub(crate) fn ephemeral_tcp_port(&mut self) -> Result<u16> {
        let (used, listeners) = (&self.tcp_ports, &self.listeners);
        let port = take_port(&mut self.next_port, |p| used.contains(&p) || listeners.contains_key(&p))?;
        self.tcp_ports.insert(port);
        Ok(port)
    }

    /// A free ephemeral port for UDP.
    pub(crate) fn ephemeral_udp_port(&mut self) -> Result<u16> {
        let used = &self.udp_ports;
        take_port(&mut self.next_port, |p| used.contains(&p))
    }

    /// Hands a socket the app dropped to the reaper. From here on it acknowledges at once (no delayed
    /// ACK), so the ACK of the peer's FIN leaves in the same round and TIME-WAIT can be cut short.
    pub(crate) fn orphan_tcp(&mut self, h: SocketHandle, port: Option<u16>, now: Instant, config: &Config) {
        self.tcp(h).set_ack_delay(None);
        self.orphans.push(Orphan {
            handle: h,
            kind: OrphanKind::Tcp { port },
            deadline: now + config.close_timeout,
            aborted: false,
        });
    }

    /// Hands a dropped UDP socket to the reaper (it goes once its queued datagrams are sent).
    pub(crate) fn orphan_udp(&mut self, h: SocketHandle, port: u16, now: Instant) {
        self.orphans.push(Orphan {
            handle: h,
            kind: OrphanKind::Udp { port },
            deadline: now + UDP_DRAIN,
            aborted: false,
        });
    }

    /// Creates listening sockets for `port` until the listener has its backlog (or the limit is hit), after
    /// moving sockets that left LISTEN to the pending list; at most [`TOP_UP_BATCH`] per call, so binding a
    /// large backlog does not hold up boot and a round stays short: returns true when it
    /// stopped there with more to make, and [`Inner::reap`] then asks for another round at once. Memory
    /// pressure (`libos::mem::pressure`) shrinks the backlog to one socket when low and none when critical, so
    /// further SYNs are answered RST.
    pub(crate) fn top_up(&mut self, port: u16, config: &Config) -> bool {
        use libos::mem::pressure::Pressure;
        if libos::mem::pressure::current() != Pressure::Normal {
            while let Some((s, _)) = self.tcp_pool.pop() {
                self.free_tcp(s);
            }
        }
        let Some(l) = self.listeners.get_mut(&port) else { return false };
        let now = Instant::now();
        let mut duplicates = Vec::new();
        let mut i = 0;
        while i < l.listening.len() {
            let h = l.listening[i];
            if self.sockets.get::<tcp::Socket>(h).state() == tcp::State::Listen {
                i += 1;
            } else {
                l.listening.swap_remove(i);
                if duplicates_connection(&self.sockets, h) {
                    duplicates.push(h);
                } else {
                    l.pending.push((h, now));
                }
            }
        }
        // Removed before the round's egress, so they never answer: no second SYN-ACK, no RST.
        for h in duplicates {
            log::debug!(
                "duplicate SYN from {:?} for a connection already open; dropped",
                self.tcp(h).remote_endpoint()
            );
            self.remove_tcp(h);
        }
        self.upgrade_listening(port, config);
        let Some(l) = self.listeners.get_mut(&port) else { return false };
        let (backlog, waker) = (l.backlog.min(listening_cap(config)), l.waker.clone());
        // Looked at before each socket: creating them is what uses the memory up.
        let shrunk = || match libos::mem::pressure::current() {
            Pressure::Normal => backlog,
            Pressure::Low => 1,
            Pressure::Critical => 0,
        };
        let mut made = 0;
        while self.listeners.get(&port).is_some_and(|l| l.listening.len() < shrunk()) {
            if made == TOP_UP_BATCH {
                return true;
            }
            made += 1;
            if self.check_limit(config).is_err() {
                break;
            }
            let Ok(h) = self.add_tcp(config) else { break };
            let s = self.tcp(h);
            if let Err(e) = s.listen(IpListenEndpoint { addr: None, port }) {
                // Only fails for port 0 or an open socket; neither can happen for a fresh socket here.
                log::warn!("listen on port {port}: {e}");
                self.remove_tcp(h);
                break;
            }
            if let Some(w) = &waker {
                s.register_recv_waker(w);
            }
            if let Some(l) = self.listeners.get_mut(&port) {
                l.listening.push(h);
            }
        }
        false
    }

    /// Drops listening sockets of `port` that got the small buffers while the budget was used up, as far as
    /// the budget now allows large ones instead ([`Inner::top_up`] makes the replacements). A LISTEN socket
    /// holds no connection, so nothing is lost; connections made after a burst get the large buffers again.
    fn upgrade_listening(&mut self, port: u16, config: &Config) {
        let large = config.tcp_rx_buffer + config.tcp_tx_buffer;
        if !self.small_listening || large <= SMALL_RX_BUFFER + SMALL_TX_BUFFER {
            return;
        }
        // Pooled sockets are large ones waiting for exactly this: their bytes are available.
        let held = self.tcp_large_bytes.saturating_sub(large * self.tcp_pool.len());
        let mut dropped = 0;
        while held + large * (dropped + 1) <= self.tcp_budget {
            let sockets = &self.sockets;
            let Some(l) = self.listeners.get_mut(&port) else { return };
            let small =
                l.listening.iter().position(|h| sockets.get::<tcp::Socket>(*h).send_capacity() < config.tcp_tx_buffer);
            // The flag stays set: another port may still hold small listening sockets.
            let Some(pos) = small else { break };
            let h = l.listening.swap_remove(pos);
            self.remove_tcp(h);
            dropped += 1;
        }
    }

    /// The listening port after `port` (the first with `None`).
    fn next_listener(&self, port: Option<u16>) -> Option<u16> {
        let from = port.map_or(Bound::Unbounded, Bound::Excluded);
        self.listeners.range((from, Bound::Unbounded)).next().map(|(p, _)| *p)
    }

    fn top_up_all(&mut self, config: &Config) {
        let mut port = self.next_listener(None);
        while let Some(p) = port {
            self.top_up(p, config);
            port = self.next_listener(Some(p));
        }
    }

    /// Ingress frame by frame (topping listeners up after each, so a burst of SYNs finds listening
    /// sockets), then egress until smoltcp has nothing more to send. Returns the first fatal device error.
    fn poll_interface(
        &mut self,
        ts: smoltcp::time::Instant,
        now: Instant,
        counters: &Counters,
        config: &Config,
    ) -> Option<DeviceError> {
        self.iface.poll_maintenance(ts);
        let hold = (self.dhcp.is_some() && self.ipv4.is_none()).then_some((self.mac, now.as_nanos()));
        let mut error = None;
        loop {
            let r = {
                let mut phy =
                    Phy::new(&mut *self.device, self.caps.clone(), counters, &mut self.held, hold, self.gso.as_mut());
                let r = self.iface.poll_ingress_single(ts, &mut phy, &mut self.sockets);
                error = error.or(phy.take_error());
                r
            };
            match r {
                PollIngressSingleResult::None => break,
                PollIngressSingleResult::PacketProcessed => {}
                PollIngressSingleResult::SocketStateChanged => {
                    if !self.listeners.is_empty() {
                        self.top_up_all(config);
                    }
                }
            }
        }
        let mut phy = Phy::new(&mut *self.device, self.caps.clone(), counters, &mut self.held, hold, self.gso.as_mut());
        while self.iface.poll_egress(ts, &mut phy, &mut self.sockets) != PollResult::None {}
        phy.flush_gso();
        error.or(phy.take_error())
    }

    /// Gives frames held for longer than [`HOLD_FOR`] back to the device (no lease came in time).
    fn expire_held(&mut self, now: Instant) {
        while let Some(h) = self.held.front() {
            if now.as_nanos().saturating_sub(h.at_ns) < HOLD_FOR.as_nanos() as u64 {
                break;
            }
            if let Some(h) = self.held.pop_front() {
                if let Err(e) = self.device.recycle(h.frame) {
                    log::warn!("{e}");
                }
            }
        }
    }

    /// Applies a DHCP event: a new lease configures the interface (and is announced), a lost one clears it.
    fn poll_dhcp(&mut self) {
        let Some(h) = self.dhcp else { return };
        let event = match self.sockets.get_mut::<dhcpv4::Socket>(h).poll() {
            None => return,
            Some(dhcpv4::Event::Configured(c)) => Some(Ipv4Config {
                address: c.address.address(),
                prefix_len: c.address.prefix_len(),
                gateway: c.router,
                dns_servers: c.dns_servers.iter().copied().collect(),
            }),
            Some(dhcpv4::Event::Deconfigured) => None,
        };
        match event {
            Some(cfg) => {
                log::info!("DHCP lease {cfg}");
                self.garp = Some(cfg.address);
                self.apply_ipv4(Some(cfg));
                self.state = Ipv4State::DhcpBound;
            }
            // smoltcp also reports "deconfigured" once at start; only a bound lease can be lost.
            None if self.state != Ipv4State::DhcpBound => {}
            None => {
                log::warn!("DHCP lease lost; discovering again");
                self.apply_ipv4(None);
                self.state = Ipv4State::DhcpDiscovering;
            }
        }
    }

    fn apply_ipv4(&mut self, cfg: Option<Ipv4Config>) {
        self.iface.update_ip_addrs(|addrs| {
            addrs.clear();
            if let Some(c) = &cfg {
                // Cannot fail: the list was just cleared and holds at least one address.
                let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(c.address), c.prefix_len));
            }
        });
        let routes = self.iface.routes_mut();
        routes.remove_default_ipv4_route();
        if let Some(gw) = cfg.as_ref().and_then(|c| c.gateway) {
            if let Err(e) = routes.add_default_ipv4_route(gw) {
                log::warn!("default route via {gw}: {e:?}");
            }
        }
        let servers: Vec<IpAddress> =
            cfg.iter().flat_map(|c| c.dns_servers.iter().map(|a| IpAddress::Ipv4(*a))).collect();
        self.dns_socket().update_servers(&servers);
        if cfg.is_some() {
            self.config_waiters.drain(..).for_each(Waker::wake);
        }
        self.ipv4 = cfg;
    }

    fn send_gratuitous_arp(&mut self, mac: [u8; 6], counters: &Counters) {
        let Some(ip) = self.garp else { return };
        if !self.device.can_transmit() {
            return;
        }
        let len = arp::GRATUITOUS_ARP_LEN;
        match self.device.transmit(len, &mut |buf| arp::emit_gratuitous_arp(buf, mac, ip)) {
            Ok(()) => {
                counters.tx_frames.fetch_add(1, Ordering::Relaxed);
                counters.tx_bytes.fetch_add(len as u64, Ordering::Relaxed);
                log::debug!("gratuitous ARP for {ip}");
                self.garp = None;
            }
            Err(DeviceError::Busy { .. }) => {}
            Err(e) => {
                log::warn!("gratuitous ARP for {ip} not sent: {e}");
                self.garp = None;
            }
        }
    }

    /// Removes orphans whose close is complete (TIME-WAIT is cut short: the app has gone, and the buffers
    /// are worth more than absorbing a stray retransmitted FIN), resets those past their deadline, frees kept
    /// sockets unused for [`TCP_POOL_IDLE`], reclaims listener sockets that died before `accept` and tops the
    /// listeners up. Returns when it must run next (now, when a backlog is still being made).
    fn reap(&mut self, now: Instant, config: &Config) -> Option<Instant> {
        // An orphan's final ACK goes out in the egress just before this (orphans ACK at once, see
        // `orphan_tcp`), unless the transmit ring filled up: then keep TIME-WAIT sockets one more round.
        let acks_sent = self.device.can_transmit();
        let mut next: Option<Instant> = None;
        let mut i = 0;
        while i < self.orphans.len() {
            let o = &mut self.orphans[i];
            let h = o.handle;
            let done = match o.kind {
                OrphanKind::Tcp { .. } => {
                    let s = self.sockets.get_mut::<tcp::Socket>(h);
                    match s.state() {
                        // Closed with no endpoint: the RST (if any) went out.
                        tcp::State::Closed if s.remote_endpoint().is_none() => true,
                        // Its RST is still queued (no ARP entry for the peer, ring full): a little longer.
                        tcp::State::Closed => {
                            if !o.aborted {
                                o.aborted = true;
                                o.deadline = now;
                            }
                            now >= o.deadline + ABORT_GRACE
                        }
                        tcp::State::TimeWait => acks_sent,
                        tcp::State::Listen => true,
                        _ if now >= o.deadline && !o.aborted => {
                            log::debug!("connection to {:?} not closed in time; resetting", s.remote_endpoint());
                            s.abort();
                            o.aborted = true;
                            false
                        }
                        _ => now >= o.deadline + ABORT_GRACE,
                    }
                }
                OrphanKind::Udp { .. } => self.sockets.get::<udp::Socket>(h).send_queue() == 0 || now >= o.deadline,
            };
            if !done {
                let due = if o.aborted { o.deadline + ABORT_GRACE } else { o.deadline };
                next = Some(next.map_or(due, |n| n.min(due)));
                i += 1;
                continue;
            }
            let o = self.orphans.swap_remove(i);
            match o.kind {
                OrphanKind::Tcp { .. } => self.release_tcp(o.handle),
                OrphanKind::Udp { .. } => {
                    self.sockets.remove(o.handle);
                }
            }
            match o.kind {
                OrphanKind::Tcp { port } => {
                    self.tcp_sockets -= 1;
                    if let Some(p) = port {
                        self.tcp_ports.remove(&p);
                    }
                }
                OrphanKind::Udp { port } => {
                    self.udp_sockets -= 1;
                    self.udp_ports.remove(&port);
                }
            }
        }
        // Kept sockets unused for a while go: a burst's buffers return to the heap once it is over.
        while let Some(&(_, since)) = self.tcp_pool.first() {
            if now < since + TCP_POOL_IDLE {
                let due = since + TCP_POOL_IDLE;
                next = Some(next.map_or(due, |n| n.min(due)));
                break;
            }
            let (s, _) = self.tcp_pool.remove(0);
            self.free_tcp(s);
        }
        let mut port = self.next_listener(None);
        while let Some(p) = port {
            if let Some(due) = self.reap_pending(p, now) {
                next = Some(next.map_or(due, |n| n.min(due)));
            }
            if self.top_up(p, config) {
                next = Some(now);
            }
            port = self.next_listener(Some(p));
        }
        if let Some(due) = self.compact_table(now) {
            next = Some(next.map_or(due, |n| n.min(due)));
        }
        next
    }

    /// Sockets in the table: TCP and UDP ones held (the kept closed ones are outside), DNS, DHCP.
    fn table_sockets(&self) -> usize {
        self.tcp_sockets + self.udp_sockets + 1 + usize::from(self.dhcp.is_some())
    }

    /// Takes the socket table back in once it has more than twice the slots it has sockets (`table`: smoltcp
    /// walks every slot for each segment and never shortens the table), at most every [`COMPACT_EVERY`]:
    /// listening sockets, which only the stack names, move to the lowest empty slots, then the table is
    /// rebuilt to end at its last socket. Returns when to look again while it is still too long.
    fn compact_table(&mut self, now: Instant) -> Option<Instant> {
        if !self.reach.oversized(self.table_sockets()) {
            return None;
        }
        if now < self.compact_at {
            return Some(self.compact_at);
        }
        self.compact_at = now + COMPACT_EVERY;
        let slots = self.reach.slots;
        for l in self.listeners.values_mut() {
            for h in &mut l.listening {
                // The first empty slot: at worst its own again.
                let s = self.sockets.remove(*h);
                *h = table::add(&mut self.sockets, &mut self.reach, s);
            }
        }
        let (live, last) = table::occupancy(&self.sockets);
        if !self.reach.has_empty_tail(last) {
            return None;
        }
        match table::compact(&mut self.sockets, self.socket_limit + 2) {
            Some(reach) => {
                self.reach = reach;
                log::debug!("socket table taken in from {slots} to {} slots ({live} sockets)", reach.slots);
                None
            }
            // No memory for a second table now: try again later.
            None => Some(self.compact_at),
        }
    }

    /// Drops pending sockets of `port` that closed before `accept` (reset, handshake timeout) or are still in
    /// SYN-RECEIVED [`HANDSHAKE_TIMEOUT`] after their SYN, and returns those a RST flipped back to LISTEN to
    /// the listening list (dropping them when it already holds the backlog). Returns when the next SYN-RECEIVED socket times out, if any.
    pub(crate) fn reap_pending(&mut self, port: u16, now: Instant) -> Option<Instant> {
        let l = self.listeners.get_mut(&port)?;
        let mut dead = Vec::new();
        let mut next: Option<Instant> = None;
        let sockets = &self.sockets;
        l.pending.retain(|&(h, since)| match sockets.get::<tcp::Socket>(h).state() {
            tcp::State::Closed | tcp::State::TimeWait => {
                dead.push(h);
                false
            }
            // Back in LISTEN after a RST: listening again, unless the backlog is full (after a SYN flood).
            tcp::State::Listen if l.listening.len() < l.backlog => {
                l.listening.push(h);
                false
            }
            tcp::State::Listen => {
                dead.push(h);
                false
            }
            tcp::State::SynReceived if now >= since + HANDSHAKE_TIMEOUT => {
                dead.push(h);
                false
            }
            tcp::State::SynReceived => {
                let due = since + HANDSHAKE_TIMEOUT;
                next = Some(next.map_or(due, |n| n.min(due)));
                true
            }
            _ => true,
        });
        for h in dead {
            self.remove_tcp(h);
        }
        next
    }
}

/// Most listening sockets one listener keeps ready: their buffers (at least the small ones each) stay within an
/// eighth of the heap, so a large backlog (zirvium-http asks for 128) cannot take a small VM's memory before any
/// connection arrives; at least one. E.g. 7 on a 1.5 MiB heap (`-m 4M`), 128 from ~24 MiB of heap. No cap
/// without a kernel heap (host tests).
fn listening_cap(config: &Config) -> usize {
    heap_sockets(config, 8)
}

/// Sockets whose smallest buffers fit in `1/divisor` of the heap, at least one; `usize::MAX` without a kernel
/// heap (host tests).
fn heap_sockets(config: &Config, divisor: usize) -> usize {
    let socket = SMALL_RX_BUFFER.min(config.tcp_rx_buffer) + SMALL_TX_BUFFER.min(config.tcp_tx_buffer);
    match usize::try_from(libos::mem::balloon::stats().total_bytes) {
        Ok(0) | Err(_) => usize::MAX,
        Ok(heap) => (heap / divisor / socket.max(1)).max(1),
    }
}

/// Whether the socket `h`, just out of LISTEN, took a SYN of a connection another socket already has (SYN-RECEIVED
/// or ESTABLISHED, same local and remote endpoints). smoltcp hands a segment to the first socket in its table that
/// accepts it, and a LISTEN socket accepts any SYN: a retransmitted or duplicated SYN reaches a LISTEN socket
/// placed before the connection's own and opens a second connection on the same 4-tuple, whose SYN-ACK the
/// client answers on the first one (the peer's segments then go to whichever comes first; transfers stall).
/// RFC 793 §3.4/RFC 5961 §4: a SYN for an existing connection is a duplicate, not a new connection.
fn duplicates_connection(sockets: &SocketSet<'static>, h: SocketHandle) -> bool {
    use smoltcp::socket::Socket;
    let Socket::Tcp(s) = sockets.get::<smoltcp::socket::Socket>(h) else { return false };
    let (Some(local), Some(remote)) = (s.local_endpoint(), s.remote_endpoint()) else { return false };
    sockets.iter().any(|(other, socket)| {
        other != h
            && matches!(socket, Socket::Tcp(t)
                if matches!(t.state(), tcp::State::SynReceived | tcp::State::Established)
                    && t.local_endpoint() == Some(local)
                    && t.remote_endpoint() == Some(remote))
    })
}

/// Most TCP + UDP sockets at once: [`Config::max_sockets`], or fewer where the whole heap cannot hold that many
/// sockets' smallest buffers (8 + 16 KiB each): the socket table is allocated at this size up front, and 1,280
/// slots of ~0.5 KiB took a quarter of a 2.4 MiB heap (`-m 5`) for sockets that could never exist.
fn socket_limit(config: &Config) -> usize {
    config.max_sockets.min(heap_sockets(config, 1))
}

/// Most closed large-buffer TCP sockets kept for reuse ([`Inner::tcp_pool`]): enough for the connections of a
/// few rounds under `Connection: close` load (a round creates its sockets before it reaps the closed ones; 8
/// reused one in five). Their bytes stay within [`Config::tcp_buffer_budget`] with the other large sockets'.
pub(crate) const TCP_POOL: usize = 64;

/// Most listening sockets one [`Inner::top_up`] creates.
const TOP_UP_BATCH: usize = 8;

/// How long a kept socket ([`Inner::tcp_pool`]) may stay unused before it is freed.
const TCP_POOL_IDLE: Duration = Duration::from_millis(250);
/// Shortest time between two rebuilds of the socket table ([`Inner::compact_table`]).
const COMPACT_EVERY: Duration = Duration::from_secs(1);

/// smoltcp's delayed-ACK time for a new socket (`ACK_DELAY_DEFAULT`, not exported), restored on reuse.
const ACK_DELAY: Duration = Duration::from_millis(10);

/// Receive buffer of a TCP socket beyond [`Config::tcp_buffer_budget`] (bytes).
pub(crate) const SMALL_RX_BUFFER: usize = 8 * 1024;
/// Send buffer of a TCP socket beyond [`Config::tcp_buffer_budget`] (bytes).
pub(crate) const SMALL_TX_BUFFER: usize = 16 * 1024;

/// The large-buffer budget when the config sets none: an eighth of RAM (16 MiB where RAM is unknown).
fn default_budget() -> usize {
    #[cfg(target_os = "none")]
    if let Some(b) = libos::start::boot_info() {
        return usize::try_from(b.ram_bytes() / 8).unwrap_or(usize::MAX);
    }
    16 << 20
}

/// Takes the next port of the ephemeral range after `cursor` for which `used` is false.
fn take_port(cursor: &mut u32, used: impl Fn(u16) -> bool) -> Result<u16> {
    for _ in 0..EPHEMERAL_COUNT {
        *cursor = (*cursor + 1) % EPHEMERAL_COUNT;
        // Fits: cursor < EPHEMERAL_COUNT, so EPHEMERAL_FIRST + cursor ≤ 65535.
        let port = EPHEMERAL_FIRST + *cursor as u16;
        if !used(port) {
            return Ok(port);
        }
    }
    Err(Error::EphemeralPortsExhausted)
}
