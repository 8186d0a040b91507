//! Progress of a long `regent lab compare` on stderr: runs done of the total, the current
//! fault and policy, and an estimate of the time left (the mean duration of the runs done so
//! far times the runs left). On a terminal it is a bar (indicatif) that the lab's other
//! progress lines ([`super::say`]) print above; otherwise one plain line per run.
//!
//! Invariant: at most one bar exists at a time; [`print`] goes around it while it does, and
//! dropping the [`Progress`] removes it (a Ctrl-C included), so stderr ends clean.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The bar on screen, if any: [`print`] suspends it for a line.
static BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// A line on stderr, above the bar if one is drawn.
pub(crate) fn print(line: &str) {
    let bar = BAR.lock().ok().and_then(|b| b.clone());
    match bar {
        Some(b) => b.suspend(|| eprintln!("{line}")),
        None => eprintln!("{line}"),
    }
}

/// The runs of one comparison.
pub(crate) struct Progress {
    total: usize,
    done: usize,
    spent: Duration,
    started: Option<Instant>,
    bar: Option<ProgressBar>,
}

impl Progress {
    /// `total` runs to come: a bar when stderr is a terminal, plain lines otherwise.
    pub(crate) fn new(total: usize) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
            if let Ok(style) =
                ProgressStyle::with_template("[{bar:30}] {pos}/{len} runs, {elapsed} — {msg}")
            {
                b.set_style(style.progress_chars("=> "));
            }
            b.enable_steady_tick(Duration::from_secs(1));
            b
        });
        if let (Some(b), Ok(mut g)) = (&bar, BAR.lock()) {
            *g = Some(b.clone());
        }
        Progress {
            total,
            done: 0,
            spent: Duration::ZERO,
            started: None,
            bar,
        }
    }

    /// A run of `fault` under `policy` begins.
    pub(crate) fn begin(&mut self, fault: &str, policy: &str, run: usize, runs: usize) {
        self.started = Some(Instant::now());
        let what = format!("{fault} under {policy} (run {run} of {runs})");
        let eta = eta(self.done, self.spent, self.total)
            .map_or(String::new(), |d| format!(", about {} left", human(d)));
        match &self.bar {
            Some(b) => b.set_message(format!("{what}{eta}")),
            None => super::say(format!(
                "run {} of {}: {what}{eta}",
                self.done + 1,
                self.total
            )),
        }
    }

    /// The run begun last is over.
    pub(crate) fn end(&mut self) {
        if let Some(t) = self.started.take() {
            self.spent += t.elapsed();
        }
        self.done += 1;
        if let Some(b) = &self.bar {
            b.set_position(self.done as u64);
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Ok(mut g) = BAR.lock() {
            *g = None;
        }
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// The time left: the mean of the runs done times the runs left (`None` before the first).
fn eta(done: usize, spent: Duration, total: usize) -> Option<Duration> {
    (done > 0).then(|| spent / done as u32 * total.saturating_sub(done) as u32)
}

/// `1 min 05 s`, `42 s`.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{} min {:02} s", s / 60, s % 60)
    } else {
        format!("{s} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_time_left_is_the_mean_run_times_the_runs_left() {
        assert_eq!(eta(0, Duration::ZERO, 4), None);
        assert_eq!(
            eta(2, Duration::from_secs(60), 6),
            Some(Duration::from_secs(120))
        );
        assert_eq!(eta(3, Duration::from_secs(30), 3), Some(Duration::ZERO));
        assert_eq!(human(Duration::from_secs(65)), "1 min 05 s");
        assert_eq!(human(Duration::from_secs(42)), "42 s");
    }
}
