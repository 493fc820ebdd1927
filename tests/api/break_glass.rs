//! Break-glass accounts: the operator creates one, it enrolls a passkey with its one-time token
//! and signs in with that passkey alone while the tenant's identity provider is down — and the
//! ways around each step fail.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use url::Url;
use webauthn_authenticator_rs::WebauthnAuthenticator as _;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;

use crate::helpers::{TestApp, assert_problem};
use crate::oidc_peer::Browser;
use crate::passkeys::{assertion, enroll, passkey_app, step};

const EMAIL: &str = "break-glass@acme.example";

/// The operator's call to create (or re-issue) the break-glass account `email`.
async fn issue(app: &TestApp, email: &str) -> (StatusCode, Value) {
    let response = app
        .client
        .post(app.url(&format!(
            "/api/v1/platform/tenants/{}/break-glass",
            app.tenant
        )))
        .bearer_auth(&app.operator_token)
        .json(&json!({"email": email, "display_name": "Emergency access"}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

/// A break-glass step from `browser`, with this server's `Origin` unless `origin` says otherwise.
async fn glass(
    app: &TestApp,
    browser: &Browser,
    path: &str,
    body: Value,
    origin: &str,
) -> (StatusCode, Value) {
    let response = browser
        .client
        .post(app.url(&format!("/t/{}/auth/break-glass/{path}", app.tenant)))
        .header("Origin", origin)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Signs `browser` in as the break-glass account with `key`.
async fn sign_in(app: &TestApp, browser: &Browser, key: &mut SoftPasskey) -> (StatusCode, Value) {
    let (status, options) = glass(app, browser, "start", json!({"email": EMAIL}), &app.base).await;
    assert_eq!(status, StatusCode::OK, "{options}");
    let signed = key
        .do_authentication(
            Url::parse(&app.base).unwrap(),
            serde_json::from_value(options).unwrap(),
        )
        .unwrap();
    glass(
        app,
        browser,
        "finish",
        serde_json::to_value(signed).unwrap(),
        &app.base,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_break_glass_account_signs_in_with_its_passkey_while_the_identity_provider_is_down() {
    let app = passkey_app().await;
    // The tenant's only provider is unreachable, and the tenant requires MFA.
    let (status, body) = app
        .post(
            "/identity-providers",
            &app.admin_key,
            json!({"name": "Down", "kind": "oidc", "preset": "generic",
                   "issuer": "http://127.0.0.1:9/down", "client_id": "c", "client_secret": "s"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = app
        .call(
            Method::PATCH,
            "/settings",
            &app.admin_key,
            Some(json!({"mfa": "required"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Only the operator creates one; a tenant's admin key is not the operator's token.
    let response = app
        .client
        .post(app.url(&format!(
            "/api/v1/platform/tenants/{}/break-glass",
            app.tenant
        )))
        .bearer_auth(&app.admin_key)
        .json(&json!({"email": EMAIL}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let (status, body) = issue(&app, "not-an-email").await;
    assert_problem(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    let (status, issued) = issue(&app, EMAIL).await;
    assert_eq!(status, StatusCode::CREATED, "{issued}");
    let token = issued["enrollment_token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("fgb_"));

    // Enrollment: a foreign Origin and a wrong token are refused; the token works once.
    let operator_browser = Browser::new(&app);
    let (status, _) = glass(
        &app,
        &operator_browser,
        "enroll",
        json!({"token": token}),
        "https://evil.example",
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = glass(
        &app,
        &operator_browser,
        "enroll",
        json!({"token": "fgb_wrong"}),
        &app.base,
    )
    .await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, "passkey_refused");
    let (status, enrolling) = glass(
        &app,
        &operator_browser,
        "enroll",
        json!({"token": token}),
        &app.base,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{enrolling}");
    let (status, body) = glass(
        &app,
        &Browser::new(&app),
        "enroll",
        json!({"token": token}),
        &app.base,
    )
    .await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, "passkey_refused");

    // The enrollment session can enroll a passkey and nothing else until it asserts.
    let (status, body) = operator_browser.api(&app, Method::GET, "/users").await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, "mfa_required");
    let mut key = SoftPasskey::new(true);
    let (status, created) = enroll(&app, &operator_browser, &mut key).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let signed = assertion(&app, &operator_browser, &mut key, &app.base).await;
    let (status, body) = step(&app, &operator_browser, "authenticate/finish", Some(signed)).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // A tenant's list of authenticator models cannot disable the operator's way in.
    let (status, body) = app
        .call(
            Method::PATCH,
            "/settings",
            &app.admin_key,
            Some(json!({"passkey_aaguids": ["cb69481e-8ff7-4039-93ec-0a2729a154a8"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Later, from another browser: the passkey alone signs the account in, for an hour at most,
    // as an Admin of the tenant whose provider is down.
    let responder = Browser::new(&app);
    let (status, session) = sign_in(&app, &responder, &mut key).await;
    assert_eq!(status, StatusCode::OK, "{session}");
    let ends: chrono::DateTime<chrono::Utc> =
        session["expires_at"].as_str().unwrap().parse().unwrap();
    assert!(ends <= chrono::Utc::now() + chrono::Duration::minutes(60));
    let (status, me) = responder.api(&app, Method::GET, "/me").await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(
        (me["email"].as_str(), me["auth"]["mfa"].as_bool()),
        (Some(EMAIL), Some(true))
    );
    let (status, users) = responder.api(&app, Method::GET, "/users").await;
    assert_eq!(status, StatusCode::OK, "{users}");

    // Attacks: an unknown email looks like any refusal; a finish without the browser's cookie,
    // a replay, and another authenticator's assertion are refused.
    let (status, body) = glass(
        &app,
        &Browser::new(&app),
        "start",
        json!({"email": "nobody@acme.example"}),
        &app.base,
    )
    .await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, "passkey_refused");
    let attacker = Browser::new(&app);
    let (status, options) =
        glass(&app, &attacker, "start", json!({"email": EMAIL}), &app.base).await;
    assert_eq!(status, StatusCode::OK);
    let mut other = SoftPasskey::new(true);
    assert!(
        other
            .do_authentication(
                Url::parse(&app.base).unwrap(),
                serde_json::from_value(options.clone()).unwrap()
            )
            .is_err(),
        "a key that holds no credential of the account cannot answer"
    );
    let genuine = key
        .do_authentication(
            Url::parse(&app.base).unwrap(),
            serde_json::from_value(options).unwrap(),
        )
        .unwrap();
    let genuine = serde_json::to_value(genuine).unwrap();
    let (status, body) = glass(
        &app,
        &Browser::new(&app),
        "finish",
        genuine.clone(),
        &app.base,
    )
    .await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, "passkey_refused");
    let (status, _) = glass(&app, &attacker, "finish", genuine.clone(), &app.base).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the browser that began it finishes it"
    );
    let (status, body) = glass(&app, &attacker, "finish", genuine, &app.base).await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, "passkey_refused");

    // A copy of the passkey: its counter goes backwards. The sessions of the account (whoever
    // signed in with the copy holds one) end with the refusal.
    app.tenant_sql(
        "UPDATE passkeys SET credential = json_set(credential, '$.cred.counter', 1000000)",
    )
    .await;
    let (status, body) = sign_in(&app, &Browser::new(&app), &mut key).await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, "passkey_refused");
    for browser in [&responder, &attacker] {
        let (status, _) = browser.api(&app, Method::GET, "/me").await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "the account's sessions ended"
        );
    }
    // (The operator's check found the key genuine: it is trusted again for what follows.)
    app.tenant_sql(
        "UPDATE passkeys SET flagged_at = NULL, \
         credential = json_set(credential, '$.cred.counter', 0)",
    )
    .await;
    let (status, session) = sign_in(&app, &responder, &mut key).await;
    assert_eq!(status, StatusCode::OK, "{session}");

    // A tenant admin cannot take the tenant's emergency access away.
    let (status, body) = app
        .call(
            Method::DELETE,
            &format!("/users/{}/credentials", issued["user_id"].as_str().unwrap()),
            &app.admin_key,
            None,
        )
        .await;
    assert_problem(status, &body, StatusCode::CONFLICT, "conflict");
    let (status, body) = app
        .call(
            Method::POST,
            &format!("/users/{}/disable", issued["user_id"].as_str().unwrap()),
            &app.admin_key,
            None,
        )
        .await;
    assert_problem(status, &body, StatusCode::CONFLICT, "conflict");
    let (status, _) = responder.api(&app, Method::GET, "/me").await;
    assert_eq!(status, StatusCode::OK, "the account still works");

    // A person who is not a break-glass account cannot be made one.
    let (status, _) = app
        .post(
            "/users",
            &app.admin_key,
            json!({"email": "ada@acme.example", "display_name": "Ada"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = issue(&app, "ada@acme.example").await;
    assert_problem(status, &body, StatusCode::CONFLICT, "conflict");

    // A new enrollment (a lost authenticator) ends every session of the account and retires
    // its passkey.
    let (status, reissued) = issue(&app, EMAIL).await;
    assert_eq!(status, StatusCode::OK, "{reissued}");
    assert_eq!(reissued["user_id"], issued["user_id"]);
    let (status, _) = responder.api(&app, Method::GET, "/me").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = glass(
        &app,
        &Browser::new(&app),
        "start",
        json!({"email": EMAIL}),
        &app.base,
    )
    .await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, "passkey_refused");

    // Loud on record: issue, enrollment, sign-in and refusals are security events; the token
    // is in none of them.
    let events = app.audit_events().await;
    let security: Vec<&str> = events
        .iter()
        .filter_map(|e| e["details"]["security_event"].as_str())
        .collect();
    for kind in [
        "break_glass_issued",
        "break_glass_enrollment",
        "break_glass_sign_in",
        "break_glass_refused",
    ] {
        assert!(security.contains(&kind), "{kind} missing from {security:?}");
    }
    assert!(!serde_json::to_string(&events).unwrap().contains(&token));
    // Whoever starts a sign-in is nobody yet: the account is the object, never the actor.
    let starts: Vec<&Value> = events
        .iter()
        .filter(|e| e["action"] == "auth.break_glass_start" && e["status"] == 200)
        .collect();
    assert!(!starts.is_empty());
    for start in starts {
        assert_eq!(start["actor_type"], "anonymous", "{start}");
        assert_eq!(start["resource_id"], issued["user_id"], "{start}");
    }
}
