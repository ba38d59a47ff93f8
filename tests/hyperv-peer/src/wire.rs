//! The host side of the synthetic NIC's "wire": frames the guest sends through netvsc come out of [`HostNic`]
//! (a `libos::dev::NetDevice`, so a host-side network stack can talk to the guest), and frames the host-side
//! stack transmits go to the guest.

use crate::lock;
use libos::dev::{DeviceError, NetDevice, NetInfo, NetOffloads, RxFrame};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::task::Waker;

#[derive(Default)]
struct Inner {
    to_host: VecDeque<Vec<u8>>,
    to_guest: VecDeque<Vec<u8>>,
    host_waker: Option<Waker>,
    frames_to_host: u64,
    frames_to_guest: u64,
}

/// Both directions of the wire.
#[derive(Clone)]
pub struct Wire {
    inner: Arc<Mutex<Inner>>,
    guest_mac: [u8; 6],
}

impl Wire {
    pub(crate) fn new(guest_mac: [u8; 6]) -> Self {
        Self { inner: Arc::new(Mutex::new(Inner::default())), guest_mac }
    }

    /// The guest NIC's MAC address.
    pub fn guest_mac(&self) -> [u8; 6] {
        self.guest_mac
    }

    /// A frame from the guest.
    pub(crate) fn push_to_host(&self, frame: Vec<u8>) {
        let mut g = lock(&self.inner);
        g.frames_to_host += 1;
        g.to_host.push_back(frame);
        if let Some(w) = &g.host_waker {
            w.wake_by_ref();
        }
    }

    /// The next frame for the guest.
    pub(crate) fn take_for_guest(&self) -> Option<Vec<u8>> {
        lock(&self.inner).to_guest.pop_front()
    }

    /// Frames moved `(guest → host, host → guest)`.
    pub fn counts(&self) -> (u64, u64) {
        let g = lock(&self.inner);
        (g.frames_to_host, g.frames_to_guest)
    }

    /// A NIC for a host-side network stack.
    pub fn host_nic(&self, mac: [u8; 6]) -> HostNic {
        HostNic {
            wire: self.clone(),
            info: NetInfo { name: "host-wire".into(), mac, mtu: 1500, offloads: NetOffloads::default() },
        }
    }
}

/// The host end of the wire as a [`NetDevice`].
pub struct HostNic {
    wire: Wire,
    info: NetInfo,
}

impl NetDevice for HostNic {
    fn info(&self) -> &NetInfo {
        &self.info
    }

    fn receive(&mut self) -> Result<Option<RxFrame>, DeviceError> {
        Ok(lock(&self.wire.inner).to_host.pop_front().map(|buf| {
            let len = buf.len();
            RxFrame { buf, offset: 0, len, token: 0, checksum_valid: false }
        }))
    }

    fn recycle(&mut self, _frame: RxFrame) -> Result<(), DeviceError> {
        Ok(())
    }

    fn can_transmit(&mut self) -> bool {
        lock(&self.wire.inner).to_guest.len() < 512
    }

    fn transmit(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> Result<(), DeviceError> {
        let mut f = vec![0u8; len];
        fill(&mut f);
        let mut g = lock(&self.wire.inner);
        g.frames_to_guest += 1;
        g.to_guest.push_back(f);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), DeviceError> {
        Ok(())
    }

    fn set_waker(&mut self, waker: &Waker) {
        lock(&self.wire.inner).host_waker = Some(waker.clone());
    }
}
