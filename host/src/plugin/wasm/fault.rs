//! What a failed policy call was: a trap, a missed deadline, an exhausted memory limit, an
//! invalid answer, a missing hook or an instance that could not be created. Classifies the
//! runtime's errors and records a fault (log, metrics, the version's counts).

use super::{WasmPolicy, lock, unix_ms};
use crate::plugin::manifest::Hook;
use serde::Serialize;
use std::fmt;
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum FaultKind {
    /// The guest trapped (a panic, `unreachable`, ...).
    Trap,
    /// The call ran past its deadline.
    Deadline,
    /// The instance hit its memory limit.
    OutOfMemory,
    /// The answer broke the contract (unknown member, empty reason, ...).
    InvalidAnswer,
    /// The hook is not active for this policy.
    MissingHook,
    /// The instance could not be created.
    Instantiate,
    /// The supervisor stopped waiting for the call at its share of the loop (a guest blocked
    /// in a host call, slow probes, an earlier call still running, no thread to run it on);
    /// the call may still be running on its thread.
    Stalled,
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FaultKind::Trap => "trap",
            FaultKind::Deadline => "deadline exceeded",
            FaultKind::OutOfMemory => "out of memory",
            FaultKind::InvalidAnswer => "invalid answer",
            FaultKind::MissingHook => "missing hook",
            FaultKind::Instantiate => "cannot instantiate",
            FaultKind::Stalled => "stalled",
        })
    }
}

/// A call that did not produce a usable answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fault {
    pub(crate) hook: Hook,
    pub(crate) kind: FaultKind,
    pub(crate) message: String,
    /// What the guest wrote to stderr during the call (a panic message, typically).
    pub(crate) stderr: String,
    pub(crate) elapsed_ms: f64,
    /// Wall clock, ms since the Unix epoch.
    pub(crate) at_unix_ms: u64,
}

impl Fault {
    pub(super) fn new(
        hook: Hook,
        kind: FaultKind,
        message: String,
        stderr: String,
        elapsed: Duration,
    ) -> Fault {
        Fault {
            hook,
            kind,
            message,
            stderr,
            elapsed_ms: elapsed.as_secs_f64() * 1000.0,
            at_unix_ms: unix_ms(SystemTime::now()),
        }
    }

    pub(crate) fn with_note(mut self, note: String) -> Fault {
        self.message = format!("{}; {note}", self.message);
        self
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} after {:.1} ms: {}",
            self.hook.as_str(),
            self.kind,
            self.elapsed_ms,
            self.message
        )?;
        if !self.stderr.is_empty() {
            write!(f, "\nstderr:\n{}", self.stderr)?;
        }
        Ok(())
    }
}

impl std::error::Error for Fault {}

impl Fault {
    pub(super) fn without_hook(&self) -> String {
        let mut s = format!("{}: {}", self.kind, self.message);
        if !self.stderr.is_empty() {
            s.push_str(&format!(" (stderr: {})", self.stderr));
        }
        s
    }
}

impl WasmPolicy {
    pub(super) fn classify(
        &self,
        hook: Hook,
        e: &wasmtime::Error,
        stderr: String,
        elapsed: Duration,
    ) -> Fault {
        let text = format!("{e:#}");
        let text = crate::plugin::guest::truncate(&text, 4000).to_string();
        let (kind, message) = match e.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::Interrupt) => (
                FaultKind::Deadline,
                format!(
                    "ran past its {} ms deadline and was interrupted",
                    self.manifest.deadline.as_millis()
                ),
            ),
            Some(_) => (FaultKind::Trap, text),
            None if text.contains("growing memory") || text.contains("memory limit") => (
                FaultKind::OutOfMemory,
                format!(
                    "exceeded its memory limit of {} MiB ({text})",
                    self.manifest.memory_mb
                ),
            ),
            None => (FaultKind::Trap, text),
        };
        Fault::new(hook, kind, message, stderr, elapsed)
    }

    /// The supervisor gave up waiting for `hook` after `waited`: recorded as a fault of this
    /// policy (log, metrics, `GET /policy`); the built-in rules answered instead.
    pub(crate) fn record_stall(&self, hook: Hook, waited: std::time::Duration, why: &str) {
        self.record(Fault::new(
            hook,
            FaultKind::Stalled,
            format!(
                "no answer within {} ms, the loop's share of the lease: {why}",
                waited.as_millis()
            ),
            String::new(),
            waited,
        ));
    }

    pub(super) fn record(&self, fault: Fault) {
        let text = fault.to_string();
        tracing::error!(
            policy = %self.manifest.name,
            version = %self.info.version,
            hook = fault.hook.as_str(),
            kind = %fault.kind,
            "policy fault, the built-in rules decide this call: {text}"
        );
        let kind = match fault.kind {
            FaultKind::Trap => "trap",
            FaultKind::Deadline => "deadline",
            FaultKind::OutOfMemory => "memory",
            FaultKind::InvalidAnswer => "invalid",
            FaultKind::MissingHook => "missing-hook",
            FaultKind::Instantiate => "instantiate",
            FaultKind::Stalled => "stalled",
        };
        crate::metrics::policy_fault(&self.manifest.name, kind);
        let mut s = lock(&self.stats);
        s.faults += 1;
        s.last_fault = Some(fault);
    }
}
