//! Empty: this package only names tokio 1.54.1 for `cargo fetch` (see ../prepare.sh).
