//! How a Zirvium domU ended, and the exit status `images run --hypervisor xen` returns for it.
//!
//! There is no `isa-debug-exit` under Xen. The guest ends with `SCHEDOP_shutdown` (Xen `public/sched.h`):
//! reason `SHUTDOWN_poweroff` for exit status 0, `SHUTDOWN_crash` (or another reason) otherwise, and prints
//! `exit status N` on its console just before. dom0 learns only the reason (xl: "Domain N has shut down, reason
//! code R"), so the status N comes from the guest's line, and the reason decides when no such line arrived:
//! poweroff → 0, anything else → [`DOMAIN_FAILED_EXIT`].

use std::fmt;

/// Exit code when the domain ended without printing a status and not by powering off (crash, reboot, watchdog,
/// destroyed), or when Xen, dom0 or QEMU failed below it: the same code as a QEMU failure
/// ([`crate::exit::QEMU_FAILED_EXIT`]).
pub const DOMAIN_FAILED_EXIT: u8 = crate::exit::QEMU_FAILED_EXIT;

/// The line a guest prints before its shutdown: `exit status N` (anywhere in the line, e.g. after a log prefix).
pub const EXIT_STATUS_TEXT: &str = "exit status ";

/// `SCHEDOP_shutdown` reason codes (Xen `public/sched.h`, `SHUTDOWN_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ShutdownReason {
    /// 0, `SHUTDOWN_poweroff`: the guest is done.
    Poweroff,
    /// 1, `SHUTDOWN_reboot`.
    Reboot,
    /// 2, `SHUTDOWN_suspend`.
    Suspend,
    /// 3, `SHUTDOWN_crash`: the guest reported a failure, or Xen stopped it (e.g. a triple fault).
    Crash,
    /// 4, `SHUTDOWN_watchdog`.
    Watchdog,
    /// 5, `SHUTDOWN_soft_reset`.
    SoftReset,
    /// Any other code: Xen passes the guest's byte through.
    Other(u8),
}

impl ShutdownReason {
    /// The reason for code `code`.
    pub fn from_code(code: u8) -> Self {
        match code {
            0 => ShutdownReason::Poweroff,
            1 => ShutdownReason::Reboot,
            2 => ShutdownReason::Suspend,
            3 => ShutdownReason::Crash,
            4 => ShutdownReason::Watchdog,
            5 => ShutdownReason::SoftReset,
            c => ShutdownReason::Other(c),
        }
    }

    /// The numeric code.
    pub fn code(self) -> u8 {
        match self {
            ShutdownReason::Poweroff => 0,
            ShutdownReason::Reboot => 1,
            ShutdownReason::Suspend => 2,
            ShutdownReason::Crash => 3,
            ShutdownReason::Watchdog => 4,
            ShutdownReason::SoftReset => 5,
            ShutdownReason::Other(c) => c,
        }
    }
}

impl fmt::Display for ShutdownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            ShutdownReason::Poweroff => "poweroff",
            ShutdownReason::Reboot => "reboot",
            ShutdownReason::Suspend => "suspend",
            ShutdownReason::Crash => "crash",
            ShutdownReason::Watchdog => "watchdog",
            ShutdownReason::SoftReset => "soft_reset",
            ShutdownReason::Other(_) => "unknown",
        };
        write!(f, "{name} ({})", self.code())
    }
}

/// The N of `exit status N` in a guest console line (0..=255), if the line has one.
pub fn parse_exit_status(line: &str) -> Option<u8> {
    let (_, rest) = line.split_once(EXIT_STATUS_TEXT)?;
    let digits: &str = &rest[..rest.bytes().take_while(u8::is_ascii_digit).count()];
    let after = rest[digits.len()..].chars().next();
    if digits.is_empty() || after.is_some_and(|c| !c.is_whitespace()) {
        return None;
    }
    digits.parse().ok()
}

/// What is known about a domain's end.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DomainEnd {
    /// The shutdown reason xl reported, if the domain shut down (none when it was destroyed or never ran).
    pub reason: Option<ShutdownReason>,
    /// The status of the guest's last `exit status N` line, if it printed one.
    pub printed: Option<u8>,
}

impl DomainEnd {
    /// The exit code: the printed status, else 0 after a poweroff, else [`DOMAIN_FAILED_EXIT`].
    pub fn exit_code(&self) -> u8 {
        match (self.printed, self.reason) {
            (Some(status), _) => status,
            (None, Some(ShutdownReason::Poweroff)) => 0,
            (None, _) => DOMAIN_FAILED_EXIT,
        }
    }

    /// A graceful end: powered off, with status 0 or none printed.
    pub fn graceful(&self) -> bool {
        self.reason == Some(ShutdownReason::Poweroff) && matches!(self.printed, None | Some(0))
    }
}

impl fmt::Display for DomainEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.reason {
            Some(r) => write!(f, "domain shut down, reason {r}")?,
            None => f.write_str("domain ended without a shutdown (destroyed, or never ran)")?,
        }
        match self.printed {
            Some(s) => write!(f, ", guest exit status {s}"),
            None => f.write_str(", no `exit status` line"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_codes_round_trip() {
        for code in 0..=255u8 {
            assert_eq!(ShutdownReason::from_code(code).code(), code);
        }
        assert_eq!(ShutdownReason::from_code(3), ShutdownReason::Crash);
        assert_eq!(ShutdownReason::Crash.to_string(), "crash (3)");
        assert_eq!(ShutdownReason::Other(9).to_string(), "unknown (9)");
    }

    #[test]
    fn exit_status_lines() {
        assert_eq!(parse_exit_status("exit status 0"), Some(0));
        assert_eq!(parse_exit_status("[    1.2 INFO  libos] exit status 101"), Some(101));
        assert_eq!(parse_exit_status("exit status 7 (panic)"), Some(7));
        assert_eq!(parse_exit_status("exit status 256"), None);
        assert_eq!(parse_exit_status("exit status x"), None);
        assert_eq!(parse_exit_status("exit status 1a"), None);
        assert_eq!(parse_exit_status("exit status "), None);
        assert_eq!(parse_exit_status("no status here"), None);
    }

    #[test]
    fn exit_codes() {
        let end = |reason, printed| DomainEnd { reason, printed };
        assert_eq!(end(Some(ShutdownReason::Poweroff), None).exit_code(), 0);
        assert_eq!(end(Some(ShutdownReason::Poweroff), Some(0)).exit_code(), 0);
        assert_eq!(end(Some(ShutdownReason::Crash), Some(101)).exit_code(), 101);
        assert_eq!(end(Some(ShutdownReason::Crash), None).exit_code(), DOMAIN_FAILED_EXIT);
        assert_eq!(end(Some(ShutdownReason::Reboot), None).exit_code(), DOMAIN_FAILED_EXIT);
        assert_eq!(end(None, None).exit_code(), DOMAIN_FAILED_EXIT);
        assert!(end(Some(ShutdownReason::Poweroff), Some(0)).graceful());
        assert!(!end(Some(ShutdownReason::Poweroff), Some(3)).graceful());
        assert!(!end(Some(ShutdownReason::Crash), None).graceful());
        assert_eq!(
            end(Some(ShutdownReason::Crash), Some(101)).to_string(),
            "domain shut down, reason crash (3), guest exit status 101"
        );
    }
}
