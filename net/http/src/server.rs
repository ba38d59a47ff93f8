//! The one server loop every HTTP appliance runs: [`run`] binds the port, [`serve`] accepts connections (with a
//! cap on open ones, and a graceful drain when the host asks the VM to shut down), and [`serve_connection`]
//! drives one [`Connection`] over a [`Transport`] — read, [`Connection::receive`], write out, close — with an
//! idle timeout.

use crate::connection::Connection;
use crate::demo::Context;
use crate::handler::Handler;
use crate::settings::{ArgError, Settings};
use alloc::format;
use core::fmt;
use core::future::Future;
use core::sync::atomic::{AtomicU64, Ordering};
use libos::shutdown::ShutdownKind;
use libos::time::{sleep, timeout, Duration, Instant};
use net::{TcpListener, TcpStream};

/// A reliable, ordered byte stream in both directions that a connection is served over: a TCP connection
/// ([`net::TcpStream`]), or a stream in memory in the tests.
pub trait Transport {
    /// Why a read, write or shutdown failed.
    type Error: fmt::Display;

    /// Reads at least one byte into `buf` when any arrive; `Ok(0)` once the peer finished sending (TCP FIN).
    fn read(&mut self, buf: &mut [u8]) -> impl Future<Output = Result<usize, Self::Error>>;

    /// Writes all of `data`.
    fn write_all(&mut self, data: &[u8]) -> impl Future<Output = Result<(), Self::Error>>;

    /// Finishes sending (TCP FIN) once what was written is sent.
    fn shutdown(&mut self) -> impl Future<Output = Result<(), Self::Error>>;

    /// Writes what `fill` puts into a buffer and returns how many bytes: `fill` gets free space (at least 1
    /// byte) and returns how many bytes it wrote. A transport with a send buffer of its own lends that (no
    /// copy); the default fills `scratch` and writes it with [`write_all`](Self::write_all).
    fn write_with(
        &mut self,
        scratch: &mut [u8],
        fill: &mut (dyn FnMut(&mut [u8]) -> usize + Send),
    ) -> impl Future<Output = Result<usize, Self::Error>> {
        async move {
            let n = fill(scratch).min(scratch.len());
            self.write_all(&scratch[..n]).await.map(|()| n)
        }
    }
}

/// A transport borrowed for the connection's lifetime is still one.
impl<T: Transport + ?Sized> Transport for &mut T {
    type Error = T::Error;

    fn read(&mut self, buf: &mut [u8]) -> impl Future<Output = Result<usize, T::Error>> {
        (**self).read(buf)
    }

    fn write_all(&mut self, data: &[u8]) -> impl Future<Output = Result<(), T::Error>> {
        (**self).write_all(data)
    }

    fn shutdown(&mut self) -> impl Future<Output = Result<(), T::Error>> {
        (**self).shutdown()
    }

    fn write_with(
        &mut self,
        scratch: &mut [u8],
        fill: &mut (dyn FnMut(&mut [u8]) -> usize + Send),
    ) -> impl Future<Output = Result<usize, T::Error>> {
        (**self).write_with(scratch, fill)
    }
}

impl Transport for TcpStream {
    type Error = net::Error;

    fn read(&mut self, buf: &mut [u8]) -> impl Future<Output = Result<usize, net::Error>> {
        TcpStream::read(self, buf)
    }

    fn write_all(&mut self, data: &[u8]) -> impl Future<Output = Result<(), net::Error>> {
        TcpStream::write_all(self, data)
    }

    fn shutdown(&mut self) -> impl Future<Output = Result<(), net::Error>> {
        TcpStream::shutdown(self)
    }

    /// Straight into the socket's send buffer (smoltcp sends from there).
    fn write_with(
        &mut self,
        _scratch: &mut [u8],
        fill: &mut (dyn FnMut(&mut [u8]) -> usize + Send),
    ) -> impl Future<Output = Result<usize, net::Error>> {
        TcpStream::write_with(self, fill)
    }
}

/// Connections open now, all listeners.
static OPEN: AtomicU64 = AtomicU64::new(0);
/// Connections being served ([`serve_connection`]), not answered 503 ([`crate::shed`]).
static SERVING: AtomicU64 = AtomicU64::new(0);

/// Set when the first response has been written (the boot timeline is logged then).
static FIRST_RESPONSE: AtomicU64 = AtomicU64::new(0);

/// How long closing a connection (its last output, then our FIN acknowledged) may hold the connection's task: a
/// client that vanished never acknowledges, and once the stream is dropped the stack finishes the close on its
/// own (the net crate's `close_timeout`), sending what is still buffered.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// How long a graceful shutdown waits for open connections to finish (they are idle or mid-response).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections [`serve`] has open now (each counted until [`serve_connection`] returns).
pub fn open_connections() -> u64 {
    OPEN.load(Ordering::Relaxed)
}

/// The server's [`Context`] for the demo routes: the platform (`libos::platform::current`), time since boot,
/// [`open_connections`] and the memory figures (`libos::mem::balloon::stats`).
pub fn context() -> Context<'static> {
    Context {
        platform: libos::platform::current(),
        uptime_ms: Instant::now().as_nanos() / 1_000_000,
        connections: open_connections(),
        memory: libos::mem::balloon::stats(),
    }
}

/// Listens on `settings.port` of the kernel's network stack and [`serve`]s it with `handler`. Errors: the port
/// cannot be bound (the text names the app, the port and why).
pub async fn run(app: &'static str, settings: Settings, handler: &'static dyn Handler) -> Result<(), ArgError> {
    let settings: &'static Settings = alloc::boxed::Box::leak(alloc::boxed::Box::new(settings));
    let listener = TcpListener::bind_with_backlog(settings.port, settings.backlog)
        .map_err(|e| ArgError(format!("{app}: bind port {}: {e}", settings.port)))?;
    serve(app, listener, settings, handler).await;
    Ok(())
}

/// Serves every connection `listener` accepts with `handler`, each in its own task; prints `APP listening on
/// port N` first. A connection beyond `settings.max_connections` open ones is closed at once (RST); one accepted
/// while memory is low is answered 503 and closed ([`crate::shed`]). Returns
/// after a graceful shutdown requested by the host ([`libos::shutdown`]): no more connections are accepted and
/// open ones get up to 5 s to finish.
pub async fn serve(
    app: &'static str,
    listener: TcpListener,
    settings: &'static Settings,
    handler: &'static dyn Handler,
) {
    #[cfg(target_os = "none")]
    libos::start::stamp(libos::start::Step::Ready);
    log::info!("{app} listening on port {} (max {} connections)", listener.port(), settings.max_connections);
    libos::println!("{app} listening on port {}", listener.port());
    loop {
        // The next connection, unless the host asks the VM to shut down first.
        let accepted = {
            let mut accept = core::pin::pin!(listener.accept());
            let mut stop = core::pin::pin!(libos::shutdown::requested());
            core::future::poll_fn(|cx| {
                if let core::task::Poll::Ready(kind) = stop.as_mut().poll(cx) {
                    return core::task::Poll::Ready(Err(kind));
                }
                accept.as_mut().poll(cx).map(Ok)
            })
            .await
        };
        let accepted = match accepted {
            Ok(a) => a,
            Err(kind) => {
                drain(app, kind).await;
                return;
            }
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(net::Error::LowMemory) => {
                // The stack refuses SYNs (RST) meanwhile; look again shortly.
                crate::shed::note_no_socket();
                sleep(Duration::from_millis(10)).await;
                continue;
            }
            Err(e) => {
                log::warn!("accept: {e}");
                sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if OPEN.load(Ordering::Relaxed) >= settings.max_connections {
            log::warn!("connection from {peer} refused: {} connections open", settings.max_connections);
            stream.abort();
            continue;
        }
        if libos::mem::pressure::current() == libos::mem::pressure::Pressure::Critical {
            // Not even a task for a 503 fits: reset (the stack refuses further SYNs meanwhile).
            stream.abort();
            continue;
        }
        OPEN.fetch_add(1, Ordering::Relaxed);
        libos::task::spawn(async move {
            // Decided when the task first runs: a burst of accepts may have used the memory up meanwhile.
            if crate::shed::should_refuse(SERVING.load(Ordering::Relaxed)) {
                crate::shed::refuse(stream).await;
            } else {
                SERVING.fetch_add(1, Ordering::Relaxed);
                serve_connection(stream, settings, handler).await;
                SERVING.fetch_sub(1, Ordering::Relaxed);
            }
            OPEN.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// After a host shutdown request: stops accepting and waits up to [`DRAIN_TIMEOUT`] for open connections.
async fn drain(app: &str, kind: ShutdownKind) {
    let open = OPEN.load(Ordering::Relaxed);
    log::info!("{app}: {kind:?} requested by the host; waiting up to 5 s for {open} open connections");
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while OPEN.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        sleep(Duration::from_millis(20)).await;
    }
    libos::println!("{app}: shut down gracefully ({kind:?})");
}

/// Drives one connection until it closes: feeds what `stream` reads to a [`Connection`] answered by `handler`
/// and writes its output back, with keep-alive and pipelining. A connection idle for `settings.idle_timeout`,
/// or whose request head is not complete `settings.header_timeout` after it began (the first request's: after
/// the connection began), is closed, after a 408 if a request was half received. Read and write errors end it quietly; content that
/// fails part-way is logged and closes it. When the heap cannot spare its buffers the connection is answered 503
/// ([`crate::shed::refuse`]).
pub async fn serve_connection<T: Transport>(mut stream: T, settings: &Settings, handler: &dyn Handler) {
    // The buffers are the connection's largest allocations: without them it is refused, the VM keeps running.
    let (Some(mut rx), Some(mut tx)) = (libos::mem::try_zeroed(4096), libos::mem::try_zeroed(16 * 1024)) else {
        crate::shed::refuse(stream).await;
        return;
    };
    let mut conn = Connection::with_handler(&settings.http, handler);
    // When the request head being read must be complete: the first from the start, later ones from their first
    // byte; `None` between requests and in bodies, where the idle timeout alone applies.
    let mut head_deadline = Some(Instant::now() + settings.header_timeout);
    loop {
        let wait = match head_deadline {
            Some(d) => settings.idle_timeout.min(d.saturating_duration_since(Instant::now())),
            None => settings.idle_timeout,
        };
        let n = match timeout(wait, stream.read(&mut rx)).await {
            Ok(Ok(0)) => {
                conn.receive_eof();
                0
            }
            Ok(Ok(n)) => n,
            Ok(Err(_)) => return,
            Err(_) => {
                // Idle or header timeout: answer 408 if a request was half received (else just close).
                if !conn.is_idle() {
                    let _ = conn.timeout();
                }
                let close = async {
                    let _ = write_out(&mut conn, &mut stream, &mut tx).await;
                    let _ = stream.shutdown().await;
                };
                let _ = timeout(CLOSE_GRACE, close).await;
                return;
            }
        };
        let (mut off, mut answered) = (0, 0);
        loop {
            let r = conn.receive(&rx[off..n]);
            off += r.consumed;
            answered += r.requests;
            if let Some(e) = r.error {
                log::debug!("bad request: {e} ({})", e.status_code());
            }
            if write_out(&mut conn, &mut stream, &mut tx).await.is_err() {
                return;
            }
            if conn.wants_close() || n == 0 {
                let _ = timeout(CLOSE_GRACE, stream.shutdown()).await;
                return;
            }
            if off >= n {
                break;
            }
        }
        head_deadline = match head_deadline {
            _ if !conn.reading_head() => None,
            Some(d) if answered == 0 => Some(d),
            _ => Some(Instant::now() + settings.header_timeout),
        };
    }
}

/// Writes all queued output; logs a response whose content failed part-way (the connection then closes).
async fn write_out<T: Transport>(conn: &mut Connection<'_>, stream: &mut T, tx: &mut [u8]) -> Result<(), T::Error> {
    let mut wrote = false;
    while conn.has_output() {
        stream.write_with(tx, &mut |buf| conn.poll_output(buf)).await?;
        wrote = true;
    }
    if let Some(e) = conn.take_content_error() {
        log::warn!("{e}; closing the connection");
    }
    if wrote && FIRST_RESPONSE.swap(1, Ordering::Relaxed) == 0 {
        #[cfg(target_os = "none")]
        {
            log::info!(
                "first response at {} us after entry; boot timeline: {}",
                Instant::now().as_nanos() / 1000,
                libos::start::timeline_line()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{get, parse_responses, test_demo};
    use alloc::collections::VecDeque;
    use alloc::vec::Vec;
    use core::task::{Context as TaskContext, Poll, Waker};
    use libos::time::ClockSource;

    /// A connection in memory: `input` arrives piece by piece, then the peer's FIN, or, with `hang`, nothing
    /// more ever; what the server writes collects in `output`.
    #[derive(Default)]
    struct MemStream {
        input: VecDeque<Vec<u8>>,
        hang: bool,
        output: Vec<u8>,
        shut_down: bool,
        /// The FIN is never acknowledged (the peer vanished): `shutdown` never completes.
        stall: bool,
        /// Each piece arrives only after a read has waited once (the test's clock moves while it waits).
        pause: bool,
        /// With `pause`: the current read has waited.
        waited: bool,
    }

    impl MemStream {
        fn new(pieces: &[&[u8]], hang: bool) -> MemStream {
            MemStream { input: pieces.iter().map(|p| p.to_vec()).collect(), hang, ..MemStream::default() }
        }
    }

    impl Transport for MemStream {
        type Error = &'static str;

        fn read(&mut self, buf: &mut [u8]) -> impl Future<Output = Result<usize, &'static str>> {
            core::future::poll_fn(move |_| {
                if self.pause && !self.waited {
                    self.waited = true;
                    return Poll::Pending;
                }
                let Some(piece) = self.input.front_mut() else {
                    return if self.hang { Poll::Pending } else { Poll::Ready(Ok(0)) };
                };
                self.waited = false;
                let n = piece.len().min(buf.len());
                buf[..n].copy_from_slice(&piece[..n]);
                piece.drain(..n);
                if piece.is_empty() {
                    self.input.pop_front();
                }
                Poll::Ready(Ok(n))
            })
        }

        fn write_all(&mut self, data: &[u8]) -> impl Future<Output = Result<(), &'static str>> {
            let result = if self.shut_down {
                Err("write after shutdown")
            } else {
                self.output.extend_from_slice(data);
                Ok(())
            };
            core::future::ready(result)
        }

        fn shutdown(&mut self) -> impl Future<Output = Result<(), &'static str>> {
            self.shut_down = true;
            let stall = self.stall;
            core::future::poll_fn(move |_| if stall { Poll::Pending } else { Poll::Ready(Ok(())) })
        }
    }

    /// The tests' monotonic clock: [`NOW_NS`], moved by hand.
    struct TestClock;

    static NOW_NS: AtomicU64 = AtomicU64::new(0);

    impl ClockSource for TestClock {
        fn now_ns(&self) -> u64 {
            NOW_NS.load(Ordering::Relaxed)
        }

        fn name(&self) -> &'static str {
            "test"
        }
    }

    /// Polls `fut` to completion; each time it waits, `idle()` runs (and may move the clock) first.
    fn block_on<F: Future>(fut: F, mut idle: impl FnMut()) -> F::Output {
        let mut fut = core::pin::pin!(fut);
        let mut cx = TaskContext::from_waker(Waker::noop());
        for _ in 0..1000 {
            if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
                return out;
            }
            idle();
        }
        panic!("the connection never finished");
    }

    #[test]
    fn serves_split_and_pipelined_requests_until_the_peer_closes() {
        let demo = test_demo();
        let settings = Settings::new("m");
        let pieces: [&[u8]; 4] = [
            b"GET /heal",
            b"th HTTP/1.1\r\nHost: t\r\n\r\nGET /bytes/3 HTTP/1.1\r\nHost: t\r\n\r\nPOST / HTTP/1.1\r\nHost: t\r\n",
            b"Content-Length: 2\r\n\r\nok",
            b"GET / HTTP/1.1\r\nHost: t\r\n\r\n",
        ];
        let mut stream = MemStream::new(&pieces, false);
        block_on(serve_connection(&mut stream, &settings, &demo), || panic!("a stream in memory never waits"));
        let responses = parse_responses(&stream.output, &[]);
        assert_eq!(responses.iter().map(|r| r.status).collect::<Vec<_>>(), [200, 200, 405, 200]);
        assert!(responses[0].text().contains(r#""requests":1,"#), "{}", responses[0].text());
        assert_eq!(responses[1].body, [0, 1, 2]);
        assert!(stream.shut_down, "FIN after the last response");
    }

    #[test]
    fn a_closing_response_ends_the_connection() {
        let demo = test_demo();
        let settings = Settings::new("m");
        let pieces: [&[u8]; 2] = [b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", b"GET / HTTP/1.1\r\n\r\n"];
        let mut stream = MemStream::new(&pieces, true);
        block_on(serve_connection(&mut stream, &settings, &demo), || panic!("nothing is read after close"));
        let responses = parse_responses(&stream.output, &[]);
        assert_eq!(responses.len(), 1);
        assert_eq!(responses[0].header("connection"), Some("close"));
        assert!(stream.shut_down);
        assert_eq!(stream.input.len(), 1, "the request after close is never read");
    }

    #[test]
    fn idle_connections_close_after_the_timeout() {
        libos::time::set_clock(&TestClock);
        let demo = test_demo();
        let settings = Settings::new("m");
        let later = || {
            NOW_NS.fetch_add(settings.idle_timeout.as_nanos() as u64 + 1, Ordering::Relaxed);
        };
        // Between requests: closed quietly.
        let mut stream = MemStream::new(&[get("/").as_bytes()], true);
        block_on(serve_connection(&mut stream, &settings, &demo), later);
        assert_eq!(parse_responses(&stream.output, &[]).iter().map(|r| r.status).collect::<Vec<_>>(), [200]);
        assert!(stream.shut_down);
        // A request half received: 408, then closed.
        let mut stream = MemStream::new(&[b"GET / HT"], true);
        block_on(serve_connection(&mut stream, &settings, &demo), later);
        let responses = parse_responses(&stream.output, &[]);
        assert_eq!((responses.len(), responses[0].status), (1, 408));
        assert_eq!(responses[0].header("connection"), Some("close"));
        assert!(stream.shut_down);
    }

    /// Serves `pieces`, one per read with a wait before each, the clock moving `step_ns` per wait; the
    /// statuses answered.
    fn serve_slowly(pieces: &[&[u8]], step_ns: u64) -> Vec<u16> {
        libos::time::set_clock(&TestClock);
        let demo = test_demo();
        let settings = Settings::new("m");
        let mut stream = MemStream { pause: true, ..MemStream::new(pieces, true) };
        block_on(serve_connection(&mut stream, &settings, &demo), || {
            NOW_NS.fetch_add(step_ns, Ordering::Relaxed);
        });
        assert!(stream.shut_down);
        parse_responses(&stream.output, &[]).iter().map(|r| r.status).collect()
    }

    #[test]
    fn a_trickling_head_gets_408_at_the_header_deadline() {
        let s = Settings::new("m");
        let (header, idle) = (s.header_timeout.as_nanos() as u64, s.idle_timeout.as_nanos() as u64);
        let head = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n";
        // A byte every header/8 ns, far inside the idle timeout: only the header deadline can end it.
        let trickle: Vec<&[u8]> = head.chunks(1).collect();
        assert_eq!(serve_slowly(&trickle, header / 8), [408]);
        // The same head in four pieces arrives in time.
        let quick: Vec<&[u8]> = head.chunks(head.len().div_ceil(4)).collect();
        assert_eq!(serve_slowly(&quick, header / 8), [200]);
        // Between keep-alive requests the idle timeout rules: a pause longer than the header timeout (but not
        // the idle one) before the second request's head is fine, and its deadline starts at its first byte.
        let pause = header + (idle - header) / 2;
        assert!(pause < idle);
        let two: [&[u8]; 3] = [head, b"GET / HT", b"TP/1.1\r\nHost: t\r\n\r\n"];
        assert_eq!(serve_slowly(&two, pause / 2), [200, 200]);
        // A second head begun in the read that finished the first gets a deadline of its own.
        let first = [head.as_slice(), b"GET / HT"].concat();
        let pipelined: [&[u8]; 3] = [&first, b"TP/1.1\r\n", b"Host: t\r\n\r\n"];
        assert_eq!(serve_slowly(&pipelined, header * 3 / 4), [200, 200]);
        // The first head's deadline runs from the connection's start, not from its first byte.
        let late: [&[u8]; 3] = [b"GET / HTTP/1.1\r\n", b"Host: t\r\n", b"\r\n"];
        assert_eq!(serve_slowly(&late, header * 3 / 5), [408]);
    }

    #[test]
    fn a_vanished_client_does_not_hold_the_task() {
        libos::time::set_clock(&TestClock);
        let demo = test_demo();
        let settings = Settings::new("m");
        let later = || {
            NOW_NS.fetch_add(settings.idle_timeout.as_nanos() as u64 + 1, Ordering::Relaxed);
        };
        // Half a request, then nothing: not even the ACK of our FIN after the 408.
        let mut stream = MemStream { stall: true, ..MemStream::new(&[b"GET / HTTP/1.1\r\nHost: t\r\n"], true) };
        block_on(serve_connection(&mut stream, &settings, &demo), later);
        assert_eq!(parse_responses(&stream.output, &[])[0].status, 408);
        assert!(stream.shut_down);
        // After a closing response.
        let close = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
        let mut stream = MemStream { stall: true, ..MemStream::new(&[close], true) };
        block_on(serve_connection(&mut stream, &settings, &demo), later);
        assert!(stream.shut_down);
    }
}
