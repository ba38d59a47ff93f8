//! `PipeNic`: two in-memory NICs joined back to back, modelled on a virtio-net device — a fixed receive
//! ring whose buffers come back only through `recycle` and are reposted at `flush`, a bounded transmit
//! ring that `flush` empties, a 12-byte device header before each received frame, and a queue per
//! direction playing the wire (frames beyond its capacity are dropped, as a host backend would).

use libos::dev::{DeviceError, Gso, NetDevice, NetInfo, NetOffloads, RxFrame};
use smoltcp::wire::{IpAddress, Ipv4Packet, TcpPacket};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::task::Waker;

/// Receive buffers per NIC.
pub const RX_RING: usize = 64;
/// Transmit slots per NIC.
pub const TX_RING: usize = 32;
/// Bytes of fake device header before each received frame (virtio_net_hdr_v1 is 12).
pub const RX_HEADER: usize = 12;
const RX_BUF: usize = RX_HEADER + 1514;
/// Frames a direction of the wire holds before it drops.
const WIRE_CAPACITY: usize = 1024;

/// Counters of one NIC.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NicCounters {
    pub received: u64,
    pub recycled: u64,
    pub transmitted: u64,
    pub wire_dropped: u64,
    pub errors: u64,
    /// Large frames the NIC segmented (TSO).
    pub gso_frames: u64,
}

#[derive(Default)]
struct Shared {
    /// `wire[i]`: frames travelling towards side `i`.
    wire: [VecDeque<Vec<u8>>; 2],
    wakers: [Option<Waker>; 2],
    counters: [NicCounters; 2],
}

/// Test-side view of a pipe.
#[derive(Clone)]
pub struct Pipe(Arc<Mutex<Shared>>);

impl Pipe {
    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn counters(&self, side: usize) -> NicCounters {
        self.lock().counters[side]
    }
}

/// One end of the pipe.
pub struct PipeNic {
    side: usize,
    pipe: Pipe,
    info: NetInfo,
    /// Receive buffers by slot; `None` while lent out in an `RxFrame`.
    slots: Vec<Option<Vec<u8>>>,
    /// Slots the device may fill.
    posted: Vec<usize>,
    /// Slots given back, posted again at the next flush.
    returned: Vec<usize>,
    tx_queue: Vec<Vec<u8>>,
}

/// A connected pair: side 0 with MAC ..:01, side 1 with MAC ..:02.
pub fn pair(offloads: NetOffloads) -> (PipeNic, PipeNic, Pipe) {
    let pipe = Pipe(Arc::new(Mutex::new(Shared::default())));
    let nic = |side: usize| PipeNic {
        side,
        pipe: pipe.clone(),
        info: NetInfo {
            name: format!("pipe{side}"),
            mac: [0x52, 0x54, 0x00, 0x12, 0x34, side as u8 + 1],
            mtu: 1500,
            offloads,
        },
        slots: (0..RX_RING).map(|_| Some(vec![0u8; RX_BUF])).collect(),
        posted: (0..RX_RING).collect(),
        returned: Vec::new(),
        tx_queue: Vec::new(),
    };
    (nic(0), nic(1), pipe)
}

impl PipeNic {
    fn protocol(&self, detail: String) -> DeviceError {
        DeviceError::Protocol { device: self.info.name.clone(), detail }
    }
}

impl NetDevice for PipeNic {
    fn info(&self) -> &NetInfo {
        &self.info
    }

    fn receive(&mut self) -> Result<Option<RxFrame>, DeviceError> {
        let Some(&slot) = self.posted.last() else { return Ok(None) };
        let mut s = self.pipe.lock();
        let Some(frame) = s.wire[self.side].pop_front() else { return Ok(None) };
        s.counters[self.side].received += 1;
        drop(s);
        self.posted.pop();
        let Some(mut buf) = self.slots[slot].take() else {
            return Err(self.protocol(format!("slot {slot} posted while lent out")));
        };
        buf[RX_HEADER..RX_HEADER + frame.len()].copy_from_slice(&frame);
        Ok(Some(RxFrame {
            buf,
            offset: RX_HEADER,
            len: frame.len(),
            token: slot as u32,
            checksum_valid: self.info.offloads.rx_checksum,
        }))
    }

    fn recycle(&mut self, frame: RxFrame) -> Result<(), DeviceError> {
        let slot = frame.token as usize;
        let lent = self.slots.get(slot).is_some_and(|s| s.is_none());
        if !lent || frame.buf.len() != RX_BUF {
            self.pipe.lock().counters[self.side].errors += 1;
            return Err(self.protocol(format!("recycle of slot {slot} that is not lent out")));
        }
        self.slots[slot] = Some(frame.buf);
        self.returned.push(slot);
        self.pipe.lock().counters[self.side].recycled += 1;
        Ok(())
    }

    fn can_transmit(&mut self) -> bool {
        self.tx_queue.len() < TX_RING
    }

    fn transmit(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> Result<(), DeviceError> {
        if self.tx_queue.len() >= TX_RING {
            return Err(DeviceError::Busy { device: self.info.name.clone() });
        }
        if len > self.info.mtu + 14 {
            return Err(DeviceError::TooLarge { device: self.info.name.clone(), len, max: self.info.mtu + 14 });
        }
        let mut f = vec![0u8; len];
        fill(&mut f);
        self.tx_queue.push(f);
        Ok(())
    }

    fn transmit_slots(&mut self, _want: usize) -> usize {
        TX_RING - self.tx_queue.len()
    }

    /// Segments like a virtio-net device (virtio 1.2 §5.1.6.2, Linux `tcp_gso_segment`): the first `hdr_len`
    /// bytes are copied to every segment, with IP length, ID and checksum, TCP sequence number and checksum
    /// recomputed, and PSH kept on the last segment only.
    fn transmit_gso(&mut self, frame: Vec<u8>, gso: Gso) -> Result<(), (DeviceError, Vec<u8>)> {
        let (h, mss) = (usize::from(gso.hdr_len), usize::from(gso.mss));
        let chunks = frame.len().saturating_sub(h).div_ceil(mss.max(1));
        if !self.info.offloads.tso4 || mss == 0 || h < 54 || h >= frame.len() {
            let e = self.protocol(format!("GSO frame of {} bytes with {gso:?}", frame.len()));
            return Err((e, frame));
        }
        // A GSO frame takes one transmit slot, however many segments it makes (as one virtio descriptor chain).
        if self.tx_queue.len() >= 2 * TX_RING {
            return Err((DeviceError::Busy { device: self.info.name.clone() }, frame));
        }
        let seq0 = u32::from_be_bytes([frame[38], frame[39], frame[40], frame[41]]);
        let id0 = u16::from_be_bytes([frame[18], frame[19]]);
        for (i, chunk) in frame[h..].chunks(mss).enumerate() {
            let mut seg = frame[..h].to_vec();
            seg.extend_from_slice(chunk);
            let total = (seg.len() - 14) as u16;
            seg[38..42].copy_from_slice(&seq0.wrapping_add((i * mss) as u32).to_be_bytes());
            if i + 1 < chunks {
                seg[47] &= !0x08; // PSH on the last segment only
            }
            let mut ip = Ipv4Packet::new_unchecked(&mut seg[14..]);
            ip.set_total_len(total);
            ip.set_ident(id0.wrapping_add(i as u16));
            ip.fill_checksum();
            let (src, dst) = (IpAddress::Ipv4(ip.src_addr()), IpAddress::Ipv4(ip.dst_addr()));
            let ihl = usize::from(ip.header_len());
            TcpPacket::new_unchecked(&mut seg[14 + ihl..]).fill_checksum(&src, &dst);
            self.tx_queue.push(seg);
        }
        self.pipe.lock().counters[self.side].gso_frames += 1;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), DeviceError> {
        self.posted.append(&mut self.returned);
        let peer = 1 - self.side;
        let mut s = self.pipe.lock();
        let sent = !self.tx_queue.is_empty();
        for f in self.tx_queue.drain(..) {
            s.counters[self.side].transmitted += 1;
            if s.wire[peer].len() >= WIRE_CAPACITY {
                s.counters[self.side].wire_dropped += 1;
            } else {
                s.wire[peer].push_back(f);
            }
        }
        if sent {
            if let Some(w) = &s.wakers[peer] {
                w.wake_by_ref();
            }
        }
        // Frames waiting for the buffers just reposted: the "device" interrupts again.
        if !self.posted.is_empty() && !s.wire[self.side].is_empty() {
            if let Some(w) = &s.wakers[self.side] {
                w.wake_by_ref();
            }
        }
        Ok(())
    }

    fn set_waker(&mut self, waker: &Waker) {
        self.pipe.lock().wakers[self.side] = Some(waker.clone());
    }
}

/// A bare side of a pipe driven by the test itself (no stack): sends and receives raw frames.
pub struct RawPeer {
    pub nic: PipeNic,
}

impl RawPeer {
    /// The next frame that arrived, if any.
    pub fn recv(&mut self) -> Option<Vec<u8>> {
        let f = self.nic.receive().expect("pipe receive")?;
        let bytes = f.frame().to_vec();
        self.nic.recycle(f).expect("pipe recycle");
        self.nic.flush().expect("pipe flush");
        Some(bytes)
    }

    /// Sends `frame` to the other side.
    pub fn send(&mut self, frame: &[u8]) {
        self.nic.transmit(frame.len(), &mut |b| b.copy_from_slice(frame)).expect("pipe transmit");
        self.nic.flush().expect("pipe flush");
    }
}
