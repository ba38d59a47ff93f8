//! The SCSI command layer shared by every SCSI host driver (virtio-scsi here, Hyper-V's storvsc in
//! `platform-hyperv`): command descriptor blocks, the parameter data the block drivers read (INQUIRY, READ
//! CAPACITY(16), REPORT LUNS), LUN addressing, status codes, fixed and descriptor sense data, and the policy that
//! turns a status and its sense into success, a retry (UNIT ATTENTION) or a [`ScsiError`].
//!
//! Every structure is a checked view over bytes with `libos::wire`'s big-endian accessors and an owned `Repr`
//! (smoltcp's idiom). Source: SCSI Primary Commands (SPC-5, T10/BSR INCITS 502) §4.4 (sense data), §6.6
//! (INQUIRY), §6.29 (REPORT LUNS), §6.39 (REQUEST SENSE), §6.47 (TEST UNIT READY); SCSI Block Commands (SBC-4,
//! INCITS 506) §5.16 READ(16), §5.20 READ CAPACITY(16), §5.26 SYNCHRONIZE CACHE(10), §5.27 SYNCHRONIZE
//! CACHE(16), §5.40 WRITE(16); SCSI Architecture Model (SAM-5) §4.7 (LUN formats), §5.3 (status codes).
#![forbid(unsafe_code)]

pub mod cdb;
pub mod data;
pub mod lun;
pub mod sense;
pub mod status;

pub use cdb::{Cdb, CdbError, Command};
pub use data::{CapacityRepr, InquiryRepr, ReportLunsRepr};
pub use lun::Lun;
pub use sense::{SenseKey, SenseRepr};
pub use status::{judge, ScsiError, ScsiStatus, Verdict, UNIT_ATTENTION_RETRIES};
