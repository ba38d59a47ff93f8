//! Gratuitous ARP (RFC 5227 §2.3 "ARP Announcement", RFC 826 packet format): an ARP request for our own
//! address, broadcast at link-up and after a DHCP lease, so neighbours — QEMU's slirp in particular, which
//! otherwise learns the guest's MAC only from a packet the guest sends — know where we are before the
//! first request arrives.

use core::net::Ipv4Addr;
use smoltcp::wire::{ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr};

/// Length of the announcement frame (bytes): 14-byte Ethernet header + 28-byte ARP packet.
pub(crate) const GRATUITOUS_ARP_LEN: usize = 14 + 28;

fn repr(mac: [u8; 6], ip: Ipv4Addr) -> (EthernetRepr, ArpRepr) {
    let eth = EthernetRepr {
        src_addr: EthernetAddress(mac),
        dst_addr: EthernetAddress::BROADCAST,
        ethertype: EthernetProtocol::Arp,
    };
    let arp = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: EthernetAddress(mac),
        source_protocol_addr: ip,
        // RFC 5227 §2.3: target hardware address ignored, set to zero; target protocol address = sender's.
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: ip,
    };
    (eth, arp)
}

/// Writes the announcement of `ip` at `mac` into `buf` (at least [`GRATUITOUS_ARP_LEN`] bytes; a shorter
/// buffer is left untouched).
pub(crate) fn emit_gratuitous_arp(buf: &mut [u8], mac: [u8; 6], ip: Ipv4Addr) {
    let Some(buf) = buf.get_mut(..GRATUITOUS_ARP_LEN) else { return };
    let (eth, arp) = repr(mac, ip);
    let mut frame = EthernetFrame::new_unchecked(buf);
    eth.emit(&mut frame);
    arp.emit(&mut ArpPacket::new_unchecked(frame.payload_mut()));
}

/// If `frame` is a gratuitous ARP (request or reply whose sender and target protocol addresses are equal),
/// the announced `(MAC, IPv4 address)`.
#[cfg(test)]
pub(crate) fn parse_gratuitous_arp(frame: &[u8]) -> Option<([u8; 6], Ipv4Addr)> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if eth.ethertype() != EthernetProtocol::Arp {
        return None;
    }
    let arp = ArpPacket::new_checked(eth.payload()).ok()?;
    match ArpRepr::parse(&arp).ok()? {
        ArpRepr::EthernetIpv4 { source_hardware_addr, source_protocol_addr, target_protocol_addr, .. }
            if source_protocol_addr == target_protocol_addr =>
        {
            Some((source_hardware_addr.0, source_protocol_addr))
        }
        _ => None,
    }
}
