//! Link-up behaviour driven frame by frame against a raw peer: the gratuitous ARP of a static setup, the
//! receive-buffer recycle path, a DHCP exchange (RFC 2131 §3.1) with a test server, and a SYN that
//! arrives before the lease.

use super::pipe::{pair, RawPeer};
use crate::arp::parse_gratuitous_arp;
use crate::{Config, IpSetup, Ipv4Config, Ipv4State, Stack};
use libos::dev::NetOffloads;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, DhcpMessageType, DhcpOption, DhcpPacket, DhcpRepr, EthernetAddress,
    EthernetFrame, EthernetProtocol, EthernetRepr, IpProtocol, Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket, UdpPacket,
    UdpRepr, DHCP_CLIENT_PORT, DHCP_SERVER_PORT,
};
use std::net::Ipv4Addr;

const SERVER_MAC: [u8; 6] = [0x52, 0x55, 0x0a, 0x00, 0x02, 0x02];
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
const LEASE: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);

/// A DHCP server's answer to a DISCOVER (OFFER) or REQUEST (ACK) in `frame`, like slirp's.
fn dhcp_reply(frame: &[u8]) -> Option<Vec<u8>> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return None;
    }
    let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
    if ip.next_header() != IpProtocol::Udp {
        return None;
    }
    let udp = UdpPacket::new_checked(ip.payload()).ok()?;
    if udp.dst_port() != DHCP_SERVER_PORT {
        return None;
    }
    let dhcp = DhcpPacket::new_checked(udp.payload()).ok()?;
    let req = DhcpRepr::parse(&dhcp).ok()?;
    let message_type = match req.message_type {
        DhcpMessageType::Discover => DhcpMessageType::Offer,
        DhcpMessageType::Request => DhcpMessageType::Ack,
        _ => return None,
    };
    let dns = [DhcpOption { kind: 6, data: &[10, 0, 2, 3] }];
    let reply = DhcpRepr {
        message_type,
        transaction_id: req.transaction_id,
        secs: 0,
        client_hardware_address: req.client_hardware_address,
        client_ip: Ipv4Addr::UNSPECIFIED,
        your_ip: LEASE,
        server_ip: SERVER,
        router: Some(SERVER),
        subnet_mask: Some(Ipv4Addr::new(255, 255, 255, 0)),
        relay_agent_ip: Ipv4Addr::UNSPECIFIED,
        broadcast: false,
        requested_ip: None,
        client_identifier: None,
        server_identifier: Some(SERVER),
        parameter_request_list: None,
        dns_servers: None,
        max_size: None,
        lease_duration: Some(86400),
        renew_duration: None,
        rebind_duration: None,
        additional_options: &dns,
    };
    let dhcp_len = reply.buffer_len();
    let caps = ChecksumCapabilities::default();
    let ip_repr = Ipv4Repr {
        src_addr: SERVER,
        dst_addr: Ipv4Addr::BROADCAST,
        next_header: IpProtocol::Udp,
        payload_len: 8 + dhcp_len,
        hop_limit: 64,
    };
    let mut out = vec![0u8; 14 + 20 + 8 + dhcp_len];
    let mut eth = EthernetFrame::new_unchecked(&mut out[..]);
    EthernetRepr {
        src_addr: EthernetAddress(SERVER_MAC),
        dst_addr: EthernetAddress::BROADCAST,
        ethertype: EthernetProtocol::Ipv4,
    }
    .emit(&mut eth);
    let mut ip = Ipv4Packet::new_unchecked(eth.payload_mut());
    ip_repr.emit(&mut ip, &caps);
    UdpRepr { src_port: DHCP_SERVER_PORT, dst_port: DHCP_CLIENT_PORT }.emit(
        &mut UdpPacket::new_unchecked(ip.payload_mut()),
        &SERVER.into(),
        &Ipv4Addr::BROADCAST.into(),
        dhcp_len,
        |p| reply.emit(&mut DhcpPacket::new_unchecked(p)).expect("DHCP reply fits its own buffer_len"),
        &caps,
    );
    Some(out)
}

#[test]
fn gratuitous_arp_at_start_and_every_frame_recycled() {
    super::clock();
    let (nic, peer_nic, pipe) = pair(NetOffloads::default());
    let mac = [0x52, 0x54, 0x00, 0x12, 0x34, 0x01];
    let stack = Stack::new(Box::new(nic), super::static_ip(1, None), Config::default()).unwrap();
    let mut peer = RawPeer { nic: peer_nic };
    assert!(peer.recv().is_none(), "nothing is sent before the first poll");
    // Junk the stack must take, drop and give back: short frames, unknown ethertypes, bad IPv4.
    for i in 0..20u8 {
        let mut junk = super::pattern(10 + usize::from(i) * 40, u32::from(i));
        if i % 2 == 1 {
            junk[..6].copy_from_slice(&mac);
            junk[12..14].copy_from_slice(&[0x08, 0x00]);
        }
        peer.send(&junk);
    }
    stack.poll().unwrap();
    let first = peer.recv().expect("a frame after the first poll");
    assert_eq!(&first[..6], &[0xff; 6], "broadcast");
    assert_eq!(parse_gratuitous_arp(&first), Some((mac, Ipv4Addr::new(10, 0, 0, 1))));
    assert!(peer.recv().is_none(), "one announcement only");
    stack.poll().unwrap();
    assert!(peer.recv().is_none(), "one announcement only");
    let c = pipe.counters(0);
    assert_eq!((c.received, c.recycled, c.errors), (20, 20, 0), "{c:?}");
    assert_eq!(stack.stats().rx_frames, 20);
    assert_eq!(stack.stats().ipv4_state, Ipv4State::Static);
}

#[test]
fn dhcp_lease_configures_the_interface_and_is_announced() {
    super::clock();
    let (nic, server_nic, _pipe) = pair(NetOffloads::default());
    let mac = [0x52, 0x54, 0x00, 0x12, 0x34, 0x01];
    let stack = Stack::new(Box::new(nic), IpSetup::Dhcp, Config::default()).unwrap();
    assert_eq!(stack.stats().ipv4_state, Ipv4State::DhcpDiscovering);
    let mut server = RawPeer { nic: server_nic };
    let (mut garp, mut replies) = (None, 0);
    let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while garp.is_none() && std::time::Instant::now() < end {
        stack.poll().unwrap();
        while let Some(f) = server.recv() {
            if let Some(r) = dhcp_reply(&f) {
                server.send(&r);
                replies += 1;
            }
            if let Some(g) = parse_gratuitous_arp(&f) {
                garp = Some(g);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert_eq!(replies, 2, "one OFFER, one ACK");
    assert_eq!(garp, Some((mac, LEASE)));
    let expected = Ipv4Config {
        address: LEASE,
        prefix_len: 24,
        gateway: Some(SERVER),
        dns_servers: vec![Ipv4Addr::new(10, 0, 2, 3)],
    };
    assert_eq!(stack.ipv4_config(), Some(expected.clone()));
    assert_eq!(stack.stats().ipv4_state, Ipv4State::DhcpBound);
    assert_eq!(stack.stats().ipv4, Some(expected));
}

/// A TCP SYN from the server's address to `LEASE`:80 at `mac`, as slirp forwards a host connection.
fn syn_to_lease(mac: [u8; 6]) -> Vec<u8> {
    syn(SERVER, 40000, LEASE, mac)
}

/// A TCP SYN from `src`:`src_port` to `dst`:80 at `mac`, sent from `SERVER_MAC`.
fn syn(src: Ipv4Addr, src_port: u16, dst: Ipv4Addr, mac: [u8; 6]) -> Vec<u8> {
    segment(src, src_port, dst, mac, TcpControl::Syn, 1000)
}

/// A TCP segment with `control` and sequence number `seq` from `src`:`src_port` to `dst`:80 at `mac`.
fn segment(src: Ipv4Addr, src_port: u16, dst: Ipv4Addr, mac: [u8; 6], control: TcpControl, seq: i32) -> Vec<u8> {
    let from = super::End { mac: SERVER_MAC, ip: src, port: src_port };
    super::tcp_segment(from, super::End { mac, ip: dst, port: 80 }, control, (seq, None), &[])
}

/// The server's ARP reply if `frame` asks for `SERVER`.
fn arp_reply(frame: &[u8]) -> Option<Vec<u8>> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if eth.ethertype() != EthernetProtocol::Arp {
        return None;
    }
    let ArpRepr::EthernetIpv4 { operation, source_hardware_addr, source_protocol_addr, target_protocol_addr, .. } =
        ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).ok()?).ok()?
    else {
        return None;
    };
    if operation != ArpOperation::Request || target_protocol_addr != SERVER {
        return None;
    }
    let reply = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Reply,
        source_hardware_addr: EthernetAddress(SERVER_MAC),
        source_protocol_addr: SERVER,
        target_hardware_addr: source_hardware_addr,
        target_protocol_addr: source_protocol_addr,
    };
    let mut out = vec![0u8; 14 + reply.buffer_len()];
    let mut eth = EthernetFrame::new_unchecked(&mut out[..]);
    EthernetRepr {
        src_addr: EthernetAddress(SERVER_MAC),
        dst_addr: source_hardware_addr,
        ethertype: EthernetProtocol::Arp,
    }
    .emit(&mut eth);
    reply.emit(&mut ArpPacket::new_unchecked(eth.payload_mut()));
    Some(out)
}

fn is_syn_ack_to_40000(frame: &[u8]) -> bool {
    let Ok(eth) = EthernetFrame::new_checked(frame) else { return false };
    let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else { return false };
    let Ok(tcp) = TcpPacket::new_checked(ip.payload()) else { return false };
    ip.next_header() == IpProtocol::Tcp && tcp.dst_port() == 40000 && tcp.syn() && tcp.ack()
}

#[test]
fn a_syn_that_races_the_dhcp_lease_is_answered_after_it() {
    super::clock();
    let (nic, server_nic, pipe) = pair(NetOffloads::default());
    let mac = [0x52, 0x54, 0x00, 0x12, 0x34, 0x01];
    let stack = Stack::new(Box::new(nic), IpSetup::Dhcp, Config::default()).unwrap();
    let _listener = crate::TcpListener::bind_on(&stack, 80).unwrap();
    let mut server = RawPeer { nic: server_nic };
    let (mut syn_sent, mut syn_ack) = (false, false);
    let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !syn_ack && std::time::Instant::now() < end {
        stack.poll().unwrap();
        while let Some(f) = server.recv() {
            syn_ack |= is_syn_ack_to_40000(&f);
            // Like slirp: the DISCOVER taught it our MAC, so the queued SYN goes out before the OFFER.
            if !syn_sent {
                server.send(&syn_to_lease(mac));
                syn_sent = true;
                stack.poll().unwrap();
                assert!(stack.ipv4_config().is_none(), "the SYN arrived before the lease");
            }
            if let Some(r) = dhcp_reply(&f).or_else(|| arp_reply(&f)) {
                server.send(&r);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert!(syn_ack, "the held SYN was answered once the lease was bound");
    let c = pipe.counters(0);
    assert_eq!(c.received, c.recycled, "{c:?}");
}

/// SYN floods: from an address that answers each SYN-ACK with RST (a host that did not send the SYNs), the
/// sockets go back to LISTEN and those beyond the backlog are dropped; from addresses nobody answers ARP for
/// (spoofed), every SYN takes a socket into SYN-RECEIVED whose SYN-ACK never leaves, so smoltcp's own timer never
/// starts: the stack drops them `HANDSHAKE_TIMEOUT` after their SYN. Either way the listener ends at its backlog.
#[test]
fn syn_floods_leave_the_listener_at_its_backlog() {
    super::clock();
    let (nic, server_nic, _pipe) = pair(NetOffloads::default());
    let mac = [0x52, 0x54, 0x00, 0x12, 0x34, 0x01];
    let stack = Stack::new(Box::new(nic), IpSetup::Static(super::static_ip_at(LEASE)), Config::default()).unwrap();
    let _listener = crate::TcpListener::bind_with_backlog_on(&stack, 80, 8).unwrap();
    let mut server = RawPeer { nic: server_nic };
    stack.poll().unwrap();
    let idle = stack.stats().tcp_sockets;
    for i in 0..100u16 {
        server.send(&syn(SERVER, 2000 + i, LEASE, mac));
        let (mut reset, end) = (false, std::time::Instant::now() + std::time::Duration::from_secs(5));
        while !reset && std::time::Instant::now() < end {
            stack.poll().unwrap();
            while let Some(f) = server.recv() {
                if let Some(r) = arp_reply(&f) {
                    server.send(&r);
                } else if let Some(r) = rst_for_syn_ack(&f, mac) {
                    server.send(&r);
                    reset = true;
                }
            }
        }
        assert!(reset, "no SYN-ACK for SYN {i} from {SERVER}");
    }
    stack.poll().unwrap();
    assert_eq!(stack.stats().tcp_sockets, idle, "sockets reset back to LISTEN were kept beyond the backlog");
    for i in 0..100u16 {
        server.send(&syn(Ipv4Addr::new(10, 0, 2, 100 + (i % 100) as u8), 1000 + i, LEASE, mac));
        stack.poll().unwrap();
        while server.recv().is_some() {}
    }
    let flooded = stack.stats().tcp_sockets;
    assert!(flooded >= idle + 100, "each SYN holds a socket: {idle} idle, {flooded} after 100 SYNs");
    let end = std::time::Instant::now() + crate::stack::HANDSHAKE_TIMEOUT + std::time::Duration::from_secs(5);
    while stack.stats().tcp_sockets > idle && std::time::Instant::now() < end {
        stack.poll().unwrap();
        while server.recv().is_some() {}
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(stack.stats().tcp_sockets, idle, "the half-open sockets were not reclaimed");
}

/// The RST a host sends when `frame` is a SYN-ACK for a connection it never opened (RFC 9293 §3.5.2).
fn rst_for_syn_ack(frame: &[u8], mac: [u8; 6]) -> Option<Vec<u8>> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
    let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
    if ip.next_header() != IpProtocol::Tcp || !(tcp.syn() && tcp.ack()) {
        return None;
    }
    Some(segment(ip.dst_addr(), tcp.dst_port(), ip.src_addr(), mac, TcpControl::Rst, tcp.ack_number().0))
}
