//! Access tokens: the client-credentials grant at the token endpoint, bearer JWTs at the API,
//! and the attacks on both. Tokens are checked by a standard JOSE library (`jose`, npm) against
//! the tenant's published JWKS.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Db, Options, TestApp, assert_problem, spawn_app, spawn_app_with};

/// A service account holding `role`, and an OAuth client of it: `(client_id, client_secret)`.
async fn client_with_role(app: &TestApp, role: &str) -> (String, String, String) {
    let (_, account) = app
        .post(
            "/service-accounts",
            &app.admin_key,
            json!({"name": format!("sa-{}", uuid::Uuid::new_v4().simple())}),
        )
        .await;
    let account = account["id"].as_str().unwrap().to_owned();
    let (status, body) = app
        .post(
            "/role-bindings",
            &app.admin_key,
            json!({"role": role, "subject": {"type": "service_account", "id": account}, "scope": {"type": "tenant"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, client) = app
        .post(
            "/clients",
            &app.admin_key,
            json!({"name": "script", "service_account_id": account}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{client}");
    (
        client["client_id"].as_str().unwrap().to_owned(),
        client["client_secret"].as_str().unwrap().to_owned(),
        client["id"].as_str().unwrap().to_owned(),
    )
}

fn token_url(app: &TestApp) -> String {
    app.url(&format!("/t/{}/auth/token", app.tenant))
}

/// Asks the token endpoint with HTTP Basic client authentication.
async fn token(app: &TestApp, client_id: &str, secret: &str) -> (StatusCode, Value) {
    fetch(
        app.client
            .post(token_url(app))
            .basic_auth(client_id, Some(secret))
            .form(&[("grant_type", "client_credentials")]),
    )
    .await
}

/// Sends `request` and reads its JSON answer (or text).
async fn fetch(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

crate::on_both_databases! {
    async fn a_client_gets_a_token_and_uses_it_until_revoked(app) {
        let (client_id, secret, id) = client_with_role(&app, "Viewer").await;
        let (status, issued) = token(&app, &client_id, &secret).await;
        assert_eq!(status, StatusCode::OK, "{issued}");
        assert_eq!(issued["token_type"], "Bearer");
        assert_eq!(issued["expires_in"], 600);
        let access = issued["access_token"].as_str().unwrap().to_owned();
        let (status, _) = app.get("/users", &access).await;
        assert_eq!(status, StatusCode::OK);
        let (status, me) = app.get("/me", &access).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(me["type"], "service_account");
        assert_eq!(me["auth"]["method"], "access_token");
        // The token carries its account's permissions, no more.
        let (status, body) = app.post("/users", &access, json!({"email": "x@acme.example", "display_name": "X"})).await;
        assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");

        // Revoking the client stops its tokens now, not at `exp`.
        let (status, _) = app.call(Method::DELETE, &format!("/clients/{id}"), &app.admin_key, None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, body) = app.get("/users", &access).await;
        assert_problem(status, &body, StatusCode::UNAUTHORIZED, "invalid_credentials");
        let (status, body) = token(&app, &client_id, &secret).await;
        assert_eq!((status, body["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_client")));

        // Issuance and refusals are on record; no token or secret is.
        let events = app.audit_events().await;
        assert!(events.iter().any(|e| e["action"] == "auth.token" && e["decision"] == "allow"));
        assert!(events.iter().any(|e| e["action"] == "auth.token" && e["decision"] == "deny"));
        let trail: String = events.iter().map(Value::to_string).collect();
        assert!(!trail.contains(&access) && !trail.contains(&secret));
        // Which client's token acted is on record (its id: the one to revoke).
        assert!(events.iter().any(|e| e["details"]["credential"] == "access_token"
            && e["details"]["credential_id"] == id.as_str()), "{events:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standard_jose_library_verifies_the_token_against_the_published_keys() {
    let app = spawn_app(Db::Sqlite).await;
    let (client_id, secret, _) = client_with_role(&app, "Viewer").await;
    let (_, issued) = token(&app, &client_id, &secret).await;
    let access = issued["access_token"].as_str().unwrap();
    let (status, metadata) = fetch(app.client.get(app.url(&format!(
        "/t/{}/.well-known/oauth-authorization-server",
        app.tenant
    ))))
    .await;
    assert_eq!(status, StatusCode::OK, "{metadata}");
    let script = r#"
        import * as jose from 'jose';
        const [token, jwksUri, issuer, audience] = process.argv.slice(1);
        const keys = jose.createRemoteJWKSet(new URL(jwksUri));
        const { payload, protectedHeader } = await jose.jwtVerify(token, keys, { issuer, audience, algorithms: ['EdDSA'], typ: 'at+jwt' });
        console.log(JSON.stringify({ payload, protectedHeader }));
    "#;
    let output = tokio::process::Command::new("node")
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/oidc"))
        .env("NODE_EXTRA_CA_CERTS", app.data_dir.join("tls/cert.pem"))
        .args(["--input-type=module", "-e", script])
        .args([
            access,
            metadata["jwks_uri"].as_str().unwrap(),
            metadata["issuer"].as_str().unwrap(),
            metadata["audience"].as_str().unwrap(),
        ])
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let verified: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(verified["protectedHeader"]["alg"], "EdDSA");
    assert_eq!(verified["payload"]["client_id"], client_id);
    let lifetime =
        verified["payload"]["exp"].as_i64().unwrap() - verified["payload"]["iat"].as_i64().unwrap();
    assert!((300..=900).contains(&lifetime), "{lifetime}");
    assert!(verified["payload"]["jti"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_foreign_tokens_are_refused() {
    let app = spawn_app(Db::Sqlite).await;
    let (client_id, secret, _) = client_with_role(&app, "Viewer").await;
    let (_, issued) = token(&app, &client_id, &secret).await;
    let access = issued["access_token"].as_str().unwrap().to_owned();
    let parts: Vec<&str> = access.split('.').collect();
    let mut payload: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();

    // Another account's id under the same signature.
    payload["sub"] = json!(uuid::Uuid::new_v4().to_string());
    let swapped = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(payload.to_string()),
        parts[2]
    );
    // `alg: none`, with and without a signature.
    let none_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"at+jwt"}"#);
    let unsigned = format!("{none_header}.{}.", parts[1]);
    // HS256 keyed with the published public key.
    let (_, jwks) = fetch(
        app.client
            .get(app.url(&format!("/t/{}/.well-known/jwks.json", app.tenant))),
    )
    .await;
    let x = jwks["keys"][0]["x"].as_str().unwrap();
    let hs_header = URL_SAFE_NO_PAD.encode(format!(
        r#"{{"alg":"HS256","typ":"at+jwt","kid":"{}"}}"#,
        jwks["keys"][0]["kid"].as_str().unwrap()
    ));
    let signing_input = format!("{hs_header}.{}", parts[1]);
    let mac = hmac_sha256(x.as_bytes(), signing_input.as_bytes());
    let hmac_forged = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(mac));
    for (forged, what) in [
        (&swapped, "a changed subject"),
        (&unsigned, "alg none"),
        (&hmac_forged, "HS256 with the public key"),
    ] {
        let (status, body) = app.get("/users", forged).await;
        assert_problem(
            status,
            &body,
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
        );
        let _ = what;
    }

    // A token of one tenant is nothing to another, even for the same operation.
    let other = crate::helpers::unique_slug("other");
    app.create_tenant(&other).await;
    let response = app
        .client
        .get(app.url(&format!("/t/{other}/api/v1/users")))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_endpoint_answers_bad_requests_as_rfc_6749_says() {
    let app = spawn_app(Db::Sqlite).await;
    let (client_id, secret, _) = client_with_role(&app, "Viewer").await;
    let url = token_url(&app);
    let cases = [
        (
            app.client
                .post(&url)
                .basic_auth(&client_id, Some("wrong"))
                .form(&[("grant_type", "client_credentials")]),
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            app.client
                .post(&url)
                .form(&[("grant_type", "client_credentials")]),
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            app.client
                .post(&url)
                .basic_auth(&client_id, Some(&secret))
                .form(&[("grant_type", "password")]),
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
        ),
        (
            app.client
                .post(&url)
                .basic_auth(&client_id, Some(&secret))
                .form(&[("scope", "x")]),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            app.client
                .post(&url)
                .basic_auth(&client_id, Some(&secret))
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", client_id.as_str()),
                ]),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            app.client
                .post(&url)
                .basic_auth(&client_id, Some(&secret))
                .json(&json!({"grant_type": "client_credentials"})),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            app.client
                .post(&url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!(
                    "grant_type=client_credentials&x={}",
                    "a".repeat(9000)
                )),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            app.client
                .post(&url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body("grant_type=client_credentials&grant_type=client_credentials"),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            app.client
                .post(&url)
                .header("authorization", "Basic !!!")
                .form(&[("grant_type", "client_credentials")]),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
    ];
    for (request, status, error) in cases {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status, "{error}");
        if status == StatusCode::UNAUTHORIZED {
            assert_eq!(
                response.headers()["www-authenticate"],
                r#"Basic realm="flowgate""#
            );
        }
        assert_eq!(response.headers()["cache-control"], "no-store");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], error, "{body}");
    }
    // client_secret_post works too.
    let response = app
        .client
        .post(&url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &client_id),
            ("client_secret", &secret),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // So does a Basic header with form-encoded parts, as RFC 6749 §2.3.1 writes them.
    let basic = STANDARD.encode(format!("{client_id}:{secret}"));
    let response = app
        .client
        .post(&url)
        .header("authorization", format!("Basic {basic}"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

/// HMAC-SHA256, for forging a token the way an attacker would.
fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key);
    aws_lc_rs::hmac::sign(&key, message).as_ref().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_client_secrets_spends_the_addresss_failure_budget() {
    let app = spawn_app_with(
        Db::Sqlite,
        Options {
            vars: vec![("FLOWGATE_RATE_LIMIT_FAILURES".into(), "5".into())],
            ..Options::default()
        },
    )
    .await;
    let (client_id, secret, _) = client_with_role(&app, "Viewer").await;
    let mut statuses = Vec::new();
    for guess in 0..8 {
        let (status, _) = token(&app, &client_id, &format!("guess-{guess}")).await;
        statuses.push(status);
    }
    assert_eq!(&statuses[..5], &[StatusCode::UNAUTHORIZED; 5]);
    assert!(
        statuses[6..]
            .iter()
            .all(|s| *s == StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    // The right secret from the blocked address waits too.
    let response = app
        .client
        .post(token_url(&app))
        .basic_auth(&client_id, Some(&secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_for_a_bad_or_foreign_account_is_422_and_nothing_is_made() {
    let app = spawn_app(Db::Sqlite).await;
    let (_, account) = app
        .post("/service-accounts", &app.admin_key, json!({"name": "sa"}))
        .await;
    let account = account["id"].as_str().unwrap();
    let cases = [
        (
            json!({"name": "x", "service_account_id": uuid::Uuid::new_v4()}),
            "service_account_id",
        ),
        (json!({"name": "  ", "service_account_id": account}), "name"),
        (
            json!({"name": "x", "service_account_id": "not-a-uuid"}),
            "service_account_id",
        ),
        (
            json!({"name": "x", "service_account_id": account, "secret": "mine"}),
            "secret",
        ),
    ];
    for (body, field) in cases {
        let (status, problem) = app.post("/clients", &app.admin_key, body).await;
        assert_problem(
            status,
            &problem,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        );
        assert!(problem.to_string().contains(field), "{problem}");
    }
    let (status, problem) = app
        .call(
            Method::DELETE,
            &format!("/clients/{}", uuid::Uuid::new_v4()),
            &app.admin_key,
            None,
        )
        .await;
    assert_problem(status, &problem, StatusCode::NOT_FOUND, "not_found");
    let (_, clients) = app.get("/clients", &app.admin_key).await;
    assert_eq!(clients["items"], json!([]), "nothing was made");
}

/// The `kid` of a compact JWS.
fn kid(token: &str) -> String {
    let header = token.split('.').next().unwrap();
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

crate::on_both_databases! {
    async fn rotating_the_signing_key_keeps_earlier_tokens_valid_through_the_overlap(app) {
        let (client_id, secret, _) = client_with_role(&app, "Viewer").await;
        let (_, before) = token(&app, &client_id, &secret).await;
        let before = before["access_token"].as_str().unwrap().to_owned();
        let jwks_url = app.url(&format!("/t/{}/.well-known/jwks.json", app.tenant));
        let (_, jwks) = fetch(app.client.get(&jwks_url)).await;
        // The signing keys; the JWKS also publishes the tenant's payload-encryption key.
        let signing = |jwks: &Value| -> Vec<String> {
            jwks["keys"].as_array().unwrap().iter().filter(|k| k["use"] == "sig").map(|k| k["kid"].as_str().unwrap().to_owned()).collect()
        };
        assert_eq!(signing(&jwks).len(), 1);

        // Only whoever holds token_key.rotate rotates.
        let (status, _) = app.post("/token-keys/rotate", &before, json!({})).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, rotated) = app.post("/token-keys/rotate", &app.admin_key, json!({})).await;
        assert_eq!(status, StatusCode::OK, "{rotated}");
        let keys = rotated["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 2, "{rotated}");
        assert_eq!(keys[0]["kid"], kid(&before));
        assert_eq!((keys[0]["current"].clone(), keys[1]["current"].clone()), (json!(false), json!(true)));
        assert!(keys[0]["verifies_until"].is_string());

        // The earlier token still works; new tokens carry the new kid; both keys are published.
        assert_eq!(app.get("/users", &before).await.0, StatusCode::OK);
        let (_, after) = token(&app, &client_id, &secret).await;
        let after = after["access_token"].as_str().unwrap().to_owned();
        assert_eq!(kid(&after), keys[1]["kid"].as_str().unwrap());
        assert_ne!(kid(&after), kid(&before));
        assert_eq!(app.get("/users", &after).await.0, StatusCode::OK);
        let (_, jwks) = fetch(app.client.get(&jwks_url)).await;
        assert_eq!(signing(&jwks), [kid(&before), kid(&after)]);

        // A third rotation keeps every key still inside its overlap.
        let (_, again) = app.post("/token-keys/rotate", &app.admin_key, json!({})).await;
        assert_eq!(again["keys"].as_array().unwrap().len(), 3);
        assert_eq!(app.get("/users", &before).await.0, StatusCode::OK);
        let (_, listed) = app.get("/token-keys", &app.admin_key).await;
        assert_eq!(listed, again);
        // The ring holds four keys at most: a fifth waits for the oldest overlap to end.
        let (status, _) = app.post("/token-keys/rotate", &app.admin_key, json!({})).await;
        assert_eq!(status, StatusCode::OK);
        let (status, full) = app.post("/token-keys/rotate", &app.admin_key, json!({})).await;
        assert_eq!(status, StatusCode::CONFLICT, "{full}");
        let rotation = app.audit_events().await.into_iter().rfind(|e| e["action"] == "token_key.rotate" && e["status"] == 200).unwrap();
        let (_, latest) = app.get("/token-keys", &app.admin_key).await;
        assert_eq!(latest["keys"].as_array().unwrap().len(), 4);
        assert_eq!(rotation["resource_id"], latest["keys"][3]["kid"]);
        assert!(!rotation.to_string().contains("seed"));
    }
}

crate::on_both_databases! {
    async fn a_rotation_that_cannot_be_recorded_changes_nothing(app) {
        // Not on record, not in force: the new key would sign unaudited, and a retry would
        // rotate again until the ring is full.
        let (client_id, secret, _) = client_with_role(&app, "Viewer").await;
        let (_, before) = app.get("/token-keys", &app.admin_key).await;
        crate::jose::break_audit(&app).await;
        for _ in 0..2 {
            let (status, body) = app.post("/token-keys/rotate", &app.admin_key, json!({})).await;
            assert!(status.is_server_error(), "{status} {body}");
        }
        crate::jose::heal_audit(&app).await;
        let (_, after) = app.get("/token-keys", &app.admin_key).await;
        assert_eq!(after, before, "the ring is as it was");
        let (_, issued) = token(&app, &client_id, &secret).await;
        let issued = issued["access_token"].as_str().unwrap().to_owned();
        assert_eq!(kid(&issued), before["keys"][0]["kid"].as_str().unwrap());
        assert_eq!(app.get("/users", &issued).await.0, StatusCode::OK);
        let (status, rotated) = app.post("/token-keys/rotate", &app.admin_key, json!({})).await;
        assert_eq!(status, StatusCode::OK, "and rotates once the trail takes it: {rotated}");
        assert_eq!(rotated["keys"].as_array().unwrap().len(), 2, "{rotated}");
    }
}
