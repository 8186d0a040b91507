//! HTTPS for the REST API (rustls with the ring provider): the server configuration from
//! `restapi.certfile`/`keyfile`, kept in a [`TlsCell`] that a reload replaces (a renewed
//! certificate serves from the next handshake on). The server (`server.rs`) runs each handshake
//! in its connection's own task, within [`HANDSHAKE_TIMEOUT`], so a slow or silent client holds
//! up nobody else and counts against the connection cap.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::RestApi;

/// How long a client has to complete the TLS handshake.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A TLS file that cannot be used, naming the key, the path and the fix.
#[derive(Debug, thiserror::Error)]
#[error("{key} = {path:?}: {problem}; {fix}")]
pub struct TlsError {
    pub(crate) key: &'static str,
    pub(crate) path: PathBuf,
    pub(crate) problem: String,
    pub(crate) fix: String,
}

fn tls_error(key: &'static str, path: &Path, problem: String, fix: &str) -> TlsError {
    TlsError {
        key,
        path: path.to_path_buf(),
        problem,
        fix: fix.to_string(),
    }
}

/// The server configuration when `restapi.certfile` is set (the key from `restapi.keyfile`, or
/// from the certificate file itself); `None` for plain HTTP. Every file problem is reported
/// with the key that names the file.
pub fn server_config(restapi: &RestApi) -> Result<Option<Arc<rustls::ServerConfig>>, TlsError> {
    let Some(certfile) = &restapi.certfile else {
        return Ok(None);
    };
    let readable = |key: &'static str, path: &Path| {
        std::fs::metadata(path).map_err(|e| {
            tls_error(
                key,
                path,
                format!("cannot be read: {e}"),
                "check the path and that the user running Regent may read it",
            )
        })
    };
    readable("restapi.certfile", certfile)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(certfile)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| {
            tls_error(
                "restapi.certfile",
                certfile,
                format!("is not a PEM certificate file: {e}"),
                "give the certificate (then any intermediates) in PEM format, `-----BEGIN CERTIFICATE-----` blocks",
            )
        })?;
    if certs.is_empty() {
        return Err(tls_error(
            "restapi.certfile",
            certfile,
            "holds no PEM certificate".into(),
            "give the certificate (then any intermediates) in PEM format, `-----BEGIN CERTIFICATE-----` blocks",
        ));
    }
    let (key_name, key_path) = match &restapi.keyfile {
        Some(k) => ("restapi.keyfile", k.as_path()),
        None => ("restapi.certfile", certfile.as_path()),
    };
    readable(key_name, key_path)?;
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| {
        let fix = if restapi.keyfile.is_some() {
            "give the unencrypted private key in PEM format (PKCS#8, PKCS#1 or SEC1)"
        } else {
            "set restapi.keyfile to the unencrypted PEM private key, or append the key to restapi.certfile"
        };
        tls_error(
            key_name,
            key_path,
            format!("holds no usable private key: {e}"),
            fix,
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client_auth = client_verifier(restapi, &provider)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| {
            match client_auth {
                Some(v) => b.with_client_cert_verifier(v),
                None => b.with_no_client_auth(),
            }
            .with_single_cert(certs, key)
        })
        .map_err(|e| {
            tls_error(
                key_name,
                key_path,
                format!("cannot be used with restapi.certfile: {e}"),
                "make sure the key belongs to the certificate (compare `openssl x509 -noout -pubkey` with `openssl pkey -pubout`)",
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec(), b"http/1.0".to_vec()];
    Ok(Some(Arc::new(config)))
}

/// How the API asks for client certificates (`restapi.verify_client`, Patroni's values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyClient {
    /// Never asked for.
    None,
    /// Asked for in the handshake, which goes on without one; the mutating endpoints answer
    /// 403 `client certificate required` when none was given.
    Optional,
    /// The handshake fails without a certificate signed by `restapi.cafile`.
    Required,
}

impl VerifyClient {
    /// The mode `restapi` asks for: only over HTTPS (Patroni ignores it over HTTP).
    pub fn of(restapi: &RestApi) -> VerifyClient {
        if restapi.certfile.is_none() {
            return VerifyClient::None;
        }
        match restapi
            .verify_client
            .as_deref()
            .map(|v| v.trim().to_ascii_lowercase())
            .as_deref()
        {
            Some("optional") => VerifyClient::Optional,
            Some("required") => VerifyClient::Required,
            _ => VerifyClient::None,
        }
    }
}

/// The verifier of client certificates against `restapi.cafile`, when `verify_client` asks for
/// them.
fn client_verifier(
    restapi: &RestApi,
    provider: &Arc<rustls::crypto::CryptoProvider>,
) -> Result<Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>, TlsError> {
    let mode = VerifyClient::of(restapi);
    if mode == VerifyClient::None {
        return Ok(None);
    }
    let fix = "set restapi.cafile to the PEM file of the CA that signs the clients' certificates";
    let Some(cafile) = &restapi.cafile else {
        return Err(tls_error(
            "restapi.verify_client",
            Path::new(restapi.verify_client.as_deref().unwrap_or_default()),
            "needs restapi.cafile to check client certificates against".into(),
            fix,
        ));
    };
    let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cafile)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| {
            tls_error(
                "restapi.cafile",
                cafile,
                format!("cannot be read as PEM certificates: {e}"),
                fix,
            )
        })?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(cas);
    if added == 0 {
        return Err(tls_error(
            "restapi.cafile",
            cafile,
            "holds no usable CA certificate".into(),
            fix,
        ));
    }
    let builder = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    );
    let builder = if mode == VerifyClient::Optional {
        builder.allow_unauthenticated()
    } else {
        builder
    };
    builder.build().map(Some).map_err(|e| {
        tls_error(
            "restapi.cafile",
            cafile,
            format!("cannot verify client certificates: {e}"),
            fix,
        )
    })
}

/// The server configuration the listener uses for each new handshake; [`TlsCell::set`]
/// replaces it (connections already open keep theirs). Cheap to clone: the clones share it.
#[derive(Clone)]
pub struct TlsCell(Arc<RwLock<Arc<rustls::ServerConfig>>>);

impl TlsCell {
    /// A cell holding `config`.
    pub fn new(config: Arc<rustls::ServerConfig>) -> TlsCell {
        TlsCell(Arc::new(RwLock::new(config)))
    }

    pub(crate) fn get(&self) -> Arc<rustls::ServerConfig> {
        // A panic while the lock was held cannot leave a half-written `Arc`: use it.
        match self.0.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub(crate) fn set(&self, config: Arc<rustls::ServerConfig>) {
        match self.0.write() {
            Ok(mut c) => *c = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
    }
}
