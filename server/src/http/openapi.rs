//! `GET /api/openapi.json`: the OpenAPI document, generated from the handlers' annotations.
//! Each `#[utoipa::path]` lives beside its handler in its resource's module; `paths(...)` below
//! must name every one, since clients and the API fuzzer (`make test-api`) know only what it
//! lists.

use axum::Json;
use utoipa::OpenApi;

use super::{auth, credit, health, jobs, metrics, results, workers};
use crate::jobs::Dtype;

/// The OpenAPI document, generated from the handlers' annotations.
#[derive(OpenApi)]
#[openapi(
    info(title = "Distributed Brain orchestrator", description = "Submit matrix products, watch them computed by volunteers' browsers, download the result."),
    paths(health::health, health::status, auth::check, jobs::submit_job, jobs::list_jobs, jobs::get_job, jobs::cancel_job, results::job_result, jobs::job_tiles, workers::workers, credit::leaderboard, credit::volunteer, credit::me, credit::set_me, credit::issue_transfer, credit::redeem_transfer, credit::export, metrics::render, openapi_json),
    components(schemas(Dtype, credit::BoardName, credit::PeriodName)),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// This document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "grid",
    responses((status = 200, description = "OpenAPI 3 document", content_type = "application/json")))]
pub(super) async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_lists_every_api_route() {
        let doc = ApiDoc::openapi();
        let mut paths: Vec<&str> = doc.paths.paths.keys().map(String::as_str).collect();
        paths.sort_unstable();
        let mut expected = [
            "/health",
            "/api/status",
            "/api/auth",
            "/api/jobs",
            "/api/jobs/{id}",
            "/api/jobs/{id}/result",
            "/api/jobs/{id}/tiles",
            "/api/workers",
            "/api/leaderboard",
            "/api/volunteers/{id}",
            "/api/me",
            "/api/me/transfer",
            "/api/transfer",
            "/api/stats/export",
            "/metrics",
            "/api/openapi.json",
        ];
        expected.sort_unstable();
        assert_eq!(paths, expected);
    }
}
