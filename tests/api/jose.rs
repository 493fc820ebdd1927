//! Encrypted payloads (`application/jose`): a JWE that Python's `jwcrypto` makes is accepted,
//! and the answer decrypts in `jwcrypto`, for `dir` and `RSA-OAEP-256`; tampered, truncated,
//! wrong-key, foreign-tenant and refused-algorithm JWEs are 400 with a stable type, never a
//! 500; a tenant's requirement turns plaintext bodies into 415; keys and payloads never reach
//! the audit trail.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem};
use crate::on_both_databases;

/// The JOSE peer: jwcrypto generating an RSA key, encrypting and decrypting.
const PEER: &str = r#"
import json, sys
from jwcrypto import jwe, jwk

ALGS = ["dir", "RSA-OAEP-256", "A256GCM"]
mode = sys.argv[1]
if mode == "generate":
    key = jwk.JWK.generate(kty="RSA", size=2048, use="enc", alg="RSA-OAEP-256", kid="python-client")
    print(json.dumps({"private": json.loads(key.export_private()), "public": json.loads(key.export_public())}))
elif mode == "encrypt":
    spec = json.loads(sys.argv[2])
    key = jwk.JWK(**spec)
    header = {"alg": sys.argv[3], "enc": "A256GCM"}
    if "kid" in spec:
        header["kid"] = spec["kid"]
    token = jwe.JWE(sys.argv[4].encode(), json.dumps(header))
    token.allowed_algs = ALGS
    token.add_recipient(key)
    print(token.serialize(compact=True))
elif mode == "decrypt":
    key = jwk.JWK(**json.loads(sys.argv[2]))
    token = jwe.JWE()
    token.allowed_algs = ALGS
    token.deserialize(sys.argv[3], key=key)
    print(json.dumps({"header": json.loads(token.objects["protected"]), "payload": token.payload.decode()}))
"#;

/// Runs the jwcrypto peer with `args`; its output.
async fn peer(args: &[&str]) -> String {
    let output = tokio::process::Command::new("python3")
        .args(["-c", PEER])
        .args(args)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "jwcrypto peer failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

async fn encrypt(key: &Value, alg: &str, payload: &Value) -> String {
    peer(&["encrypt", &key.to_string(), alg, &payload.to_string()]).await
}

/// The header and the JSON payload of a JWE, as jwcrypto decrypts it with `key`.
async fn decrypt(key: &Value, compact: &str) -> (Value, Value) {
    let out: Value =
        serde_json::from_str(&peer(&["decrypt", &key.to_string(), compact]).await).unwrap();
    (
        out["header"].clone(),
        serde_json::from_str(out["payload"].as_str().unwrap()).unwrap(),
    )
}

/// A request with a raw body and content type; status, content type and text.
async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    key: Option<&str>,
    content_type: &str,
    body: Option<String>,
    accept: Option<&str>,
) -> (StatusCode, String, String) {
    let mut request = app.client.request(method, app.tenant_url(path));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    if let Some(body) = body {
        request = request.header("content-type", content_type).body(body);
    }
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, content_type, response.text().await.unwrap())
}

async fn post_jose(
    app: &TestApp,
    path: &str,
    key: &str,
    jwe: String,
) -> (StatusCode, String, String) {
    send(
        app,
        reqwest::Method::POST,
        path,
        Some(key),
        "application/jose",
        Some(jwe),
        None,
    )
    .await
}

/// An Admin service account's API key: its id and the key.
async fn admin_key(app: &TestApp) -> (String, String) {
    let name = format!("sa-{}", uuid::Uuid::new_v4().simple());
    let (status, account) = app
        .post("/service-accounts", &app.admin_key, json!({"name": name}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{account}");
    let (status, body) = app
        .post(
            "/role-bindings",
            &app.admin_key,
            json!({"role": "Admin", "subject": {"type": "service_account", "id": account["id"]}, "scope": {"type": "tenant"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, key) = app
        .post(
            "/api-keys",
            &app.admin_key,
            json!({"name": "jose", "service_account_id": account["id"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    (
        key["id"].as_str().unwrap().to_owned(),
        key["key"].as_str().unwrap().to_owned(),
    )
}

async fn dir_key(app: &TestApp, api_key_id: &str) -> Value {
    let (status, jwk) = app
        .call(
            reqwest::Method::POST,
            &format!("/api-keys/{api_key_id}/payload-key"),
            &app.admin_key,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{jwk}");
    assert_eq!(jwk["kty"], "oct");
    jwk
}

/// The tenant's encryption key from its JWKS.
async fn tenant_enc_key(app: &TestApp, tenant: &str) -> Value {
    let jwks: Value = app
        .client
        .get(app.url(&format!("/t/{tenant}/.well-known/jwks.json")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert!(
        keys.iter()
            .filter(|k| k["kty"] == "OKP")
            .all(|k| k["use"] == "sig"),
        "{jwks}"
    );
    let enc: Vec<_> = keys.iter().filter(|k| k["use"] == "enc").collect();
    assert_eq!(enc.len(), 1, "{jwks}");
    assert_eq!(enc[0]["alg"], "RSA-OAEP-256");
    assert_eq!(enc[0]["kty"], "RSA");
    assert!(enc[0]["kid"].as_str().is_some_and(|k| !k.is_empty()));
    assert!(
        enc[0].get("d").is_none(),
        "a private part is published: {jwks}"
    );
    enc[0].clone()
}

fn user(display_name: &str) -> Value {
    json!({"email": format!("{}@example.com", uuid::Uuid::new_v4().simple()), "display_name": display_name})
}

/// A compact JWE with `header` and placeholder parts (refused before any key is used).
fn forged(header: Value, key: &str) -> String {
    format!(
        "{}.{key}.aXZpdml2aXZpdml2.Y2lwaGVy.dGFndGFndGFndGFndGFnZw",
        URL_SAFE_NO_PAD.encode(header.to_string())
    )
}

fn flip_tag(jwe: &str) -> String {
    let (rest, tag) = jwe.rsplit_once('.').unwrap();
    let mut tag = URL_SAFE_NO_PAD.decode(tag).unwrap();
    tag[0] ^= 1;
    format!("{rest}.{}", URL_SAFE_NO_PAD.encode(tag))
}

fn problem(status: StatusCode, text: &str, expected: StatusCode, code: &str) {
    let body: Value = serde_json::from_str(text).unwrap_or(Value::String(text.to_owned()));
    assert_problem(status, &body, expected, code);
}

/// Makes every audit append of the tenant fail until [`heal_audit`].
pub(crate) async fn break_audit(app: &TestApp) {
    if app.database_url().is_some() {
        app.tenant_sql(
            "CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'audit refused by the test'; END $$",
        )
        .await;
        app.tenant_sql(
            "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events \
             FOR EACH ROW EXECUTE FUNCTION refuse_audit()",
        )
        .await;
    } else {
        app.tenant_sql(
            "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events \
             BEGIN SELECT RAISE(ABORT, 'audit refused by the test'); END",
        )
        .await;
    }
}

pub(crate) async fn heal_audit(app: &TestApp) {
    if app.database_url().is_some() {
        app.tenant_sql("DROP TRIGGER refuse_audit ON audit_events")
            .await;
    } else {
        app.tenant_sql("DROP TRIGGER refuse_audit").await;
    }
}

on_both_databases! {
    async fn dir_payloads_interoperate_with_jwcrypto_and_bad_ones_are_400(app) {
        let (key_id, key) = admin_key(&app).await;
        let jwk = dir_key(&app, &key_id).await;
        let planted = format!("PLANTED-{}", uuid::Uuid::new_v4().simple());

        // Positive control: jwcrypto encrypts, Flowgate answers encrypted to the same key.
        let jwe = encrypt(&jwk, "dir", &user(&planted)).await;
        let (status, content_type, text) = post_jose(&app, "/users", &key, jwe.clone()).await;
        assert_eq!(status, StatusCode::CREATED, "{text}");
        assert_eq!(content_type, "application/jose");
        let (header, created) = decrypt(&jwk, &text).await;
        assert_eq!(header["alg"], "dir");
        assert_eq!(header["enc"], "A256GCM");
        assert_eq!(header["kid"], jwk["kid"]);
        assert_eq!(created["display_name"], planted.as_str());

        // A decrypted body meets the same checks as a plaintext one.
        let unknown = encrypt(&jwk, "dir", &json!({"email": "a@example.com", "display_name": "x", "extra": 1})).await;
        let (status, _, text) = post_jose(&app, "/users", &key, unknown).await;
        problem(status, &text, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");

        // Tampered, truncated, wrong key.
        let (status, _, text) = post_jose(&app, "/users", &key, flip_tag(&jwe)).await;
        problem(status, &text, StatusCode::BAD_REQUEST, "invalid_jwe");
        let (status, _, text) = post_jose(&app, "/users", &key, jwe[..jwe.len() - 10].to_owned()).await;
        problem(status, &text, StatusCode::BAD_REQUEST, "invalid_jwe");
        let (status, _, text) = post_jose(&app, "/users", &key, jwe.rsplit_once('.').unwrap().0.to_owned()).await;
        problem(status, &text, StatusCode::BAD_REQUEST, "invalid_jwe");
        let wrong = json!({"kty": "oct", "k": URL_SAFE_NO_PAD.encode([7u8; 32])});
        let (status, _, text) = post_jose(&app, "/users", &key, encrypt(&wrong, "dir", &user("w")).await).await;
        problem(status, &text, StatusCode::BAD_REQUEST, "invalid_jwe");
        // A credential without a shared key (the bootstrap admin's).
        let (status, _, text) = post_jose(&app, "/users", &app.admin_key, jwe.clone()).await;
        problem(status, &text, StatusCode::BAD_REQUEST, "invalid_jwe");

        // Algorithms and features that are refused, and an oversized header.
        for (header, segment) in [
            (json!({"alg": "RSA1_5", "enc": "A256GCM"}), "a2V5a2V5"),
            (json!({"alg": "A128KW", "enc": "A256GCM"}), "a2V5a2V5"),
            (json!({"alg": "dir", "enc": "A128CBC-HS256"}), ""),
            (json!({"alg": "dir", "enc": "A256GCM", "zip": "DEF"}), ""),
            (json!({"alg": "dir", "enc": "A256GCM", "crit": ["exp"], "exp": 1}), ""),
        ] {
            let (status, _, text) = post_jose(&app, "/users", &key, forged(header.clone(), segment)).await;
            problem(status, &text, StatusCode::BAD_REQUEST, "unsupported_jwe");
        }
        let big = forged(json!({"alg": "dir", "enc": "A256GCM", "pad": "x".repeat(4096)}), "");
        let (status, _, text) = post_jose(&app, "/users", &key, big).await;
        problem(status, &text, StatusCode::BAD_REQUEST, "invalid_jwe");

        // No credential: authentication wins.
        let (status, _, text) = send(&app, reqwest::Method::POST, "/users", None, "application/jose", Some(jwe.clone()), None).await;
        problem(status, &text, StatusCode::UNAUTHORIZED, "unauthenticated");

        // Another tenant's keys: its credential's shared key, and its RSA key.
        let other = crate::helpers::unique_slug("jose");
        let other_admin = app.create_tenant(&other).await;
        let (status, account) = app
            .call(reqwest::Method::GET, "/api-keys", &app.admin_key, None)
            .await;
        assert_eq!(status, StatusCode::OK, "{account}");
        let other_keys: Value = app
            .client
            .get(app.url(&format!("/t/{other}/api/v1/api-keys")))
            .bearer_auth(&other_admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let other_key_id = other_keys["items"][0]["id"].as_str().unwrap();
        let other_jwk: Value = app
            .client
            .post(app.url(&format!("/t/{other}/api/v1/api-keys/{other_key_id}/payload-key")))
            .bearer_auth(&other_admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let (status, _, text) = post_jose(&app, "/users", &key, encrypt(&other_jwk, "dir", &user("o")).await).await;
        problem(status, &text, StatusCode::BAD_REQUEST, "invalid_jwe");
        let other_rsa = tenant_enc_key(&app, &other).await;
        let (status, _, text) = post_jose(&app, "/users", &key, encrypt(&other_rsa, "RSA-OAEP-256", &user("o")).await).await;
        problem(status, &text, StatusCode::BAD_REQUEST, "invalid_jwe");
        // Nor does another tenant's API reveal anything to this tenant's key.
        let (status, _, _) = send(&app, reqwest::Method::POST, &format!("/api-keys/{other_key_id}/payload-key"), Some(&app.admin_key), "", None, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        // Canary: neither the shared key nor the planted value is in the audit trail.
        let trail = serde_json::to_string(&app.audit_events().await).unwrap();
        assert!(trail.contains(jwk["kid"].as_str().unwrap()), "positive control: the kid is on record");
        assert!(!trail.contains(jwk["k"].as_str().unwrap()), "the shared key reached the audit trail");
        assert!(!trail.contains(&planted), "a payload value reached the audit trail");
    }

    async fn a_payload_key_change_whose_audit_event_fails_is_undone(app) {
        let (key_id, key) = admin_key(&app).await;
        let jwk = dir_key(&app, &key_id).await;
        let (fresh_id, fresh_key) = admin_key(&app).await;
        let jwe = |jwk: Value| async move { encrypt(&jwk, "dir", &user("u")).await };

        break_audit(&app).await;
        for id in [&key_id, &fresh_id] {
            let (status, body) = app
                .call(reqwest::Method::POST, &format!("/api-keys/{id}/payload-key"), &app.admin_key, None)
                .await;
            assert!(status.is_server_error(), "{status} {body}");
            assert!(body.get("k").is_none(), "a key was handed out: {body}");
        }
        let public = json!({"kty": "RSA", "e": "AQAB", "n": URL_SAFE_NO_PAD.encode([0xc5u8; 256])});
        let (status, body) = app
            .call(reqwest::Method::PUT, &format!("/api-keys/{fresh_id}/payload-key"), &app.admin_key, Some(json!({"public_jwk": public})))
            .await;
        assert!(status.is_server_error(), "{status} {body}");
        heal_audit(&app).await;

        // The key in force is still the one on record; the fresh credential still has none.
        let (status, _, text) = post_jose(&app, "/users", &key, jwe(jwk.clone()).await).await;
        assert_eq!(status, StatusCode::CREATED, "{text}");
        let (status, _, text) = post_jose(&app, "/users", &fresh_key, jwe(jwk.clone()).await).await;
        problem(status, &text, StatusCode::BAD_REQUEST, "invalid_jwe");
        let (status, _, text) = send(&app, reqwest::Method::GET, "/users", Some(&fresh_key), "", None, Some("application/jose")).await;
        problem(status, &text, StatusCode::NOT_ACCEPTABLE, "not_acceptable");
        // Positive control: the same changes go through once the trail accepts them.
        let (status, _) = app
            .call(reqwest::Method::PUT, &format!("/api-keys/{fresh_id}/payload-key"), &app.admin_key, Some(json!({"public_jwk": public})))
            .await;
        assert_eq!(status, StatusCode::OK);
        let (_, _, text) = send(&app, reqwest::Method::GET, "/users", Some(&fresh_key), "", None, Some("application/jose")).await;
        assert_eq!(text.split('.').count(), 5, "{text}");
    }

    async fn rsa_oaep_256_payloads_interoperate_with_jwcrypto(app) {
        let (key_id, key) = admin_key(&app).await;
        let tenant_key = tenant_enc_key(&app, &app.tenant).await;
        let client: Value = serde_json::from_str(&peer(&["generate"]).await).unwrap();

        // Without a key to encrypt the answer to, an RSA request is answered in plaintext.
        let jwe = encrypt(&tenant_key, "RSA-OAEP-256", &user("plain answer")).await;
        let (status, content_type, text) = post_jose(&app, "/users", &key, jwe).await;
        assert_eq!(status, StatusCode::CREATED, "{text}");
        assert!(content_type.starts_with("application/json"), "{content_type}");
        // ... and one that asks for an encrypted answer is 406.
        let (status, _, text) = send(&app, reqwest::Method::GET, "/users", Some(&key), "", None, Some("application/jose")).await;
        problem(status, &text, StatusCode::NOT_ACCEPTABLE, "not_acceptable");
        // A JWE sent to an operation that takes no body is never read: that there is no one to
        // answer to is known before the handler, which does not act.
        let (status, target) = app
            .post("/service-accounts", &app.admin_key, json!({"name": format!("t-{}", uuid::Uuid::new_v4().simple())}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{target}");
        let target = format!("/service-accounts/{}", target["id"].as_str().unwrap());
        let disable = format!("{target}/disable");
        let unread = encrypt(&tenant_key, "RSA-OAEP-256", &json!({})).await;
        let (status, _, text) = send(&app, reqwest::Method::POST, &disable, Some(&key), "application/jose", Some(unread.clone()), Some("application/jose")).await;
        problem(status, &text, StatusCode::NOT_ACCEPTABLE, "not_acceptable");
        let (_, account) = app.get(&target, &app.admin_key).await;
        assert_eq!(account["status"], "active", "the refused request disabled the account");

        // A private key is refused; the public one is registered.
        let (status, body) = app
            .call(reqwest::Method::PUT, &format!("/api-keys/{key_id}/payload-key"), &app.admin_key, Some(json!({"public_jwk": client["private"]})))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        let (status, body) = app
            .call(reqwest::Method::PUT, &format!("/api-keys/{key_id}/payload-key"), &app.admin_key, Some(json!({"public_jwk": client["public"]})))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["kid"], "python-client");

        let jwe = encrypt(&tenant_key, "RSA-OAEP-256", &user("rsa")).await;
        let (status, content_type, text) = post_jose(&app, "/users", &key, jwe.clone()).await;
        assert_eq!(status, StatusCode::CREATED, "{text}");
        assert_eq!(content_type, "application/jose");
        let (header, created) = decrypt(&client["private"], &text).await;
        assert_eq!(header["alg"], "RSA-OAEP-256");
        assert_eq!(header["kid"], "python-client");
        assert_eq!(created["display_name"], "rsa");

        // A body-less request asks with Accept.
        let (status, content_type, text) = send(&app, reqwest::Method::GET, "/users", Some(&key), "", None, Some("application/jose")).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        assert_eq!(content_type, "application/jose");
        let (_, page) = decrypt(&client["private"], &text).await;
        assert!(page["items"].as_array().unwrap().iter().any(|u| u["display_name"] == "rsa"));
        // Positive control: with a key to answer to, the unread JWE's operation acts.
        let (status, content_type, text) = send(&app, reqwest::Method::POST, &disable, Some(&key), "application/jose", Some(unread), Some("application/jose")).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        assert_eq!(content_type, "application/jose");
        assert_eq!(decrypt(&client["private"], &text).await.1["status"], "disabled");
        let (_, account) = app.get(&target, &app.admin_key).await;
        assert_eq!(account["status"], "disabled");

        // Tampered.
        let (status, _, text) = post_jose(&app, "/users", &key, flip_tag(&jwe)).await;
        problem(status, &text, StatusCode::BAD_REQUEST, "invalid_jwe");
    }

    async fn a_tenant_can_require_encryption_and_still_turn_it_off(app) {
        let (key_id, key) = admin_key(&app).await;
        let jwk = dir_key(&app, &key_id).await;
        // Only real operations, and never the settings ones.
        for bad in [json!(["no_such_operation"]), json!(["update_settings"])] {
            let (status, body) = app
                .call(reqwest::Method::PATCH, "/settings", &app.admin_key, Some(json!({"payload_encryption_operations": bad})))
                .await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        }
        let (status, body) = app
            .call(reqwest::Method::PATCH, "/settings", &app.admin_key, Some(json!({"payload_encryption_operations": ["create_user"]})))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["payload_encryption_operations"], json!(["create_user"]));

        // The listed operation refuses plaintext; another does not.
        let (status, body) = app.post("/users", &key, user("plain")).await;
        assert_problem(status, &body, StatusCode::UNSUPPORTED_MEDIA_TYPE, "encryption_required");
        // Spelt with a percent-encoded letter, the path routes to the same operation.
        let (status, body) = app.post("/user%73", &key, user("plain")).await;
        assert_problem(status, &body, StatusCode::UNSUPPORTED_MEDIA_TYPE, "encryption_required");
        let (status, body) = app.post("/groups", &key, json!({"name": "g1"})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (status, _, text) = post_jose(&app, "/users", &key, encrypt(&jwk, "dir", &user("enc")).await).await;
        assert_eq!(status, StatusCode::CREATED, "{text}");

        // Tenant-wide: plaintext bodies are 415, answers are encrypted or 406.
        let (status, body) = app
            .call(reqwest::Method::PATCH, "/settings", &app.admin_key, Some(json!({"payload_encryption_required": true})))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, body) = app.post("/groups", &key, json!({"name": "g2"})).await;
        assert_problem(status, &body, StatusCode::UNSUPPORTED_MEDIA_TYPE, "encryption_required");
        let (status, content_type, text) = send(&app, reqwest::Method::GET, "/users", Some(&key), "", None, None).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        assert_eq!(content_type, "application/jose");
        assert!(decrypt(&jwk, &text).await.1["items"].is_array());
        let (status, content_type, text) = send(&app, reqwest::Method::GET, "/u%73ers", Some(&key), "", None, None).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        assert_eq!(content_type, "application/jose", "a percent-encoded path is answered encrypted too");
        let (status, _, text) = send(&app, reqwest::Method::GET, "/users", Some(&key), "", None, Some("application/json")).await;
        problem(status, &text, StatusCode::NOT_ACCEPTABLE, "not_acceptable");
        // The bootstrap key has nothing to encrypt to.
        let (status, body) = app.get("/users", &app.admin_key).await;
        assert_problem(status, &body, StatusCode::NOT_ACCEPTABLE, "not_acceptable");

        // The settings stay reachable in plaintext, and the requirement comes off.
        let (status, body) = app.get("/settings", &app.admin_key).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["payload_encryption_required"], true);
        let (status, body) = app
            .call(reqwest::Method::PATCH, "/settings", &app.admin_key, Some(json!({"payload_encryption_required": false, "payload_encryption_operations": []})))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, body) = app.post("/groups", &key, json!({"name": "g3"})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
}

/// Changes of one credential's payload keys take turns (each reads the key record and writes it
/// whole): a change waits while another holds the credential, so a concurrent registration
/// cannot write back the shared key a replacement just retired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_of_one_credential_s_payload_keys_take_turns() {
    use sea_orm::sqlx::{Connection as _, Executor as _};

    let app = crate::helpers::spawn_app(crate::helpers::Db::Postgres).await;
    let (id, _) = admin_key(&app).await;
    let first = dir_key(&app, &id).await;
    // Another change of the same credential holds its row.
    let mut other = sea_orm::sqlx::PgConnection::connect(&app.database_url().unwrap())
        .await
        .unwrap();
    let schema = flowgate::tenancy::Slug::parse(&app.tenant)
        .unwrap()
        .schema();
    other.execute("BEGIN").await.unwrap();
    sea_orm::sqlx::query(sea_orm::sqlx::AssertSqlSafe(format!(
        "SELECT id FROM \"{schema}\".api_keys WHERE id = $1::uuid FOR UPDATE"
    )))
    .bind(&id)
    .execute(&mut other)
    .await
    .unwrap();
    let replacing = dir_key(&app, &id);
    tokio::pin!(replacing);
    let waited = tokio::time::timeout(std::time::Duration::from_millis(400), &mut replacing).await;
    assert!(
        waited.is_err(),
        "the replacement waits for the other change"
    );
    other.execute("COMMIT").await.unwrap();
    let second = replacing.await;
    assert_ne!(first["k"], second["k"]);
}
