//! The files `regent policy new` writes: the policy SDK's sources and WIT, embedded into this
//! binary from `plugins/sdk` when it is built, and the new crate's template.
//!
//! Embedding (rather than pointing the new crate at this repository) lets a `regent` installed
//! anywhere scaffold a crate that builds: the SDK it writes is the one this Regent was built
//! with, so the component speaks this Regent's WIT version. The list of SDK files is checked
//! against `plugins/sdk` by a unit test, so a file added there cannot be forgotten here.

/// A file to write: its path inside the new crate, and its text (with the placeholders
/// `__NAME__` and `__TYPE__` for the template).
pub(super) struct File {
    pub(super) path: &'static str,
    pub(super) text: &'static str,
}

macro_rules! sdk {
    ($($path:literal),* $(,)?) => {
        &[$(File {
            path: concat!("sdk/", $path),
            text: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../plugins/sdk/", $path)),
        }),*]
    };
}

/// The SDK crate, as `plugins/sdk` holds it (its `wit/` is the repository's `wit/`).
pub(super) const SDK: &[File] = sdk!(
    "Cargo.toml",
    "src/allocator.rs",
    "src/lib.rs",
    "src/lsn.rs",
    "src/names.rs",
    "src/patroni.rs",
    "src/policy.rs",
    "src/ranking.rs",
    "src/settings.rs",
    "src/tags.rs",
    "src/testing.rs",
    "wit/policy.wit",
);

macro_rules! template {
    ($($path:literal => $file:literal),* $(,)?) => {
        &[$(File {
            path: $path,
            text: include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/src/plugin/scaffold/template/",
                $file
            )),
        }),*]
    };
}

/// The new crate: a useful policy (prefer a `dc` tag) with its manifest, tests and README.
pub(super) const TEMPLATE: &[File] = template!(
    "Cargo.toml" => "Cargo.toml.in",
    "src/lib.rs" => "lib.rs.in",
    "__NAME__.toml" => "manifest.toml.in",
    "README.md" => "README.md.in",
    ".gitignore" => "gitignore.in",
);

/// The versions the shipped plugins are built and tested with, as the new crate's
/// `Cargo.lock`: its first build resolves nothing new, and works offline from a cargo cache
/// that built them (cargo drops the entries of the plugins themselves).
pub(super) const LOCK: File = File {
    path: "Cargo.lock",
    text: include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../plugins/Cargo.lock"
    )),
};

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    fn files_under(dir: &Path, base: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                files_under(&path, base, out);
            } else {
                let rel = path.strip_prefix(base).expect("prefix");
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }

    #[test]
    fn every_sdk_file_is_embedded() {
        let sdk = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plugins/sdk");
        let mut on_disk = Vec::new();
        files_under(&sdk, &sdk, &mut on_disk);
        on_disk.sort();
        let mut embedded: Vec<String> = SDK
            .iter()
            .map(|f| f.path.trim_start_matches("sdk/").to_string())
            .collect();
        embedded.sort();
        assert_eq!(
            embedded, on_disk,
            "update SDK in host/src/plugin/scaffold/files.rs"
        );
    }

    #[test]
    fn the_embedded_wit_is_the_one_regent_speaks() {
        let wit = SDK
            .iter()
            .find(|f| f.path == "sdk/wit/policy.wit")
            .expect("wit");
        assert_eq!(wit.text, include_str!("../../../../wit/policy.wit"));
        assert!(
            wit.text
                .contains(&format!("package {};", crate::plugin::WIT_PACKAGE))
        );
    }
}
