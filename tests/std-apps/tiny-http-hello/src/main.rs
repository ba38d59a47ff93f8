//! tiny_http's `examples/hello-world.rs` as published in tiny_http 0.12.0 on crates.io, compiled unmodified:
//! a `std::net::TcpListener` server answering `hello world` on port 9975 from four `std::thread` workers
//! (tiny_http runs each connection on a thread of its own pool).
include!(env!("UPSTREAM_EXAMPLE"));
