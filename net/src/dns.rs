//! DNS name lookup (RFC 1035 A records) through smoltcp's DNS socket and the servers from `dns=` or the
//! DHCP lease (RFC 2132 §3.8).

use crate::error::{DnsError, Error, Result};
use crate::stack::Stack;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::future::poll_fn;
use core::net::IpAddr;
use core::task::Poll;
use smoltcp::socket::dns::{GetQueryResultError, QueryHandle, StartQueryError};
use smoltcp::wire::DnsQueryType;

/// Cancels the query if the lookup is dropped before it finished.
struct Query<'a> {
    stack: &'a Stack,
    handle: Option<QueryHandle>,
}

impl Drop for Query<'_> {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            self.stack.with(|i| i.dns_socket().cancel_query(h));
        }
    }
}

/// Resolves `name` to its IPv4 addresses on `stack` (see [`crate::resolve`]). An IP literal is returned
/// as is. Errors: [`Error::Dns`] with [`DnsError::NoServer`], [`DnsError::InvalidName`],
/// [`DnsError::NameTooLong`], [`DnsError::TooManyQueries`], [`DnsError::Failed`] (no answer after
/// smoltcp's retransmissions, ~10 s, or an answer without addresses).
pub async fn resolve_on(stack: &Arc<Stack>, name: &str) -> Result<Vec<IpAddr>> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    let handle = stack.with(|i| {
        if i.ipv4.as_ref().is_none_or(|c| c.dns_servers.is_empty()) {
            return Err(DnsError::NoServer);
        }
        let cx = i.iface.context();
        let dns = i.sockets.get_mut::<smoltcp::socket::dns::Socket>(i.dns);
        dns.start_query(cx, name, DnsQueryType::A).map_err(|e| match e {
            StartQueryError::NoFreeSlot => DnsError::TooManyQueries,
            StartQueryError::InvalidName => DnsError::InvalidName(String::from(name)),
            StartQueryError::NameTooLong => DnsError::NameTooLong(String::from(name)),
        })
    })?;
    stack.notify();
    let mut query = Query { stack, handle: Some(handle) };
    let r = poll_fn(|cx| {
        stack.with(|i| {
            let dns = i.dns_socket();
            match dns.get_query_result(handle) {
                Ok(addrs) => Poll::Ready(Ok(addrs.iter().map(|a| IpAddr::from(*a)).collect::<Vec<_>>())),
                Err(GetQueryResultError::Pending) => {
                    dns.register_query_waker(handle, cx.waker());
                    Poll::Pending
                }
                Err(GetQueryResultError::Failed) => Poll::Ready(Err(DnsError::Failed(String::from(name)))),
            }
        })
    })
    .await;
    // A finished query has freed its slot already.
    query.handle = None;
    match r {
        Ok(addrs) if addrs.is_empty() => Err(Error::Dns(DnsError::Failed(String::from(name)))),
        Ok(addrs) => Ok(addrs),
        Err(e) => Err(Error::Dns(e)),
    }
}
