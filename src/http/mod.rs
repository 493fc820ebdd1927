//! The HTTP layer: one request pipeline for every endpoint ([`pipeline`], a stage a file in
//! request order), the operations built from each handler's signature ([`operation`],
//! [`contract`]), the handlers ([`routes`]), errors and TLS.

pub mod contract;
pub mod error;
pub mod extract;
mod fallback;
pub mod jose;
pub mod operation;
pub mod pages;
pub mod pipeline;
pub mod request_id;
pub mod routes;
pub mod timestamp;
pub mod tls;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix_web::dev::ServerHandle;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use tokio::task::JoinHandle;
use utoipa_swagger_ui::SwaggerUi;

use crate::app::AppState;
use crate::openapi;
use error::{ApiError, FieldError};
use fallback::RouteTable;

/// How to run the listeners.
pub struct ServeOptions {
    pub listener: TcpListener,
    pub admin_listener: Option<TcpListener>,
    /// Let the server stop itself on SIGINT/SIGTERM (the `serve` command); tests stop it.
    pub handle_signals: bool,
}

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    running: Vec<(ServerHandle, JoinHandle<std::io::Result<()>>)>,
    _tls: Arc<tls::ReloadingCert>,
}

impl Server {
    /// Starts serving `state` on the given listeners.
    pub fn start(state: Arc<AppState>, options: ServeOptions) -> anyhow::Result<Server> {
        let (tls_config, reloading_cert) = tls::server_config(&state.settings)?;
        let data = web::Data::from(state);
        let document = openapi::document();
        let routes = web::Data::new(RouteTable::from_document(&document));
        let addr = options.listener.local_addr()?;
        let public_data = data.clone();
        let public = HttpServer::new(move || {
            App::new()
                .app_data(public_data.clone())
                .app_data(routes.clone())
                .app_data(query_config())
                .configure(routes::configure)
                .service(SwaggerUi::new("/docs/{_:.*}").url("/openapi.json", document.clone()))
                .service(web::redirect("/docs", "/docs/"))
                .default_service(web::to(fallback::fallback))
                .wrap(from_fn(pipeline::every_request))
        })
        .shutdown_timeout(10)
        .listen_rustls_0_23(options.listener, tls_config.clone())?;
        let public = if options.handle_signals {
            public
        } else {
            public.disable_signals()
        };
        let mut running = vec![spawn(public.run())];
        let mut admin_addr = None;
        if let Some(listener) = options.admin_listener {
            admin_addr = Some(listener.local_addr()?);
            let admin = HttpServer::new(move || {
                App::new()
                    .app_data(data.clone())
                    .route("/healthz", web::get().to(routes::health::healthz))
                    .route("/readyz", web::get().to(routes::health::readyz))
                    .route("/metrics", web::get().to(admin_metrics))
                    .default_service(web::to(|| async {
                        Err::<actix_web::HttpResponse, _>(ApiError::not_found())
                    }))
                    .wrap(from_fn(pipeline::admin_request))
            })
            .workers(1)
            .shutdown_timeout(10)
            .listen_rustls_0_23(listener, tls_config)?;
            let admin = if options.handle_signals {
                admin
            } else {
                admin.disable_signals()
            };
            running.push(spawn(admin.run()));
        }
        Ok(Server {
            addr,
            admin_addr,
            running,
            _tls: reloading_cert,
        })
    }

    /// Stops accepting connections, lets requests in flight finish, and waits.
    pub async fn stop(self) -> anyhow::Result<()> {
        for (handle, _) in &self.running {
            handle.stop(true).await;
        }
        self.wait().await
    }

    /// Waits until the listeners stop by themselves (on a signal).
    pub async fn wait(self) -> anyhow::Result<()> {
        for (_, task) in self.running {
            task.await??;
        }
        Ok(())
    }
}

fn spawn(server: actix_web::dev::Server) -> (ServerHandle, JoinHandle<std::io::Result<()>>) {
    (server.handle(), tokio::spawn(server))
}

/// `/metrics` on the internal admin listener: no token, the network is the boundary.
async fn admin_metrics(state: web::Data<AppState>) -> actix_web::HttpResponse {
    routes::health::render_metrics(&state)
}

fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err, _req| {
        ApiError::validation(vec![FieldError {
            field: String::new(),
            message: err.to_string(),
        }])
        .into()
    })
}
