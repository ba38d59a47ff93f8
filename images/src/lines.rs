//! A child process's console as lines: the stdout of a nested host's QEMU (its serial console) split into lines
//! as they arrive and handed to the runner with a bounded wait, the stderr kept whole for the failure report, the
//! whole console written to a log file and the last lines kept for errors. Used by `images run --hypervisor xen`
//! (nested) and `--hypervisor hyperv`.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Copies `from` to `to` as it arrives and hands each complete line (lossy UTF-8, no line end) to `line`; stops at
/// the end of `from` or when `line` fails.
pub fn forward_lines<E>(mut from: impl Read, to: &mut impl Write, mut line: impl FnMut(String) -> Result<(), E>) {
    let mut buf = [0u8; 4096];
    let mut pending = Vec::new();
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 {
            break;
        }
        let _ = to.write_all(&buf[..n]).and_then(|_| to.flush());
        pending.extend_from_slice(&buf[..n]);
        while let Some(i) = pending.iter().position(|&b| b == b'\n') {
            let l: Vec<u8> = pending.drain(..=i).collect();
            let text = String::from_utf8_lossy(&l).trim_end_matches(['\n', '\r']).to_owned();
            if line(text).is_err() {
                return;
            }
        }
    }
}

/// The last lines of a console, for error reports.
#[derive(Debug, Default, Clone)]
pub struct Tail {
    lines: VecDeque<String>,
    keep: usize,
}

impl Tail {
    /// Keeps the last `keep` lines.
    pub fn new(keep: usize) -> Self {
        Tail { lines: VecDeque::new(), keep }
    }

    /// Adds a line, forgetting the oldest beyond the limit.
    pub fn push(&mut self, line: &str) {
        if self.lines.len() == self.keep {
            self.lines.pop_front();
        }
        if self.keep > 0 {
            self.lines.push_back(line.to_owned());
        }
    }

    /// The kept lines, oldest first.
    pub fn lines(&self) -> impl Iterator<Item = &str> {
        self.lines.iter().map(String::as_str)
    }
}

/// What [`ConsoleChild::next_line`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// A console line (also written to the log).
    Line(String),
    /// The child closed its stdout (it exited).
    Closed,
    /// The deadline passed first; the child was killed.
    Deadline,
}

/// A spawned child whose stdout is read as lines (logged) and whose stderr is collected.
pub struct ConsoleChild {
    child: Child,
    rx: mpsc::Receiver<String>,
    reader: Option<JoinHandle<()>>,
    err_reader: Option<JoinHandle<String>>,
    log: Option<File>,
}

impl ConsoleChild {
    /// Spawns `cmd` with stdout and stderr piped (stdin as the caller set it), logging every line to `log`.
    /// Errors: the program could not be started.
    pub fn spawn(cmd: &mut Command, log: Option<File>) -> std::io::Result<Self> {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn()?;
        let (tx, rx) = mpsc::channel::<String>();
        let out = child.stdout.take();
        let reader = std::thread::spawn(move || {
            if let Some(out) = out {
                forward_lines(out, &mut std::io::sink(), |l| tx.send(l));
            }
        });
        let err = child.stderr.take();
        let err_reader = std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut err) = err {
                let _ = err.read_to_string(&mut text);
            }
            text
        });
        Ok(ConsoleChild { child, rx, reader: Some(reader), err_reader: Some(err_reader), log })
    }

    /// The child's stdin, if the caller piped it.
    pub fn stdin(&mut self) -> Option<&mut std::process::ChildStdin> {
        self.child.stdin.as_mut()
    }

    /// The next console line, waiting until `deadline` (unbounded with `None`); on the deadline the child is
    /// killed and reaped.
    pub fn next_line(&mut self, deadline: Option<Instant>) -> Next {
        loop {
            match self.rx.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    if let Some(log) = &mut self.log {
                        let _ = writeln!(log, "{line}");
                    }
                    return Next::Line(line);
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return Next::Closed,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        self.kill();
                        return Next::Deadline;
                    }
                }
            }
        }
    }

    /// Kills the child (by its own pid) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the child to exit after its stdout closed; returns its status and its whole stderr (also
    /// appended to the log). Errors: waiting failed.
    pub fn finish(mut self) -> std::io::Result<(ExitStatus, String)> {
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let status = self.child.wait()?;
        let stderr = self.err_reader.take().and_then(|r| r.join().ok()).unwrap_or_default();
        if let Some(log) = &mut self.log {
            let _ = write!(log, "--- qemu stderr ---\n{stderr}--- {status} ---\n");
        }
        Ok((status, stderr))
    }
}

impl ConsoleChild {
    /// Hands every console line to `on_line` until the child closes its stdout, keeping the last `keep` lines; on
    /// the deadline prints the timeout (naming the log `log`), kills the child and returns `None`.
    pub fn run_to_end(
        &mut self,
        deadline: Option<Instant>,
        keep: usize,
        log: &Path,
        mut on_line: impl FnMut(&str),
    ) -> Option<Tail> {
        let started = Instant::now();
        let mut tail = Tail::new(keep);
        loop {
            match self.next_line(deadline) {
                Next::Line(line) => {
                    tail.push(&line);
                    on_line(&line);
                }
                Next::Closed => return Some(tail),
                Next::Deadline => {
                    let secs = started.elapsed().as_secs_f64();
                    eprintln!("images: timeout after {secs:.0} s; QEMU stopped (console: {})", log.display());
                    return None;
                }
            }
        }
    }
}

/// Prints that the nested host (`what`, e.g. `Xen/dom0`) stopped before its guest ended, with the last console
/// lines, the log file and QEMU's stderr.
pub fn print_failure(what: &str, status: ExitStatus, tail: &Tail, log: &Path, stderr: &str) {
    eprintln!(
        "images: {what} stopped ({status}) before the guest ended; last console lines (all in {}):",
        log.display()
    );
    for l in tail.lines() {
        eprintln!("  {l}");
    }
    if !stderr.trim().is_empty() {
        eprintln!("images: QEMU's stderr:\n{}", stderr.trim_end());
    }
}

/// Creates `dir/NAME.log` (and `dir`) for a run's console. Errors: the directory or file cannot be created.
pub fn create_log(dir: &Path, name: &str) -> std::io::Result<(PathBuf, File)> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{name}.log"));
    let file = File::create(&path)?;
    Ok((path, file))
}

impl Drop for ConsoleChild {
    fn drop(&mut self) {
        // A runner that returns early (an error, a deadline) leaves no QEMU behind.
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_lines_copies_and_splits() {
        let mut copy = Vec::new();
        let mut lines = Vec::new();
        forward_lines(&b"a\r\nb\npartial"[..], &mut copy, |l| {
            lines.push(l);
            Ok::<(), ()>(())
        });
        assert_eq!(copy, b"a\r\nb\npartial");
        assert_eq!(lines, ["a", "b"]);
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let mut t = Tail::new(2);
        for l in ["a", "b", "c"] {
            t.push(l);
        }
        assert_eq!(t.lines().collect::<Vec<_>>(), ["b", "c"]);
        let mut none = Tail::new(0);
        none.push("x");
        assert_eq!(none.lines().count(), 0);
    }

    #[test]
    fn console_child_lines_status_and_deadline() {
        let mut c =
            ConsoleChild::spawn(Command::new("sh").args(["-c", "echo one; echo two; echo err >&2; exit 3"]), None)
                .unwrap();
        assert_eq!(c.next_line(None), Next::Line("one".into()));
        assert_eq!(c.next_line(None), Next::Line("two".into()));
        assert_eq!(c.next_line(None), Next::Closed);
        let (status, stderr) = c.finish().unwrap();
        assert_eq!((status.code(), stderr.as_str()), (Some(3), "err\n"));
        let mut slow = ConsoleChild::spawn(Command::new("sleep").arg("30"), None).unwrap();
        let t0 = Instant::now();
        assert_eq!(slow.next_line(Some(Instant::now() + Duration::from_millis(300))), Next::Deadline);
        assert!(t0.elapsed() < Duration::from_secs(10));
    }
}
