//! `kv`: a key-value appliance over HTTP/1.1. `GET`/`PUT`/`DELETE /kv/<key>` keep each value as a file on
//! `/data` (the FAT filesystem of the first virtio-blk disk); a PUT is answered only once the value is durable
//! and is all-or-nothing across a VM kill (see [`store`]). `GET /kv/` lists the keys; `/`, `/health` and
//! `/bytes/N` are the demo routes every appliance serves ([`zirvium_http::demo`]).
//!
//! App arguments (`key=value`, after `--` on the kernel command line): the shared ones (see
//! [`zirvium_http::settings`]: `port=80`, `message=TEXT`, `max_connections=1024`, `backlog=8`,
//! `idle_timeout_ms=30000`, `header_timeout_ms=20000`) and `max_value_bytes=1048576`, the largest value (413 beyond; it is also the request
//! body limit).
//!
//! Without a writable `/data` (no disk, or a disk without FAT) kv logs an error and exits with status 1.
#![cfg_attr(target_os = "none", no_std, no_main)]

extern crate alloc;

mod store;

use alloc::boxed::Box;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use store::{Kv, Store, StoreError};
use zirvium::{fs, log};
use zirvium_http::demo::Demo;
use zirvium_http::files::FileReader;
use zirvium_http::vfs::Reader;
use zirvium_http::{ArgError, Settings};

zirvium::app!(run);

/// Where the values live.
const DATA: &str = "/data";

/// Default largest value, bytes.
const DEFAULT_MAX_VALUE_BYTES: u64 = 1024 * 1024;

/// The directory [`DATA`] through `zirvium::fs`.
struct DataDir;

impl DataDir {
    fn path(name: &str) -> String {
        format!("{DATA}/{name}")
    }
}

fn store_error(e: fs::Error) -> StoreError {
    match e {
        fs::Error::NotFound => StoreError::NotFound,
        fs::Error::NoSpace => StoreError::NoSpace,
        fs::Error::IsADirectory => StoreError::IsADirectory,
        e => StoreError::Other(e.to_string()),
    }
}

impl Store for DataDir {
    fn open(&self, name: &str) -> Result<(u64, Box<dyn FileReader>), StoreError> {
        let reader = Reader::open(&Self::path(name)).map_err(store_error)?;
        let len = reader.size().map_err(store_error)?;
        Ok((len, Box::new(reader)))
    }

    fn write_synced(&self, name: &str, data: &[u8]) -> Result<(), StoreError> {
        let mut file = fs::File::create(Self::path(name)).map_err(store_error)?;
        file.write_all(data).map_err(store_error)?;
        file.sync_all().map_err(store_error)
    }

    fn remove(&self, name: &str) -> Result<(), StoreError> {
        fs::remove_file(Self::path(name)).map_err(store_error)
    }

    fn rename(&self, from: &str, to: &str) -> Result<(), StoreError> {
        fs::rename(Self::path(from), Self::path(to)).map_err(store_error)
    }

    fn sync(&self) -> Result<(), StoreError> {
        fs::sync().map_err(store_error)
    }

    fn list(&self) -> Result<Vec<String>, StoreError> {
        let mut names = Vec::new();
        for entry in fs::read_dir(DATA).map_err(store_error)? {
            let entry = entry.map_err(store_error)?;
            if entry.file_type().map_err(store_error)?.is_file() {
                names.push(String::from(entry.file_name()));
            }
        }
        Ok(names)
    }
}

/// Checks that [`DATA`] is a writable directory (a mounted disk). Errors: what to do about it.
fn check_data() -> Result<(), ArgError> {
    let how = "attach a FAT disk: `images disk create FILE --size 64M`, then `images run kv --disk FILE`";
    match fs::metadata(DATA) {
        Ok(m) if m.is_dir() && !m.read_only() => Ok(()),
        Ok(_) => Err(ArgError(format!("kv: {DATA} is read-only, not a mounted disk; {how}"))),
        Err(fs::Error::NotFound) => Err(ArgError(format!("kv: {DATA} is not mounted; {how}"))),
        Err(e) => Err(ArgError(format!("kv: {DATA}: {e}; {how}"))),
    }
}

/// Logs the keys and the free space on [`DATA`].
fn log_space(kv: &Kv<DataDir>) {
    let keys = store::keys(kv.store()).map_or_else(|e| format!("? ({e})"), |k| k.len().to_string());
    match fs::stats(DATA) {
        Ok(s) => log::info!(
            "kv: {DATA}: {keys} keys, {} free of {}",
            fs::human_bytes(s.free_bytes),
            fs::human_bytes(s.total_bytes)
        ),
        Err(e) => log::warn!("kv: {DATA}: {keys} keys; free space unknown: {e}"),
    }
}

async fn run() -> Result<(), ArgError> {
    let mut max_value = DEFAULT_MAX_VALUE_BYTES;
    let defaults = Settings::new("Zirvium key-value store: GET, PUT and DELETE /kv/<key>; GET /kv/ lists the keys.");
    let mut settings = zirvium_http::parse_args("kv", defaults, zirvium::env::args(), "max_value_bytes", |_, k, v| {
        match k {
            "max_value_bytes" => max_value = zirvium_http::parse_number("kv", k, v)?,
            "max_body_bytes" => return Err(ArgError(String::from("kv: use max_value_bytes to limit request bodies"))),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    settings.http.max_body_bytes = max_value;
    if let Err(e) = check_data() {
        log::error!("{e}");
        return Err(e);
    }
    let kv = Kv::new(DataDir, max_value);
    match store::recover(kv.store()) {
        Ok(0) => {}
        Ok(n) => log::info!("kv: removed {n} temporary files of interrupted PUTs"),
        Err(e) => {
            let e = ArgError(format!("kv: removing temporary files from {DATA}: {e}"));
            log::error!("{e}");
            return Err(e);
        }
    }
    log_space(&kv);
    let handler: &'static Demo<Kv<DataDir>> = Box::leak(Box::new(Demo::new(settings.message.clone(), kv)));
    zirvium_http::run("kv", settings, handler).await
}

/// [`DataDir`] through `zirvium::fs` on the real FAT backend, over a disk in memory with a volatile write cache
/// (what was not flushed is lost at a power cut).
#[cfg(test)]
mod tests {
    use super::*;
    use ::fs::memdisk::MemDisk;
    use alloc::sync::Arc;
    use std::sync::atomic::Ordering;
    use std::sync::Mutex;
    use zirvium_http::{Content, Handler, Request, Response, Status};

    /// The tests share the global mount table: one at a time.
    static VFS_LOCK: Mutex<()> = Mutex::new(());

    /// Runs `f` with `disk`'s FAT mounted at /data, then unmounts it (power restored first so that works).
    fn with_data<T>(disk: &Arc<MemDisk>, f: impl FnOnce() -> T) -> T {
        let fat = ::fs::FatFs::mount(disk.clone()).expect("mounting the FAT disk");
        ::fs::vfs().mount(DATA, Arc::new(fat)).unwrap();
        let out = f();
        disk.budget.store(u64::MAX, Ordering::SeqCst);
        ::fs::vfs().unmount(DATA).expect("unmounting /data");
        out
    }

    fn call(kv: &Kv<DataDir>, method: &str, path: &str, body: &[u8]) -> Response {
        let head = Request { method, path, query: None, headers: &[], body: &[] };
        kv.check(&head).unwrap_or_else(|| kv.respond(&Request { body, ..head }))
    }

    fn get(key: &str) -> Option<Vec<u8>> {
        let (len, mut reader) = match DataDir.open(&store::file_name(key)) {
            Ok(x) => x,
            Err(StoreError::NotFound) => return None,
            Err(e) => panic!("GET {key}: {e}"),
        };
        let mut value = vec![0u8; len as usize];
        let mut at = 0;
        while at < value.len() {
            let n = reader.read(&mut value[at..]).unwrap();
            assert!(n > 0, "{key}: file shorter than its length");
            at += n;
        }
        Some(value)
    }

    fn value(seed: u8, len: usize) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    #[test]
    fn keys_and_values_on_fat() {
        let _lock = VFS_LOCK.lock().unwrap();
        let disk = MemDisk::formatted(8 << 20);
        with_data(&disk, || {
            check_data().unwrap();
            let kv = Kv::new(DataDir, 1 << 20);
            assert_eq!(call(&kv, "PUT", "/kv/key1", &value(1, 5000)).status, Status::CREATED);
            assert_eq!(call(&kv, "PUT", "/kv/Key1", &value(2, 70_000)).status, Status::CREATED, "FAT ignores case");
            assert_eq!(call(&kv, "PUT", "/kv/KEY1", b"three").status, Status::CREATED);
            assert_eq!(call(&kv, "PUT", "/kv/key1", &value(4, 10)).status, Status::NO_CONTENT);
            assert_eq!(get("key1"), Some(value(4, 10)));
            assert_eq!(get("Key1"), Some(value(2, 70_000)));
            assert_eq!(get("KEY1"), Some(b"three".to_vec()));
            assert_eq!(store::keys(&DataDir).unwrap(), ["KEY1", "Key1", "key1"]);
            assert_eq!(call(&kv, "DELETE", "/kv/Key1", b"").status, Status::NO_CONTENT);
            assert_eq!(call(&kv, "GET", "/kv/Key1", b"").status, Status::NOT_FOUND);
            assert_eq!(call(&kv, "DELETE", "/kv/Key1", b"").status, Status::NOT_FOUND);
            let r = call(&kv, "GET", "/kv/", b"");
            assert!(matches!(r.content, Content::Bytes(ref b) if b == b"KEY1\nkey1\n"));
            // A temporary file left by an interrupted PUT is removed at startup and is never a key.
            DataDir.write_synced(&format!("{}key9", store::TEMP_PREFIX), b"torn").unwrap();
            assert_eq!(store::recover(&DataDir), Ok(1));
            assert_eq!(store::keys(&DataDir).unwrap(), ["KEY1", "key1"]);
        });
        // Everything answered is on the disk after a power cut.
        let after = disk.after_power_cut();
        with_data(&after, || {
            assert_eq!(get("key1"), Some(value(4, 10)));
            assert_eq!(get("KEY1"), Some(b"three".to_vec()));
            assert_eq!(get("Key1"), None);
        });
    }

    #[test]
    fn a_full_disk_is_507_and_recovers() {
        let _lock = VFS_LOCK.lock().unwrap();
        let disk = MemDisk::formatted(2 << 20);
        with_data(&disk, || {
            let kv = Kv::new(DataDir, 1 << 20);
            let mut stored = 0;
            let full = loop {
                let r = call(&kv, "PUT", &format!("/kv/fill{stored}"), &value(stored as u8, 200 << 10));
                match r.status {
                    Status::CREATED => stored += 1,
                    status => break status,
                }
                assert!(stored < 20, "a 2 MiB disk never filled");
            };
            assert_eq!(full, Status::INSUFFICIENT_STORAGE);
            assert!(stored >= 5, "only {stored} values of 200 KiB fit 2 MiB");
            let names: Vec<String> = DataDir.list().unwrap();
            assert!(names.iter().all(|n| !n.starts_with(store::TEMP_PREFIX)), "temporary file left: {names:?}");
            assert_eq!(get("fill0"), Some(value(0, 200 << 10)));
            assert_eq!(call(&kv, "DELETE", "/kv/fill0", b"").status, Status::NO_CONTENT);
            assert_eq!(call(&kv, "PUT", "/kv/again", &value(9, 200 << 10)).status, Status::CREATED);
            assert_eq!(get("again"), Some(value(9, 200 << 10)));
        });
    }

    #[test]
    fn a_put_cut_by_power_loss_is_all_or_nothing_on_fat() {
        let _lock = VFS_LOCK.lock().unwrap();
        let base = MemDisk::formatted(4 << 20);
        let old = value(1, 3000);
        let new = value(2, 100_000);
        with_data(&base, || store::put(&DataDir, "k", &old).unwrap());
        let image = base.durable.lock().clone();
        // How many block requests a whole PUT takes.
        let whole = MemDisk::from_image(image.clone(), false);
        let requests = with_data(&whole, || {
            let before = whole.budget.load(Ordering::SeqCst);
            whole.budget.store(u64::MAX - 1_000_000, Ordering::SeqCst);
            assert_eq!(store::put(&DataDir, "k", &new), Ok(store::Put::Replaced));
            let used = u64::MAX - 1_000_000 - whole.budget.load(Ordering::SeqCst);
            whole.budget.store(before, Ordering::SeqCst);
            used
        });
        assert!(requests > 3, "{requests} requests");
        let mut outcomes = [0usize; 3];
        for cut in 0..=requests {
            let disk = MemDisk::from_image(image.clone(), false);
            let answered = with_data(&disk, || {
                disk.budget.store(cut, Ordering::SeqCst);
                store::put(&DataDir, "k", &new).is_ok()
            });
            let after = disk.after_power_cut();
            let got = with_data(&after, || {
                store::recover(&DataDir).unwrap();
                get("k")
            });
            let outcome = match got {
                Some(v) if v == new => 2,
                Some(v) if v == old => 1,
                None => 0,
                Some(v) => panic!("power cut after {cut} of {requests} requests: torn value of {} bytes", v.len()),
            };
            assert!(!answered || outcome == 2, "cut after {cut}: the PUT was answered but its value is lost");
            outcomes[outcome] += 1;
        }
        eprintln!("power cut after 0..={requests} block requests: {outcomes:?} (no value, old, new)");
        assert!(outcomes[1] > 0 && outcomes[2] > 0, "cuts gave none/old/new: {outcomes:?}");
    }
}
