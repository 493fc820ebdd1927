//! API clients: an outside validator accepts the OpenAPI document, SDKs generated from it by
//! `openapi-python-client` (PyPI) and `@hey-api/openapi-ts` (npm) drive a real scenario against
//! the running server, and schemathesis (PyPI) finds nothing wrong with any operation.
//!
//! The tools are installed by `scripts/test`, the README's test command.

use std::path::{Path, PathBuf};
use std::process::Output;

use tokio::process::Command;

use crate::helpers::{Db, TestApp, spawn_app};

const CLIENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients");

/// `name` on `PATH`, where `scripts/test` puts the Python tools.
fn tool(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(name))
                .find(|candidate| candidate.is_file())
        })
        .unwrap_or_else(|| panic!("`{name}` is not on PATH: run `scripts/test`, which installs it"))
}

/// The TypeScript tool chain, installed by `npm ci` in `tests/clients/typescript`.
fn node_modules() -> PathBuf {
    let modules = Path::new(CLIENTS).join("typescript/node_modules");
    assert!(
        modules.join(".bin/openapi-ts").exists(),
        "the TypeScript generator is missing: run `scripts/test`, which installs it"
    );
    modules
}

fn succeeded(what: &str, output: &Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{what} failed:\n{text}");
    text
}

/// The document the server serves, written to `dir`.
async fn served_document(app: &TestApp, dir: &Path) -> PathBuf {
    let document = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let path = dir.join("openapi.json");
    std::fs::write(&path, document).unwrap();
    path
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("flowgate-{name}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outside_validator_accepts_the_served_document_as_openapi_3_1() {
    let app = spawn_app(Db::Sqlite).await;
    let dir = scratch("openapi");
    let document = served_document(&app, &dir).await;
    let output = Command::new(tool("openapi-spec-validator"))
        .arg(&document)
        .output()
        .await
        .unwrap();
    let text = succeeded("openapi-spec-validator", &output);
    assert!(text.contains("OK"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_python_client_runs_a_tenant_s_first_day() {
    let app = spawn_app(Db::Sqlite).await;
    let dir = scratch("python-sdk");
    let document = served_document(&app, &dir).await;
    let generated = Command::new(tool("openapi-python-client"))
        .arg("generate")
        .arg("--path")
        .arg(&document)
        .arg("--output-path")
        .arg(dir.join("flowgate_client"))
        .args(["--meta", "none", "--config"])
        .arg(Path::new(CLIENTS).join("python/openapi-python-client.yaml"))
        .output()
        .await
        .unwrap();
    let text = succeeded("openapi-python-client", &generated);
    assert!(
        !text.to_lowercase().contains("warning"),
        "the generator warned:\n{text}"
    );
    let ran = Command::new(tool("python3"))
        .arg(Path::new(CLIENTS).join("python/scenario.py"))
        .env("PYTHONPATH", &dir)
        .env("FLOWGATE_URL", &app.base)
        .env("FLOWGATE_CA", app.data_dir.join("tls/cert.pem"))
        .env("FLOWGATE_OPERATOR_TOKEN", &app.operator_token)
        .output()
        .await
        .unwrap();
    let text = succeeded("the Python scenario", &ran);
    assert!(text.contains("python scenario passed"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_typescript_client_runs_a_tenant_s_first_day() {
    let app = spawn_app(Db::Postgres).await;
    let modules = node_modules();
    let dir = scratch("typescript-sdk");
    let document = served_document(&app, &dir).await;
    let project = Path::new(CLIENTS).join("typescript");
    for file in ["package.json", "tsconfig.json", "openapi-ts.config.mjs"] {
        std::fs::copy(project.join(file), dir.join(file)).unwrap();
    }
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::copy(project.join("src/scenario.ts"), dir.join("src/scenario.ts")).unwrap();
    std::os::unix::fs::symlink(&modules, dir.join("node_modules")).unwrap();
    let generated = Command::new(modules.join(".bin/openapi-ts"))
        .current_dir(&dir)
        .env("FLOWGATE_OPENAPI", &document)
        .env("FLOWGATE_SDK_OUT", dir.join("src/client"))
        .output()
        .await
        .unwrap();
    let text = succeeded("openapi-ts", &generated);
    assert!(
        !text.to_lowercase().contains("warn"),
        "the generator warned:\n{text}"
    );
    let compiled = Command::new(modules.join(".bin/tsc"))
        .args(["-p", "."])
        .current_dir(&dir)
        .output()
        .await
        .unwrap();
    succeeded("tsc (the scenario against the generated types)", &compiled);
    let ran = Command::new("node")
        .arg("out/scenario.js")
        .current_dir(&dir)
        .env("NODE_EXTRA_CA_CERTS", app.data_dir.join("tls/cert.pem"))
        .env("FLOWGATE_URL", &app.base)
        .env("FLOWGATE_OPERATOR_TOKEN", &app.operator_token)
        .output()
        .await
        .unwrap();
    let text = succeeded("the TypeScript scenario", &ran);
    assert!(text.contains("typescript scenario passed"), "{text}");
}

/// Operations after which the run's own credential or tenant may be gone: each group runs after
/// the ones it could lock out.
const RUNS: &[(&str, &[&str])] = &[
    (
        "tenant operations",
        &[
            "--include-path-regex",
            "^/t/",
            "--exclude-operation-id",
            "delete_api_key",
            "--exclude-operation-id",
            "delete_role_binding",
        ],
    ),
    (
        "operations that can revoke the run's own key or binding",
        &[
            "--include-operation-id",
            "delete_api_key",
            "--include-operation-id",
            "delete_role_binding",
        ],
    ),
    (
        "platform and health operations, which can suspend or delete the tenant",
        &["--exclude-path-regex", "^/t/"],
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing_wrong_with_any_operation() {
    let app = spawn_app(Db::Sqlite).await;
    let st = tool("st");
    // schemathesis keeps a cache and an example database in its working directory.
    let workdir = scratch("schemathesis");
    for (what, filters) in RUNS {
        let output = Command::new(&st)
            .current_dir(&workdir)
            .arg("--config-file")
            .arg(Path::new(CLIENTS).join("schemathesis.toml"))
            .args(["run", "--no-color"])
            .arg(app.url("/openapi.json"))
            .args(*filters)
            .env("FLOWGATE_URL", &app.base)
            .env("FLOWGATE_CA", app.data_dir.join("tls/cert.pem"))
            .env("FLOWGATE_TENANT", &app.tenant)
            .env("FLOWGATE_TENANT_KEY", &app.admin_key)
            .env("FLOWGATE_OPERATOR_TOKEN", &app.operator_token)
            .output()
            .await
            .unwrap();
        let text = succeeded(&format!("schemathesis on the {what}"), &output);
        assert!(
            text.contains("Tested:") && !text.contains("Tested: 0"),
            "schemathesis tested the {what}:\n{text}"
        );
    }
}
