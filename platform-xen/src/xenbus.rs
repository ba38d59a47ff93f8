//! Xenbus front ends: the state values both ends publish in xenstore, the front-end state machine driven by
//! the backend's `state` node (watched), device discovery under `device/<class>/<id>`, configuration writes in
//! a transaction retried on `EAGAIN`, and the `control/shutdown` node that carries the toolstack's power
//! requests.
//! Source: Xen `xen/include/public/io/xenbus.h` (`enum xenbus_state`), `docs/misc/xenstore-paths.pandoc`
//! (`device/<class>/<id>/{backend,backend-id,state}`, `control/shutdown`, `control/feature-*`), `io/netif.h`
//! and `io/blkif.h` (which state a front end publishes after writing its ring details).
#![forbid(unsafe_code)]

use crate::abi::DomId;
use crate::xenstore::{parse_u64, Watch, XenStore, XsError, XsTxId, XBT_NIL};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use libos::shutdown::ShutdownKind;

/// `enum xenbus_state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u32)]
pub enum XenbusState {
    /// `XenbusStateUnknown`: no node (or 0).
    Unknown = 0,
    /// `XenbusStateInitialising`.
    Initialising = 1,
    /// `XenbusStateInitWait`: early setup done, waiting for the peer (a backend waits for the front end).
    InitWait = 2,
    /// `XenbusStateInitialised`: waiting for the peer to connect.
    Initialised = 3,
    /// `XenbusStateConnected`.
    Connected = 4,
    /// `XenbusStateClosing`: the device is being closed (error or unplug).
    Closing = 5,
    /// `XenbusStateClosed`.
    Closed = 6,
    /// `XenbusStateReconfiguring`.
    Reconfiguring = 7,
    /// `XenbusStateReconfigured`.
    Reconfigured = 8,
}

impl XenbusState {
    /// The state for a `state` node's value; anything unknown is [`XenbusState::Unknown`].
    pub fn parse(value: &str) -> Self {
        match value.trim().parse::<u32>() {
            Ok(1) => Self::Initialising,
            Ok(2) => Self::InitWait,
            Ok(3) => Self::Initialised,
            Ok(4) => Self::Connected,
            Ok(5) => Self::Closing,
            Ok(6) => Self::Closed,
            Ok(7) => Self::Reconfiguring,
            Ok(8) => Self::Reconfigured,
            _ => Self::Unknown,
        }
    }

    /// The decimal text written to a `state` node.
    pub fn as_str(self) -> &'static str {
        ["0", "1", "2", "3", "4", "5", "6", "7", "8"][self as usize]
    }
}

/// What the front end publishes once its ring details are written: netfront goes straight to `Connected`
/// (`io/netif.h`), blkfront to `Initialised` and to `Connected` after reading the backend's geometry
/// (`io/blkif.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    /// Network (vif).
    Net,
    /// Block (vbd).
    Block,
}

/// Where the front-end state machine stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the backend to reach `InitWait` (or later).
    WaitBackend,
    /// Ring details published; waiting for the backend to connect.
    WaitConnected,
    /// Both ends connected.
    Live,
    /// Closed or failed.
    Closed,
}

/// What the driver must do after a backend state change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing yet.
    Wait,
    /// Write the ring details, then publish [`Fsm::published_state`].
    Publish,
    /// The backend is connected: read its details (block) and publish `Connected` (block); the device is live.
    Connected,
    /// The backend is closing: publish `Closing` then `Closed`; the device is gone.
    Close,
    /// The backend went away or into a state the front end cannot follow; the device is gone.
    Gone(XenbusState),
}

/// The front-end state machine (sans-I/O): feed it each backend state read after a watch event.
#[derive(Clone, Copy, Debug)]
pub struct Fsm {
    flavour: Flavour,
    phase: Phase,
}

impl Fsm {
    /// A front end that has not published anything.
    pub fn new(flavour: Flavour) -> Self {
        Self { flavour, phase: Phase::WaitBackend }
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The state the front end publishes with its ring details.
    pub fn published_state(&self) -> XenbusState {
        match self.flavour {
            Flavour::Net => XenbusState::Connected,
            Flavour::Block => XenbusState::Initialised,
        }
    }

    /// Advances on backend state `backend`.
    pub fn on_backend(&mut self, backend: XenbusState) -> Step {
        use XenbusState as S;
        let step = match (self.phase, backend) {
            (Phase::Closed, _) => Step::Wait,
            (_, S::Closing) => Step::Close,
            (Phase::WaitBackend, S::Unknown | S::Initialising) => Step::Wait,
            (Phase::WaitBackend, S::InitWait | S::Initialised | S::Connected) => Step::Publish,
            (Phase::WaitConnected, S::InitWait | S::Initialised) => Step::Wait,
            (Phase::WaitConnected, S::Connected) => Step::Connected,
            (Phase::Live, S::Connected) => Step::Wait,
            (_, other) => Step::Gone(other),
        };
        self.phase = match step {
            Step::Wait => self.phase,
            Step::Publish => Phase::WaitConnected,
            Step::Connected => Phase::Live,
            Step::Close | Step::Gone(_) => Phase::Closed,
        };
        step
    }
}

/// Xenbus errors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum XenbusError {
    /// A xenstore operation failed.
    Store(XsError),
    /// The backend closed or vanished while connecting.
    BackendGone {
        /// The front-end path.
        device: String,
        /// The backend state seen.
        state: XenbusState,
    },
    /// Transactions kept conflicting.
    TooManyRetries {
        /// The path being written.
        path: String,
    },
}

impl From<XsError> for XenbusError {
    fn from(e: XsError) -> Self {
        Self::Store(e)
    }
}

impl fmt::Display for XenbusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Store(e) => write!(f, "{e}"),
            Self::BackendGone { device, state } => {
                write!(f, "{device}: backend went to state {state:?} ({}) while connecting", *state as u32)
            }
            Self::TooManyRetries { path } => {
                write!(f, "{path}: xenstore transaction conflicted {MAX_TX_RETRIES} times in a row")
            }
        }
    }
}

/// Attempts at a transaction before giving up.
pub const MAX_TX_RETRIES: u32 = 16;

/// Writes every `(key, value)` under `base` and then `base/state = state` in one transaction, retrying on
/// `EAGAIN`. Errors: xenstore errors, [`XenbusError::TooManyRetries`].
pub async fn publish(
    xs: &XenStore,
    base: &str,
    pairs: &[(&str, String)],
    state: XenbusState,
) -> Result<(), XenbusError> {
    for _ in 0..MAX_TX_RETRIES {
        let tx = xs.transaction_start().await?;
        let r: Result<(), XsError> = async {
            for (k, v) in pairs {
                xs.write(tx, &format!("{base}/{k}"), v).await?;
            }
            xs.write(tx, &format!("{base}/state"), state.as_str()).await
        }
        .await;
        if let Err(e) = r {
            let _ = xs.transaction_end(tx, false).await;
            return Err(e.into());
        }
        if xs.transaction_end(tx, true).await? {
            return Ok(());
        }
    }
    Err(XenbusError::TooManyRetries { path: String::from(base) })
}

/// Writes our `state` node outside a transaction.
pub async fn switch_state(xs: &XenStore, base: &str, state: XenbusState) -> Result<(), XsError> {
    xs.write(XBT_NIL, &format!("{base}/state"), state.as_str()).await
}

/// The device ids under `device/<class>` (e.g. "vif" → ["0"]); none when the directory is missing.
pub async fn discover(xs: &XenStore, class: &str) -> Result<Vec<String>, XsError> {
    match xs.directory(XBT_NIL, &format!("device/{class}")).await {
        Ok(ids) => Ok(ids),
        Err(e) if e.is_errno("ENOENT") => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// A front end being connected: its node, its backend's node and domain, and a watch on the backend state.
pub struct Frontend<'a> {
    xs: &'a XenStore,
    /// Front-end path, e.g. `device/vif/0`.
    pub path: String,
    /// Backend path, e.g. `/local/domain/0/backend/vif/5/0`.
    pub backend: String,
    /// Backend domain id.
    pub backend_id: DomId,
    fsm: Fsm,
    watch: Watch<'a>,
}

impl<'a> Frontend<'a> {
    /// Reads `backend` and `backend-id` of `path` and watches the backend's `state`. Errors: xenstore errors,
    /// [`XsError::BadValue`] for a backend id above 0xFFFF.
    pub async fn open(xs: &'a XenStore, path: &str, flavour: Flavour) -> Result<Self, XsError> {
        let backend = xs.read(XBT_NIL, &format!("{path}/backend")).await?;
        let id_path = format!("{path}/backend-id");
        let id = xs.read(XBT_NIL, &id_path).await?;
        let backend_id = u16::try_from(parse_u64(&id_path, &id)?).map(DomId).map_err(|_| XsError::BadValue {
            path: id_path,
            value: id,
            expected: "a domain id below 65536",
        })?;
        let watch = xs.watch(&format!("{backend}/state")).await?;
        Ok(Self { xs, path: String::from(path), backend, backend_id, fsm: Fsm::new(flavour), watch })
    }

    /// The backend's current state (missing node = `Unknown`).
    pub async fn backend_state(&self) -> Result<XenbusState, XsError> {
        let v = self.xs.read_opt(XBT_NIL, &format!("{}/state", self.backend)).await?;
        Ok(v.map_or(XenbusState::Unknown, |v| XenbusState::parse(&v)))
    }

    /// Waits for backend changes until the state machine asks for something other than [`Step::Wait`]. A
    /// `Close` is acted on here (we publish `Closing`, then `Closed`) and reported as an error like `Gone`.
    pub async fn next_step(&mut self) -> Result<Step, XenbusError> {
        loop {
            self.watch.next().await?;
            let state = self.backend_state().await?;
            match self.fsm.on_backend(state) {
                Step::Wait => continue,
                Step::Close => {
                    switch_state(self.xs, &self.path, XenbusState::Closing).await?;
                    switch_state(self.xs, &self.path, XenbusState::Closed).await?;
                    return Err(XenbusError::BackendGone { device: self.path.clone(), state });
                }
                Step::Gone(s) => return Err(XenbusError::BackendGone { device: self.path.clone(), state: s }),
                step => return Ok(step),
            }
        }
    }

    /// Publishes `pairs` under the front-end path together with the state machine's published state.
    pub async fn publish(&self, pairs: &[(&str, String)]) -> Result<(), XenbusError> {
        publish(self.xs, &self.path, pairs, self.fsm.published_state()).await
    }

    /// Reads a backend node (`None` when absent).
    pub async fn backend_node(&self, key: &str) -> Result<Option<String>, XsError> {
        self.xs.read_opt(XBT_NIL, &format!("{}/{key}", self.backend)).await
    }

    /// Reads a front-end node.
    pub async fn node(&self, key: &str) -> Result<String, XsError> {
        self.xs.read(XBT_NIL, &format!("{}/{key}", self.path)).await
    }

    /// Publishes `Connected` (block front ends, after reading the backend's details).
    pub async fn connected(&self) -> Result<(), XsError> {
        switch_state(self.xs, &self.path, XenbusState::Connected).await
    }

    /// The xenstore connection.
    pub fn store(&self) -> &'a XenStore {
        self.xs
    }

    /// Stops watching the backend.
    pub async fn finish(self) -> Result<(), XsError> {
        self.watch.unwatch().await
    }
}

/// A boolean feature node: "1" means yes; absent or anything else means no.
pub fn feature(value: Option<&str>) -> bool {
    value.is_some_and(|v| v.trim() == "1")
}

/// The power request in a `control/shutdown` value: "poweroff"/"halt" and "reboot"; empty (acknowledged) or
/// unsupported requests ("suspend", "crash") give `None`.
pub fn shutdown_request(value: &str) -> Option<ShutdownKind> {
    match value.trim() {
        "poweroff" | "halt" => Some(ShutdownKind::Poweroff),
        "reboot" => Some(ShutdownKind::Reboot),
        _ => None,
    }
}

/// `control/shutdown`.
pub const CONTROL_SHUTDOWN: &str = "control/shutdown";

/// Advertises the requests we act on (`control/feature-poweroff`, `control/feature-reboot`) and watches
/// `control/shutdown`: each request is acknowledged (the node is emptied in a transaction, as the toolstack
/// expects) and passed to [`libos::shutdown::request`]. Returns only on a xenstore error.
pub async fn control_loop(xs: &XenStore) -> Result<(), XenbusError> {
    xs.write(XBT_NIL, "control/feature-poweroff", "1").await?;
    xs.write(XBT_NIL, "control/feature-reboot", "1").await?;
    let mut watch = xs.watch(CONTROL_SHUTDOWN).await?;
    loop {
        watch.next().await?;
        if let Some(kind) = take_shutdown_request(xs).await? {
            libos::shutdown::request(kind);
        }
    }
}

/// Reads and clears `control/shutdown` in one transaction (retried on `EAGAIN`); returns the request.
pub async fn take_shutdown_request(xs: &XenStore) -> Result<Option<ShutdownKind>, XenbusError> {
    for _ in 0..MAX_TX_RETRIES {
        let tx: XsTxId = xs.transaction_start().await?;
        let value = match xs.read_opt(tx, CONTROL_SHUTDOWN).await {
            Ok(v) => v.unwrap_or_default(),
            Err(e) => {
                let _ = xs.transaction_end(tx, false).await;
                return Err(e.into());
            }
        };
        if value.is_empty() {
            xs.transaction_end(tx, false).await?;
            return Ok(None);
        }
        if let Err(e) = xs.write(tx, CONTROL_SHUTDOWN, "").await {
            let _ = xs.transaction_end(tx, false).await;
            return Err(e.into());
        }
        if xs.transaction_end(tx, true).await? {
            let kind = shutdown_request(&value);
            if kind.is_none() {
                log::warn!("xen: ignoring unsupported control/shutdown request {value:?}");
            }
            return Ok(kind);
        }
    }
    Err(XenbusError::TooManyRetries { path: String::from(CONTROL_SHUTDOWN) })
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::evtchn::EvtchnPort;
    use crate::xenstore::daemon::{block_on, MockXenstored};
    use crate::xenstore::ring::XsRing;
    use alloc::sync::Arc;

    fn connect() -> (Arc<MockXenstored>, XenStore) {
        let d = MockXenstored::new(EvtchnPort(3));
        let xs = XenStore::new(XsRing::new(d.ring.page.clone()), d.clone(), EvtchnPort(3), None);
        (d, xs)
    }

    #[test]
    fn states_parse_and_print() {
        assert_eq!(XenbusState::parse("4"), XenbusState::Connected);
        assert_eq!(XenbusState::parse(" 2\n"), XenbusState::InitWait);
        assert_eq!(XenbusState::parse("9"), XenbusState::Unknown);
        assert_eq!(XenbusState::parse("x"), XenbusState::Unknown);
        assert_eq!(XenbusState::Closed.as_str(), "6");
    }

    #[test]
    fn fsm_net_and_block() {
        use XenbusState as S;
        let mut net = Fsm::new(Flavour::Net);
        assert_eq!(net.published_state(), S::Connected);
        assert_eq!(net.on_backend(S::Initialising), Step::Wait);
        assert_eq!(net.on_backend(S::InitWait), Step::Publish);
        assert_eq!(net.on_backend(S::InitWait), Step::Wait);
        assert_eq!(net.on_backend(S::Connected), Step::Connected);
        assert_eq!(net.phase(), Phase::Live);
        assert_eq!(net.on_backend(S::Connected), Step::Wait);
        assert_eq!(net.on_backend(S::Closing), Step::Close);
        assert_eq!(net.on_backend(S::Connected), Step::Wait, "closed stays closed");

        let mut blk = Fsm::new(Flavour::Block);
        assert_eq!(blk.published_state(), S::Initialised);
        assert_eq!(blk.on_backend(S::Unknown), Step::Wait);
        assert_eq!(blk.on_backend(S::Connected), Step::Publish, "already connected backend");
        assert_eq!(blk.on_backend(S::Connected), Step::Connected);
        let mut gone = Fsm::new(Flavour::Block);
        assert_eq!(gone.on_backend(S::InitWait), Step::Publish);
        assert_eq!(gone.on_backend(S::Closed), Step::Gone(S::Closed));
        assert_eq!(gone.phase(), Phase::Closed);
        let mut weird = Fsm::new(Flavour::Net);
        assert_eq!(weird.on_backend(S::Reconfiguring), Step::Gone(S::Reconfiguring));
    }

    #[test]
    fn frontend_handshake_with_a_backend_peer() {
        let (d, xs) = connect();
        d.set("device/vif/0/backend", "/local/domain/0/backend/vif/5/0");
        d.set("device/vif/0/backend-id", "0");
        d.set("device/vif/0/state", "1");
        d.set("/local/domain/0/backend/vif/5/0/state", "2");
        // The backend connects when the front end says Connected (netback's behaviour).
        d.state.lock().hooks.push(alloc::boxed::Box::new(|path, value, _| {
            if path == "device/vif/0/state" && value == "4" {
                alloc::vec![(String::from("/local/domain/0/backend/vif/5/0/state"), String::from("4"))]
            } else {
                alloc::vec![]
            }
        }));
        let mut fe = block_on(Frontend::open(&xs, "device/vif/0", Flavour::Net)).expect("open");
        assert_eq!((fe.backend.as_str(), fe.backend_id), ("/local/domain/0/backend/vif/5/0", DomId(0)));
        assert_eq!(block_on(fe.next_step()), Ok(Step::Publish));
        block_on(fe.publish(&[("tx-ring-ref", String::from("8")), ("event-channel", String::from("101"))]))
            .expect("publish");
        assert_eq!(d.get("device/vif/0/tx-ring-ref").as_deref(), Some("8"));
        assert_eq!(d.get("device/vif/0/state").as_deref(), Some("4"));
        assert_eq!(block_on(fe.next_step()), Ok(Step::Connected));
        block_on(fe.finish()).expect("unwatch");
    }

    #[test]
    fn backend_closing_during_connect_closes_the_front() {
        let (d, xs) = connect();
        d.set("device/vbd/768/backend", "be");
        d.set("device/vbd/768/backend-id", "0");
        d.set("be/state", "5");
        let mut fe = block_on(Frontend::open(&xs, "device/vbd/768", Flavour::Block)).expect("open");
        let e = block_on(fe.next_step()).unwrap_err();
        assert_eq!(e, XenbusError::BackendGone { device: String::from("device/vbd/768"), state: XenbusState::Closing });
        assert_eq!(d.get("device/vbd/768/state").as_deref(), Some("6"));
        assert!(std::format!("{e}").contains("backend went to state Closing (5)"));
    }

    #[test]
    fn bad_backend_id_and_discovery() {
        let (d, xs) = connect();
        d.set("device/vif/0/backend", "be");
        d.set("device/vif/0/backend-id", "70000");
        assert!(matches!(block_on(Frontend::open(&xs, "device/vif/0", Flavour::Net)), Err(XsError::BadValue { .. })));
        assert_eq!(block_on(discover(&xs, "vif")), Ok(alloc::vec![String::from("0")]));
        assert_eq!(block_on(discover(&xs, "vbd")), Ok(alloc::vec![]));
    }

    #[test]
    fn shutdown_requests_are_acknowledged() {
        let (d, xs) = connect();
        assert_eq!(shutdown_request("poweroff"), Some(ShutdownKind::Poweroff));
        assert_eq!(shutdown_request("reboot"), Some(ShutdownKind::Reboot));
        assert_eq!(shutdown_request("suspend"), None);
        assert_eq!(block_on(take_shutdown_request(&xs)), Ok(None), "no node");
        d.set(CONTROL_SHUTDOWN, "poweroff");
        d.state.lock().conflicts = 1;
        assert_eq!(block_on(take_shutdown_request(&xs)), Ok(Some(ShutdownKind::Poweroff)));
        assert_eq!(d.get(CONTROL_SHUTDOWN).as_deref(), Some(""), "acknowledged");
        d.set(CONTROL_SHUTDOWN, "suspend");
        assert_eq!(block_on(take_shutdown_request(&xs)), Ok(None));
        assert_eq!(d.get(CONTROL_SHUTDOWN).as_deref(), Some(""));
        assert!(feature(Some("1")) && !feature(Some("0")) && !feature(None));
    }
}
