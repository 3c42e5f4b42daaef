//! `GET /metrics`, and the middleware that times every HTTP request for it. The statistics
//! and their text format are `crate::metrics`'s; what is here knows axum: reading the gauges
//! from the state at scrape time, and keeping the request labels to fixed sets.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::db;
use crate::error::Result;
use crate::metrics::{Snapshot, TEXT_FORMAT};
use crate::state::AppState;

/// Middleware timing every HTTP request, labelled by its route pattern (never the raw path,
/// which would make a label per job id). Every label has a fixed set of values, since each
/// new combination is a series kept for the life of the process: methods outside the
/// standard ones are counted as `other`; requests that matched no route as `static` when the
/// web files answered them and `unmatched` otherwise (404s for made-up paths, for example).
pub(super) async fn track_http(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status();
    let route = route.unwrap_or_else(|| {
        let served = status.is_success() || status.is_redirection();
        (if served { STATIC } else { UNMATCHED }).to_owned()
    });
    state.grid.metrics.http_request(
        method,
        &route,
        status.as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// The route label of requests the web files answered.
const STATIC: &str = "static";
/// The route label of requests that matched no route and no file.
const UNMATCHED: &str = "unmatched";

/// The method label: one of the nine methods of RFC 9110 (and PATCH), or `other` for any
/// made-up one, of which a client could send an endless variety.
fn method_label(method: &Method) -> &'static str {
    const KNOWN: [(Method, &str); 9] = [
        (Method::GET, "GET"),
        (Method::HEAD, "HEAD"),
        (Method::POST, "POST"),
        (Method::PUT, "PUT"),
        (Method::DELETE, "DELETE"),
        (Method::CONNECT, "CONNECT"),
        (Method::OPTIONS, "OPTIONS"),
        (Method::TRACE, "TRACE"),
        (Method::PATCH, "PATCH"),
    ];
    KNOWN
        .iter()
        .find(|(known, _)| known == method)
        .map_or("other", |(_, label)| label)
}

/// Metrics in the Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "grid",
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain")))]
pub(super) async fn render(State(state): State<AppState>) -> Result<Response> {
    let (jobs, tasks) = db::counts(&state.db).await?;
    let (_, re_leases) = db::totals(&state.db).await?;
    let text = state.grid.metrics.encode(&Snapshot {
        workers_online: state.grid.workers.len(),
        jobs: &jobs,
        tasks: &tasks,
        re_leases,
    });
    Ok(([(header::CONTENT_TYPE, TEXT_FORMAT)], text).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    #[test]
    fn made_up_methods_and_unmatched_routes_share_one_series() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        let metrics = Metrics::default();
        for i in 0..1000 {
            let method = Method::from_bytes(format!("FOO{i}").as_bytes()).expect("a token");
            assert_eq!(method_label(&method), "other");
            metrics.http_request(method_label(&method), UNMATCHED, 405, 0.001);
        }
        let text = metrics.encode(&Snapshot {
            workers_online: 0,
            jobs: &[],
            tasks: &[],
            re_leases: 0,
        });
        let series: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("brain_http_request_duration_seconds_count"))
            .collect();
        assert_eq!(
            series,
            [
                r#"brain_http_request_duration_seconds_count{method="other",route="unmatched",status="405"} 1000"#
            ]
        );
    }
}
