//! `images`: build Zirvium app images and boot them under QEMU. See `images --help` and the crate docs of
//! [`images::cli`] for the commands and exit codes.

fn main() -> std::process::ExitCode {
    images::cli::main()
}
