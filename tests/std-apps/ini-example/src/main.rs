//! rust-ini's `examples/test.rs` as published in rust-ini 0.21.3 on crates.io, compiled unmodified: builds an
//! INI document, writes it to `test.ini` (a relative path: on Zirvium under the `cwd=` kernel option, e.g.
//! `/data`, the FAT disk) with `std::fs`, reads it back and prints its sections.
include!(env!("UPSTREAM_EXAMPLE"));
