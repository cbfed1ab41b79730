//! Path and query extractors whose rejections answer like every other API error: the JSON
//! `{error, message}` of [`ApiError`], not axum's plain text. The daemon's REST API and the
//! fleet view use them for every path and query they read.

use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::server::state::ApiError;

/// A query string deserialised into `T`; a bad one is a 400 `bad_request` naming what is wrong.
pub(crate) struct ApiQuery<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(q)) => Ok(Self(q)),
            Err(e) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                e.body_text(),
            )),
        }
    }
}

/// Path parameters deserialised into `T`; one that does not parse (`/api/events/x`) is a 400
/// `bad_request` naming what is wrong.
pub(crate) struct ApiPath<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(p)) => Ok(Self(p)),
            Err(e) if e.status().is_client_error() => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                e.body_text(),
            )),
            // A route whose pattern does not match its extractor: the server's fault.
            Err(e) => Err(ApiError::new(e.status(), "internal", e.body_text())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt as _;

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Range {
        #[allow(dead_code)]
        from_ms: Option<i64>,
    }

    fn app() -> Router {
        Router::new()
            .route(
                "/api/events/{id}/snapshot.jpg",
                get(|ApiPath(id): ApiPath<i64>| async move { id.to_string() }),
            )
            .route(
                "/api/range",
                get(|ApiQuery(_): ApiQuery<Range>| async { "ok" }),
            )
    }

    async fn get_json(uri: &str) -> (StatusCode, serde_json::Value) {
        let r = app()
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = r.status();
        let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        let json = serde_json::from_slice(&body)
            .unwrap_or_else(|_| panic!("{uri}: not JSON: {}", String::from_utf8_lossy(&body)));
        (status, json)
    }

    #[tokio::test]
    async fn a_path_that_does_not_parse_is_a_json_bad_request() {
        let (status, json) = get_json("/api/events/..%2F..%2Fetc%2Fpasswd/snapshot.jpg").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(json["error"], "bad_request");
        assert!(json["message"].as_str().unwrap().contains("i64"), "{json}");
    }

    #[tokio::test]
    async fn a_query_that_does_not_parse_is_a_json_bad_request() {
        for uri in ["/api/range?from_ms=soon", "/api/range?nope=1"] {
            let (status, json) = get_json(uri).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
            assert_eq!(json["error"], "bad_request", "{uri}");
            assert!(!json["message"].as_str().unwrap().is_empty(), "{uri}");
        }
    }

    #[tokio::test]
    async fn good_paths_and_queries_pass() {
        let r = app()
            .oneshot(
                Request::get("/api/events/42/snapshot.jpg")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let body = axum::body::to_bytes(r.into_body(), 1 << 10).await.unwrap();
        assert_eq!(&body[..], b"42");
    }
}
