//! Questions to the operator. On a terminal they are asked on stderr and answered on stdin;
//! without a terminal regent ctl refuses rather than guess, and says to add `--force`. Two kinds
//! of answer are read from stdin even without a terminal, as patronictl reads them: what must be
//! typed exactly (`remove`'s cluster name, "Yes I am aware", the leader's name), and a password
//! (`query --password`; not echoed on a terminal).

use super::CtlError;
use std::io::{BufRead, IsTerminal, Write};

pub(crate) trait Prompt {
    /// A yes/no question; `false` unless the answer is yes.
    fn confirm(&mut self, question: &str) -> Result<bool, CtlError>;
    /// A free-text question with a default (the answer to an empty line).
    fn ask(&mut self, question: &str, default: &str) -> Result<String, CtlError>;
    /// A text that must be typed exactly; read from stdin, terminal or not.
    fn type_in(&mut self, question: &str) -> Result<String, CtlError>;
    /// A password, not echoed on a terminal; read from stdin, terminal or not.
    fn secret(&mut self, question: &str) -> Result<String, CtlError>;
}

/// The process's terminal.
pub(crate) struct Terminal;

fn no_terminal(question: &str) -> CtlError {
    CtlError::Usage(format!(
        "{question} — stdin is not a terminal, so regent ctl cannot ask; add --force (and name what it would ask for with flags) to go ahead without asking"
    ))
}

fn read_line(question: &str) -> Result<String, CtlError> {
    let mut line = String::new();
    let n = std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| CtlError::Usage(format!("{question} — cannot read the answer: {e}")))?;
    if n == 0 {
        return Err(CtlError::Usage(format!(
            "{question} — stdin ended before an answer was given"
        )));
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// Turns the terminal's echo off until dropped.
struct NoEcho {
    saved: Option<nix::sys::termios::Termios>,
}

impl NoEcho {
    fn new() -> NoEcho {
        use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).ok();
        if let Some(t) = &saved {
            let mut quiet = t.clone();
            quiet.local_flags.remove(LocalFlags::ECHO);
            let _ = tcsetattr(&stdin, SetArg::TCSANOW, &quiet);
        }
        NoEcho { saved }
    }
}

impl Drop for NoEcho {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                t,
            );
        }
    }
}

impl Prompt for Terminal {
    fn confirm(&mut self, question: &str) -> Result<bool, CtlError> {
        if !std::io::stdin().is_terminal() {
            return Err(no_terminal(question));
        }
        eprint!("{question} [y/N]: ");
        let _ = std::io::stderr().flush();
        let answer = read_line(question)?;
        Ok(matches!(
            answer.trim().to_ascii_lowercase().as_str(),
            "y" | "yes"
        ))
    }

    fn ask(&mut self, question: &str, default: &str) -> Result<String, CtlError> {
        if !std::io::stdin().is_terminal() {
            return Err(no_terminal(question));
        }
        eprint!("{question} [{default}]: ");
        let _ = std::io::stderr().flush();
        let answer = read_line(question)?.trim().to_string();
        Ok(if answer.is_empty() {
            default.to_string()
        } else {
            answer
        })
    }

    fn type_in(&mut self, question: &str) -> Result<String, CtlError> {
        eprint!("{question}: ");
        let _ = std::io::stderr().flush();
        Ok(read_line(question)?.trim().to_string())
    }

    fn secret(&mut self, question: &str) -> Result<String, CtlError> {
        eprint!("{question}: ");
        let _ = std::io::stderr().flush();
        if !std::io::stdin().is_terminal() {
            return read_line(question);
        }
        let _quiet = NoEcho::new();
        let answer = read_line(question);
        eprintln!();
        answer
    }
}
