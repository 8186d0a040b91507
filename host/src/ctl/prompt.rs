//! Questions to the operator. On a terminal they are asked on stderr and answered on stdin;
//! without a terminal regent ctl refuses rather than guess, and says to add `--force`.

use super::CtlError;
use std::io::{BufRead, IsTerminal, Write};

pub(crate) trait Prompt {
    /// A yes/no question; `false` unless the answer is yes.
    fn confirm(&mut self, question: &str) -> Result<bool, CtlError>;
    /// A free-text question with a default (the answer to an empty line).
    fn ask(&mut self, question: &str, default: &str) -> Result<String, CtlError>;
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
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| CtlError::Usage(format!("{question} — cannot read the answer: {e}")))?;
    Ok(line.trim().to_string())
}

impl Prompt for Terminal {
    fn confirm(&mut self, question: &str) -> Result<bool, CtlError> {
        if !std::io::stdin().is_terminal() {
            return Err(no_terminal(question));
        }
        eprint!("{question} [y/N]: ");
        let _ = std::io::stderr().flush();
        let answer = read_line(question)?;
        Ok(matches!(answer.to_ascii_lowercase().as_str(), "y" | "yes"))
    }

    fn ask(&mut self, question: &str, default: &str) -> Result<String, CtlError> {
        if !std::io::stdin().is_terminal() {
            return Err(no_terminal(question));
        }
        eprint!("{question} [{default}]: ");
        let _ = std::io::stderr().flush();
        let answer = read_line(question)?;
        Ok(if answer.is_empty() {
            default.to_string()
        } else {
            answer
        })
    }
}
