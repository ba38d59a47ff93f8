//! UDP between two stacks.

use super::{addr_a, run, Net};
use crate::{Config, Error, UdpSocket};
use libos::task::spawn;

#[test]
fn udp_echo() {
    run(async {
        let net = Net::new(Config::default(), Config::default());
        let server = UdpSocket::bind_on(&net.a, 7).unwrap();
        assert_eq!(UdpSocket::bind_on(&net.a, 7).map(|_| ()), Err(Error::AddrInUse(7)));
        let echo = spawn(async move {
            let mut buf = vec![0u8; 2048];
            loop {
                let (n, from) = server.recv_from(&mut buf).await.unwrap();
                server.send_to(&buf[..n], from).await.unwrap();
            }
        });
        let client = UdpSocket::bind_on(&net.b, 0).unwrap();
        let local = client.local_addr().unwrap();
        assert!(local.port() >= 49152, "{local}");
        assert_eq!(client.max_datagram(), 1472);
        let mut buf = vec![0u8; 2048];
        for i in 0..50u32 {
            let msg = super::pattern(1 + (i as usize * 29) % 1472, i);
            assert_eq!(client.send_to(&msg, addr_a(7)).await.unwrap(), msg.len());
            let (n, from) = client.recv_from(&mut buf).await.unwrap();
            assert_eq!(from, addr_a(7));
            assert_eq!(&buf[..n], &msg[..]);
        }
        // A too small buffer gets the head of the datagram, like std.
        client.send_to(b"truncate me", addr_a(7)).await.unwrap();
        let mut small = [0u8; 8];
        assert_eq!(client.recv_from(&mut small).await.unwrap().0, 8);
        assert_eq!(&small, b"truncate");
        assert_eq!(client.send_to(&[0u8; 1473], addr_a(7)).await, Err(Error::MessageTooLarge { len: 1473, max: 1472 }));
        assert_eq!(client.send_to(b"x", addr_a(0)).await, Err(Error::InvalidPort(0)));
        let _ = echo.cancel().await;
        drop(client);
        let (a, b) = (net.a.clone(), net.b.clone());
        assert!(super::eventually(5, || a.stats().udp_sockets == 0 && b.stats().udp_sockets == 0).await);
        // The port is free again.
        drop(UdpSocket::bind_on(&net.a, 7).unwrap());
        net.assert_frames_recycled();
        net.stop().await;
    })
}
