//! WebAuthn passkeys with `webauthn-authenticator-rs`'s software passkey: enrollment and
//! assertion for a signed-in person, and the attacks the relying party must refuse (a replayed
//! assertion, another origin, no user verification, a cloned authenticator's counter, another
//! person's ceremony).

use reqwest::StatusCode;
use serde_json::{Value, json};
use url::Url;
use webauthn_authenticator_rs::WebauthnAuthenticator as _;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;

use crate::helpers::{Db, Options, TestApp, assert_problem, spawn_app_with};
use crate::oidc_peer::Browser;
use crate::signin::{ADA, ada_claims, provider};

pub(crate) const BOB: &str = "bob-subject-0002";

/// A server whose public URL names a domain (`https://localhost:port`), as WebAuthn needs.
pub(crate) async fn passkey_app() -> TestApp {
    spawn_app_with(
        Db::Sqlite,
        Options {
            public_host: Some("localhost"),
            ..Options::default()
        },
    )
    .await
}

/// Bob, a second person of the test provider.
pub(crate) fn bob_claims() -> Value {
    json!({"email": "bob@acme.example", "email_verified": true, "name": "Bob"})
}

/// A ceremony step with the browser's cookie and this server's `Origin`.
pub(crate) async fn step(
    app: &TestApp,
    browser: &Browser,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = browser
        .client
        .post(app.url(&format!("/t/{}/auth/webauthn/{path}", app.tenant)))
        .header("Origin", &app.base);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

pub(crate) async fn enroll(
    app: &TestApp,
    browser: &Browser,
    key: &mut SoftPasskey,
) -> (StatusCode, Value) {
    let (status, options) = step(app, browser, "register/start", None).await;
    assert_eq!(status, StatusCode::OK, "{options}");
    assert_eq!(
        options["publicKey"]["authenticatorSelection"]["userVerification"],
        "required"
    );
    let origin = Url::parse(&app.base).unwrap();
    let credential = key
        .do_registration(origin, serde_json::from_value(options).unwrap())
        .unwrap();
    step(
        app,
        browser,
        "register/finish?name=laptop",
        Some(serde_json::to_value(credential).unwrap()),
    )
    .await
}

/// An assertion made by `key` at `origin` for a fresh ceremony.
pub(crate) async fn assertion(
    app: &TestApp,
    browser: &Browser,
    key: &mut SoftPasskey,
    origin: &str,
) -> Value {
    let (status, options) = step(app, browser, "authenticate/start", None).await;
    assert_eq!(status, StatusCode::OK, "{options}");
    let assertion = key
        .do_authentication(
            Url::parse(origin).unwrap(),
            serde_json::from_value(options).unwrap(),
        )
        .unwrap();
    serde_json::to_value(assertion).unwrap()
}

async fn mfa(app: &TestApp, browser: &Browser) -> bool {
    let (status, me) = browser.api(app, reqwest::Method::GET, "/me").await;
    assert_eq!(status, StatusCode::OK, "{me}");
    me["auth"]["mfa"].as_bool().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_enrolls_a_passkey_and_asserts_with_it_and_attacks_are_refused() {
    let app = passkey_app().await;
    let (idp, _peer) = provider(
        &app,
        "generic",
        &[(ADA, ada_claims()), (BOB, bob_claims())],
        json!({}),
    )
    .await;
    let ada = Browser::new(&app);
    ada.sign_in_ok(&app, &idp, ADA).await;
    assert!(!mfa(&app, &ada).await);

    // No session, or a foreign Origin: refused before any ceremony.
    let anonymous = Browser::new(&app);
    let (status, _) = step(&app, &anonymous, "register/start", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let response = ada
        .client
        .post(app.url(&format!("/t/{}/auth/webauthn/register/start", app.tenant)))
        .header("Origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    let mut key = SoftPasskey::new(true);
    let (status, created) = enroll(&app, &ada, &mut key).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["name"], "laptop");
    let (status, list) = ada.api(&app, reqwest::Method::GET, "/me/credentials").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["items"].as_array().unwrap().len(), 1);

    // Bad input is a clear 4xx and changes nothing.
    let (status, body) = step(&app, &ada, "authenticate/finish", Some(json!({"nope": 1}))).await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST, "malformed_request");
    let long = "x".repeat(65);
    let (status, body) = step(
        &app,
        &ada,
        &format!("register/finish?name={long}"),
        Some(json!({})),
    )
    .await;
    assert_problem(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    let path = format!("/me/credentials/{}", created["id"].as_str().unwrap());
    let rename = |path: String, name: &str| {
        let request = ada
            .client
            .patch(app.tenant_url(&path))
            .header("Origin", &app.base)
            .json(&json!({"name": name}));
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = rename(path.clone(), " ").await;
    assert_problem(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    let (status, body) = rename(format!("/me/credentials/{}", uuid::Uuid::new_v4()), "x").await;
    assert_problem(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, body) = rename(path, "YubiKey").await;
    assert_eq!(
        (status, body["name"].as_str()),
        (StatusCode::OK, Some("YubiKey")),
        "{body}"
    );

    // The assertion makes the session MFA-complete.
    let signed = assertion(&app, &ada, &mut key, &app.base).await;
    let (status, used) = step(&app, &ada, "authenticate/finish", Some(signed.clone())).await;
    assert_eq!(status, StatusCode::OK, "{used}");
    assert_eq!(used["id"], created["id"]);
    assert!(mfa(&app, &ada).await);

    // Without user verification (the authenticator only saw a touch): the options are
    // honest, the answer claims no UV, and the relying party refuses it.
    let (status, mut options) = step(&app, &ada, "authenticate/start", None).await;
    assert_eq!(status, StatusCode::OK);
    options["publicKey"]["userVerification"] = json!("discouraged");
    let unverified = key
        .do_authentication(
            Url::parse(&app.base).unwrap(),
            serde_json::from_value(options).unwrap(),
        )
        .unwrap();
    let (status, body) = step(
        &app,
        &ada,
        "authenticate/finish",
        Some(serde_json::to_value(unverified).unwrap()),
    )
    .await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, "passkey_refused");
    let (status, mut options) = step(&app, &ada, "register/start", None).await;
    assert_eq!(status, StatusCode::OK);
    options["publicKey"]["authenticatorSelection"]["userVerification"] = json!("discouraged");
    let unverified = SoftPasskey::new(true)
        .do_registration(
            Url::parse(&app.base).unwrap(),
            serde_json::from_value(options).unwrap(),
        )
        .unwrap();
    let (status, body) = step(
        &app,
        &ada,
        "register/finish",
        Some(serde_json::to_value(unverified).unwrap()),
    )
    .await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, "passkey_refused");

    // Replayed: its ceremony is used up.
    let (status, body) = step(&app, &ada, "authenticate/finish", Some(signed)).await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, "passkey_refused");
    // Made for another origin.
    let evil = app.base.replace("localhost", "evil.localhost");
    let foreign = assertion(&app, &ada, &mut key, &evil).await;
    let (status, body) = step(&app, &ada, "authenticate/finish", Some(foreign)).await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, "passkey_refused");

    // Another person cannot finish with Ada's passkey: Bob has none, and Ada's assertion for
    // Ada's ceremony does not open Bob's session.
    let bob = Browser::new(&app);
    bob.sign_in_ok(&app, &idp, BOB).await;
    let (status, body) = step(&app, &bob, "authenticate/start", None).await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, "passkey_refused");
    let stolen = assertion(&app, &ada, &mut key, &app.base).await;
    let (status, body) = step(&app, &bob, "authenticate/finish", Some(stolen)).await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, "passkey_refused");
    assert!(!mfa(&app, &bob).await);
    let response = bob
        .client
        .patch(app.tenant_url(&format!(
            "/me/credentials/{}",
            created["id"].as_str().unwrap()
        )))
        .header("Origin", &app.base)
        .json(&json!({"name": "mine now"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::NOT_FOUND,
        "another person's passkey"
    );
    let (_, list) = bob.api(&app, reqwest::Method::GET, "/me/credentials").await;
    assert_eq!(list["items"], json!([]));

    // A cloned authenticator: the stored counter is ahead of the one the key sends. Whoever
    // asserted with the copy first holds a session that passed its second factor: every
    // session of the person ends, the one that found the clone too.
    let copy = Browser::new(&app);
    copy.sign_in_ok(&app, &idp, ADA).await;
    let signed = assertion(&app, &copy, &mut key, &app.base).await;
    let (status, body) = step(&app, &copy, "authenticate/finish", Some(signed)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(mfa(&app, &copy).await);
    app.tenant_sql(
        "UPDATE passkeys SET credential = json_set(credential, '$.cred.counter', 1000000)",
    )
    .await;
    let cloned = assertion(&app, &ada, &mut key, &app.base).await;
    let (status, body) = step(&app, &ada, "authenticate/finish", Some(cloned)).await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, "passkey_refused");
    for browser in [&ada, &copy] {
        let (status, _) = browser.api(&app, reqwest::Method::GET, "/me").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "the session ended");
    }
    let ada = Browser::new(&app);
    ada.sign_in_ok(&app, &idp, ADA).await;
    let (_, list) = ada.api(&app, reqwest::Method::GET, "/me/credentials").await;
    assert!(list["items"][0]["flagged_at"].is_string(), "{list}");
    let (status, body) = step(&app, &ada, "authenticate/start", None).await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, "passkey_refused");

    // Every step is on record, refusals with their reason, and no challenge or signature.
    let events = app.audit_events().await;
    let refusals: Vec<&Value> = events
        .iter()
        .filter(|e| {
            e["status"] == 401 && e["action"].as_str().unwrap().starts_with("auth.webauthn")
        })
        .collect();
    let reasons: Vec<&str> = refusals
        .iter()
        .map(|e| e["details"]["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("counter went backwards")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("no ceremony")),
        "{reasons:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["action"] == "auth.webauthn_authenticate" && e["status"] == 200)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_allows_only_the_authenticator_models_it_lists() {
    const YUBIKEY_5: &str = "cb69481e-8ff7-4039-93ec-0a2729a154a8";
    const UNREPORTED: &str = "00000000-0000-0000-0000-000000000000";
    let app = passkey_app().await;
    let (idp, _peer) = provider(&app, "generic", &[(ADA, ada_claims())], json!({})).await;
    let ada = Browser::new(&app);
    ada.sign_in_ok(&app, &idp, ADA).await;
    let allow = |models: Value| {
        app.call(
            reqwest::Method::PATCH,
            "/settings",
            &app.admin_key,
            Some(json!({ "passkey_aaguids": models })),
        )
    };

    // Only one model: the software passkey, which reports none, is not registered.
    let (status, settings) = allow(json!([YUBIKEY_5, YUBIKEY_5])).await;
    assert_eq!(status, StatusCode::OK, "{settings}");
    assert_eq!(settings["passkey_aaguids"], json!([YUBIKEY_5]));
    let mut key = SoftPasskey::new(true);
    let (status, body) = enroll(&app, &ada, &mut key).await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, "passkey_refused");
    let (_, list) = ada.api(&app, reqwest::Method::GET, "/me/credentials").await;
    assert_eq!(list["items"], json!([]));

    // Authenticators that report no model allowed as well: registered, the model recorded.
    let (status, _) = allow(json!([YUBIKEY_5, UNREPORTED])).await;
    assert_eq!(status, StatusCode::OK);
    let (status, created) = enroll(&app, &ada, &mut key).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["aaguid"], UNREPORTED);
    let signed = assertion(&app, &ada, &mut key, &app.base).await;
    let (status, body) = step(&app, &ada, "authenticate/finish", Some(signed)).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Narrowed while an assertion is under way: the answer is refused, and the passkey is no
    // longer offered.
    let signed = assertion(&app, &ada, &mut key, &app.base).await;
    let (status, _) = allow(json!([YUBIKEY_5])).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = step(&app, &ada, "authenticate/finish", Some(signed)).await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, "passkey_refused");
    let (status, body) = step(&app, &ada, "authenticate/start", None).await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, "passkey_refused");
    assert!(body["detail"].as_str().unwrap().contains("model"), "{body}");
    let reasons: Vec<String> = app
        .audit_events()
        .await
        .iter()
        .filter(|e| e["status"] == 401)
        .filter_map(|e| e["details"]["reason"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        reasons
            .iter()
            .filter(|r| r.contains(&format!("model {UNREPORTED} is not one the tenant allows")))
            .count(),
        3,
        "{reasons:?}"
    );

    // Bad lists change nothing.
    let (status, body) = allow(json!(["not-a-model"])).await;
    assert!(status.is_client_error(), "{status} {body}");
    let too_many: Vec<String> = (0..101u128)
        .map(|n| uuid::Uuid::from_u128(n + 1).to_string())
        .collect();
    let (status, body) = allow(json!(too_many)).await;
    assert_problem(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    let (_, settings) = app.get("/settings", &app.admin_key).await;
    assert_eq!(settings["passkey_aaguids"], json!([YUBIKEY_5]));
}
