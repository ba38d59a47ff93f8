//! GUIDs as VMBus carries them (`guid_t`, RFC 4122 fields with the first three little-endian, the Microsoft layout)
//! and the device class GUIDs of the synthetic devices Zirvium drives. Source: Linux `include/linux/hyperv.h`
//! (`HV_NIC_GUID`, `HV_SCSI_GUID`, `HV_SHUTDOWN_GUID`, `HV_TS_GUID`, `HV_HEART_BEAT_GUID`, `HV_KVP_GUID`, ...).

/// The GUID type is the one shared wire form in `libos::wire`.
pub use libos::wire::Guid;

/// Synthetic network adapter (netvsc): `{f8615163-df3e-46c5-913f-f2d2f965ed0e}`.
pub const NIC: Guid = Guid::new(0xf8615163, 0xdf3e, 0x46c5, [0x91, 0x3f, 0xf2, 0xd2, 0xf9, 0x65, 0xed, 0x0e]);
/// Synthetic SCSI controller (storvsc): `{ba6163d9-04a1-4d29-b605-72e2ffb1dc7f}`.
pub const SCSI: Guid = Guid::new(0xba6163d9, 0x04a1, 0x4d29, [0xb6, 0x05, 0x72, 0xe2, 0xff, 0xb1, 0xdc, 0x7f]);
/// Synthetic IDE accelerator (storvsc on Gen1 IDE disks): `{32412632-86cb-44a2-9b5c-50d1417354f5}`.
pub const IDE: Guid = Guid::new(0x32412632, 0x86cb, 0x44a2, [0x9b, 0x5c, 0x50, 0xd1, 0x41, 0x73, 0x54, 0xf5]);
/// Shutdown integration service: `{0e0b6031-5213-4934-818b-38d90ced39db}`.
pub const SHUTDOWN: Guid = Guid::new(0x0e0b6031, 0x5213, 0x4934, [0x81, 0x8b, 0x38, 0xd9, 0x0c, 0xed, 0x39, 0xdb]);
/// Time synchronisation integration service: `{9527e630-d0ae-497b-adce-e80ab0175caf}`.
pub const TIMESYNC: Guid = Guid::new(0x9527e630, 0xd0ae, 0x497b, [0xad, 0xce, 0xe8, 0x0a, 0xb0, 0x17, 0x5c, 0xaf]);
/// Heartbeat integration service: `{57164f39-9115-4e78-ab55-382f3bd5422d}`.
pub const HEARTBEAT: Guid = Guid::new(0x57164f39, 0x9115, 0x4e78, [0xab, 0x55, 0x38, 0x2f, 0x3b, 0xd5, 0x42, 0x2d]);
/// Key-value pair exchange integration service: `{a9a0f4e7-5a45-4d96-b827-8a841e8c03e6}`.
pub const KVP: Guid = Guid::new(0xa9a0f4e7, 0x5a45, 0x4d96, [0xb8, 0x27, 0x8a, 0x84, 0x1e, 0x8c, 0x03, 0xe6]);
/// Volume shadow copy service (not driven here): `{35fa2e29-ea23-4236-96ae-3a6ebacba440}`.
pub const VSS: Guid = Guid::new(0x35fa2e29, 0xea23, 0x4236, [0x96, 0xae, 0x3a, 0x6e, 0xba, 0xcb, 0xa4, 0x40]);

/// Dynamic Memory (hv_balloon): `{525074dc-8985-46e2-8057-a307dc18a502}`.
pub const DYNAMIC_MEMORY: Guid =
    Guid::new(0x525074dc, 0x8985, 0x46e2, [0x80, 0x57, 0xa3, 0x07, 0xdc, 0x18, 0xa5, 0x02]);

/// A name for a device class GUID, for logs.
pub fn class_name(g: &Guid) -> &'static str {
    match *g {
        NIC => "netvsc",
        SCSI => "storvsc (SCSI)",
        IDE => "storvsc (IDE)",
        SHUTDOWN => "shutdown IC",
        TIMESYNC => "timesync IC",
        HEARTBEAT => "heartbeat IC",
        KVP => "KVP IC",
        VSS => "VSS IC",
        DYNAMIC_MEMORY => "dynamic memory",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn wire_layout_and_text() {
        assert_eq!(NIC.0[..4], [0x63, 0x51, 0x61, 0xf8], "first field little-endian");
        assert_eq!(NIC.0[4..8], [0x3e, 0xdf, 0xc5, 0x46]);
        assert_eq!(NIC.0[8..], [0x91, 0x3f, 0xf2, 0xd2, 0xf9, 0x65, 0xed, 0x0e]);
        assert_eq!(NIC.to_string(), "f8615163-df3e-46c5-913f-f2d2f965ed0e");
        assert_eq!(KVP.to_string(), "a9a0f4e7-5a45-4d96-b827-8a841e8c03e6");
        assert_eq!(class_name(&HEARTBEAT), "heartbeat IC");
        // As QEMU's hv-balloon offers it (hw/hyperv/hv-balloon.c HV_BALLOON_GUID, seen on a real host).
        assert_eq!(DYNAMIC_MEMORY.to_string(), "525074dc-8985-46e2-8057-a307dc18a502");
        assert_eq!(class_name(&Guid::default()), "unknown");
    }
}
