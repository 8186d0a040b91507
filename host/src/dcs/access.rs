//! How to reach etcd and log in to it: the endpoints, TLS (the CA that signs etcd's
//! certificates, the client certificate etcd's `--client-cert-auth` asks for) and the user
//! of etcd's `--auth`, turned into the client's connect options. The files are read here, at
//! connect time, so a renewed certificate is used from the next connection on.

use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};
use std::path::{Path, PathBuf};

/// How to reach etcd: `etcd3.hosts`, `protocol`/`cacert`/`cert`/`key`, `username`/`password`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EtcdAccess {
    /// `host:port` each.
    pub endpoints: Vec<String>,
    /// `Some` when the endpoints speak HTTPS (`protocol: https`).
    pub tls: Option<EtcdTls>,
    /// User and password for etcd's authentication.
    pub user: Option<(String, String)>,
}

/// The TLS files for etcd.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EtcdTls {
    /// CA certificates (PEM); `None`: the system's trusted roots.
    pub cacert: Option<PathBuf>,
    /// Client certificate (PEM), which may hold the key as well.
    pub cert: Option<PathBuf>,
    /// The client certificate's key (PEM); `None`: inside `cert`.
    pub key: Option<PathBuf>,
}

/// A TLS file for etcd that cannot be used: the key that names it, the path and the problem.
#[derive(Debug, thiserror::Error)]
#[error("etcd3.{key} = {path:?}: {problem}; {fix}")]
pub struct EtcdFileError {
    key: &'static str,
    path: PathBuf,
    problem: String,
    fix: &'static str,
}

impl EtcdAccess {
    /// Endpoints alone: plain HTTP, no user.
    pub fn plain(endpoints: &[String]) -> EtcdAccess {
        EtcdAccess {
            endpoints: endpoints.to_vec(),
            ..EtcdAccess::default()
        }
    }

    /// The endpoints as the client takes them: `https://host:port` with TLS, else bare.
    pub(crate) fn urls(&self) -> Vec<String> {
        self.endpoints
            .iter()
            .map(|e| match self.tls {
                Some(_) => format!("https://{e}"),
                None => e.clone(),
            })
            .collect()
    }

    /// `opts` with this access's TLS and user added.
    pub(crate) fn apply(&self, mut opts: ConnectOptions) -> Result<ConnectOptions, EtcdFileError> {
        if let Some(tls) = &self.tls {
            opts = opts.with_tls(tls.options()?);
        }
        if let Some((user, password)) = &self.user {
            // etcd's simple tokens expire after 5 idle minutes: log in again when one does.
            opts = opts
                .with_user(user.clone(), password.clone())
                .with_auto_token_refresh(true);
        }
        Ok(opts)
    }
}

fn read(key: &'static str, path: &Path, what: &str) -> Result<Vec<u8>, EtcdFileError> {
    let pem = std::fs::read(path).map_err(|e| EtcdFileError {
        key,
        path: path.to_path_buf(),
        problem: format!("cannot be read: {e}"),
        fix: "check the path and that the user running Regent may read it",
    })?;
    let marker: &[u8] = if what == "key" {
        b"PRIVATE KEY-----"
    } else {
        b"-----BEGIN CERTIFICATE-----"
    };
    if !pem.windows(marker.len()).any(|w| w == marker) {
        return Err(EtcdFileError {
            key,
            path: path.to_path_buf(),
            problem: format!("holds no PEM {what}"),
            fix: if what == "key" {
                "give the unencrypted private key in PEM format, in etcd3.key or appended to etcd3.cert"
            } else {
                "give the certificate in PEM format, `-----BEGIN CERTIFICATE-----` blocks"
            },
        });
    }
    Ok(pem)
}

impl EtcdTls {
    fn options(&self) -> Result<TlsOptions, EtcdFileError> {
        let mut tls = TlsOptions::new();
        match &self.cacert {
            Some(ca) => {
                tls = tls.ca_certificate(Certificate::from_pem(read("cacert", ca, "certificate")?));
            }
            None => tls = tls.with_native_roots(),
        }
        if let Some(cert) = &self.cert {
            let (key_name, key_path) = match &self.key {
                Some(k) => ("key", k.as_path()),
                None => ("cert", cert.as_path()),
            };
            let cert_pem = read("cert", cert, "certificate")?;
            let key_pem = read(key_name, key_path, "key")?;
            tls = tls.identity(Identity::from_pem(cert_pem, key_pem));
        }
        Ok(tls)
    }
}
