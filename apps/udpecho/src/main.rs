//! `udpecho`: the UDP echo service (RFC 862) as an appliance. Every datagram received on the port is sent back
//! to its sender unchanged. App argument: `port=7` (default 7).
#![cfg_attr(target_os = "none", no_std, no_main)]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec;
use zirvium::log;
use zirvium::net::UdpSocket;

zirvium::app!(run);

async fn run() -> Result<(), String> {
    let mut port = 7u16;
    for a in zirvium::env::args() {
        match a.split_once('=') {
            Some(("port", v)) => port = v.parse().map_err(|_| format!("udpecho: port={v}: expected 1..=65535"))?,
            _ => return Err(format!("udpecho: unknown argument `{a}` (known: port=N)")),
        }
    }
    let sock = UdpSocket::bind(port).map_err(|e| format!("udpecho: bind port {port}: {e}"))?;
    zirvium::println!("udpecho listening on port {port}");
    let mut buf = vec![0u8; sock.max_datagram()];
    let mut echoed: u64 = 0;
    loop {
        let (n, from) = sock.recv_from(&mut buf).await.map_err(|e| format!("udpecho: recv: {e}"))?;
        if let Err(e) = sock.send_to(&buf[..n], from).await {
            log::warn!("udpecho: reply to {from}: {e}");
            continue;
        }
        echoed += 1;
        log::debug!("echoed {n} bytes to {from} ({echoed} datagrams so far)");
    }
}
