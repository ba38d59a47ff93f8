//! Rust std programs as Zirvium images (built by `images::stdapp` from `tests/std-apps/`, x86_64-unknown-hermit
//! on the pinned nightly), booted under QEMU TCG — std code uses SSE, which this machine's nested KVM cannot
//! execute (TESTING.md) — and driven from the host:
//!
//! - `std-hello` (ours): args and env from the command line, threads with Mutex/Condvar, sleep, files, the exit
//!   status.
//! - tiny_http's published `hello-world` example, unmodified (std::net::TcpListener, a std::thread per
//!   connection): 24 connections open at once, 24 requests in flight together.
//! - rust-ini's published `test` example, unmodified (std::fs write and read of `test.ini` under `cwd=/data`, the
//!   FAT disk), then — after power-off — tiny_http's `serve-root` example, unmodified, reading that file back
//!   over HTTP from the same disk, and a static file from the initrd.
//! - axum's README example, unmodified, on tokio's multi-threaded runtime: `GET /`, `POST /users` with JSON,
//!   32 connections open at once, 32 requests in flight together.
//! - `std-tests` (ours): a crate's `#[test]`s run in the VM as a libtest harness (`images run --test`), with
//!   cargo's `test result:` line and exit status 0.

use std::path::{Path, PathBuf};
use std::time::Duration;
use zirvium_tests::http::{concurrent_gets, get, request, Response};
use zirvium_tests::{Accel, Protocol, Vm, VmError};

/// A std app's crate directory, relative to the workspace root.
fn std_app(name: &str) -> String {
    format!("tests/std-apps/{name}")
}

/// A fresh working directory under target/test-data/std/.
fn workdir(test: &str) -> PathBuf {
    let d = images::cargo::target_dir().join("test-data").join("std").join(test);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("creating the test's work directory");
    d
}

fn io<T>(vm: &Vm, what: &str, r: std::io::Result<T>) -> Result<T, VmError> {
    r.map_err(|e| {
        let _ = vm.ensure(false, format_args!("{what}: {e}"));
        VmError::Io { what: format!("{}: {what}", vm.name()), source: e }
    })
}

/// `n` connections open at once with a `GET path` in flight on each together ([`concurrent_gets`]); checks
/// every status is 200 and returns the bodies.
fn concurrent(vm: &Vm, port: u16, n: usize, path: &str) -> Result<Vec<String>, VmError> {
    let responses = io(vm, "concurrent requests", concurrent_gets(port, n, path))?;
    for (i, r) in responses.iter().enumerate() {
        vm.ensure(r.status == 200, format_args!("concurrent request {i}: status {}", r.status))?;
    }
    Ok(responses.iter().map(Response::text).collect())
}

#[test]
fn std_hello_args_env_threads_files_exit_status_tcg() -> Result<(), VmError> {
    let vm = Vm::builder("std_hello_args_env_threads_files_exit_status_tcg", &std_app("std-hello"), Accel::Tcg)
        .kernel_option("env", "GREETING=hi")
        .args(["a", "b"])
        .boot()?;
    vm.wait_for(r#"std-hello: args ["std-hello", "a", "b"]"#)?;
    vm.wait_for(r#"std-hello: GREETING=Some("hi")"#)?;
    vm.wait_for("std-hello: 4 threads counted to 4000")?;
    vm.wait_for("std-hello: slept 20 ms")?;
    vm.wait_for(r#"std-hello: /tmp holds ["note.txt"] with "written by std""#)?;
    vm.wait_for("std-hello: done")?;
    vm.expect_exit(7)
}

#[test]
fn tiny_http_thread_per_connection_serves_concurrent_clients_tcg() -> Result<(), VmError> {
    let vm = Vm::builder(
        "tiny_http_thread_per_connection_serves_concurrent_clients_tcg",
        &std_app("tiny-http-hello"),
        Accel::Tcg,
    )
    .forward(Protocol::Tcp, 9975)
    .boot()?;
    vm.wait_for("Now listening on port 9975")?;
    let port = vm.host_port(Protocol::Tcp, 9975)?;
    let first = io(&vm, "GET /", get(port, "/"))?;
    vm.ensure(
        first.status == 200 && first.text() == "hello world",
        format_args!("GET /: {} {:?}", first.status, first.text()),
    )?;
    let bodies = concurrent(&vm, port, 24, "/")?;
    vm.ensure(bodies.iter().all(|b| b == "hello world"), format_args!("bodies {bodies:?}"))?;
    zirvium_tests::note(format_args!("tiny_http: 24 concurrent connections answered"));
    Ok(())
}

/// The INI text rust-ini's example writes (its `[User]` section).
const INI_USER: &str = "[User]\nname=Raspberry树莓\nvalue=Pi\n";

#[test]
fn std_fs_on_data_survives_a_reboot_tcg() -> Result<(), VmError> {
    let dir = workdir("std_fs_on_data_survives_a_reboot_tcg");
    let disk = dir.join("disk.img");
    images::disk::create(&disk, 40 << 20, None, true).expect("creating the disk image");
    // Boot 1: the unmodified rust-ini example writes test.ini in its working directory, /data, and reads it back.
    let vm = Vm::builder("std_fs_write_tcg", &std_app("ini-example"), Accel::Tcg)
        .disk(&disk)
        .kernel_option("cwd", "/data")
        .boot()?;
    vm.wait_for("Writing to file \"test.ini\"")?;
    vm.wait_for("Reading from file \"test.ini\"")?;
    vm.wait_for("name=Raspberry树莓")?;
    vm.expect_exit(0)?;
    drop(vm);
    let on_disk = read_fat_file(&disk, "test.ini");
    assert!(
        on_disk.as_deref().is_ok_and(|t| t.contains(INI_USER)),
        "test.ini on the disk after power-off: {on_disk:?}"
    );

    // Boot 2: tiny_http's serve-root example reads it back with std::fs, and a static file from the initrd.
    let www = dir.join("www");
    std::fs::create_dir_all(&www).expect("creating the initrd directory");
    std::fs::write(www.join("index.html"), "<h1>static from the initrd</h1>\n").expect("writing index.html");
    let vm = Vm::builder("std_fs_read_back_tcg", &std_app("tiny-http-serve-root"), Accel::Tcg)
        .disk(&disk)
        .initrd(&www)
        .forward(Protocol::Tcp, 8000)
        .boot()?;
    vm.wait_for("Now listening on port 8000")?;
    let port = vm.host_port(Protocol::Tcp, 8000)?;
    let ini = io(&vm, "GET /data/test.ini", get(port, "/data/test.ini"))?;
    vm.ensure(
        ini.status == 200 && ini.text().contains(INI_USER),
        format_args!("GET /data/test.ini: {} {:?}", ini.status, ini.text()),
    )?;
    let page = io(&vm, "GET /index.html", get(port, "/index.html"))?;
    vm.ensure(page.text() == "<h1>static from the initrd</h1>\n", format_args!("GET /index.html: {:?}", page.text()))?;
    vm.ensure(
        page.header("content-type").is_some_and(|t| t.starts_with("text/html")),
        format_args!("{:?}", page.headers),
    )?;
    let missing = io(&vm, "GET /nope", get(port, "/nope"))?;
    vm.ensure(missing.status == 404, format_args!("GET /nope: {}", missing.status))
}

/// The file `name` in the root directory of the FAT image `disk`, as text.
fn read_fat_file(disk: &Path, name: &str) -> Result<String, String> {
    use std::io::Read;
    let img = std::fs::File::open(disk).map_err(|e| e.to_string())?;
    let fs = fatfs::FileSystem::new(img, fatfs::FsOptions::new()).map_err(|e| e.to_string())?;
    let mut f = fs.root_dir().open_file(name).map_err(|e| format!("{name}: {e}"))?;
    let mut text = String::new();
    f.read_to_string(&mut text).map_err(|e| e.to_string())?;
    Ok(text)
}

/// `tests/std-apps/tokio/prepare.sh`: tokio 1.54.1 with the Hermit patch (see its README).
fn prepare_tokio() -> Result<(), VmError> {
    let script = images::cargo::workspace_root().join("tests/std-apps/tokio/prepare.sh");
    let out = std::process::Command::new("sh")
        .arg(&script)
        .output()
        .map_err(|source| VmError::Io { what: format!("running {}", script.display()), source })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        return Err(VmError::Build { app: "tokio (prepare.sh)".into(), message: err });
    }
    Ok(())
}

#[test]
fn axum_on_tokio_serves_routes_and_json_tcg() -> Result<(), VmError> {
    prepare_tokio()?;
    let vm = Vm::builder("axum_on_tokio_serves_routes_and_json_tcg", &std_app("tokio/axum-readme"), Accel::Tcg)
        .forward(Protocol::Tcp, 3000)
        .timeout(Duration::from_secs(120))
        .boot()?;
    vm.wait_for("std: starting axum-readme")?;
    let port = vm.host_port(Protocol::Tcp, 3000)?;
    // The listener exists once the program has run its first lines; retry the first request briefly.
    let mut root = get(port, "/");
    for _ in 0..50 {
        if root.is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        root = get(port, "/");
    }
    let root = io(&vm, "GET /", root)?;
    vm.ensure(
        root.status == 200 && root.text() == "Hello, World!",
        format_args!("GET /: {} {:?}", root.status, root.text()),
    )?;
    let body = br#"{"username":"zirvium"}"#;
    let user = io(&vm, "POST /users", request(port, "POST", "/users", &[("Content-Type", "application/json")], body))?;
    vm.ensure(user.status == 201, format_args!("POST /users: status {}", user.status))?;
    vm.ensure(user.header("content-type") == Some("application/json"), format_args!("{:?}", user.headers))?;
    vm.ensure(user.text() == r#"{"id":1337,"username":"zirvium"}"#, format_args!("POST /users: {:?}", user.text()))?;
    let bad = io(
        &vm,
        "POST /users (not JSON)",
        request(port, "POST", "/users", &[("Content-Type", "application/json")], b"{"),
    )?;
    vm.ensure(bad.status == 400, format_args!("malformed JSON: status {}", bad.status))?;
    let bodies = concurrent(&vm, port, 32, "/")?;
    vm.ensure(bodies.iter().all(|b| b == "Hello, World!"), format_args!("bodies {bodies:?}"))?;
    zirvium_tests::note(format_args!("axum: 32 concurrent connections answered"));
    Ok(())
}

#[test]
fn libtest_harness_runs_in_the_vm_tcg() -> Result<(), VmError> {
    let app = std_app("std-tests");
    let kernel = zirvium_tests::test_image(&app)?;
    let vm = Vm::builder("libtest_harness_runs_in_the_vm_tcg", &app, Accel::Tcg)
        .kernel(kernel)
        .args(images::stdapp::TEST_HARNESS_ARGS)
        .boot()?;
    let result = vm.wait_for("test result:")?;
    vm.ensure(result.contains("test result: ok. 4 passed; 0 failed"), format_args!("libtest said {result:?}"))?;
    vm.line_with("test tests::threads_and_channels ... ok")?;
    vm.expect_exit(0)
}
