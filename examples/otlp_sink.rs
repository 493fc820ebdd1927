//! The collector `benches/load.sh` exports to: an OTLP/HTTP endpoint that reads each export
//! request and answers it as accepted, without decoding or keeping it (an empty body is the
//! protobuf of an export response with nothing rejected). It stands in for a collector on
//! another machine, so on one worker thread and with as little work per request as an HTTP
//! server can do: the CPU the measured server shares with it is the least that a real
//! exchange costs. (`tests/peers/otlp/receiver.py`, which the tests use, decodes and records
//! what arrives; in its discarding mode its Python request handling still took about 8 µs of
//! CPU per request of the load it received the export of, 3–4 % of the server's.)
//!
//! Usage: `otlp_sink`; prints `{"port": N}` once listening on 127.0.0.1.
#![allow(clippy::expect_used)]

use actix_web::{App, HttpResponse, HttpServer, web};

/// Larger than any export request Flowgate makes (a batch of at most 4,096 records).
const MAX_BODY: usize = 64 * 1024 * 1024;

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    println!(r#"{{"port": {}}}"#, listener.local_addr()?.port());
    HttpServer::new(|| {
        App::new()
            .app_data(web::PayloadConfig::new(MAX_BODY))
            .route(
                "/v1/{signal:traces|metrics|logs}",
                web::post().to(|_body: web::Bytes| async {
                    HttpResponse::Ok()
                        .content_type("application/x-protobuf")
                        .finish()
                }),
            )
    })
    .workers(1)
    .listen(listener)?
    .run()
    .await
}
