//! What a policy guest sees of the host: the WIT bindings, the per-instance [`State`] (WASI
//! without filesystem, network, environment or arguments; memory limits; the `host` interface:
//! logging and granted SQL probes) and the capture of its stderr.

use super::SqlProber;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        world: "policy",
        path: "../wit",
        additional_derives: [PartialEq],
    });
}

pub(crate) use bindings::regent::policy::types as wit;
pub(crate) use bindings::{Policy as Bindings, PolicyPre};

/// What a guest may reach: granted SQL, and the state the `host` interface needs.
pub(crate) type ProberCell = Arc<Mutex<Option<Arc<dyn SqlProber>>>>;

/// The `T` of a policy's `Store`.
pub(crate) struct State {
    pub(super) wasi: WasiCtx,
    pub(super) table: ResourceTable,
    pub(super) limits: TotalMemoryLimits,
    pub(super) policy: Arc<str>,
    /// `Some` when the manifest grants `sql-probe`.
    pub(super) sql: Option<ProberCell>,
    /// Timeout of a `sql-probe` the guest calls itself (within the call deadline).
    pub(super) sql_timeout: Duration,
    /// The instance is running the load-time self-test: its log lines go to `trace`.
    pub(crate) self_test: bool,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wit::Host for State {}

impl bindings::regent::policy::host::Host for State {
    fn log(&mut self, level: wit::LogLevel, message: String) {
        let message = truncate(&message, 4096);
        let policy = &*self.policy;
        if self.self_test {
            // The self-test's views are made up: what the policy says about them is noise.
            tracing::trace!(target: "regent::policy::plugin", policy, self_test = true, "{message}");
            return;
        }
        match level {
            wit::LogLevel::Trace => {
                tracing::trace!(target: "regent::policy::plugin", policy, "{message}")
            }
            wit::LogLevel::Debug => {
                tracing::debug!(target: "regent::policy::plugin", policy, "{message}")
            }
            wit::LogLevel::Info => {
                tracing::info!(target: "regent::policy::plugin", policy, "{message}")
            }
            wit::LogLevel::Warn => {
                tracing::warn!(target: "regent::policy::plugin", policy, "{message}")
            }
            wit::LogLevel::Error => {
                tracing::error!(target: "regent::policy::plugin", policy, "{message}")
            }
        }
    }

    fn log_enabled(&mut self, level: wit::LogLevel) -> bool {
        // As `log` records them: the self-test's lines at trace.
        if self.self_test {
            return tracing::enabled!(target: "regent::policy::plugin", tracing::Level::TRACE);
        }
        match level {
            wit::LogLevel::Trace => {
                tracing::enabled!(target: "regent::policy::plugin", tracing::Level::TRACE)
            }
            wit::LogLevel::Debug => {
                tracing::enabled!(target: "regent::policy::plugin", tracing::Level::DEBUG)
            }
            wit::LogLevel::Info => {
                tracing::enabled!(target: "regent::policy::plugin", tracing::Level::INFO)
            }
            wit::LogLevel::Warn => {
                tracing::enabled!(target: "regent::policy::plugin", tracing::Level::WARN)
            }
            wit::LogLevel::Error => {
                tracing::enabled!(target: "regent::policy::plugin", tracing::Level::ERROR)
            }
        }
    }

    fn now_ms(&mut self) -> u64 {
        crate::fence::mono_ms()
    }

    fn sql_probe(&mut self, query: String) -> Result<Vec<Vec<Option<String>>>, String> {
        let Some(cell) = &self.sql else {
            return Err(format!(
                "sql-probe is not granted to policy {}: add `capabilities = [\"sql-probe\"]` to its manifest",
                self.policy
            ));
        };
        let prober = cell.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match prober {
            Some(p) => p.probe(&query, self.sql_timeout),
            None => Err("no database connection for SQL probes".to_string()),
        }
    }
}

pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Keeps the last [`Capture::KEEP`] bytes a guest wrote to stderr. Writes never fail, so a chatty
/// guest cannot trap itself by filling a buffer.
#[derive(Clone, Default)]
pub(crate) struct Capture(Arc<Mutex<CaptureBuf>>);

#[derive(Default)]
struct CaptureBuf {
    data: VecDeque<u8>,
    /// Bytes written since the instance started.
    total: u64,
}

impl Capture {
    const KEEP: usize = 16 * 1024;

    fn push(&self, bytes: &[u8]) {
        let mut guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let b = &mut *guard;
        b.total += bytes.len() as u64;
        let bytes = &bytes[bytes.len().saturating_sub(Self::KEEP)..];
        let excess = (b.data.len() + bytes.len()).saturating_sub(Self::KEEP);
        let drop = excess.min(b.data.len());
        b.data.drain(..drop);
        b.data.extend(bytes);
    }

    /// A mark to read what is written after it.
    pub(crate) fn mark(&self) -> u64 {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).total
    }

    /// What was written since `mark` (the part still kept), as text.
    pub(crate) fn since(&self, mark: u64) -> String {
        let b = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let new = (b.total.saturating_sub(mark) as usize).min(b.data.len());
        let start = b.data.len() - new;
        let bytes: Vec<u8> = b.data.range(start..).copied().collect();
        String::from_utf8_lossy(&bytes).trim_end().to_string()
    }
}

impl wasmtime_wasi::cli::IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for Capture {
    fn p2_stream(&self) -> Box<dyn wasmtime_wasi::p2::OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl wasmtime_wasi::p2::Pollable for Capture {
    async fn ready(&mut self) {}
}

impl wasmtime_wasi::p2::OutputStream for Capture {
    fn write(&mut self, bytes: bytes::Bytes) -> wasmtime_wasi::p2::StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> wasmtime_wasi::p2::StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> wasmtime_wasi::p2::StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for Capture {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.push(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// The store's limits, with the memory limit counted across all of an instance's linear
/// memories together (wasmtime's own limit applies to each memory alone, and a component may
/// have several): a policy's `memory_mb` is what it may use in all.
pub(crate) struct TotalMemoryLimits {
    /// Everything but the memory total: instances, tables, memories, table elements.
    pub(super) inner: StoreLimits,
    /// The most all memories together may hold, in bytes.
    pub(super) total: usize,
    /// What they hold now.
    pub(super) used: usize,
}

impl wasmtime::ResourceLimiter for TotalMemoryLimits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let grown = self.used.saturating_add(desired.saturating_sub(current));
        if grown > self.total {
            // A trap, as `trap_on_grow_failure` makes it for a single memory.
            wasmtime::bail!(
                "growing memory past the memory limit: {grown} bytes in all memories, {} allowed",
                self.total
            );
        }
        if !self.inner.memory_growing(current, desired, maximum)? {
            return Ok(false);
        }
        self.used = grown;
        Ok(true)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.inner.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.inner.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter;

    /// Safety review item 14: the memory limit is a total over all linear memories; each of
    /// eight memories growing to just under the limit used to pass.
    #[test]
    fn the_memory_limit_counts_all_memories_together() {
        let mib = 1 << 20;
        let mut l = TotalMemoryLimits {
            inner: wasmtime::StoreLimitsBuilder::new()
                .memory_size(4 * mib)
                .trap_on_grow_failure(true)
                .build(),
            total: 4 * mib,
            used: 0,
        };
        assert!(l.memory_growing(0, 3 * mib, None).expect("first memory"));
        let second = l.memory_growing(0, 3 * mib, None);
        assert!(
            second.is_err(),
            "a second memory of 3 MiB passed a 4 MiB limit"
        );
        assert!(l.memory_growing(0, mib, None).expect("up to the limit"));
        assert!(l.memory_growing(mib, mib + 1, None).is_err());
    }
}
