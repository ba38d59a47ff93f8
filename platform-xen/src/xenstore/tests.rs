extern crate std;

use super::daemon::{block_on, MockXenstored};
use super::ring::XsRing;
use super::*;
use std::vec;

const PORT: EvtchnPort = EvtchnPort(7);

fn connect() -> (Arc<MockXenstored>, XenStore) {
    let d = MockXenstored::new(PORT);
    let xs = XenStore::new(XsRing::new(d.ring.page.clone()), d.clone(), PORT, None);
    (d, xs)
}

#[test]
fn read_write_directory_rm() {
    let (d, xs) = connect();
    d.set("device/vif/0/mac", "00:16:3e:00:00:01");
    d.set("device/vif/1/mac", "00:16:3e:00:00:02");
    assert_eq!(block_on(xs.read(XBT_NIL, "device/vif/0/mac")).as_deref(), Ok("00:16:3e:00:00:01"));
    assert_eq!(block_on(xs.directory(XBT_NIL, "device/vif")), Ok(vec![String::from("0"), String::from("1")]));
    block_on(xs.write(XBT_NIL, "device/vif/0/state", "4")).expect("write");
    assert_eq!(d.get("device/vif/0/state").as_deref(), Some("4"));
    assert_eq!(block_on(xs.read_u64(XBT_NIL, "device/vif/0/state")), Ok(4));
    let e = block_on(xs.read(XBT_NIL, "nope")).unwrap_err();
    assert!(e.is_errno("ENOENT"));
    assert_eq!(std::format!("{e}"), "xenstore read \"nope\": ENOENT");
    assert_eq!(block_on(xs.read_opt(XBT_NIL, "nope")), Ok(None));
    block_on(xs.rm(XBT_NIL, "device/vif/1")).expect("rm");
    assert_eq!(block_on(xs.directory(XBT_NIL, "device/vif")), Ok(vec![String::from("0")]));
    let bad = block_on(xs.read_u64(XBT_NIL, "device/vif/0/mac")).unwrap_err();
    assert!(matches!(bad, XsError::BadValue { .. }));
}

#[test]
fn large_values_cross_the_ring_in_pieces() {
    let (d, xs) = connect();
    let big: String = (0..3000).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    block_on(xs.write(XBT_NIL, "data/big", &big)).expect("write");
    assert_eq!(d.get("data/big").as_deref(), Some(big.as_str()));
    assert_eq!(block_on(xs.read(XBT_NIL, "data/big")), Ok(big));
    let too_big: String = "x".repeat(5000);
    assert!(matches!(block_on(xs.write(XBT_NIL, "data/huge", &too_big)), Err(XsError::Wire(_))));
}

#[test]
fn watches_deliver_initial_and_change_events() {
    let (d, xs) = connect();
    let mut w = block_on(xs.watch("control/shutdown")).expect("watch");
    assert_eq!(block_on(w.next()).as_deref(), Ok("control/shutdown"), "initial event");
    d.external_write("control/shutdown", "poweroff");
    d.external_write("control/other", "x");
    assert_eq!(block_on(w.next()).as_deref(), Ok("control/shutdown"));
    d.external_write("control/shutdown/sub", "y");
    assert_eq!(block_on(w.next()).as_deref(), Ok("control/shutdown/sub"));
    block_on(w.unwatch()).expect("unwatch");
    assert!(d.state.lock().watches.is_empty());
}

#[test]
fn transactions_retry_on_eagain() {
    let (d, xs) = connect();
    d.state.lock().conflicts = 2;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let tx = block_on(xs.transaction_start()).expect("start");
        assert_ne!(tx, XBT_NIL);
        block_on(xs.write(tx, "device/vbd/768/ring-ref", "8")).expect("write");
        assert_eq!(d.get("device/vbd/768/ring-ref"), None, "not visible before commit");
        assert_eq!(block_on(xs.read(tx, "device/vbd/768/ring-ref")).as_deref(), Ok("8"));
        if block_on(xs.transaction_end(tx, true)).expect("end") {
            break;
        }
    }
    assert_eq!(attempts, 3);
    assert_eq!(d.get("device/vbd/768/ring-ref").as_deref(), Some("8"));
    let tx = block_on(xs.transaction_start()).expect("start");
    block_on(xs.write(tx, "aborted", "1")).expect("write");
    assert_eq!(block_on(xs.transaction_end(tx, false)), Ok(true));
    assert_eq!(d.get("aborted"), None);
}

#[test]
fn hostile_daemon_breaks_the_connection() {
    let (d, xs) = connect();
    // A reply header claiming a 5000-byte payload.
    let mut b = Vec::new();
    for v in [2u32, 1, 0, 5000] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    d.ring.write_responses(&b);
    let e = block_on(xs.read(XBT_NIL, "x")).unwrap_err();
    assert!(matches!(e, XsError::Wire(wire::WireError::PayloadTooLong { len: 5000 })));
    // Stays broken.
    assert_eq!(block_on(xs.read(XBT_NIL, "y")), Err(e));

    let (d, xs) = connect();
    d.ring.set_rsp_prod(4000);
    assert!(matches!(block_on(xs.read(XBT_NIL, "x")), Err(XsError::Ring(_))));
}

#[test]
fn replies_of_the_wrong_type_or_for_nobody() {
    let (d, xs) = connect();
    // A reply for a request id nobody sent is dropped; then a wrongly typed reply to our request 1.
    let mut b = Vec::new();
    Message { msg_type: 2, req_id: 999, tx_id: XBT_NIL, payload: b"x".to_vec() }.emit(&mut b);
    Message { msg_type: MsgType::Directory as u32, req_id: 1, tx_id: XBT_NIL, payload: vec![] }.emit(&mut b);
    d.ring.write_responses(&b);
    d.set("x", "1");
    let e = block_on(xs.read(XBT_NIL, "x")).unwrap_err();
    assert_eq!(e, XsError::UnexpectedReply { op: "read", got: 1 });
}
