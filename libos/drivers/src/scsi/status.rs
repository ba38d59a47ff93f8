//! SCSI status codes and the completion policy every SCSI host driver applies: GOOD is success, CHECK
//! CONDITION with UNIT ATTENTION is retried a few times (a reset or a changed medium was reported, the command
//! itself was not run), anything else — any other sense, BUSY, RESERVATION CONFLICT, an unknown status — is a
//! [`ScsiError`] naming the command, the status and the decoded sense.
//! Source: SAM-5 §5.3 (status codes), §5.14 (unit attention condition); SPC-5 §4.4 (sense data).
#![forbid(unsafe_code)]

use super::cdb::Command;
use super::sense::{SenseError, SenseKey, SenseRepr};
use alloc::format;
use alloc::string::String;
use core::fmt;
use libos::dev::BlockError;

/// Times a command answered with UNIT ATTENTION is sent again before the UNIT ATTENTION is an error. Each
/// UNIT ATTENTION condition is reported once, so more than one or two in a row means the unit keeps resetting.
pub const UNIT_ATTENTION_RETRIES: u32 = 3;

/// A SCSI STATUS byte (SAM-5 Table 33).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScsiStatus(pub u8);

impl ScsiStatus {
    /// GOOD.
    pub const GOOD: Self = Self(0x00);
    /// CHECK CONDITION: sense data describes the failure.
    pub const CHECK_CONDITION: Self = Self(0x02);
    /// CONDITION MET.
    pub const CONDITION_MET: Self = Self(0x04);
    /// BUSY.
    pub const BUSY: Self = Self(0x08);
    /// RESERVATION CONFLICT.
    pub const RESERVATION_CONFLICT: Self = Self(0x18);
    /// TASK SET FULL.
    pub const TASK_SET_FULL: Self = Self(0x28);
    /// ACA ACTIVE.
    pub const ACA_ACTIVE: Self = Self(0x30);
    /// TASK ABORTED.
    pub const TASK_ABORTED: Self = Self(0x40);

    /// The status's name, "reserved" for values SAM-5 does not assign.
    pub fn name(self) -> &'static str {
        match self.0 {
            0x00 => "GOOD",
            0x02 => "CHECK CONDITION",
            0x04 => "CONDITION MET",
            0x08 => "BUSY",
            0x18 => "RESERVATION CONFLICT",
            0x28 => "TASK SET FULL",
            0x30 => "ACA ACTIVE",
            0x40 => "TASK ABORTED",
            _ => "reserved",
        }
    }
}

impl fmt::Display for ScsiStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:#04x})", self.name(), self.0)
    }
}

/// A SCSI command that did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScsiError {
    /// The command.
    pub command: Command,
    /// Its status.
    pub status: ScsiStatus,
    /// The sense data with CHECK CONDITION (or why it could not be decoded); `None` for other statuses.
    pub sense: Option<Result<SenseRepr, SenseError>>,
    /// UNIT ATTENTION retries made before this answer.
    pub retries: u32,
}

impl ScsiError {
    /// The sense key, when there is valid sense data.
    pub fn sense_key(&self) -> Option<SenseKey> {
        match &self.sense {
            Some(Ok(s)) => Some(s.key),
            _ => None,
        }
    }

    /// As a [`BlockError::Io`] of `device` at `sector` (the caller's logical sector for the command's LBA).
    pub fn to_block_error(&self, device: &str, sector: u64) -> BlockError {
        BlockError::Io { device: device.into(), sector, detail: format!("{self}") }
    }
}

impl fmt::Display for ScsiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: status {}", self.command, self.status)?;
        match &self.sense {
            Some(Ok(s)) => write!(f, ", {s}")?,
            Some(Err(e)) => write!(f, ", {e}")?,
            None => {}
        }
        if self.retries > 0 {
            write!(f, " (after {} UNIT ATTENTION retries)", self.retries)?;
        }
        Ok(())
    }
}

/// What to do with a completed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The command succeeded.
    Good,
    /// Send the same command again: the unit reported a UNIT ATTENTION condition (described by `why`).
    Retry {
        /// The decoded sense data: sense key, ASC/ASCQ and their meaning (e.g. "power on occurred").
        why: String,
    },
    /// The command failed.
    Fail(ScsiError),
}

/// The verdict on `command` completed with `status` and `sense` (the sense bytes the device returned, empty for
/// none), after `retries` UNIT ATTENTION retries of it.
pub fn judge(command: &Command, status: ScsiStatus, sense: &[u8], retries: u32) -> Verdict {
    if matches!(status, ScsiStatus::GOOD | ScsiStatus::CONDITION_MET) {
        return Verdict::Good;
    }
    let decoded = (status == ScsiStatus::CHECK_CONDITION).then(|| SenseRepr::from_bytes(sense));
    if let Some(Ok(s)) = &decoded {
        if s.key == SenseKey::UNIT_ATTENTION && !s.deferred && retries < UNIT_ATTENTION_RETRIES {
            return Verdict::Retry { why: format!("{s}") };
        }
    }
    Verdict::Fail(ScsiError { command: *command, status, sense: decoded, retries })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sense(key: SenseKey, asc: u8) -> [u8; 18] {
        let mut b = [0u8; 18];
        SenseRepr::current(key, asc, 0).emit(&mut b);
        b
    }

    const READ: Command = Command::Read16 { lba: 17, blocks: 2, fua: false };

    #[test]
    fn good_and_unit_attention_retries() {
        assert_eq!(judge(&READ, ScsiStatus::GOOD, &[], 0), Verdict::Good);
        assert_eq!(judge(&READ, ScsiStatus::CONDITION_MET, &[], 0), Verdict::Good);
        let ua = sense(SenseKey::UNIT_ATTENTION, 0x29);
        for retries in 0..UNIT_ATTENTION_RETRIES {
            assert!(matches!(judge(&READ, ScsiStatus::CHECK_CONDITION, &ua, retries), Verdict::Retry { .. }));
        }
        let Verdict::Fail(e) = judge(&READ, ScsiStatus::CHECK_CONDITION, &ua, UNIT_ATTENTION_RETRIES) else {
            panic!("a UNIT ATTENTION that persists is an error")
        };
        assert_eq!(e.sense_key(), Some(SenseKey::UNIT_ATTENTION));
        assert_eq!(
            e.to_string(),
            "READ(16) of 2 blocks at LBA 17: status CHECK CONDITION (0x02), sense key UNIT ATTENTION (0x6), \
             ASC/ASCQ 0x29/0x00 (power on, reset, or bus device reset occurred) (after 3 UNIT ATTENTION retries)"
        );
    }

    #[test]
    fn every_other_sense_or_status_is_an_error() {
        for key in [SenseKey::NO_SENSE, SenseKey::RECOVERED_ERROR, SenseKey::MEDIUM_ERROR, SenseKey::DATA_PROTECT] {
            let Verdict::Fail(e) = judge(&READ, ScsiStatus::CHECK_CONDITION, &sense(key, 0x11), 0) else {
                panic!("{key}")
            };
            assert_eq!(e.sense_key(), Some(key));
        }
        let Verdict::Fail(e) = judge(&READ, ScsiStatus::CHECK_CONDITION, &[], 0) else { panic!() };
        assert_eq!(e.to_string(), "READ(16) of 2 blocks at LBA 17: status CHECK CONDITION (0x02), no sense data");
        let Verdict::Fail(e) = judge(&READ, ScsiStatus::CHECK_CONDITION, &[0x7f; 18], 0) else { panic!() };
        assert!(e.to_string().ends_with("sense data with unknown response code 0x7f"), "{e}");
        for s in [ScsiStatus::BUSY, ScsiStatus::RESERVATION_CONFLICT, ScsiStatus::TASK_ABORTED, ScsiStatus(0x77)] {
            let Verdict::Fail(e) = judge(&Command::SYNCHRONIZE_ALL, s, &[], 0) else { panic!("{s}") };
            assert_eq!(e.sense, None);
        }
        let Verdict::Fail(e) = judge(&READ, ScsiStatus(0x77), &[], 0) else { panic!() };
        assert_eq!(e.to_string(), "READ(16) of 2 blocks at LBA 17: status reserved (0x77)");
        let b = e.to_block_error("disk", 17);
        assert!(matches!(b, BlockError::Io { sector: 17, .. }));
        // A deferred UNIT ATTENTION belongs to an earlier command: not retried.
        let mut d = [0u8; 18];
        SenseRepr { deferred: true, ..SenseRepr::current(SenseKey::UNIT_ATTENTION, 0x29, 0) }.emit(&mut d);
        assert!(matches!(judge(&READ, ScsiStatus::CHECK_CONDITION, &d, 0), Verdict::Fail(_)));
    }
}
