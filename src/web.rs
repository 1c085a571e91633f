//! The patient's and the doctor's pages (`/federation/...` on the public
//! listener) and WebFinger (`/.well-known/webfinger`).
//!
//! Server-rendered HTML with no external assets; everything works without
//! JavaScript except the doctor's optional camera scan. A request goes
//! through:
//!
//! ```text
//!  resolve(path) ─▶ Route ──(method allowed?)──▶ session cookie ─▶ Sessions::get
//!        │                                             │
//!        │   POST: form::check_origin, content type, body, Form::parse, CSRF token
//!        ▼                                             ▼
//!  404 page / 405                 patient::*, doctor::* ─▶ Backend (= federation::access::Access)
//!                                                      │
//!                          Page ─▶ response with CSP, nosniff, no-store, no referrer leak
//! ```
//!
//! * `session`: the cookie, the bounded expiring session map, CSRF tokens.
//! * `form`: the checks every POST passes, and form/query parsing.
//! * `html`: escaping, the page frame, formatters.
//! * `patient`, `doctor`, `record`, `transfer`: the pages themselves.
//!   The transfer's hand-over page (`/federation/transfer/{id}`) is the
//!   one page without a session: its POST passes the origin and body
//!   checks but has no CSRF token (no session to bind it to).
//! * `backend`: the [`Backend`] trait the pages call ([`Access`] implements it).
//!
//! Nothing here logs a password, a session id, a CSRF token, a request
//! code, an invitation or an upstream cookie; sign-ins and sign-outs are
//! logged at `info` with the username only.
//!
//! One [`Web`] must serve every worker of the public listener: the
//! sessions live in it.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use hyper::body::Incoming;
use uuid::Uuid;

use crate::admin::Metrics;
use crate::dns::{Clock, SystemClock};
use crate::federation::access::{Access, AccessError};
use crate::policy::RouteId;
use crate::proxy::body::ProxyBody;
use crate::proxy::ConnInfo;
use crate::store::UnixMillis;
use crate::upstream::{self, Secret, SignInError};

mod backend;
mod doctor;
pub mod form;
pub mod html;
mod patient;
mod record;
pub mod session;
mod transfer;

#[cfg(test)]
mod tests;

pub use backend::Backend;
use form::{Form, Refusal};
use html::{esc, Page};
use session::{CookieKind, Csrf, Session, SessionId, Sessions};

/// The path prefix of the pages.
pub const PREFIX: &str = "/federation/";
/// The WebFinger path (RFC 7033).
pub const WEBFINGER_PATH: &str = "/.well-known/webfinger";

/// The pages of one server.
pub struct Web {
    backend: Arc<dyn Backend>,
    sessions: Sessions,
    csrf: Csrf,
    max_grant: Duration,
    metrics: Arc<Metrics>,
}

/// A page route, from [`resolve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `/federation`: redirects to `/federation/`.
    Bare,
    /// `/federation/`: the sign-in form, or a redirect to the user's page.
    Index,
    SignIn,
    SignOut,
    Patient,
    NewInvitation,
    Approve(Uuid),
    Deny(Uuid),
    Revoke(Uuid),
    Doctor,
    StartRequest,
    DoctorRequest(Uuid),
    Record(Uuid, RouteId),
    Ask(Uuid),
    /// `POST /federation/patient/transfers/{id}/approve`: the patient
    /// approves a transfer request with the code and their browser's key.
    ApproveTransfer(Uuid),
    /// `POST /federation/doctor/transfers`: the doctor starts a transfer.
    StartTransfer,
    DoctorTransfer(Uuid),
    /// The kept bundle as JSON lines.
    BundleJsonl(Uuid),
    /// The kept bundle as a FHIR R4 collection Bundle.
    BundleFhir(Uuid),
    /// `/federation/transfer/{id}`: the new home's hand-over page, the
    /// only page without a session (the patient has no account yet).
    HandOver(Uuid),
    WebFinger,
}

/// Which methods a route takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Methods {
    /// GET and HEAD.
    Get,
    Post,
    /// A POST target that answers GET with a redirect to its form.
    PostOrRedirect(&'static str),
    /// A page that is also its own form's target.
    GetOrPost,
}

impl Route {
    fn methods(self) -> Methods {
        match self {
            Route::Bare
            | Route::Index
            | Route::Patient
            | Route::Doctor
            | Route::DoctorRequest(_)
            | Route::Record(..)
            | Route::DoctorTransfer(_)
            | Route::BundleJsonl(_)
            | Route::BundleFhir(_)
            | Route::WebFinger => Methods::Get,
            Route::SignIn => Methods::PostOrRedirect("/federation/"),
            Route::StartRequest | Route::StartTransfer => {
                Methods::PostOrRedirect("/federation/doctor")
            }
            Route::HandOver(_) => Methods::GetOrPost,
            Route::SignOut
            | Route::NewInvitation
            | Route::ApproveTransfer(_)
            | Route::Approve(_)
            | Route::Deny(_)
            | Route::Revoke(_)
            | Route::Ask(_) => Methods::Post,
        }
    }
}

/// A request id segment: a UUID in its canonical lower-case hyphenated
/// spelling only, so each resource has exactly one path.
fn uuid_segment(s: &str) -> Option<Uuid> {
    let id = Uuid::try_parse(s).ok()?;
    (id.hyphenated().to_string() == s).then_some(id)
}

/// The record parts the doctor's pages show (every GET route).
fn record_route(s: &str) -> Option<RouteId> {
    let route: RouteId = s.parse().ok()?;
    (route.rule().method == Method::GET).then_some(route)
}

/// The page route of `path`, exactly as sent (no decoding, no
/// normalisation: anything unusual is simply not a route).
pub fn resolve(path: &str) -> Option<Route> {
    if path == WEBFINGER_PATH {
        return Some(Route::WebFinger);
    }
    if path == "/federation" {
        return Some(Route::Bare);
    }
    let rest = path.strip_prefix(PREFIX)?;
    let segs: Vec<&str> = rest.split('/').collect();
    Some(match segs.as_slice() {
        [""] => Route::Index,
        ["sign-in"] => Route::SignIn,
        ["sign-out"] => Route::SignOut,
        ["patient"] => Route::Patient,
        ["patient", "invitation"] => Route::NewInvitation,
        ["patient", "requests", id, "approve"] => Route::Approve(uuid_segment(id)?),
        ["patient", "requests", id, "deny"] => Route::Deny(uuid_segment(id)?),
        ["patient", "grants", id, "revoke"] => Route::Revoke(uuid_segment(id)?),
        ["doctor"] => Route::Doctor,
        ["doctor", "requests"] => Route::StartRequest,
        ["doctor", "requests", id] => Route::DoctorRequest(uuid_segment(id)?),
        ["doctor", "requests", id, "record", part] => {
            Route::Record(uuid_segment(id)?, record_route(part)?)
        }
        ["doctor", "requests", id, "questions"] => Route::Ask(uuid_segment(id)?),
        ["patient", "transfers", id, "approve"] => Route::ApproveTransfer(uuid_segment(id)?),
        ["doctor", "transfers"] => Route::StartTransfer,
        ["doctor", "transfers", id] => Route::DoctorTransfer(uuid_segment(id)?),
        ["doctor", "transfers", id, "bundle.jsonl"] => Route::BundleJsonl(uuid_segment(id)?),
        ["doctor", "transfers", id, "bundle.fhir.json"] => Route::BundleFhir(uuid_segment(id)?),
        ["transfer", id] => Route::HandOver(uuid_segment(id)?),
        _ => return None,
    })
}

/// Milliseconds since the epoch, now.
fn now_ms() -> UnixMillis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// What one request carries into a page handler.
pub(crate) struct Ctx {
    tls: bool,
    listener: &'static str,
    /// The session cookie's id, whether or not a session has it.
    session_id: Option<SessionId>,
    session: Option<Arc<Session>>,
    /// The form of a POST that passed every check but the CSRF token's.
    form: Form,
}

/// A response under construction: status, body, and what goes around it.
pub(crate) struct Reply {
    status: StatusCode,
    body: Bytes,
    content_type: &'static str,
    location: Option<String>,
    cookies: Vec<String>,
    csp: Option<String>,
    extra: Vec<(HeaderName, HeaderValue)>,
}

impl Reply {
    /// An HTML page; `header` shows who is signed in.
    fn page(status: StatusCode, page: &Page, header: Option<&html::Header<'_>>) -> Reply {
        Reply {
            status,
            body: Bytes::from(page.render(header)),
            content_type: "text/html; charset=utf-8",
            location: None,
            cookies: Vec::new(),
            csp: Some(html::content_security_policy(page.script)),
            extra: Vec::new(),
        }
    }

    /// `303 See Other` to a path of this site.
    fn redirect(to: impl Into<String>) -> Reply {
        Reply {
            status: StatusCode::SEE_OTHER,
            body: Bytes::new(),
            content_type: "text/plain; charset=utf-8",
            location: Some(to.into()),
            cookies: Vec::new(),
            csp: None,
            extra: Vec::new(),
        }
    }

    fn json(status: StatusCode, content_type: &'static str, value: &serde_json::Value) -> Reply {
        Reply {
            status,
            body: Bytes::from(serde_json::to_vec(value).unwrap_or_default()),
            content_type,
            location: None,
            cookies: Vec::new(),
            csp: None,
            extra: Vec::new(),
        }
    }

    fn cookie(mut self, value: String) -> Reply {
        self.cookies.push(value);
        self
    }

    fn header(mut self, name: HeaderName, value: HeaderValue) -> Reply {
        self.extra.push((name, value));
        self
    }

    /// The response, with the headers every answer of the pages carries.
    fn into_response(self, head: bool) -> Response<ProxyBody> {
        let body = if head {
            ProxyBody::empty()
        } else {
            ProxyBody::full(self.body)
        };
        let mut resp = Response::new(body);
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        // `same-origin`, not `no-referrer`: under `no-referrer` browsers
        // send `Origin: null` on our own form posts (Fetch, "serializing
        // a request origin"), which the CSRF check must refuse. With
        // `same-origin` no referrer ever leaves this site either.
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        );
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        if let Some(csp) = self.csp.and_then(|c| HeaderValue::try_from(c).ok()) {
            h.insert(header::CONTENT_SECURITY_POLICY, csp);
        }
        if let Some(loc) = self.location.and_then(|l| HeaderValue::try_from(l).ok()) {
            h.insert(header::LOCATION, loc);
        }
        for c in self.cookies {
            if let Ok(v) = HeaderValue::try_from(c) {
                h.append(header::SET_COOKIE, v);
            }
        }
        for (name, value) in self.extra {
            h.insert(name, value);
        }
        resp
    }
}

/// A page with a title, a message and a way on.
fn simple_page(title: &str, text: &str, link: (&str, &str), error: bool) -> Page {
    let mut body = format!("<h1>{}</h1>", esc(title));
    html::message(&mut body, text, error);
    body.push_str(&format!(
        "<p><a href=\"{}\">{}</a></p>",
        esc(link.0),
        esc(link.1)
    ));
    Page::new(title, body)
}

fn not_found() -> Reply {
    Reply::page(
        StatusCode::NOT_FOUND,
        &simple_page(
            "Not found",
            "There is no such page here.",
            ("/federation/", "Go to your page"),
            true,
        ),
        None,
    )
}

fn method_not_allowed(allow: &'static str) -> Reply {
    Reply::page(
        StatusCode::METHOD_NOT_ALLOWED,
        &simple_page(
            "Not allowed",
            "This page cannot be used that way.",
            ("/federation/", "Go to your page"),
            true,
        ),
        None,
    )
    .header(header::ALLOW, HeaderValue::from_static(allow))
}

impl Web {
    /// The pages in front of `access`.
    pub fn new(access: Arc<Access>, cfg: &crate::config::Access, metrics: Arc<Metrics>) -> Web {
        Web::with_backend(access, cfg, metrics, Arc::new(SystemClock))
    }

    /// Like [`Web::new`] with any [`Backend`] and clock (tests).
    pub fn with_backend(
        backend: Arc<dyn Backend>,
        cfg: &crate::config::Access,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
    ) -> Web {
        Web {
            backend,
            sessions: Sessions::new(cfg.sessions, cfg.session_idle, cfg.session_max, clock),
            csrf: Csrf::random(),
            max_grant: cfg.max_grant,
            metrics,
        }
    }

    /// Whether the public listener should hand this path to the pages
    /// (`/federation`, `/federation/...`, `/.well-known/webfinger`).
    pub fn serves(path: &str) -> bool {
        path == "/federation" || path.starts_with(PREFIX) || path == WEBFINGER_PATH
    }

    /// Serves one request for a path [`Web::serves`] claims.
    pub async fn handle(&self, conn: &ConnInfo, req: Request<Incoming>) -> Response<ProxyBody> {
        // The listener's own filter normally refuses these first; the
        // pages never answer on a connection with ambiguous framing.
        if conn.check_framing().is_err() {
            let page = simple_page(
                "Bad request",
                "This request could not be read.",
                ("/federation/", "Go to your page"),
                true,
            );
            return Reply::page(StatusCode::BAD_REQUEST, &page, None).into_response(false);
        }
        self.handle_any(conn.tls, conn.listener, req).await
    }

    /// [`Web::handle`] for any request body (the unit tests send their own).
    pub async fn handle_any<B>(
        &self,
        tls: bool,
        listener: &'static str,
        req: Request<B>,
    ) -> Response<ProxyBody>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let head = req.method() == Method::HEAD;
        self.dispatch(tls, listener, req).await.into_response(head)
    }

    async fn dispatch<B>(&self, tls: bool, listener: &'static str, req: Request<B>) -> Reply
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = req.into_parts();
        let method = parts.method.clone();
        if !matches!(method, Method::GET | Method::HEAD | Method::POST) {
            return method_not_allowed("GET, HEAD, POST");
        }
        let Some(route) = resolve(parts.uri.path()) else {
            return not_found();
        };
        let post = method == Method::POST;
        match (route.methods(), post) {
            (Methods::Get, true) => return method_not_allowed("GET, HEAD"),
            (Methods::Post, false) => return method_not_allowed("POST"),
            (Methods::PostOrRedirect(to), false) => return Reply::redirect(to),
            _ => {}
        }
        if route == Route::WebFinger {
            return self.webfinger(parts.uri.query()).await;
        }
        if route == Route::Bare {
            return Reply::redirect(PREFIX);
        }
        if let Route::HandOver(id) = route {
            return self.hand_over_route(tls, listener, id, &parts, body).await;
        }

        let headers = &parts.headers;
        let session_id = session::read_cookie(headers, CookieKind::Session.name(tls));
        let session = match &session_id {
            Some(id) => self.sessions.get(id).await,
            None => None,
        };
        let mut ctx = Ctx {
            tls,
            listener,
            session_id,
            session,
            form: Form::default(),
        };

        if post {
            match self.check_post(&mut ctx, route, &parts, body).await {
                Ok(()) => {}
                Err(refusal) => return self.refused(&ctx, refusal),
            }
        } else if ctx.session.is_none()
            && route != Route::Index
            && headers
                .get("sec-fetch-site")
                .is_some_and(|v| v == "cross-site")
        {
            // A link from elsewhere: the browser held back our
            // SameSite=Strict cookie. Load the page again from here.
            return bounce(parts.uri.path());
        } else if ctx.session.is_none() && route != Route::Index {
            return Reply::redirect(PREFIX);
        }

        match route {
            Route::Index => self.index(&ctx, headers).await,
            Route::SignIn => self.sign_in(&mut ctx, headers).await,
            Route::SignOut => self.sign_out(&ctx).await,
            _ => {
                let Some(session) = ctx.session.clone() else {
                    // A valid form whose session has ended meanwhile.
                    return self.sign_in_page(
                        &ctx,
                        headers,
                        StatusCode::UNAUTHORIZED,
                        Some("Your session has ended. Please sign in again."),
                        "",
                    );
                };
                let reply = match route {
                    Route::Patient => self.patient(&ctx, &session, None).await,
                    Route::NewInvitation => self.new_invitation(&ctx, &session).await,
                    Route::Approve(id) => self.approve(&ctx, &session, id).await,
                    Route::Deny(id) => self.deny(&ctx, &session, id).await,
                    Route::Revoke(id) => self.revoke(&ctx, &session, id).await,
                    Route::Doctor => self.doctor(&ctx, &session, None).await,
                    Route::StartRequest => self.start_request(&ctx, &session).await,
                    Route::DoctorRequest(id) => self.doctor_request(&ctx, &session, id).await,
                    Route::Record(id, part) => self.record(&ctx, &session, id, part).await,
                    Route::Ask(id) => self.ask(&ctx, &session, id).await,
                    Route::ApproveTransfer(id) => self.approve_transfer(&ctx, &session, id).await,
                    Route::StartTransfer => self.start_transfer(&ctx, &session).await,
                    Route::DoctorTransfer(id) => self.doctor_transfer(&ctx, &session, id).await,
                    Route::BundleJsonl(id) => self.bundle_jsonl(&ctx, &session, id).await,
                    Route::BundleFhir(id) => self.bundle_fhir(&ctx, &session, id).await,
                    Route::Bare
                    | Route::Index
                    | Route::SignIn
                    | Route::SignOut
                    | Route::HandOver(_)
                    | Route::WebFinger => Ok(not_found()),
                };
                match reply {
                    Ok(r) => r,
                    Err(e) => self.failed(&ctx, headers, &session, e).await,
                }
            }
        }
    }

    /// The checks every POST passes (see [`form`]), the CSRF token last.
    async fn check_post<B>(
        &self,
        ctx: &mut Ctx,
        route: Route,
        parts: &http::request::Parts,
        body: B,
    ) -> Result<(), Refusal>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let scheme = if ctx.tls { "https" } else { "http" };
        let host = crate::proxy::framing::request_host(parts.version, &parts.uri, &parts.headers)
            .map_err(|_| Refusal::WrongOrigin)?;
        form::check_origin(&parts.headers, scheme, host)?;
        form::check_content_type(&parts.headers)?;
        let raw = form::read_body(&parts.headers, body).await?;
        ctx.form = Form::parse(&raw)?;
        let token = ctx.form.get("csrf").unwrap_or("");
        // The sign-in form is bound to the sign-in cookie (there is no
        // session yet); every other form to the session.
        let (kind, id) = if route == Route::SignIn {
            let id = session::read_cookie(&parts.headers, CookieKind::SignIn.name(ctx.tls));
            (CookieKind::SignIn, id)
        } else {
            (CookieKind::Session, ctx.session_id.clone())
        };
        match id {
            Some(id) if self.csrf.verify(kind, &id, token) => Ok(()),
            _ => Err(Refusal::BadToken),
        }
    }

    /// The page for a refused POST.
    fn refused(&self, ctx: &Ctx, refusal: Refusal) -> Reply {
        self.metrics.rejected(ctx.listener, refusal.reason());
        tracing::info!(reason = refusal.reason(), "page form refused: {refusal}");
        let (status, title, text) = match refusal {
            r if r.is_csrf() => (
                StatusCode::FORBIDDEN,
                "Form not accepted",
                "For your safety this form was not accepted: forms are only taken from \
                 this site's own pages, opened in this browser with cookies allowed. \
                 Nothing was changed. Go back to the page, reload it, and try again.",
            ),
            Refusal::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "Form too large",
                "The form sent was too large. Nothing was changed.",
            ),
            Refusal::NotForm => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Form not understood",
                "The form could not be read. Nothing was changed.",
            ),
            _ => (
                StatusCode::BAD_REQUEST,
                "Form not understood",
                "The form could not be read. Nothing was changed.",
            ),
        };
        Reply::page(
            status,
            &simple_page(title, text, ("/federation/", "Back to your page"), true),
            None,
        )
    }

    /// The CSRF token for the session's forms.
    fn token(&self, ctx: &Ctx) -> String {
        match &ctx.session_id {
            Some(id) => self.csrf.token(CookieKind::Session, id),
            None => String::new(),
        }
    }

    /// A page for a signed-in user, with the header and sign-out button.
    fn user_page(&self, ctx: &Ctx, session: &Session, status: StatusCode, page: &Page) -> Reply {
        let csrf = self.token(ctx);
        let header = html::Header {
            display_name: &session.user.display_name,
            username: &session.user.username,
            csrf: &csrf,
        };
        Reply::page(status, page, Some(&header))
    }

    /// An action failed: the page says why. A session that access.md
    /// forgot (restart) ends here too, and the user signs in again.
    async fn failed(
        &self,
        ctx: &Ctx,
        headers: &http::HeaderMap,
        session: &Session,
        e: AccessError,
    ) -> Reply {
        if let AccessError::SessionEnded = e {
            tracing::info!(user = %session.user.username, "access.md session ended; signing out");
            if let Some(id) = &ctx.session_id {
                self.sessions.remove(id).await;
            }
            return self
                .sign_in_page(
                    ctx,
                    headers,
                    StatusCode::UNAUTHORIZED,
                    Some(&e.message()),
                    "",
                )
                .cookie(session::clear_cookie(CookieKind::Session, ctx.tls));
        }
        log_access_error(&e);
        let home = home_of(session);
        let page = simple_page(
            "That did not work",
            &e.message(),
            (home, "Back to your page"),
            true,
        );
        self.user_page(ctx, session, e.status(), &page)
    }

    // ------------------------------------------------------------ sign-in

    /// `GET /federation/`.
    async fn index(&self, ctx: &Ctx, headers: &http::HeaderMap) -> Reply {
        match &ctx.session {
            Some(s) => Reply::redirect(home_of(s)),
            None => self.sign_in_page(ctx, headers, StatusCode::OK, None, ""),
        }
    }

    /// The sign-in form, bound to the sign-in cookie (set here if the
    /// browser has none).
    fn sign_in_page(
        &self,
        ctx: &Ctx,
        headers: &http::HeaderMap,
        status: StatusCode,
        error: Option<&str>,
        username: &str,
    ) -> Reply {
        let existing = session::read_cookie(headers, CookieKind::SignIn.name(ctx.tls));
        let (id, fresh) = match existing {
            Some(id) => (id, false),
            None => (SessionId::random(), true),
        };
        let token = self.csrf.token(CookieKind::SignIn, &id);
        let mut body = String::from("<h1>Sign in</h1>");
        if let Some(e) = error {
            html::message(&mut body, e, true);
        }
        body.push_str(
            "<p>Use your access.md account, as in the access.md app. \
             mdgate does not keep your password.</p>\
             <form method=\"post\" action=\"/federation/sign-in\">",
        );
        html::csrf_field(&mut body, &token);
        body.push_str(&format!(
            "<label for=\"username\">Username</label>\
             <input id=\"username\" name=\"username\" autocomplete=\"username\" \
             autocapitalize=\"none\" spellcheck=\"false\" required value=\"{}\">\
             <label for=\"password\">Password</label>\
             <input id=\"password\" name=\"password\" type=\"password\" \
             autocomplete=\"current-password\" required>\
             <button type=\"submit\">Sign in</button></form>",
            esc(username)
        ));
        let reply = Reply::page(status, &Page::new("Sign in", body), None);
        if fresh {
            reply.cookie(session::set_cookie(CookieKind::SignIn, ctx.tls, &id))
        } else {
            reply
        }
    }

    /// `POST /federation/sign-in`.
    async fn sign_in(&self, ctx: &mut Ctx, headers: &http::HeaderMap) -> Reply {
        let username = ctx.form.non_empty("username").unwrap_or("").to_owned();
        let password = ctx.form.take("password").map(Secret::new);
        let (Some(password), false) = (password, username.is_empty()) else {
            return self.sign_in_page(
                ctx,
                headers,
                StatusCode::UNPROCESSABLE_ENTITY,
                Some("Please type your username and your password."),
                &username,
            );
        };
        if username.len() > 256 {
            return self.sign_in_page(
                ctx,
                headers,
                StatusCode::UNPROCESSABLE_ENTITY,
                Some("That username is too long."),
                "",
            );
        }
        let (status, text) = match self.backend.sign_in(&username, password).await {
            Ok(user) => {
                if !matches!(user.role, upstream::Role::Patient | upstream::Role::Doctor) {
                    tracing::info!(user = %username, "page sign-in refused: not a patient or doctor");
                    (
                        StatusCode::FORBIDDEN,
                        "These pages are for patients and doctors. Administrators use access.md itself.",
                    )
                } else {
                    // Signing in again replaces the session (a new id).
                    if let Some(old) = &ctx.session_id {
                        self.sessions.remove(old).await;
                    }
                    let home = if user.role == upstream::Role::Patient {
                        "/federation/patient"
                    } else {
                        "/federation/doctor"
                    };
                    tracing::info!(user = %username, "signed in to the pages");
                    let id = self.sessions.create(user).await;
                    return Reply::redirect(home)
                        .cookie(session::set_cookie(CookieKind::Session, ctx.tls, &id))
                        .cookie(session::clear_cookie(CookieKind::SignIn, ctx.tls));
                }
            }
            Err(SignInError::WrongCredentials) => {
                tracing::info!(user = %username, "page sign-in refused: wrong username or password");
                (
                    StatusCode::UNAUTHORIZED,
                    "The username or the password is wrong. Please try again.",
                )
            }
            Err(SignInError::DuplicateAccount) => {
                tracing::warn!(user = %username, "page sign-in refused: duplicate username upstream");
                (
                    StatusCode::CONFLICT,
                    "Several accounts have this username, so none can sign in. \
                     Please tell the server's administrator.",
                )
            }
            Err(SignInError::UnknownRole) => {
                tracing::warn!(user = %username, "page sign-in refused: unknown role");
                (
                    StatusCode::FORBIDDEN,
                    "This account's kind is not one these pages know. \
                     Please tell the server's administrator.",
                )
            }
            Err(e @ SignInError::Unavailable(_)) => {
                tracing::warn!(user = %username, error = %e, "page sign-in failed");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The record server (access.md) is not answering right now. \
                     Please try again in a minute.",
                )
            }
            Err(SignInError::Internal) => {
                tracing::error!(user = %username, "page sign-in failed: mdgate could not record it");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong on this server. Please try again in a minute, \
                     or tell the administrator.",
                )
            }
            Err(e @ SignInError::Upstream(_)) => {
                tracing::warn!(user = %username, error = %e, "page sign-in failed");
                (
                    StatusCode::BAD_GATEWAY,
                    "The record server (access.md) answered something unexpected. \
                     Please try again in a minute, or tell the administrator.",
                )
            }
        };
        self.sign_in_page(ctx, headers, status, Some(text), &username)
    }

    /// `POST /federation/sign-out`.
    async fn sign_out(&self, ctx: &Ctx) -> Reply {
        if let (Some(id), Some(s)) = (&ctx.session_id, &ctx.session) {
            tracing::info!(user = %s.user.username, "signed out of the pages");
            self.sessions.remove(id).await;
        }
        Reply::redirect(PREFIX).cookie(session::clear_cookie(CookieKind::Session, ctx.tls))
    }

    // ---------------------------------------------------------- webfinger

    /// `GET /.well-known/webfinger?resource=...` (RFC 7033).
    async fn webfinger(&self, query: Option<&str>) -> Reply {
        let cors = |r: Reply| {
            r.header(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            )
        };
        let json = "application/jrd+json";
        let problem = |status, reason: &str| {
            cors(Reply::json(
                status,
                "application/json",
                &serde_json::json!({ "error": reason }),
            ))
        };
        let Ok(pairs) = form::pairs(query.unwrap_or("").as_bytes()) else {
            return problem(StatusCode::BAD_REQUEST, "malformed_query");
        };
        let mut resources = pairs.iter().filter(|(n, _)| n == "resource");
        let resource = match (resources.next(), resources.next()) {
            (Some((_, r)), None) if !r.is_empty() => r,
            (Some(_), Some(_)) => return problem(StatusCode::BAD_REQUEST, "several_resources"),
            _ => return problem(StatusCode::BAD_REQUEST, "missing_resource"),
        };
        let rels: Vec<&str> = pairs
            .iter()
            .filter(|(n, _)| n == "rel")
            .map(|(_, v)| v.as_str())
            .collect();
        match self.backend.webfinger(resource).await {
            Ok(Some(mut jrd)) => {
                if !rels.is_empty() {
                    if let Some(links) = jrd.get_mut("links").and_then(|l| l.as_array_mut()) {
                        links.retain(|l| {
                            l.get("rel")
                                .and_then(|r| r.as_str())
                                .is_some_and(|r| rels.contains(&r))
                        });
                    }
                }
                cors(Reply::json(StatusCode::OK, json, &jrd))
            }
            Ok(None) => problem(StatusCode::NOT_FOUND, "unknown_resource"),
            Err(e) => {
                log_access_error(&e);
                problem(e.status(), "unavailable")
            }
        }
    }
}

/// The page of the user's role.
fn home_of(session: &Session) -> &'static str {
    if session.user.role == upstream::Role::Patient {
        "/federation/patient"
    } else {
        "/federation/doctor"
    }
}

/// A page that loads `path` again from this site, so the browser sends
/// the SameSite=Strict cookie it held back on a cross-site navigation.
fn bounce(path: &str) -> Reply {
    let mut page = simple_page("Opening", "Opening your page…", (path, "Continue"), false);
    page.refresh = Some(0);
    page.refresh_to = Some(path.to_owned());
    Reply::page(StatusCode::OK, &page, None)
}

/// Logs an access-flow failure with a level that fits who caused it.
fn log_access_error(e: &AccessError) {
    match e {
        AccessError::NotFound
        | AccessError::NotYours
        | AccessError::WrongRole
        | AccessError::WrongCode { .. }
        | AccessError::Closed { .. }
        | AccessError::BadInput(_)
        | AccessError::SessionEnded => tracing::info!(error = %e, "page action refused"),
        AccessError::Unreachable { .. }
        | AccessError::UpstreamUnavailable
        | AccessError::Peer { .. }
        | AccessError::Internal => tracing::warn!(error = %e, "page action failed"),
    }
}
