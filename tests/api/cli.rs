//! The command line: tenants from the CLI, and start-up refusing bad settings by name.

use std::process::Output;

use crate::helpers::{Db, spawn_app, unique_slug};

async fn flowgate(args: &[&str], vars: &[(&str, &str)]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_flowgate"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(vars.iter().copied())
        .output()
        .await
        .unwrap()
}

/// Polls the tenant's user list for up to three seconds until it answers `wanted`; returns the
/// last status.
async fn eventually(
    app: &crate::helpers::TestApp,
    slug: &str,
    key: &str,
    wanted: reqwest::StatusCode,
) -> reqwest::StatusCode {
    let mut status = reqwest::StatusCode::OK;
    for _ in 0..30 {
        let response = app
            .client
            .get(app.url(&format!("/t/{slug}/api/v1/users")))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        status = response.status();
        if status == wanted {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_stop_start_up_naming_the_variable() {
    let dir = std::env::temp_dir().join(format!("flowgate-cli-{}", uuid::Uuid::new_v4()));
    let data = dir.display().to_string();
    for (var, value) in [
        ("FLOWGATE_LISTEN", "not-an-address"),
        ("FLOWGATE_DATABASE_URL", "mysql://nope"),
        ("FLOWGATE_KEYSTORE", "hsm"),
        ("FLOWGATE_TLS_CERT", "/nonexistent/cert.pem"),
    ] {
        let output = flowgate(&["serve"], &[("FLOWGATE_DATA_DIR", &data), (var, value)]).await;
        assert_eq!(output.status.code(), Some(2), "{var}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(var), "{var}: {stderr}");
    }
    let output = flowgate(
        &["serve"],
        &[
            ("FLOWGATE_DATA_DIR", &data),
            (
                "FLOWGATE_DATABASE_URL",
                "postgres://postgres@127.0.0.1:1/none",
            ),
        ],
    )
    .await;
    assert_eq!(
        output.status.code(),
        Some(2),
        "an unreachable database stops start-up"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_managed_from_the_command_line() {
    for db in [Db::Sqlite, Db::Postgres] {
        let app = spawn_app(db).await;
        let vars: Vec<(&str, &str)> = app
            .settings_vars
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let slug = unique_slug("cli");
        let output = flowgate(
            &[
                "tenant",
                "create",
                &slug,
                "--name",
                "From the CLI",
                "--environment",
                "stage",
            ],
            &vars,
        )
        .await;
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        let key = stdout.lines().last().unwrap().trim().to_owned();
        assert!(key.starts_with("fgk_"), "{stdout}");
        let response = app
            .client
            .get(app.url(&format!("/t/{slug}/api/v1/users")))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::OK);
        let list = flowgate(&["tenant", "list"], &vars).await;
        assert!(String::from_utf8_lossy(&list.stdout).contains(&slug));
        assert!(
            flowgate(&["tenant", "suspend", &slug], &vars)
                .await
                .status
                .success()
        );
        // The server hears of it at once on PostgreSQL, within a second on SQLite.
        assert_eq!(
            eventually(&app, &slug, &key, reqwest::StatusCode::FORBIDDEN).await,
            reqwest::StatusCode::FORBIDDEN,
            "suspension reaches the running server"
        );
        assert!(
            flowgate(&["tenant", "resume", &slug], &vars)
                .await
                .status
                .success()
        );
        let migrate = flowgate(&["migrate"], &vars).await;
        assert!(
            migrate.status.success(),
            "{}",
            String::from_utf8_lossy(&migrate.stderr)
        );
        assert!(String::from_utf8_lossy(&migrate.stdout).contains("tenant(s) migrated"));
        let verify = flowgate(&["audit", "verify", &slug], &vars).await;
        assert_eq!(
            verify.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&verify.stdout)
        );
        assert!(
            flowgate(&["tenant", "delete", &slug], &vars)
                .await
                .status
                .success()
        );
        assert_eq!(
            eventually(&app, &slug, &key, reqwest::StatusCode::UNAUTHORIZED).await,
            reqwest::StatusCode::UNAUTHORIZED
        );
        let bad = flowgate(&["tenant", "create", "Bad_Slug"], &vars).await;
        assert_eq!(bad.status.code(), Some(2));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_embedded_defaults_prints_the_operator_token_once_and_never_logs_secrets() {
    //! Also the canary of secret values and payload keys: planted through the API, found in no
    //! log line, error body, audit event or file.
    let dir = std::env::temp_dir().join(format!("flowgate-serve-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (stdout, stderr) = (dir.join("stdout.log"), dir.join("stderr.log"));
    let start = || {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_flowgate"))
            .arg("serve")
            .current_dir(&dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("FLOWGATE_LISTEN", format!("127.0.0.1:{port}"))
            .stdout(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&stdout)
                    .unwrap(),
            )
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&stderr)
                    .unwrap(),
            )
            .spawn()
            .unwrap()
    };
    let stop = |child: &tokio::process::Child| {
        std::process::Command::new("kill")
            .arg("-TERM")
            .arg(child.id().unwrap().to_string())
            .status()
            .unwrap();
    };
    let mut server = start();
    // No configuration at all: SQLite, the local key store and a generated certificate, all
    // under ./data of the working directory.
    let mut ready = false;
    for _ in 0..100 {
        if dir.join("data/tls/cert.pem").exists() {
            let probe = reqwest::Client::builder()
                .tls_certs_only([reqwest::Certificate::from_pem(
                    &std::fs::read(dir.join("data/tls/cert.pem")).unwrap(),
                )
                .unwrap()])
                .pool_max_idle_per_host(0)
                .http1_only()
                .build()
                .unwrap();
            if probe
                .get(format!("https://127.0.0.1:{port}/healthz"))
                .send()
                .await
                .is_ok()
            {
                ready = true;
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        ready,
        "{}",
        std::fs::read_to_string(&stderr).unwrap_or_default()
    );
    assert!(dir.join("data/control.db").exists());
    let printed = std::fs::read_to_string(&stderr).unwrap();
    let token = printed
        .split_whitespace()
        .find(|w| w.starts_with("fgo_"))
        .expect("the operator token is printed")
        .to_owned();
    // No idle connections, so that a graceful stop has nothing to wait for.
    let pem = std::fs::read(dir.join("data/tls/cert.pem")).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
        .pool_max_idle_per_host(0)
        .http1_only()
        .build()
        .unwrap();
    let base = format!("https://127.0.0.1:{port}");
    let created: serde_json::Value = client
        .post(format!("{base}/api/v1/platform/tenants"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"slug": "acme"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = created["admin_api_key"].as_str().unwrap().to_owned();
    let response = client
        .get(format!("{base}/t/acme/api/v1/users"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let response = client
        .get(format!("{base}/t/acme/api/v1/users"))
        .bearer_auth(format!("{key}x"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::UNAUTHORIZED);
    let (canary, dir_key) = plant_secrets(&client, &base, &key).await;
    stop(&server);
    assert!(server.wait().await.unwrap().success(), "a graceful stop");
    // A second start keeps the token and does not print it again.
    let mut server = start();
    for _ in 0..100 {
        if client.get(format!("{base}/healthz")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let response = client
        .get(format!("{base}/api/v1/platform/tenants"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        reqwest::StatusCode::OK,
        "the generated token survives a restart"
    );
    stop(&server);
    server.wait().await.unwrap();
    let logs = std::fs::read_to_string(&stdout).unwrap();
    let printed = std::fs::read_to_string(&stderr).unwrap();
    assert_eq!(
        printed.matches(&token).count(),
        1,
        "printed once, on the first start only"
    );
    for secret in [&token, &key, &canary, &dir_key] {
        assert!(!logs.contains(secret.as_str()), "a secret reached the log");
        assert!(
            !printed.contains(secret.as_str()) || secret == &token,
            "a secret reached stderr"
        );
    }
    // Nor any file: databases (rows, audit trail, journals) and the sealed key store.
    for file in files_under(&dir.join("data")) {
        let bytes = std::fs::read(&file).unwrap();
        for secret in [&canary, &dir_key] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{} holds a secret in plain text",
                file.display()
            );
        }
    }
    let requests: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).expect("every log line is JSON"))
        .filter(|l: &serde_json::Value| l["fields"]["message"] == "request")
        .collect();
    assert!(requests.len() >= 4, "an access-log line per request");
    assert!(requests.iter().all(|l| {
        l["span"]["request_id"]
            .as_str()
            .is_some_and(|id| id.len() == 32)
    }));
    let _ = std::fs::remove_dir_all(dir);
}

/// Plants a secret value and a payload `dir` key through the API, uses both, and makes
/// requests that fail around them; returns them, to be looked for where they must not be.
async fn plant_secrets(client: &reqwest::Client, base: &str, key: &str) -> (String, String) {
    let canary = format!("canary-{}", uuid::Uuid::new_v4().simple());
    let api = format!("{base}/t/acme/api/v1");
    let call = |method: reqwest::Method, path: &str, body: Option<serde_json::Value>| {
        let mut request = client
            .request(method, format!("{api}{path}"))
            .bearer_auth(key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send()
    };
    let created = call(
        reqwest::Method::POST,
        "/secrets",
        Some(serde_json::json!({"name": "erp-token", "value": canary})),
    )
    .await
    .unwrap();
    assert_eq!(created.status(), reqwest::StatusCode::CREATED);
    let read: serde_json::Value = call(reqwest::Method::GET, "/secrets/erp-token/value", None)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(read["value"], canary.as_str());
    for refused in [
        serde_json::json!({"name": "erp-token", "value": canary}),
        serde_json::json!({"name": format!("bad name {canary}"), "value": canary}),
        serde_json::json!({"name": "x", "value": canary, "unknown": canary}),
    ] {
        let response = call(reqwest::Method::POST, "/secrets", Some(refused))
            .await
            .unwrap();
        assert!(response.status().is_client_error());
        assert!(
            !response.text().await.unwrap().contains(&canary),
            "an error body echoes the value"
        );
    }
    let rotated = call(
        reqwest::Method::PUT,
        "/secrets/erp-token",
        Some(serde_json::json!({"value": format!("{canary}-2")})),
    )
    .await
    .unwrap();
    assert_eq!(rotated.status(), reqwest::StatusCode::OK);
    let keys: serde_json::Value = call(reqwest::Method::GET, "/api-keys", None)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key_id = keys["items"][0]["id"].as_str().unwrap().to_owned();
    let jwk: serde_json::Value = call(
        reqwest::Method::POST,
        &format!("/api-keys/{key_id}/payload-key"),
        None,
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let dir_key = jwk["k"]
        .as_str()
        .expect("the dir key, shown once")
        .to_owned();
    let audit = call(reqwest::Method::GET, "/audit/export", None)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(audit.contains("secret.read"), "{audit}");
    assert!(!audit.contains(&canary) && !audit.contains(&dir_key));
    (canary, dir_key)
}

/// Every file under `dir`, recursively.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[test]
fn the_example_production_configuration_is_valid() {
    let file = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/flowgate.example.toml"
    ));
    let env =
        |name: &str| (name == "FLOWGATE_VAULT_TOKEN").then(|| "from-the-environment".to_owned());
    let settings = flowgate::config::Settings::from_sources(Some(file), &env).unwrap();
    assert!(matches!(
        settings.database,
        flowgate::config::DatabaseSettings::Postgres { .. }
    ));
    assert!(matches!(
        settings.keystore,
        flowgate::config::KeyStoreSettings::Vault { .. }
    ));
    assert_eq!(settings.listen.port(), 8443);
    assert!(settings.admin_listen.is_some());
    assert_eq!(settings.public_url, "https://flowgate.example.com");
}
