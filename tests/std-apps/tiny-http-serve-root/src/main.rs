//! tiny_http's `examples/serve-root.rs` as published in tiny_http 0.12.0 on crates.io, compiled unmodified: an
//! HTTP server on port 8000 that answers `GET /PATH` with the file `/PATH` read through `std::fs` (on Zirvium:
//! the initrd at `/`, `/tmp`, the disk at `/data`), 404 otherwise.
include!(env!("UPSTREAM_EXAMPLE"));
