//! Liveness, readiness and metrics.

use reqwest::StatusCode;

use crate::helpers::{Db, Options, client_trusting, spawn_app_with};
use crate::on_both_databases;

on_both_databases! {
    async fn health_and_readiness_answer_without_credentials(app) {
        for path in ["/healthz", "/readyz"] {
            let response = app.client.get(app.url(path)).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(body["status"], "ok");
        }
    }

    async fn metrics_need_the_operator_token_on_the_public_listener(app) {
        for _ in 0..2 {
            let (status, _) = app.get("/users", &app.admin_key).await;
            assert_eq!(status, StatusCode::OK);
        }
        let response = app.client.get(app.url("/metrics")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let response = app.client.get(app.url("/metrics")).bearer_auth(&app.admin_key).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let response = app.client.get(app.url("/metrics")).bearer_auth(&app.operator_token).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let text = response.text().await.unwrap();
        assert!(text.contains("flowgate_http_requests_total"), "{text}");
        assert!(text.contains("flowgate_authz_decisions_total"), "{text}");
        // Requests by route template (never by path), logins, caches, and on PostgreSQL the
        // pools' saturation.
        assert!(text.contains(r#"route="/t/{tenant}/api/v1/users""#), "{text}");
        assert!(text.contains(r#"flowgate_cache_lookups_total{cache="api_keys",outcome="hit"}"#), "{text}");
        assert!(!text.contains(&app.tenant), "no tenant's slug is a label");
        if app.database_url().is_some() {
            assert!(text.contains(r#"flowgate_db_pool_connections_max{pool="reads"}"#), "{text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_serves_metrics_without_a_token() {
    let app = spawn_app_with(
        Db::Sqlite,
        Options {
            admin_listener: true,
            ..Options::default()
        },
    )
    .await;
    let admin = format!("https://127.0.0.1:{}", app.admin_addr.unwrap().port());
    let client = client_trusting(&app.data_dir);
    let response = client.get(format!("{admin}/metrics")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("flowgate_http_requests_total")
    );
    let response = client
        .get(format!("{admin}/api/v1/platform/tenants"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::NOT_FOUND,
        "the admin listener serves nothing else"
    );
}
