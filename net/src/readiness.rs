//! What a socket can do without waiting, for `poll(2)`-style multiplexing over several sockets (the std ABI's
//! `poll`, which mio and so tokio use). Source: POSIX.1-2017 `poll()` (POLLIN, POLLOUT, POLLHUP, POLLERR);
//! Linux `tcp_poll` for POLLRDHUP on a peer's FIN.

/// Readiness of one socket at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Readiness {
    /// A read (or accept) returns at once: data, a connection, end of stream or an error is there.
    pub readable: bool,
    /// A write returns at once: room in the send buffer, or the connection is dead.
    pub writable: bool,
    /// The peer closed its sending half (FIN): reads return end of stream after the queued data.
    pub read_closed: bool,
    /// Both directions are closed.
    pub hangup: bool,
    /// The connection was reset or refused.
    pub error: bool,
}
