//! `cargo zirvium`: the `images` commands for a Zirvium app crate anywhere (`cargo install --path images`, then
//! `cargo zirvium new PATH`, `cargo zirvium run`). See [`images::cli`].

fn main() -> std::process::ExitCode {
    // Run as `cargo zirvium ARGS`, cargo calls `cargo-zirvium zirvium ARGS`; run directly, there is no `zirvium`.
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "zirvium") {
        args.remove(1);
    }
    images::cli::main_with(images::cli::Flavor::CargoZirvium, args)
}
