//! Partial TCP/UDP checksums for transmit checksum offload (`VIRTIO_NET_F_CSUM`): the driver stores the
//! folded pseudo-header sum in the L4 checksum field and names the range; the device sums from
//! `csum_start` to the end of the packet and stores the complement at `csum_start + csum_offset`.
//! Source: virtio 1.2 §5.1.6.2 (packet transmission, `VIRTIO_NET_HDR_F_NEEDS_CSUM`); RFC 1071 (Internet
//! checksum); RFC 793 §3.1 / RFC 768 (IPv4 pseudo-header); RFC 8200 §8.1 (IPv6 pseudo-header);
//! IEEE 802.1Q (VLAN tag).
#![forbid(unsafe_code)]

/// Where the device must compute the checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partial {
    /// Offset of the TCP/UDP header in the frame (bytes).
    pub start: u16,
    /// Offset of the checksum field in that header (bytes): 16 for TCP, 6 for UDP.
    pub offset: u16,
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86DD;
const ETHERTYPE_VLAN: u16 = 0x8100;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// RFC 1071 sum of `data` as big-endian 16-bit words (odd tail padded with zero), added to `acc`.
fn sum(data: &[u8], acc: u64) -> u64 {
    data.chunks(2).fold(acc, |a, c| a + u64::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
}

fn fold(mut s: u64) -> u16 {
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// Prepares an Ethernet frame carrying TCP or UDP over IPv4 or IPv6 (optionally one 802.1Q tag, no IPv6
/// extension headers, no IPv4 fragments) for checksum offload: writes the pseudo-header sum into the
/// checksum field, zeroes Ethernet padding after the IP packet (the device sums to the end of the
/// buffer), and returns the range. `None` (frame untouched) for anything else, including truncated or
/// inconsistent headers.
pub fn prepare(frame: &mut [u8]) -> Option<Partial> {
    let (mut ethertype, mut l3) = (be16(frame, 12)?, 14);
    if ethertype == ETHERTYPE_VLAN {
        (ethertype, l3) = (be16(frame, 16)?, 18);
    }
    let (proto, l4, l4_len, pseudo) = match ethertype {
        ETHERTYPE_IPV4 => {
            let ip = frame.get(l3..l3 + 20)?;
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let total = usize::from(be16(ip, 2)?);
            // More Fragments or a fragment offset: the checksum spans fragments, nothing to offload.
            if ip[0] >> 4 != 4 || ihl < 20 || total < ihl || be16(ip, 6)? & 0x3fff != 0 {
                return None;
            }
            let len = total - ihl;
            (ip[9], l3 + ihl, len, sum(&ip[12..20], u64::from(ip[9]) + len as u64))
        }
        ETHERTYPE_IPV6 => {
            let ip = frame.get(l3..l3 + 40)?;
            if ip[0] >> 4 != 6 {
                return None;
            }
            let len = usize::from(be16(ip, 4)?);
            (ip[6], l3 + 40, len, sum(&ip[8..40], u64::from(ip[6]) + len as u64))
        }
        _ => return None,
    };
    let (offset, min_len) = match proto {
        PROTO_TCP => (16, 20),
        PROTO_UDP => (6, 8),
        _ => return None,
    };
    let end = l4.checked_add(l4_len)?;
    if l4_len < min_len || end > frame.len() {
        return None;
    }
    let start = u16::try_from(l4).ok()?;
    frame[end..].fill(0);
    frame[l4 + offset..l4 + offset + 2].copy_from_slice(&fold(pseudo).to_be_bytes());
    Some(Partial { start, offset: offset as u16 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;

    /// RFC 1071 checksum of `bytes`, computed the plain way (independent of `prepare`).
    fn rfc1071(bytes: &[u8]) -> u16 {
        let mut s: u32 = 0;
        for c in bytes.chunks(2) {
            s += u32::from(c[0]) << 8 | u32::from(*c.get(1).unwrap_or(&0));
        }
        while s > 0xffff {
            s = (s >> 16) + (s & 0xffff);
        }
        !(s as u16)
    }

    /// What the device does with a partial checksum (virtio 1.2 §5.1.6.2).
    fn device_completes(frame: &mut [u8], p: Partial) {
        let (s, o) = (usize::from(p.start), usize::from(p.offset));
        let c = rfc1071(&frame[s..]);
        frame[s + o..s + o + 2].copy_from_slice(&c.to_be_bytes());
    }

    fn eth(ethertype: u16, vlan: bool) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        if vlan {
            f.extend_from_slice(&[0x81, 0x00, 0x00, 0x05]);
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
        f
    }

    fn ipv4(proto: u8, l4: &[u8], flags_frag: u16) -> Vec<u8> {
        let total = (20 + l4.len()) as u16;
        let mut ip = vec![0x45, 0];
        ip.extend_from_slice(&total.to_be_bytes());
        ip.extend_from_slice(&[0, 1]);
        ip.extend_from_slice(&flags_frag.to_be_bytes());
        ip.extend_from_slice(&[64, proto, 0, 0, 10, 0, 2, 15, 10, 0, 2, 2]);
        let c = rfc1071(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        ip.extend_from_slice(l4);
        ip
    }

    fn tcp_segment(payload: &[u8]) -> Vec<u8> {
        let mut t = vec![0x1f, 0x90, 0xc0, 0x01, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0];
        t.extend_from_slice(payload);
        t
    }

    /// Checks the device-completed checksum against RFC 1071 over an explicit pseudo-header + segment.
    fn verify(frame: &[u8], pseudo_addrs: &[u8], proto: u8, l4_start: usize, l4_len: usize, field: usize) {
        let seg = &frame[l4_start..l4_start + l4_len];
        let mut zeroed = seg.to_vec();
        zeroed[field..field + 2].fill(0);
        let mut ph = pseudo_addrs.to_vec();
        if pseudo_addrs.len() == 8 {
            ph.extend_from_slice(&[0, proto]);
            ph.extend_from_slice(&(l4_len as u16).to_be_bytes());
        } else {
            ph.extend_from_slice(&(l4_len as u32).to_be_bytes());
            ph.extend_from_slice(&[0, 0, 0, proto]);
        }
        let expected = rfc1071(&[ph.clone(), zeroed].concat());
        assert_eq!(u16::from_be_bytes([seg[field], seg[field + 1]]), expected);
        assert_eq!(rfc1071(&[ph, seg.to_vec()].concat()), 0, "a receiver's verification passes");
    }

    #[test]
    fn ipv4_tcp_odd_payload() {
        let mut f = eth(ETHERTYPE_IPV4, false);
        f.extend(ipv4(PROTO_TCP, &tcp_segment(b"HTTP/1.1 200 OK\r\n\r\nhello"), 0x4000));
        let p = prepare(&mut f).unwrap();
        assert_eq!(p, Partial { start: 34, offset: 16 });
        device_completes(&mut f, p);
        verify(&f, &[10, 0, 2, 15, 10, 0, 2, 2], PROTO_TCP, 34, f.len() - 34, 16);
    }

    #[test]
    fn vlan_ipv4_udp_with_padding() {
        let mut f = eth(ETHERTYPE_IPV4, true);
        let udp = [0x00, 0x35, 0xc0, 0x00, 0x00, 0x0b, 0x00, 0x00, b'x', b'y', b'z'];
        f.extend(ipv4(PROTO_UDP, &udp, 0));
        let l4_len = udp.len();
        f.extend_from_slice(&[0xAA; 7]); // stale bytes after the IP packet
        let p = prepare(&mut f).unwrap();
        assert_eq!(p, Partial { start: 38, offset: 6 });
        assert!(f[38 + l4_len..].iter().all(|&b| b == 0), "padding zeroed");
        device_completes(&mut f, p);
        verify(&f, &[10, 0, 2, 15, 10, 0, 2, 2], PROTO_UDP, 38, l4_len, 6);
    }

    #[test]
    fn ipv6_tcp() {
        let mut f = eth(ETHERTYPE_IPV6, false);
        let seg = tcp_segment(b"abc");
        let mut ip = vec![0x60, 0, 0, 0];
        ip.extend_from_slice(&(seg.len() as u16).to_be_bytes());
        ip.extend_from_slice(&[PROTO_TCP, 64]);
        let addrs: Vec<u8> = (0..32).map(|i| 0xfe ^ i).collect();
        ip.extend_from_slice(&addrs);
        f.extend(ip);
        f.extend(seg.clone());
        let p = prepare(&mut f).unwrap();
        assert_eq!(p, Partial { start: 54, offset: 16 });
        device_completes(&mut f, p);
        verify(&f, &addrs, PROTO_TCP, 54, seg.len(), 16);
    }

    #[test]
    fn not_offloaded() {
        let mut arp = eth(0x0806, false);
        arp.extend_from_slice(&[0; 28]);
        assert_eq!(prepare(&mut arp), None);
        let mut icmp = eth(ETHERTYPE_IPV4, false);
        icmp.extend(ipv4(1, &[8, 0, 0, 0, 0, 1, 0, 1], 0));
        assert_eq!(prepare(&mut icmp), None);
        for frag in [0x2000, 0x0001] {
            let mut f = eth(ETHERTYPE_IPV4, false);
            f.extend(ipv4(PROTO_UDP, &[0; 16], frag));
            assert_eq!(prepare(&mut f), None, "fragment {frag:#x}");
        }
        let mut short = eth(ETHERTYPE_IPV4, false);
        short.extend(ipv4(PROTO_TCP, &tcp_segment(b""), 0));
        let before = short.clone();
        short.truncate(short.len() - 1);
        assert_eq!(prepare(&mut short), None, "total length beyond the frame");
        assert_eq!(&short[..], &before[..before.len() - 1], "untouched");
        let mut lying = eth(ETHERTYPE_IPV4, false);
        lying.extend(ipv4(PROTO_TCP, &[0; 8], 0)); // TCP shorter than its fixed header
        assert_eq!(prepare(&mut lying), None);
        assert_eq!(prepare(&mut [0u8; 5]), None);
        let mut bad_ihl = eth(ETHERTYPE_IPV4, false);
        bad_ihl.extend(ipv4(PROTO_TCP, &tcp_segment(b""), 0));
        bad_ihl[14] = 0x44;
        assert_eq!(prepare(&mut bad_ihl), None);
    }
}
