//! `cargo zirvium test`: a std app's `#[test]`s (its libtest harness, [`crate::stdapp::build_test_image`]) run
//! in VMs under QEMU and reported as `cargo test` reports them, with cargo's exit status (0 all passed, 101 a
//! test failed; else the VM's: 124 timeout, 125 QEMU failed).
//!
//! The Hermit target's std aborts on panic, so the first failing test ends its VM. The harness runs in-process,
//! one test at a time (`--test-threads=1 --nocapture`), printing libtest's JSON events (`--format json`, with
//! `-Zunstable-options`); the host follows them: a test that `started` and never finished before the VM ended
//! failed, and the lines printed since it started are its output. Then `--list` names every test (one more
//! boot) and the tests not yet run boot again (`--exact NAME...`), until all ran: one boot when all pass, two
//! plus one per failure otherwise. On a rerun only the harness flags `--ignored`, `--include-ignored` and
//! `--show-output` of the user's arguments are kept (the names already select the tests).

use std::time::{Duration, Instant};

use crate::cargo::BuildError;
use crate::error::Error;
use crate::exit::{Outcome, TIMEOUT_EXIT};
use crate::qemu::{host, Accel};
use crate::run::{resolve_initrd, RunArgs};
use crate::stdapp::TEST_HARNESS_ARGS;

/// `cargo test`'s exit status when a test failed (as its harness exits).
pub const TEST_FAILED_EXIT: u8 = 101;

/// Each boot's bound when no `--timeout` is given, in seconds.
pub const DEFAULT_BOOT_TIMEOUT_SECS: u64 = 600;

/// What one test did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TestOutcome {
    /// Passed.
    Ok,
    /// Not run (`#[ignore]`).
    Ignored,
    /// Failed, with the lines it printed (its panic message among them).
    Failed(Vec<String>),
}

/// One libtest JSON event line, as far as the runner needs it (libtest `formatters/json.rs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// `{"type":"suite","event":"started","test_count":N}`.
    SuiteStarted(usize),
    /// `{"type":"test","event":"started","name":...}`.
    Started(String),
    /// `{"type":"test","event":"ok"|"ignored"|"failed",...}`.
    Finished(String, TestOutcome),
    /// `{"type":"suite","event":"ok"|"failed",...,"filtered_out":N}`.
    SuiteFinished {
        /// Tests left out by the filters.
        filtered_out: usize,
    },
}

/// The libtest event in console line `line`, if it holds one (test output may precede it on the same line).
pub fn parse_event(line: &str) -> Option<Event> {
    let at = line.find("{ \"type\"").or_else(|| line.find("{\"type\""))?;
    let v: serde_json::Value = serde_json::from_str(line[at..].trim_end()).ok()?;
    let name = || v["name"].as_str().unwrap_or_default().to_owned();
    match (v["type"].as_str()?, v["event"].as_str()?) {
        ("suite", "started") => Some(Event::SuiteStarted(v["test_count"].as_u64().unwrap_or(0) as usize)),
        ("suite", _) => Some(Event::SuiteFinished { filtered_out: v["filtered_out"].as_u64().unwrap_or(0) as usize }),
        ("test", "started") => Some(Event::Started(name())),
        ("test", "ok") => Some(Event::Finished(name(), TestOutcome::Ok)),
        ("test", "ignored") => Some(Event::Finished(name(), TestOutcome::Ignored)),
        ("test", "failed") => {
            let stdout = v["stdout"].as_str().unwrap_or_default().lines().map(str::to_owned).collect();
            Some(Event::Finished(name(), TestOutcome::Failed(stdout)))
        }
        _ => None,
    }
}

/// The names `--list --format terse` printed (`NAME: test`), in order.
pub fn parse_list(lines: &[String]) -> Vec<String> {
    lines.iter().filter_map(|l| l.strip_suffix(": test").map(str::to_owned)).collect()
}

/// The tests of a whole `cargo zirvium test` run, in the order they ran.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Each test's name and outcome.
    pub tests: Vec<(String, TestOutcome)>,
    /// Tests the user's filters left out (from the first boot's suite event; 0 when that boot aborted).
    pub filtered_out: usize,
}

impl Report {
    /// The text `cargo test` prints for these results, from `running N tests` to `test result:`, taking
    /// `elapsed`.
    pub fn render(&self, elapsed: Duration) -> String {
        let mut out = format!("\nrunning {} test{}\n", self.tests.len(), if self.tests.len() == 1 { "" } else { "s" });
        let count = |f: fn(&TestOutcome) -> bool| self.tests.iter().filter(|(_, o)| f(o)).count();
        for (name, outcome) in &self.tests {
            let word = match outcome {
                TestOutcome::Ok => "ok",
                TestOutcome::Ignored => "ignored",
                TestOutcome::Failed(_) => "FAILED",
            };
            out.push_str(&format!("test {name} ... {word}\n"));
        }
        let failed: Vec<(&String, &Vec<String>)> = self
            .tests
            .iter()
            .filter_map(|(n, o)| match o {
                TestOutcome::Failed(lines) => Some((n, lines)),
                _ => None,
            })
            .collect();
        if !failed.is_empty() {
            out.push_str("\nfailures:\n\n");
            for (name, lines) in &failed {
                out.push_str(&format!("---- {name} stdout ----\n"));
                let first = lines.iter().position(|l| !l.trim().is_empty()).unwrap_or(lines.len());
                let end = lines.iter().rposition(|l| !l.trim().is_empty()).map_or(first, |i| i + 1);
                for l in &lines[first..end.max(first)] {
                    out.push_str(l);
                    out.push('\n');
                }
                out.push('\n');
            }
            out.push_str("\nfailures:\n");
            for (name, _) in &failed {
                out.push_str(&format!("    {name}\n"));
            }
        }
        out.push_str(&format!(
            "\ntest result: {}. {} passed; {} failed; {} ignored; 0 measured; {} filtered out; finished in {:.2}s\n",
            if failed.is_empty() { "ok" } else { "FAILED" },
            count(|o| *o == TestOutcome::Ok),
            failed.len(),
            count(|o| *o == TestOutcome::Ignored),
            self.filtered_out,
            elapsed.as_secs_f64()
        ));
        out
    }

    /// The exit status of the run: 0 when no test failed, else [`TEST_FAILED_EXIT`].
    pub fn exit_code(&self) -> u8 {
        if self.tests.iter().any(|(_, o)| matches!(o, TestOutcome::Failed(_))) {
            TEST_FAILED_EXIT
        } else {
            0
        }
    }
}

/// What one boot of the harness showed.
#[derive(Debug, Default)]
struct Boot {
    /// Tests that finished, in order.
    finished: Vec<(String, TestOutcome)>,
    /// The test that started and did not finish, with the lines printed since.
    running: Option<(String, Vec<String>)>,
    /// `SuiteFinished`'s filtered-out count, when the suite finished.
    filtered_out: Option<usize>,
    /// Every console line (for `--list` and for reports when the harness never started).
    lines: Vec<String>,
    /// Whether the suite started.
    started: bool,
}

impl Boot {
    fn feed(&mut self, line: &str) {
        self.lines.push(line.to_owned());
        match parse_event(line) {
            Some(Event::SuiteStarted(_)) => self.started = true,
            Some(Event::Started(name)) => self.running = Some((name, Vec::new())),
            Some(Event::Finished(name, outcome)) => {
                let printed = self.running.take().map(|(_, l)| l).unwrap_or_default();
                let outcome = match outcome {
                    TestOutcome::Failed(mut l) if l.is_empty() => {
                        l.extend(printed);
                        TestOutcome::Failed(l)
                    }
                    other => other,
                };
                self.finished.push((name, outcome));
            }
            Some(Event::SuiteFinished { filtered_out }) => self.filtered_out = Some(filtered_out),
            None => {
                if let Some((_, printed)) = &mut self.running {
                    printed.push(line.to_owned());
                }
            }
        }
    }
}

/// User harness arguments kept on a rerun (flags that do not select by name).
const KEPT_ON_RERUN: [&str; 3] = ["--ignored", "--include-ignored", "--show-output"];

/// `cargo zirvium test` (`images test`): see the module docs. Returns the exit code. Errors: no app crate or
/// not a std app, bad options, QEMU missing, the build, QEMU not starting.
pub fn test(args: &RunArgs) -> Result<u8, Error> {
    if args.hypervisor != crate::run::Hypervisor::Qemu || args.image.is_some() {
        return Err(Error::Config(crate::qemu::ConfigError::QemuOnly("test")));
    }
    let app = crate::project::resolve(&args.selection()).map_err(BuildError::from)?;
    args.options(Accel::Tcg, &[])?;
    host::ensure_qemu(&mut |m| eprintln!("images: {m}"))?;
    let (accel, why) = host::choose_accel(args.accel)?;
    let initrd = resolve_initrd(&app, args.initrd.as_deref())?;
    let profile = crate::cargo::Profile::from_debug(args.debug);
    let image = crate::stdapp::build_test_image(&app, profile, initrd.as_deref()).map_err(BuildError::from)?;
    eprintln!("     Running unittests {} in a VM (QEMU, accel {accel}: {why})", image.path.display());
    let timeout = Duration::from_secs(args.timeout.unwrap_or(DEFAULT_BOOT_TIMEOUT_SECS));
    let start = Instant::now();
    let boot = |harness_args: Vec<String>| -> Result<(Boot, Option<Outcome>, String), Error> {
        let mut opts = args.options(accel, &[])?;
        opts.kernel = image.path.clone();
        opts.initrd = None;
        opts.app_args = TEST_HARNESS_ARGS.iter().map(|a| a.to_string()).chain(harness_args).collect();
        opts.validate()?;
        let mut b = Boot::default();
        let (outcome, stderr) =
            crate::qemu::run::boot_lines(&opts, Some(Instant::now() + timeout), &mut |l| b.feed(l))?;
        Ok((b, outcome, stderr))
    };
    let json = ["--format", "json", "--test-threads=1", "--nocapture"].map(str::to_owned);
    let mut report = Report::default();
    let mut selection: Vec<String> = args.app_args.clone();
    let mut first = true;
    loop {
        let (b, outcome, stderr) = boot(json.iter().cloned().chain(selection.iter().cloned()).collect())?;
        let Some(outcome) = outcome else {
            eprintln!("images: timeout after {} s; QEMU stopped", timeout.as_secs());
            print!("{}", report.render(start.elapsed()));
            return Ok(TIMEOUT_EXIT);
        };
        if !b.started {
            // The harness never ran: show what the VM said.
            for l in &b.lines {
                eprintln!("{l}");
            }
            eprintln!("images: the test harness did not start: {outcome}{}", qemu_stderr(&outcome, &stderr));
            return Ok(if outcome.exit_code() == 0 { TEST_FAILED_EXIT } else { outcome.exit_code() });
        }
        if first {
            report.filtered_out = b.filtered_out.unwrap_or(0);
        }
        report.tests.extend(b.finished);
        let Some((crashed, printed)) = b.running else {
            if let Outcome::QemuFailed { .. } = outcome {
                eprintln!("images: {outcome}{}", qemu_stderr(&outcome, &stderr));
                return Ok(outcome.exit_code());
            }
            break;
        };
        report.tests.push((crashed, TestOutcome::Failed(printed)));
        // The tests not run yet: all of them (by the user's filters) minus those done.
        let list: Vec<String> = ["--list", "--format", "terse"].iter().map(|a| a.to_string()).collect();
        let (listed, _, _) = boot(list.into_iter().chain(args.app_args.iter().cloned()).collect())?;
        let remaining: Vec<String> =
            parse_list(&listed.lines).into_iter().filter(|n| !report.tests.iter().any(|(done, _)| done == n)).collect();
        if remaining.is_empty() {
            break;
        }
        let kept = args.app_args.iter().filter(|a| KEPT_ON_RERUN.contains(&a.as_str())).cloned();
        selection = kept.chain(["--exact".to_owned()]).chain(remaining).collect();
        first = false;
    }
    print!("{}", report.render(start.elapsed()));
    Ok(report.exit_code())
}

/// `; QEMU's stderr: ...` for a QEMU failure, else nothing.
fn qemu_stderr(outcome: &Outcome, stderr: &str) -> String {
    match outcome {
        Outcome::QemuFailed { .. } => format!("; QEMU's stderr:\n{}", stderr.trim_end()),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libtest_json_events() {
        assert_eq!(
            parse_event(r#"{ "type": "suite", "event": "started", "test_count": 3 }"#),
            Some(Event::SuiteStarted(3))
        );
        assert_eq!(
            parse_event(r#"some output{ "type": "test", "event": "started", "name": "tests::a" }"#),
            Some(Event::Started("tests::a".into()))
        );
        assert_eq!(
            parse_event(r#"{ "type": "test", "name": "tests::a", "event": "ok", "exec_time": 0.01 }"#),
            Some(Event::Finished("tests::a".into(), TestOutcome::Ok))
        );
        assert_eq!(
            parse_event(r#"{ "type": "test", "name": "b", "event": "ignored" }"#),
            Some(Event::Finished("b".into(), TestOutcome::Ignored))
        );
        let suite = r#"{ "type": "suite", "event": "ok", "passed": 2, "failed": 0, "ignored": 0, "measured": 0, "filtered_out": 4, "exec_time": 0.5 }"#;
        assert_eq!(parse_event(suite), Some(Event::SuiteFinished { filtered_out: 4 }));
        assert_eq!(parse_event("[    0.1] libos: booted"), None);
        assert_eq!(parse_event("{ \"type\": broken"), None);
        assert_eq!(parse_list(&["a: test".into(), "b::c: test".into(), "2 tests, 0 benchmarks".into()]), ["a", "b::c"]);
    }

    #[test]
    fn a_test_that_never_finished_failed_with_its_output() {
        let mut b = Boot::default();
        for l in [
            "libos: boot line",
            r#"{ "type": "suite", "event": "started", "test_count": 2 }"#,
            r#"{ "type": "test", "event": "started", "name": "a" }"#,
            r#"{ "type": "test", "name": "a", "event": "ok" }"#,
            r#"{ "type": "test", "event": "started", "name": "b" }"#,
            "thread 'b' panicked at src/main.rs:3:5:",
            "boom",
            "std: abort",
        ] {
            b.feed(l);
        }
        assert!(b.started);
        assert_eq!(b.finished, [("a".to_owned(), TestOutcome::Ok)]);
        let (name, printed) = b.running.unwrap();
        assert_eq!((name.as_str(), printed.len()), ("b", 3));
    }

    #[test]
    fn renders_as_cargo_test_does() {
        let report = Report {
            tests: vec![
                ("a".into(), TestOutcome::Ok),
                (
                    "b".into(),
                    TestOutcome::Failed(vec!["thread 'b' panicked at src/main.rs:3:5:".into(), "boom".into()]),
                ),
                ("c".into(), TestOutcome::Ignored),
            ],
            filtered_out: 1,
        };
        let text = report.render(Duration::from_millis(1500));
        assert!(
            text.starts_with("\nrunning 3 tests\ntest a ... ok\ntest b ... FAILED\ntest c ... ignored\n"),
            "{text}"
        );
        assert!(text.contains("\nfailures:\n\n---- b stdout ----\nthread 'b' panicked at src/main.rs:3:5:\nboom\n"));
        assert!(text.contains("\nfailures:\n    b\n"), "{text}");
        assert!(
            text.ends_with(
                "test result: FAILED. 1 passed; 1 failed; 1 ignored; 0 measured; 1 filtered out; finished in 1.50s\n"
            ),
            "{text}"
        );
        assert_eq!(report.exit_code(), TEST_FAILED_EXIT);
        let ok = Report { tests: vec![("a".into(), TestOutcome::Ok)], filtered_out: 0 };
        assert!(ok.render(Duration::ZERO).contains("running 1 test\n"));
        assert_eq!(ok.exit_code(), 0);
    }
}
