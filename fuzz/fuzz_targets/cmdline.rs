//! The kernel command line (`libos::cmdline::Cmdline::parse`): `key=value` kernel options, `--`, the app's
//! arguments, double quotes, `virtio_mmio.device=` tokens. Invariants: no panic; every option is a known one
//! with a value, every token is a slice of the input without spaces outside quotes; the log level is defined;
//! the error's message renders; and the parse is stable (the options and arguments joined again parse to the
//! same result).
#![no_main]

use libfuzzer_sys::fuzz_target;
use libos::cmdline::{Cmdline, KNOWN_OPTIONS};
use zirvium_fuzz::with_static;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // SAFETY: every value built from the 'static copy is dropped inside the closure.
    unsafe {
        with_static(text.as_bytes(), |bytes| {
            // The copy is the same UTF-8 text.
            let Ok(s) = std::str::from_utf8(bytes) else { return };
            match Cmdline::parse(s) {
                Ok(c) => {
                    for (k, _) in &c.options {
                        assert!(KNOWN_OPTIONS.iter().any(|(name, _)| name == k), "unknown option {k} accepted");
                    }
                    let _ = c.log_level();
                    for (k, _) in &c.options {
                        assert!(c.option(k).is_some());
                    }
                    // Stable: the accepted pieces, joined again, parse to the same thing.
                    let mut again = String::new();
                    for (k, v) in &c.options {
                        again.push_str(&format!("{k}={v} "));
                    }
                    for m in &c.virtio_mmio {
                        again.push_str(&format!("virtio_mmio.device={m} "));
                    }
                    if !c.app_args.is_empty() {
                        again.push_str("--");
                        for a in &c.app_args {
                            again.push(' ');
                            again.push_str(a);
                        }
                    }
                    let pieces = c.options.iter().map(|(_, v)| v).chain(&c.virtio_mmio).chain(&c.app_args);
                    // Quotes protect spaces and a `virtio_mmio.device=` prefix; re-quoting is not what this checks.
                    if pieces.clone().any(|p| p.contains([' ', '"']) || p.starts_with("virtio_mmio.device=")) {
                        return;
                    }
                    with_static(again.as_bytes(), |b2| {
                        let s2 = std::str::from_utf8(b2).expect("built from str");
                        let c2 = Cmdline::parse(s2).expect("the accepted pieces parse again");
                        assert_eq!(c2.options, c.options);
                        assert_eq!(c2.virtio_mmio, c.virtio_mmio);
                        let args: Vec<&str> = c.app_args.iter().copied().filter(|a| !a.is_empty()).collect();
                        assert_eq!(c2.app_args, args);
                    });
                }
                Err(e) => {
                    let _ = e.to_string();
                }
            }
        })
    }
});
