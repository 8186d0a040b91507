//! Waiting for the policies no longer than the loop can afford. The health verdict and the
//! decision run on a blocking thread (a guest's WASI streams block on tokio); the loop waits
//! for either at most its share of the lease ([`crate::plugin::LoopBudget::limit`]). A call
//! still running then keeps its thread until it returns, and until it does the next loop does
//! not start another one: at most one thread per kind of call is ever held, however long a
//! guest blocks in a host call, a probe takes, or the blocking pool makes the call wait.
//!
//! May touch: nothing but the closure it runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Why no answer came.
#[derive(Debug)]
pub(super) enum Unanswered {
    /// The previous call of this kind is still running.
    Busy,
    /// No answer within the limit (the call goes on on its thread).
    TimedOut(Duration),
    /// The call panicked.
    Panicked(String),
}

impl std::fmt::Display for Unanswered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unanswered::Busy => f.write_str("the previous call is still running"),
            Unanswered::TimedOut(d) => write!(f, "no answer within {} ms", d.as_millis()),
            Unanswered::Panicked(e) => write!(f, "it panicked: {e}"),
        }
    }
}

/// Marks a kind of call as running; cleared when the call ends, or when its closure is
/// dropped without running.
struct Running(Arc<AtomicBool>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Run `f` on a blocking thread and wait for it at most `limit`, unless the previous call
/// marked by `busy` still runs.
pub(super) async fn bounded<T: Send + 'static>(
    limit: Duration,
    busy: &Arc<AtomicBool>,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Unanswered> {
    if busy.swap(true, Ordering::AcqRel) {
        return Err(Unanswered::Busy);
    }
    let running = Running(busy.clone());
    let task = tokio::task::spawn_blocking(move || {
        let _running = running;
        f()
    });
    match tokio::time::timeout(limit, task).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Unanswered::Panicked(e.to_string())),
        Err(_) => Err(Unanswered::TimedOut(limit)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// A call that blocks far longer than the limit (a guest asleep in a host call, a slow
    /// probe) costs the caller the limit, once; while it still runs, later calls answer at
    /// once without starting another thread; once it ends, calls run again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hanging_call_costs_the_loop_its_limit_and_holds_one_thread() {
        let busy = Arc::new(AtomicBool::new(false));
        let started = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let release_rx = std::sync::Mutex::new(release_rx);
        let release_rx = Arc::new(release_rx);
        let t0 = Instant::now();
        let s = started.clone();
        let rx = release_rx.clone();
        let first = bounded(Duration::from_millis(200), &busy, move || {
            s.fetch_add(1, Ordering::SeqCst);
            let _ = rx.lock().map(|r| r.recv_timeout(Duration::from_secs(30)));
            1
        })
        .await;
        let waited = t0.elapsed();
        assert!(matches!(first, Err(Unanswered::TimedOut(_))), "{first:?}");
        assert!(waited < Duration::from_secs(2), "waited {waited:?}");
        for _ in 0..5 {
            let s = started.clone();
            let again = bounded(Duration::from_millis(200), &busy, move || {
                s.fetch_add(1, Ordering::SeqCst);
                2
            })
            .await;
            assert!(matches!(again, Err(Unanswered::Busy)), "{again:?}");
        }
        assert_eq!(started.load(Ordering::SeqCst), 1, "one thread held");
        release_tx.send(()).expect("release");
        let deadline = Instant::now() + Duration::from_secs(5);
        while busy.load(Ordering::Acquire) {
            assert!(Instant::now() < deadline, "the call never ended");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let after = bounded(Duration::from_secs(5), &busy, || 3).await;
        assert!(matches!(after, Ok(3)), "{after:?}");
        let panicked = bounded(Duration::from_secs(5), &busy, || -> u32 { panic!("boom") }).await;
        assert!(
            matches!(panicked, Err(Unanswered::Panicked(_))),
            "{panicked:?}"
        );
        assert!(!busy.load(Ordering::Acquire), "a panic clears the mark");
    }
}
