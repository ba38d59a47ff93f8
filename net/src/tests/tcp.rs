//! TCP between two stacks: echo, many connections, backlog refill, limits, errors, idle behaviour.

use super::pipe::Pipe;
use super::{addr_a, eventually, pattern, run, Net};
use crate::{Config, Error, TcpListener, TcpStream};
use libos::dev::NetOffloads;
use libos::task::spawn;
use libos::time::{sleep, Duration};
use std::sync::Arc;

/// Accepts forever, echoing each connection until EOF, then closing.
fn echo_server(listener: TcpListener) -> libos::task::JoinHandle<()> {
    spawn(async move {
        loop {
            let (s, _) = listener.accept().await.expect("accept");
            spawn(async move {
                let mut buf = vec![0u8; 4096];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = s.shutdown().await;
            });
        }
    })
}

/// Sends `data` on one task while reading the echo on this one; returns what came back (until EOF).
async fn echo_roundtrip(stream: TcpStream, data: Vec<u8>) -> Vec<u8> {
    let stream = Arc::new(stream);
    let writer = {
        let s = stream.clone();
        spawn(async move {
            s.write_all(&data).await.expect("write_all");
            s.flush().await.expect("flush");
            s.shutdown().await.expect("shutdown");
        })
    };
    let mut got = Vec::new();
    let mut buf = vec![0u8; 3000];
    loop {
        let n = stream.read(&mut buf).await.expect("read");
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    writer.await;
    got
}

fn echo_1mib(offloads: NetOffloads) -> Pipe {
    run(async move {
        let net = Net::with(
            Config::default(),
            super::static_ip(1, None),
            Config::default(),
            super::static_ip(2, None),
            offloads,
        );
        let listener = TcpListener::bind_on(&net.a, 7).unwrap();
        let server = echo_server(listener);
        let stream = TcpStream::connect_on(&net.b, addr_a(7)).await.unwrap();
        assert_eq!(stream.peer_addr().unwrap(), addr_a(7));
        let local = stream.local_addr().unwrap();
        assert_eq!(local.ip(), std::net::Ipv4Addr::new(10, 0, 0, 2));
        assert!(local.port() >= 49152, "{local}");
        let data = pattern(1 << 20, 42);
        let got = echo_roundtrip(stream, data.clone()).await;
        assert_eq!(got.len(), data.len());
        assert!(got == data, "echoed bytes differ");
        let (a, b) = (net.a.clone(), net.b.clone());
        // The server keeps its backlog of listening sockets; everything else is reclaimed.
        let backlog = a.config().backlog;
        assert!(
            eventually(10, || a.stats().tcp_sockets == backlog && b.stats().tcp_sockets == 0).await,
            "sockets left: a {:?} b {:?}",
            a.stats(),
            b.stats()
        );
        assert_eq!(b.stats().tcp_connections, 0);
        net.assert_frames_recycled();
        let _ = server.cancel().await;
        assert!(eventually(5, || a.stats().tcp_sockets == 0).await, "listener sockets left: {:?}", a.stats());
        let pipe = net.pipe.clone();
        net.stop().await;
        pipe
    })
}

#[test]
fn echo_1mib_byte_for_byte() {
    let _ = echo_1mib(NetOffloads::default());
}

#[test]
fn echo_1mib_with_checksum_offload() {
    let _ = echo_1mib(NetOffloads { rx_checksum: true, tx_checksum: true, ..Default::default() });
}

/// With segmentation offload the stack merges runs of segments into large frames that the pipe cuts up again
/// like a virtio-net device; the receiver verifies every segment's checksum in software and gets every byte.
#[test]
fn echo_1mib_with_segmentation_offload() {
    let pipe = echo_1mib(NetOffloads { tso4: true, ..Default::default() });
    let merged = pipe.counters(0).gso_frames + pipe.counters(1).gso_frames;
    assert!(merged > 0, "no frame was merged: {:?} {:?}", pipe.counters(0), pipe.counters(1));
}

/// `write_with` fills the socket's send buffer in place; the peer gets every byte in order.
#[test]
fn write_with_fills_the_send_buffer_in_place() {
    run(async move {
        let net = Net::new(Config::default(), Config::default());
        let listener = TcpListener::bind_on(&net.a, 9).unwrap();
        let data = pattern(300_000, 7);
        let sender = {
            let data = data.clone();
            libos::task::spawn(async move {
                let (s, _) = listener.accept().await.unwrap();
                let mut at = 0;
                while at < data.len() {
                    let n = s
                        .write_with(&mut |free: &mut [u8]| {
                            let n = free.len().min(data.len() - at).min(1000);
                            free[..n].copy_from_slice(&data[at..at + n]);
                            n
                        })
                        .await
                        .unwrap();
                    assert!(n > 0);
                    at += n;
                }
                s.shutdown().await.unwrap();
            })
        };
        let client = TcpStream::connect_on(&net.b, addr_a(9)).await.unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 4096];
        loop {
            let n = client.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        sender.await;
        assert!(got == data, "{} bytes received of {}", got.len(), data.len());
        drop(client);
        net.stop().await;
    })
}

/// Within the budget sockets get the large buffers, beyond it the small ones; a listening socket made small
/// during a burst is made large again once a connection's buffers come back to the budget.
#[test]
fn large_buffers_within_the_budget_come_back_to_listeners() {
    run(async move {
        let cfg = Config::default();
        let large = cfg.tcp_rx_buffer + cfg.tcp_tx_buffer;
        let cfg_a = Config { backlog: 4, tcp_buffer_budget: Some(2 * large), ..Config::default() };
        let net = Net::new(cfg_a, Config::default());
        let listener = TcpListener::bind_on(&net.a, 8080).unwrap();
        let large_listening = |stack: &crate::Stack| {
            stack.with(|i| {
                let l = &i.listeners[&8080];
                let sockets = &i.sockets;
                l.listening
                    .iter()
                    .filter(|h| sockets.get::<smoltcp::socket::tcp::Socket>(**h).send_capacity() == cfg.tcp_tx_buffer)
                    .count()
            })
        };
        assert_eq!(large_listening(&net.a), 2, "two within the budget, two small");
        let client = TcpStream::connect_on(&net.b, addr_a(8080)).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        drop(server);
        drop(client);
        let a = net.a.clone();
        assert!(eventually(10, || a.stats().tcp_sockets == 4).await, "{:?}", a.stats());
        assert!(eventually(5, || large_listening(&a) == 2).await, "the freed budget goes to a listening socket");
        drop(listener);
        net.stop().await;
    })
}

#[test]
fn two_hundred_concurrent_connections_all_reclaimed() {
    run(async {
        let net = Net::new(Config::default(), Config::default());
        let server = echo_server(TcpListener::bind_on(&net.a, 8080).unwrap());
        let clients: Vec<_> = (0..200u32)
            .map(|i| {
                let b = net.b.clone();
                spawn(async move {
                    let s = TcpStream::connect_on(&b, addr_a(8080)).await.expect("connect");
                    let data = pattern(1000 + i as usize, i);
                    assert_eq!(echo_roundtrip(s, data.clone()).await, data);
                })
            })
            .collect();
        for c in clients {
            c.await;
        }
        let (a, b) = (net.a.clone(), net.b.clone());
        assert!(
            eventually(10, || a.stats().tcp_sockets == 8 && b.stats().tcp_sockets == 0).await,
            "a {:?} b {:?}",
            a.stats(),
            b.stats()
        );
        assert_eq!(a.stats().tcp_connections, 0);
        net.assert_frames_recycled();
        let _ = server.cancel().await;
        net.stop().await;
    })
}

#[test]
fn a_burst_of_connections_does_not_leave_a_long_socket_table() {
    run(async {
        let net = Net::new(Config::default(), Config::default());
        let server = echo_server(TcpListener::bind_on(&net.a, 8080).unwrap());
        let before = TcpStream::connect_on(&net.b, addr_a(8080)).await.expect("connect");
        let idle_slots = net.a.stats().socket_slots;
        // 200 connections open at once, one of them (opened early in the burst) kept after it.
        let mut burst = Vec::new();
        for _ in 0..200 {
            burst.push(TcpStream::connect_on(&net.b, addr_a(8080)).await.expect("connect"));
        }
        let during = burst.remove(3);
        for (i, s) in burst.into_iter().enumerate() {
            let data = pattern(100, i as u32);
            assert_eq!(echo_roundtrip(s, data.clone()).await, data);
        }
        let (a, b) = (net.a.clone(), net.b.clone());
        let grown = a.stats().socket_slots;
        assert!(grown > 200, "{:?}", a.stats());
        // Back to the listeners and the two connections, the table is taken in on both sides.
        assert!(
            eventually(10, || a.stats().tcp_sockets == 10
                && a.stats().socket_slots < 40
                && b.stats().socket_slots < 40)
            .await,
            "idle {idle_slots}, burst {grown}: a {:?} b {:?}",
            a.stats(),
            b.stats()
        );
        // The connections from before and from the burst still work; so do new ones.
        for (i, s) in [before, during].into_iter().enumerate() {
            let data = pattern(5000, i as u32);
            assert_eq!(echo_roundtrip(s, data.clone()).await, data);
        }
        let s = TcpStream::connect_on(&net.b, addr_a(8080)).await.expect("connect after");
        assert_eq!(echo_roundtrip(s, pattern(300, 9)).await, pattern(300, 9));
        let _ = server.cancel().await;
        net.stop().await;
    })
}

#[test]
fn ten_thousand_sequential_connections_do_not_leak() {
    run(async {
        let net = Net::new(Config::default(), Config::default());
        let server = echo_server(TcpListener::bind_on(&net.a, 9).unwrap());
        let mut ports = std::collections::HashSet::new();
        for i in 0..10_000u32 {
            let s = TcpStream::connect_on(&net.b, addr_a(9)).await.expect("connect");
            ports.insert(s.local_addr().unwrap().port());
            let data = pattern(64, i);
            assert_eq!(echo_roundtrip(s, data.clone()).await, data);
        }
        // Each connect took a fresh ephemeral port while earlier ones were still closing.
        assert!(ports.len() > 1);
        let (a, b) = (net.a.clone(), net.b.clone());
        assert!(
            eventually(10, || a.stats().tcp_sockets == 8 && b.stats().tcp_sockets == 0).await,
            "a {:?} b {:?}",
            a.stats(),
            b.stats()
        );
        // No ephemeral port stays reserved, and the socket slots were reused rather than grown.
        assert_eq!(b.with(|i| i.tcp_ports.len()), 0);
        // Only the DNS socket is left in the table; the closed sockets kept for reuse are outside it.
        assert_eq!(b.with(|i| i.sockets.iter().count()), 1);
        assert!(b.with(|i| i.tcp_pool.len()) <= crate::stack::TCP_POOL);
        // Unused for a second, they are freed too.
        assert!(eventually(5, || b.with(|i| i.tcp_pool.is_empty() && i.sockets.iter().count() == 1)).await);
        let _ = server.cancel().await;
        net.stop().await;
    })
}

#[test]
fn backlog_refills_and_takes_a_burst_of_syns() {
    run(async {
        let net = Net::new(Config::default(), Config::default());
        let listener = TcpListener::bind_with_backlog_on(&net.a, 80, 2).unwrap();
        assert_eq!(net.a.stats().tcp_sockets, 2);
        // Ten SYNs before the app accepts anything: the stack tops the two listening sockets up after
        // every frame, so all ten connect.
        let clients: Vec<_> = (0..10)
            .map(|_| {
                let b = net.b.clone();
                spawn(async move { TcpStream::connect_on(&b, addr_a(80)).await.expect("connect") })
            })
            .collect();
        let mut streams = Vec::new();
        for c in clients {
            streams.push(c.await);
        }
        let mut peers = std::collections::HashSet::new();
        for _ in 0..10 {
            let (s, peer) = listener.accept().await.expect("accept");
            assert_eq!(s.peer_addr().unwrap(), peer);
            peers.insert(peer);
            streams.push(s);
        }
        assert_eq!(peers.len(), 10);
        // Ten accepted + the backlog of two listening sockets again.
        assert_eq!(net.a.stats().tcp_sockets, 12);
        assert_eq!(net.a.stats().tcp_connections, 10);
        drop(streams);
        let a = net.a.clone();
        assert!(eventually(10, || a.stats().tcp_sockets == 2).await, "{:?}", a.stats());
        drop(listener);
        assert_eq!(net.a.stats().tcp_sockets, 0);
        assert_eq!(net.a.stats().tcp_listeners, 0);
        net.stop().await;
    })
}

#[test]
fn over_the_socket_limit_is_an_error_not_a_panic() {
    run(async {
        let small = Config { max_sockets: 2, backlog: 2, ..Config::default() };
        let client = Config { max_sockets: 3, backlog: 1, ..Config::default() };
        let net = Net::new(small, client);
        let limit_a = Err::<(), _>(Error::TooManySockets { limit: 2 });
        let listener = TcpListener::bind_on(&net.a, 80).unwrap();
        assert_eq!(TcpListener::bind_on(&net.a, 81).map(|_| ()), limit_a);
        assert_eq!(crate::UdpSocket::bind_on(&net.a, 53).map(|_| ()), limit_a);

        // The client: three connections fit, the fourth does not.
        let c1 = TcpStream::connect_on(&net.b, addr_a(80)).await.unwrap();
        let c2 = TcpStream::connect_on(&net.b, addr_a(80)).await.unwrap();
        let (s1, _) = listener.accept().await.unwrap();
        let (s2, _) = listener.accept().await.unwrap();
        // Both of the server's sockets are connections now: nothing can take a SYN.
        assert_eq!(listener.accept().await.map(|_| ()), limit_a);
        let c3 = TcpStream::connect_on(&net.b, addr_a(80)).await;
        assert_eq!(c3.map(|_| ()), Err(Error::ConnectionRefused));
        let b = net.b.clone();
        assert!(eventually(10, || b.stats().tcp_sockets == 2).await, "{:?}", b.stats());
        let udp = crate::UdpSocket::bind_on(&net.b, 0).unwrap();
        let c4 = TcpStream::connect_on(&net.b, addr_a(80)).await;
        assert_eq!(c4.map(|_| ()), Err(Error::TooManySockets { limit: 3 }));
        drop(udp);

        // Closing one connection on both sides frees a socket; the listener refills and accepts again.
        drop((s1, c1));
        let a = net.a.clone();
        assert!(eventually(10, || a.stats().tcp_sockets == 2).await, "{:?}", a.stats());
        assert!(eventually(10, || b.stats().tcp_sockets == 1 && b.stats().udp_sockets == 0).await);
        let c6 = spawn({
            let b = net.b.clone();
            async move { TcpStream::connect_on(&b, addr_a(80)).await }
        });
        let (s3, _) = listener.accept().await.unwrap();
        let c6 = c6.await.unwrap();
        drop((s2, s3, c2, c6));
        net.stop().await;
    })
}

#[test]
fn refused_reset_and_timeout_are_reported() {
    run(async {
        let client = Config { connect_timeout: Duration::from_millis(300), ..Config::default() };
        let net = Net::new(Config::default(), client);
        // No listener on the port: RST.
        assert_eq!(TcpStream::connect_on(&net.b, addr_a(1234)).await.map(|_| ()), Err(Error::ConnectionRefused));
        // Nobody at 10.0.0.99: no ARP reply, no SYN-ACK.
        let nobody: std::net::SocketAddr = (std::net::Ipv4Addr::new(10, 0, 0, 99), 80).into();
        assert_eq!(TcpStream::connect_on(&net.b, nobody).await.map(|_| ()), Err(Error::TimedOut));
        assert_eq!(
            TcpStream::connect_on(&net.b, "[::1]:80".parse::<std::net::SocketAddr>().unwrap()).await.map(|_| ()),
            Err(Error::Unsupported("IPv6"))
        );
        assert_eq!(TcpStream::connect_on(&net.b, addr_a(0)).await.map(|_| ()), Err(Error::InvalidPort(0)));

        // An abort reaches the peer as a reset.
        let listener = TcpListener::bind_on(&net.a, 80).unwrap();
        assert_eq!(TcpListener::bind_on(&net.a, 80).map(|_| ()), Err(Error::AddrInUse(80)));
        let c = TcpStream::connect_on(&net.b, addr_a(80)).await.unwrap();
        let (s, _) = listener.accept().await.unwrap();
        c.write_all(b"hi").await.unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(s.read(&mut buf).await.unwrap(), 2);
        c.abort();
        assert_eq!(s.read(&mut buf).await, Err(Error::ConnectionReset));
        assert_eq!(s.write(b"x").await, Err(Error::ConnectionReset));
        drop(s);

        // Write after shutdown is a broken pipe; the peer sees EOF.
        let c = TcpStream::connect_on(&net.b, addr_a(80)).await.unwrap();
        let (s, _) = listener.accept().await.unwrap();
        c.set_nodelay(true).unwrap();
        assert!(c.nodelay().unwrap());
        c.shutdown().await.unwrap();
        assert_eq!(c.write(b"x").await, Err(Error::BrokenPipe));
        assert_eq!(s.read(&mut buf).await, Ok(0));
        s.write_all(b"bye").await.unwrap();
        s.shutdown().await.unwrap();
        assert_eq!(c.read(&mut buf).await, Ok(3));
        assert_eq!(&buf[..3], b"bye");
        assert_eq!(c.read(&mut buf).await, Ok(0));
        drop((c, s, listener));
        let (a, b) = (net.a.clone(), net.b.clone());
        assert!(
            eventually(10, || a.stats().tcp_sockets == 0 && b.stats().tcp_sockets == 0).await,
            "a {:?} b {:?}",
            a.stats(),
            b.stats()
        );
        net.stop().await;
    })
}

#[test]
fn idle_stack_sleeps() {
    run(async {
        let net = Net::new(Config::default(), Config::default());
        let _listener = TcpListener::bind_on(&net.a, 80).unwrap();
        let c = TcpStream::connect_on(&net.b, addr_a(80)).await.unwrap();
        let (_s, _) = _listener.accept().await.unwrap();
        c.write_all(b"x").await.unwrap();
        // Let delayed ACKs and the like settle, then count poll rounds over an idle 300 ms.
        sleep(Duration::from_millis(100)).await;
        let before = net.a.stats().polls + net.b.stats().polls;
        sleep(Duration::from_millis(300)).await;
        let after = net.a.stats().polls + net.b.stats().polls;
        assert!(after - before <= 2, "{} poll rounds while idle", after - before);
        drop((c, _s));
        net.stop().await;
    })
}

#[test]
fn a_large_backlog_is_made_over_several_rounds() {
    run(async {
        let net = Net::new(Config { max_sockets: 100, ..Config::default() }, Config::default());
        let _listener = TcpListener::bind_with_backlog_on(&net.a, 80, 40).unwrap();
        // Binding returns after one batch: a large backlog does not hold up the caller (boot).
        assert_eq!(net.a.stats().tcp_sockets, 8);
        let a = net.a.clone();
        assert!(eventually(5, || a.stats().tcp_sockets == 40).await, "{:?}", a.stats());
        let _c = TcpStream::connect_on(&net.b, addr_a(80)).await.expect("connect");
        net.stop().await;
    })
}

/// Serialises the tests that simulate a memory-pressure level (process-wide on the host).
static PRESSURE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Puts the simulated memory-pressure level back to normal even when an assertion fails.
struct Normal;
impl Drop for Normal {
    fn drop(&mut self) {
        libos::mem::pressure::simulate(libos::mem::pressure::Pressure::Normal);
    }
}

#[test]
fn closed_sockets_are_reused_and_memory_pressure_frees_them() {
    use crate::stack::TCP_POOL;
    use libos::mem::pressure::{simulate, Pressure};
    let _serial = PRESSURE.lock().unwrap_or_else(|e| e.into_inner());
    run(async {
        let _normal = Normal;
        // Buffers and budget such that every socket made here is a large one.
        let cfg = Config {
            tcp_rx_buffer: 16 * 1024,
            tcp_tx_buffer: 32 * 1024,
            tcp_buffer_budget: Some(8 << 20),
            ..Config::default()
        };
        let large = cfg.tcp_rx_buffer + cfg.tcp_tx_buffer;
        let net = Net::new(cfg.clone(), Config::default());
        let _listener = TcpListener::bind_with_backlog_on(&net.a, 80, 1).unwrap();
        net.a.with(|i| {
            let h = i.add_tcp(&cfg).unwrap();
            let bytes = i.tcp_large_bytes;
            // A connection's last settings, as `orphan_tcp` and an app leave them.
            i.tcp(h).set_ack_delay(None);
            i.tcp(h).set_nagle_enabled(false);
            let in_table = i.sockets.iter().count();
            i.remove_tcp(h);
            assert_eq!(i.tcp_pool.len(), 1, "a closed large-buffer socket is kept");
            assert_eq!(i.sockets.iter().count(), in_table - 1, "out of the table smoltcp walks");
            assert_eq!(i.tcp_large_bytes, bytes, "and still counted");
            let again = i.add_tcp(&cfg).unwrap();
            assert!(i.tcp_pool.is_empty(), "the next socket is the kept one, its buffers not allocated again");
            assert_eq!(i.sockets.iter().count(), in_table);
            assert_eq!(i.tcp_large_bytes, bytes);
            let s = i.tcp(again);
            assert_eq!(s.ack_delay(), Some(Duration::from_millis(10).into()), "smoltcp's default again");
            assert!(s.nagle_enabled());
            assert_eq!(s.recv_capacity() + s.send_capacity(), large);
            // A LISTEN socket given up is closed and kept too; the pool is bounded.
            let mut made = vec![again];
            for _ in 0..TCP_POOL + 3 {
                made.push(i.add_tcp(&cfg).unwrap());
            }
            for h in made {
                i.tcp(h).listen(81).unwrap();
                i.remove_tcp(h);
            }
            assert_eq!(i.tcp_pool.len(), TCP_POOL);
            assert!(i.tcp_pool.iter().all(|(s, _)| s.state() == smoltcp::socket::tcp::State::Closed));
            // Low memory: the next top-up frees them all, their buffers leave the budget.
            let before = i.tcp_large_bytes;
            simulate(Pressure::Low);
            i.top_up(80, &cfg);
            assert!(i.tcp_pool.is_empty());
            assert_eq!(i.tcp_large_bytes, before - TCP_POOL * large);
            // And a socket given up under pressure is freed, not kept.
            let h = i.add_tcp(&cfg).unwrap();
            i.remove_tcp(h);
            assert!(i.tcp_pool.is_empty());
        });
        net.stop().await;
    })
}

#[test]
fn memory_pressure_shrinks_the_backlog_then_refuses_connections() {
    use libos::mem::pressure::{simulate, Pressure};
    let _serial = PRESSURE.lock().unwrap_or_else(|e| e.into_inner());
    run(async {
        let _normal = Normal;
        let net = Net::new(Config::default(), Config::default());
        let listener = TcpListener::bind_with_backlog_on(&net.a, 80, 4).unwrap();
        assert_eq!(net.a.stats().tcp_sockets, 4);
        // Critical: the four listening sockets take four SYNs, no more are made, so the fifth SYN is answered RST.
        simulate(Pressure::Critical);
        let mut streams = Vec::new();
        for _ in 0..4 {
            streams.push(TcpStream::connect_on(&net.b, addr_a(80)).await.expect("connect"));
        }
        assert_eq!(TcpStream::connect_on(&net.b, addr_a(80)).await.map(|_| ()), Err(Error::ConnectionRefused));
        for _ in 0..4 {
            streams.push(listener.accept().await.expect("accept").0);
        }
        assert_eq!(listener.accept().await.map(|_| ()), Err(Error::LowMemory));
        assert_eq!(net.a.stats().tcp_sockets, 4, "connections only, no listening socket");
        let connect = || {
            let b = net.b.clone();
            spawn(async move { TcpStream::connect_on(&b, addr_a(80)).await })
        };
        // Low: one listening socket at a time.
        simulate(Pressure::Low);
        let c = connect();
        streams.push(listener.accept().await.expect("accept when low").0);
        streams.push(c.await.expect("connect when low"));
        assert_eq!(net.a.stats().tcp_sockets, 6, "five connections and one listening socket");
        // Normal: the backlog is whole again at the next top-up.
        simulate(Pressure::Normal);
        let c = connect();
        streams.push(listener.accept().await.expect("accept when normal").0);
        streams.push(c.await.expect("connect when normal"));
        assert_eq!(net.a.stats().tcp_sockets, 6 + 4);
        drop(streams);
        drop(listener);
        net.stop().await;
    })
}

/// A TCP client written frame by frame (a [`RawPeer`](super::pipe::RawPeer) at 10.0.0.2:40000) against a stack
/// at 10.0.0.1 driven by `poll`, for what two smoltcp stacks never send each other: retransmitted SYNs, segments
/// out of order.
struct RawClient {
    stack: Arc<crate::Stack>,
    peer: super::pipe::RawPeer,
    _listener: TcpListener,
}

impl RawClient {
    const PEER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];

    /// A stack listening on port 80 (backlog 1), whose table has a free slot before the listening socket, and
    /// the client, its address announced by ARP.
    fn new() -> RawClient {
        use smoltcp::socket::udp;
        use smoltcp::wire::{ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol};
        super::clock();
        let (nic, peer_nic, _pipe) = super::pipe::pair(NetOffloads::default());
        let stack = crate::Stack::new(Box::new(nic), super::static_ip(1, None), Config::default()).unwrap();
        let mut peer = super::pipe::RawPeer { nic: peer_nic };
        stack.poll().unwrap();
        while peer.recv().is_some() {}
        // A slot that is free again by the time the first connection's replacement LISTEN socket is made.
        let hole = stack.with(|i| {
            let buf = || udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 1], vec![0u8; 64]);
            i.sockets.add(udp::Socket::new(buf(), buf()))
        });
        let listener = TcpListener::bind_with_backlog_on(&stack, 80, 1).unwrap();
        stack.poll().unwrap();
        stack.with(|i| {
            i.sockets.remove(hole);
        });
        let arp = ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr: EthernetAddress(Self::PEER_MAC),
            source_protocol_addr: Self::end(false).ip,
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: Self::end(true).ip,
        };
        let mut frame = vec![0u8; 14 + arp.buffer_len()];
        let mut eth = EthernetFrame::new_unchecked(&mut frame[..]);
        eth.set_dst_addr(EthernetAddress::BROADCAST);
        eth.set_src_addr(EthernetAddress(Self::PEER_MAC));
        eth.set_ethertype(EthernetProtocol::Arp);
        arp.emit(&mut ArpPacket::new_unchecked(eth.payload_mut()));
        peer.send(&frame);
        RawClient { stack, peer, _listener: listener }
    }

    fn end(server: bool) -> super::End {
        match server {
            true => {
                super::End { mac: [0x52, 0x54, 0, 0x12, 0x34, 1], ip: std::net::Ipv4Addr::new(10, 0, 0, 1), port: 80 }
            }
            false => super::End { mac: Self::PEER_MAC, ip: std::net::Ipv4Addr::new(10, 0, 0, 2), port: 40000 },
        }
    }

    /// Sends one segment, lets the stack take it, and returns the TCP segments it answered with: (SYN, sequence
    /// number, acknowledgment number).
    fn send(
        &mut self,
        control: smoltcp::wire::TcpControl,
        seq: i32,
        ack: Option<i32>,
        payload: &[u8],
    ) -> Vec<(bool, i32, i32)> {
        use smoltcp::wire::{EthernetFrame, Ipv4Packet, TcpPacket};
        self.peer.send(&super::tcp_segment(Self::end(false), Self::end(true), control, (seq, ack), payload));
        self.stack.poll().unwrap();
        let mut out = Vec::new();
        while let Some(f) = self.peer.recv() {
            let eth = EthernetFrame::new_checked(&f[..]).unwrap();
            let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else { continue };
            let Ok(t) = TcpPacket::new_checked(ip.payload()) else { continue };
            out.push((t.syn(), t.seq_number().0, t.ack_number().0));
        }
        out
    }

    /// TCP sockets of the stack not in LISTEN, by state.
    fn connections(&self) -> Vec<smoltcp::socket::tcp::State> {
        use smoltcp::socket::{tcp, Socket};
        self.stack.with(|i| {
            i.sockets
                .iter()
                .filter_map(|(_, s)| match s {
                    Socket::Tcp(t) if t.state() != tcp::State::Listen => Some(t.state()),
                    _ => None,
                })
                .collect()
        })
    }
}

/// A retransmitted SYN must not open a second connection on the same 4-tuple. smoltcp gives a segment to the
/// first socket in its table that accepts it; here the LISTEN socket made after the connection sits in a slot
/// before it (a freed one), as happens once sockets come and go.
#[test]
fn a_retransmitted_syn_does_not_open_a_second_connection() {
    use smoltcp::socket::tcp::State;
    use smoltcp::wire::TcpControl;
    let mut c = RawClient::new();
    let first = c.send(TcpControl::Syn, 1000, None, &[]);
    assert!(matches!(first[..], [(true, _, 1001)]), "one SYN-ACK: {first:?}");
    let isn = first[0].1;
    // Our SYN-ACK "was lost": the client sends its SYN again.
    let again = c.send(TcpControl::Syn, 1000, None, &[]);
    assert!(again.iter().all(|s| s.1 == isn), "a second connection answered: {first:?} then {again:?}");
    c.send(TcpControl::None, 1001, Some(isn + 1), &[]);
    assert_eq!(c.connections(), [State::Established], "one connection, established");
}

/// Segments out of order are kept, not only four ranges of them (smoltcp's default assembler): with more holes a
/// receiver dropped segments without an ACK, and under loss and reordering a sender fell back to one
/// retransmission timeout per hole.
#[test]
fn many_out_of_order_segments_are_kept() {
    use smoltcp::wire::TcpControl;
    let mut c = RawClient::new();
    let isn = c.send(TcpControl::Syn, 1000, None, &[])[0].1;
    c.send(TcpControl::None, 1001, Some(isn + 1), &[]);
    const N: i32 = 24;
    const LEN: i32 = 100;
    let data = super::pattern((N * LEN) as usize, 7);
    let piece = |k: i32| &data[(k * LEN) as usize..((k + 1) * LEN) as usize];
    // Every other segment first: 12 ranges with a hole before each.
    for k in (1..N).step_by(2) {
        c.send(TcpControl::None, 1001 + k * LEN, Some(isn + 1), piece(k));
    }
    let mut acked = 0;
    for k in (0..N).step_by(2) {
        if let Some(a) = c.send(TcpControl::None, 1001 + k * LEN, Some(isn + 1), piece(k)).last() {
            acked = a.2;
        }
    }
    assert_eq!(acked, 1001 + N * LEN, "every segment kept once the holes are filled");
}
