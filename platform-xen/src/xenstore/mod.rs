//! The xenstore client: requests and replies over the ring page from `HVM_PARAM_STORE_PFN`, notifications on
//! `HVM_PARAM_STORE_EVTCHN`; read, write, directory, rm, watches (events queued per watch and awaited by tasks)
//! and transactions (start/end, `EAGAIN` means "retry"). Whoever awaits a reply or a watch event pumps the ring,
//! so no extra task is needed; the event channel only wakes the waiters.
//! Source: Xen `xen/include/public/io/xs_wire.h`, `docs/misc/xenstore.txt` (operations, relative paths under
//! `/local/domain/<domid>`, watch semantics: one event at registration, then one per change at or below the
//! path), `hvm/params.h`.
#![forbid(unsafe_code)]

pub mod ring;
pub mod wire;

use crate::abi::XenErrno;
use crate::evtchn::{EventChannelOps, EvtchnPort};
use alloc::collections::{BTreeMap, VecDeque};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicU32, Ordering};
use core::task::Poll;
use libos::irq::WakeSlot;
use ring::{RingIndexError, XsRing};
use spin::Mutex;
use wire::{Decoder, Message, MsgType, WireError};
pub use wire::{XsTxId, XBT_NIL};

/// Errors of xenstore operations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum XsError {
    /// xenstored answered `XS_ERROR` (e.g. `ENOENT`, `EACCES`, `EAGAIN`).
    Daemon {
        /// The operation, e.g. "read".
        op: &'static str,
        /// The path it was about.
        path: String,
        /// The errno name xenstored sent.
        errno: String,
    },
    /// xenstored sent malformed data; the connection is unusable.
    Wire(WireError),
    /// xenstored broke the ring protocol; the connection is unusable.
    Ring(RingIndexError),
    /// A reply of the wrong type.
    UnexpectedReply {
        /// The operation.
        op: &'static str,
        /// The type received.
        got: u32,
    },
    /// A value is not what the protocol says it must be.
    BadValue {
        /// The path read.
        path: String,
        /// The value found.
        value: String,
        /// What was expected.
        expected: &'static str,
    },
    /// The event channel notification failed.
    Notify(XenErrno),
}

impl XsError {
    /// Whether this is `XS_ERROR` with errno `name`.
    pub fn is_errno(&self, name: &str) -> bool {
        matches!(self, Self::Daemon { errno, .. } if errno == name)
    }
}

impl fmt::Display for XsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Daemon { op, path, errno } => write!(f, "xenstore {op} {path:?}: {errno}"),
            Self::Wire(e) => write!(f, "{e}; xenstore connection closed"),
            Self::Ring(e) => write!(f, "{e}; xenstore connection closed"),
            Self::UnexpectedReply { op, got } => write!(f, "xenstore {op}: reply of unexpected type {got}"),
            Self::BadValue { path, value, expected } => {
                write!(f, "xenstore {path:?} = {value:?}: expected {expected}")
            }
            Self::Notify(e) => write!(f, "xenstore event channel notification: {e}"),
        }
    }
}

struct Inner {
    ring: XsRing,
    out: VecDeque<u8>,
    decoder: Decoder,
    next_req_id: u32,
    /// Replies by request id; `None` while waiting.
    replies: BTreeMap<u32, Option<Message>>,
    /// Queued event paths by watch token.
    watches: BTreeMap<String, VecDeque<String>>,
    broken: Option<XsError>,
}

/// A xenstore connection.
pub struct XenStore {
    inner: Mutex<Inner>,
    events: Arc<dyn EventChannelOps>,
    port: EvtchnPort,
    slot: Option<&'static WakeSlot>,
    next_token: AtomicU32,
}

impl XenStore {
    /// A client over `ring`, notifying xenstored through `events` on `port`; `slot` (the port's wake-up slot)
    /// wakes waiting tasks, `None` where replies arrive synchronously (tests).
    pub fn new(
        ring: XsRing,
        events: Arc<dyn EventChannelOps>,
        port: EvtchnPort,
        slot: Option<&'static WakeSlot>,
    ) -> Self {
        Self {
            inner: Mutex::new(Inner {
                ring,
                out: VecDeque::new(),
                decoder: Decoder::new(),
                next_req_id: 1,
                replies: BTreeMap::new(),
                watches: BTreeMap::new(),
                broken: None,
            }),
            events,
            port,
            slot,
            next_token: AtomicU32::new(1),
        }
    }

    /// Moves bytes both ways until neither ring makes progress, notifying xenstored after each step that moved
    /// something, and dispatches complete messages. A ring or wire error breaks the connection for good.
    fn pump(&self, inner: &mut Inner) -> Result<(), XsError> {
        if let Some(e) = &inner.broken {
            return Err(e.clone());
        }
        let r = self.pump_inner(inner);
        if let Err(e) = &r {
            if !matches!(e, XsError::Notify(_)) {
                log::error!("{e}");
                inner.broken = Some(e.clone());
            }
        }
        r
    }

    fn pump_inner(&self, inner: &mut Inner) -> Result<(), XsError> {
        for _ in 0..64 {
            let mut progress = false;
            while !inner.out.is_empty() {
                let (a, _) = inner.out.as_slices();
                let n = inner.ring.write(a).map_err(XsError::Ring)?;
                if n == 0 {
                    break;
                }
                inner.out.drain(..n);
                progress = true;
            }
            let mut buf = [0u8; 256];
            loop {
                let n = inner.ring.read(&mut buf).map_err(XsError::Ring)?;
                if n == 0 {
                    break;
                }
                inner.decoder.push(&buf[..n]);
                progress = true;
            }
            while let Some(m) = inner.decoder.next_message().map_err(XsError::Wire)? {
                Self::dispatch(inner, m)?;
            }
            if !progress {
                break;
            }
            self.events.send(self.port).map_err(XsError::Notify)?;
        }
        Ok(())
    }

    fn dispatch(inner: &mut Inner, m: Message) -> Result<(), XsError> {
        if m.msg_type == MsgType::WatchEvent as u32 {
            let (path, token) = m.watch_event().map_err(XsError::Wire)?;
            if let Some(q) = inner.watches.get_mut(&token) {
                q.push_back(path);
            }
            return Ok(());
        }
        match inner.replies.get_mut(&m.req_id) {
            Some(slot @ None) => *slot = Some(m),
            // A reply for a request whose caller gave up, or a duplicate: nobody wants it.
            _ => log::warn!("xenstore: dropping reply with unknown request id {}", m.req_id),
        }
        Ok(())
    }

    /// Sends one request and awaits its reply. `XS_ERROR` replies become [`XsError::Daemon`].
    async fn request(
        &self,
        ty: MsgType,
        op: &'static str,
        tx: XsTxId,
        strings: &[&str],
        tail: &[u8],
    ) -> Result<Message, XsError> {
        let path = strings.first().copied().unwrap_or("");
        let id = {
            let mut inner = self.inner.lock();
            if let Some(e) = &inner.broken {
                return Err(e.clone());
            }
            let id = inner.next_req_id;
            inner.next_req_id = inner.next_req_id.wrapping_add(1).max(1);
            let msg = Message::request(ty, id, tx, strings, tail).map_err(XsError::Wire)?;
            let mut bytes = Vec::new();
            msg.emit(&mut bytes);
            inner.out.extend(bytes);
            inner.replies.insert(id, None);
            id
        };
        struct Forget<'a>(&'a XenStore, u32);
        impl Drop for Forget<'_> {
            fn drop(&mut self) {
                self.0.inner.lock().replies.remove(&self.1);
            }
        }
        let _forget = Forget(self, id);
        let reply = core::future::poll_fn(|cx| {
            if let Some(slot) = self.slot {
                slot.register(cx.waker());
            }
            let mut inner = self.inner.lock();
            if let Err(e) = self.pump(&mut inner) {
                return Poll::Ready(Err(e));
            }
            match inner.replies.get_mut(&id).and_then(Option::take) {
                Some(m) => Poll::Ready(Ok(m)),
                None => Poll::Pending,
            }
        })
        .await?;
        if reply.msg_type == MsgType::Error as u32 {
            let errno = reply.text().unwrap_or("(unreadable error)").to_string();
            return Err(XsError::Daemon { op, path: String::from(path), errno });
        }
        if reply.msg_type != ty as u32 {
            return Err(XsError::UnexpectedReply { op, got: reply.msg_type });
        }
        Ok(reply)
    }

    /// `XS_READ`: the value at `path`. Errors: [`XsError::Daemon`] (`ENOENT` when absent), connection errors.
    pub async fn read(&self, tx: XsTxId, path: &str) -> Result<String, XsError> {
        let m = self.request(MsgType::Read, "read", tx, &[path], b"").await?;
        Ok(m.text().map_err(XsError::Wire)?.to_string())
    }

    /// [`read`](Self::read), with `None` for a missing node.
    pub async fn read_opt(&self, tx: XsTxId, path: &str) -> Result<Option<String>, XsError> {
        match self.read(tx, path).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_errno("ENOENT") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads `path` as an unsigned decimal number. Errors: as [`read`](Self::read), [`XsError::BadValue`].
    pub async fn read_u64(&self, tx: XsTxId, path: &str) -> Result<u64, XsError> {
        let v = self.read(tx, path).await?;
        parse_u64(path, &v)
    }

    /// `XS_WRITE`: sets `path` to `value` (creating it and its parents).
    pub async fn write(&self, tx: XsTxId, path: &str, value: &str) -> Result<(), XsError> {
        self.request(MsgType::Write, "write", tx, &[path], value.as_bytes()).await.map(|_| ())
    }

    /// `XS_RM`: removes `path` and everything below it.
    pub async fn rm(&self, tx: XsTxId, path: &str) -> Result<(), XsError> {
        self.request(MsgType::Rm, "rm", tx, &[path], b"").await.map(|_| ())
    }

    /// `XS_DIRECTORY`: the names of `path`'s children.
    pub async fn directory(&self, tx: XsTxId, path: &str) -> Result<Vec<String>, XsError> {
        let m = self.request(MsgType::Directory, "directory", tx, &[path], b"").await?;
        Ok(m.strings().map_err(XsError::Wire)?.into_iter().filter(|s| !s.is_empty()).map(String::from).collect())
    }

    /// `XS_TRANSACTION_START`: a new transaction id.
    pub async fn transaction_start(&self) -> Result<XsTxId, XsError> {
        let m = self.request(MsgType::TransactionStart, "transaction start", XBT_NIL, &[""], b"").await?;
        let text = m.text().map_err(XsError::Wire)?;
        let id = parse_u64("(transaction id)", text)?;
        u32::try_from(id).ok().map(XsTxId).filter(|&t| t != XBT_NIL).ok_or_else(|| XsError::BadValue {
            path: String::from("(transaction id)"),
            value: String::from(text),
            expected: "a non-zero 32-bit transaction id",
        })
    }

    /// `XS_TRANSACTION_END`: commits (or aborts) `tx`. Returns false when xenstored answered `EAGAIN` — another
    /// writer got in between and the whole transaction must be redone.
    pub async fn transaction_end(&self, tx: XsTxId, commit: bool) -> Result<bool, XsError> {
        match self.request(MsgType::TransactionEnd, "transaction end", tx, &[if commit { "T" } else { "F" }], b"").await
        {
            Ok(_) => Ok(true),
            Err(e) if e.is_errno("EAGAIN") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `XS_WATCH` on `path`: the returned [`Watch`] yields the paths that changed at or below it, starting with
    /// one event for `path` itself.
    pub async fn watch(&self, path: &str) -> Result<Watch<'_>, XsError> {
        let token = format!("zirvium-{}", self.next_token.fetch_add(1, Ordering::Relaxed));
        self.inner.lock().watches.insert(token.clone(), VecDeque::new());
        if let Err(e) = self.request(MsgType::Watch, "watch", XBT_NIL, &[path, &token], b"").await {
            self.inner.lock().watches.remove(&token);
            return Err(e);
        }
        Ok(Watch { xs: self, path: String::from(path), token })
    }
}

/// Parses an unsigned decimal xenstore value.
pub fn parse_u64(path: &str, value: &str) -> Result<u64, XsError> {
    value.trim().parse::<u64>().map_err(|_| XsError::BadValue {
        path: String::from(path),
        value: String::from(value),
        expected: "an unsigned decimal number",
    })
}

/// A registered watch.
pub struct Watch<'a> {
    xs: &'a XenStore,
    path: String,
    token: String,
}

impl Watch<'_> {
    /// The next path that changed (at or below the watched path). Errors: connection errors.
    pub async fn next(&mut self) -> Result<String, XsError> {
        core::future::poll_fn(|cx| {
            if let Some(slot) = self.xs.slot {
                slot.register(cx.waker());
            }
            let mut inner = self.xs.inner.lock();
            if let Some(p) = inner.watches.get_mut(&self.token).and_then(VecDeque::pop_front) {
                return Poll::Ready(Ok(p));
            }
            if let Err(e) = self.xs.pump(&mut inner) {
                return Poll::Ready(Err(e));
            }
            match inner.watches.get_mut(&self.token).and_then(VecDeque::pop_front) {
                Some(p) => Poll::Ready(Ok(p)),
                None => Poll::Pending,
            }
        })
        .await
    }

    /// The watched path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// `XS_UNWATCH`: removes the watch.
    pub async fn unwatch(self) -> Result<(), XsError> {
        self.xs.inner.lock().watches.remove(&self.token);
        self.xs.request(MsgType::Unwatch, "unwatch", XBT_NIL, &[&self.path, &self.token], b"").await.map(|_| ())
    }
}

#[cfg(test)]
pub(crate) mod daemon;

#[cfg(test)]
mod tests;
