//! The Key Protect REST facade: Key Protect's own API under `/api/v2/` and IBM Cloud IAM's
//! token endpoint (`/identity/token`, `/oidc/token`), so code written against Key Protect
//! with IBM's SDKs runs against kmsim unchanged. It is served by `kmsim serve` on the
//! `--rest-listen` address, over the same domain as gRPC: every handler calls the `Kms`
//! method the matching gRPC handler calls, authenticates with the same bearer-token check,
//! and records the same audit event (named through the same action table).
//!
//! - [`call`]: one call's context (identity, instance, correlation id, body, query, audit);
//! - [`error`]: HTTP-only failures and Key Protect's error body;
//! - [`json`]: domain values as Key Protect's JSON;
//! - [`keys`], [`actions`], [`policies`], [`import`], [`registrations`]: the endpoints;
//! - [`iam`]: the token endpoint.

pub mod actions;
pub mod call;
pub mod error;
pub mod iam;
pub mod import;
pub mod json;
pub mod keys;
pub mod policies;
pub mod registrations;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::response::Response;
use axum::routing::{get, post};
use http::StatusCode;
use tokio::net::TcpListener;

use crate::error::KmsError;
use crate::kms::Kms;
use error::{Classified, RestError};

/// Runs a domain call that writes to the store on the blocking pool (as the gRPC edge does).
pub(crate) async fn blocking<T, F>(kms: &Arc<Kms>, call: F) -> Result<T, RestError>
where
    T: Send + 'static,
    F: FnOnce(&Kms) -> Result<T, KmsError> + Send + 'static,
{
    let kms = Arc::clone(kms);
    tokio::task::spawn_blocking(move || call(&kms))
        .await
        .map_err(|_| RestError::WorkerStopped)?
        .map_err(RestError::from)
}

/// Key Protect's error body for a path or method the API does not have.
fn not_served(status: StatusCode, reason: &'static str, message: &str) -> Response {
    let classified = Classified {
        code: tonic::Code::NotFound,
        reason,
        http: status.as_u16(),
        message: message.to_owned(),
        retry_after: None,
    };
    call::json_response(status, &classified.body("Request could not be served"))
}

async fn no_route() -> Response {
    not_served(
        StatusCode::NOT_FOUND,
        "NOT_FOUND_ERR",
        "no such path in Key Protect's API",
    )
}

async fn no_method() -> Response {
    not_served(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED_ERR",
        "the path does not serve this method",
    )
}

/// The facade's routes over `kms`.
pub fn router(kms: Arc<Kms>) -> Router {
    Router::new()
        .route("/identity/token", post(iam::identity_token))
        .route("/oidc/token", post(iam::oidc_token))
        .route(
            "/api/v2/keys",
            get(keys::list).head(keys::total).post(keys::create),
        )
        .route(
            "/api/v2/keys_with_policy_overrides",
            post(keys::create_with_policies),
        )
        .route(
            "/api/v2/keys/registrations",
            get(registrations::for_resource),
        )
        .route(
            "/api/v2/keys/{id}",
            get(keys::get)
                .delete(keys::delete)
                .post(actions::legacy_action),
        )
        .route("/api/v2/keys/{id}/metadata", get(keys::metadata))
        .route(
            "/api/v2/keys/{id}/purge",
            axum::routing::delete(keys::purge),
        )
        .route("/api/v2/keys/{id}/restore", post(keys::restore))
        .route("/api/v2/keys/{id}/versions", get(keys::versions))
        .route("/api/v2/keys/{id}/actions/{action}", post(actions::action))
        .route(
            "/api/v2/keys/{id}/aliases/{alias}",
            post(keys::create_alias).delete(keys::delete_alias),
        )
        .route(
            "/api/v2/keys/{id}/policies",
            get(policies::get_key).put(policies::put_key),
        )
        .route(
            "/api/v2/keys/{id}/registrations",
            get(registrations::for_key),
        )
        .route(
            "/api/v2/keys/{id}/registrations/{*crn}",
            post(registrations::create)
                .patch(registrations::update)
                .put(registrations::replace)
                .delete(registrations::delete),
        )
        .route(
            "/api/v2/instance/policies",
            get(policies::get_instance).put(policies::put_instance),
        )
        .route(
            "/api/v2/import_token",
            get(import::get).post(import::create),
        )
        .route("/api/v2/key_rings", get(registrations::key_rings))
        .fallback(no_route)
        .method_not_allowed_fallback(no_method)
        // Bodies are read (and limited) by the handlers, which answer Key Protect's 413.
        .layer(DefaultBodyLimit::disable())
        .with_state(kms)
}

/// Serves the facade on `listener` until `shutdown` completes, then drains open requests.
pub async fn serve(
    listener: TcpListener,
    kms: Arc<Kms>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(kms))
        .with_graceful_shutdown(shutdown)
        .await
}
