//! `httpd` as a library: the sans-I/O HTTP/1.1 core ([`http`], RFC 9110/9112) with a [`http::Handler`] hook
//! for app routes, static files with media types and byte ranges ([`files`], RFC 9110 §14), and the glue every
//! HTTP appliance shares ([`server`]: arguments, accept loop, connection driver; [`vfs`]: `zirvium::fs` as a
//! file tree). The `httpd` binary serves the initrd with it; `kv` stores values on `/data` with it.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod files;
pub mod http;
pub mod server;
pub mod vfs;
