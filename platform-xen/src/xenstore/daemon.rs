//! A xenstored peer for tests, written from `xs_wire.h` and `docs/misc/xenstore.txt`: an in-memory tree, watches
//! (one event at registration, then one per change at or below the path), transactions that can be made to
//! fail with `EAGAIN`, and hooks that let a test backend react to the front end's writes. It runs synchronously
//! inside `EventChannelOps::send`, like a daemon woken by the notification.

use super::ring::daemon::DaemonRing;
use super::wire::{Decoder, Message, MsgType, XsTxId, XBT_NIL};
use crate::abi::{DomId, XenErrno};
use crate::evtchn::{EventChannelOps, EvtchnPort};
use crate::shared::SharedPage;
use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use spin::Mutex;

/// A reaction to a write: gets `(path, value)` and the tree, returns further writes to apply.
pub type Hook = Box<dyn FnMut(&str, &str, &BTreeMap<String, String>) -> Vec<(String, String)> + Send>;

#[derive(Default)]
pub struct State {
    pub tree: BTreeMap<String, String>,
    pub watches: Vec<(String, String)>,
    pub out: VecDeque<u8>,
    decoder: Decoder,
    next_tx: u32,
    tx_writes: BTreeMap<XsTxId, Vec<(String, Option<String>)>>,
    /// Commits to refuse with EAGAIN.
    pub conflicts: u32,
    pub notifications: u32,
    pub hooks: Vec<Hook>,
    /// Other ports notified (device event channels), by port.
    pub kicks: BTreeMap<EvtchnPort, u32>,
    next_port: u32,
}

pub struct MockXenstored {
    pub ring: DaemonRing,
    pub state: Mutex<State>,
    pub port: EvtchnPort,
}

impl MockXenstored {
    pub fn new(port: EvtchnPort) -> Arc<Self> {
        let page = Arc::new(SharedPage::new().expect("page"));
        Arc::new(Self {
            ring: DaemonRing { page },
            state: Mutex::new(State { next_tx: 1, next_port: 100, ..Default::default() }),
            port,
        })
    }

    pub fn set(&self, path: &str, value: &str) {
        self.state.lock().tree.insert(path.to_string(), value.to_string());
    }

    pub fn get(&self, path: &str) -> Option<String> {
        self.state.lock().tree.get(path).cloned()
    }

    /// Writes `path` as another domain would (fires watches) and delivers what fits.
    pub fn external_write(&self, path: &str, value: &str) {
        let mut st = self.state.lock();
        apply_write(&mut st, path, Some(value), true);
        self.flush(&mut st);
    }

    fn flush(&self, st: &mut State) {
        while !st.out.is_empty() {
            let (a, _) = st.out.as_slices();
            let n = self.ring.write_responses(a);
            if n == 0 {
                break;
            }
            st.out.drain(..n);
        }
    }

    fn process(&self) {
        let mut st = self.state.lock();
        st.notifications += 1;
        let bytes = self.ring.read_requests();
        st.decoder.push(&bytes);
        while let Some(m) = st.decoder.next_message().expect("client sent a valid message") {
            handle(&mut st, m);
        }
        self.flush(&mut st);
    }
}

fn reply(st: &mut State, req: &Message, ty: u32, payload: &[u8]) {
    let m = Message { msg_type: ty, req_id: req.req_id, tx_id: req.tx_id, payload: payload.to_vec() };
    let mut b = Vec::new();
    m.emit(&mut b);
    st.out.extend(b);
}

fn error(st: &mut State, req: &Message, errno: &str) {
    let mut p = errno.as_bytes().to_vec();
    p.push(0);
    reply(st, req, MsgType::Error as u32, &p);
}

fn fire(st: &mut State, path: &str) {
    let hits: Vec<String> = st
        .watches
        .iter()
        .filter(|(w, _)| path == w || path.strip_prefix(w.as_str()).is_some_and(|r| r.starts_with('/')))
        .map(|(_, t)| t.clone())
        .collect();
    for token in hits {
        let m = Message {
            msg_type: MsgType::WatchEvent as u32,
            req_id: 0,
            tx_id: XBT_NIL,
            payload: [path.as_bytes(), b"\0", token.as_bytes(), b"\0"].concat(),
        };
        let mut b = Vec::new();
        m.emit(&mut b);
        st.out.extend(b);
    }
}

fn apply_write(st: &mut State, path: &str, value: Option<&str>, run_hooks: bool) {
    match value {
        Some(v) => {
            st.tree.insert(path.to_string(), v.to_string());
        }
        None => st.tree.retain(|k, _| k != path && !k.starts_with(&[path, "/"].concat())),
    }
    fire(st, path);
    if run_hooks {
        if let Some(v) = value {
            let mut hooks = core::mem::take(&mut st.hooks);
            let mut more = Vec::new();
            for h in hooks.iter_mut() {
                more.extend(h(path, v, &st.tree));
            }
            st.hooks = hooks;
            for (p, v) in more {
                apply_write(st, &p, Some(&v), false);
            }
        }
    }
}

fn children(tree: &BTreeMap<String, String>, path: &str) -> Vec<String> {
    let prefix = [path, "/"].concat();
    let mut out: Vec<String> = tree
        .keys()
        .filter_map(|k| k.strip_prefix(&prefix))
        .map(|rest| rest.split('/').next().unwrap_or("").to_string())
        .collect();
    out.dedup();
    out
}

fn handle(st: &mut State, m: Message) {
    let strings: Vec<String> = m.strings().unwrap_or_default().into_iter().map(String::from).collect();
    let path = strings.first().cloned().unwrap_or_default();
    match MsgType::from_raw(m.msg_type) {
        Some(MsgType::Read) => {
            let v = st
                .tx_writes
                .get(&m.tx_id)
                .and_then(|w| w.iter().rev().find(|(p, _)| *p == path).map(|(_, v)| v.clone()))
                .unwrap_or_else(|| st.tree.get(&path).cloned());
            match v {
                Some(v) => reply(st, &m, m.msg_type, v.as_bytes()),
                None => error(st, &m, "ENOENT"),
            }
        }
        Some(MsgType::Write) => {
            let nul = m.payload.iter().position(|&b| b == 0).unwrap_or(m.payload.len());
            let path = String::from_utf8_lossy(&m.payload[..nul]).to_string();
            let value = String::from_utf8_lossy(m.payload.get(nul + 1..).unwrap_or(&[])).to_string();
            if m.tx_id != XBT_NIL {
                match st.tx_writes.get_mut(&m.tx_id) {
                    Some(w) => w.push((path, Some(value))),
                    None => return error(st, &m, "ESRCH"),
                }
            } else {
                apply_write(st, &path, Some(&value), true);
            }
            reply(st, &m, m.msg_type, b"OK\0");
        }
        Some(MsgType::Rm) => {
            apply_write(st, &path, None, false);
            reply(st, &m, m.msg_type, b"OK\0");
        }
        Some(MsgType::Directory) => {
            let kids = children(&st.tree, &path);
            if kids.is_empty() && !st.tree.contains_key(&path) {
                return error(st, &m, "ENOENT");
            }
            let mut p = Vec::new();
            for k in kids {
                p.extend_from_slice(k.as_bytes());
                p.push(0);
            }
            reply(st, &m, m.msg_type, &p);
        }
        Some(MsgType::Watch) => {
            let token = strings.get(1).cloned().unwrap_or_default();
            st.watches.push((path.clone(), token.clone()));
            reply(st, &m, m.msg_type, b"OK\0");
            let ev = Message {
                msg_type: MsgType::WatchEvent as u32,
                req_id: 0,
                tx_id: XBT_NIL,
                payload: [path.as_bytes(), b"\0", token.as_bytes(), b"\0"].concat(),
            };
            let mut b = Vec::new();
            ev.emit(&mut b);
            st.out.extend(b);
        }
        Some(MsgType::Unwatch) => {
            let token = strings.get(1).cloned().unwrap_or_default();
            st.watches.retain(|(p, t)| !(*p == path && *t == token));
            reply(st, &m, m.msg_type, b"OK\0");
        }
        Some(MsgType::TransactionStart) => {
            let id = st.next_tx;
            st.next_tx += 1;
            st.tx_writes.insert(XsTxId(id), Vec::new());
            reply(st, &m, m.msg_type, alloc::format!("{id}\0").as_bytes());
        }
        Some(MsgType::TransactionEnd) => {
            let Some(writes) = st.tx_writes.remove(&m.tx_id) else { return error(st, &m, "ESRCH") };
            if path == "T" {
                if st.conflicts > 0 {
                    st.conflicts -= 1;
                    return error(st, &m, "EAGAIN");
                }
                for (p, v) in writes {
                    apply_write(st, &p, v.as_deref(), true);
                }
            }
            reply(st, &m, m.msg_type, b"OK\0");
        }
        _ => error(st, &m, "EINVAL"),
    }
}

impl EventChannelOps for MockXenstored {
    fn send(&self, port: EvtchnPort) -> Result<(), XenErrno> {
        if port == self.port {
            self.process();
        } else {
            *self.state.lock().kicks.entry(port).or_default() += 1;
        }
        Ok(())
    }
    fn alloc_unbound(&self, _remote: DomId) -> Result<EvtchnPort, XenErrno> {
        let mut st = self.state.lock();
        st.next_port += 1;
        Ok(EvtchnPort(st.next_port))
    }
    fn close(&self, _port: EvtchnPort) -> Result<(), XenErrno> {
        Ok(())
    }
}

/// Polls `fut` with a no-op waker until it completes (the mock answers synchronously, so a few polls suffice).
pub fn block_on<F: core::future::Future>(fut: F) -> F::Output {
    let waker = core::task::Waker::noop();
    let mut cx = core::task::Context::from_waker(waker);
    let mut fut = core::pin::pin!(fut);
    for _ in 0..10_000 {
        if let core::task::Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
    }
    panic!("future did not complete: the peer never answered");
}
