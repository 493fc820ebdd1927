//! TLS: only 1.2 and 1.3 with AEAD suites; mTLS when a client CA is set; certificates reload
//! from disk without a restart.

use std::path::Path;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use reqwest::StatusCode;

use crate::helpers::{Db, Options, spawn_app, spawn_app_with};

/// Runs `openssl s_client` against the port; true when the handshake completed.
fn openssl_handshake(port: u16, args: &[&str]) -> bool {
    let output = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-servername",
            "localhost",
        ])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl is installed");
    let stdout = String::from_utf8_lossy(&output.stdout);
    output.status.success() && stdout.contains("Cipher is") && !stdout.contains("Cipher is (NONE)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_tls_1_2_and_1_3_with_aead_suites_are_offered() {
    let app = spawn_app(Db::Sqlite).await;
    let port = app.server.as_ref().unwrap().addr.port();
    // Positive controls: the probe itself works.
    assert!(openssl_handshake(port, &["-tls1_3"]));
    assert!(openssl_handshake(
        port,
        &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"]
    ));
    // Old protocols and CBC suites are refused, even when the client insists.
    for (protocol, cipher) in [
        ("-tls1_1", "DEFAULT:@SECLEVEL=0"),
        ("-tls1", "DEFAULT:@SECLEVEL=0"),
    ] {
        assert!(
            !openssl_handshake(port, &[protocol, "-cipher", cipher]),
            "{protocol} was accepted"
        );
    }
    for cbc in [
        "ECDHE-ECDSA-AES128-SHA",
        "ECDHE-ECDSA-AES256-SHA384",
        "AES128-SHA",
    ] {
        assert!(
            !openssl_handshake(port, &["-tls1_2", "-cipher", cbc]),
            "{cbc} was accepted"
        );
    }
}

struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        Ca {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf certificate and key (PEM) for `names`.
    fn issue(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn write(dir: &Path, name: &str, contents: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path.display().to_string()
}

fn client(root: &Ca, identity: Option<(&str, &str)>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(root.pem().as_bytes()).unwrap()]);
    if let Some((cert, key)) = identity {
        builder = builder
            .identity(reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap());
    }
    builder.build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_client_ca_only_clients_with_its_certificates_get_in() {
    let dir = std::env::temp_dir().join(format!("flowgate-mtls-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let server_ca = Ca::new("server ca");
    let client_ca = Ca::new("client ca");
    let stranger_ca = Ca::new("stranger ca");
    let (server_cert, server_key) = server_ca.issue(&["127.0.0.1", "localhost"]);
    let vars = vec![
        (
            "FLOWGATE_TLS_CERT".to_string(),
            write(&dir, "server.pem", &server_cert),
        ),
        (
            "FLOWGATE_TLS_KEY".to_string(),
            write(&dir, "server.key", &server_key),
        ),
        (
            "FLOWGATE_TLS_CLIENT_CA".to_string(),
            write(&dir, "client-ca.pem", &client_ca.pem()),
        ),
    ];
    let app = spawn_app_with_client(Db::Sqlite, vars, &server_ca, &client_ca).await;
    let url = app.url("/healthz");
    let anonymous = client(&server_ca, None).get(&url).send().await;
    assert!(anonymous.is_err(), "no client certificate, no handshake");
    let stranger = get_as(&server_ca, &stranger_ca, "mallory", &url).await;
    assert!(
        stranger.is_err(),
        "a certificate from another CA is refused"
    );
    let response = app.client.get(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // The CA file is replaced: new handshakes are judged by the new CA, without a restart.
    let ca_path = dir.join("client-ca.pem");
    std::fs::write(&ca_path, "not a certificate").unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let response = get_as(&server_ca, &client_ca, "still-trusted", &url).await;
    assert_eq!(
        response.unwrap().status(),
        StatusCode::OK,
        "a CA file that does not load keeps the previous CA"
    );
    std::fs::write(&ca_path, stranger_ca.pem()).unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let former = get_as(&server_ca, &client_ca, "formerly-trusted", &url).await;
    assert!(
        former.is_err(),
        "the replaced CA's certificates are refused"
    );
    let response = get_as(&server_ca, &stranger_ca, "newly-trusted", &url).await;
    assert_eq!(response.unwrap().status(), StatusCode::OK);
    std::fs::remove_dir_all(dir).unwrap();
}

/// GET `url` over a new connection, presenting a new certificate named `name` from `ca`.
async fn get_as(
    server_ca: &Ca,
    ca: &Ca,
    name: &str,
    url: &str,
) -> reqwest::Result<reqwest::Response> {
    let (cert, key) = ca.issue(&[name]);
    client(server_ca, Some((&cert, &key))).get(url).send().await
}

/// Starts an app whose requests go through a client holding a certificate of `client_ca`.
async fn spawn_app_with_client(
    db: Db,
    vars: Vec<(String, String)>,
    server_ca: &Ca,
    client_ca: &Ca,
) -> crate::helpers::TestApp {
    let (cert, key) = client_ca.issue(&["flowgate-test-client"]);
    let client = client(server_ca, Some((&cert, &key)));
    crate::helpers::spawn_app_using(
        db,
        Options {
            vars,
            ..Options::default()
        },
        client,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_certificate_is_served_without_a_restart() {
    let dir = std::env::temp_dir().join(format!("flowgate-reload-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let first_ca = Ca::new("first");
    let second_ca = Ca::new("second");
    let (cert, key) = first_ca.issue(&["127.0.0.1", "localhost"]);
    let cert_path = write(&dir, "server.pem", &cert);
    let key_path = write(&dir, "server.key", &key);
    let vars = vec![
        ("FLOWGATE_TLS_CERT".to_string(), cert_path.clone()),
        ("FLOWGATE_TLS_KEY".to_string(), key_path.clone()),
    ];
    let app = crate::helpers::spawn_app_using(
        Db::Sqlite,
        Options {
            vars,
            ..Options::default()
        },
        client(&first_ca, None),
    )
    .await;
    let url = app.url("/healthz");
    assert_eq!(
        client(&first_ca, None)
            .get(&url)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert!(client(&second_ca, None).get(&url).send().await.is_err());
    // A half-written replacement (key does not match) keeps the old certificate in service.
    let (new_cert, new_key) = second_ca.issue(&["127.0.0.1", "localhost"]);
    std::fs::write(&cert_path, &new_cert).unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        client(&first_ca, None)
            .get(&url)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    std::fs::write(&key_path, &new_key).unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        client(&second_ca, None)
            .get(&url)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert!(client(&first_ca, None).get(&url).send().await.is_err());
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_keys_are_files_only_the_owner_can_read() {
    use std::os::unix::fs::PermissionsExt as _;
    let app = spawn_app_with(Db::Sqlite, Options::default()).await;
    let key = app.data_dir.join("tls/key.pem");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o077,
        0,
        "key is not readable by others"
    );
    let kek = app.data_dir.join("keystore/kek");
    assert_eq!(
        std::fs::metadata(&kek).unwrap().permissions().mode() & 0o077,
        0
    );
    // The databases, with their journals, and the directories that hold them.
    let tenant = app.data_dir.join(format!("tenants/{}.db", app.tenant));
    for path in [
        app.data_dir.join("control.db"),
        app.data_dir.join("control.db-wal"),
        tenant.clone(),
        tenant.with_extension("db-wal"),
        app.data_dir.join("tenants"),
        app.data_dir.join("keystore"),
    ] {
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{} is private: {mode:o}", path.display());
    }
}
