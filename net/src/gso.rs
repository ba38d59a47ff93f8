//! Transmit segmentation offload from below the stack: smoltcp emits MSS-sized TCP segments, one per socket
//! and egress pass, so the segments of a bulk transfer leave as a run per flow, interleaved with other flows.
//! [`Coalescer`] merges each flow's run of consecutive full-sized segments into one large frame that the NIC
//! cuts up again ([`NetDevice::transmit_gso`]): one descriptor and one device notification per 64 KiB instead
//! of per 1460 bytes, for virtio-net, Xen netfront and Hyper-V netvsc alike, with smoltcp unchanged.
//!
//! Why here and not in smoltcp: the TCP engine stays the audited upstream one; merging is a pure function over
//! wire bytes (host-tested against the segmentation rules of virtio 1.2 §5.1.6.2 and Linux `tcp_gso_segment`:
//! every segment but the last carries exactly `mss` bytes, and the device copies the first segment's headers
//! with IP length/ID, TCP sequence number, PSH/FIN (last only) and checksums made right). What it costs is one
//! copy of the payload into the merged frame.
//!
//! A segment joins its flow's open frame only if it continues it exactly: same addresses, ports,
//! acknowledgment number, window and options; sequence number = the frame's end; flags ACK (+PSH on the last);
//! the open frame's segments so far all `mss` long. Anything else (SYN, FIN, RST, URG, ECE/CWR, a pure ACK, IP
//! options or fragments, a short segment followed by more) first sends the flow's open frame, keeping the
//! flow's order. Frames of other flows and non-TCP frames pass straight through.
#![forbid(unsafe_code)]

use alloc::vec::Vec;
use libos::dev::{Gso, GsoKind};
use smoltcp::wire::{EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet, TcpPacket};

/// Largest merged frame (bytes): the IPv4 total length field's limit plus the Ethernet header; a device may
/// take less ([`NetOffloads::gso_max_frame`](libos::dev::NetOffloads::gso_max_frame)).
pub(crate) const MAX_FRAME: usize = libos::dev::MAX_GSO_FRAME;
/// Flows with an open frame at once; a new flow beyond this sends the oldest one's frame first.
pub(crate) const MAX_FLOWS: usize = 8;

const ETH_LEN: usize = 14;
const IPV4_LEN: usize = 20;
/// TCP flags that may appear in a mergeable segment: ACK (required), PSH.
const FLAG_PSH: u8 = 0x08;
const FLAG_ACK: u8 = 0x10;

/// What the coalescer hands to the device.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Out<'a> {
    /// An ordinary frame, as smoltcp built it.
    Frame(&'a [u8]),
    /// A merged frame for the device to segment.
    Gso(Vec<u8>, Gso),
}

/// Addresses and ports of an IPv4 TCP flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FlowKey {
    addrs: [u8; 8],
    ports: [u8; 4],
}

/// A mergeable segment: its flow and where its parts lie in the frame.
struct Segment {
    key: FlowKey,
    /// Ethernet + IPv4 + TCP header length (bytes).
    hdr_len: usize,
    seq: u32,
    payload: usize,
    psh: bool,
}

/// Reads `frame` as Ethernet + IPv4 (no options, not a fragment) + TCP with ACK and at most PSH besides, and
/// a payload. `Err(Some(key))`: TCP of flow `key` that cannot be merged; `Err(None)`: not IPv4 TCP.
fn parse(frame: &[u8]) -> Result<Segment, Option<FlowKey>> {
    let eth = EthernetFrame::new_checked(frame).map_err(|_| None)?;
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return Err(None);
    }
    let ip = Ipv4Packet::new_checked(eth.payload()).map_err(|_| None)?;
    if ip.next_header() != IpProtocol::Tcp {
        return Err(None);
    }
    let tcp = TcpPacket::new_checked(ip.payload()).map_err(|_| None)?;
    let raw_ip = eth.payload();
    let key = FlowKey {
        addrs: raw_ip[12..20].try_into().map_err(|_| None)?,
        ports: ip.payload()[0..4].try_into().map_err(|_| None)?,
    };
    let flags = ip.payload()[13];
    let ihl = usize::from(ip.header_len());
    let fragment = ip.more_frags() || ip.frag_offset() != 0;
    let hdr_len = ETH_LEN + ihl + usize::from(tcp.header_len());
    let payload = usize::from(ip.total_len()).saturating_sub(ihl + usize::from(tcp.header_len()));
    if ihl != IPV4_LEN || fragment || flags & !FLAG_PSH != FLAG_ACK || payload == 0 || hdr_len + payload > frame.len() {
        return Err(Some(key));
    }
    Ok(Segment { key, hdr_len, seq: tcp.seq_number().0 as u32, payload, psh: flags & FLAG_PSH != 0 })
}

/// One flow's merged frame under construction.
struct Open {
    key: FlowKey,
    /// The frame: the first segment's headers, then the payload of every segment so far.
    buf: Vec<u8>,
    hdr_len: usize,
    /// Payload of the first segment: every segment but the last has this length.
    mss: usize,
    segments: usize,
    /// Sequence number the next segment must start at.
    next_seq: u32,
    /// The last segment was shorter than `mss`: nothing may follow it.
    closed: bool,
    psh: bool,
}

impl Open {
    /// Whether `seg` (in `frame`) continues this frame: see the module docs.
    fn continues(&self, seg: &Segment, frame: &[u8], max_frame: usize) -> bool {
        let (a, b) = (&self.buf[..self.hdr_len], &frame[..seg.hdr_len]);
        // Headers equal apart from IP total length (16..18), ID (18..20), checksum (24..26) and TCP sequence
        // number (38..42), flags (47) and checksum (50..52), offsets from the frame start.
        let same = |r: core::ops::Range<usize>| a.get(r.clone()) == b.get(r);
        !self.closed
            && seg.hdr_len == self.hdr_len
            && seg.seq == self.next_seq
            && seg.payload <= self.mss
            && self.buf.len() + seg.payload <= max_frame
            && same(0..16)
            && same(20..24)
            && same(26..38)
            && same(42..47)
            && same(48..50)
            && same(52..self.hdr_len)
    }

    /// Whether `payload` more bytes fit in the buffer, growing it at the second segment to `max_frame` at once
    /// (one reallocation per merged frame). False when memory is short: the frame is sent as it is.
    fn room_for(&mut self, payload: usize, max_frame: usize) -> bool {
        let free = self.buf.capacity() - self.buf.len();
        free >= payload || self.buf.try_reserve_exact(max_frame.max(self.buf.len() + payload) - self.buf.len()).is_ok()
    }
}

/// Merges runs of TCP segments per flow (see the module docs). Feed every transmitted frame to
/// [`push`](Self::push) in order and call [`flush`](Self::flush) before the device is notified.
pub(crate) struct Coalescer {
    open: Vec<Open>,
    /// Largest merged frame the device takes (bytes, at most [`MAX_FRAME`]).
    max_frame: usize,
}

impl Coalescer {
    /// A coalescer making frames of at most `max_frame` bytes (capped at [`MAX_FRAME`]).
    pub(crate) fn new(max_frame: usize) -> Self {
        Self { open: Vec::new(), max_frame: max_frame.min(MAX_FRAME) }
    }

    /// Flows with a frame under construction: what [`flush`](Self::flush) may send at most.
    pub(crate) fn pending(&self) -> usize {
        self.open.len()
    }

    /// Takes one frame smoltcp built; hands `out` whatever must go to the device now (the frame itself, or
    /// a flow's merged frame it ends). A mergeable segment is kept instead.
    pub(crate) fn push(&mut self, frame: &[u8], out: &mut dyn FnMut(Out<'_>)) {
        let seg = match parse(frame) {
            Ok(seg) => seg,
            Err(key) => {
                if let Some(i) = key.and_then(|k| self.find(k)) {
                    emit(self.open.remove(i), out);
                }
                out(Out::Frame(frame));
                return;
            }
        };
        if let Some(i) = self.find(seg.key) {
            let o = &mut self.open[i];
            if o.continues(&seg, frame, self.max_frame) && o.room_for(seg.payload, self.max_frame) {
                o.buf.extend_from_slice(&frame[seg.hdr_len..seg.hdr_len + seg.payload]);
                o.segments += 1;
                o.next_seq = seg.seq.wrapping_add(seg.payload as u32);
                o.closed = seg.payload < o.mss;
                o.psh |= seg.psh;
                return;
            }
            emit(self.open.remove(i), out);
        } else if self.open.len() >= MAX_FLOWS {
            emit(self.open.remove(0), out);
        }
        // Sized for this segment alone: most flows (a small response) never get a second one. Short of
        // memory, the segment leaves unmerged rather than failing the guest.
        let mut buf = Vec::new();
        if buf.try_reserve_exact(seg.hdr_len + seg.payload).is_err() {
            out(Out::Frame(frame));
            return;
        }
        buf.extend_from_slice(&frame[..seg.hdr_len + seg.payload]);
        self.open.push(Open {
            key: seg.key,
            buf,
            hdr_len: seg.hdr_len,
            mss: seg.payload,
            segments: 1,
            next_seq: seg.seq.wrapping_add(seg.payload as u32),
            closed: false,
            psh: seg.psh,
        });
    }

    /// Hands every open frame to `out`.
    pub(crate) fn flush(&mut self, out: &mut dyn FnMut(Out<'_>)) {
        for o in self.open.drain(..) {
            emit(o, out);
        }
    }

    fn find(&self, key: FlowKey) -> Option<usize> {
        self.open.iter().position(|o| o.key == key)
    }
}

/// Sends an open frame: as it was when it holds one segment, else with the IP total length and header
/// checksum for the whole and PSH if any segment had it, as a GSO frame.
fn emit(mut o: Open, out: &mut dyn FnMut(Out<'_>)) {
    if o.segments == 1 {
        out(Out::Frame(&o.buf));
        return;
    }
    let total = (o.buf.len() - ETH_LEN) as u16;
    {
        let mut ip = Ipv4Packet::new_unchecked(&mut o.buf[ETH_LEN..]);
        ip.set_total_len(total);
        ip.fill_checksum();
    }
    if o.psh {
        o.buf[ETH_LEN + IPV4_LEN + 13] |= FLAG_PSH;
    }
    // Both fit in u16: hdr_len ≤ 14 + 20 + 60, mss ≤ the frame's payload ≤ 65535.
    let gso = Gso { kind: GsoKind::TcpV4, hdr_len: o.hdr_len as u16, mss: o.mss as u16 };
    out(Out::Gso(o.buf, gso));
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    /// An Ethernet + IPv4 + TCP frame with `payload` (bytes `seq as u8`, `seq + 1`, ...), valid IP checksum.
    fn segment(port: u16, seq: u32, payload: usize, flags: u8, ip_id: u16) -> Vec<u8> {
        let mut f = vec![0x52, 0x54, 0, 0, 0, 2, 0x52, 0x54, 0, 0, 0, 1, 0x08, 0x00];
        let total = (20 + 20 + payload) as u16;
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&ip_id.to_be_bytes());
        f.extend_from_slice(&[0x40, 0, 64, 6, 0, 0, 10, 77, 0, 2, 10, 77, 0, 1]);
        f.extend_from_slice(&port.to_be_bytes());
        f.extend_from_slice(&[0xc0, 0x00]);
        f.extend_from_slice(&seq.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0x10, 0x00, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        f.extend((0..payload).map(|i| seq.wrapping_add(i as u32) as u8));
        Ipv4Packet::new_unchecked(&mut f[14..]).fill_checksum();
        f
    }

    /// Runs frames through a coalescer (flushing at the end) and returns what came out, owned.
    fn run(frames: &[Vec<u8>]) -> Vec<(Vec<u8>, Option<Gso>)> {
        run_limited(frames, MAX_FRAME)
    }

    /// [`run`] for a device taking frames of at most `max_frame` bytes.
    fn run_limited(frames: &[Vec<u8>], max_frame: usize) -> Vec<(Vec<u8>, Option<Gso>)> {
        let mut c = Coalescer::new(max_frame);
        let mut got = Vec::new();
        let mut sink = |o: Out<'_>| match o {
            Out::Frame(f) => got.push((f.to_vec(), None)),
            Out::Gso(f, g) => got.push((f, Some(g))),
        };
        for f in frames {
            c.push(f, &mut sink);
        }
        c.flush(&mut sink);
        got
    }

    /// What the device does with a GSO frame (virtio 1.2 §5.1.6.2, Linux `tcp_gso_segment`): headers copied,
    /// IP length/ID and TCP sequence number advanced, PSH only on the last segment.
    fn segment_like_a_device(frame: &[u8], gso: Gso) -> Vec<Vec<u8>> {
        let h = usize::from(gso.hdr_len);
        let mss = usize::from(gso.mss);
        let first_seq = u32::from_be_bytes(frame[38..42].try_into().unwrap());
        let first_id = u16::from_be_bytes([frame[18], frame[19]]);
        let chunks: Vec<&[u8]> = frame[h..].chunks(mss).collect();
        let n = chunks.len();
        chunks
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut s = frame[..h].to_vec();
                s.extend_from_slice(c);
                let total = (s.len() - 14) as u16;
                s[16..18].copy_from_slice(&total.to_be_bytes());
                s[18..20].copy_from_slice(&first_id.wrapping_add(i as u16).to_be_bytes());
                s[38..42].copy_from_slice(&first_seq.wrapping_add((i * mss) as u32).to_be_bytes());
                if i + 1 < n {
                    s[47] &= !FLAG_PSH;
                }
                Ipv4Packet::new_unchecked(&mut s[14..]).fill_checksum();
                s
            })
            .collect()
    }

    /// Equal apart from the IP ID (the device numbers the segments from the first one's ID).
    fn same_but_id(a: &[u8], b: &[u8]) -> bool {
        a.len() == b.len() && a[..18] == b[..18] && a[20..24] == b[20..24] && a[26..] == b[26..]
    }

    #[test]
    fn a_run_of_full_segments_becomes_one_gso_frame_that_segments_back() {
        let segs: Vec<Vec<u8>> = (0..5u32)
            .map(|i| {
                let len = if i == 4 { 100 } else { 1460 };
                segment(80, 1000 + i * 1460, len, if i == 4 { FLAG_ACK | FLAG_PSH } else { FLAG_ACK }, 7 + i as u16)
            })
            .collect();
        let got = run(&segs);
        assert_eq!(got.len(), 1);
        let (frame, gso) = &got[0];
        let gso = gso.expect("merged");
        assert_eq!(gso, Gso { kind: GsoKind::TcpV4, hdr_len: 54, mss: 1460 });
        assert_eq!(frame.len(), 54 + 4 * 1460 + 100);
        let ip = Ipv4Packet::new_checked(&frame[14..]).unwrap();
        assert_eq!(usize::from(ip.total_len()), frame.len() - 14);
        assert!(ip.verify_checksum(), "IP header checksum of the merged frame");
        let back = segment_like_a_device(frame, gso);
        assert_eq!(back.len(), segs.len());
        for (b, s) in back.iter().zip(&segs) {
            assert!(same_but_id(b, s), "segment boundaries, sequence numbers and flags as sent");
        }
    }

    #[test]
    fn interleaved_flows_merge_separately() {
        let mut frames = Vec::new();
        for i in 0..3u32 {
            frames.push(segment(80, i * 1000, 1000, FLAG_ACK, 0));
            frames.push(segment(81, 50_000 + i * 1000, 1000, FLAG_ACK, 0));
        }
        let got = run(&frames);
        assert_eq!(got.len(), 2);
        for (f, g) in &got {
            assert_eq!(g.unwrap().mss, 1000);
            assert_eq!(f.len(), 54 + 3000);
        }
    }

    #[test]
    fn a_single_segment_and_non_tcp_frames_pass_unchanged() {
        let one = segment(80, 1, 500, FLAG_ACK | FLAG_PSH, 3);
        let arp = vec![0xffu8; 42];
        let got = run(&[one.clone(), arp.clone()]);
        assert_eq!(got, vec![(arp, None), (one, None)], "ARP passes at once, the open frame at the flush");
    }

    #[test]
    fn what_breaks_a_run_sends_the_open_frame_first() {
        // A gap in sequence numbers, a pure ACK, a FIN, a short segment followed by more, a new window.
        let a = segment(80, 0, 1000, FLAG_ACK, 0);
        let b = segment(80, 1000, 1000, FLAG_ACK, 0);
        let gap = segment(80, 5000, 1000, FLAG_ACK, 0);
        let got = run(&[a.clone(), b.clone(), gap.clone()]);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].1.unwrap().mss, 1000);
        assert_eq!(got[1], (gap, None));

        let pure_ack = segment(80, 2000, 0, FLAG_ACK, 0);
        let got = run(&[a.clone(), b.clone(), pure_ack.clone()]);
        assert_eq!(got.len(), 2);
        assert!(got[0].1.is_some());
        assert_eq!(got[1], (pure_ack, None), "the ACK leaves after the data before it");

        let fin = segment(80, 2000, 10, FLAG_ACK | 0x01, 0);
        let got = run(&[a.clone(), b.clone(), fin.clone()]);
        assert_eq!(got[1], (fin, None));

        let short = segment(80, 1000, 10, FLAG_ACK, 0);
        let after = segment(80, 1010, 1000, FLAG_ACK, 0);
        let got = run(&[a.clone(), short, after.clone()]);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0.len(), 54 + 1010);
        assert_eq!(got[1], (after, None));

        let mut window = b.clone();
        window[48] = 0x10;
        let got = run(&[a.clone(), window]);
        assert_eq!(got.len(), 2, "a different window starts a new frame");
        assert!(got.iter().all(|(_, g)| g.is_none()));
    }

    #[test]
    fn the_frame_stops_at_the_ipv4_length_limit() {
        let frames: Vec<Vec<u8>> = (0..50u32).map(|i| segment(80, i * 1460, 1460, FLAG_ACK, 0)).collect();
        let got = run(&frames);
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|(f, _)| f.len() <= MAX_FRAME));
        let total: usize = got.iter().map(|(f, _)| f.len() - 54).sum();
        assert_eq!(total, 50 * 1460, "no payload lost or repeated");
        // A device with a smaller limit (Xen: XEN_NETIF_MAX_TX_SIZE, Hyper-V: the host's LSOv2 size).
        for limit in [65535, 62_780, 54 + 3 * 1460] {
            let got = run_limited(&frames, limit);
            assert!(got.iter().all(|(f, _)| f.len() <= limit), "{limit}");
            let total: usize = got.iter().map(|(f, _)| f.len() - 54).sum();
            assert_eq!(total, 50 * 1460, "no payload lost or repeated under {limit}");
        }
    }

    #[test]
    fn more_flows_than_slots_send_the_oldest() {
        let frames: Vec<Vec<u8>> = (0..=MAX_FLOWS as u16).map(|p| segment(1000 + p, 0, 100, FLAG_ACK, 0)).collect();
        let mut c = Coalescer::new(MAX_FRAME);
        let mut sent = Vec::new();
        for f in &frames {
            c.push(f, &mut |o| {
                if let Out::Frame(f) = o {
                    sent.push(f.to_vec())
                }
            });
        }
        assert_eq!(sent, vec![frames[0].clone()]);
        assert_eq!(c.pending(), MAX_FLOWS);
    }

    #[test]
    fn truncated_and_lying_frames_pass_through() {
        let mut lying = segment(80, 0, 100, FLAG_ACK, 0);
        lying[16..18].copy_from_slice(&2000u16.to_be_bytes()); // IP length beyond the frame
        let short = segment(80, 0, 100, FLAG_ACK, 0)[..30].to_vec();
        let mut options = segment(80, 0, 100, FLAG_ACK, 0);
        options[14] = 0x46; // IHL 6: IP options
        for f in [lying, short, options] {
            assert_eq!(run(core::slice::from_ref(&f)), vec![(f, None)]);
        }
    }
}
