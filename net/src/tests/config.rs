//! Configuration parsing and validation; the global entry points before `start`.

use crate::{Config, Error, IpSetup, Ipv4Config, StaticIpv4};
use libos::cmdline::Cmdline;
use std::net::Ipv4Addr;

fn key_of(r: crate::Result<IpSetup>) -> &'static str {
    match r {
        Err(Error::InvalidConfig { key, .. }) => key,
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
}

#[test]
fn static_config_parses() {
    let c = Cmdline::parse("ip=10.0.2.15/24 gw=10.0.2.2 dns=10.0.2.3").unwrap();
    assert_eq!(
        IpSetup::from_cmdline(&c).unwrap(),
        IpSetup::Static(StaticIpv4 {
            address: Ipv4Addr::new(10, 0, 2, 15),
            prefix_len: 24,
            gateway: Some(Ipv4Addr::new(10, 0, 2, 2)),
            dns: Some(Ipv4Addr::new(10, 0, 2, 3)),
        })
    );
    assert_eq!(IpSetup::from_cmdline(&Cmdline::default()).unwrap(), IpSetup::Dhcp);
    assert!(matches!(IpSetup::parse(Some("192.168.1.7/32"), None, None), Ok(IpSetup::Static(_))));
    assert!(matches!(IpSetup::parse(Some("10.1.2.3/8"), Some("10.200.0.1"), None), Ok(IpSetup::Static(_))));
}

#[test]
fn malformed_static_config_is_a_clear_error() {
    assert_eq!(key_of(IpSetup::parse(Some("10.0.2.15"), None, None)), "ip");
    assert_eq!(key_of(IpSetup::parse(Some("10.0.2/24"), None, None)), "ip");
    assert_eq!(key_of(IpSetup::parse(Some("10.0.2.256/24"), None, None)), "ip");
    assert_eq!(key_of(IpSetup::parse(Some("10.0.2.15/33"), None, None)), "ip");
    assert_eq!(key_of(IpSetup::parse(Some("10.0.2.15/x"), None, None)), "ip");
    assert_eq!(key_of(IpSetup::parse(Some("0.0.0.0/24"), None, None)), "ip");
    assert_eq!(key_of(IpSetup::parse(Some("224.0.0.1/24"), None, None)), "ip");
    assert_eq!(key_of(IpSetup::parse(Some("10.0.2.0/24"), None, None)), "ip");
    assert_eq!(key_of(IpSetup::parse(Some("10.0.2.255/24"), None, None)), "ip");
    assert_eq!(key_of(IpSetup::parse(Some("10.0.2.15/24"), Some("10.0.3.1"), None)), "gw");
    assert_eq!(key_of(IpSetup::parse(Some("10.0.2.15/24"), Some("10.0.2.15"), None)), "gw");
    assert_eq!(key_of(IpSetup::parse(Some("10.0.2.15/24"), Some("gateway"), None)), "gw");
    assert_eq!(key_of(IpSetup::parse(Some("10.0.2.15/24"), None, Some("10.0.2"))), "dns");
    assert_eq!(key_of(IpSetup::parse(None, Some("10.0.2.2"), None)), "gw");
    assert_eq!(key_of(IpSetup::parse(None, None, Some("10.0.2.3"))), "dns");
    let e = IpSetup::parse(Some("10.0.2.15"), None, None).unwrap_err().to_string();
    assert!(e.contains("ip=10.0.2.15") && e.contains("10.0.2.15/24"), "{e}");
}

#[test]
fn config_validation_names_the_field() {
    assert_eq!(Config::default().validate(), Ok(()));
    let bad = |c: Config| match c.validate() {
        Err(Error::InvalidConfig { key, .. }) => key,
        other => panic!("{other:?}"),
    };
    assert_eq!(bad(Config { tcp_rx_buffer: 10, ..Config::default() }), "tcp_rx_buffer");
    assert_eq!(bad(Config { max_sockets: 0, ..Config::default() }), "max_sockets");
    assert_eq!(bad(Config { backlog: 0, ..Config::default() }), "backlog");
    assert_eq!(bad(Config { max_sockets: 4, backlog: 5, ..Config::default() }), "backlog");
    assert_eq!(bad(Config { close_timeout: std::time::Duration::ZERO, ..Config::default() }), "close_timeout");
}

#[test]
fn ipv4_config_displays_like_the_boot_log() {
    let c = Ipv4Config {
        address: Ipv4Addr::new(10, 0, 2, 15),
        prefix_len: 24,
        gateway: Some(Ipv4Addr::new(10, 0, 2, 2)),
        dns_servers: vec![Ipv4Addr::new(10, 0, 2, 3)],
    };
    assert_eq!(c.to_string(), "10.0.2.15/24 gw 10.0.2.2 dns 10.0.2.3");
    let c = Ipv4Config { gateway: None, dns_servers: vec![], ..c };
    assert_eq!(c.to_string(), "10.0.2.15/24 gw none dns none");
}

#[test]
fn global_entry_points_before_start() {
    // No test starts the global stack, so these see it unstarted.
    assert_eq!(crate::stats(), crate::NetStats::default());
    assert_eq!(crate::TcpListener::bind(80).map(|_| ()), Err(Error::NotStarted));
    assert_eq!(crate::UdpSocket::bind(53).map(|_| ()), Err(Error::NotStarted));
    let bad = Cmdline::parse("ip=10.0.2.15").unwrap();
    assert!(matches!(crate::start(Vec::new(), &bad), Err(Error::InvalidConfig { key: "ip", .. })));
    assert_eq!(crate::start(Vec::new(), &Cmdline::default()), Err(Error::NoNic));
    assert!(matches!(
        crate::configure(Config { backlog: 0, ..Config::default() }),
        Err(Error::InvalidConfig { key: "backlog", .. })
    ));
}
