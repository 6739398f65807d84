//! Postgres TLS as libpq's sslmode has it (RDS is reached with `PGSSLMODE=verify-full`), checked
//! against a stand-in server speaking the start of the Postgres protocol: it answers the
//! SSLRequest, completes a TLS handshake with a certificate from a throwaway CA, and then
//! authenticates the client, so `pool.get()` succeeds exactly when the client accepted the
//! server. It records whether each connection was encrypted.

use ghevents_core::store::pool_with_env;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const SSL_REQUEST: i32 = 80_877_103;

struct Pki {
    _dir: tempfile::TempDir,
    ca_pem: PathBuf,
    other_ca_pem: PathBuf,
    chain: Vec<CertificateDer<'static>>,
    key: Vec<u8>,
}

/// A CA, a server certificate it signed for `localhost` only, and an unrelated CA.
fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();

    let other_key = KeyPair::generate().unwrap();
    let mut other_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    other_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let other = other_params.self_signed(&other_key).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let ca_pem = dir.path().join("root.crt");
    let other_ca_pem = dir.path().join("other.crt");
    std::fs::write(&ca_pem, ca.pem()).unwrap();
    std::fs::write(&other_ca_pem, other.pem()).unwrap();
    Pki {
        chain: vec![server.der().clone()],
        key: server_key.serialize_der(),
        ca_pem,
        other_ca_pem,
        _dir: dir,
    }
}

/// How each connection went, in order: "plain", "tls" (handshake done, client authenticated
/// and ready), "tls-failed".
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<&'static str>>>);

impl Seen {
    fn all(&self) -> Vec<&'static str> {
        self.0.lock().unwrap().clone()
    }
}

async fn fake_postgres(pki: &Pki) -> (u16, Seen) {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        pki.chain.clone(),
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.key.clone())),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Seen::default();
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let record = record.clone();
            tokio::spawn(async move {
                let len = sock.read_i32().await.unwrap_or(0);
                let code = sock.read_i32().await.unwrap_or(0);
                if len == 8 && code == SSL_REQUEST {
                    sock.write_all(b"S").await.unwrap();
                    match acceptor.accept(sock).await {
                        Ok(mut tls) => {
                            let n = tls.read_i32().await.unwrap_or(8);
                            skip(&mut tls, n - 4).await;
                            record.0.lock().unwrap().push("tls");
                            serve(tls).await;
                        }
                        Err(_) => record.0.lock().unwrap().push("tls-failed"),
                    }
                } else {
                    skip(&mut sock, len - 8).await;
                    record.0.lock().unwrap().push("plain");
                    serve(sock).await;
                }
            });
        }
    });
    (port, seen)
}

async fn skip<S: AsyncRead + Unpin>(s: &mut S, n: i32) {
    let mut buf = vec![0; usize::try_from(n).unwrap_or(0)];
    let _ = s.read_exact(&mut buf).await;
}

/// AuthenticationOk, ReadyForQuery, then hold the connection until the client goes.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) {
    let _ = s
        .write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 0, b'Z', 0, 0, 0, 5, b'I'])
        .await;
    let _ = s.flush().await;
    let mut sink = [0u8; 256];
    while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
}

fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let m: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| m.get(k).cloned()
}

/// Connects once through a pool built for `url` and `vars`.
async fn connect(url: &str, vars: &[(&str, &str)]) -> Result<(), String> {
    let pool = pool_with_env(url, 1, &env(vars)).map_err(|e| e.to_string())?;
    match tokio::time::timeout(Duration::from_secs(10), pool.get()).await {
        Ok(Ok(_client)) => Ok(()),
        Ok(Err(e)) => Err(format!("{e:?}")),
        Err(_) => Err("timed out".into()),
    }
}

#[tokio::test]
async fn without_sslmode_connections_stay_plain() {
    let pki = pki();
    let (port, seen) = fake_postgres(&pki).await;
    connect(&format!("postgres://u@127.0.0.1:{port}/db"), &[])
        .await
        .unwrap();
    connect(
        &format!("postgres://u@127.0.0.1:{port}/db?sslmode=disable"),
        &[("PGSSLMODE", "require")],
    )
    .await
    .unwrap();
    assert_eq!(
        seen.all(),
        vec!["plain", "plain"],
        "unset means disable, and the URL wins over PGSSLMODE"
    );
}

#[tokio::test]
async fn require_encrypts_without_verifying_unless_a_root_certificate_is_given() {
    let pki = pki();
    let (port, seen) = fake_postgres(&pki).await;
    let url = format!("postgres://u@127.0.0.1:{port}/db");
    // The server's CA is unknown to the client, and 127.0.0.1 is not in the certificate:
    // `require` connects all the same, encrypted.
    connect(&format!("{url}?sslmode=require"), &[])
        .await
        .unwrap();
    connect(&url, &[("PGSSLMODE", "require")]).await.unwrap();
    assert_eq!(seen.all(), vec!["tls", "tls"]);

    // With PGSSLROOTCERT, `require` verifies the chain (as libpq does).
    let other = pki.other_ca_pem.to_str().unwrap();
    let err = connect(&url, &[("PGSSLMODE", "require"), ("PGSSLROOTCERT", other)])
        .await
        .unwrap_err();
    assert!(
        err.to_lowercase().contains("certificate") || err.contains("UnknownIssuer"),
        "{err}"
    );
    connect(
        &url,
        &[
            ("PGSSLMODE", "require"),
            ("PGSSLROOTCERT", pki.ca_pem.to_str().unwrap()),
        ],
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn verify_full_checks_the_chain_and_the_host_name() {
    let pki = pki();
    let (port, seen) = fake_postgres(&pki).await;
    let root = pki.ca_pem.to_str().unwrap();
    let other = pki.other_ca_pem.to_str().unwrap();

    connect(
        &format!("postgres://u@localhost:{port}/db?sslmode=verify-full"),
        &[("PGSSLROOTCERT", root)],
    )
    .await
    .unwrap();
    let wrong_ca = connect(
        &format!("postgres://u@localhost:{port}/db?sslmode=verify-full"),
        &[("PGSSLROOTCERT", other)],
    )
    .await;
    assert!(
        wrong_ca.is_err(),
        "a certificate from another CA is refused"
    );
    let wrong_name = connect(
        &format!("postgres://u@127.0.0.1:{port}/db?sslmode=verify-full"),
        &[("PGSSLROOTCERT", root)],
    )
    .await;
    assert!(
        wrong_name.is_err(),
        "a certificate for another host is refused"
    );
    // verify-ca: the chain only.
    connect(
        &format!("postgres://u@127.0.0.1:{port}/db?sslmode=verify-ca"),
        &[("PGSSLROOTCERT", root)],
    )
    .await
    .unwrap();

    let s = seen.all();
    assert_eq!(s.iter().filter(|x| **x == "tls").count(), 2, "{s:?}");
    assert!(
        !s.contains(&"plain"),
        "never falls back to plain text: {s:?}"
    );
}

#[tokio::test]
async fn verify_modes_without_a_root_file_trust_only_the_built_in_rds_roots() {
    let pki = pki();
    let (port, seen) = fake_postgres(&pki).await;
    let url = format!("postgres://u@localhost:{port}/db");

    // No PGSSLROOTCERT: the handshake happens and the throwaway CA's certificate is refused,
    // because only the RDS roots compiled into the library are trusted.
    let cases: [(String, &[(&str, &str)]); 3] = [
        (format!("{url}?sslmode=verify-full"), &[]),
        (url.clone(), &[("PGSSLMODE", "verify-full")]),
        (format!("{url}?sslmode=verify-ca"), &[]),
    ];
    for (target, vars) in &cases {
        let err = connect(target, vars).await.unwrap_err();
        assert!(
            err.contains("UnknownIssuer"),
            "{target} {vars:?}: refused for its issuer, not for want of a root file: {err}"
        );
    }
    // The server notes a refused handshake after the client has already given up on it.
    for _ in 0..100 {
        if seen.all().len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen.all(), vec!["tls-failed"; 3]);

    // A PGSSLROOTCERT still wins over the built-in roots.
    connect(
        &url,
        &[
            ("PGSSLMODE", "verify-full"),
            ("PGSSLROOTCERT", pki.ca_pem.to_str().unwrap()),
        ],
    )
    .await
    .unwrap();
    assert_eq!(seen.all().last(), Some(&"tls"));
}
