//! The OpenAPI document is complete, served, committed, and the docs UI works offline.

use reqwest::StatusCode;

use crate::helpers::{Db, spawn_app};

#[test]
fn the_committed_document_matches_the_code() {
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/openapi/flowgate.json"
    ))
    .expect("openapi/flowgate.json is committed");
    let current = flowgate::openapi::document_json();
    assert!(
        committed == current,
        "openapi/flowgate.json is stale: run `cargo run -- openapi > openapi/flowgate.json`"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_document_is_the_committed_one_and_the_cli_prints_it() {
    let app = spawn_app(Db::Sqlite).await;
    let served: serde_json::Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let code: serde_json::Value =
        serde_json::from_str(&flowgate::openapi::document_json()).unwrap();
    assert_eq!(served, code);
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_flowgate"))
        .arg("openapi")
        .output()
        .await
        .unwrap();
    assert!(output.status.success());
    let printed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(printed, code);
    for path in [
        "/t/{tenant}/api/v1/users",
        "/t/{tenant}/api/v1/role-bindings",
        "/t/{tenant}/api/v1/api-keys/{id}",
        "/t/{tenant}/api/v1/audit/verify",
        "/api/v1/platform/tenants",
        "/api/v1/platform/tenants/{slug}/suspend",
    ] {
        assert!(code["paths"].get(path).is_some(), "{path} is documented");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docs_ui_is_served_without_any_cdn() {
    let app = spawn_app(Db::Sqlite).await;
    let response = app.client.get(app.url("/docs/")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let html = response.text().await.unwrap();
    assert!(html.contains("swagger"), "{html}");
    for asset in [
        "/docs/swagger-ui.css",
        "/docs/swagger-ui-bundle.js",
        "/docs/swagger-initializer.js",
    ] {
        let response = app.client.get(app.url(asset)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{asset}");
    }
    let initializer = app
        .client
        .get(app.url("/docs/swagger-initializer.js"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(initializer.contains("/openapi.json"));
    for page in [html, initializer] {
        assert!(
            !page.contains("https://") && !page.contains("http://"),
            "no external loads: {page}"
        );
    }
}
