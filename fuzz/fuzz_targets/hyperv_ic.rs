//! Integration-service messages (`platform_hyperv::ic`: `icmsg_hdr`, `icmsg_negotiate`, heartbeat, shutdown,
//! time sync, KVP; Linux `drivers/hv/hv_util.c`, `hv_kvp.c`) handled in place the way `ic::run` handles them:
//! a sequence of messages, each for a service the fuzzer picks, through one KVP store. Invariants: no panic;
//! answers are written in place (length unchanged); a negotiated version is one the service offers; an
//! answered message carries the response flags; the KVP store stays consistent across messages.
#![no_main]

use libfuzzer_sys::fuzz_target;
use platform_hyperv::ic::{
    self, header, heartbeat, kvp, make_response, msgtype, negotiate, shutdown_request, time_sample, Context, IcVersion,
    KvpStore, Service, FLAG_RESPONSE, FLAG_TRANSACTION, FW_VERSIONS, HV_E_FAIL, HV_S_OK,
};
use std::sync::Arc;
use zirvium_fuzz::Input;

const SERVICES: [Service; 4] = [Service::Heartbeat, Service::Shutdown, Service::Timesync, Service::Kvp];

fn context() -> Context {
    Context {
        app_name: String::from("fuzz"),
        os_version: String::from("0.1.0"),
        ip: Arc::new(|| {
            Some(ic::IpReport {
                address: String::from("10.0.0.2"),
                netmask: String::from("255.255.255.0"),
                gateway: String::new(),
                dns: String::new(),
                dhcp: false,
            })
        }),
        on_shutdown: Arc::new(|_| {}),
        reference_time: Some(Arc::new(|| 1_000_000)),
        on_time: Arc::new(|_, _| {}),
    }
}

fuzz_target!(|data: &[u8]| {
    let ctx = context();
    let mut store = KvpStore::default();
    let mut versions: [IcVersion; 4] = [0; 4];
    let mut input = Input::new(data);
    while !input.is_empty() {
        let which = usize::from(input.u8()) % SERVICES.len();
        let service = SERVICES[which];
        let len = usize::from(input.u16()) % 4096;
        let mut b = input.bytes(len).to_vec();
        let before = b.len();
        let Ok(hdr) = header(&b) else { continue };
        let status = match hdr.msgtype {
            msgtype::NEGOTIATE => match negotiate(&mut b, service.versions()) {
                Ok(Some((fw, v))) => {
                    assert!(FW_VERSIONS.contains(&fw) && service.versions().contains(&v), "negotiated {fw:#x} {v:#x}");
                    versions[which] = v;
                    HV_S_OK
                }
                Ok(None) => HV_S_OK,
                Err(e) => {
                    let _ = e.to_string();
                    HV_E_FAIL
                }
            },
            msgtype::HEARTBEAT if service == Service::Heartbeat => match heartbeat(&mut b) {
                Ok(_) => HV_S_OK,
                Err(_) => continue,
            },
            msgtype::SHUTDOWN if service == Service::Shutdown => match shutdown_request(&b) {
                Ok(_) => HV_S_OK,
                Err(_) => continue,
            },
            msgtype::TIMESYNC if service == Service::Timesync => match time_sample(&b, versions[which]) {
                Ok(s) => {
                    let _ = s.unix_ns();
                    HV_S_OK
                }
                Err(_) => continue,
            },
            msgtype::KVPEXCHANGE if service == Service::Kvp => kvp(&mut b, &ctx, &mut store).unwrap_or(HV_E_FAIL),
            _ => HV_E_FAIL,
        };
        assert_eq!(b.len(), before, "answers are written in place");
        if make_response(&mut b, status).is_ok() {
            let h = header(&b).expect("still a message");
            assert_eq!((h.status, h.flags), (status, FLAG_TRANSACTION | FLAG_RESPONSE));
        }
    }
});
