//! platform-hyperv's guest code, unchanged, against `hyperv-peer`, a host-side model of a Hyper-V host: full
//! bring-up with every VMBus and NVSP version, HTTP served by httpd's server (`zirvium-http`) through netvsc,
//! disk I/O through storvsc with every storage protocol version, the shutdown and KVP integration services, a
//! rescinded channel, and hostile ring values. The guest runs on libos's executor (process-global, so tests take
//! [`LOCK`]); the host model runs on its own thread and interrupts the guest through the SynIC interrupt line.

extern crate alloc;

use hyperv_peer::{relid, Host, HostConfig};
use libos::dev::{BlockDevice, BlockError, DeviceError, NetDevice};
use libos::hypervisor::{detect, HypervisorKind, RecordedCpuid};
use libos::time::{ClockSource, Duration};
use net::{Config as NetConfig, IpSetup, Stack, StaticIpv4, TcpListener, TcpStream};
use platform_hyperv::bringup::{self, Devices};
use platform_hyperv::hv::{self, Enlightenments};
use platform_hyperv::ic;
use platform_hyperv::mem::Dma;
use platform_hyperv::netvsc::nvsp;
use platform_hyperv::storvsc::vstor;
use platform_hyperv::vmbus::msg::version;
use platform_hyperv::vmbus::ring;
use platform_hyperv::vmbus::InterruptLine;
use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, OnceLock};
use zirvium_http::demo::{Context, Demo, NotFound};
use zirvium_http::Settings;

struct HostClock;

impl ClockSource for HostClock {
    fn now_ns(&self) -> u64 {
        static START: OnceLock<std::time::Instant> = OnceLock::new();
        START.get_or_init(std::time::Instant::now).elapsed().as_nanos() as u64
    }
    fn name(&self) -> &'static str {
        "host"
    }
}

static LOCK: Mutex<()> = Mutex::new(());

/// Runs `f` on libos's executor, at most 120 s.
fn run<F>(f: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    libos::time::set_clock(&HostClock);
    libos::task::block_on(async move {
        libos::time::timeout(Duration::from_secs(120), f).await.expect("test did not finish within 120 s")
    })
}

fn enlightenments() -> Enlightenments {
    let leaves = Host::cpuid();
    let cpu = RecordedCpuid { leaves: &leaves };
    let d = detect(&cpu);
    let f = d.find(HypervisorKind::HyperV).expect("the host model presents \"Microsoft Hv\"");
    Enlightenments::from_cpuid(f, &cpu).expect("TLFS leaves")
}

fn fast_config() -> bringup::Config {
    bringup::Config { late_nic_wait: Duration::from_millis(2000), ..bringup::Config::default() }
}

/// Starts a host and brings the guest up against it, the same way the bare-metal platform does.
async fn boot(cfg: HostConfig) -> (Arc<Host>, Devices, Arc<InterruptLine>) {
    let host = Host::start(cfg);
    let line = InterruptLine::new();
    host.connect_interrupt(line.clone());
    let hw = host.hw();
    let mem = host.memory();
    let en = enlightenments();
    let page = mem.alloc(1).expect("hypercall page");
    hv::enable_hypercalls(&*hw, &en, hv::guest_os_id(0, 1, 0), page.gpa()).expect("hypercall page enabled");
    let dma: Arc<dyn Dma> = mem;
    let devs = bringup::bring_up(hw, dma, &en, &line, 0x30, &fast_config()).await.expect("VMBus bring-up");
    (host, devs, line)
}

fn assert_clean(host: &Host) {
    let errors = host.errors();
    assert!(errors.is_empty(), "the host saw protocol violations: {errors:?}");
    let ev = host.events();
    assert!(!ev.iter().any(|e| e.contains("ERROR")), "host events with errors: {ev:#?}");
}

#[test]
fn bring_up_with_every_vmbus_version() {
    for v in version::ALL {
        let (host, devs) = run(async move {
            let (host, devs, _line) = boot(HostConfig { vmbus_version: v, ..HostConfig::default() }).await;
            (host, devs)
        });
        assert_eq!(devs.bus.version(), v, "negotiated {}", version::display(v));
        assert_eq!(host.vmbus_version(), Some(v));
        let expect_conn = if v >= version::WIN10_V5 { hyperv_peer::HOST_MSG_CONN_ID } else { 1 };
        assert_eq!(devs.bus.message_connection_id().0, expect_conn);
        assert_eq!(devs.nics.len(), 1, "the late NIC offer was waited for (version {})", version::display(v));
        assert_eq!(devs.disks.len(), 1);
        assert_eq!(devs.ics.len(), 4);
        let ev = host.events();
        // Exact-match negotiation: every newer version was refused first, or (for hosts before 5.0) never reached
        // the host because connection 4 does not exist there.
        let refused = ev.iter().filter(|e| e.contains("-> refused") && e.starts_with("initiate contact")).count();
        let invalid_conn = ev.iter().filter(|e| e.contains("invalid connection 4")).count();
        let newer = version::ALL.iter().filter(|&&x| x > v).count();
        assert_eq!(refused + invalid_conn, newer, "{ev:#?}");
        let all = ev.iter().position(|e| e == "all offers delivered").expect("AllOffersDelivered");
        let nic = ev.iter().position(|e| e.starts_with("offer 14")).expect("NIC offer");
        assert!(nic > all, "the host offers the NIC late");
        assert_clean(&host);
        host.stop();
    }
}

#[test]
fn bring_up_with_every_nvsp_version() {
    for v in nvsp::version::ALL {
        for send_buffer in [true, false] {
            let cfg =
                HostConfig { nvsp_version: v, send_buffer, disk: None, offer_ics: false, ..HostConfig::default() };
            let (host, mut devs) = run(async move {
                let (host, devs, _line) = boot(cfg).await;
                (host, devs)
            });
            let nic = devs.nics.pop().expect("netvsc came up");
            assert_eq!(nic.nvsp_version(), v);
            assert_eq!(nic.info().mac, [0x00, 0x15, 0x5d, 0x12, 0x34, 0x56], "MAC from OID_802_3_PERMANENT_ADDRESS");
            assert!(nic.link_up());
            assert_eq!(nic.info().offloads.tx_checksum, v >= nvsp::version::V5, "offload only where offered");
            assert_eq!(nic.buffer_gpadls().1.is_some(), send_buffer);
            let ev = host.events();
            let cfg_at = ev.iter().position(|e| e.starts_with("netvsp: NDIS config"));
            let recv_at = ev.iter().position(|e| e.starts_with("netvsp: receive buffer")).expect("receive buffer");
            match cfg_at {
                Some(c) => {
                    assert!(v >= nvsp::version::V2, "NDIS config only from NVSP 3.2");
                    assert!(c < recv_at, "NDIS config before the receive buffer");
                }
                None => assert_eq!(v, nvsp::version::V1),
            }
            assert!(ev.iter().any(|e| e.contains("RNDIS set 0x1010e -> 0x0")), "packet filter set: {ev:#?}");
            if !send_buffer {
                assert!(
                    ev.iter().any(|e| e.starts_with("gpadl teardown")),
                    "the refused send buffer's GPADL is torn down"
                );
            }
            assert_clean(&host);
            host.stop();
        }
    }
}

/// The guest's network stack on netvsc at 10.0.0.2 and a host-side stack on the wire at 10.0.0.1.
async fn networks(host: &Host, nic: platform_hyperv::netvsc::Netvsc) -> (Arc<Stack>, Arc<Stack>) {
    let ip = |a: u8| {
        IpSetup::Static(StaticIpv4 { address: Ipv4Addr::new(10, 0, 0, a), prefix_len: 24, gateway: None, dns: None })
    };
    let guest = Stack::new(Box::new(nic), ip(2), NetConfig::default()).expect("guest stack");
    let hnic = host.wire.host_nic([0x02, 0, 0, 0, 0, 1]);
    let hstack = Stack::new(Box::new(hnic), ip(1), NetConfig::default()).expect("host stack");
    libos::task::spawn(guest.clone().run());
    libos::task::spawn(hstack.clone().run());
    (guest, hstack)
}

/// Serves HTTP on `listener` with the connection driver and demo routes httpd runs (the accept loop is the
/// test's own: httpd's also ends on a host shutdown request, which another test makes).
async fn serve(listener: TcpListener) {
    let settings: &'static Settings = Box::leak(Box::new(Settings::new("hello over VMBus")));
    let context = || Context { platform: "hyperv", uptime_ms: 0, connections: 1, memory: Default::default() };
    let handler: &'static Demo<NotFound> =
        Box::leak(Box::new(Demo::new(settings.message.clone(), NotFound).with_context(context)));
    loop {
        let Ok((stream, _)) = listener.accept().await else { return };
        libos::task::spawn(zirvium_http::serve_connection(stream, settings, handler));
    }
}

async fn get(stack: &Arc<Stack>, path: &str) -> Vec<u8> {
    let s = TcpStream::connect_on(stack, (Ipv4Addr::new(10, 0, 0, 2), 80)).await.expect("connect to the guest");
    let req = format!("GET {path} HTTP/1.1\r\nHost: guest\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("send request");
    let mut out = Vec::new();
    let mut buf = vec![0u8; 8192];
    loop {
        match s.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => panic!("read response: {e}"),
        }
    }
    out
}

fn http_round_trip(cfg: HostConfig) {
    run(async move {
        let (host, mut devs, _line) = boot(cfg).await;
        let nic = devs.nics.pop().expect("netvsc");
        let (guest, hstack) = networks(&host, nic).await;
        let listener = TcpListener::bind_on(&guest, 80).expect("listen on 80");
        libos::task::spawn(serve(listener));
        let r = get(&hstack, "/health").await;
        let text = String::from_utf8_lossy(&r);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("\"platform\":\"hyperv\""), "{text}");
        // Many full-size frames in both directions (ACKs back): exercises the rings, sections and completions.
        let r = get(&hstack, "/bytes/200000").await;
        let head_end = r.windows(4).position(|w| w == b"\r\n\r\n").expect("head") + 4;
        let body = &r[head_end..];
        assert_eq!(body.len(), 200_000);
        assert!(body.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8), "body pattern intact");
        let (to_host, to_guest) = host.wire.counts();
        assert!(to_host > 100 && to_guest > 10, "frames moved: {to_host} / {to_guest}");
        assert_clean(&host);
        host.stop();
    });
}

#[test]
fn http_request_served_through_netvsc() {
    http_round_trip(HostConfig::default());
}

#[test]
fn http_without_send_buffer_or_offload() {
    // NVSP 4: no checksum offload (software checksums), frames GPA-direct.
    http_round_trip(HostConfig { nvsp_version: nvsp::version::V4, send_buffer: false, ..HostConfig::default() });
}

#[test]
fn disk_read_write_flush_with_every_storage_protocol() {
    for proto in vstor::version::ALL {
        run(async move {
            let cfg =
                HostConfig { storvsp_version: proto, offer_nic: false, offer_ics: false, ..HostConfig::default() };
            let (host, mut devs, _line) = boot(cfg).await;
            let disk = devs.disks.pop().expect("storvsc");
            assert_eq!(disk.protocol(), proto);
            let info = disk.info().clone();
            assert_eq!((info.sector_size, info.capacity), (512, 8192), "READ CAPACITY(16)");
            assert_eq!(host.disk.lock().unwrap().unit_attentions, 1, "the first UNIT ATTENTION was retried");
            // 300 sectors: more than one 128 KiB transfer.
            let data: Vec<u8> = (0..300 * 512).map(|i| (i * 7 % 256) as u8).collect();
            disk.write(100, &data).await.expect("write");
            let mut back = vec![0u8; data.len()];
            disk.read(100, &mut back).await.expect("read");
            assert_eq!(back, data);
            assert_eq!(
                &host.disk.lock().unwrap().data[100 * 512..400 * 512],
                &data[..],
                "bytes reached the host's disk"
            );
            assert!(host.disk.lock().unwrap().unflushed_writes >= 2);
            disk.flush().await.expect("flush");
            assert_eq!(host.disk.lock().unwrap().flushes, 1);
            assert_eq!(host.disk.lock().unwrap().unflushed_writes, 0);
            // Several requests in flight at once.
            let d1 = disk.clone();
            let d2 = disk.clone();
            let a = libos::task::spawn(async move {
                let mut b = vec![0u8; 4096];
                d1.read(0, &mut b).await.map(|_| b)
            });
            let b = libos::task::spawn(async move {
                let mut b = vec![0u8; 4096];
                d2.read(100, &mut b).await.map(|_| b)
            });
            assert_eq!(a.await.expect("read 0"), vec![0u8; 4096]);
            assert_eq!(b.await.expect("read 100"), data[..4096].to_vec());
            let e = disk.read(8190, &mut vec![0u8; 2048]).await.unwrap_err();
            assert!(matches!(e, BlockError::OutOfRange { .. }), "{e}");
            assert_clean(&host);
            host.stop();
        });
    }
}

fn context(stack: Option<Arc<Stack>>) -> ic::Context {
    ic::Context {
        app_name: "httpd".into(),
        os_version: "0.1.0".into(),
        ip: Arc::new(move || {
            let c = stack.as_ref()?.ipv4_config()?;
            Some(ic::IpReport {
                address: c.address.to_string(),
                netmask: "255.255.255.0".into(),
                gateway: String::new(),
                dns: String::new(),
                dhcp: false,
            })
        }),
        on_shutdown: Arc::new(|r| {
            if r == ic::ShutdownRequest::Poweroff {
                libos::shutdown::request(libos::shutdown::ShutdownKind::Poweroff)
            }
        }),
        reference_time: None,
        on_time: Arc::new(|_, _| {}),
    }
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if f() {
            return;
        }
        libos::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn shutdown_ic_ends_the_app_gracefully() {
    run(async move {
        let (host, devs, _line) = boot(HostConfig { offer_nic: false, disk: None, ..HostConfig::default() }).await;
        bringup::spawn_services(&devs.bus, devs.ics, &context(None));
        // The "app": runs until the host asks it to stop, then returns.
        let app = libos::task::spawn(async {
            let k = libos::shutdown::requested().await;
            format!("app stopped after {k:?}")
        });
        let h = host.clone();
        until("version negotiation", move || h.ics.lock().unwrap().negotiated.len() == 4).await;
        assert!(libos::shutdown::pending().is_none());
        host.request_shutdown(0);
        assert_eq!(app.await, "app stopped after Poweroff");
        let h = host.clone();
        until("the shutdown response", move || h.ics.lock().unwrap().shutdown_status.is_some()).await;
        assert_eq!(host.ics.lock().unwrap().shutdown_status, Some(ic::HV_S_OK));
        let st = host.ics.lock().unwrap();
        assert_eq!(st.negotiated.get("shutdown"), Some(&(3 << 16, 3 << 16 | 2)));
        assert_eq!(st.negotiated.get("heartbeat"), Some(&(3 << 16, 3 << 16)));
        assert_eq!(st.negotiated.get("timesync"), Some(&(3 << 16, 4 << 16)));
        assert!(st.heartbeats > 0, "heartbeats answered");
        assert!(st.errors.is_empty(), "{:?}", st.errors);
        drop(st);
        assert_clean(&host);
        host.stop();
    });
}

#[test]
fn kvp_reports_the_ip_address_and_app_name() {
    run(async move {
        let (host, mut devs, _line) = boot(HostConfig { disk: None, ..HostConfig::default() }).await;
        let nic = devs.nics.pop().expect("netvsc");
        let (guest, _hstack) = networks(&host, nic).await;
        bringup::spawn_services(&devs.bus, devs.ics, &context(Some(guest)));
        let h = host.clone();
        until("the first KVP enumeration", move || h.ics.lock().unwrap().kvp_rounds >= 1).await;
        host.refresh_kvp();
        let h = host.clone();
        until("the KVP IP address", move || {
            let st = h.ics.lock().unwrap();
            st.kvp.get("NetworkAddressIPv4").map(String::as_str) == Some("10.0.0.2") && st.ip_info.is_some()
        })
        .await;
        let st = host.ics.lock().unwrap();
        assert_eq!(st.kvp.get("FullyQualifiedDomainName").map(String::as_str), Some("httpd"));
        assert_eq!(st.kvp.get("OSName").map(String::as_str), Some("Zirvium (httpd)"));
        assert_eq!(st.kvp.get("ProcessorArchitecture").map(String::as_str), Some("x86_64"));
        assert_eq!(st.kvp.len(), 10, "the whole auto pool: {:?}", st.kvp);
        assert_eq!(st.ip_info.as_deref(), Some("10.0.0.2"), "GET_IP_INFO");
        assert_eq!(st.negotiated.get("kvp"), Some(&(3 << 16, 4 << 16)));
        assert!(st.time_samples >= 1);
        assert!(st.errors.is_empty(), "{:?}", st.errors);
        drop(st);
        assert_clean(&host);
        host.stop();
    });
}

#[test]
fn a_rescinded_disk_fails_cleanly_and_is_released() {
    run(async move {
        let (host, mut devs, _line) =
            boot(HostConfig { offer_nic: false, offer_ics: false, ..HostConfig::default() }).await;
        libos::task::spawn(devs.bus.clone().run());
        let disk = devs.disks.pop().expect("storvsc");
        let mut b = vec![0u8; 512];
        disk.read(0, &mut b).await.expect("read before the rescind");
        host.rescind(relid::SCSI);
        let h = host.clone();
        until("the relid release", move || h.relid_released(relid::SCSI)).await;
        let e = disk.read(0, &mut b).await.unwrap_err();
        match &e {
            BlockError::Protocol { detail, .. } => assert!(detail.contains("rescinded"), "{e}"),
            other => panic!("expected a protocol error, got {other}"),
        }
        assert!(devs.bus.offers().iter().all(|o| o.child_relid.0 != relid::SCSI), "the offer is gone");
        assert_clean(&host);
        host.stop();
    });
}

#[test]
fn hostile_ring_indices_and_lengths_are_rejected() {
    run(async move {
        let (host, mut devs, _line) = boot(HostConfig { offer_ics: false, ..HostConfig::default() }).await;
        // A write index far outside the disk's inbound ring.
        let disk = devs.disks.pop().expect("storvsc");
        host.corrupt_inbound_ring(relid::SCSI, ring::WRITE_INDEX, 0xdead_0000);
        let mut b = vec![0u8; 512];
        let e = disk.read(0, &mut b).await.unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, BlockError::Protocol { .. }), "{text}");
        assert!(text.contains("write_index = 0xdead0000"), "{text}");
        // The disk stays failed; no further access happens.
        assert!(disk.read(0, &mut b).await.is_err());
        // A packet whose length runs past the data the host published, on the NIC.
        let mut nic = devs.nics.pop().expect("netvsc");
        host.send_hostile_packet(relid::NIC, 4000);
        let mut err = None;
        for _ in 0..200 {
            match nic.receive() {
                Err(e) => {
                    err = Some(e);
                    break;
                }
                Ok(_) => libos::time::sleep(Duration::from_millis(5)).await,
            }
        }
        let e = err.expect("the NIC reports the hostile packet");
        assert!(matches!(e, DeviceError::Protocol { .. }), "{e}");
        assert!(e.to_string().contains("packet len8*8 = 0x7d00"), "{e}");
        assert!(!nic.can_transmit(), "a broken NIC takes no frames");
        host.stop();
    });
}

#[test]
fn closing_a_channel_tears_down_its_ring_gpadl() {
    run(async move {
        let (host, mut devs, _line) = boot(HostConfig { offer_nic: false, disk: None, ..HostConfig::default() }).await;
        let (service, ch) = devs.ics.pop().expect("an IC channel");
        let relid = ch.relid();
        let gpadl = ch.gpadl();
        devs.bus.close_channel(&ch).await.expect("close");
        let ev = host.events();
        let close = ev.iter().position(|e| *e == format!("close {relid}")).expect("CloseChannel reached the host");
        let torn = ev.iter().position(|e| *e == format!("gpadl teardown {gpadl:#x}")).expect("GpadlTeardown");
        assert!(close < torn, "{} channel: close, then the ring GPADL teardown", service.name());
        assert_clean(&host);
        host.stop();
    });
}
