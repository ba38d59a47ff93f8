//! Commands as shell-quoted lines, for logs and error messages: what a person can paste into a shell (POSIX sh
//! quoting, "Shell Command Language" §2.2.3).

use std::ffi::OsStr;
use std::process::Command;

/// `cmd` as one shell-quoted line, program first: `qemu-system-x86_64 -M microvm,acpi=off ... -append 'a b'`.
/// Environment and working directory are not included.
pub fn shell_line(cmd: &Command) -> String {
    std::iter::once(cmd.get_program()).chain(cmd.get_args()).map(shell_quote).collect::<Vec<_>>().join(" ")
}

/// `word` as is when it has only characters the shell takes literally, else in single quotes (a `'` inside
/// becomes `'\''`). Non-UTF-8 bytes are replaced (lossy), as the line is only shown.
pub fn shell_quote(word: &OsStr) -> String {
    let s = word.to_string_lossy();
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-./,:=@%+".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// `text` on one line, for error messages that must stay one line: its lines trimmed, empty ones dropped, joined
/// with a space (`missing x; install with:\n  apt-get ...` → `missing x; install with: apt-get ...`).
pub fn one_line(text: &str) -> String {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_only_what_needs_it() {
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-M", "microvm,acpi=off", "-append", "-- a it's", ""]);
        assert_eq!(shell_line(&cmd), r"qemu-system-x86_64 -M microvm,acpi=off -append '-- a it'\''s' ''");
    }

    #[test]
    fn one_line_joins_lines() {
        assert_eq!(
            one_line("missing x; install with:\n  apt-get install x\n"),
            "missing x; install with: apt-get install x"
        );
    }
}
