//! Mapping QEMU's process exit status back to the guest's exit status (QEMU `isa-debug-exit` device).
//!
//! The guest writes its status v (0..=127) to I/O port 0xf4 (`-device isa-debug-exit,iobase=0xf4,iosize=4`) and
//! QEMU exits with `(v << 1) | 1` (QEMU `hw/misc/debugexit.c`). Exit 0 means QEMU stopped for another reason
//! (shutdown, a reset under `-no-reboot` such as a triple fault, or a signal it handled). QEMU's own start-up
//! errors exit 1, which collides with guest status 0, so stderr decides that case.

use std::fmt;

/// Exit code of `images run` when QEMU itself failed (as `env`/`timeout` use 125 for their own failures).
pub const QEMU_FAILED_EXIT: u8 = 125;

/// Exit code of `images run` when `--timeout` expired and QEMU was killed (as `timeout(1)`).
pub const TIMEOUT_EXIT: u8 = 124;

/// How a QEMU process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The guest wrote this status (0..=127) to `isa-debug-exit`.
    Guest(u8),
    /// QEMU exited 0: the guest stopped without writing a status (shutdown, or a reset under `-no-reboot`).
    NoStatus,
    /// QEMU failed by itself: an even exit code, exit 1 with an error on stderr, or death by a signal.
    QemuFailed {
        /// QEMU's exit code, if it exited.
        code: Option<i32>,
        /// The signal that ended QEMU, if one did.
        signal: Option<i32>,
    },
}

impl Outcome {
    /// Classifies a finished QEMU process from its exit status and its captured stderr.
    pub fn from_status(status: std::process::ExitStatus, stderr: &str) -> Outcome {
        use std::os::unix::process::ExitStatusExt;
        match status.code() {
            Some(code) => Outcome::from_code(code, stderr),
            None => Outcome::QemuFailed { code: None, signal: status.signal() },
        }
    }

    /// Classifies QEMU exit code `code`: odd → guest status `code >> 1`, 0 → [`Outcome::NoStatus`], else a failure.
    /// Code 1 is a QEMU failure when `stderr` has a QEMU error line (one starting with `qemu` that is not a
    /// warning), because QEMU reports configuration errors with exit 1.
    pub fn from_code(code: i32, stderr: &str) -> Outcome {
        match code {
            0 => Outcome::NoStatus,
            1 if has_qemu_error(stderr) => Outcome::QemuFailed { code: Some(code), signal: None },
            // Odd codes 1..=255 are `(v << 1) | 1` for v in 0..=127, so `code >> 1` fits a u8.
            1..=255 if code & 1 == 1 => Outcome::Guest((code >> 1) as u8),
            _ => Outcome::QemuFailed { code: Some(code), signal: None },
        }
    }

    /// Exit code for `images run`: the guest status, 0 for [`Outcome::NoStatus`], [`QEMU_FAILED_EXIT`] otherwise.
    pub fn exit_code(&self) -> u8 {
        match *self {
            Outcome::Guest(v) => v,
            Outcome::NoStatus => 0,
            Outcome::QemuFailed { .. } => QEMU_FAILED_EXIT,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Outcome::Guest(v) => write!(f, "guest exit status {v}"),
            Outcome::NoStatus => f.write_str("QEMU exited 0 without a guest exit status (shutdown or reset)"),
            Outcome::QemuFailed { code: Some(c), .. } => write!(f, "QEMU failed with exit code {c}"),
            Outcome::QemuFailed { signal: Some(s), .. } => write!(f, "QEMU was killed by signal {s}"),
            Outcome::QemuFailed { .. } => f.write_str("QEMU failed"),
        }
    }
}

/// True if `stderr` has a line QEMU prints for an error, e.g. `qemu-system-x86_64: -kernel x: No such file`.
fn has_qemu_error(stderr: &str) -> bool {
    stderr.lines().map(str::trim_start).any(|l| l.starts_with("qemu") && !l.contains("warning:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_codes_are_guest_status() {
        assert_eq!(Outcome::from_code(1, ""), Outcome::Guest(0));
        assert_eq!(Outcome::from_code(203, ""), Outcome::Guest(101));
        assert_eq!(Outcome::from_code(205, ""), Outcome::Guest(102));
        assert_eq!(Outcome::from_code(207, ""), Outcome::Guest(103));
        assert_eq!(Outcome::from_code(255, ""), Outcome::Guest(127));
        assert_eq!(Outcome::from_code(207, "").exit_code(), 103);
    }

    #[test]
    fn zero_is_no_status() {
        assert_eq!(Outcome::from_code(0, ""), Outcome::NoStatus);
        assert_eq!(Outcome::NoStatus.exit_code(), 0);
    }

    #[test]
    fn even_and_out_of_range_codes_are_qemu_failures() {
        for code in [2, 124, 256, 257, -1] {
            let o = Outcome::from_code(code, "");
            assert_eq!(o, Outcome::QemuFailed { code: Some(code), signal: None }, "{code}");
            assert_eq!(o.exit_code(), QEMU_FAILED_EXIT);
        }
    }

    #[test]
    fn exit_one_with_qemu_error_is_a_failure() {
        let err = "qemu-system-x86_64: -kernel /nope: Could not open '/nope': No such file or directory\n";
        assert_eq!(Outcome::from_code(1, err), Outcome::QemuFailed { code: Some(1), signal: None });
        // The warning the nested KVM prints for `-cpu qemu64` is not an error.
        let warn = "qemu-system-x86_64: warning: host doesn't support requested feature: CPUID.01H:ECX.pni [bit 0]\n";
        assert_eq!(Outcome::from_code(1, warn), Outcome::Guest(0));
        assert_eq!(Outcome::from_code(3, err), Outcome::Guest(1));
    }

    #[test]
    fn signal_is_a_failure() {
        use std::os::unix::process::ExitStatusExt;
        let killed = std::process::ExitStatus::from_raw(9); // wait(2) status for "killed by SIGKILL"
        assert_eq!(Outcome::from_status(killed, ""), Outcome::QemuFailed { code: None, signal: Some(9) });
        let exited = std::process::ExitStatus::from_raw(205 << 8); // wait(2) status for exit(205)
        assert_eq!(Outcome::from_status(exited, ""), Outcome::Guest(102));
        assert_eq!(Outcome::QemuFailed { code: None, signal: Some(9) }.to_string(), "QEMU was killed by signal 9");
    }
}
