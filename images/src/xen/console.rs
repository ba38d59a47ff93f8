//! Lines of the nested harness's serial console (Xen's COM1): Xen's log, dom0's console, a domU's port 0xe9
//! output as Xen prints it with `guest_loglvl=all` (`(dN) text`, Xen `xen/arch/x86/hvm/hvm.c` `hvm_print_line`),
//! and the lines of the dom0 scripts `images/xen/dom0-init` and `images/xen/run-domu` (`domU| `, `xl| `,
//! `images-xen: `), whose wording the parsers here follow.

use super::status::ShutdownReason;

/// Prefix of the dom0 scripts' own lines.
pub const EVENT_PREFIX: &str = "images-xen: ";

/// Prefix of a domU PV console line forwarded by `run-domu`.
pub const CONSOLE_PREFIX: &str = "domU| ";

/// Prefix of an `xl create -F` line forwarded by `run-domu`.
pub const XL_PREFIX: &str = "xl| ";

/// One console line, classified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// Port 0xe9 output of domain `domid` (never 0: dom0 writes to its console directly).
    GuestDebug {
        /// The writing domain.
        domid: u32,
        /// The text after `(dN) `.
        text: &'a str,
    },
    /// A line of the domU's PV console.
    GuestConsole(&'a str),
    /// An event of the dom0 scripts or of `xl create -F`.
    Event(Event),
    /// An `xl create -F` line that is not an event (config parsing, libxl errors).
    Xl(&'a str),
    /// Anything else: Xen's `(XEN)` log, dom0's kernel and init.
    Other(&'a str),
}

/// What the dom0 scripts and `xl create -F` report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// `images-xen: dom0 ready at T s`: daemons and bridge are up.
    Dom0Ready,
    /// `xl| Waiting for domain NAME (domid N) to die`: Xen accepted the domain and it runs.
    Created {
        /// Its domain ID.
        domid: u32,
    },
    /// `xl| Domain N has shut down, reason code R 0xR`: the domain called `SCHEDOP_shutdown` (or Xen shut it
    /// down, e.g. after a triple fault: reason crash).
    Shutdown {
        /// The domain ID.
        domid: u32,
        /// The reason code.
        reason: ShutdownReason,
    },
    /// `images-xen: xl create exited rc=R`.
    XlExited {
        /// xl's exit code (non-zero when the domain could not be created).
        rc: i32,
    },
    /// `images-xen: domain NAME ended`: xl is gone and the console is drained.
    Ended,
    /// `images-xen: command N rc=R`: a control command finished.
    Command {
        /// Its number, from 1.
        seq: u32,
        /// Its exit code.
        rc: i32,
    },
    /// `images-xen: dom0 powering off ...`.
    PoweringOff,
    /// `images-xen: error: ...` or `images-xen: warning: ...`.
    Problem(String),
    /// Any other `images-xen: ` line (progress notes).
    Note(String),
}

/// Classifies one line (without its line end; a trailing `\r` is removed).
pub fn classify(line: &str) -> Line<'_> {
    let line = line.trim_end_matches('\r');
    if let Some(text) = line.strip_prefix(CONSOLE_PREFIX) {
        return Line::GuestConsole(text.trim_end_matches('\r'));
    }
    if let Some(text) = line.strip_prefix(XL_PREFIX) {
        return match xl_event(text) {
            Some(e) => Line::Event(e),
            None => Line::Xl(text),
        };
    }
    if let Some(text) = line.strip_prefix(EVENT_PREFIX) {
        return Line::Event(script_event(text));
    }
    if let Some((domid, text)) = guest_debug(line) {
        return Line::GuestDebug { domid, text };
    }
    Line::Other(line)
}

/// `(dN) text` with N ≥ 1.
fn guest_debug(line: &str) -> Option<(u32, &str)> {
    let rest = line.strip_prefix("(d")?;
    let (n, text) = rest.split_once(") ")?;
    let domid = parse_u32(n)?;
    (domid != 0).then_some((domid, text))
}

/// Decimal digits only (no sign, no spaces).
fn parse_u32(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn parse_i32(s: &str) -> Option<i32> {
    match s.strip_prefix('-') {
        Some(digits) => parse_u32(digits).and_then(|n| i32::try_from(n).ok()).map(|n| -n),
        None => parse_u32(s).and_then(|n| i32::try_from(n).ok()),
    }
}

/// The event of one `xl create -F` line without the `xl| ` prefix, if it is one (Xen 4.17 `tools/xl/xl_vmcontrol.c`).
pub fn xl_event(text: &str) -> Option<Event> {
    if let Some(rest) = text.strip_prefix("Waiting for domain ") {
        let (_, after) = rest.split_once("(domid ")?;
        let (n, _) = after.split_once(')')?;
        return Some(Event::Created { domid: parse_u32(n)? });
    }
    let rest = text.strip_prefix("Domain ")?;
    let (n, after) = rest.split_once(" has shut down, reason code ")?;
    let code = after.split_whitespace().next()?;
    let code = u8::try_from(parse_u32(code)?).ok()?;
    Some(Event::Shutdown { domid: parse_u32(n)?, reason: ShutdownReason::from_code(code) })
}

/// The events of `images-xen: ` lines.
fn script_event(text: &str) -> Event {
    let word = |prefix: &str| text.strip_prefix(prefix);
    if text.starts_with("dom0 ready") {
        Event::Dom0Ready
    } else if let Some(rc) = word("xl create exited rc=").and_then(parse_i32) {
        Event::XlExited { rc }
    } else if text.starts_with("domain ") && text.ends_with(" ended") {
        Event::Ended
    } else if let Some((seq, rc)) = word("command ").and_then(|r| r.split_once(" rc=")) {
        match (parse_u32(seq), parse_i32(rc)) {
            (Some(seq), Some(rc)) => Event::Command { seq, rc },
            _ => Event::Note(text.to_owned()),
        }
    } else if text.starts_with("dom0 powering off") {
        Event::PoweringOff
    } else if text.starts_with("error: ") || text.starts_with("warning: ") {
        Event::Problem(text.to_owned())
    } else {
        Event::Note(text.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_output() {
        assert_eq!(
            classify("(d1) hello from Zirvium on xen\r"),
            Line::GuestDebug { domid: 1, text: "hello from Zirvium on xen" }
        );
        assert_eq!(classify("(d12) "), Line::GuestDebug { domid: 12, text: "" });
        assert_eq!(classify("(d0) x"), Line::Other("(d0) x"));
        assert_eq!(classify("(dx) x"), Line::Other("(dx) x"));
        assert_eq!(
            classify("domU| [ 0.1 INFO libos] platform: xen\r"),
            Line::GuestConsole("[ 0.1 INFO libos] platform: xen")
        );
        assert_eq!(classify("(XEN) Xen version 4.17"), Line::Other("(XEN) Xen version 4.17"));
    }

    #[test]
    fn xl_events() {
        assert_eq!(
            classify("xl| Waiting for domain zirvium-httpd (domid 1) to die [pid 312]"),
            Line::Event(Event::Created { domid: 1 })
        );
        assert_eq!(
            classify("xl| Domain 3 has shut down, reason code 0 0x0"),
            Line::Event(Event::Shutdown { domid: 3, reason: ShutdownReason::Poweroff })
        );
        assert_eq!(
            classify("xl| Domain 3 has shut down, reason code 3 0x3"),
            Line::Event(Event::Shutdown { domid: 3, reason: ShutdownReason::Crash })
        );
        assert_eq!(
            classify("xl| Parsing config from /images/domu.cfg"),
            Line::Xl("Parsing config from /images/domu.cfg")
        );
        assert_eq!(
            classify("xl| Domain x has shut down, reason code 0 0x0"),
            Line::Xl("Domain x has shut down, reason code 0 0x0")
        );
        assert_eq!(
            classify("xl| Domain 1 has shut down, reason code 300 0x12c"),
            Line::Xl("Domain 1 has shut down, reason code 300 0x12c")
        );
    }

    #[test]
    fn script_events() {
        let ev = |s: &str| match classify(s) {
            Line::Event(e) => e,
            other => panic!("{s}: {other:?}"),
        };
        assert_eq!(ev("images-xen: dom0 ready at 5.12 s"), Event::Dom0Ready);
        assert_eq!(ev("images-xen: xl create exited rc=0"), Event::XlExited { rc: 0 });
        assert_eq!(ev("images-xen: xl create exited rc=-1"), Event::XlExited { rc: -1 });
        assert_eq!(ev("images-xen: domain zirvium-hello ended"), Event::Ended);
        assert_eq!(ev("images-xen: command 2 rc=1"), Event::Command { seq: 2, rc: 1 });
        assert_eq!(ev("images-xen: command x rc=1"), Event::Note("command x rc=1".into()));
        assert_eq!(ev("images-xen: dom0 powering off at 9 s"), Event::PoweringOff);
        assert_eq!(ev("images-xen: warning: insmod tun failed"), Event::Problem("warning: insmod tun failed".into()));
        assert_eq!(
            ev("images-xen: creating zirvium-hello at 5.3 s"),
            Event::Note("creating zirvium-hello at 5.3 s".into())
        );
    }
}
