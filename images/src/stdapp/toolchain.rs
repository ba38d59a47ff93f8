//! The pinned nightly that std images are built with (`libos/hermit/std-toolchain.toml`): found, or installed
//! with rustup together with `rust-src` (which `-Zbuild-std` compiles), saying so. When rustup's plain `nightly`
//! is that same dated build, it is used rather than downloaded again under its dated name.

use std::path::Path;
use std::process::Command;

use crate::cargo::BuildError;
use crate::host_tools::find_in_path;
use crate::shell::shell_line;

/// The pin file, relative to the workspace root.
pub const PIN_FILE: &str = "libos/hermit/std-toolchain.toml";

/// Errors of [`ensure`].
#[derive(Debug, thiserror::Error)]
pub enum ToolchainError {
    /// The pin file is unreadable or has no `channel = "..."`.
    #[error("{path}: {what}")]
    Pin {
        /// The file.
        path: String,
        /// What is wrong.
        what: String,
    },
    /// rustup is not installed.
    #[error("std images need rustup to install the pinned nightly {0}; install rustup (https://rustup.rs), then run: rustup toolchain install {0} --component rust-src")]
    NoRustup(String),
    /// A rustup command failed.
    #[error(transparent)]
    Rustup(#[from] BuildError),
}

/// The `channel` value of a rust-toolchain file.
pub fn parse_channel(toml: &str) -> Option<String> {
    toml.lines().find_map(|l| {
        let v = l.trim().strip_prefix("channel")?.trim().strip_prefix('=')?.trim();
        Some(v.trim_matches('"').to_owned()).filter(|c| !c.is_empty())
    })
}

/// Which installed toolchain serves `channel` (e.g. `nightly-2026-05-20`), from `rustup toolchain list`:
/// the dated one itself, else `nightly` when `nightly_date` (the date in plain nightly's channel manifest) is
/// the pinned date. `None`: it must be installed.
pub fn pick(list: &str, channel: &str, nightly_date: Option<&str>) -> Option<String> {
    let names: Vec<&str> = list.lines().filter_map(|l| l.split_whitespace().next()).collect();
    if names.iter().any(|n| *n == channel || n.starts_with(&format!("{channel}-"))) {
        return Some(channel.to_owned());
    }
    let date = channel.strip_prefix("nightly-")?;
    let has_nightly =
        names.iter().any(|n| *n == "nightly" || n.starts_with("nightly-x86_64") || n.starts_with("nightly-aarch64"));
    (has_nightly && nightly_date == Some(date)).then(|| "nightly".to_owned())
}

/// The `date = "..."` of a channel manifest.
pub fn manifest_date(manifest: &str) -> Option<String> {
    manifest.lines().find_map(|l| Some(l.strip_prefix("date = ")?.trim_matches('"').to_owned()))
}

fn run(cmd: &mut Command) -> Result<String, BuildError> {
    let command = shell_line(cmd);
    let out = cmd.output().map_err(|source| BuildError::Spawn { command: command.clone(), source })?;
    if !out.status.success() {
        let detail = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        return Err(BuildError::Failed { command, status: out.status, detail });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn rustup() -> Command {
    let mut c = Command::new("rustup");
    // Whatever toolchain the caller runs under (the workspace's stable) must not leak into these commands.
    c.env_remove("RUSTUP_TOOLCHAIN");
    c
}

/// The toolchain name to run std builds with (`rustup run NAME cargo ...`), installing the pinned nightly and
/// `rust-src` when missing; `progress` hears what is installed. Errors: [`ToolchainError`].
pub fn ensure(workspace: &Path, progress: &mut dyn FnMut(&str)) -> Result<String, ToolchainError> {
    let pin = workspace.join(PIN_FILE);
    let text = std::fs::read_to_string(&pin)
        .map_err(|e| ToolchainError::Pin { path: pin.display().to_string(), what: e.to_string() })?;
    let channel = parse_channel(&text).ok_or_else(|| ToolchainError::Pin {
        path: pin.display().to_string(),
        what: "no `channel = \"...\"` line".into(),
    })?;
    if find_in_path("rustup").is_none() {
        return Err(ToolchainError::NoRustup(channel));
    }
    let list = run(rustup().args(["toolchain", "list"]))?;
    let nightly_date = run(rustup().args(["run", "nightly", "rustc", "--print", "sysroot"]))
        .ok()
        .and_then(|root| {
            std::fs::read_to_string(Path::new(root.trim()).join("lib/rustlib/multirust-channel-manifest.toml")).ok()
        })
        .and_then(|m| manifest_date(&m));
    let name = match pick(&list, &channel, nightly_date.as_deref()) {
        Some(n) => {
            if n != channel {
                progress(&format!("using rustup's `{n}` for the pinned {channel} (the same build)"));
            }
            n
        }
        None => {
            progress(&format!(
                "std images need {channel}; running: rustup toolchain install {channel} --profile minimal --component rust-src"
            ));
            run(rustup().args(["toolchain", "install", &channel, "--profile", "minimal", "--component", "rust-src"]))?;
            channel.clone()
        }
    };
    let components = run(rustup().args(["component", "list", "--installed", "--toolchain", &name]))?;
    if !components.lines().any(|l| l.starts_with("rust-src")) {
        progress(&format!("running: rustup component add rust-src --toolchain {name}"));
        run(rustup().args(["component", "add", "rust-src", "--toolchain", &name]))?;
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_pin() {
        assert_eq!(parse_channel("[toolchain]\nchannel = \"nightly-2026-05-20\"\n"), Some("nightly-2026-05-20".into()));
        assert_eq!(parse_channel("[toolchain]\n"), None);
        let ws = crate::cargo::workspace_root();
        let pinned = parse_channel(&std::fs::read_to_string(ws.join(PIN_FILE)).unwrap()).unwrap();
        assert!(pinned.starts_with("nightly-"), "{pinned}");
    }

    #[test]
    fn picks_dated_then_same_plain_nightly() {
        let list = "stable-x86_64-unknown-linux-gnu (active, default)\nnightly-x86_64-unknown-linux-gnu\n";
        assert_eq!(pick(list, "nightly-2026-05-20", Some("2026-05-20")), Some("nightly".into()));
        assert_eq!(pick(list, "nightly-2026-05-20", Some("2026-05-21")), None, "another nightly: install");
        let dated = "nightly-2026-05-20-x86_64-unknown-linux-gnu\n";
        assert_eq!(pick(dated, "nightly-2026-05-20", None), Some("nightly-2026-05-20".into()));
        assert_eq!(pick("stable-x86_64-unknown-linux-gnu\n", "nightly-2026-05-20", Some("2026-05-20")), None);
        assert_eq!(manifest_date("manifest-version = \"2\"\ndate = \"2026-05-20\"\n"), Some("2026-05-20".into()));
    }
}
