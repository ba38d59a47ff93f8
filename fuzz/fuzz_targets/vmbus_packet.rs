//! VMBus packet descriptors and their range headers (`platform_hyperv::vmbus::packet`: `vmpacket_descriptor`,
//! `vmtransfer_page_packet_header`, `vmdata_gpa_direct`) as read out of a ring. Invariants: no panic; a checked
//! packet's payload lies inside it; the descriptor round-trips; transfer-page and GPA ranges parsed from a
//! packet, rebuilt with the packet builders, parse back to the same ranges and payload.
#![no_main]

use libfuzzer_sys::fuzz_target;
use platform_hyperv::vmbus::packet::{gpa_direct, inband, transfer_pages, Descriptor, DescriptorView, Packet};

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = DescriptorView::new_checked(data) {
        let d = Descriptor::parse(&v);
        assert_eq!(Descriptor::parse(&DescriptorView::new_checked(&d.emit()[..]).unwrap()), d);
    }
    let Ok(p) = Packet::new_checked(data.to_vec()) else { return };
    assert_eq!(p.raw.len(), usize::from(p.desc.len8) * 8);
    let payload = p.payload().to_vec();
    assert!(payload.len() <= p.raw.len());
    let (t, f) = (p.desc.trans_id, p.desc.flags);
    if let Ok((set, ranges)) = p.transfer_ranges() {
        let again = transfer_pages(t, f, set, &ranges, &payload).expect("fits: no larger than the original");
        let q = Packet::new_checked(again).expect("built packet is valid");
        assert_eq!(q.transfer_ranges().unwrap(), (set, ranges));
        assert!(q.payload().starts_with(&payload));
    }
    if let Ok(ranges) = p.gpa_ranges() {
        if let Some(again) = gpa_direct(t, f, &ranges, &payload) {
            let q = Packet::new_checked(again).expect("built packet is valid");
            assert_eq!(q.gpa_ranges().unwrap(), ranges);
            assert!(q.payload().starts_with(&payload));
        }
    }
    if let Some(again) = inband(t, f, &payload) {
        let q = Packet::new_checked(again).expect("built packet is valid");
        assert!(q.payload().starts_with(&payload));
    }
});
