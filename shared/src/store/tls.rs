//! TLS for Postgres connections, with libpq's `sslmode` semantics, on rustls (ring).
//!
//! The mode comes from the URL's `sslmode` or else `PGSSLMODE`; unset means `disable` (no TLS,
//! the local and test setup). `PGSSLROOTCERT` names a PEM file of CA certificates; without it,
//! the verify modes trust the Amazon RDS root certificates compiled into the binary
//! (`shared/certs/rds-global-bundle.pem`, origin in `shared/certs/README.md`).
//!
//! | mode | TLS | server certificate |
//! |---|---|---|
//! | `disable` | never | - |
//! | `allow`, `prefer` | if the server offers it | not verified |
//! | `require` | always | verified against `PGSSLROOTCERT` when set (as libpq does), else **not verified**: encrypted, not authenticated |
//! | `verify-ca` | always | chain verified against `PGSSLROOTCERT`, else the RDS roots; host name not checked |
//! | `verify-full` | always | chain and host name verified against `PGSSLROOTCERT`, else the RDS roots |
//!
//! tokio-postgres only knows `disable`, `prefer` and `require`: the mode is taken out of the
//! URL before it is parsed and applied to the parsed configuration, and the verify modes are
//! carried by the certificate verifier.

use super::StoreError;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use std::sync::Arc;
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// The Amazon RDS root CAs (RSA2048, RSA4096 and ECC384 G1 of each region): the trust anchors
/// of `verify-ca`/`verify-full` when `PGSSLROOTCERT` is unset.
const RDS_ROOTS_PEM: &[u8] = include_bytes!("../../certs/rds-global-bundle.pem");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl Mode {
    fn parse(value: &str) -> Result<Self, StoreError> {
        Ok(match value {
            "disable" => Mode::Disable,
            "allow" | "prefer" => Mode::Prefer,
            "require" => Mode::Require,
            "verify-ca" => Mode::VerifyCa,
            "verify-full" => Mode::VerifyFull,
            other => {
                return Err(StoreError::Config(format!(
                    "sslmode={other:?} is invalid: expected disable, allow, prefer, require, verify-ca or verify-full"
                )))
            }
        })
    }

    pub(super) fn ssl_mode(self) -> SslMode {
        match self {
            Mode::Disable => SslMode::Disable,
            Mode::Prefer => SslMode::Prefer,
            Mode::Require | Mode::VerifyCa | Mode::VerifyFull => SslMode::Require,
        }
    }
}

/// Splits `sslmode` off a connection string (URL or key=value form): the string without it,
/// and the mode it named.
pub(super) fn take_sslmode(url: &str) -> (String, Option<String>) {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((head, query)) = url.split_once('?') else {
            return (url.to_owned(), None);
        };
        let mut mode = None;
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| match pair.strip_prefix("sslmode=") {
                Some(v) => {
                    mode = Some(v.to_owned());
                    false
                }
                None => true,
            })
            .collect();
        let rest = if kept.is_empty() {
            head.to_owned()
        } else {
            format!("{head}?{}", kept.join("&"))
        };
        (rest, mode)
    } else {
        let mut mode = None;
        let kept: Vec<&str> = url
            .split_whitespace()
            .filter(|kv| match kv.strip_prefix("sslmode=") {
                Some(v) => {
                    mode = Some(v.trim_matches('\'').to_owned());
                    false
                }
                None => true,
            })
            .collect();
        (kept.join(" "), mode)
    }
}

/// The mode in force: the connection string's, else `PGSSLMODE`, else `disable`.
pub(super) fn resolve_mode(
    explicit: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Mode, StoreError> {
    match explicit.map(str::to_owned).or_else(|| env("PGSSLMODE")) {
        None => Ok(Mode::Disable),
        Some(v) => Mode::parse(v.trim()),
    }
}

/// The rustls connector for `mode` (`None` for `disable`: no TLS at all).
pub(super) fn connector(
    mode: Mode,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<MakeRustlsConnect>, StoreError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // A PGSSLROOTCERT file always wins.
    let file_roots = match env("PGSSLROOTCERT") {
        Some(path) => Some(load_roots(&path)?),
        None => None,
    };
    let verifier: Arc<dyn ServerCertVerifier> = match mode {
        Mode::Disable => return Ok(None),
        // libpq: `prefer` never verifies.
        Mode::Prefer => Arc::new(NoVerification(provider.clone())),
        // libpq's `require`: with a root certificate file it behaves as `verify-ca`; without,
        // the connection is encrypted but the server is NOT authenticated (anyone on the path
        // can present any certificate). Use verify-full to authenticate it.
        Mode::Require => match file_roots {
            None => Arc::new(NoVerification(provider.clone())),
            Some(roots) => Arc::new(ChainOnly(webpki(roots, &provider)?)),
        },
        // The verify modes without a file trust the built-in RDS roots.
        Mode::VerifyCa => {
            let roots = file_roots.map_or_else(rds_roots, Ok)?;
            Arc::new(ChainOnly(webpki(roots, &provider)?))
        }
        Mode::VerifyFull => webpki(file_roots.map_or_else(rds_roots, Ok)?, &provider)?,
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Config(format!("TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Some(MakeRustlsConnect::new(config)))
}

fn load_roots(path: &str) -> Result<RootCertStore, StoreError> {
    let bad = |e: String| StoreError::Config(format!("PGSSLROOTCERT={path:?}: {e}"));
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(e.to_string()))?;
    roots_from(certs).map_err(bad)
}

/// The compiled-in RDS roots. They are checked by a test, so an error here means a broken
/// build, not a bad deployment; it is reported all the same rather than panicking.
fn rds_roots() -> Result<RootCertStore, StoreError> {
    let bad = |e: String| StoreError::Config(format!("built-in RDS root certificates: {e}"));
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(RDS_ROOTS_PEM)
        .collect::<Result<_, _>>()
        .map_err(|e| bad(e.to_string()))?;
    roots_from(certs).map_err(bad)
}

fn roots_from(certs: Vec<CertificateDer<'static>>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err("no usable CA certificate in the file".into());
    }
    Ok(roots)
}

fn webpki(
    roots: RootCertStore,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ServerCertVerifier>, StoreError> {
    let v = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| StoreError::Config(format!("TLS verifier: {e}")))?;
    Ok(v)
}

/// `verify-ca`: the chain must lead to a trusted root; the name in the certificate is not
/// compared with the host connected to.
#[derive(Debug)]
struct ChainOnly(Arc<dyn ServerCertVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(m, c, d)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(m, c, d)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `require` without a root file, and `prefer`: any certificate is accepted (the handshake
/// signatures are still checked, so the channel is encrypted to whoever answered).
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn sslmode_is_taken_out_of_urls_and_key_value_strings() {
        assert_eq!(
            take_sslmode("postgres://u@h/db"),
            ("postgres://u@h/db".into(), None)
        );
        assert_eq!(
            take_sslmode("postgres://u@h/db?sslmode=verify-full"),
            ("postgres://u@h/db".into(), Some("verify-full".into()))
        );
        assert_eq!(
            take_sslmode(
                "postgresql://u@h/db?connect_timeout=5&sslmode=require&application_name=x"
            ),
            (
                "postgresql://u@h/db?connect_timeout=5&application_name=x".into(),
                Some("require".into())
            )
        );
        assert_eq!(
            take_sslmode("host=h user=u sslmode=require dbname=d"),
            ("host=h user=u dbname=d".into(), Some("require".into()))
        );
    }

    #[test]
    fn the_url_wins_over_pgsslmode_and_unset_means_disable() {
        let env = |k: &str| (k == "PGSSLMODE").then(|| "require".to_owned());
        assert_eq!(resolve_mode(None, &no_env).unwrap(), Mode::Disable);
        assert_eq!(resolve_mode(None, &env).unwrap(), Mode::Require);
        assert_eq!(resolve_mode(Some("disable"), &env).unwrap(), Mode::Disable);
        assert_eq!(
            resolve_mode(Some("verify-full"), &no_env)
                .unwrap()
                .ssl_mode(),
            SslMode::Require
        );
        assert!(resolve_mode(Some("sometimes"), &no_env)
            .unwrap_err()
            .to_string()
            .contains("sslmode=\"sometimes\""));
    }

    #[test]
    fn verify_modes_fall_back_to_the_rds_roots_and_disable_needs_no_connector() {
        assert!(connector(Mode::Disable, &no_env).unwrap().is_none());
        assert!(connector(Mode::Require, &no_env).unwrap().is_some());
        // No PGSSLROOTCERT: the built-in RDS roots, not an error.
        assert!(connector(Mode::VerifyCa, &no_env).unwrap().is_some());
        assert!(connector(Mode::VerifyFull, &no_env).unwrap().is_some());
        // A PGSSLROOTCERT is used when set, even if it cannot be read.
        let missing = |k: &str| (k == "PGSSLROOTCERT").then(|| "/nonexistent/root.crt".to_owned());
        for mode in [Mode::Require, Mode::VerifyCa, Mode::VerifyFull] {
            let e = connector(mode, &missing).err().unwrap().to_string();
            assert!(e.contains("/nonexistent/root.crt"), "{mode:?}: {e}");
        }
    }

    #[test]
    fn embedded_rds_bundle_parses_into_87_roots() {
        let text = std::str::from_utf8(RDS_ROOTS_PEM).unwrap();
        let in_file = text.matches("-----BEGIN CERTIFICATE-----").count();
        // shared/certs/README.md: 3 roots for each of 27 regions, plus Beta and Preview.
        assert_eq!(in_file, 87, "certificates in rds-global-bundle.pem");

        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(RDS_ROOTS_PEM)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(certs.len(), in_file);
        let mut store = RootCertStore::empty();
        let (added, ignored) = store.add_parsable_certificates(certs);
        assert_eq!((added, ignored), (in_file, 0));
        assert_eq!(rds_roots().unwrap().len(), in_file);
        // Every anchor's subject names an Amazon RDS root CA of the G1 generation.
        for anchor in &store.roots {
            let subject = String::from_utf8_lossy(anchor.subject.as_ref());
            assert!(
                subject.contains("Amazon RDS")
                    && subject.contains("Root CA")
                    && subject.contains(" G1"),
                "{subject}"
            );
        }
    }
}
