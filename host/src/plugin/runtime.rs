//! The wasmtime engines: two per process, one per compilation [`Tier`] (both with epoch
//! interruption, advanced by one 1 ms ticker thread), their linkers (WASI p2 without
//! filesystem, network, environment or arguments, plus the `host` interface), and a fresh
//! instance of a compiled policy in its own store. What a guest sees is in `guest.rs`;
//! compiling and the artifact cache in `compile.rs`.

use super::PolicyError;
use super::convert::RankFunc;
use super::guest::{Bindings, Capture, PolicyPre, ProberCell, State};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::hash::Hash;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, OptLevel, RegallocAlgorithm, Store, StoreLimitsBuilder};
use wasmtime_wasi::WasiCtx;

/// How often the epoch advances: the unit of the call deadline.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(1);

/// The wasmtime version the artifacts are compiled with (part of the cache key).
pub(super) const WASMTIME_VERSION: &str = "wasmtime-48.0.8";

/// How a component is compiled. A new version serves first with `quick` code, so that a
/// reload takes effect within tens of milliseconds, while the `optimized` code is compiled in
/// the background; it replaces the quick code between two calls, and is what the artifact
/// cache keeps (a restart loads it directly).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tier {
    /// Cranelift without its optimizations and with single-pass register allocation: about
    /// half the compile time, calls about a fifth slower.
    Quick,
    /// Cranelift's optimizations and its backtracking register allocator.
    Optimized,
}

impl Tier {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Tier::Quick => "quick",
            Tier::Optimized => "optimized",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Tier> {
        [Tier::Quick, Tier::Optimized]
            .into_iter()
            .find(|t| t.as_str() == s)
    }

    pub(super) fn index(self) -> usize {
        self as usize
    }

    /// The engine settings of this tier: the compile child uses the same, so that its
    /// artifacts load into this process's engine.
    pub(super) fn config(self) -> Config {
        let mut config = Config::new();
        config.epoch_interruption(true);
        if self == Tier::Quick {
            config.cranelift_opt_level(OptLevel::None);
            config.cranelift_regalloc_algorithm(RegallocAlgorithm::SinglePass);
        }
        // `perf` can then name the policies' functions (in /tmp/perf-PID.map).
        if std::env::var_os("REGENT_POLICY_PERFMAP").is_some() {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        config
    }
}

pub(crate) struct Runtime {
    pub(crate) tier: Tier,
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<State>,
}

static RUNTIMES: OnceLock<Result<[Runtime; 2], String>> = OnceLock::new();

fn new_runtime(tier: Tier) -> Result<Runtime, String> {
    let engine = Engine::new(&tier.config()).map_err(|e| format!("{e:#}"))?;
    let mut linker: Linker<State> = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| format!("{e:#}"))?;
    Bindings::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)
        .map_err(|e| format!("{e:#}"))?;
    Ok(Runtime {
        tier,
        engine,
        linker,
    })
}

/// The process-wide engine and linker of `tier`; the first call starts the epoch ticker.
pub(crate) fn runtime(tier: Tier) -> Result<&'static Runtime, PolicyError> {
    RUNTIMES
        .get_or_init(|| {
            let runtimes = [new_runtime(Tier::Quick)?, new_runtime(Tier::Optimized)?];
            let tickers = [runtimes[0].engine.clone(), runtimes[1].engine.clone()];
            std::thread::Builder::new()
                .name("regent-policy-epoch".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(EPOCH_TICK);
                        for engine in &tickers {
                            engine.increment_epoch();
                        }
                    }
                })
                .map_err(|e| format!("cannot start the epoch ticker thread: {e}"))?;
            Ok(runtimes)
        })
        .as_ref()
        .map(|runtimes| &runtimes[tier.index()])
        .map_err(|e| PolicyError::Engine(e.clone()))
}

/// sha256 of the component bytes, hex.
pub(crate) fn digest(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    let mut s = String::with_capacity(64);
    for b in d.iter() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Per-instance settings.
#[derive(Clone)]
pub(crate) struct InstanceConfig {
    pub(crate) policy: Arc<str>,
    pub(crate) memory_bytes: usize,
    pub(crate) sql: Option<ProberCell>,
    pub(crate) sql_timeout: Duration,
}

/// A live instance: its store, its exports and its stderr.
pub(crate) struct Live {
    pub(crate) store: Store<State>,
    pub(crate) bindings: Bindings,
    /// `rank-candidates`, called with a view that borrows from the decision core's.
    pub(crate) rank: RankFunc,
    pub(crate) stderr: Capture,
}

/// Instantiate `pre` in a fresh store: no preopens, environment, arguments or network; stderr
/// captured; memory limited; trap on a failed `memory.grow`.
pub(crate) fn instantiate(
    rt: &Runtime,
    pre: &PolicyPre<State>,
    cfg: &InstanceConfig,
) -> wasmtime::Result<Live> {
    let stderr = Capture::default();
    let wasi = WasiCtx::builder()
        .stderr(stderr.clone())
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .build();
    let limits = super::guest::TotalMemoryLimits {
        inner: StoreLimitsBuilder::new()
            .memory_size(cfg.memory_bytes)
            .instances(32)
            .tables(32)
            .memories(8)
            .table_elements(100_000)
            .trap_on_grow_failure(true)
            .build(),
        total: cfg.memory_bytes,
        used: 0,
    };
    let state = State {
        wasi,
        table: ResourceTable::new(),
        limits,
        policy: cfg.policy.clone(),
        sql: cfg.sql.clone(),
        sql_timeout: cfg.sql_timeout,
        self_test: false,
    };
    let mut store = Store::new(&rt.engine, state);
    store.limiter(|s| &mut s.limits);
    // Instantiation runs the component's start code: give it a generous deadline.
    store.set_epoch_deadline(1000);
    let bindings = pre.instantiate(&mut store)?;
    let rank = RankFunc::new(&store, *bindings.func_rank_candidates().func())?;
    Ok(Live {
        store,
        bindings,
        rank,
        stderr,
    })
}
