//! From `regent policy new` to a policy serving in a local lab, as a policy author runs it:
//! `policy new` writes a crate, its own unit tests pass, `policy build` compiles it for
//! wasm32-wasip2 and checks it, `policy eval` shows that its ranking takes effect on a view
//! where the `dc` tag decides, and `lab up --policies-dir <the crate> --policies <name>` runs it
//! on every node. The commands are the ones docs/policies.md ("Write a policy") shows.
//!
//! The crate builds in a shared target directory under the test's target dir, so a rerun
//! rebuilds only the policy (the first build compiles wit-bindgen: about 1.5 minutes).

mod support;

use regent::ha::policy::ElectionView;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const REGENT: &str = env!("CARGO_BIN_EXE_regent");
const NAME: &str = "my-dc";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Run `cmd`, echo what it printed, and return it.
fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run a command");
    eprintln!(
        "$ {cmd:?} (exit {:?})\n{}{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

/// `regent ARGS`, building policies into the shared target directory.
fn regent(args: &[&str], target: &Path) -> Output {
    run(Command::new(REGENT)
        .args(args)
        .env("CARGO_TARGET_DIR", target)
        .env_remove("REGENT_LAB_DIR"))
}

/// Whether the wasm32-wasip2 target is installed or rustup can add it.
fn can_build_wasm() -> Result<(), String> {
    let out = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .args(["--print", "sysroot"])
        .output()
        .map_err(|e| format!("rustc cannot run: {e}"))?;
    let sysroot = PathBuf::from(text(&out.stdout).trim());
    if sysroot.join("lib/rustlib/wasm32-wasip2").is_dir() {
        return Ok(());
    }
    match Command::new("rustup").arg("--version").output() {
        Ok(o) if o.status.success() => Ok(()),
        _ => Err("the wasm32-wasip2 target is not installed and rustup is absent".into()),
    }
}

/// The self-test's `leader-lost-3` view (pg-b ahead of pg-c), with pg-c tagged `dc: tag`.
fn view_with_dc(tag: &str) -> String {
    let mut view: ElectionView = regent::plugin::sample_views()
        .into_iter()
        .find(|(name, _)| *name == "leader-lost-3")
        .expect("the leader-lost-3 sample view")
        .1;
    let c = view
        .members
        .iter_mut()
        .find(|m| m.name == "pg-c")
        .expect("pg-c");
    c.tags.insert("dc".into(), tag.into());
    serde_json::to_string(&view).expect("view JSON")
}

/// The `1. NAME` line of `policy eval`'s ranking.
fn first(eval: &str) -> &str {
    eval.lines()
        .find_map(|l| l.trim_start().strip_prefix("1. "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no ranking in:\n{eval}"))
}

/// The lab directory: taken down on drop (a failed test included).
struct Lab(PathBuf);

impl Drop for Lab {
    fn drop(&mut self) {
        if self.0.join("lab.json").exists() {
            let _ = Command::new(REGENT)
                .args(["lab", "down", "--dir"])
                .arg(&self.0)
                .output();
        }
    }
}

#[test]
fn policy_new_build_eval_and_serve_in_a_lab() {
    if let Err(why) = can_build_wasm() {
        support::skip("policy_new_build_eval_and_serve_in_a_lab", &why);
        return;
    }
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("policy-sdk-target");
    let tmp = tempfile::Builder::new()
        .prefix("regent-policy-sdk-")
        .tempdir()
        .expect("tempdir");
    // The lab's PostgreSQL runs as its own user when we are root: it must reach the lab dir.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let policies = tmp.path().join("policies");
    std::fs::create_dir(&policies).expect("mkdir");
    let dir = policies.join(NAME);
    let dir_s = dir.to_str().expect("path");

    // 1. `policy new`: the crate and the next commands; a second time it refuses.
    let policies_s = policies.to_str().expect("path");
    let new = || regent(&["policy", "new", NAME, "--dir", policies_s], &target);
    let o = new();
    assert!(o.status.success());
    let out = text(&o.stdout);
    assert!(
        out.contains(&format!("regent policy build {dir_s}")),
        "{out}"
    );
    let o = new();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("already exists"),
        "{}",
        text(&o.stderr)
    );

    // Its own unit tests pass, natively, as the README says.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let o = run(Command::new(&cargo)
        .args(["test", "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target));
    assert!(o.status.success(), "the template's unit tests fail");
    assert!(text(&o.stdout).contains("test result: ok. 3 passed"));

    // 2. `policy build`: the component, checked with its manifest.
    let o = regent(&["policy", "build", dir_s], &target);
    assert!(o.status.success(), "policy build failed");
    let out = text(&o.stdout);
    assert!(out.contains(&format!("{dir_s}/{NAME}.toml: OK")), "{out}");
    assert!(out.contains(&format!("policy:    {NAME} 0.1.0")), "{out}");
    assert!(out.contains("tags:      dc"), "{out}");
    assert!(
        out.contains(&format!("--policies-dir {dir_s} --policies {NAME}")),
        "{out}"
    );
    let wasm = std::fs::read(dir.join(format!("{NAME}.wasm"))).expect("the component");
    assert_eq!(&wasm[..4], b"\0asm");

    // The ranking takes effect: pg-c is behind pg-b, but in dc primary-dc it comes first;
    // tagged with another dc, the built-in order (pg-b) wins.
    let manifest = dir.join(format!("{NAME}.toml"));
    let eval = |tag: &str| {
        let view = tmp.path().join(format!("view-{tag}.json"));
        std::fs::write(&view, view_with_dc(tag)).expect("write the view");
        let o = regent(
            &[
                "policy",
                "eval",
                manifest.to_str().expect("path"),
                "--view",
                view.to_str().expect("path"),
            ],
            &target,
        );
        assert!(o.status.success(), "policy eval failed");
        text(&o.stdout)
    };
    let preferred = eval("primary-dc");
    assert_eq!(first(&preferred), "pg-c", "{preferred}");
    assert!(
        preferred.contains("eligible, preferred (tag dc=primary-dc)"),
        "{preferred}"
    );
    let other = eval("backup-dc");
    assert_eq!(first(&other), "pg-b", "{other}");

    // 3. `lab up` with the crate as the policies directory: every node serves my-dc.
    let lab = Lab(tmp.path().join("lab"));
    let lab_s = lab.0.to_str().expect("path");
    let o = regent(
        &[
            "lab",
            "up",
            "--dir",
            lab_s,
            "--policies-dir",
            dir_s,
            "--policies",
            NAME,
        ],
        &target,
    );
    assert!(o.status.success(), "lab up failed");
    // 4. `lab status`.
    let o = regent(
        &["lab", "status", "--dir", lab_s, "--format", "json"],
        &target,
    );
    assert!(o.status.success(), "lab status failed");
    let st: serde_json::Value = serde_json::from_slice(&o.stdout).expect("status JSON");
    assert_eq!(st["healthy"], true, "{st}");
    let nodes = st["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 3, "{st}");
    for n in nodes {
        assert_eq!(n["policies"], NAME, "{n}");
    }
    let o = regent(&["lab", "down", "--dir", lab_s], &target);
    assert!(o.status.success(), "lab down failed");
}
