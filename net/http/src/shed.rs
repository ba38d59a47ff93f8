//! Load shedding under memory pressure (`libos::mem::pressure`): while the kernel heap is low, [`crate::serve`]
//! answers each new connection with [`RESPONSE`] — 503 with `Connection: close` and `Retry-After: 1`, from a
//! fixed buffer, no per-connection state — instead of serving it, so the requests in flight finish with the
//! memory left. Fewer than [`MIN_SERVED`] connections being served are always joined by one more (unless memory
//! is critical): under a flood that keeps memory low, some clients are still served, not only refused. Sources: RFC 9110 §15.6.4 (503 Service Unavailable), §10.2.3 (Retry-After), RFC 9112 §9.6
//! (`Connection: close`).

use crate::server::Transport;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use libos::mem::pressure::{self, Pressure};
use libos::time::{timeout, Duration};

/// The body of [`RESPONSE`].
pub const BODY: &str = "the server is low on memory; retry shortly\n";

/// The whole answer to a connection refused for lack of memory (its `Content-Length` is [`BODY`]'s length, 43).
pub const RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nServer: zirvium\r\nContent-Type: text/plain\r\n\
Content-Length: 43\r\nRetry-After: 1\r\nConnection: close\r\n\r\nthe server is low on memory; retry shortly\n";

/// Connections served at least, whatever the pressure short of critical: their buffers (~20 KiB each) fit in the
/// margin between the low and the critical level (an eighth of the heap, at least 128 KiB).
pub const MIN_SERVED: u64 = 4;

/// How long [`refuse`] waits for the request before answering anyway.
const REQUEST_WAIT: Duration = Duration::from_secs(1);

static REFUSED: AtomicU64 = AtomicU64::new(0);
static SHEDDING: AtomicBool = AtomicBool::new(false);
/// When (uptime ms) shedding was last logged: at most once a second, as the level may flap under load.
static LOGGED_MS: AtomicU64 = AtomicU64::new(0);

/// Connections answered 503 for lack of memory since boot.
pub fn refused() -> u64 {
    REFUSED.load(Ordering::Relaxed)
}

/// Whether a new connection should be refused now, with `serving` connections being served: memory
/// [`Pressure::Low`] or worse, unless fewer than [`MIN_SERVED`] are served and memory is not critical. Logs when
/// shedding starts and stops.
pub fn should_refuse(serving: u64) -> bool {
    let level = pressure::current();
    let low = level >= Pressure::Low;
    let now_ms = libos::time::uptime_ns() / 1_000_000;
    if SHEDDING.swap(low, Ordering::Relaxed) != low && now_ms >= LOGGED_MS.load(Ordering::Relaxed) + 1000 {
        LOGGED_MS.store(now_ms, Ordering::Relaxed);
        if low {
            log::warn!(
                "memory low: answering new connections 503 until memory is freed ({} refused so far)",
                refused()
            );
        } else {
            log::info!("memory recovered: serving new connections again ({} were refused)", refused());
        }
    }
    low && (serving >= MIN_SERVED || level == Pressure::Critical)
}

/// Notes that the stack has no listening socket for want of memory (`net::Error::LowMemory` from accept): logged
/// at most once a second with the heap's figures, as it may last while the heap is fragmented.
pub fn note_no_socket() {
    let now_ms = libos::time::uptime_ns() / 1_000_000;
    if now_ms >= LOGGED_MS.load(Ordering::Relaxed) + 1000 {
        LOGGED_MS.store(now_ms, Ordering::Relaxed);
        let m = libos::mem::balloon::stats();
        log::warn!(
            "no memory for a listening socket ({} of {} heap bytes free): new connections are reset",
            m.free_bytes,
            m.total_bytes
        );
    }
}

/// Reads (the start of) the request, so the answer does not come before it, then writes [`RESPONSE`] and
/// closes. Errors end it quietly: the peer may already be gone.
pub async fn refuse<T: Transport>(mut stream: T) {
    REFUSED.fetch_add(1, Ordering::Relaxed);
    let mut request = [0u8; 512];
    let _ = timeout(REQUEST_WAIT, stream.read(&mut request)).await;
    if stream.write_all(RESPONSE).await.is_ok() {
        let _ = stream.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::parse_responses;

    #[test]
    fn a_few_connections_are_served_short_of_critical() {
        pressure::simulate(Pressure::Normal);
        assert!(!should_refuse(100));
        pressure::simulate(Pressure::Low);
        assert!(!should_refuse(0) && !should_refuse(MIN_SERVED - 1));
        assert!(should_refuse(MIN_SERVED));
        pressure::simulate(Pressure::Critical);
        assert!(should_refuse(0));
        pressure::simulate(Pressure::Normal);
    }

    #[test]
    fn the_response_is_a_closing_503_with_its_length() {
        let r = parse_responses(RESPONSE, &[]);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].status, 503);
        assert_eq!(r[0].header("connection"), Some("close"));
        assert_eq!(r[0].header("retry-after"), Some("1"));
        assert_eq!(r[0].header("content-length"), Some(BODY.len().to_string().as_str()));
        assert_eq!(r[0].body, BODY.as_bytes());
    }
}
