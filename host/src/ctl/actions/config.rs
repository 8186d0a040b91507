//! `show-config` and `edit-config`: the cluster's dynamic configuration in etcd's `config` key.
//! They read and write only that key, with a CAS on its mod_revision.

use super::Session;
use crate::ctl::edit;
use crate::ctl::store::Store;
use crate::ctl::{CtlError, Format};
use crate::dcs::Cluster;
use serde_json::{Value, json};

/// Options of `edit-config`.
#[derive(Debug, Default)]
pub(crate) struct EditOptions {
    pub(crate) set: Vec<String>,
    pub(crate) pg: Vec<String>,
    pub(crate) apply: Option<String>,
    pub(crate) replace: Option<String>,
    pub(crate) quiet: bool,
    pub(crate) force: bool,
}

impl<S: Store> Session<'_, S> {
    fn config_of(&self, c: &Cluster) -> Result<(Value, i64), CtlError> {
        c.config.clone().ok_or_else(|| {
            CtlError::Failed(format!(
                "cluster {} has no (valid) config key in etcd: it is not bootstrapped yet, or the key is not JSON",
                self.scope
            ))
        })
    }

    pub(super) async fn show_config(&mut self) -> Result<(), CtlError> {
        let c = self.store.read().await?;
        let (config, _) = self.config_of(&c)?;
        let text = match self.format {
            Format::Json => format!(
                "{}\n",
                serde_json::to_string_pretty(&config).unwrap_or_default()
            ),
            _ => edit::to_yaml(&config),
        };
        self.write(&text)
    }

    pub(crate) async fn edit_config(&mut self, o: EditOptions) -> Result<(), CtlError> {
        let c = self.store.read().await?;
        let (config, revision) = self.config_of(&c)?;
        let before = edit::to_yaml(&config);
        let mut changed = config.clone();
        let mut requested = false;
        if let Some(f) = &o.replace {
            let text = edit::read_input(f, "--replace")?;
            changed = edit::parse_document(&text, &format!("--replace {f}"))?;
            requested = true;
        }
        if let Some(f) = &o.apply {
            let text = edit::read_input(f, "--apply")?;
            let patch = edit::parse_document(&text, &format!("--apply {f}"))?;
            edit::merge_patch(&mut changed, &patch);
            requested = true;
        }
        if !o.set.is_empty() || !o.pg.is_empty() {
            changed = edit::apply_assignments(&changed, &o.set, &o.pg)?;
            requested = true;
        }
        if !requested {
            let text = edit::run_editor(&before, self.scope)?;
            changed = edit::parse_document(&text, "the edited configuration")?;
        }
        if changed == config {
            self.note("Not changed")?;
            return self.emit(json!({"changed": false, "config": config}));
        }
        if let Some(fit) = edit::validate(&config, &changed)? {
            // The line the nodes log when they apply it.
            eprintln!("warning: {}", fit.warning());
        }
        if !o.quiet {
            let d = edit::diff(&before, &edit::to_yaml(&changed));
            if self.format.is_text() {
                self.write(&d)?;
            } else {
                eprint!("{d}");
            }
        }
        self.confirm(
            o.force,
            "Apply these changes?",
            "the configuration was not changed",
        )?;
        if !self.store.write_config(&changed, revision).await? {
            return Err(CtlError::Failed(
                "Config modification aborted due to concurrent changes: the config key changed after it was read; nothing was written, run the command again".into(),
            ));
        }
        self.note("Configuration changed")?;
        self.emit(json!({"changed": true, "config": changed}))
    }
}
