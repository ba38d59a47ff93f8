//! Boots the `httpd` appliance on microvm (virtio-mmio) and q35 (virtio-pci), under TCG always and KVM when
//! `/dev/kvm` opens, and talks to it from the host through QEMU's user networking with real sockets: routes,
//! keep-alive, pipelining, 64 parallel connections, a 10 MiB transfer checked byte for byte, malformed requests,
//! idle-connection reclaim; plus the `udpecho` appliance. The DHCP lease from QEMU's slirp is checked in the log.

use std::io::{BufReader, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::{Duration, Instant};
use zirvium_tests::http::{get, read_response};
use zirvium_tests::{accel_usable, Accel, Machine, Protocol, Vm, VmError};

fn connect(port: u16) -> std::io::Result<BufReader<TcpStream>> {
    let s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.set_write_timeout(Some(Duration::from_secs(30)))?;
    Ok(BufReader::new(s))
}

/// Waits for the lease and the listener, then polls until the first request is answered (slirp may take a
/// moment to learn the guest's MAC).
fn wait_serving(vm: &Vm, port: u16) -> Result<(), VmError> {
    let lease = vm.wait_for("DHCP lease")?;
    vm.ensure(lease.contains("10.0.2.15/24"), format_args!("lease line {lease:?} should give 10.0.2.15/24"))?;
    vm.wait_for("listening on port 80")?;
    let t0 = Instant::now();
    loop {
        match get(port, "/health") {
            Ok(r) if r.status == 200 => return Ok(()),
            other => {
                if t0.elapsed() > Duration::from_secs(30) {
                    return Err(fail(vm, format_args!("no 200 from /health within 30 s: {:?}", other.err())));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Turns an I/O error into a test failure that carries the console.
fn io<T>(vm: &Vm, what: &str, r: std::io::Result<T>) -> Result<T, VmError> {
    r.map_err(|e| fail(vm, format_args!("{what}: {e}")))
}

fn fail(vm: &Vm, what: impl std::fmt::Display) -> VmError {
    vm.ensure(false, what).expect_err("ensure(false) always fails")
}

fn httpd_suite(test: &str, machine: Machine, accel: Accel) -> Result<(), VmError> {
    if !accel_usable(test, accel) {
        return Ok(());
    }
    let vm = Vm::builder(test, "httpd", accel)
        .machine(machine)
        .forward(Protocol::Tcp, 80)
        // Under the nested KVM opening 64 connections one by one can take longer than httpd's default 30 s idle
        // timeout, which would (correctly) close the first ones while they wait for the rest; idle reclaim has
        // its own test.
        .args(["message=integration test", "idle_timeout_ms=600000"])
        .boot()?;
    let port = vm.host_port(Protocol::Tcp, 80)?;
    wait_serving(&vm, port)?;
    let platform = match accel {
        Accel::Kvm => "kvm",
        Accel::Tcg => "qemu-tcg",
    };
    let nic = match machine {
        Machine::Microvm => "virtio-net@mmio:",
        _ => "virtio-net@pci:",
    };
    vm.line_with(nic)?;

    // Routes.
    let r = io(&vm, "GET /", get(port, "/"))?;
    vm.ensure(r.status == 200, format_args!("GET / status {}", r.status))?;
    vm.ensure(r.header("content-type").is_some_and(|t| t.starts_with("text/html")), "GET / content type")?;
    let html = String::from_utf8_lossy(&r.body);
    vm.ensure(html.contains("integration test"), format_args!("GET / should show the message: {html}"))?;
    let r = io(&vm, "GET /health", get(port, "/health"))?;
    let json = String::from_utf8_lossy(&r.body).to_string();
    vm.ensure(r.status == 200 && json.contains(r#""status":"ok""#), format_args!("GET /health: {json}"))?;
    vm.ensure(json.contains(&format!(r#""platform":"{platform}""#)), format_args!("/health platform: {json}"))?;
    vm.ensure(json.contains(r#""memory":{"total_bytes":"#), format_args!("/health memory figures: {json}"))?;
    let r = io(&vm, "GET /nope", get(port, "/nope"))?;
    vm.ensure(r.status == 404, format_args!("GET /nope status {}", r.status))?;

    // Keep-alive: 100 requests on one connection, then 3 pipelined in one write.
    let mut c = io(&vm, "connect", connect(port))?;
    for i in 0..100 {
        io(&vm, "write", write!(c.get_mut(), "GET /health HTTP/1.1\r\nHost: t\r\n\r\n"))?;
        let r = io(&vm, &format!("keep-alive request {i}"), read_response(&mut c, false))?;
        vm.ensure(r.status == 200, format_args!("keep-alive request {i}: status {}", r.status))?;
    }
    io(&vm, "write", c.get_mut().write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\nHEAD / HTTP/1.1\r\nHost: t\r\n\r\nPOST / HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"))?;
    let statuses: Vec<u16> =
        io(&vm, "pipelined responses", (0..3).map(|i| read_response(&mut c, i == 1).map(|r| r.status)).collect())?;
    vm.ensure(statuses == [200, 200, 405], format_args!("pipelined statuses {statuses:?}"))?;
    drop(c);

    // 64 connections open at once. Each makes a request as soon as it is connected, waits until all 64 are
    // open, then makes 4 more in parallel with the others. Connections are opened one after another: QEMU's
    // slirp forwarder accepts host connections slowly (~0.1 s each here) and resets them when a burst of
    // simultaneous connects overflows its listen backlog, before the guest sees a SYN.
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(64));
    let mut handles = Vec::new();
    let opening = Instant::now();
    for i in 0..64 {
        let mut c = io(&vm, &format!("connection {i}"), connect(port))?;
        let barrier = barrier.clone();
        handles.push(std::thread::spawn(move || -> std::io::Result<Vec<u16>> {
            let mut statuses = Vec::new();
            for k in 0..5 {
                if k == 1 {
                    barrier.wait();
                }
                write!(c.get_mut(), "GET / HTTP/1.1\r\nHost: t\r\n\r\n")?;
                statuses.push(read_response(&mut c, false)?.status);
            }
            Ok(statuses)
        }));
    }
    eprintln!("{test}: 64 connections opened in {:.1} s", opening.elapsed().as_secs_f64());
    let results: Vec<_> = handles.into_iter().map(|h| h.join().expect("client thread")).collect();
    let ok = results.iter().filter(|r| matches!(r, Ok(v) if v.iter().all(|&s| s == 200))).count();
    vm.ensure(ok == 64, format_args!("{ok}/64 parallel connections got 5 x 200: {results:?}"))?;

    // 10 MiB, byte for byte: byte i is (i % 251).
    let n = 10 * 1024 * 1024;
    let t0 = Instant::now();
    let r = io(&vm, "GET /bytes", get(port, &format!("/bytes/{n}")))?;
    let secs = t0.elapsed().as_secs_f64();
    vm.ensure(r.status == 200 && r.body.len() == n, format_args!("/bytes: status {} len {}", r.status, r.body.len()))?;
    if let Some(i) = r.body.iter().enumerate().position(|(i, &b)| b != (i % 251) as u8) {
        vm.ensure(false, format_args!("/bytes differs at byte {i}"))?;
    }
    eprintln!("{test}: 10 MiB in {secs:.2} s ({:.1} MiB/s) over slirp", 10.0 / secs);

    // Malformed requests get 400 and the connection closes; the server goes on serving.
    for garbage in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"\x00\xff\xfe\r\n\r\n",
    ] {
        let mut c = io(&vm, "connect", connect(port))?;
        io(&vm, "write", c.get_mut().write_all(garbage))?;
        let r = io(&vm, "malformed request", read_response(&mut c, false))?;
        vm.ensure(r.status == 400, format_args!("{garbage:?} answered {}", r.status))?;
        let mut rest = Vec::new();
        let _ = c.read_to_end(&mut rest);
        vm.ensure(rest.is_empty(), "connection should close after a 400")?;
    }
    let r = io(&vm, "GET / after garbage", get(port, "/"))?;
    vm.ensure(r.status == 200, "server still serves after malformed requests")?;

    // Every connection above was reclaimed: only the /health request's own connection is open.
    std::thread::sleep(Duration::from_millis(300));
    let r = io(&vm, "GET /health", get(port, "/health"))?;
    let json = String::from_utf8_lossy(&r.body).to_string();
    vm.ensure(json.contains(r#""connections":1"#), format_args!("connections not reclaimed: {json}"))?;
    Ok(())
}

/// A client that connects and sends nothing is closed by the server after the idle timeout (2 s here), not
/// before, and its connection is reclaimed.
fn idle_timeout(test: &str, accel: Accel) -> Result<(), VmError> {
    if !accel_usable(test, accel) {
        return Ok(());
    }
    let vm = Vm::builder(test, "httpd", accel).forward(Protocol::Tcp, 80).args(["idle_timeout_ms=2000"]).boot()?;
    let port = vm.host_port(Protocol::Tcp, 80)?;
    wait_serving(&vm, port)?;
    let mut idle = io(&vm, "connect", connect(port))?;
    let since = Instant::now();
    let mut buf = [0u8; 64];
    let n = io(&vm, "read from the idle connection", idle.read(&mut buf))?;
    let waited = since.elapsed();
    vm.ensure(
        n == 0 && waited >= Duration::from_millis(1500) && waited < Duration::from_secs(20),
        format_args!("idle connection: read {n} bytes, closed after {waited:?} (timeout 2 s)"),
    )?;
    std::thread::sleep(Duration::from_millis(300));
    let r = io(&vm, "GET /health", get(port, "/health"))?;
    let json = String::from_utf8_lossy(&r.body).to_string();
    vm.ensure(json.contains(r#""connections":1"#), format_args!("idle connection not reclaimed: {json}"))
}

#[test]
fn httpd_idle_timeout_microvm_tcg() -> Result<(), VmError> {
    idle_timeout("httpd_idle_timeout_microvm_tcg", Accel::Tcg)
}

#[test]
fn httpd_microvm_tcg() -> Result<(), VmError> {
    httpd_suite("httpd_microvm_tcg", Machine::Microvm, Accel::Tcg)
}

#[test]
fn httpd_q35_tcg() -> Result<(), VmError> {
    httpd_suite("httpd_q35_tcg", Machine::Q35, Accel::Tcg)
}

#[test]
fn httpd_microvm_kvm() -> Result<(), VmError> {
    httpd_suite("httpd_microvm_kvm", Machine::Microvm, Accel::Kvm)
}

#[test]
fn httpd_q35_kvm() -> Result<(), VmError> {
    httpd_suite("httpd_q35_kvm", Machine::Q35, Accel::Kvm)
}

fn udpecho(test: &str, accel: Accel) -> Result<(), VmError> {
    if !accel_usable(test, accel) {
        return Ok(());
    }
    let vm = Vm::builder(test, "udpecho", accel).forward(Protocol::Udp, 7).boot()?;
    let port = vm.host_port(Protocol::Udp, 7)?;
    vm.wait_for("DHCP lease")?;
    vm.wait_for("udpecho listening on port 7")?;
    let sock = io(&vm, "bind", UdpSocket::bind("127.0.0.1:0"))?;
    io(&vm, "timeout", sock.set_read_timeout(Some(Duration::from_millis(500))))?;
    let mut buf = [0u8; 2048];
    for i in 0..20u32 {
        let msg: Vec<u8> = (0..(100 + i * 50)).map(|j| (j ^ i) as u8).collect();
        // Datagrams may be lost before slirp learns the guest's MAC: retry each a few times.
        let mut echoed = false;
        for _ in 0..20 {
            io(&vm, "send", sock.send_to(&msg, ("127.0.0.1", port)))?;
            if let Ok((n, _)) = sock.recv_from(&mut buf) {
                vm.ensure(buf[..n] == msg[..], format_args!("datagram {i} came back changed"))?;
                echoed = true;
                break;
            }
        }
        vm.ensure(echoed, format_args!("datagram {i} was never echoed"))?;
    }
    Ok(())
}

#[test]
fn udpecho_microvm_tcg() -> Result<(), VmError> {
    udpecho("udpecho_microvm_tcg", Accel::Tcg)
}

#[test]
fn udpecho_microvm_kvm() -> Result<(), VmError> {
    udpecho("udpecho_microvm_kvm", Accel::Kvm)
}
