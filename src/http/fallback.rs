//! What answers a request that no route took: 405 with `Allow` when the path exists with other
//! methods, 404 otherwise. TRACE is never echoed.

use actix_web::dev::ResourceDef;
use actix_web::{HttpRequest, HttpResponse, web};
use utoipa::openapi::OpenApi;

use super::error::ApiError;

/// Every documented path and its methods.
pub struct RouteTable {
    routes: Vec<(ResourceDef, Vec<&'static str>)>,
}

impl RouteTable {
    pub fn from_document(doc: &OpenApi) -> Self {
        let mut routes: Vec<(ResourceDef, Vec<&'static str>)> = doc
            .paths
            .paths
            .iter()
            .map(|(path, item)| {
                let methods = [
                    ("GET", item.get.is_some()),
                    ("PUT", item.put.is_some()),
                    ("POST", item.post.is_some()),
                    ("DELETE", item.delete.is_some()),
                    ("PATCH", item.patch.is_some()),
                ]
                .into_iter()
                .filter_map(|(method, present)| present.then_some(method))
                .collect();
                (ResourceDef::new(path.as_str()), methods)
            })
            .collect();
        routes.push((ResourceDef::new("/openapi.json"), vec!["GET"]));
        routes.push((ResourceDef::new("/docs"), vec!["GET"]));
        RouteTable { routes }
    }

    fn allowed(&self, path: &str) -> Vec<&'static str> {
        let mut methods: Vec<&'static str> = self
            .routes
            .iter()
            .filter(|(def, _)| def.is_match(path))
            .flat_map(|(_, methods)| methods.iter().copied())
            .collect();
        methods.sort_unstable();
        methods.dedup();
        methods
    }
}

pub async fn fallback(
    req: HttpRequest,
    table: web::Data<RouteTable>,
) -> Result<HttpResponse, ApiError> {
    let allowed = table.allowed(req.path());
    if allowed.is_empty() {
        Err(ApiError::not_found())
    } else {
        Err(ApiError::method_not_allowed(allowed.join(", ")))
    }
}
