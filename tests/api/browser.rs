//! The passkey ceremonies in a real browser: Debian's Chromium, driven by `playwright-core`
//! (tests/peers/browser) with a virtual WebAuthn authenticator, through Flowgate's own login
//! page, against the test OpenID provider.

use std::process::Stdio;

use serde_json::json;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

use crate::oidc_peer::Browser;
use crate::passkeys::passkey_app;
use crate::signin::{ADA, ada_claims, bind_group, group_id, provider};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sso_then_passkey_in_chromium_with_a_step_up_prompt_for_a_role_change() {
    let app = passkey_app().await;
    let (idp, _peer) = provider(&app, "generic", &[(ADA, ada_claims())], json!({})).await;
    // Ada's first sign-in makes her and her `finance` group, which the tenant makes Admin; then
    // the tenant requires MFA.
    Browser::new(&app).sign_in_ok(&app, &idp, ADA).await;
    bind_group(&app, "finance", "Admin").await;
    let (status, body) = app
        .call(
            reqwest::Method::PATCH,
            "/settings",
            &app.admin_key,
            Some(json!({"mfa": "required"})),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    let finance = group_id(&app, "finance").await;

    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/peers/browser/passkey-e2e.mjs"
    );
    let mut child = tokio::process::Command::new("node")
        .arg(script)
        .env("FLOWGATE_BASE", &app.base)
        .env("FLOWGATE_TENANT", &app.tenant)
        .env("FLOWGATE_PROVIDER", "generic IdP")
        .env("FLOWGATE_ACCOUNT", ADA)
        .env("FLOWGATE_GROUP", &finance)
        .env("FLOWGATE_CERT", app.data_dir.join("tls/cert.pem"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs the browser script (scripts/test installs its packages)");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut said = Vec::new();
    while let Ok(Some(line)) =
        tokio::time::timeout(std::time::Duration::from_secs(120), stdout.next_line())
            .await
            .expect("the browser script answers within two minutes")
    {
        if line == "AGE" {
            // The session's assertion is now old: the role change must ask for a fresh one.
            app.tenant_sql(crate::mfa::AGE_ASSERTIONS).await;
            stdin.write_all(b"OK\n").await.unwrap();
        }
        said.push(line);
    }
    let output = child.wait_with_output().await.unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the browser run failed:\n{log}");
    assert_eq!(said, ["AGE", "DONE"], "{log}");

    // The trail saw it: enrollment, two assertions, the step-up refusal and the change.
    let events = app.audit_events().await;
    let count = |action: &str, status: u64| {
        events
            .iter()
            .filter(|e| e["action"] == action && e["status"] == status)
            .count()
    };
    let by_session = |action: &str, status: u64| {
        events
            .iter()
            .filter(|e| e["action"] == action && e["status"] == status)
            .filter(|e| e["details"]["credential"] == "session")
            .count()
    };
    assert_eq!(count("auth.webauthn_register", 201), 1);
    assert!(count("auth.webauthn_authenticate", 200) >= 3);
    assert_eq!(by_session("role_binding.create", 401), 1);
    assert_eq!(by_session("role_binding.create", 201), 1);
}
