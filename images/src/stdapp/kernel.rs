//! The kernel half of a std image: `zirvium-hermit` (libos, every platform, net, fs, the boot path and the
//! Hermit ABI) built as a static library for `x86_64-unknown-none`, linked into one relocatable object
//! (`ld -r --whole-archive`) whose only global symbols are the `sys_*` ABI and the PVH entry
//! (`objcopy --keep-global-symbols`). The kernel's own core, alloc, compiler_builtins and panic handler then stay
//! local and cannot clash with the program's — the way Hermit links its kernel into applications.
//! Also the tiny object that carries the app's name (`zirvium_std_app_name`).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::StdError;
use crate::cargo::{
    cargo_command, ensure_target, kernel_config, run_with_messages, workspace_root, BuildError, Profile, KERNEL_TARGET,
    REPLACING_RUSTFLAGS_ENV,
};
use crate::shell::shell_line;

/// The kernel crate of std images.
pub const KERNEL_PACKAGE: &str = "zirvium-hermit";
/// The symbol the PVH loader enters (`libos/zirvium.ld`'s `ENTRY`).
pub const ENTRY: &str = "pvh_start32";

/// A linked kernel object and a hash of its bytes (std apps are relinked when it changes).
#[derive(Debug, Clone)]
pub struct KernelObject {
    /// `kernel-std.o`.
    pub path: PathBuf,
    /// Hash of its contents.
    pub hash: u64,
}

/// Runs `cmd`, returning stdout. Errors: [`BuildError`] with stderr.
pub fn run(cmd: &mut Command) -> Result<String, BuildError> {
    let command = shell_line(cmd);
    let out =
        cmd.stdin(Stdio::null()).output().map_err(|source| BuildError::Spawn { command: command.clone(), source })?;
    if !out.status.success() {
        let detail = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        return Err(BuildError::Failed { command, status: out.status, detail });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The symbols to keep global, from `readelf -sW` of the kernel object: defined `GLOBAL`/`WEAK` `sys_*`
/// functions and [`ENTRY`], sorted.
pub fn keep_list(readelf: &str) -> Vec<String> {
    let mut keep: Vec<String> = readelf
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // Num: Value Size Type Bind Vis Ndx Name
            let (bind, ndx, name) = (f.get(4)?, f.get(6)?, f.get(7)?);
            let defined = *ndx != "UND";
            let global = *bind == "GLOBAL" || *bind == "WEAK";
            (defined && global && (name.starts_with("sys_") || *name == ENTRY)).then(|| (*name).to_owned())
        })
        .collect();
    keep.sort();
    keep.dedup();
    keep
}

/// The static library cargo reports for `zirvium_hermit` in its JSON messages, if `line` names it.
fn staticlib_of(line: &str) -> Option<PathBuf> {
    let msg: serde_json::Value = serde_json::from_str(line).ok()?;
    if msg["reason"] != "compiler-artifact" || msg["target"]["name"] != "zirvium_hermit" {
        return None;
    }
    msg["filenames"].as_array()?.iter().filter_map(|f| f.as_str()).find(|f| f.ends_with(".a")).map(PathBuf::from)
}

/// Builds the static library of this checkout (with `initrd` embedded, as `ZIRVIUM_INITRD`) and returns its path.
fn build_staticlib(profile: Profile, initrd: Option<&Path>) -> Result<PathBuf, BuildError> {
    ensure_target()?;
    let mut cmd = cargo_command(&workspace_root());
    cmd.args(["build", "-p", KERNEL_PACKAGE, "--target", KERNEL_TARGET]);
    if profile == Profile::Release {
        cmd.arg("--release");
    }
    // The kernel target's flags, as every kernel build gets them (crate::cargo::KERNEL_RUSTFLAGS).
    cmd.args(["--config", &kernel_config()]);
    for var in REPLACING_RUSTFLAGS_ENV {
        cmd.env_remove(var);
    }
    let initrd = match initrd {
        Some(p) => std::path::absolute(p).map_err(|source| BuildError::Image { path: p.to_owned(), source })?,
        None => PathBuf::new(),
    };
    cmd.env("ZIRVIUM_INITRD", &initrd);
    let mut lib = None;
    let command = run_with_messages(cmd, &mut |line| lib = staticlib_of(line).or(lib.take()))?;
    lib.ok_or(BuildError::NoExecutable { command, app: KERNEL_PACKAGE.to_owned() })
}

fn hash_file(path: &Path) -> Result<u64, StdError> {
    let bytes = std::fs::read(path).map_err(|source| StdError::Io { path: path.to_owned(), source })?;
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    Ok(h.finish())
}

/// Builds the kernel object into `out_dir` (`kernel-std.o`, with `kernel.o` and `keep.txt` next to it).
/// Errors: the build, `ld`, `readelf`, `objcopy`.
pub fn build(profile: Profile, initrd: Option<&Path>, out_dir: &Path) -> Result<KernelObject, StdError> {
    let lib = build_staticlib(profile, initrd)?;
    std::fs::create_dir_all(out_dir).map_err(|source| StdError::Io { path: out_dir.to_owned(), source })?;
    let whole = out_dir.join("kernel.o");
    run(Command::new("ld").arg("-r").arg("--whole-archive").arg(&lib).arg("-o").arg(&whole))?;
    let symbols = run(Command::new("readelf").arg("-sW").arg(&whole))?;
    let keep = keep_list(&symbols);
    if !keep.iter().any(|s| s == ENTRY) || !keep.iter().any(|s| s == "sys_write") {
        return Err(StdError::KernelSymbols { object: whole, found: keep.len() });
    }
    let keep_file = out_dir.join("keep.txt");
    std::fs::write(&keep_file, keep.join("\n") + "\n")
        .map_err(|source| StdError::Io { path: keep_file.clone(), source })?;
    let path = out_dir.join("kernel-std.o");
    run(Command::new("objcopy").arg(format!("--keep-global-symbols={}", keep_file.display())).arg(&whole).arg(&path))?;
    let hash = hash_file(&path)?;
    Ok(KernelObject { path, hash })
}

/// Assembler source of the app-name object: `zirvium_std_app_name`, NUL-terminated, in `.rodata`.
pub fn name_source(name: &str) -> String {
    let escaped: String = name.chars().filter(|c| c.is_ascii_graphic() && *c != '"' && *c != '\\').collect();
    format!(".section .rodata.zirvium_std_app_name,\"a\"\n.global zirvium_std_app_name\nzirvium_std_app_name:\n.asciz \"{escaped}\"\n")
}

/// Assembles the app-name object `out_dir/NAME.name.o`.
pub fn name_object(name: &str, out_dir: &Path) -> Result<PathBuf, StdError> {
    let src = out_dir.join(format!("{name}.name.s"));
    std::fs::write(&src, name_source(name)).map_err(|source| StdError::Io { path: src.clone(), source })?;
    let obj = src.with_extension("o");
    run(Command::new("as").arg("-o").arg(&obj).arg(&src))?;
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_the_abi_and_the_entry() {
        let readelf = "\
Symbol table '.symtab' contains 5 entries:
   Num:    Value          Size Type    Bind   Vis      Ndx Name
     1: 0000000000000000    10 FUNC    GLOBAL DEFAULT    3 sys_write
     2: 0000000000000000    10 FUNC    GLOBAL DEFAULT    3 memcpy
     3: 0000000000000000     0 NOTYPE  GLOBAL DEFAULT  UND runtime_entry
     4: 0000000000000000    10 FUNC    WEAK   DEFAULT    3 sys_alloc
     5: 0000000000000000     0 NOTYPE  GLOBAL DEFAULT    1 pvh_start32
     6: 0000000000000000    10 FUNC    LOCAL  DEFAULT    3 sys_local
     7: 0000000000000000    10 FUNC    GLOBAL DEFAULT    3 sys_write
";
        assert_eq!(keep_list(readelf), ["pvh_start32", "sys_alloc", "sys_write"]);
    }

    #[test]
    fn app_name_source_is_plain() {
        let s = name_source("my-app\"; x");
        assert!(s.contains(".asciz \"my-app;x\""), "{s}");
        assert!(s.contains(".global zirvium_std_app_name"));
    }

    #[test]
    fn finds_the_staticlib_in_cargo_messages() {
        let m = r#"{"reason":"compiler-artifact","target":{"name":"zirvium_hermit"},"filenames":["/t/libzirvium_hermit.rlib","/t/libzirvium_hermit.a"]}"#;
        assert_eq!(staticlib_of(m), Some(PathBuf::from("/t/libzirvium_hermit.a")));
        assert_eq!(
            staticlib_of(r#"{"reason":"compiler-artifact","target":{"name":"libos"},"filenames":["/t/x.a"]}"#),
            None
        );
    }
}
