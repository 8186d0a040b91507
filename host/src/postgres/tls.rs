//! TLS for Regent's own connections to PostgreSQL (the superuser session, another member's
//! received position, the policies' probes), with libpq's meaning of the role's `sslmode`,
//! `sslrootcert`, `sslcert`/`sslkey` and `channel_binding`: the connection strings Regent
//! hands to libpq's programs (`primary_conninfo`, pg_basebackup, pg_rewind, psql) carry the
//! same keywords and libpq applies them itself.
//!
//! | `sslmode` | TLS | server certificate |
//! |---|---|---|
//! | `disable` | never | — |
//! | `allow`, `prefer` | when the server offers it | not checked |
//! | `require` | always | checked against `sslrootcert` when one is given, else not |
//! | `verify-ca` | always | signed by `sslrootcert` |
//! | `verify-full` | always | signed by `sslrootcert` and naming the host |

use std::sync::Arc;

use tokio_postgres::config::{ChannelBinding, SslMode};
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

use super::{PgError, Result};

/// Connect with `cfg` as the role's `params` say, and drive the connection in its own task.
pub(crate) async fn connect(
    cfg: &mut tokio_postgres::Config,
    params: &[(String, String)],
) -> Result<tokio_postgres::Client> {
    let get = |k: &str| {
        params
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    if let Some(cb) = get("channel_binding") {
        cfg.channel_binding(match cb {
            "require" => ChannelBinding::Require,
            "disable" => ChannelBinding::Disable,
            _ => ChannelBinding::Prefer,
        });
    }
    let mode = get("sslmode");
    let check = match mode {
        None | Some("disable") => {
            if mode.is_some() {
                cfg.ssl_mode(SslMode::Disable);
            }
            let (client, conn) = cfg.connect(tokio_postgres::NoTls).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            return Ok(client);
        }
        Some("allow" | "prefer") => {
            cfg.ssl_mode(SslMode::Prefer);
            Check::Nothing
        }
        Some("require") => {
            cfg.ssl_mode(SslMode::Require);
            match get("sslrootcert") {
                Some(_) => Check::Chain,
                None => Check::Nothing,
            }
        }
        Some("verify-ca") => {
            cfg.ssl_mode(SslMode::Require);
            Check::Chain
        }
        Some("verify-full") => {
            cfg.ssl_mode(SslMode::Require);
            Check::ChainAndName
        }
        Some(other) => {
            return Err(PgError::User(format!(
                "sslmode {other:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"
            )));
        }
    };
    let config = client_config(check, get("sslrootcert"), get("sslcert"), get("sslkey"))?;
    let (client, conn) = cfg
        .connect(tokio_postgres_rustls::MakeRustlsConnect::new(config))
        .await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    Nothing,
    Chain,
    ChainAndName,
}

fn file_error(key: &str, path: &str, problem: impl std::fmt::Display) -> PgError {
    PgError::User(format!(
        "postgresql.authentication: {key} {path:?} {problem}; give a readable PEM file (the user running Regent must be able to read it)"
    ))
}

fn client_config(
    check: Check,
    rootcert: Option<&str>,
    cert: Option<&str>,
    key: Option<&str>,
) -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let webpki = match check {
        Check::Nothing => None,
        Check::Chain | Check::ChainAndName => {
            let Some(root) = rootcert else {
                return Err(PgError::User(
                    "sslmode verify-ca and verify-full need sslrootcert: set postgresql.authentication.<role>.sslrootcert to the CA that signs the server certificates".into(),
                ));
            };
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(root)
                .map_err(|e| file_error("sslrootcert", root, e))?
            {
                let c = c.map_err(|e| file_error("sslrootcert", root, e))?;
                roots
                    .add(c)
                    .map_err(|e| file_error("sslrootcert", root, e))?;
            }
            if roots.is_empty() {
                return Err(file_error("sslrootcert", root, "holds no certificate"));
            }
            Some(
                rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider.clone(),
                )
                .build()
                .map_err(|e| file_error("sslrootcert", root, e))?,
            )
        }
    };
    let verifier = Arc::new(Verifier {
        webpki,
        check_name: check == Check::ChainAndName,
        provider: provider.clone(),
    });
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PgError::User(format!("TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match cert {
        None => Ok(builder.with_no_client_auth()),
        Some(cert) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<std::result::Result<_, _>>())
                .map_err(|e| file_error("sslcert", cert, e))?;
            let key_path = key.unwrap_or(cert);
            let key = PrivateKeyDer::from_pem_file(key_path)
                .map_err(|e| file_error("sslkey", key_path, e))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| file_error("sslcert", cert, e))
        }
    }
}

/// libpq's checks of the server certificate for a `sslmode` (see the module's table).
#[derive(Debug)]
struct Verifier {
    webpki: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    check_name: bool,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let Some(webpki) = &self.webpki else {
            return Ok(ServerCertVerified::assertion());
        };
        match webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
