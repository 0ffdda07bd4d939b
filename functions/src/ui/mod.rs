//! The `/ges/` admin UI on the internal port (docs/admin-ui.md): server-rendered pages from
//! templates compiled into the binary, a session per login, the one permission table of
//! [`roles`] checked on the server by every page and action, a CSRF token on every form.
//! No JavaScript, no CDN, no build step.

pub mod call_in;
pub mod callback_actions;
pub mod callbacks;
pub mod config_pages;
pub mod credentials;
pub mod developer;
pub mod login;
pub mod queues;
pub mod roles;
pub mod session;
pub mod users;

use std::sync::LazyLock;

use axum::{
    Router,
    http::{HeaderValue, StatusCode, header},
    response::{Html, IntoResponse, Redirect, Response},
    routing::get,
};
use minijinja::{Environment, Value};
use shared::{ApiError, http::AppState};

use self::{roles::Permission, session::Session};

/// Every UI route (internal port only: `internal_routes`).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ges", get(home))
        .route("/ges/", get(home))
        .route("/ges/static/app.css", get(stylesheet))
        .merge(login::router())
        .merge(queues::router())
        .merge(callbacks::router())
        .merge(config_pages::router())
        .merge(developer::router())
        .merge(credentials::router())
        .merge(call_in::router())
        .layer(axum::middleware::from_fn(negotiate))
}

tokio::task_local! {
    /// Whether the current UI request asked for HTML (`Accept: text/html`, as a browser's
    /// navigation does): failures are then pages and redirects, else envelopes.
    static WANTS_HTML: bool;
}

/// Runs the request knowing whether its caller is a browser (see [`WANTS_HTML`]).
async fn negotiate(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let html = req
        .headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/html"));
    WANTS_HTML.scope(html, next.run(req)).await
}

/// The landing page after login.
async fn home(_: Session) -> Redirect {
    Redirect::to("/ges/queues")
}

async fn stylesheet() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        include_str!("templates/app.css"),
    )
}

/// The templates, parsed once; `.html` names are auto-escaped.
static TEMPLATES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    for (name, text) in [
        ("layout.html", include_str!("templates/layout.html")),
        ("login.html", include_str!("templates/login.html")),
        ("error.html", include_str!("templates/error.html")),
        ("queues.html", include_str!("templates/queues.html")),
        ("services.html", include_str!("templates/services.html")),
        (
            "number_rules.html",
            include_str!("templates/number_rules.html"),
        ),
        ("capacity.html", include_str!("templates/capacity.html")),
        ("developer.html", include_str!("templates/developer.html")),
        ("callbacks.html", include_str!("templates/callbacks.html")),
        ("callback.html", include_str!("templates/callback.html")),
        (
            "bulk_cancel.html",
            include_str!("templates/bulk_cancel.html"),
        ),
        ("call_in.html", include_str!("templates/call_in.html")),
        (
            "call_in_form.html",
            include_str!("templates/call_in_form.html"),
        ),
    ] {
        // A template that does not parse is a bug caught by `every_template_renders`.
        if let Err(e) = env.add_template(name, text) {
            tracing::error!(template = name, error = %e, "admin UI template does not parse");
        }
    }
    env
});

/// The navigation and identity every page's layout shows, from the session.
fn chrome(s: &Session) -> Value {
    minijinja::context! {
        user => s.username,
        tenant => s.tenant,
        role => s.role.name(),
        csrf => s.csrf,
        nav_queues => s.may(Permission::ViewCallbacks),
        nav_callbacks => s.may(Permission::ListCallbacks),
        nav_config => s.may(Permission::ViewConfig),
        nav_developer => s.may(Permission::Developer),
    }
}

/// Renders `template` with the session's chrome and `ctx` (status 200).
pub fn page(template: &str, s: Option<&Session>, ctx: Value) -> Result<Response, UiError> {
    render(StatusCode::OK, template, s, ctx)
}

fn render(
    status: StatusCode,
    template: &str,
    s: Option<&Session>,
    ctx: Value,
) -> Result<Response, UiError> {
    let chrome = s.map_or_else(|| minijinja::context! {}, chrome);
    let html = TEMPLATES
        .get_template(template)
        .and_then(|t| t.render(minijinja::context! { s => chrome, ..ctx }))
        .map_err(|e| {
            UiError::Api(ApiError::internal(anyhow::anyhow!(
                "template {template}: {e}"
            )))
        })?;
    let mut response = (status, Html(html)).into_response();
    harden(&mut response);
    Ok(response)
}

/// Headers of every UI answer: no framing, no caching of pages, a strict CSP (no script at all).
fn harden(response: &mut Response) {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

/// Why a UI request was refused: the one mapping of UI failures onto pages.
#[derive(Debug)]
pub enum UiError {
    /// No live session: to the login page (303).
    Login,
    /// The role may not do this (403).
    Forbidden,
    /// A POST without the session's CSRF token (403).
    Csrf,
    /// Unusable input (400), with the reason.
    BadRequest(String),
    /// A domain or storage failure, shown with its public message and status.
    Api(ApiError),
}

impl From<ApiError> for UiError {
    fn from(e: ApiError) -> Self {
        UiError::Api(e)
    }
}

impl From<shared::Error> for UiError {
    fn from(e: shared::Error) -> Self {
        UiError::Api(e.into())
    }
}

impl From<deadpool_postgres::PoolError> for UiError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        UiError::Api(e.into())
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let html = WANTS_HTML.try_with(|h| *h).unwrap_or(false);
        let (status, message) = match self {
            UiError::Login if html => {
                return Redirect::to("/ges/login?expired=1").into_response();
            }
            UiError::Login => (401, "log in at /ges/login first".to_string()),
            UiError::Forbidden => (403, "Your role does not allow this.".to_string()),
            UiError::Csrf => (
                403,
                "This form has expired or did not come from this site: reload the page and try \
                 again."
                    .to_string(),
            ),
            UiError::BadRequest(m) => (400, m),
            UiError::Api(e) if !html => return e.into_response(),
            UiError::Api(e) => {
                if matches!(e, ApiError::Internal(_)) {
                    tracing::error!(error = ?e, "admin UI request failed");
                }
                (e.status_code(), e.public_message())
            }
        };
        if !html {
            return shared::http::envelope::respond::<()>(status, &message, None);
        }
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let ctx = minijinja::context! { status => status.as_u16(), message => message };
        match render(status, "error.html", None, ctx) {
            Ok(r) => r,
            Err(_) => (status, message).into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every template parses (a parse error would otherwise show only at the first render).
    #[test]
    fn every_template_parses() {
        for name in [
            "layout.html",
            "login.html",
            "error.html",
            "queues.html",
            "services.html",
            "number_rules.html",
            "capacity.html",
            "developer.html",
            "callbacks.html",
            "callback.html",
            "bulk_cancel.html",
            "call_in.html",
            "call_in_form.html",
        ] {
            assert!(TEMPLATES.get_template(name).is_ok(), "{name}");
        }
    }

    /// The pages shown without a session render (the layout without navigation).
    #[test]
    fn pages_without_a_session_render() {
        let ctx = minijinja::context! { csrf => "t", status => 403, message => "m" };
        assert!(page("login.html", None, ctx.clone()).is_ok());
        assert!(page("error.html", None, ctx).is_ok());
    }
}
