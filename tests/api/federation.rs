//! Trusted issuers (workload identity federation): an outside issuer's JWTs act as a service
//! account, checked like any credential, with the attacks on them refused.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

use crate::helpers::{Db, TestApp, spawn_app};

const ISSUER: &str = "https://ci.example";
const AUDIENCE: &str = "flowgate-acme";

/// An Ed25519 signing key of the outside issuer, with its JWK.
struct IssuerKey {
    kid: String,
    encoding: EncodingKey,
    jwk: Value,
}

impl IssuerKey {
    fn new(kid: &str) -> Self {
        let mut seed = [0u8; 32];
        aws_lc_rs::rand::fill(&mut seed).unwrap();
        let public = Ed25519KeyPair::from_seed_unchecked(&seed)
            .unwrap()
            .public_key()
            .as_ref()
            .to_vec();
        let mut pkcs8 = hex::decode("302e020100300506032b657004220420").unwrap();
        pkcs8.extend_from_slice(&seed);
        IssuerKey {
            kid: kid.to_owned(),
            encoding: EncodingKey::from_ed_der(&pkcs8),
            jwk: json!({"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": kid, "x": URL_SAFE_NO_PAD.encode(public)}),
        }
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

/// Serves `jwks` at `http://127.0.0.1:PORT/jwks` until the test ends; with how many times it
/// was asked for.
async fn serve_jwks(jwks: Value) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks", listener.local_addr().unwrap());
    let body = Arc::new(jwks.to_string());
    let fetches = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&fetches);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let body = Arc::clone(&body);
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    (url, fetches)
}

fn claims(extra: Value) -> Value {
    let now = chrono::Utc::now().timestamp();
    let mut claims = json!({
        "iss": ISSUER,
        "sub": "repo:acme/deploy:ref:refs/heads/main",
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 300,
        "repository": "acme/deploy",
    });
    for (k, v) in extra.as_object().unwrap() {
        claims[k] = v.clone();
    }
    claims
}

/// A service account bound to `role`.
async fn account(app: &TestApp, role: &str) -> String {
    let (_, account) = app
        .post(
            "/service-accounts",
            &app.admin_key,
            json!({"name": "deployer"}),
        )
        .await;
    let id = account["id"].as_str().unwrap().to_owned();
    let (status, body) = app
        .post(
            "/role-bindings",
            &app.admin_key,
            json!({"role": role, "subject": {"type": "service_account", "id": id}, "scope": {"type": "tenant"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    id
}

/// A trust of the deploy pipeline's tokens (keys at `jwks_url`) as `account`.
async fn trust(app: &TestApp, jwks_url: &str, account: &str) -> Value {
    let (status, trust) = app
        .post(
            "/trusted-issuers",
            &app.admin_key,
            json!({"name": "deploy pipeline", "issuer": ISSUER, "jwks_url": jwks_url,
                   "audiences": [AUDIENCE], "required_claims": {"repository": "acme/deploy"},
                   "service_account_id": account}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{trust}");
    trust
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_issuers_tokens_act_as_its_service_account_until_the_trust_ends() {
    let app = spawn_app(Db::Sqlite).await;
    let key = IssuerKey::new("ci-1");
    // A key of a kind this verifier does not read does not spoil the set.
    let unreadable = json!({"kty": "OKP", "crv": "X448", "kid": "other", "x": "AAAA"});
    let (jwks_url, _) = serve_jwks(json!({"keys": [unreadable, key.jwk]})).await;
    let account = account(&app, "Viewer").await;
    let trust = trust(&app, &jwks_url, &account).await;

    let token = key.sign(&claims(json!({})));
    let (status, me) = app.get("/me", &token).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["id"], account.as_str());
    assert_eq!(me["auth"]["method"], "federated_token");
    assert_eq!(app.get("/users", &token).await.0, StatusCode::OK);
    let (status, _) = app
        .post(
            "/users",
            &token,
            json!({"email": "x@acme.example", "display_name": "X"}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "exactly the account's permissions"
    );

    // Every way a token can be wrong.
    let now = chrono::Utc::now().timestamp();
    let intruder = IssuerKey::new("ci-1");
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let unsigned = format!(
        "{header}.{}.",
        URL_SAFE_NO_PAD.encode(claims(json!({})).to_string())
    );
    let hmac = jsonwebtoken::encode(
        &Header {
            kid: Some("ci-1".into()),
            ..Header::new(Algorithm::HS256)
        },
        &claims(json!({})),
        &EncodingKey::from_secret(key.jwk["x"].as_str().unwrap().as_bytes()).unwrap(),
    )
    .unwrap();
    for (what, forged) in [
        (
            "another audience",
            key.sign(&claims(json!({"aud": "someone-else"}))),
        ),
        (
            "another repository",
            key.sign(&claims(json!({"repository": "acme/other"}))),
        ),
        (
            "no required claim",
            key.sign(&claims(json!({"repository": null}))),
        ),
        (
            "expired",
            key.sign(&claims(json!({"iat": now - 900, "exp": now - 600}))),
        ),
        (
            "no exp",
            key.sign(&json!({"iss": ISSUER, "aud": AUDIENCE, "repository": "acme/deploy"})),
        ),
        ("another key, same kid", intruder.sign(&claims(json!({})))),
        (
            "living for days",
            key.sign(&claims(json!({"exp": now + 3 * 24 * 3600}))),
        ),
        (
            "an unknown issuer",
            key.sign(&claims(json!({"iss": "https://evil.example"}))),
        ),
        ("alg none", unsigned),
        ("HMAC with the public key", hmac),
    ] {
        let (status, body) = app.get("/me", &forged).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
    }

    // A disabled account's federated tokens are refused like its other credentials.
    for (change, answer) in [
        ("disable", StatusCode::UNAUTHORIZED),
        ("enable", StatusCode::OK),
    ] {
        let path = format!("/service-accounts/{account}/{change}");
        let (changed, body) = app.call(Method::POST, &path, &app.admin_key, None).await;
        assert_eq!(changed, StatusCode::OK, "{body}");
        assert_eq!(app.get("/me", &token).await.0, answer, "after {change}");
    }

    // Ending the trust ends its tokens at once.
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/trusted-issuers/{}", trust["id"].as_str().unwrap()),
            &app.admin_key,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(app.get("/me", &token).await.0, StatusCode::UNAUTHORIZED);
    let trail = app
        .audit_events()
        .await
        .iter()
        .map(Value::to_string)
        .collect::<String>();
    assert!(!trail.contains(&token), "no token in the trail");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusts_are_checked_when_made() {
    let app = spawn_app(Db::Sqlite).await;
    let account = account(&app, "Admin").await;
    let own_issuer = format!("{}/t/{}", app.base, app.tenant);
    let body = |changes: Value| {
        let mut body = json!({"name": "t", "issuer": ISSUER, "jwks_url": "https://ci.example/jwks",
                              "audiences": [AUDIENCE], "required_claims": {"sub": "repo:acme/deploy"},
                              "service_account_id": account});
        for (k, v) in changes.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let other_tenant = format!("{}/t/someone-else", app.base);
    for (field, changes) in [
        ("required_claims", json!({"required_claims": {}})),
        // Every token of the issuer carries its own `iss` and the audience asked for.
        (
            "required_claims",
            json!({"required_claims": {"iss": ISSUER, "aud": AUDIENCE}}),
        ),
        ("issuer", json!({"issuer": other_tenant})),
        (
            "jwks_url",
            json!({"jwks_url": "http://169.254.169.254/jwks"}),
        ),
        ("issuer", json!({"issuer": own_issuer})),
        ("audiences", json!({"audiences": []})),
        (
            "required_claims",
            json!({"required_claims": {"groups": ["a"]}}),
        ),
    ] {
        let (status, problem) = app
            .post("/trusted-issuers", &app.admin_key, body(changes))
            .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{field}: {problem}"
        );
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
    let (status, _) = app
        .post(
            "/trusted-issuers",
            &app.admin_key,
            body(json!({"service_account_id": uuid::Uuid::new_v4()})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    // No escalation: a key that may make credentials but holds less than the Admin account.
    let (_, role) = app
        .post(
            "/roles",
            &app.admin_key,
            json!({"name": "KeyMaker", "actions": ["api_key.create", "service_account.read"]}),
        )
        .await;
    let maker = app
        .key_with_role(Some(role["name"].as_str().unwrap()))
        .await;
    let (status, body_) = app.post("/trusted-issuers", &maker, body(json!({}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body_}");
    let (status, _) = app
        .post("/trusted-issuers", &app.admin_key, body(json!({})))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = app
        .post(
            "/trusted-issuers",
            &app.admin_key,
            body(json!({"name": "again"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "one trust per issuer");
}

/// Tokens naming a key the issuer does not have, sent at once by anyone, ask the issuer for its
/// keys at most once (not once each), and the key that worked goes on working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_key_ids_at_once_ask_the_issuer_at_most_once() {
    let app = spawn_app(Db::Sqlite).await;
    let key = IssuerKey::new("ci-1");
    let (jwks_url, fetches) = serve_jwks(json!({"keys": [key.jwk]})).await;
    let account = account(&app, "Viewer").await;
    trust(&app, &jwks_url, &account).await;
    let token = key.sign(&claims(json!({})));
    assert_eq!(app.get("/me", &token).await.0, StatusCode::OK);
    let asked = fetches.load(Ordering::SeqCst);

    let forged = IssuerKey::new("not-the-issuers").sign(&claims(json!({})));
    let attempts = (0..20).map(|_| app.get("/me", &forged));
    for (status, body) in futures_util::future::join_all(attempts).await {
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }
    let more = fetches.load(Ordering::SeqCst) - asked;
    assert!(more <= 1, "the issuer was asked {more} more times");
    assert_eq!(app.get("/me", &token).await.0, StatusCode::OK);
}
