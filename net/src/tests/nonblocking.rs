//! The non-blocking surface (`try_*`, `readiness`, `connect_start_on`) that `poll(2)`-style callers use.

use super::{addr_a, eventually, run, Net};
use crate::{Config, Readiness, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Wake, Waker};

struct Count(AtomicUsize);

impl Wake for Count {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn counter() -> (Arc<Count>, Waker) {
    let c = Arc::new(Count(AtomicUsize::new(0)));
    (c.clone(), Waker::from(c))
}

#[test]
fn tcp_try_ops_and_readiness_follow_the_connection() {
    run(async {
        let net = Net::new(Config::default(), Config::default());
        let listener = TcpListener::bind_on(&net.a, 80).unwrap();
        assert!(listener.try_accept().unwrap().is_none(), "nothing to accept yet");
        let (woken, w) = counter();
        assert!(!listener.readiness(Some(&w)).readable);

        let c = TcpStream::connect_start_on(&net.b, addr_a(80)).unwrap();
        assert_eq!(c.connect_result(), None, "the handshake has not run yet");
        assert!(!c.readiness(None).writable, "connecting: not writable");
        let l = &listener;
        assert!(eventually(5, || l.readiness(None).readable).await);
        assert!(woken.0.load(Ordering::SeqCst) > 0, "the registered waker saw the connection");
        let (s, _) = listener.try_accept().unwrap().expect("a connection is ready");
        let cc = &c;
        assert!(eventually(5, || cc.connect_result().is_some()).await);
        assert_eq!(c.connect_result(), Some(Ok(())));
        assert_eq!(c.readiness(None), Readiness { writable: true, ..Readiness::default() });

        let mut buf = [0u8; 16];
        assert_eq!(s.try_read(&mut buf, false), Ok(None), "no data yet");
        assert_eq!(c.try_write(b"ping"), Ok(Some(4)));
        let ss = &s;
        assert!(eventually(5, || ss.readiness(None).readable).await);
        assert_eq!(s.try_read(&mut buf, true), Ok(Some(4)), "peek");
        assert_eq!(s.try_read(&mut buf, false), Ok(Some(4)), "the peeked bytes are still there");
        assert_eq!(&buf[..4], b"ping");

        // The peer's FIN: readable (end of stream) and read_closed, but no hangup while we can still send.
        c.close_write();
        assert!(eventually(5, || ss.readiness(None).read_closed).await);
        let r = s.readiness(None);
        assert!(r.readable && r.writable && !r.hangup && !r.error, "{r:?}");
        assert_eq!(s.try_read(&mut buf, false), Ok(Some(0)));
        s.close_write();
        assert!(eventually(5, || ss.readiness(None).hangup).await);
        assert!(!s.readiness(None).error, "an orderly close is no error");

        // Refused: error and hangup.
        let refused = TcpStream::connect_start_on(&net.b, addr_a(81)).unwrap();
        let rr = &refused;
        assert!(eventually(5, || rr.connect_result().is_some()).await);
        assert_eq!(refused.connect_result(), Some(Err(crate::Error::ConnectionRefused)));
        let r = refused.readiness(None);
        assert!(r.error && r.hangup, "{r:?}");
        drop((c, s, refused, listener));
        net.stop().await;
    })
}

#[test]
fn udp_try_ops_and_readiness() {
    run(async {
        let net = Net::new(Config::default(), Config::default());
        let a = UdpSocket::bind_on(&net.a, 7000).unwrap();
        let b = UdpSocket::bind_on(&net.b, 0).unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(a.try_recv_from(&mut buf, false), Ok(None));
        assert_eq!(a.readiness(None), Readiness { writable: true, ..Readiness::default() });
        assert_eq!(b.try_send_to(b"hello", addr_a(7000)), Ok(Some(5)));
        let aa = &a;
        assert!(eventually(5, || aa.readiness(None).readable).await);
        let (n, from) = a.try_recv_from(&mut buf, true).unwrap().unwrap();
        assert_eq!((n, from.port()), (5, b.local_addr().unwrap().port()));
        assert_eq!(a.try_recv_from(&mut buf, false).unwrap().map(|(n, _)| n), Some(5), "peek kept it");
        assert_eq!(a.try_recv_from(&mut buf, false), Ok(None));
        drop((a, b));
        net.stop().await;
    })
}
