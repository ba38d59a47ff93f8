//! What the lines of L0's serial console (L1's console) mean: L2's serial console (`L2| `), L2 QEMU's stderr
//! (`L2! `), events of L1's init (`images-hyperv: `, `images/hyperv/l1-init`), and anything else (L1's kernel).

/// Prefix of a line of L2's serial console, i.e. the guest's output.
pub const GUEST_PREFIX: &str = "L2| ";

/// Prefix of a line L2's QEMU wrote to its stderr.
pub const L2_QEMU_PREFIX: &str = "L2! ";

/// Prefix of an event line of L1's init.
pub const EVENT_PREFIX: &str = "images-hyperv: ";

/// Exit status `timeout -s KILL` leaves when it killed L2 (128 + SIGKILL).
pub const L2_KILLED: i32 = 137;

/// One console line, classified.
#[derive(Clone, Debug, PartialEq)]
pub enum Line<'a> {
    /// A line of the guest's serial console.
    Guest(&'a str),
    /// A line of L2 QEMU's stderr.
    L2Qemu(&'a str),
    /// An event of L1's init.
    Event(Event),
    /// Anything else: L1's kernel log.
    Other(&'a str),
}

/// What L1's init reports.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// `L1 init at T s`: L1's kernel handed over to init (T: L1 uptime).
    L1Init {
        /// L1's uptime in seconds.
        at: f64,
    },
    /// `L1 ready at T s: clocksource C, nic N`: KVM and the NIC are set up.
    L1Ready {
        /// L1's uptime in seconds.
        at: f64,
        /// L1's clocksource (`tsc` means a valid reference TSC page for the guest).
        clocksource: String,
    },
    /// `L2 starting at T s`.
    L2Starting {
        /// L1's uptime in seconds.
        at: f64,
    },
    /// `L2 exited rc=R at T s`: L2's QEMU exit status (`(v << 1) | 1` for guest status v; [`L2_KILLED`] when L1's
    /// bound ran out).
    L2Exited {
        /// The exit status.
        rc: i32,
        /// L1's uptime in seconds.
        at: f64,
    },
    /// `error: ...` or `warning: ...`.
    Problem(String),
    /// Any other event line.
    Note(String),
}

/// Classifies one line (without its line end; a trailing `\r` is removed).
pub fn classify(line: &str) -> Line<'_> {
    let line = line.trim_end_matches('\r');
    if let Some(text) = line.strip_prefix(GUEST_PREFIX) {
        return Line::Guest(text.trim_end_matches('\r'));
    }
    if let Some(text) = line.strip_prefix(L2_QEMU_PREFIX) {
        return Line::L2Qemu(text);
    }
    match line.strip_prefix(EVENT_PREFIX) {
        Some(text) => Line::Event(event(text)),
        None => Line::Other(line),
    }
}

/// The seconds of `at T s` in `text`.
fn at_secs(text: &str) -> Option<f64> {
    let (_, rest) = text.split_once(" at ")?;
    rest.split_whitespace().next()?.parse().ok()
}

fn event(text: &str) -> Event {
    let note = || Event::Note(text.to_owned());
    if text.starts_with("L1 init at ") {
        at_secs(text).map_or_else(note, |at| Event::L1Init { at })
    } else if let Some(rest) = text.strip_prefix("L1 ready at ") {
        let clocksource = rest.split_once("clocksource ").and_then(|(_, c)| c.split([',', ' ']).next());
        match (at_secs(text), clocksource) {
            (Some(at), Some(c)) => Event::L1Ready { at, clocksource: c.to_owned() },
            _ => note(),
        }
    } else if text.starts_with("L2 starting at ") {
        at_secs(text).map_or_else(note, |at| Event::L2Starting { at })
    } else if let Some(rest) = text.strip_prefix("L2 exited rc=") {
        let rc = rest.split_whitespace().next().and_then(|r| r.parse().ok());
        match (rc, at_secs(text)) {
            (Some(rc), Some(at)) => Event::L2Exited { rc, at },
            _ => note(),
        }
    } else if text.starts_with("error: ") || text.starts_with("warning: ") {
        Event::Problem(text.to_owned())
    } else {
        note()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_guest_qemu_events_and_kernel_lines() {
        assert_eq!(classify("L2| hello from Zirvium on hyperv\r"), Line::Guest("hello from Zirvium on hyperv"));
        assert_eq!(classify("L2! qemu-system-x86_64: warning: x"), Line::L2Qemu("qemu-system-x86_64: warning: x"));
        assert_eq!(
            classify("[    2.99] kvm: Nested Virtualization enabled"),
            Line::Other("[    2.99] kvm: Nested Virtualization enabled")
        );
        let ev = |s: &str| match classify(s) {
            Line::Event(e) => e,
            other => panic!("{s}: {other:?}"),
        };
        assert_eq!(ev("images-hyperv: L1 init at 2.43 s"), Event::L1Init { at: 2.43 });
        assert_eq!(
            ev("images-hyperv: L1 ready at 3.25 s: clocksource tsc, nic eth0"),
            Event::L1Ready { at: 3.25, clocksource: "tsc".into() }
        );
        assert_eq!(ev("images-hyperv: L2 starting at 3.3 s"), Event::L2Starting { at: 3.3 });
        assert_eq!(ev("images-hyperv: L2 exited rc=1 at 5.9 s"), Event::L2Exited { rc: 1, at: 5.9 });
        assert_eq!(ev("images-hyperv: L2 exited rc=x at 5.9 s"), Event::Note("L2 exited rc=x at 5.9 s".into()));
        assert_eq!(
            ev("images-hyperv: warning: insmod ccp failed"),
            Event::Problem("warning: insmod ccp failed".into())
        );
        assert_eq!(ev("images-hyperv: kvm ready at 3.1 s"), Event::Note("kvm ready at 3.1 s".into()));
    }
}
