//! The floor `benches/load.sh` compares Flowgate's `/healthz` with: a bare actix-web server
//! over rustls, with the same TLS versions, crypto provider, certificate and response body, and
//! nothing else (no request id, metrics, security headers or rate limit).
//!
//! Usage: `bare_healthz ADDR CERT_PEM KEY_PEM`.
#![allow(clippy::expect_used)]

use std::sync::Arc;

use actix_web::{App, HttpResponse, HttpServer, web};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, cert, key] = args.as_slice() else {
        eprintln!("usage: bare_healthz ADDR CERT_PEM KEY_PEM");
        std::process::exit(2);
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .expect("certificate file")
        .collect::<Result<Vec<_>, _>>()
        .expect("certificate");
    let key = PrivateKeyDer::from_pem_file(key).expect("key");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("certificate and key");
    HttpServer::new(|| {
        App::new().route(
            "/healthz",
            web::get().to(|| async {
                HttpResponse::Ok()
                    .content_type("application/json")
                    .body(r#"{"status":"ok"}"#)
            }),
        )
    })
    .listen_rustls_0_23(std::net::TcpListener::bind(addr)?, tls)?
    .run()
    .await
}
