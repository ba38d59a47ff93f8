//! A QMP client (QEMU Machine Protocol, QEMU `docs/interop/qmp-spec.rst`): JSON objects over a TCP stream, one
//! per line. After the greeting (`{"QMP": ...}`) the client sends `qmp_capabilities`; each command gets one
//! `{"return": ...}` or `{"error": {"class", "desc"}}`, and asynchronous `{"event": ...}` objects may come in
//! between (kept in [`Qmp::events`]).

use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Why a QMP exchange failed.
#[derive(Debug)]
pub enum QmpError {
    /// The connection failed or closed.
    Io(std::io::Error),
    /// The server sent something that is not QMP (`what` says what was expected).
    Protocol(String),
    /// The command failed: QMP's error class and description.
    Command {
        /// The command.
        command: String,
        /// `error.class`, e.g. `GenericError`.
        class: String,
        /// `error.desc`.
        desc: String,
    },
}

impl fmt::Display for QmpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QmpError::Io(e) => write!(f, "QMP: {e}"),
            QmpError::Protocol(what) => write!(f, "QMP: {what}"),
            QmpError::Command { command, class, desc } => write!(f, "QMP {command}: {class}: {desc}"),
        }
    }
}

impl std::error::Error for QmpError {}

impl From<std::io::Error> for QmpError {
    fn from(e: std::io::Error) -> Self {
        QmpError::Io(e)
    }
}

/// A QMP session in command mode.
pub struct Qmp {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
    /// Events received so far, oldest first.
    pub events: Vec<Value>,
}

impl Qmp {
    /// Connects to `127.0.0.1:port` and enters command mode, retrying (every 0.5 s, until `within` has passed)
    /// while the server is not there yet: a forward through QEMU's user network accepts the connection and closes
    /// it while nothing listens behind it. Errors: the last failure once the time is up.
    pub fn connect(port: u16, within: Duration) -> Result<Qmp, QmpError> {
        let deadline = Instant::now() + within;
        loop {
            match Self::try_connect(port) {
                Ok(q) => return Ok(q),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        }
    }

    fn try_connect(port: u16) -> Result<Qmp, QmpError> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut q = Qmp { writer: stream.try_clone()?, reader: BufReader::new(stream), events: Vec::new() };
        let greeting = q.read_object()?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Protocol(format!("expected the greeting, got {greeting}")));
        }
        q.execute("qmp_capabilities", None)?;
        Ok(q)
    }

    fn read_object(&mut self) -> Result<Value, QmpError> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(QmpError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        serde_json::from_str(&line).map_err(|e| QmpError::Protocol(format!("{e} in {line:?}")))
    }

    /// Runs `command` with `arguments` and returns its `return` value (events that arrive meanwhile are kept).
    /// Errors: connection failures, the command's error.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, QmpError> {
        let mut req = json!({ "execute": command });
        if let Some(a) = arguments {
            req["arguments"] = a;
        }
        writeln!(self.writer, "{req}")?;
        loop {
            let v = self.read_object()?;
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
                return Err(QmpError::Command { command: command.to_owned(), class: s("class"), desc: s("desc") });
            }
            if v.get("event").is_some() {
                self.events.push(v);
                continue;
            }
            return Err(QmpError::Protocol(format!("unexpected {v}")));
        }
    }

    /// `balloon`: asks the guest's balloon driver for a target size of `bytes` of guest RAM.
    pub fn balloon(&mut self, bytes: u64) -> Result<(), QmpError> {
        self.execute("balloon", Some(json!({ "value": bytes }))).map(drop)
    }

    /// `query-balloon`: the guest RAM the balloon device reports (`actual`, bytes).
    pub fn balloon_actual(&mut self) -> Result<u64, QmpError> {
        let r = self.execute("query-balloon", None)?;
        r.get("actual").and_then(Value::as_u64).ok_or_else(|| QmpError::Protocol(format!("query-balloon: {r}")))
    }
}
