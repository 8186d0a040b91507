//! `dsn`: where a member's PostgreSQL listens, `host=... port=...`, from its `conn_url` in
//! etcd; the leader's unless `-r ROLE` or `-m MEMBER` says otherwise. Also the member choice
//! that `query` shares.

use super::{Session, select, unknown_member};
use crate::ctl::store::Store;
use crate::ctl::view::conn_host_port;
use crate::ctl::{CtlError, RoleFilter};
use crate::dcs::{Cluster, Member};

impl<S: Store> Session<'_, S> {
    pub(crate) async fn dsn(
        &mut self,
        role: Option<RoleFilter>,
        member: Option<String>,
    ) -> Result<(), CtlError> {
        let c = self.store.read().await?;
        let m = pick_member(&c, role, member.as_deref(), self.scope)?;
        let (host, port) = pg_address(m)?;
        self.write(&format!("host={host} port={port}\n"))
    }
}

/// The member `-m` names, else the first with `-r`'s role (the leader without either), as
/// patronictl picks it. `-r` and `-m` together are refused.
pub(super) fn pick_member<'c>(
    c: &'c Cluster,
    role: Option<RoleFilter>,
    member: Option<&str>,
    scope: &str,
) -> Result<&'c Member, CtlError> {
    match (role, member) {
        (Some(_), Some(_)) => Err(CtlError::Usage(
            "-r/--role and -m/--member choose the member in two ways: give one of them".into(),
        )),
        (None, Some(name)) => c
            .member(name)
            .ok_or_else(|| CtlError::Usage(unknown_member(c, name, scope))),
        (role, None) => {
            let chosen = select(c, &[], role.unwrap_or(RoleFilter::Leader), scope)?;
            chosen
                .first()
                .copied()
                .ok_or_else(|| CtlError::Failed(format!("cluster {scope} has no member to choose")))
        }
    }
}

/// Host and port of the member's PostgreSQL, from its `conn_url` (port 5432 if it names none).
pub(super) fn pg_address(m: &Member) -> Result<(String, u16), CtlError> {
    let url = m.data.conn_url.as_deref().unwrap_or_default();
    match conn_host_port(url) {
        Some((host, port)) if !host.is_empty() => Ok((host, port.unwrap_or(5432))),
        _ => Err(CtlError::Failed(format!(
            "member {} publishes no usable conn_url in its DCS key ({url:?}), so its PostgreSQL address is unknown; check postgresql.connect_address in its configuration",
            m.name
        ))),
    }
}
