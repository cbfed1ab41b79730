//! The browser dashboards (a box's, and the fleet view's): static files embedded in the binary
//! (no build step, no CDN), served at `/` and `/assets/`. The pages hold no data; they read
//! everything over `/ws` and `/api`.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

const INDEX: &str = include_str!("../../web/index.html");
const APP_JS: &str = include_str!("../../web/app.js");
const STYLE: &str = include_str!("../../web/style.css");
/// The ES module both dashboards import: the token, the connection badge, the token dialog.
const COMMON_JS: &str = include_str!("../../web/common.js");
/// uPlot (MIT), the counts view's charts: web/vendor/uplot/README.md says which and why.
const UPLOT_JS: &str = include_str!("../../web/vendor/uplot/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../../web/vendor/uplot/uPlot.min.css");

fn file(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    // The files change only with the binary; revalidate so an upgrade is picked up at once.
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
}

const FLEET_INDEX: &str = include_str!("../../web/fleet.html");
const FLEET_JS: &str = include_str!("../../web/fleet.js");

/// What both dashboards load: the style sheet and the shared module.
fn shared<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/assets/style.css",
            get(|| async { file("text/css; charset=utf-8", STYLE) }),
        )
        .route(
            "/assets/common.js",
            get(|| async { file("text/javascript; charset=utf-8", COMMON_JS) }),
        )
}

/// The fleet view's dashboard (`ocellus fleet`), with the box dashboard's style sheet.
pub(crate) fn fleet_routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    shared()
        .route(
            "/",
            get(|| async { file("text/html; charset=utf-8", FLEET_INDEX) }),
        )
        .route(
            "/assets/fleet.js",
            get(|| async { file("text/javascript; charset=utf-8", FLEET_JS) }),
        )
}

pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    shared()
        .route(
            "/",
            get(|| async { file("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/assets/app.js",
            get(|| async { file("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/assets/uplot.js",
            get(|| async { file("text/javascript; charset=utf-8", UPLOT_JS) }),
        )
        .route(
            "/assets/uplot.css",
            get(|| async { file("text/css; charset=utf-8", UPLOT_CSS) }),
        )
}
