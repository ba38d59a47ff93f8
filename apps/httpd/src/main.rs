//! `httpd`: the HTTP/1.1 appliance. Built-in routes `/` (HTML), `/health` (JSON), `/bytes/N` (N pattern bytes);
//! every other GET/HEAD path is a file of the read-only initrd mounted at `/` (`/dir/` is `/dir/index.html`;
//! `/tmp` and `/data` are never served), with its media type, `Content-Length` and single byte ranges.
//! Keep-alive, pipelining, bounded memory per connection, idle connections closed after a timeout.
//!
//! App arguments (`key=value`, after `--` on the kernel command line): see [`httpd::server`] — `port=80`,
//! `message=TEXT`, `max_connections=1024`, `backlog=128`, `idle_timeout_ms=30000`, `max_body_bytes=1048576`.
#![cfg_attr(target_os = "none", no_std, no_main)]

extern crate alloc;

use httpd::files::StaticFiles;
use httpd::server::{self, ArgError, Settings};

zirvium::app!(run);

/// Mounts whose files are never served: scratch space and app data (see `zirvium::fs`).
const HIDDEN: [&str; 2] = ["/tmp", "/data"];

async fn run() -> Result<(), ArgError> {
    let defaults = Settings::new("Hello from a Zirvium appliance.");
    let settings = server::parse_args("httpd", defaults, zirvium::env::args(), "", |_, _, _| Ok(false))?;
    let files = HIDDEN.iter().fold(StaticFiles::new(httpd::vfs::Vfs), |files, dir| files.hide(dir));
    let files: &'static StaticFiles<httpd::vfs::Vfs> = alloc::boxed::Box::leak(alloc::boxed::Box::new(files));
    server::run("httpd", settings, files).await
}
