//! Host-side symbolisation of the guest's backtraces: the function symbols of the app's ELF (`.symtab`, Rust
//! names demangled) and [`ConsoleFilter`], which appends `function+0xoffset` to the frame lines the guest prints
//! after `backtrace:` (`  N: 0x<address>`, libos `panic.rs` and `arch/x86_64/idt.rs`): the image carries no symbol
//! table of its own to print names with.
//!
//! Frame 0 of an exception is the faulting instruction (`RIP`); every other frame is a return address, looked up
//! one byte earlier so a call at the very end of a function is named after its caller, not the next function.

use std::path::{Path, PathBuf};

use object::{Object, ObjectSection, ObjectSymbol, SectionKind, SymbolKind};

/// Failures of [`Symbols::read`].
#[derive(Debug, thiserror::Error)]
pub enum SymbolsError {
    /// The file cannot be read.
    #[error("{path}: {source}")]
    Io {
        /// The ELF.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not an ELF `object` can read.
    #[error("{path}: {source}")]
    Parse {
        /// The ELF.
        path: PathBuf,
        /// Why.
        source: object::Error,
    },
}

/// One function: `[start, start + size)`; `size` 0 (assembly labels) reaches to the next function.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Function {
    start: u64,
    size: u64,
    name: String,
}

/// The function symbols of an ELF, sorted by address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Symbols {
    functions: Vec<Function>,
}

impl Symbols {
    /// Reads the function symbols of the ELF at `path`. Errors: [`SymbolsError`].
    pub fn read(path: &Path) -> Result<Symbols, SymbolsError> {
        let data = std::fs::read(path).map_err(|source| SymbolsError::Io { path: path.to_owned(), source })?;
        Symbols::parse(&data).map_err(|source| SymbolsError::Parse { path: path.to_owned(), source })
    }

    /// The function symbols of the ELF image `data` (function symbols of `.symtab` and untyped labels in text
    /// sections, names demangled without the hash). An ELF without a symbol table gives none. Errors: not an ELF.
    pub fn parse(data: &[u8]) -> Result<Symbols, object::Error> {
        let file = object::File::parse(data)?;
        let in_text = |s: &object::Symbol<'_, '_>| {
            let section = s.section_index().and_then(|i| file.section_by_index(i).ok());
            section.is_some_and(|sec| sec.kind() == SectionKind::Text)
        };
        // Functions, and the untyped labels of the assembly entry code (`boot_long_mode`, `trap_stub_14`).
        let mut functions: Vec<(bool, Function)> = file
            .symbols()
            .filter(|s| s.is_definition() && s.address() != 0)
            .filter(|s| s.kind() == SymbolKind::Text || (s.kind() == SymbolKind::Unknown && in_text(s)))
            .filter_map(|s| {
                let name = format!("{:#}", rustc_demangle::demangle(s.name().ok()?));
                Some((s.kind() != SymbolKind::Text, Function { start: s.address(), size: s.size(), name }))
            })
            .collect();
        // At one address a function wins over a label, a sized symbol over an empty one.
        functions.sort_by_key(|(label, f)| (f.start, *label, std::cmp::Reverse(f.size)));
        functions.dedup_by_key(|(_, f)| f.start);
        let functions = functions.into_iter().map(|(_, f)| f).collect();
        Ok(Symbols { functions })
    }

    /// How many functions there are.
    pub fn len(&self) -> usize {
        self.functions.len()
    }

    /// True when there are none (a stripped ELF).
    pub fn is_empty(&self) -> bool {
        self.functions.is_empty()
    }

    /// The function holding `addr` and the offset of `addr` in it, e.g. `("libos::task::run", 0x24)`.
    pub fn lookup(&self, addr: u64) -> Option<(&str, u64)> {
        let i = self.functions.partition_point(|f| f.start <= addr).checked_sub(1)?;
        let f = &self.functions[i];
        let end = match f.size {
            0 => self.functions.get(i + 1).map_or(u64::MAX, |next| next.start),
            size => f.start.saturating_add(size),
        };
        (addr < end).then(|| (f.name.as_str(), addr - f.start))
    }

    /// ` name+0xoff` for the frame at `addr` (a return address unless `exact`), or `None` when no function
    /// holds it.
    fn describe(&self, addr: u64, exact: bool) -> Option<String> {
        let at = if exact { addr } else { addr.checked_sub(1)? };
        let (name, off) = self.lookup(at)?;
        Some(format!(" {name}+{:#x}", off + (addr - at)))
    }
}

/// The frame number and address of a backtrace line `  N: 0xADDR`, as libos prints it.
pub fn frame_line(line: &str) -> Option<(usize, u64)> {
    let (n, addr) = line.trim_start().split_once(": 0x")?;
    let n = n.parse().ok()?;
    let addr = u64::from_str_radix(addr.trim_end(), 16).ok()?;
    Some((n, addr))
}

/// Copies the guest's console through, appending ` function+0xoff` to the frame lines of its backtraces. Bytes
/// pass at once (a prompt without a newline is not held back); only a line-ending `\r` waits for the byte after
/// it, so the name goes before the line break.
#[derive(Debug)]
pub struct ConsoleFilter {
    symbols: Symbols,
    /// The current line so far (for matching).
    line: Vec<u8>,
    /// A `\r` not yet written.
    pending_cr: bool,
    /// Inside a backtrace: after a `backtrace:` line, until a line that is not a frame.
    in_backtrace: bool,
    /// The backtrace follows an `EXCEPTION` line, so its frame 0 is the faulting RIP.
    after_exception: bool,
}

impl ConsoleFilter {
    /// A filter naming addresses from `symbols`.
    pub fn new(symbols: Symbols) -> ConsoleFilter {
        ConsoleFilter { symbols, line: Vec::new(), pending_cr: false, in_backtrace: false, after_exception: false }
    }

    /// Appends what to print for the console bytes `input` to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for &b in input {
            match b {
                b'\r' => {
                    if self.pending_cr {
                        out.push(b'\r');
                    }
                    self.pending_cr = true;
                }
                b'\n' => {
                    if let Some(note) = self.end_of_line() {
                        out.extend_from_slice(note.as_bytes());
                    }
                    if std::mem::take(&mut self.pending_cr) {
                        out.push(b'\r');
                    }
                    out.push(b'\n');
                    self.line.clear();
                }
                _ => {
                    if std::mem::take(&mut self.pending_cr) {
                        out.push(b'\r');
                    }
                    out.push(b);
                    self.line.push(b);
                }
            }
        }
    }

    /// Tracks backtraces at the end of a line; returns the annotation for a frame line.
    fn end_of_line(&mut self) -> Option<String> {
        let text = String::from_utf8_lossy(&self.line);
        let line = text.trim();
        if line.starts_with("EXCEPTION ") {
            self.after_exception = true;
        }
        if line == "backtrace:" {
            self.in_backtrace = true;
            return None;
        }
        if !self.in_backtrace {
            return None;
        }
        match frame_line(line) {
            Some((n, addr)) => self.symbols.describe(addr, n == 0 && self.after_exception),
            None => {
                self.in_backtrace = false;
                self.after_exception = false;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn symbols() -> Symbols {
        let f = |start, size, name: &str| Function { start, size, name: name.into() };
        Symbols {
            functions: vec![
                f(0x10_0000, 0, "pvh_start32"),
                f(0x10_0100, 0x80, "libos::start::rust_start"),
                f(0x10_0180, 0x40, "hello::run"),
                f(0x10_0200, 0x10, "core::panicking::panic"),
            ],
        }
    }

    #[test]
    fn lookup_by_address() {
        let s = symbols();
        assert_eq!(s.lookup(0x10_0050), Some(("pvh_start32", 0x50)), "size 0 reaches the next symbol");
        assert_eq!(s.lookup(0x10_0180), Some(("hello::run", 0)));
        assert_eq!(s.lookup(0x10_01bf), Some(("hello::run", 0x3f)));
        assert_eq!(s.lookup(0x10_0210), None, "past the last function's end");
        assert_eq!(s.lookup(0xfff), None);
        // A return address right after a call that ends `rust_start` belongs to it, not to `hello::run`.
        assert_eq!(s.describe(0x10_0180, false).as_deref(), Some(" libos::start::rust_start+0x80"));
        assert_eq!(s.describe(0x10_0180, true).as_deref(), Some(" hello::run+0x0"));
    }

    #[test]
    fn frame_lines() {
        assert_eq!(frame_line("  3: 0x0000000000100abc"), Some((3, 0x10_0abc)));
        assert_eq!(frame_line("  3: 0x0000000000100abc\r"), Some((3, 0x10_0abc)));
        assert_eq!(frame_line("EXCEPTION Page fault (vector 14) error=0x3 RIP=0x1"), None);
        assert_eq!(frame_line("  RAX=0000000000000000"), None);
    }

    #[test]
    fn annotates_only_backtrace_frames() {
        let mut f = ConsoleFilter::new(symbols());
        let console = "args: [\"a\"]\r\n  0: 0x0000000000100190\r\n\
                       EXCEPTION Divide error (vector 0) error=0x0 RIP=0x0000000000100180 CR2=0x0\r\n\
                       backtrace:\r\n  0: 0x0000000000100180\r\n  1: 0x0000000000100180\r\n  2: 0x0000000000999999\r\n\
                       exit status 102\r\n  0: 0x0000000000100190\n";
        let mut out = Vec::new();
        // Split anywhere, including between `\r` and `\n`: the output is the same.
        for chunk in console.as_bytes().chunks(7) {
            f.feed(chunk, &mut out);
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "args: [\"a\"]\r\n  0: 0x0000000000100190\r\n\
             EXCEPTION Divide error (vector 0) error=0x0 RIP=0x0000000000100180 CR2=0x0\r\n\
             backtrace:\r\n  0: 0x0000000000100180 hello::run+0x0\r\n\
             \x20 1: 0x0000000000100180 libos::start::rust_start+0x80\r\n  2: 0x0000000000999999\r\n\
             exit status 102\r\n  0: 0x0000000000100190\n"
        );
        // A panic's backtrace (no EXCEPTION line): frame 0 is a return address too.
        let mut out = Vec::new();
        f.feed(b"backtrace:\n  0: 0x0000000000100180\nlone\r", &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "backtrace:\n  0: 0x0000000000100180 libos::start::rust_start+0x80\nlone"
        );
    }

    #[test]
    fn reads_this_binary() {
        // The test binary is an ELF with a symbol table; this function is in it.
        let exe = std::env::current_exe().unwrap();
        let s = Symbols::read(&exe).unwrap();
        assert!(s.len() > 100);
        assert!(s.functions.iter().any(|f| f.name.ends_with("symbols::tests::reads_this_binary")));
    }
}
