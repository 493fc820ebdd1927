//! Server CPU of one passkey assertion check (issue 13's target: at most 1 ms): what
//! `signin::passkeys::RelyingParty::verify` does beside its two database statements — read the
//! stored credential (JSON), let webauthn-rs check the assertion (client data, origin, RP ID
//! hash, flags, counter, ECDSA P-256 signature), update the counter and write the credential
//! back as JSON. The assertions are made beforehand by webauthn-authenticator-rs's software
//! passkey, outside the timing.
//!
//! `cargo bench --bench passkeys`. For scale, the same run times a bare P-256 signature check
//! (aws-lc-rs), the floor of any assertion check.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use webauthn_authenticator_rs::WebauthnAuthenticator as _;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_rs::prelude::{Passkey, Url, Uuid, WebauthnBuilder};

fn assertion(c: &mut Criterion) {
    let origin = Url::parse("https://flowgate.example:8443").unwrap();
    let rp = WebauthnBuilder::new("flowgate.example", &origin)
        .unwrap()
        .build()
        .unwrap();
    let mut key = SoftPasskey::new(true);
    let (options, registration) = rp
        .start_passkey_registration(Uuid::new_v4(), "ada@acme.example", "Ada", None)
        .unwrap();
    let created = key.do_registration(origin.clone(), options).unwrap();
    let passkey = rp
        .finish_passkey_registration(&created, &registration)
        .unwrap();
    let stored = serde_json::to_value(&passkey).unwrap();

    c.bench_function("passkey assertion: verify and record", |b| {
        b.iter_batched(
            || {
                let current: Passkey = serde_json::from_value(stored.clone()).unwrap();
                let (options, state) = rp.start_passkey_authentication(&[current]).unwrap();
                let answer = key.do_authentication(origin.clone(), options).unwrap();
                (stored.clone(), answer, state)
            },
            |(stored, answer, state)| {
                let mut passkey: Passkey = serde_json::from_value(stored).unwrap();
                let result = rp.finish_passkey_authentication(&answer, &state).unwrap();
                passkey.update_credential(&result);
                black_box(serde_json::to_value(&passkey).unwrap())
            },
            BatchSize::SmallInput,
        );
    });

    // The floor: one ECDSA P-256 verification.
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _,
        UnparsedPublicKey,
    };
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref()).unwrap();
    let message = [7u8; 300];
    let signature = pair.sign(&rng, &message).unwrap();
    let public =
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, pair.public_key().as_ref().to_vec());
    c.bench_function("floor: one P-256 signature check", |b| {
        b.iter(|| public.verify(black_box(&message), black_box(signature.as_ref())))
    });
}

criterion_group!(benches, assertion);
criterion_main!(benches);
