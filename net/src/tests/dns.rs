//! DNS lookups against a test server answering A queries on the other stack.

use super::{run, static_ip, Net};
use crate::{resolve_on, Config, DnsError, Error, UdpSocket};
use libos::dev::NetOffloads;
use libos::task::spawn;
use std::net::{IpAddr, Ipv4Addr};

/// An RFC 1035 §4.1 response to `query` with one A record 10.9.8.7, or `None` if the query is malformed.
fn answer(query: &[u8]) -> Option<Vec<u8>> {
    let mut end = 12;
    while *query.get(end)? != 0 {
        end += 1 + usize::from(query[end]);
    }
    let question = query.get(12..end + 5)?;
    let mut r = Vec::new();
    r.extend_from_slice(&query[..2]);
    r.extend_from_slice(&[0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]);
    r.extend_from_slice(question);
    r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 9, 8, 7]);
    Some(r)
}

#[test]
fn resolve_through_the_configured_server() {
    run(async {
        let dns = Some(Ipv4Addr::new(10, 0, 0, 1));
        let net = Net::with(
            Config::default(),
            static_ip(1, None),
            Config::default(),
            static_ip(2, dns),
            NetOffloads::default(),
        );
        let server = UdpSocket::bind_on(&net.a, 53).unwrap();
        let task = spawn(async move {
            let mut buf = [0u8; 512];
            loop {
                let (n, from) = server.recv_from(&mut buf).await.unwrap();
                if let Some(r) = answer(&buf[..n]) {
                    server.send_to(&r, from).await.unwrap();
                }
            }
        });
        assert_eq!(resolve_on(&net.b, "example.test").await, Ok(vec![IpAddr::V4(Ipv4Addr::new(10, 9, 8, 7))]));
        assert_eq!(resolve_on(&net.b, "www.example.test.").await, Ok(vec![IpAddr::V4(Ipv4Addr::new(10, 9, 8, 7))]));
        assert_eq!(resolve_on(&net.b, "1.2.3.4").await, Ok(vec![IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4))]));
        assert_eq!(resolve_on(&net.b, "a..b").await, Err(Error::Dns(DnsError::InvalidName("a..b".into()))));
        assert_eq!(resolve_on(&net.a, "example.test").await, Err(Error::Dns(DnsError::NoServer)));
        let _ = task.cancel().await;
        net.stop().await;
    })
}
