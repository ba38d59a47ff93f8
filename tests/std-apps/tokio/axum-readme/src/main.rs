//! The example of axum's README as published in axum 0.8.9 on crates.io, compiled unmodified: a tokio
//! multi-threaded runtime and axum router on port 3000 with `GET /` (a string) and `POST /users` (JSON in,
//! `201 Created` with JSON out).
include!(concat!(env!("OUT_DIR"), "/readme.rs"));
