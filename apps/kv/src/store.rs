//! The key-value protocol of `kv`, sans I/O: which keys are valid, the file that holds each key's value, the
//! HTTP routes (`/kv/<key>`, `/kv/`) as a [`zirvium_http::Handler`], and the crash-safe PUT, all over a
//! [`Store`] (a directory: `/data` in the image, a map in the tests).
//!
//! A PUT never writes into a key's file. It writes the value to a temporary file, `sync_all`s it (data and
//! metadata on the device, device cache flushed), removes the key's old file, renames the temporary file to the
//! key's name and syncs again; only then does it answer. A VM killed at any point leaves the key with its whole
//! old value, its whole new value, or (killed between the remove and the rename) no value — never a torn one:
//! the only file that can be torn is the temporary one, and [`recover`] removes those at startup.
//!
//! Keys are 1..=64 bytes of `[A-Za-z0-9._-]` not starting with `.`. FAT compares names case-insensitively, so a
//! key's file name marks each capital letter with `^` (`Key` is `^key`): distinct keys never share a file.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use zirvium::log;
use zirvium_http::files::{file_response, FileReader};
use zirvium_http::{Content, Handler, Request, Response, Status};

/// Longest key, bytes.
pub const MAX_KEY_BYTES: usize = 64;

/// Prefix of temporary files (a PUT in progress). Keys cannot start with `.`, so no key's file has it.
pub const TEMP_PREFIX: &str = ".put~";

/// Marks a capital letter in a file name (not a key character, so decoding is unambiguous).
const UPPER_MARK: char = '^';

/// Why a key is refused: 400.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyError {
    /// The key is empty.
    Empty,
    /// The key is longer than [`MAX_KEY_BYTES`].
    TooLong {
        /// Its length, bytes.
        len: usize,
    },
    /// The key starts with `.` (reserved: `.`, `..` and temporary files).
    LeadingDot,
    /// A byte outside `[A-Za-z0-9._-]`.
    BadByte {
        /// The byte.
        byte: u8,
        /// Its offset in the key.
        at: usize,
    },
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const RULE: &str = "keys are 1 to 64 bytes of A-Z a-z 0-9 . _ - and do not start with .";
        match self {
            KeyError::Empty => write!(f, "empty key: {RULE}"),
            KeyError::TooLong { len } => write!(f, "key of {len} bytes is too long: {RULE}"),
            KeyError::LeadingDot => write!(f, "key starts with '.': {RULE}"),
            KeyError::BadByte { byte, at } => {
                write!(f, "byte {:?} at offset {at} is not allowed in a key: {RULE}", char::from(*byte))
            }
        }
    }
}

/// Checks `key` against the key rules (see the module docs).
pub fn check_key(key: &str) -> Result<(), KeyError> {
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(KeyError::TooLong { len: key.len() });
    }
    if key.starts_with('.') {
        return Err(KeyError::LeadingDot);
    }
    match key.bytes().position(|b| !(b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')) {
        Some(at) => Err(KeyError::BadByte { byte: key.as_bytes()[at], at }),
        None => Ok(()),
    }
}

/// The file name holding a valid `key`'s value: the key with each capital letter `X` written `^x`.
pub fn file_name(key: &str) -> String {
    let mut name = String::with_capacity(key.len() + 8);
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            name.push(UPPER_MARK);
            name.push(c.to_ascii_lowercase());
        } else {
            name.push(c);
        }
    }
    name
}

/// The key whose value file is `name`, or `None` when `name` is no key's file (a temporary file, anything else
/// in the directory). Case-insensitive filesystems may report a name in another case, so letters are
/// lower-cased first.
pub fn key_of(name: &str) -> Option<String> {
    let mut key = String::with_capacity(name.len());
    let mut chars = name.chars();
    while let Some(c) = chars.next() {
        if c == UPPER_MARK {
            let next = chars.next()?;
            if !next.is_ascii_alphabetic() {
                return None;
            }
            key.push(next.to_ascii_uppercase());
        } else if c.is_ascii_uppercase() {
            key.push(c.to_ascii_lowercase());
        } else {
            key.push(c);
        }
    }
    check_key(&key).ok()?;
    (file_name(&key).eq_ignore_ascii_case(name)).then_some(key)
}

/// A storage failure the protocol tells apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// No such file.
    NotFound,
    /// The filesystem is full: 507.
    NoSpace,
    /// The name is a directory.
    IsADirectory,
    /// Anything else (device error, ...): 500 with this text.
    Other(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::NotFound => f.write_str("no such file"),
            StoreError::NoSpace => f.write_str("no space left on the filesystem"),
            StoreError::IsADirectory => f.write_str("is a directory"),
            StoreError::Other(detail) => f.write_str(detail),
        }
    }
}

/// One directory of files (names are single path components).
pub trait Store: Sync {
    /// Opens file `name` for reading: its size (bytes) and a reader at position 0.
    fn open(&self, name: &str) -> Result<(u64, Box<dyn FileReader>), StoreError>;

    /// Creates (or truncates) file `name`, writes `data`, and returns once data and metadata are durable on the
    /// device (`File::sync_all`). On an error the file may exist with part of `data`.
    fn write_synced(&self, name: &str, data: &[u8]) -> Result<(), StoreError>;

    /// Removes file `name`.
    fn remove(&self, name: &str) -> Result<(), StoreError>;

    /// Renames file `from` to `to`, which does not exist.
    fn rename(&self, from: &str, to: &str) -> Result<(), StoreError>;

    /// Returns once every change so far (removes, renames) is durable on the device.
    fn sync(&self) -> Result<(), StoreError>;

    /// The names of the regular files in the directory.
    fn list(&self) -> Result<Vec<String>, StoreError>;
}

/// What a completed PUT did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Put {
    /// The key had no value: 201.
    Created,
    /// The key's value was replaced: 204.
    Replaced,
}

/// Stores `value` under valid `key` with the crash-safe protocol of the module docs; returns after the final
/// sync. On an error the temporary file is removed (best effort) and the server goes on.
pub fn put(store: &dyn Store, key: &str, value: &[u8]) -> Result<Put, StoreError> {
    let name = file_name(key);
    let temp = format!("{TEMP_PREFIX}{name}");
    let result = (|| {
        store.write_synced(&temp, value)?;
        let put = match store.remove(&name) {
            Ok(()) => Put::Replaced,
            Err(StoreError::NotFound) => Put::Created,
            Err(e) => return Err(e),
        };
        store.rename(&temp, &name)?;
        store.sync()?;
        Ok(put)
    })();
    if result.is_err() {
        match store.remove(&temp) {
            Ok(()) | Err(StoreError::NotFound) => {}
            Err(e) => log::warn!("kv: removing {temp} after a failed PUT: {e}"),
        }
    }
    result
}

/// Removes the temporary files a VM stopped in the middle of a PUT left behind, and syncs; returns how many.
pub fn recover(store: &dyn Store) -> Result<usize, StoreError> {
    let mut removed = 0;
    for name in store.list()? {
        if name.starts_with(TEMP_PREFIX) {
            store.remove(&name)?;
            removed += 1;
        }
    }
    if removed > 0 {
        store.sync()?;
    }
    Ok(removed)
}

/// The keys in `store`, sorted (bytewise).
pub fn keys(store: &dyn Store) -> Result<Vec<String>, StoreError> {
    let mut keys: Vec<String> = store.list()?.iter().filter_map(|name| key_of(name)).collect();
    keys.sort();
    Ok(keys)
}

/// The key-value routes as an HTTP [`Handler`]:
/// - `GET`/`HEAD /kv/<key>`: the value (`application/octet-stream`, single byte ranges as static files), 404
///   when missing;
/// - `PUT /kv/<key>`: store the request body; 201 Created (new key) or 204 No Content (replaced) once durable;
///   413 above `max_value_bytes`, 507 when the disk is full;
/// - `DELETE /kv/<key>`: 204, or 404 when missing;
/// - `GET`/`HEAD /kv/`: the keys, one per line (`text/plain`);
/// - a key breaking the rules is 400, another method 405 with `Allow`, any other path 404.
pub struct Kv<S: Store> {
    store: S,
    max_value_bytes: u64,
}

/// Methods of `/kv/<key>` (RFC 9110 §10.2.1 `Allow`).
const KEY_METHODS: &str = "GET, HEAD, PUT, DELETE";

/// What a path names.
enum Route<'a> {
    List,
    Key(&'a str),
    Other,
}

fn route(path: &str) -> Route<'_> {
    match path.strip_prefix("/kv/") {
        Some("") => Route::List,
        Some(key) => Route::Key(key),
        None => Route::Other,
    }
}

fn store_failure(what: &str, key: &str, e: &StoreError) -> Response {
    log::warn!("kv: {what} {key}: {e}");
    Response::text(Status::INTERNAL_SERVER_ERROR, format!("storage error during {what} of {key}: {e}\n"))
}

impl<S: Store> Kv<S> {
    /// Serves `store`, refusing values over `max_value_bytes` (bytes).
    pub fn new(store: S, max_value_bytes: u64) -> Kv<S> {
        Kv { store, max_value_bytes }
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The answer to everything but a PUT with a valid key (those need the body).
    fn answer_head(&self, request: &Request<'_>) -> Option<Response> {
        let method = request.method;
        match route(request.path) {
            Route::Other => Some(Response::text(
                Status::NOT_FOUND,
                "not found: the routes are /, /health, /bytes/N, /kv/ and /kv/<key>\n",
            )),
            Route::List if method == "GET" || method == "HEAD" => Some(match keys(&self.store) {
                Ok(keys) => {
                    let mut text = String::new();
                    for key in keys {
                        text.push_str(&key);
                        text.push('\n');
                    }
                    Response::text(Status::OK, text)
                }
                Err(e) => store_failure("listing", "/kv/", &e),
            }),
            Route::List => Some(
                Response::text(Status::METHOD_NOT_ALLOWED, "method not allowed: /kv/ supports GET and HEAD\n")
                    .with_header("Allow", "GET, HEAD"),
            ),
            Route::Key(key) => {
                if let Err(e) = check_key(key) {
                    return Some(Response::text(Status::BAD_REQUEST, format!("{e}\n")));
                }
                match method {
                    "GET" | "HEAD" => Some(self.get(request, key)),
                    "DELETE" => Some(self.delete(key)),
                    "PUT" => None,
                    _ => Some(
                        Response::text(
                            Status::METHOD_NOT_ALLOWED,
                            format!("method not allowed: /kv/<key> supports {KEY_METHODS}\n"),
                        )
                        .with_header("Allow", KEY_METHODS),
                    ),
                }
            }
        }
    }

    fn get(&self, request: &Request<'_>, key: &str) -> Response {
        match self.store.open(&file_name(key)) {
            Ok((len, reader)) => file_response(request, reader, len, "application/octet-stream"),
            Err(StoreError::NotFound | StoreError::IsADirectory) => not_found(key),
            Err(e) => store_failure("GET", key, &e),
        }
    }

    fn delete(&self, key: &str) -> Response {
        match self.store.remove(&file_name(key)).and_then(|()| self.store.sync()) {
            Ok(()) => Response::empty(Status::NO_CONTENT),
            Err(StoreError::NotFound) => not_found(key),
            Err(e) => store_failure("DELETE", key, &e),
        }
    }

    fn put(&self, key: &str, value: &[u8]) -> Response {
        if value.len() as u64 > self.max_value_bytes {
            let text = format!(
                "value of {} bytes is larger than {} bytes (max_value_bytes)\n",
                value.len(),
                self.max_value_bytes
            );
            return Response::text(Status::CONTENT_TOO_LARGE, text);
        }
        match put(&self.store, key, value) {
            Ok(Put::Created) => Response::new(Status::CREATED, "text/plain; charset=utf-8", Content::Bytes(Vec::new()))
                .with_header("Location", format!("/kv/{key}")),
            Ok(Put::Replaced) => Response::empty(Status::NO_CONTENT),
            Err(StoreError::NoSpace) => {
                log::warn!("kv: PUT {key}: /data is full ({} bytes not stored)", value.len());
                let text =
                    format!("insufficient storage: no room for a value of {} bytes; delete keys first\n", value.len());
                Response::text(Status::INSUFFICIENT_STORAGE, text)
            }
            Err(StoreError::IsADirectory) => {
                Response::text(Status::CONFLICT, format!("conflict: {key} names a directory on the disk\n"))
            }
            Err(e) => store_failure("PUT", key, &e),
        }
    }
}

fn not_found(key: &str) -> Response {
    Response::text(Status::NOT_FOUND, format!("no value for key {key}\n"))
}

impl<S: Store> Handler for Kv<S> {
    fn check(&self, request: &Request<'_>) -> Option<Response> {
        self.answer_head(request)
    }

    fn respond(&self, request: &Request<'_>) -> Response {
        match (request.method, route(request.path)) {
            ("PUT", Route::Key(key)) if check_key(key).is_ok() => self.put(key, request.body),
            // `check` answered everything else; this is only reached if it is bypassed.
            _ => self.answer_head(request).unwrap_or_else(|| Response::text(Status::NOT_FOUND, "not found\n")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    use zirvium_http::demo::Demo;
    use zirvium_http::{Config, Connection, SourceError};

    /// A directory like FAT's: names compared case-insensitively (kept as created), a byte capacity, an
    /// operation log, and a power budget: after `power` mutating operations every operation fails, and a write
    /// cut by the power loss leaves half its data.
    #[derive(Default)]
    struct FakeDir {
        state: Mutex<FakeState>,
    }

    #[derive(Default)]
    struct FakeState {
        /// Lower-cased name → (name as created, content).
        files: BTreeMap<String, (String, Vec<u8>)>,
        capacity: Option<usize>,
        ops: Vec<String>,
        power: Option<usize>,
        /// Reads of file content fail with this.
        read_error: Option<String>,
    }

    const POWER_LOST: &str = "power lost";

    impl FakeState {
        /// Spends one mutating operation; false once the power is gone.
        fn spend(&mut self, op: String) -> bool {
            match &mut self.power {
                Some(0) => false,
                Some(n) => {
                    *n -= 1;
                    self.ops.push(op);
                    true
                }
                None => {
                    self.ops.push(op);
                    true
                }
            }
        }

        fn used(&self) -> usize {
            self.files.values().map(|(_, c)| c.len()).sum()
        }
    }

    impl FakeDir {
        fn with(files: &[(&str, &[u8])]) -> FakeDir {
            let dir = FakeDir::default();
            for (name, content) in files {
                dir.state.lock().unwrap().files.insert(name.to_lowercase(), (String::from(*name), content.to_vec()));
            }
            dir
        }

        fn content(&self, name: &str) -> Option<Vec<u8>> {
            self.state.lock().unwrap().files.get(&name.to_lowercase()).map(|(_, c)| c.clone())
        }

        fn names(&self) -> Vec<String> {
            self.state.lock().unwrap().files.values().map(|(n, _)| n.clone()).collect()
        }
    }

    struct FakeReader {
        data: Vec<u8>,
        pos: usize,
        error: Option<String>,
    }

    impl FileReader for FakeReader {
        fn seek(&mut self, offset: u64) -> Result<(), SourceError> {
            self.pos = offset as usize;
            Ok(())
        }

        fn read(&mut self, buf: &mut [u8]) -> Result<usize, SourceError> {
            if let Some(detail) = &self.error {
                return Err(SourceError { detail: detail.clone() });
            }
            let n = buf.len().min(self.data.len().saturating_sub(self.pos));
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    impl Store for FakeDir {
        fn open(&self, name: &str) -> Result<(u64, Box<dyn FileReader>), StoreError> {
            let st = self.state.lock().unwrap();
            if st.power == Some(0) {
                return Err(StoreError::Other(POWER_LOST.into()));
            }
            let (_, data) = st.files.get(&name.to_lowercase()).ok_or(StoreError::NotFound)?;
            let reader = FakeReader { data: data.clone(), pos: 0, error: st.read_error.clone() };
            Ok((data.len() as u64, Box::new(reader)))
        }

        fn write_synced(&self, name: &str, data: &[u8]) -> Result<(), StoreError> {
            let mut st = self.state.lock().unwrap();
            let cut = st.power == Some(0);
            if cut {
                // The power fails during the write: half of it reached the disk.
                st.files.insert(name.to_lowercase(), (name.into(), data[..data.len() / 2].to_vec()));
                return Err(StoreError::Other(POWER_LOST.into()));
            }
            st.spend(format!("write {name}"));
            let old = st.files.get(&name.to_lowercase()).map_or(0, |(_, c)| c.len());
            let free = st.capacity.map_or(usize::MAX, |c| c - (st.used() - old));
            let stored = data.len().min(free);
            st.files.insert(name.to_lowercase(), (name.into(), data[..stored].to_vec()));
            if stored < data.len() {
                return Err(StoreError::NoSpace);
            }
            Ok(())
        }

        fn remove(&self, name: &str) -> Result<(), StoreError> {
            let mut st = self.state.lock().unwrap();
            if !st.files.contains_key(&name.to_lowercase()) {
                return if st.power == Some(0) {
                    Err(StoreError::Other(POWER_LOST.into()))
                } else {
                    Err(StoreError::NotFound)
                };
            }
            if !st.spend(format!("remove {name}")) {
                return Err(StoreError::Other(POWER_LOST.into()));
            }
            st.files.remove(&name.to_lowercase());
            Ok(())
        }

        fn rename(&self, from: &str, to: &str) -> Result<(), StoreError> {
            let mut st = self.state.lock().unwrap();
            assert!(!st.files.contains_key(&to.to_lowercase()), "rename over an existing {to}");
            if !st.spend(format!("rename {from} {to}")) {
                return Err(StoreError::Other(POWER_LOST.into()));
            }
            let (_, content) = st.files.remove(&from.to_lowercase()).ok_or(StoreError::NotFound)?;
            st.files.insert(to.to_lowercase(), (to.into(), content));
            Ok(())
        }

        fn sync(&self) -> Result<(), StoreError> {
            let mut st = self.state.lock().unwrap();
            if !st.spend(String::from("sync")) {
                return Err(StoreError::Other(POWER_LOST.into()));
            }
            Ok(())
        }

        fn list(&self) -> Result<Vec<String>, StoreError> {
            Ok(self.names())
        }
    }

    /// Calls the handler as the HTTP core does: `check`, then `respond` with the body when `check` passed.
    fn call(kv: &Kv<FakeDir>, method: &str, path: &str, body: &[u8]) -> Response {
        let headers = [];
        let head = Request { method, path, query: None, headers: &headers, body: &[] };
        if let Some(response) = kv.check(&head) {
            return response;
        }
        kv.respond(&Request { body, ..head })
    }

    /// The response's content, read from its source if streamed.
    fn content(response: Response) -> Vec<u8> {
        match response.content {
            Content::Bytes(bytes) => bytes,
            Content::Stream { len, mut source } => {
                let mut out = vec![0u8; len as usize];
                let mut at = 0;
                while at < out.len() {
                    let n = source.read(&mut out[at..]).unwrap();
                    assert!(n > 0);
                    at += n;
                }
                out
            }
        }
    }

    fn header<'a>(response: &'a Response, name: &str) -> Option<&'a str> {
        response.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    #[test]
    fn keys_follow_the_rules() {
        for good in ["a", "key1", "Key-1.v2_x", "a.", "0", &"k".repeat(64), "A-Z_a-z.0-9"] {
            assert_eq!(check_key(good), Ok(()), "{good}");
        }
        assert_eq!(check_key(""), Err(KeyError::Empty));
        assert_eq!(check_key(&"k".repeat(65)), Err(KeyError::TooLong { len: 65 }));
        assert_eq!(check_key(".hidden"), Err(KeyError::LeadingDot));
        assert_eq!(check_key(".."), Err(KeyError::LeadingDot));
        assert_eq!(check_key("a/b"), Err(KeyError::BadByte { byte: b'/', at: 1 }));
        assert_eq!(check_key("a b"), Err(KeyError::BadByte { byte: b' ', at: 1 }));
        assert_eq!(check_key("..%2Fescape"), Err(KeyError::LeadingDot));
        assert_eq!(check_key("x%2F"), Err(KeyError::BadByte { byte: b'%', at: 1 }));
        assert_eq!(check_key("caf\u{e9}"), Err(KeyError::BadByte { byte: 0xc3, at: 3 }));
        assert_eq!(check_key("a^b"), Err(KeyError::BadByte { byte: b'^', at: 1 }));
        for e in [
            KeyError::Empty,
            KeyError::TooLong { len: 65 },
            KeyError::LeadingDot,
            KeyError::BadByte { byte: b'/', at: 1 },
        ] {
            assert!(e.to_string().contains("1 to 64 bytes"), "{e}");
        }
    }

    #[test]
    fn file_names_keep_keys_apart_on_a_case_insensitive_disk() {
        assert_eq!(file_name("key1"), "key1");
        assert_eq!(file_name("Key"), "^key");
        assert_eq!(file_name("ABC.d_e-f"), "^a^b^c.d_e-f");
        for key in ["key1", "Key", "KEY", "kEy", "a.", "x_Y-z.W", &"Z".repeat(64)] {
            assert_eq!(key_of(&file_name(key)).as_deref(), Some(key), "{key}");
        }
        let names: std::collections::BTreeSet<String> =
            ["key", "Key", "kEy", "KEY"].iter().map(|k| file_name(k).to_lowercase()).collect();
        assert_eq!(names.len(), 4, "distinct even when the disk ignores case");
        // A name the disk reports in capitals still decodes.
        assert_eq!(key_of("^KEY").as_deref(), Some("Key"));
        assert_eq!(key_of("KEY1").as_deref(), Some("key1"));
        for other in [".put~key", "^", "^1", "a^", "", ".hidden", "a b", "^^a"] {
            assert_eq!(key_of(other), None, "{other}");
        }
    }

    #[test]
    fn put_get_delete_and_list() {
        let kv = Kv::new(FakeDir::default(), 1024);
        let r = call(&kv, "PUT", "/kv/Alpha", b"one");
        assert_eq!((r.status, header(&r, "location")), (Status::CREATED, Some("/kv/Alpha")));
        assert_eq!(call(&kv, "PUT", "/kv/alpha", b"two").status, Status::CREATED, "another key");
        assert_eq!(call(&kv, "PUT", "/kv/Alpha", b"three").status, Status::NO_CONTENT, "replaced");
        let r = call(&kv, "GET", "/kv/Alpha", b"");
        assert_eq!((r.status, r.content_type.as_ref()), (Status::OK, "application/octet-stream"));
        assert_eq!(content(r), b"three");
        assert_eq!(content(call(&kv, "GET", "/kv/alpha", b"")), b"two");
        assert_eq!(call(&kv, "PUT", "/kv/empty", b"").status, Status::CREATED);
        assert_eq!(content(call(&kv, "GET", "/kv/empty", b"")), b"");
        let r = call(&kv, "GET", "/kv/", b"");
        assert_eq!((r.status, content(r)), (Status::OK, b"Alpha\nalpha\nempty\n".to_vec()));
        assert_eq!(call(&kv, "DELETE", "/kv/Alpha", b"").status, Status::NO_CONTENT);
        assert_eq!(call(&kv, "DELETE", "/kv/Alpha", b"").status, Status::NOT_FOUND);
        assert_eq!(call(&kv, "GET", "/kv/Alpha", b"").status, Status::NOT_FOUND);
        assert_eq!(call(&kv, "HEAD", "/kv/missing", b"").status, Status::NOT_FOUND);
        assert_eq!(content(call(&kv, "GET", "/kv/", b"")), b"alpha\nempty\n");
        assert_eq!(kv.store().names().iter().filter(|n| n.starts_with(TEMP_PREFIX)).count(), 0);
    }

    #[test]
    fn put_writes_syncs_then_replaces_then_syncs() {
        let kv = Kv::new(FakeDir::with(&[("k", b"old")]), 1024);
        assert_eq!(call(&kv, "PUT", "/kv/k", b"new").status, Status::NO_CONTENT);
        let ops = kv.store().state.lock().unwrap().ops.clone();
        assert_eq!(ops, ["write .put~k", "remove k", "rename .put~k k", "sync"]);
        assert_eq!(call(&kv, "DELETE", "/kv/k", b"").status, Status::NO_CONTENT);
        assert_eq!(kv.store().state.lock().unwrap().ops[4..], ["remove k", "sync"], "DELETE is synced");
    }

    #[test]
    fn a_put_cut_by_power_loss_leaves_old_or_new_never_torn() {
        let new = b"the whole new value".repeat(10);
        for old in [None, Some(&b"the old value"[..])] {
            for budget in 0..6 {
                let files: Vec<(&str, &[u8])> = old.iter().map(|o| ("big", *o)).collect();
                let dir = FakeDir::with(&files);
                dir.state.lock().unwrap().power = Some(budget);
                let result = put(&dir, "big", &new);
                // Reboot: power back, temporary files removed.
                dir.state.lock().unwrap().power = None;
                recover(&dir).unwrap();
                let after = dir.content("big");
                assert!(
                    after.as_deref() == Some(&new[..]) || after.as_deref() == old || after.is_none(),
                    "budget {budget}, old {old:?}: torn value {after:?}"
                );
                if result.is_ok() {
                    assert_eq!(after.as_deref(), Some(&new[..]), "budget {budget}: answered but lost");
                }
                assert!(dir.names().iter().all(|n| !n.starts_with(TEMP_PREFIX)), "budget {budget}: temp file left");
            }
        }
    }

    #[test]
    fn recover_removes_only_temporary_files() {
        let dir = FakeDir::with(&[(".put~a", b"torn"), ("a", b"whole"), (".put~^b", b""), ("notes.txt", b"x")]);
        assert_eq!(recover(&dir), Ok(2));
        let mut names = dir.names();
        names.sort();
        assert_eq!(names, ["a", "notes.txt"]);
        assert_eq!(dir.state.lock().unwrap().ops.last().map(String::as_str), Some("sync"));
        assert_eq!(recover(&dir), Ok(0));
        assert_eq!(keys(&dir).unwrap(), ["a", "notes.txt"], "any file with a key's name is a key");
    }

    #[test]
    fn full_disk_is_507_and_leaves_nothing_behind() {
        let dir = FakeDir::with(&[("keep", b"0123456789")]);
        dir.state.lock().unwrap().capacity = Some(30);
        let kv = Kv::new(dir, 1024);
        let r = call(&kv, "PUT", "/kv/big", &[7u8; 25]);
        assert_eq!(r.status, Status::INSUFFICIENT_STORAGE);
        assert!(String::from_utf8(content(r)).unwrap().contains("25 bytes"));
        assert_eq!(kv.store().names(), ["keep"], "the partial temporary file is gone");
        assert_eq!(content(call(&kv, "GET", "/kv/keep", b"")), b"0123456789");
        assert_eq!(call(&kv, "PUT", "/kv/small", &[1u8; 20]).status, Status::CREATED, "room for what fits");
        assert_eq!(call(&kv, "PUT", "/kv/keep", &[2u8; 10]).status, Status::INSUFFICIENT_STORAGE, "no room for a copy");
        assert_eq!(content(call(&kv, "GET", "/kv/keep", b"")), b"0123456789", "old value kept");
        assert_eq!(call(&kv, "DELETE", "/kv/small", b"").status, Status::NO_CONTENT);
        assert_eq!(call(&kv, "PUT", "/kv/keep", &[2u8; 10]).status, Status::NO_CONTENT);
    }

    #[test]
    fn bad_keys_methods_paths_and_sizes() {
        let kv = Kv::new(FakeDir::default(), 8);
        for path in ["/kv/..%2Fescape", "/kv/.hidden", "/kv/a/b", "/kv/a%20b", &format!("/kv/{}", "k".repeat(65))] {
            for method in ["GET", "PUT", "DELETE"] {
                assert_eq!(call(&kv, method, path, b"x").status, Status::BAD_REQUEST, "{method} {path}");
            }
        }
        let r = call(&kv, "POST", "/kv/k", b"x");
        assert_eq!((r.status, header(&r, "allow")), (Status::METHOD_NOT_ALLOWED, Some("GET, HEAD, PUT, DELETE")));
        let r = call(&kv, "PUT", "/kv/", b"x");
        assert_eq!((r.status, header(&r, "allow")), (Status::METHOD_NOT_ALLOWED, Some("GET, HEAD")));
        for path in ["/kv", "/other", "/kvx/a"] {
            assert_eq!(call(&kv, "GET", path, b"").status, Status::NOT_FOUND, "{path}");
        }
        assert_eq!(call(&kv, "PUT", "/kv/k", b"123456789").status, Status::CONTENT_TOO_LARGE);
        assert_eq!(call(&kv, "PUT", "/kv/k", b"12345678").status, Status::CREATED);
        assert!(
            kv.store().state.lock().unwrap().ops.iter().all(|op| !op.contains("a%20b")),
            "nothing stored for bad keys"
        );
    }

    #[test]
    fn get_serves_ranges_and_reports_storage_errors() {
        let kv = Kv::new(FakeDir::with(&[("k", b"0123456789")]), 1024);
        let headers = [(String::from("Range"), b"bytes=2-4".to_vec())];
        let request = Request { method: "GET", path: "/kv/k", query: None, headers: &headers, body: &[] };
        let r = kv.check(&request).unwrap();
        assert_eq!((r.status, header(&r, "content-range")), (Status::PARTIAL_CONTENT, Some("bytes 2-4/10")));
        assert_eq!(content(r), b"234");
        kv.store().state.lock().unwrap().power = Some(0);
        let r = call(&kv, "GET", "/kv/k", b"");
        assert_eq!(r.status, Status::INTERNAL_SERVER_ERROR);
        assert!(String::from_utf8(content(r)).unwrap().contains(POWER_LOST));
        assert_eq!(call(&kv, "PUT", "/kv/k", b"v").status, Status::INTERNAL_SERVER_ERROR);
        assert_eq!(call(&kv, "GET", "/kv/", b"").status, Status::OK, "listing reads no content");
    }

    #[test]
    fn through_the_http_core() {
        let kv = Kv::new(FakeDir::default(), 16);
        let config = Config { max_body_bytes: 16, ..Config::default() };
        // The demo routes in front, as in the image.
        let handler = Demo::new("m", &kv);
        let mut conn = Connection::with_handler(&config, &handler);
        let input = "PUT /kv/a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
                     PUT /kv/b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n\
                     GET /kv/a HTTP/1.1\r\nHost: x\r\n\r\n\
                     GET /health HTTP/1.1\r\nHost: x\r\n\r\n\
                     PUT /kv/c HTTP/1.1\r\nHost: x\r\nContent-Length: 17\r\n\r\n";
        let r = conn.receive(input.as_bytes());
        assert_eq!(r.requests, 5);
        let mut out = vec![0u8; 4096];
        let n = conn.poll_output(&mut out);
        let text = String::from_utf8_lossy(&out[..n]);
        let statuses: Vec<&str> = text.match_indices("HTTP/1.1 ").map(|(i, _)| &text[i + 9..i + 12]).collect();
        assert_eq!(statuses, ["201", "201", "200", "200", "413"], "{text}");
        assert!(text.contains("\r\n\r\nhello"), "{text}");
        assert!(text.contains("\"status\":\"ok\""));
        assert_eq!(kv.store().content("b").as_deref(), Some(&b"hi"[..]));
    }
}
