//! `remove CLUSTER`: delete every key of a cluster from etcd, for a cluster that is gone. As with
//! patronictl, it shows the members, then wants three answers typed on stdin (terminal or not,
//! so a script can pipe them; there is no `--force`): the cluster's name, the phrase
//! "Yes I am aware", and, when the leader key is held, the leader's name.

use super::Session;
use crate::ctl::CtlError;
use crate::ctl::store::Store;
use crate::ctl::view;

/// The phrase `remove` wants typed, patronictl's, so that scripts written for it work.
pub(crate) const AWARE: &str = "Yes I am aware";

impl<S: Store> Session<'_, S> {
    pub(crate) async fn remove(&mut self, cluster: &str) -> Result<(), CtlError> {
        let c = self.store.read().await?;
        let table = view::render_members(&c, self.scope, self.format, false, false);
        self.write(&table)?;
        self.typed(
            "Type the name of the cluster to remove",
            cluster,
            &format!("that is not the cluster's name ({cluster})"),
        )?;
        self.typed(
            &format!(
                "This deletes every key of cluster {cluster} from etcd; type \"{AWARE}\" to go on"
            ),
            AWARE,
            &format!("the answer was not exactly \"{AWARE}\""),
        )?;
        if let Some(leader) = c.leader_name() {
            self.typed(
                &format!(
                    "Cluster {cluster} has a leader and looks healthy; type the leader's name to go on"
                ),
                leader,
                &format!("that is not the leader of cluster {cluster}"),
            )?;
        }
        let deleted = self.store.delete_cluster().await?;
        eprintln!("Removed cluster {cluster} from etcd ({deleted} keys)");
        Ok(())
    }

    /// Ask `question`; anything but `expected` refuses with `wrong`.
    fn typed(&mut self, question: &str, expected: &str, wrong: &str) -> Result<(), CtlError> {
        let answer = self.prompt.type_in(question)?;
        if answer == expected {
            Ok(())
        } else {
            Err(CtlError::Usage(format!(
                "{answer:?}: {wrong}; nothing was removed"
            )))
        }
    }
}
