//! The smoltcp `phy::Device` adapter over a [`NetDevice`]: receive tokens own the device's [`RxFrame`] and
//! give it back with [`NetDevice::recycle`] once smoltcp has parsed it (no copy besides smoltcp's own into
//! socket buffers); transmit tokens write straight into the device's slot through [`NetDevice::transmit`], or,
//! on a NIC with TCP segmentation offload, into the [`Coalescer`] that merges each flow's segments for
//! [`NetDevice::transmit_gso`]. With receive checksum offload smoltcp verifies no TCP/UDP checksum; frames
//! the device did not mark valid ([`RxFrame::checksum_valid`]) are verified here instead.

use crate::gso::{Coalescer, Out};
use alloc::collections::VecDeque;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::sync::atomic::{AtomicU64, Ordering};
use libos::dev::{DeviceError, NetDevice, NetInfo, RxFrame};
use smoltcp::phy::{self, Checksum, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use smoltcp::wire::{
    EthernetFrame, EthernetProtocol, IpAddress, IpProtocol, Ipv4Packet, TcpPacket, UdpPacket, ETHERNET_HEADER_LEN,
};

/// Most frames held back while DHCP has not bound an address.
pub(crate) const MAX_HELD: usize = 16;

/// A received frame held back until the interface has an address, with when it arrived (ns since boot).
pub(crate) struct Held {
    pub frame: RxFrame,
    pub at_ns: u64,
}

/// Whether `frame` is a unicast IPv4 TCP segment for us. Before the DHCP lease such a segment (slirp
/// forwards a SYN as soon as the DHCP DISCOVER told it our MAC) cannot be matched to our address; it is
/// held and handed to smoltcp once the lease is bound instead of being dropped.
fn worth_holding(frame: &[u8], mac: &[u8; 6]) -> bool {
    let Ok(eth) = EthernetFrame::new_checked(frame) else { return false };
    if eth.dst_addr().as_bytes() != mac || eth.ethertype() != EthernetProtocol::Ipv4 {
        return false;
    }
    Ipv4Packet::new_checked(eth.payload()).is_ok_and(|ip| ip.next_header() == IpProtocol::Tcp)
}

/// Whether the TCP/UDP checksum of an IPv4 frame is right (RFC 793 §3.1, RFC 768); frames that are not IPv4
/// TCP/UDP pass (smoltcp checks the rest).
fn l4_checksum_ok(frame: &[u8]) -> bool {
    let Ok(eth) = EthernetFrame::new_checked(frame) else { return true };
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return true;
    }
    let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else { return true };
    if ip.more_frags() || ip.frag_offset() != 0 {
        return true;
    }
    let (src, dst) = (IpAddress::Ipv4(ip.src_addr()), IpAddress::Ipv4(ip.dst_addr()));
    let len = usize::from(ip.total_len()).saturating_sub(usize::from(ip.header_len()));
    let Some(l4) = ip.payload().get(..len) else { return false };
    match ip.next_header() {
        IpProtocol::Tcp => TcpPacket::new_checked(l4).is_ok_and(|t| t.verify_checksum(&src, &dst)),
        // A zero UDP checksum means "none" (RFC 768).
        IpProtocol::Udp => UdpPacket::new_checked(l4).is_ok_and(|u| u.checksum() == 0 || u.verify_checksum(&src, &dst)),
        _ => true,
    }
}

/// Frame counters of one stack (frames and bytes, Ethernet headers included).
#[derive(Default)]
pub(crate) struct Counters {
    pub rx_frames: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub tx_frames: AtomicU64,
    pub tx_bytes: AtomicU64,
    /// Frames smoltcp produced that the device refused (ring full, too large).
    pub tx_dropped: AtomicU64,
    /// Device errors on receive or recycle.
    pub rx_errors: AtomicU64,
    /// Received frames dropped for a bad TCP/UDP checksum (software check behind receive offload).
    pub rx_bad_checksum: AtomicU64,
    /// Large frames handed to the device for segmentation (TSO).
    pub tx_gso_frames: AtomicU64,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// smoltcp capabilities of a NIC: Ethernet, frame MTU = IP MTU + 14, and checksum work smoltcp may skip —
/// with receive offload the device marks the frames it verified and [`Phy`] checks the others, with transmit
/// offload the device fills them.
pub(crate) fn capabilities(info: &NetInfo) -> DeviceCapabilities {
    let l4 = match (info.offloads.rx_checksum, info.offloads.tx_checksum) {
        (false, false) => Checksum::Both,
        (true, false) => Checksum::Tx,
        (false, true) => Checksum::Rx,
        (true, true) => Checksum::None,
    };
    let mut checksum = ChecksumCapabilities::default();
    checksum.tcp = l4;
    checksum.udp = l4;
    let mut caps = DeviceCapabilities::default();
    caps.medium = Medium::Ethernet;
    caps.max_transmission_unit = info.mtu + ETHERNET_HEADER_LEN;
    caps.max_burst_size = None;
    caps.checksum = checksum;
    caps
}

/// One poll round's view of the device. The `RefCell` lets the receive and transmit tokens smoltcp holds
/// at the same time (a reply is sent from inside the receive closure) reach the device one after the other.
pub(crate) struct Phy<'d> {
    dev: RefCell<&'d mut dyn NetDevice>,
    caps: DeviceCapabilities,
    counters: &'d Counters,
    /// First fatal device error (protocol/I/O) seen this round.
    error: RefCell<Option<DeviceError>>,
    /// Frames held back before the DHCP lease; see [`worth_holding`].
    held: &'d mut VecDeque<Held>,
    /// `Some((our MAC, now))` while frames should be held, `None` once they should be released.
    hold: Option<([u8; 6], u64)>,
    /// TCP segment merging, on a NIC with segmentation offload; see [`crate::gso`].
    gso: Option<RefCell<Gso<'d>>>,
    /// Whether received frames need a software TCP/UDP checksum check unless marked valid.
    verify_rx: bool,
}

/// The coalescer of a stack and the buffer smoltcp builds each frame in before it is merged.
pub(crate) struct Gso<'d> {
    coalescer: &'d mut Coalescer,
    staging: Vec<u8>,
}

impl<'d> Phy<'d> {
    pub(crate) fn new(
        dev: &'d mut dyn NetDevice,
        caps: DeviceCapabilities,
        counters: &'d Counters,
        held: &'d mut VecDeque<Held>,
        hold: Option<([u8; 6], u64)>,
        gso: Option<&'d mut Coalescer>,
    ) -> Self {
        let verify_rx = dev.info().offloads.rx_checksum;
        let gso = gso.map(|coalescer| RefCell::new(Gso { coalescer, staging: Vec::new() }));
        Self { dev: RefCell::new(dev), caps, counters, error: RefCell::new(None), held, hold, gso, verify_rx }
    }

    /// Whether a frame may be built now: a transmit slot for it, and one for every merged frame the
    /// coalescer may have to send first (so merged frames are never dropped for a full ring).
    fn can_build(&mut self) -> bool {
        match &self.gso {
            None => self.dev.get_mut().can_transmit(),
            Some(g) => {
                let pending = g.borrow().coalescer.pending();
                self.dev.get_mut().transmit_slots(pending + 2) >= pending + 2
            }
        }
    }

    /// Sends every merged frame still open (call before the device is flushed).
    pub(crate) fn flush_gso(&self) {
        if let Some(g) = &self.gso {
            let mut g = g.borrow_mut();
            g.coalescer.flush(&mut |o| self.send(o));
        }
    }

    /// Hands one coalescer output to the device.
    fn send(&self, out: Out<'_>) {
        let mut dev = self.dev.borrow_mut();
        let res = match out {
            Out::Frame(f) => {
                let len = f.len();
                dev.transmit(len, &mut |buf| buf.copy_from_slice(f)).map(|()| len)
            }
            Out::Gso(frame, gso) => {
                let len = frame.len();
                add(&self.counters.tx_gso_frames, 1);
                dev.transmit_gso(frame, gso).map(|()| len).map_err(|(e, _)| e)
            }
        };
        match res {
            Ok(len) => {
                add(&self.counters.tx_frames, 1);
                add(&self.counters.tx_bytes, len as u64);
            }
            Err(e) => {
                add(&self.counters.tx_dropped, 1);
                log::debug!("frame dropped: {e}");
            }
        }
    }

    /// The first fatal device error of this round, if any.
    pub(crate) fn take_error(&self) -> Option<DeviceError> {
        self.error.borrow_mut().take()
    }

    fn record(&self, e: DeviceError) {
        add(&self.counters.rx_errors, 1);
        let mut slot = self.error.borrow_mut();
        if slot.is_none() {
            *slot = Some(e);
        }
    }
}

/// Receive token: owns the frame until smoltcp has consumed it.
pub(crate) struct RxToken<'p, 'd> {
    phy: &'p Phy<'d>,
    frame: RxFrame,
}

/// Transmit token: one frame into the device's transmit ring.
pub(crate) struct TxToken<'p, 'd> {
    phy: &'p Phy<'d>,
}

impl<'d> phy::Device for Phy<'d> {
    type RxToken<'a>
        = RxToken<'a, 'd>
    where
        Self: 'a;
    type TxToken<'a>
        = TxToken<'a, 'd>
    where
        Self: 'a;

    fn receive(&mut self, _timestamp: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        // smoltcp may answer a frame at once (ARP reply, RST); with the transmit ring full, leave received
        // frames in the ring until a completion frees a slot (the device wakes the net task then).
        if !self.can_build() {
            return None;
        }
        let frame = match self.hold {
            None => self.held.pop_front().map(|h| h.frame),
            Some(_) => None,
        };
        let frame = match frame {
            Some(f) => f,
            None => loop {
                match self.dev.get_mut().receive() {
                    Ok(Some(frame)) => {
                        add(&self.counters.rx_frames, 1);
                        add(&self.counters.rx_bytes, frame.len as u64);
                        if self.verify_rx
                            && !frame.checksum_valid
                            && !frame
                                .buf
                                .get(frame.offset..)
                                .is_some_and(|b| l4_checksum_ok(b.get(..frame.len).unwrap_or(&[])))
                        {
                            add(&self.counters.rx_bad_checksum, 1);
                            if let Err(e) = self.dev.get_mut().recycle(frame) {
                                self.record(e);
                            }
                            continue;
                        }
                        if let Some((mac, now)) = self.hold {
                            if self.held.len() < MAX_HELD && worth_holding(frame.frame(), &mac) {
                                self.held.push_back(Held { frame, at_ns: now });
                                continue;
                            }
                        }
                        break frame;
                    }
                    Ok(None) => return None,
                    Err(e) => {
                        self.record(e);
                        return None;
                    }
                }
            },
        };
        let this: &Self = self;
        Some((RxToken { phy: this, frame }, TxToken { phy: this }))
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<Self::TxToken<'_>> {
        if self.can_build() {
            Some(TxToken { phy: self })
        } else {
            None
        }
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.caps.clone()
    }
}

impl phy::RxToken for RxToken<'_, '_> {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        let RxToken { phy, frame } = self;
        // A frame whose offset/len lie outside its buffer is the device's bug: drop it, but still recycle.
        let r = match frame.buf.get(frame.offset..frame.offset.saturating_add(frame.len)) {
            Some(bytes) => f(bytes),
            None => f(&[]),
        };
        if let Err(e) = phy.dev.borrow_mut().recycle(frame) {
            phy.record(e);
        }
        r
    }
}

impl phy::TxToken for TxToken<'_, '_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        if let Some(g) = &self.phy.gso {
            // Built aside, then merged or passed on by the coalescer.
            let mut g = g.borrow_mut();
            let Gso { coalescer, staging } = &mut *g;
            if staging.len() < len {
                staging.resize(len, 0);
            }
            let frame = &mut staging[..len];
            let r = f(frame);
            coalescer.push(frame, &mut |o| self.phy.send(o));
            return r;
        }
        let mut f = Some(f);
        let mut out = None;
        let res = self.phy.dev.borrow_mut().transmit(len, &mut |buf| {
            if let Some(f) = f.take() {
                out = Some(f(buf));
            }
        });
        match res {
            Ok(()) => {
                add(&self.phy.counters.tx_frames, 1);
                add(&self.phy.counters.tx_bytes, len as u64);
            }
            Err(e) => {
                add(&self.phy.counters.tx_dropped, 1);
                log::debug!("frame of {len} bytes dropped: {e}");
            }
        }
        match (out, f) {
            (Some(r), _) => r,
            // The device refused the frame without calling `fill`: smoltcp still has to build it (its
            // state advances as if sent; TCP retransmits), so give it a scratch buffer.
            (None, Some(f)) => f(&mut vec![0u8; len]),
            // `out` is None only while `f` was never taken: `fill` sets `out` whenever it takes `f`.
            (None, None) => unreachable!("transmit closure taken without a result"),
        }
    }
}
