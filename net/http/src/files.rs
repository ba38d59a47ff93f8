//! Static files over HTTP, sans I/O: request path to file path (percent-decoding, RFC 3986 §2.1; dot-segment
//! removal, RFC 3986 §5.2.4), media types by file name extension (IANA media types registry), single byte
//! ranges (RFC 9110 §14), and [`StaticFiles`], a [`Handler`] serving a read-only [`FileTree`] with them.
//!
//! The filesystem is behind [`FileTree`] and [`FileReader`]: `vfs` (feature `vfs`) implements them over the
//! image's files, the tests over a map in memory. A file's content is streamed a buffer at a time
//! ([`Content::Stream`]), never read into memory whole.

use crate::request::parse_decimal;
use crate::{Content, Handler, Request, Response, Source, SourceError, Status};
use alloc::borrow::Cow;
use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// Why a file could not be served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// No such file, or a path component is not a directory (POSIX ENOENT/ENOTDIR): 404.
    NotFound,
    /// The filesystem refused access: 403.
    PermissionDenied,
    /// The filesystem failed (device error, corrupt archive): 500 with this text.
    Io(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotFound => f.write_str("no such file"),
            Error::PermissionDenied => f.write_str("permission denied"),
            Error::Io(detail) => write!(f, "filesystem error: {detail}"),
        }
    }
}

/// An open file: read from a position. Implemented over the image's files by `vfs::Reader` (feature `vfs`).
pub trait FileReader: Send {
    /// Moves the read position to `offset` bytes from the start.
    fn seek(&mut self, offset: u64) -> Result<(), SourceError>;

    /// Reads up to `buf.len()` bytes at the position and advances it; 0 at the end.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, SourceError>;
}

/// What a path names in a [`FileTree`].
pub enum Node {
    /// A regular file of `len` bytes, opened for reading.
    File {
        /// Size, bytes.
        len: u64,
        /// The open file, at position 0.
        reader: Box<dyn FileReader>,
    },
    /// A directory.
    Dir,
}

/// A read-only tree of files.
pub trait FileTree: Sync {
    /// Opens `path`: absolute, normalised (components joined by single `/`, none empty, `.` or `..`), e.g.
    /// `/css/site.css`; `/` is the root. Errors: [`Error::NotFound`] (also when a component on the way is a
    /// file), [`Error::PermissionDenied`], [`Error::Io`].
    fn open(&self, path: &str) -> Result<Node, Error>;
}

/// Why a request path cannot name a file: 400.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathError {
    /// A `%` not followed by two hex digits (RFC 3986 §2.1).
    BadPercentEncoding,
    /// The decoded path is not UTF-8 or contains a NUL byte.
    BadBytes,
    /// The path does not start with `/`.
    NotAbsolute,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathError::BadPercentEncoding => f.write_str("bad percent-encoding in the path: % needs two hex digits"),
            PathError::BadBytes => f.write_str("the decoded path is not UTF-8 or contains a NUL byte"),
            PathError::NotAbsolute => f.write_str("the path must start with /"),
        }
    }
}

/// A request path resolved to a file path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilePath {
    /// Normalised absolute path: `/` then components joined by `/`, none empty, `.` or `..`.
    pub path: String,
    /// The request path ended in `/` (or a dot-segment): it names a directory's index.
    pub dir: bool,
}

/// Percent-decodes (RFC 3986 §2.1) and normalises a request path: empty and `.` segments are dropped and `..`
/// removes the previous segment but never goes above the root (RFC 3986 §5.2.4), so the result stays inside
/// the tree whatever the request says (`/../../etc` is `/etc`, `/a/%2e%2e/b` is `/b`). Decoded `%2F` separates
/// segments like `/`. Errors: [`PathError`].
pub fn resolve_path(path: &str) -> Result<FilePath, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let decoded = percent_decode(path.as_bytes())?;
    let decoded = String::from_utf8(decoded).map_err(|_| PathError::BadBytes)?;
    if decoded.contains('\0') {
        return Err(PathError::BadBytes);
    }
    let mut segments: Vec<&str> = Vec::new();
    let mut dir = false;
    for segment in decoded.split('/').skip(1) {
        dir = matches!(segment, "" | "." | "..");
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            _ => segments.push(segment),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() {
        out.push('/');
        dir = true;
    }
    Ok(FilePath { path: out, dir })
}

/// Decodes `%XX` escapes (RFC 3986 §2.1).
fn percent_decode(bytes: &[u8]) -> Result<Vec<u8>, PathError> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(hex);
            let lo = bytes.get(i + 2).copied().and_then(hex);
            let (Some(hi), Some(lo)) = (hi, lo) else { return Err(PathError::BadPercentEncoding) };
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// The `Content-Type` for a file name by its extension (case-insensitive), from the IANA media types registry
/// (text types with `charset=utf-8`): html/htm, css, js/mjs (RFC 9239), json, txt, svg, png, jpg/jpeg, gif,
/// ico, wasm, woff2 (RFC 8081), pdf; anything else `application/octet-stream` (RFC 2046 §4.5.1).
pub fn content_type(path: &str) -> &'static str {
    let name = path.rsplit('/').next().unwrap_or(path);
    let Some((_, extension)) = name.rsplit_once('.') else { return "application/octet-stream" };
    const TYPES: [(&str, &str); 15] = [
        ("html", "text/html; charset=utf-8"),
        ("htm", "text/html; charset=utf-8"),
        ("css", "text/css; charset=utf-8"),
        ("js", "text/javascript; charset=utf-8"),
        ("mjs", "text/javascript; charset=utf-8"),
        ("json", "application/json"),
        ("txt", "text/plain; charset=utf-8"),
        ("svg", "image/svg+xml"),
        ("png", "image/png"),
        ("jpg", "image/jpeg"),
        ("jpeg", "image/jpeg"),
        ("gif", "image/gif"),
        ("ico", "image/vnd.microsoft.icon"),
        ("wasm", "application/wasm"),
        ("woff2", "font/woff2"),
    ];
    if extension.eq_ignore_ascii_case("pdf") {
        return "application/pdf";
    }
    TYPES.iter().find(|(e, _)| extension.eq_ignore_ascii_case(e)).map_or("application/octet-stream", |(_, t)| t)
}

/// What a `Range` header field asks of a representation of some length (RFC 9110 §14.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeChoice {
    /// Send the whole representation with 200: no `Range`, a unit other than `bytes`, an invalid or
    /// multi-range specifier (a server MAY ignore those, RFC 9110 §14.2).
    Full,
    /// Send bytes `first..=last` with 206.
    Partial {
        /// First byte, from 0.
        first: u64,
        /// Last byte, inclusive, `< len`.
        last: u64,
    },
    /// 416 with `Content-Range: bytes */len` (RFC 9110 §15.5.17).
    Unsatisfiable,
}

/// Chooses what to send for `Range: value` on a representation of `len` bytes. Only a single range is honoured:
/// `a-b` (b clamped to the end), `a-`, and the suffix `-n` (the last n bytes, RFC 9110 §14.1.2). A first byte at
/// or past the end, or `-0`, is [`RangeChoice::Unsatisfiable`] (RFC 9110 §14.1.1); an empty representation can
/// satisfy only a suffix range, which is then served whole.
pub fn choose_range(value: &[u8], len: u64) -> RangeChoice {
    let Some(eq) = value.iter().position(|&b| b == b'=') else { return RangeChoice::Full };
    if !value[..eq].trim_ascii().eq_ignore_ascii_case(b"bytes") {
        return RangeChoice::Full;
    }
    let mut specs = value[eq + 1..].split(|&b| b == b',').map(<[u8]>::trim_ascii).filter(|s| !s.is_empty());
    let (Some(spec), None) = (specs.next(), specs.next()) else { return RangeChoice::Full };
    let Some(dash) = spec.iter().position(|&b| b == b'-') else { return RangeChoice::Full };
    let (first, last) = (&spec[..dash], &spec[dash + 1..]);
    if first.is_empty() {
        return match parse_decimal(last) {
            None => RangeChoice::Full,
            Some(0) => RangeChoice::Unsatisfiable,
            Some(_) if len == 0 => RangeChoice::Full,
            Some(n) => RangeChoice::Partial { first: len.saturating_sub(n), last: len - 1 },
        };
    }
    let Some(first) = parse_decimal(first) else { return RangeChoice::Full };
    let last = if last.is_empty() {
        u64::MAX
    } else {
        match parse_decimal(last) {
            Some(last) if last >= first => last,
            _ => return RangeChoice::Full,
        }
    };
    if first >= len {
        return RangeChoice::Unsatisfiable;
    }
    RangeChoice::Partial { first, last: last.min(len - 1) }
}

/// Streams an open file as response content.
struct FileSource(Box<dyn FileReader>);

impl Source for FileSource {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, SourceError> {
        self.0.read(buf)
    }
}

/// The response for a GET or HEAD of an open file of `len` bytes: 200 with the whole file and
/// `Accept-Ranges: bytes`, or for a GET with a single `Range` 206 with `Content-Range` (RFC 9110 §14.4), or 416
/// (see [`choose_range`]). `If-Range` is never satisfied (no validators are sent), so with it the whole file is
/// sent (RFC 9110 §13.1.5). The content is read from `reader` while it is written.
pub fn file_response(
    request: &Request<'_>,
    mut reader: Box<dyn FileReader>,
    len: u64,
    content_type: &'static str,
) -> Response {
    let range = match request.header("range") {
        // RFC 9110 §14.2: Range is defined for GET only.
        Some(value) if request.method == "GET" && request.header("if-range").is_none() => {
            if request.header_count("range") == 1 {
                choose_range(value, len)
            } else {
                RangeChoice::Full
            }
        }
        _ => RangeChoice::Full,
    };
    let (status, first, count) = match range {
        RangeChoice::Full => (Status::OK, 0, len),
        RangeChoice::Partial { first, last } => (Status::PARTIAL_CONTENT, first, last - first + 1),
        RangeChoice::Unsatisfiable => {
            return Response::text(
                Status::RANGE_NOT_SATISFIABLE,
                format!("range not satisfiable: the file has {len} bytes\n"),
            )
            .with_header("Content-Range", format!("bytes */{len}"));
        }
    };
    if first > 0 {
        if let Err(e) = reader.seek(first) {
            return Response::text(Status::INTERNAL_SERVER_ERROR, format!("filesystem error: {e}\n"));
        }
    }
    let content = Content::Stream { len: count, source: Box::new(FileSource(reader)) };
    let response = Response::new(status, content_type, content).with_header("Accept-Ranges", "bytes");
    if status == Status::PARTIAL_CONTENT {
        response.with_header("Content-Range", format!("bytes {first}-{}/{len}", first + count - 1))
    } else {
        response
    }
}

/// A [`Handler`] serving the files of a [`FileTree`] for GET and HEAD: `/dir/` is `/dir/index.html`, `/dir`
/// (a directory) redirects to `/dir/` (301), a missing file is 404, other methods 405, bad paths 400. Paths
/// under [`StaticFiles::hide`]den directories are 404, so other mounts (scratch, data) stay private. Nothing is
/// listed.
pub struct StaticFiles<T: FileTree> {
    tree: T,
    hidden: Vec<String>,
}

/// `Allow` for static files (RFC 9110 §10.2.1).
const ALLOW: &str = "GET, HEAD";

impl<T: FileTree> StaticFiles<T> {
    /// Serves `tree`, nothing hidden.
    pub fn new(tree: T) -> StaticFiles<T> {
        StaticFiles { tree, hidden: Vec::new() }
    }

    /// Never serves `dir` (an absolute normalised path such as `/data`) or anything below it; compared
    /// case-insensitively, since FAT names are.
    pub fn hide(mut self, dir: &str) -> StaticFiles<T> {
        self.hidden.push(String::from(dir.trim_end_matches('/')));
        self
    }

    fn is_hidden(&self, path: &str) -> bool {
        self.hidden.iter().any(|h| {
            path.len() >= h.len()
                && path.as_bytes()[..h.len()].eq_ignore_ascii_case(h.as_bytes())
                && (path.len() == h.len() || path.as_bytes()[h.len()] == b'/' || h.is_empty())
        })
    }

    /// The answer for `request` (see the type's docs).
    pub fn serve(&self, request: &Request<'_>) -> Response {
        if request.method != "GET" && request.method != "HEAD" {
            return Response::text(Status::METHOD_NOT_ALLOWED, "method not allowed: files support GET and HEAD\n")
                .with_header("Allow", ALLOW);
        }
        let target = match resolve_path(request.path) {
            Ok(target) => target,
            Err(e) => return Response::text(Status::BAD_REQUEST, format!("{e}\n")),
        };
        if self.is_hidden(&target.path) {
            return not_found();
        }
        let path: Cow<'_, str> = if target.dir {
            let base = target.path.trim_end_matches('/');
            Cow::Owned(format!("{base}/index.html"))
        } else {
            Cow::Borrowed(&target.path)
        };
        match self.tree.open(&path) {
            Ok(Node::File { len, reader }) => file_response(request, reader, len, content_type(&path)),
            Ok(Node::Dir) if target.dir => not_found(),
            Ok(Node::Dir) => {
                // RFC 9110 §15.4.2: the directory's index lives under the name with a trailing slash.
                let mut location = format!("{}/", request.path);
                if let Some(query) = request.query {
                    location.push('?');
                    location.push_str(query);
                }
                Response::text(Status::MOVED_PERMANENTLY, format!("moved to {location}\n"))
                    .with_header("Location", location)
            }
            Err(Error::NotFound) => not_found(),
            Err(Error::PermissionDenied) => Response::text(Status::FORBIDDEN, "forbidden\n"),
            Err(e @ Error::Io(_)) => Response::text(Status::INTERNAL_SERVER_ERROR, format!("{e}\n")),
        }
    }
}

fn not_found() -> Response {
    Response::text(Status::NOT_FOUND, "not found\n")
}

impl<T: FileTree> Handler for StaticFiles<T> {
    /// Files never need a request body: answer from the head.
    fn check(&self, request: &Request<'_>) -> Option<Response> {
        Some(self.serve(request))
    }

    fn respond(&self, request: &Request<'_>) -> Response {
        self.serve(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{drain, get, parse_responses, Response as Parsed};
    use crate::{Config, Connection};
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A file tree in memory: file paths to contents; directories are the prefixes.
    #[derive(Default)]
    struct MemTree {
        files: BTreeMap<String, Arc<Vec<u8>>>,
        /// Largest buffer any reader was asked to fill.
        largest_read: Arc<AtomicUsize>,
        /// Reads fail after this many bytes of a file (per open).
        fail_after: Option<usize>,
        fail_seek: bool,
        /// Paths that are refused.
        denied: Vec<String>,
    }

    impl MemTree {
        fn with(files: &[(&str, &[u8])]) -> MemTree {
            let files = files.iter().map(|(p, c)| (String::from(*p), Arc::new(c.to_vec()))).collect();
            MemTree { files, ..MemTree::default() }
        }
    }

    struct MemReader {
        data: Arc<Vec<u8>>,
        pos: usize,
        largest: Arc<AtomicUsize>,
        fail_after: Option<usize>,
        fail_seek: bool,
    }

    impl FileReader for MemReader {
        fn seek(&mut self, offset: u64) -> Result<(), SourceError> {
            if self.fail_seek {
                return Err(SourceError { detail: "seek failed".into() });
            }
            self.pos = offset as usize;
            Ok(())
        }

        fn read(&mut self, buf: &mut [u8]) -> Result<usize, SourceError> {
            self.largest.fetch_max(buf.len(), Ordering::Relaxed);
            if self.fail_after.is_some_and(|n| self.pos >= n) {
                return Err(SourceError { detail: "sector 9: medium error".into() });
            }
            let end = self.fail_after.unwrap_or(usize::MAX).min(self.data.len());
            let n = buf.len().min(end.saturating_sub(self.pos));
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    impl FileTree for MemTree {
        fn open(&self, path: &str) -> Result<Node, Error> {
            assert!(path.starts_with('/') && !path.contains("//") && !path.split('/').any(|c| c == ".."), "{path}");
            if self.denied.iter().any(|d| d == path) {
                return Err(Error::PermissionDenied);
            }
            if let Some(data) = self.files.get(path) {
                let reader = MemReader {
                    data: data.clone(),
                    pos: 0,
                    largest: self.largest_read.clone(),
                    fail_after: self.fail_after,
                    fail_seek: self.fail_seek,
                };
                return Ok(Node::File { len: data.len() as u64, reader: Box::new(reader) });
            }
            let prefix = if path == "/" { String::from("/") } else { format!("{path}/") };
            if self.files.keys().any(|k| k.starts_with(&prefix)) {
                Ok(Node::Dir)
            } else {
                Err(Error::NotFound)
            }
        }
    }

    fn site() -> StaticFiles<MemTree> {
        let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
        let mut tree = MemTree::with(&[
            ("/about.html", b"<p>about</p>\n"),
            ("/style.css", b"body{}\n"),
            ("/docs/index.html", b"<p>docs</p>\n"),
            ("/docs/a b.txt", b"spaced\n"),
            ("/empty.txt", b""),
            ("/noindex/x.png", b"\x89PNG"),
            ("/data/secret", b"private"),
            ("/tmp/scratch", b"private"),
            ("/secret.txt", b"denied"),
        ]);
        tree.files.insert("/big.bin".into(), Arc::new(big));
        tree.denied.push("/secret.txt".into());
        StaticFiles::new(tree).hide("/tmp").hide("/data/")
    }

    fn big() -> Vec<u8> {
        (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect()
    }

    /// Sends `input` to a connection serving `files`; returns the parsed responses and whether it closed.
    fn exchange(files: &StaticFiles<MemTree>, input: &str, head: &[bool]) -> (Vec<Parsed>, bool) {
        let mut conn = Connection::with_handler(&Config::default(), files);
        let r = conn.receive(input.as_bytes());
        assert_eq!(r.consumed, input.len());
        let mut out = Vec::new();
        drain(&mut conn, &mut [0u8; 1500], &mut out);
        (parse_responses(&out, head), conn.wants_close())
    }

    fn one(files: &StaticFiles<MemTree>, input: &str) -> Parsed {
        exchange(files, input, &[]).0.remove(0)
    }

    fn ranged(range: &str) -> String {
        format!("GET /big.bin HTTP/1.1\r\nHost: x\r\nRange: {range}\r\n\r\n")
    }

    #[test]
    fn paths_are_decoded_and_never_leave_the_root() {
        let ok = |p: &str, path: &str, dir: bool| {
            assert_eq!(resolve_path(p), Ok(FilePath { path: path.into(), dir }), "{p}");
        };
        ok("/", "/", true);
        ok("/a/b.html", "/a/b.html", false);
        ok("/a//b", "/a/b", false);
        ok("/a/./b/", "/a/b", true);
        ok("/a/b/..", "/a", true);
        ok("/a/..", "/", true);
        ok("/../../etc/passwd", "/etc/passwd", false);
        ok("/a/%2e%2e/%2E%2E/../b", "/b", false);
        ok("/..%2f..%2fetc%2Fpasswd", "/etc/passwd", false);
        ok("/a%20b.txt", "/a b.txt", false);
        ok("/%C3%A9t%C3%A9", "/\u{e9}t\u{e9}", false);
        assert_eq!(resolve_path("/%zz"), Err(PathError::BadPercentEncoding));
        assert_eq!(resolve_path("/%4"), Err(PathError::BadPercentEncoding));
        assert_eq!(resolve_path("/a%"), Err(PathError::BadPercentEncoding));
        assert_eq!(resolve_path("/%00"), Err(PathError::BadBytes));
        assert_eq!(resolve_path("/%ff%fe"), Err(PathError::BadBytes));
        assert_eq!(resolve_path("a/b"), Err(PathError::NotAbsolute));
        for e in [PathError::BadPercentEncoding, PathError::BadBytes, PathError::NotAbsolute] {
            assert!(e.to_string().len() > 10);
        }
    }

    #[test]
    fn content_types_by_extension() {
        for (name, t) in [
            ("/index.html", "text/html; charset=utf-8"),
            ("/INDEX.HTM", "text/html; charset=utf-8"),
            ("/s.css", "text/css; charset=utf-8"),
            ("/app.js", "text/javascript; charset=utf-8"),
            ("/m.mjs", "text/javascript; charset=utf-8"),
            ("/d.json", "application/json"),
            ("/r.txt", "text/plain; charset=utf-8"),
            ("/i.svg", "image/svg+xml"),
            ("/i.PNG", "image/png"),
            ("/i.jpg", "image/jpeg"),
            ("/i.jpeg", "image/jpeg"),
            ("/i.gif", "image/gif"),
            ("/favicon.ico", "image/vnd.microsoft.icon"),
            ("/m.wasm", "application/wasm"),
            ("/f.woff2", "font/woff2"),
            ("/d.pdf", "application/pdf"),
            ("/a.tar.gz", "application/octet-stream"),
            ("/README", "application/octet-stream"),
            ("/.htaccess", "application/octet-stream"),
            ("/dir.css/file", "application/octet-stream"),
        ] {
            assert_eq!(content_type(name), t, "{name}");
        }
    }

    #[test]
    fn ranges_follow_rfc_9110() {
        use RangeChoice::*;
        let p = |first, last| Partial { first, last };
        for (value, len, want) in [
            ("bytes=0-499", 1000, p(0, 499)),
            ("bytes=500-", 1000, p(500, 999)),
            ("bytes=-200", 1000, p(800, 999)),
            ("bytes=-2000", 1000, p(0, 999)),
            ("bytes=900-5000", 1000, p(900, 999)),
            ("bytes=999-999", 1000, p(999, 999)),
            ("Bytes = 1-2 ", 1000, p(1, 2)),
            ("bytes= 5-6, ", 1000, p(5, 6)),
            ("bytes=1000-", 1000, Unsatisfiable),
            ("bytes=1000-2000", 1000, Unsatisfiable),
            ("bytes=-0", 1000, Unsatisfiable),
            ("bytes=0-", 0, Unsatisfiable),
            ("bytes=-5", 0, Full),
            ("bytes=5-4", 1000, Full),
            ("bytes=0-1,5-6", 1000, Full),
            ("items=0-1", 1000, Full),
            ("bytes=a-b", 1000, Full),
            ("bytes=1", 1000, Full),
            ("bytes=", 1000, Full),
            ("bytes", 1000, Full),
            ("bytes=-", 1000, Full),
            ("bytes=0-99999999999999999999999", 10, p(0, 9)),
        ] {
            assert_eq!(choose_range(value.as_bytes(), len), want, "{value} of {len}");
        }
    }

    #[test]
    fn serves_files_with_type_and_length() {
        let files = site();
        let r = one(&files, &get("/about.html"));
        assert_eq!((r.status, r.text()), (200, "<p>about</p>\n"));
        assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
        assert_eq!(r.header("content-length"), Some("13"));
        assert_eq!(r.header("accept-ranges"), Some("bytes"));
        let r = one(&files, &get("/style.css?v=2"));
        assert_eq!((r.status, r.header("content-type")), (200, Some("text/css; charset=utf-8")));
        let r = one(&files, &get("/docs/a%20b.txt"));
        assert_eq!(r.text(), "spaced\n");
        let r = one(&files, &get("/empty.txt"));
        assert_eq!((r.status, r.header("content-length")), (200, Some("0")));
        let r = one(&files, &get("/big.bin"));
        assert!(r.body == big());
        assert_eq!(r.header("content-type"), Some("application/octet-stream"));
        assert!(files.tree.largest_read.load(Ordering::Relaxed) <= 1500, "streamed through the 1500-byte buffer");
    }

    #[test]
    fn head_has_the_get_fields_and_no_content() {
        let files = site();
        let get_r = one(&files, &get("/about.html"));
        let (head, _) = exchange(&files, "HEAD /about.html HTTP/1.1\r\nHost: test\r\n\r\n", &[true]);
        assert_eq!((head[0].status, &head[0].headers), (200, &get_r.headers));
        assert!(head[0].body.is_empty());
        // Range is defined for GET only: HEAD gets the whole file's fields.
        let (head, _) = exchange(&files, "HEAD /big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\n\r\n", &[true]);
        assert_eq!((head[0].status, head[0].header("content-length")), (200, Some("300000")));
    }

    #[test]
    fn directories_index_and_redirect() {
        let files = site();
        let r = one(&files, &get("/docs/"));
        assert_eq!((r.status, r.text()), (200, "<p>docs</p>\n"));
        assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
        let r = one(&files, &get("/docs/./"));
        assert_eq!(r.status, 200);
        let r = one(&files, &get("/docs?x=1"));
        assert_eq!((r.status, r.header("location")), (301, Some("/docs/?x=1")));
        let r = one(&files, &get("/noindex/"));
        assert_eq!(r.status, 404, "no listings");
        let r = one(&files, &get("/about.html/"));
        assert_eq!(r.status, 404, "a file is not a directory");
    }

    #[test]
    fn missing_hidden_and_escaping_paths_are_404() {
        let files = site();
        for path in [
            "/missing.html",
            "/data/secret",
            "/DATA/secret",
            "/data",
            "/data/",
            "/tmp/scratch",
            "/docs/../data/secret",
            "/x/%2e%2e/data/secret",
            "/../../etc/passwd",
            "/..%2F..%2Fetc%2Fpasswd",
        ] {
            let (responses, closed) = exchange(&files, &get(path), &[]);
            assert_eq!(responses[0].status, 404, "{path}");
            assert!(!closed, "{path}: 404 keeps the connection");
        }
        assert_eq!(one(&files, &get("/secret.txt")).status, 403);
        assert_eq!(one(&files, &get("/%zz")).status, 400);
        assert_eq!(one(&files, &get("/a%00b")).status, 400);
    }

    #[test]
    fn other_methods_are_405_without_reading_the_body() {
        let files = site();
        let input = "PUT /about.html HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc\
                     GET /style.css HTTP/1.1\r\nHost: x\r\n\r\n";
        let (responses, closed) = exchange(&files, input, &[]);
        assert_eq!(responses.iter().map(|r| r.status).collect::<Vec<_>>(), [405, 200]);
        assert_eq!(responses[0].header("allow"), Some("GET, HEAD"));
        assert!(!closed);
    }

    #[test]
    fn byte_ranges_are_206_and_416() {
        let files = site();
        let all = big();
        let r = one(&files, &ranged("bytes=1000-1999"));
        assert_eq!(r.status, 206);
        assert_eq!(r.header("content-range"), Some("bytes 1000-1999/300000"));
        assert_eq!(r.header("content-length"), Some("1000"));
        assert!(r.body == all[1000..2000]);
        let r = one(&files, &ranged("bytes=299990-"));
        assert_eq!((r.status, r.header("content-range")), (206, Some("bytes 299990-299999/300000")));
        assert!(r.body == all[299_990..]);
        let r = one(&files, &ranged("bytes=-10"));
        assert!(r.status == 206 && r.body == all[299_990..]);
        let r = one(&files, &ranged("bytes=300000-"));
        assert_eq!((r.status, r.header("content-range")), (416, Some("bytes */300000")));
        let r = one(&files, &ranged("bytes=0-1,10-20"));
        assert!(r.status == 200 && r.body == all, "multiple ranges: the whole file");
        let input = "GET /big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1\r\nIf-Range: \"x\"\r\n\r\n";
        assert_eq!(one(&files, input).status, 200);
        let input = "GET /big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1\r\nRange: bytes=2-3\r\n\r\n";
        assert_eq!(one(&files, input).status, 200);
    }

    #[test]
    fn read_errors_close_the_connection_and_seek_errors_are_500() {
        let mut files = site();
        files.tree.fail_after = Some(10_000);
        let mut conn = Connection::with_handler(&Config::default(), &files);
        conn.receive(format!("{}{}", get("/big.bin"), get("/about.html")).as_bytes());
        let mut out = Vec::new();
        drain(&mut conn, &mut [0u8; 4096], &mut out);
        let head = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert_eq!(out.len() - head, 10_000);
        assert!(conn.wants_close());
        let e = conn.take_content_error().unwrap();
        assert!(e.to_string().contains("medium error"), "{e}");

        let mut files = site();
        files.tree.fail_seek = true;
        let r = one(&files, &ranged("bytes=5-"));
        assert_eq!(r.status, 500);
        assert!(r.text().contains("seek failed"));
        assert_eq!(Error::Io("x".into()).to_string(), "filesystem error: x");
    }
}
