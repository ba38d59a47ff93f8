//! `httpd`: the HTTP/1.1 appliance. The demo routes `/` (HTML), `/health` (JSON), `/bytes/N` (N pattern bytes)
//! ([`zirvium_http::demo`]); every other GET/HEAD path is a file of the read-only initrd mounted at `/`
//! (`/dir/` is `/dir/index.html`; `/tmp` and `/data` are never served), with its media type, `Content-Length`
//! and single byte ranges ([`zirvium_http::files`]). Keep-alive, pipelining, bounded memory per connection,
//! idle connections closed after a timeout ([`zirvium_http::server`]).
//!
//! App arguments (`key=value`, after `--` on the kernel command line): see [`zirvium_http::settings`] —
//! `port=80`, `message=TEXT`, `max_connections=1024`, `backlog=8`, `idle_timeout_ms=30000`,
//! `header_timeout_ms=20000`, `max_body_bytes=1048576`.
#![cfg_attr(target_os = "none", no_std, no_main)]

extern crate alloc;

use alloc::boxed::Box;
use zirvium_http::demo::Demo;
use zirvium_http::files::StaticFiles;
use zirvium_http::vfs::Vfs;
use zirvium_http::{ArgError, Settings};

zirvium::app!(run);

/// Mounts whose files are never served: scratch space and app data (see `zirvium::fs`).
const HIDDEN: [&str; 2] = ["/tmp", "/data"];

async fn run() -> Result<(), ArgError> {
    let defaults = Settings::new("Hello from a Zirvium appliance.");
    let settings = zirvium_http::parse_args("httpd", defaults, zirvium::env::args(), "", |_, _, _| Ok(false))?;
    let files = HIDDEN.iter().fold(StaticFiles::new(Vfs), |files, dir| files.hide(dir));
    let handler: &'static Demo<StaticFiles<Vfs>> = Box::leak(Box::new(Demo::new(settings.message.clone(), files)));
    zirvium_http::run("httpd", settings, handler).await
}
