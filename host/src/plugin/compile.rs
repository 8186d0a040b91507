//! Compiling policy components: in this process or in a child process
//! ([`compile_in_subprocess`], `regent compile-policy`), a small in-memory memo, and the
//! artifact cache keyed by digest.
//!
//! The cache holds machine code that is loaded with the `unsafe` `Component::deserialize`, so
//! it is trusted only as far as nobody but regent's own user could have written it: the cache
//! directory must be regent's user's and writable by nobody else ([`open_cache_dir`]; it is
//! created mode 0700, and never reached through a link), its files are opened relative to
//! it, never through a link, and each artifact carries the sha256 of its bytes, checked
//! before it is deserialized (a mismatch is discarded and compiled again).

use super::guest::{PolicyPre, State};
use super::runtime::{Runtime, Tier, WASMTIME_VERSION};
use super::{PolicyError, WIT_PACKAGE};
use crate::safe_fs::Dir;
use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Where a compiled component came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    Compiled,
    /// This process compiled the same bytes before.
    Memory,
    /// Deserialized from the artifact cache.
    DiskCache,
}

/// Components compiled in this process without an artifact cache, by digest and tier (a small
/// LRU): loading one component several times (tests, `regent policy`) does not compile again.
/// With a cache (`regent run`), the cache serves again what was compiled before, and a replaced
/// version's code is freed with it.
static MEMO: Mutex<Vec<(String, Tier, Component)>> = Mutex::new(Vec::new());
const MEMO_SIZE: usize = 8;

/// One compilation per tier at a time: loads of the same bytes that overlap wait and take the
/// memo, and a background optimization never delays a reload's quick compilation.
static COMPILING: [Mutex<()>; 2] = [Mutex::new(()), Mutex::new(())];

/// Forget the in-process copy of a component's code of `tier` (the quick code once the
/// optimized code serves; tests of the disk cache).
pub(crate) fn forget_compiled(digest: &str, tier: Tier) {
    MEMO.lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|(d, t, _)| !(d == digest && *t == tier));
}

fn memo_get(digest: &str, tier: Tier) -> Option<Component> {
    let mut m = MEMO.lock().unwrap_or_else(|e| e.into_inner());
    let i = m.iter().position(|(d, t, _)| d == digest && *t == tier)?;
    let entry = m.remove(i);
    let c = entry.2.clone();
    m.push(entry);
    Some(c)
}

fn memo_put(digest: &str, tier: Tier, c: &Component) {
    let mut m = MEMO.lock().unwrap_or_else(|e| e.into_inner());
    m.retain(|(d, t, _)| !(d == digest && *t == tier));
    if m.len() >= MEMO_SIZE {
        m.remove(0);
    }
    m.push((digest.to_string(), tier, c.clone()));
}

/// The name of a component's cache file: keyed by its digest, the wasmtime version and the
/// engine's compilation settings.
fn cache_file(rt: &Runtime, digest: &str) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    WASMTIME_VERSION.hash(&mut h);
    rt.engine.precompile_compatibility_hash().hash(&mut h);
    format!("{digest}-{:016x}.cwasm", h.finish())
}

/// What a cache file starts with, before the sha256 (hex) of the artifact that follows.
const ARTIFACT_HEADER: &[u8] = b"regent-artifact sha256=";

/// The largest cache file read (an artifact of a policy is a few MiB).
const MAX_ARTIFACT: u64 = 512 << 20;

/// Open the artifact cache directory `dir`, creating it (mode 0700) if `create` and it is
/// absent. Refused (the error names the directory and the fix): a link at its name, a
/// directory owned by another user than regent's, or one that others can write.
pub(crate) fn open_cache_dir(dir: &Path, create: bool) -> Result<Dir, String> {
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("the policy cache directory {} has no name", dir.display()))?;
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let opened = Dir::open(parent).and_then(|p| p.subdir(name, create, 0o700));
    let d = match opened {
        Ok(d) => d,
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
            return Err(format!(
                "the policy cache directory {} is a symbolic link; compiled code is loaded                  only from a directory of regent's own: remove the link (regent creates the                  directory, mode 0700)",
                dir.display()
            ));
        }
        Err(e) => {
            return Err(format!(
                "cannot open the policy cache directory {}: {e}",
                dir.display()
            ));
        }
    };
    let st = d.stat().map_err(|e| {
        format!(
            "cannot stat the policy cache directory {}: {e}",
            dir.display()
        )
    })?;
    let me = nix::unistd::Uid::effective().as_raw();
    if st.st_uid != me {
        return Err(format!(
            "the policy cache directory {} is owned by uid {}, not by regent's user (uid {me});              compiled code is loaded only from a directory nobody else can write: remove it              (regent creates it again, mode 0700)",
            dir.display(),
            st.st_uid
        ));
    }
    if st.st_mode & 0o022 != 0 {
        return Err(format!(
            "the policy cache directory {} can be written by others (mode {:o}); compiled code              is loaded only from a directory nobody else can write: remove it (regent creates              it again, mode 0700) or `chmod 0700` it after checking what is in it",
            dir.display(),
            st.st_mode & 0o7777
        ));
    }
    Ok(d)
}

/// Compile `bytes` (whose sha256 is `digest`) for `rt`'s tier, or take it from the in-process
/// memo or (optimized code only) the artifact cache in `cache_dir`. Errors are about the bytes
/// (not a component, invalid).
pub(crate) fn compile(
    rt: &Runtime,
    path: &Path,
    bytes: &[u8],
    digest: &str,
    cache_dir: Option<&Path>,
) -> Result<(Component, Origin, Duration), PolicyError> {
    let start = Instant::now();
    let _compiling = COMPILING[rt.tier.index()]
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(found) = lookup(rt, digest, cache_dir) {
        return Ok(found);
    }
    let component = compile_now(rt, path, bytes)?;
    let elapsed = start.elapsed();
    if cache_dir.is_none() {
        memo_put(digest, rt.tier, &component);
    }
    if let Some(dir) = cache_dir.filter(|_| rt.tier == Tier::Optimized)
        && let Err(e) = write_artifact(&component, dir, &cache_file(rt, digest))
    {
        tracing::warn!(error = %e,
            "cannot cache the compiled policy; it will be compiled again next start");
    }
    Ok((component, Origin::Compiled, elapsed))
}

/// The code of `digest` for `rt`'s tier if this process has it, or (optimized code only; quick
/// code serves just until the optimized code is ready, not worth keeping) the artifact cache
/// in `cache_dir` has it. Never compiles, never waits for a compilation.
pub(crate) fn lookup(
    rt: &Runtime,
    digest: &str,
    cache_dir: Option<&Path>,
) -> Option<(Component, Origin, Duration)> {
    let start = Instant::now();
    if let Some(c) = memo_get(digest, rt.tier) {
        return Some((c, Origin::Memory, start.elapsed()));
    }
    let cache_dir = cache_dir.filter(|_| rt.tier == Tier::Optimized)?;
    let dir = match open_cache_dir(cache_dir, false) {
        Ok(d) => d,
        Err(_) if !cache_dir.exists() => return None,
        Err(e) => {
            tracing::warn!(error = %e, "not using the policy artifact cache");
            return None;
        }
    };
    let name = cache_file(rt, digest);
    let file = dir.path().join(&name);
    // Read into memory rather than `deserialize_file`: a mapped file that someone truncates
    // later would take the process down with SIGBUS.
    let (stored, st) = match dir.read_regular(name.as_ref(), MAX_ARTIFACT) {
        Ok(found) => found,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(file = %file.display(), error = %e,
                "discarding an unreadable compiled policy artifact");
            let _ = dir.remove(name.as_ref());
            return None;
        }
    };
    let loaded = verified_artifact(&stored)
        .filter(|_| st.st_uid == nix::unistd::Uid::effective().as_raw())
        .ok_or_else(|| "its sha256 does not match its bytes (or it is not regent's)".to_string())
        .and_then(|bytes| {
            // SAFETY: the bytes are an artifact regent wrote with `Component::serialize`: the
            // cache directory is regent's user's and nobody else can write it, the file was
            // opened in it without following a link, and the sha256 recorded with it when it
            // was written matches; wasmtime checks its version and the engine settings again
            // and refuses a mismatch.
            unsafe { Component::deserialize(&rt.engine, bytes) }.map_err(|e| format!("{e:#}"))
        });
    match loaded {
        Ok(c) => Some((c, Origin::DiskCache, start.elapsed())),
        Err(e) => {
            tracing::warn!(file = %file.display(), error = %e,
                "discarding an unusable compiled policy artifact");
            let _ = dir.remove(name.as_ref());
            None
        }
    }
}

/// The artifact in a cache file's bytes if the sha256 recorded in its header matches it.
fn verified_artifact(stored: &[u8]) -> Option<&[u8]> {
    let rest = stored.strip_prefix(ARTIFACT_HEADER)?;
    let (hex, artifact) = (rest.get(..64)?, rest.get(64..)?.strip_prefix(b"\n")?);
    (hex == super::runtime::digest(artifact).as_bytes()).then_some(artifact)
}

/// Compile `bytes` for `rt`'s tier: in a child process when one is configured
/// ([`compile_in_subprocess`]; a failed child refuses the version), else here.
fn compile_now(rt: &Runtime, path: &Path, bytes: &[u8]) -> Result<Component, PolicyError> {
    compile_with(COMPILER.get().map(PathBuf::as_path), rt, path, bytes)
}

/// [`compile_now`] with `compiler` as the compile child's executable.
pub(crate) fn compile_with(
    compiler: Option<&Path>,
    rt: &Runtime,
    path: &Path,
    bytes: &[u8],
) -> Result<Component, PolicyError> {
    let invalid = |message| PolicyError::InvalidComponent {
        path: path.to_path_buf(),
        message,
    };
    if let Some(exe) = compiler {
        match compile_in_child(exe, rt, bytes, CHILD_TIMEOUT) {
            Ok(c) => return Ok(c),
            Err(ChildError::Invalid(message)) => return Err(invalid(message)),
            // Never here instead: in this process nothing bounds the compile's time or memory,
            // and a compiler crash would take the supervisor down.
            Err(ChildError::Failed(message)) => {
                return Err(PolicyError::Compiler {
                    path: path.to_path_buf(),
                    message,
                });
            }
        }
    }
    Component::new(&rt.engine, bytes).map_err(|e| invalid(compile_error(bytes, &e)))
}

/// Give the heap that loading a policy used and freed (the component, its artifact, the
/// compiler's working memory when it ran here) back to the system, so that it does not stay in
/// the supervisor's resident memory.
pub(crate) fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim(3) only returns free heap pages to the kernel; it is thread-safe.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

/// Why `bytes` do not compile, in terms a policy author can act on.
fn compile_error(bytes: &[u8], e: &wasmtime::Error) -> String {
    let message = format!("{e:#}");
    if message.contains("magic header not detected") {
        let head: Vec<String> = bytes.iter().take(4).map(|b| format!("{b:02x}")).collect();
        format!(
            "this is not a .wasm file: it starts with {} instead of the magic `\\0asm`",
            head.join(" ")
        )
    } else if message.contains("attempted to parse a wasm module with a component parser") {
        format!(
            "{message} (this is a core module: build the policy for wasm32-wasip2, which \
             produces a component)"
        )
    } else {
        message
    }
}

/// The executable that compiles components in a child process ([`compile_in_subprocess`]).
static COMPILER: OnceLock<PathBuf> = OnceLock::new();

/// The hidden subcommand of `regent` that runs [`compile_child`].
pub const COMPILE_SUBCOMMAND: &str = "compile-policy";

/// The child's exit status when the bytes are not a valid component (the reason on stderr).
const CHILD_INVALID: u8 = 3;

/// How long a compile child may take before it is killed (and the version refused).
const CHILD_TIMEOUT: Duration = Duration::from_secs(60);

/// Compile components in a child process, `exe compile-policy --tier T` (the `regent` binary
/// itself): the supervisor then never has Cranelift's code and working memory in its own
/// address space (its resident memory stays that of the runtime), and a compiler crash takes
/// only the child down. When the child cannot run, the version is refused
/// ([`PolicyError::Compiler`]); the previous one keeps serving.
pub fn compile_in_subprocess(exe: PathBuf) {
    let _ = COMPILER.set(exe);
}

#[derive(Debug)]
pub(crate) enum ChildError {
    /// The bytes are not a valid component: the reason, for the author.
    Invalid(String),
    /// The child did not do its job (could not start, crashed, timed out, bad output).
    Failed(String),
}

pub(crate) fn compile_in_child(
    exe: &Path,
    rt: &Runtime,
    bytes: &[u8],
    timeout: Duration,
) -> Result<Component, ChildError> {
    use std::process::{Command, Stdio};
    let failed = |what: &str, e: &dyn std::fmt::Display| ChildError::Failed(format!("{what}: {e}"));
    let mut child = Command::new(exe)
        .args([COMPILE_SUBCOMMAND, "--tier", rt.tier.as_str()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(&format!("cannot start {}", exe.display()), &e))?;
    let pid = child.id();
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| failed("no stdin", &"none"))?;
    // The child reads all its input before it writes anything.
    stdin
        .write_all(bytes)
        .map_err(|e| failed("cannot hand the component over", &e))?;
    drop(stdin);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("regent-policy-compile-wait".into())
        .spawn(move || {
            let _ = tx.send(child.wait_with_output());
        })
        .map_err(|e| failed("cannot start a thread", &e))?;
    let output = match rx.recv_timeout(timeout) {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => return Err(failed("cannot read its output", &e)),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            return Err(failed(
                "timed out",
                &format!("no result after {:.1} s", timeout.as_secs_f64()),
            ));
        }
    };
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    match output.status.code() {
        Some(0) => {}
        Some(code) if code == i32::from(CHILD_INVALID) => return Err(ChildError::Invalid(stderr)),
        _ => return Err(failed(&format!("exited with {}", output.status), &stderr)),
    }
    // SAFETY: the artifact comes from `Component::serialize` in a child running this same
    // executable, on exactly the bytes given to it; wasmtime checks the version and the engine
    // settings again and refuses a mismatch (e.g. the executable was replaced meanwhile).
    unsafe { Component::deserialize(&rt.engine, &output.stdout) }
        .map_err(|e| failed("its artifact does not load", &format!("{e:#}")))
}

/// `regent compile-policy --tier T`: read a component from stdin, compile it with `tier`'s
/// engine settings, write the artifact to stdout. Returns the exit status: 0, 3 when the bytes
/// are not a valid component (the reason on stderr), 1 otherwise.
pub fn compile_child(tier: &str) -> u8 {
    if Tier::parse(tier) == Some(Tier::Optimized) {
        // Background work: a reload's quick compilation (or the HA loop) goes first.
        // SAFETY: nice(2) only changes this process's scheduling priority.
        unsafe { nix::libc::nice(10) };
    }
    let mut bytes = Vec::new();
    let result = match std::io::stdin().read_to_end(&mut bytes) {
        Ok(_) => compile_artifact(tier, &bytes),
        Err(e) => Err((1, format!("cannot read the component from stdin: {e}"))),
    };
    let written = result.and_then(|artifact| {
        let mut out = std::io::stdout().lock();
        out.write_all(&artifact)
            .and_then(|()| out.flush())
            .map_err(|e| (1, format!("cannot write the artifact: {e}")))
    });
    match written {
        Ok(()) => 0,
        Err((status, message)) => {
            eprintln!("{message}");
            status
        }
    }
}

/// The compile child's work: the artifact of `bytes` compiled for `tier`, or the exit status
/// and the reason.
pub(crate) fn compile_artifact(tier: &str, bytes: &[u8]) -> Result<Vec<u8>, (u8, String)> {
    let tier = Tier::parse(tier)
        .ok_or_else(|| (1, format!("unknown tier {tier:?}: use quick or optimized")))?;
    let engine = Engine::new(&tier.config())
        .map_err(|e| (1, format!("cannot start the WebAssembly engine: {e:#}")))?;
    let component =
        Component::new(&engine, bytes).map_err(|e| (CHILD_INVALID, compile_error(bytes, &e)))?;
    component
        .serialize()
        .map_err(|e| (1, format!("cannot serialize the compiled component: {e:#}")))
}

/// Write `c`'s artifact as `name` into the cache directory `dir` (created if absent),
/// behind a header with its sha256.
fn write_artifact(c: &Component, dir: &Path, name: &str) -> Result<(), String> {
    let artifact = c.serialize().map_err(|e| format!("{e:#}"))?;
    let d = open_cache_dir(dir, true)?;
    let mut stored = Vec::with_capacity(artifact.len() + ARTIFACT_HEADER.len() + 65);
    stored.extend_from_slice(ARTIFACT_HEADER);
    stored.extend_from_slice(super::runtime::digest(&artifact).as_bytes());
    stored.push(b'\n');
    stored.extend_from_slice(&artifact);
    let tmp = format!("{name}.tmp{}", std::process::id());
    d.replace(name.as_ref(), tmp.as_ref(), &stored, 0o600)
        .map_err(|e| format!("write {}: {e}", d.path().join(name).display()))
}

/// Link `component` against the `regent:policy@0.1.0` world, refusing one built against
/// another version of the package.
///
/// Linking alone does not catch every such component: wasmtime does not look up imports that
/// only define (non-resource) types, such as `regent:policy/types@X`, and the world's exports
/// carry no version. So the version in the names of the `regent:policy/...` imports is checked
/// first; linking then catches a missing host function or export.
pub(crate) fn prepare(
    rt: &Runtime,
    path: &Path,
    component: &Component,
) -> Result<PolicyPre<State>, PolicyError> {
    let ty = component.component_type();
    let mut other: Vec<String> = ty
        .imports(&rt.engine)
        .filter_map(|(name, _)| {
            let rest = name.strip_prefix("regent:policy/")?;
            let (_, version) = rest.split_once('@').unwrap_or((rest, "(unversioned)"));
            (format!("regent:policy@{version}") != WIT_PACKAGE).then(|| version.to_string())
        })
        .collect();
    other.sort();
    other.dedup();
    if !other.is_empty() {
        return Err(PolicyError::WrongVersion {
            path: path.to_path_buf(),
            found: format!(" (regent:policy@{})", other.join(", @")),
            message: "its imports name that version".into(),
        });
    }
    rt.linker
        .instantiate_pre(component)
        .and_then(PolicyPre::new)
        .map_err(|e| PolicyError::WrongVersion {
            path: path.to_path_buf(),
            found: String::new(),
            message: format!("it does not fit the world: {e:#}"),
        })
}
