//! patronictl's watching (`-W`: every 2 s, `-w SECONDS`): a command's output printed again and
//! again, the screen cleared first when stdout is a terminal; and the timestamp line (`list -t`).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// When to print again.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Watching {
    /// `None`: print once.
    pub(crate) every: Option<Duration>,
    /// Stop after this many rounds (tests; the command line never sets it).
    pub(crate) rounds: Option<u64>,
    done: u64,
    last: Option<Instant>,
}

impl Watching {
    pub(crate) fn every(every: Option<Duration>) -> Watching {
        Watching {
            every,
            rounds: None,
            done: 0,
            last: None,
        }
    }

    #[cfg(test)]
    pub(crate) fn once() -> Watching {
        Watching::every(None)
    }

    pub(crate) fn is_watching(&self) -> bool {
        self.every.is_some()
    }

    /// Whether another round runs; waits until it is due (`every` after the last one began).
    pub(crate) async fn next_round(&mut self) -> bool {
        let due = match (self.last, self.every) {
            (None, _) => None,
            (Some(_), None) => return false,
            (Some(_), Some(_)) if self.rounds.is_some_and(|n| self.done >= n) => return false,
            (Some(last), Some(every)) => Some(last + every),
        };
        if let Some(at) = due {
            tokio::time::sleep_until(at.into()).await;
        }
        self.last = Some(Instant::now());
        self.done += 1;
        true
    }
}

/// What clears the screen before a round, when watching on a terminal (as patronictl does).
pub(crate) fn clear_screen(w: &Watching) -> Option<&'static str> {
    (w.is_watching() && std::io::stdout().is_terminal()).then_some("\x1b[2J\x1b[H")
}

/// Now as patronictl prints it above a listing and in `query`'s error rows,
/// `YYYY-MM-DD HH:MM:SS`, in UTC.
pub(crate) fn timestamp() -> String {
    let now = crate::time::now();
    crate::time::Timestamp::from_unix(now.unix).to_rfc3339()[..19].replace('T', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rounds_are_spaced_by_the_interval() {
        let mut w = Watching::every(Some(Duration::from_millis(40)));
        w.rounds = Some(3);
        let start = Instant::now();
        let mut at = Vec::new();
        while w.next_round().await {
            at.push(start.elapsed());
        }
        assert_eq!(at.len(), 3);
        assert!(at[0] < Duration::from_millis(40), "{at:?}");
        assert!(at[1] >= Duration::from_millis(40), "{at:?}");
        assert!(at[2] >= Duration::from_millis(80), "{at:?}");

        let mut once = Watching::once();
        assert!(once.next_round().await);
        assert!(!once.next_round().await);
    }

    #[test]
    fn timestamp_shape() {
        let t = timestamp();
        assert_eq!(t.len(), 19, "{t}");
        assert_eq!((&t[4..5], &t[10..11], &t[13..14]), ("-", " ", ":"), "{t}");
    }
}
