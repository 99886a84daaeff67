//! Running helper processes with error messages that say which command
//! failed and how.

use std::ffi::OsStr;
use std::process::{Command, ExitStatus, Stdio};

use anyhow::{Context, Result, bail};

/// Renders a command as a shell-like line for messages.
pub fn describe(cmd: &Command) -> String {
    let mut line = quote(cmd.get_program());
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&quote(arg));
    }
    line
}

fn quote(word: &OsStr) -> String {
    let word = word.to_string_lossy();
    if word.is_empty() || word.contains(|c: char| c.is_whitespace() || c == '"') {
        format!("{word:?}")
    } else {
        word.into_owned()
    }
}

/// Runs a command with inherited stdio; an error names the command and its
/// exit status.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = status(cmd)?;
    check(cmd, status)
}

/// Runs a command with inherited stdio and returns its exit status; only a
/// failure to start it is an error.
pub fn status(cmd: &mut Command) -> Result<ExitStatus> {
    cmd.status()
        .with_context(|| format!("could not start `{}`", describe(cmd)))
}

/// Turns a non-success exit status into an error naming the command.
pub fn check(cmd: &Command, status: ExitStatus) -> Result<()> {
    if status.success() {
        Ok(())
    } else {
        bail!("`{}` failed: {status}", describe(cmd))
    }
}

/// Runs a command and returns its standard output; on failure the error
/// carries the exit status and the command's standard error.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not start `{}`", describe(cmd)))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        bail!(
            "`{}` failed: {}\n{}",
            describe(cmd),
            out.status,
            stderr.trim_end()
        );
    }
    String::from_utf8(out.stdout)
        .with_context(|| format!("`{}` printed non-UTF-8 output", describe(cmd)))
}

/// True when the command starts and exits with success; its output is
/// discarded. For probes such as `dpkg -s NAME`.
pub fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_quotes_words_with_spaces() {
        let mut cmd = Command::new("cargo");
        cmd.args(["build", "a b", ""]);
        assert_eq!(describe(&cmd), r#"cargo build "a b" """#);
    }

    #[test]
    fn run_reports_the_failing_command() {
        let err = run(Command::new("false").arg("x")).unwrap_err();
        assert!(err.to_string().contains("`false x` failed"), "{err}");
    }

    #[test]
    fn output_returns_stdout() {
        let out = output(Command::new("echo").arg("hi")).unwrap();
        assert_eq!(out, "hi\n");
    }
}
