//! [`AccessMd`]: one exchange with access.md, for mdgate's own requests.
//!
//! Not the pass-through proxy (that streams clients' requests in
//! `crate::proxy`): these are small requests mdgate makes itself, with a
//! body held whole (`Full<Bytes>`), a response body read whole up to
//! [`MAX_BODY`] and gunzipped when the upstream compressed it (it does for
//! bodies of 1500 bytes and more when mdgate sends `Accept-Encoding: gzip`,
//! which it does only with `[upstream] request_gzip`). The whole exchange, body included, has the configured response
//! timeout.
//!
//! A response becomes a [`Reply`]: status, content type and body. The
//! `JSESSIONID` of a `Set-Cookie` is kept apart and visible only inside
//! this module tree (logins take it), so no upstream cookie can travel on
//! to a client through a `Reply`. Requests carry a `Cookie` only when the
//! caller passes a [`SessionCookie`], and login never does (§1.1: a login
//! sent with a session would authenticate that session and return none).

use std::cell::RefCell;
use std::io::Read as _;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;

use super::error::{describe_body, UpstreamError, NULL_JSON_MESSAGE};
use super::model::{Credentials, User};
use super::secret::{Secret, SessionCookie};
use crate::config;

/// The most mdgate reads of one response body, before and after
/// decompression. The largest routes are full histories (R22 embeds the
/// patient in every measurement, about 600 bytes each).
pub const MAX_BODY: usize = 32 * 1024 * 1024;

/// The route of [`AccessMd::login`].
pub const LOGIN_ROUTE: &str = "R1 POST /api/login";

static USER_AGENT: HeaderValue =
    HeaderValue::from_static(concat!("mdgate/", env!("CARGO_PKG_VERSION")));
static GZIP: HeaderValue = HeaderValue::from_static("gzip");
static JSON: HeaderValue = HeaderValue::from_static("application/json");
/// The `Cookie` header's prefix before the session value.
const COOKIE_NAME: &[u8] = b"JSESSIONID=";

/// A typed client for the access.md routes mdgate uses. Cheap to clone:
/// clones share their connection pools.
///
/// Each thread that sends gets a pool of its own, built at its first
/// request. A pooled connection is driven by a task on the runtime that
/// opened it; shared between mdgate's single-threaded workers, a request
/// from one worker would hop to the thread of whichever worker opened the
/// connection and back, two wake-ups of another thread per call.
#[derive(Clone)]
pub struct AccessMd {
    pools: Arc<PoolSettings>,
    authority: Authority,
    timeout: Duration,
    /// `[upstream] request_gzip`.
    gzip: bool,
}

/// One request mdgate sends: method, origin-form path, optional JSON body,
/// and the route template used in errors and logs.
#[derive(Debug, Clone)]
pub struct ApiRequest {
    route: &'static str,
    method: Method,
    path: PathAndQuery,
    body: Option<Bytes>,
}

/// A response, body read whole and decompressed.
#[derive(Clone)]
pub struct Reply {
    route: &'static str,
    status: StatusCode,
    content_type: Option<HeaderValue>,
    body: Bytes,
    /// The `JSESSIONID` the upstream handed out, if any. Never leaves the
    /// `upstream` module.
    pub(super) session: Option<SessionCookie>,
}

/// A successful login: who the account is and its new session.
#[derive(Debug)]
pub struct Login {
    pub user: User,
    pub session: SessionCookie,
}

/// The three kinds of upstream 500 (§2, §7.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 500N: the Kotlin `ctx.json(null)` message (R20, R31 "not linked",
    /// R4 "no doctor").
    NullJson,
    /// 500E: empty body, the exception handler itself crashed (a Java NPE;
    /// the other per-patient routes' "not linked").
    Empty,
    /// Any other message (500T transaction failures, non-unique results,
    /// class casts).
    Message,
}

impl ApiRequest {
    /// A request without a body. `path` must be an origin-form path.
    pub fn new(
        route: &'static str,
        method: Method,
        path: &str,
    ) -> Result<ApiRequest, UpstreamError> {
        let path = origin_form(route, path)?;
        Ok(ApiRequest {
            route,
            method,
            path,
            body: None,
        })
    }

    /// A request with a JSON body, sent as `application/json`.
    pub fn with_json(
        route: &'static str,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<ApiRequest, UpstreamError> {
        let mut request = ApiRequest::new(route, method, path)?;
        request.body = Some(body);
        Ok(request)
    }

    /// A body-less request on a path mdgate built itself from a literal
    /// and numeric ids, so it is always a valid origin-form path.
    pub(crate) fn fixed(route: &'static str, method: Method, path: String) -> ApiRequest {
        // Invariant: callers pass ASCII literals joined with decimal ids
        // (`ops` only), which always form a valid origin-form path.
        #[allow(clippy::expect_used)]
        let path = PathAndQuery::try_from(path).expect("literal path with numeric ids");
        ApiRequest {
            route,
            method,
            path,
            body: None,
        }
    }

    pub(crate) fn json_body(mut self, body: Bytes) -> ApiRequest {
        self.body = Some(body);
        self
    }

    pub fn route(&self) -> &'static str {
        self.route
    }

    pub fn method(&self) -> &Method {
        &self.method
    }

    pub fn path(&self) -> &str {
        self.path.as_str()
    }

    /// The JSON body, if any.
    pub fn body(&self) -> Option<&Bytes> {
        self.body.as_ref()
    }
}

fn origin_form(route: &'static str, path: &str) -> Result<PathAndQuery, UpstreamError> {
    let invalid = |what: &str| UpstreamError::InvalidRequest {
        route,
        what: what.to_owned(),
    };
    if !path.starts_with('/') || path.starts_with("//") {
        return Err(invalid("the path must start with a single '/'"));
    }
    // `;` would be a Jetty path parameter (`;jsessionid=` session tracking).
    if path.contains([';', '#']) {
        return Err(invalid("the path must not contain ';' or '#'"));
    }
    PathAndQuery::try_from(path).map_err(|_| invalid("not a valid request path"))
}

impl Reply {
    /// A reply as if received, for tests of the route rules.
    #[cfg(test)]
    pub(crate) fn for_test(
        route: &'static str,
        status: u16,
        content_type: Option<&'static str>,
        body: &'static [u8],
    ) -> Reply {
        Reply {
            route,
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::IM_A_TEAPOT),
            content_type: content_type.map(HeaderValue::from_static),
            body: Bytes::from_static(body),
            session: None,
        }
    }

    pub fn route(&self) -> &'static str {
        self.route
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The `Content-Type` as sent.
    pub fn content_type(&self) -> Option<&HeaderValue> {
        self.content_type.as_ref()
    }

    /// The body, decompressed.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Which kind of 500 this is (meaningful when the status is 500).
    pub fn fault(&self) -> Fault {
        if self.body.is_empty() {
            Fault::Empty
        } else if self.body.as_ref() == NULL_JSON_MESSAGE.as_bytes() {
            Fault::NullJson
        } else {
            Fault::Message
        }
    }

    /// Whether the body is declared as JSON.
    pub fn is_json(&self) -> bool {
        self.content_type
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
    }

    /// [`UpstreamError::Failed`] for this reply.
    pub fn failed(&self) -> UpstreamError {
        UpstreamError::Failed {
            route: self.route,
            status: self.status,
            detail: describe_body(&self.body),
        }
    }
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reply")
            .field("route", &self.route)
            .field("status", &self.status)
            .field("content_type", &self.content_type)
            .field("body_len", &self.body.len())
            .field("session", &self.session.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

/// How a thread's pool is built (the upstream's settings).
struct PoolSettings(config::Upstream);

type PooledClient = Client<HttpConnector, Full<Bytes>>;

thread_local! {
    /// This thread's pools, one per [`AccessMd`] (by its settings).
    static POOLS: RefCell<Vec<(Weak<PoolSettings>, PooledClient)>> =
        const { RefCell::new(Vec::new()) };
}

impl AccessMd {
    /// A client for the configured upstream; its pools are built by
    /// [`crate::proxy::upstream_client`].
    pub fn new(cfg: &config::Upstream) -> AccessMd {
        AccessMd {
            pools: Arc::new(PoolSettings(cfg.clone())),
            authority: cfg.authority.clone(),
            timeout: cfg.response_timeout,
            gzip: cfg.request_gzip,
        }
    }

    /// This thread's pool (a clone of its handle), built on first use.
    /// Pools of clients that are gone are dropped on the way.
    fn client(&self) -> PooledClient {
        POOLS.with(|pools| {
            let mut pools = pools.borrow_mut();
            if let Some((_, client)) = pools
                .iter()
                .find(|(owner, _)| std::ptr::eq(owner.as_ptr(), Arc::as_ptr(&self.pools)))
            {
                return client.clone();
            }
            pools.retain(|(owner, _)| owner.strong_count() > 0);
            let client = crate::proxy::upstream_client(&self.pools.0);
            pools.push((Arc::downgrade(&self.pools), client.clone()));
            client
        })
    }

    /// Sends one request, with `session` as its only cookie (none when
    /// `None`), and reads the whole response. Every status is an `Ok`
    /// here; the routes in `ops` decide what each means.
    pub async fn send(
        &self,
        request: &ApiRequest,
        session: Option<&SessionCookie>,
    ) -> Result<Reply, UpstreamError> {
        let route = request.route;
        let http_request = self.build(request, session)?;
        let exchange = async {
            let response = self
                .client()
                .request(http_request)
                .await
                .map_err(|source| UpstreamError::Unreachable { route, source })?;
            let (parts, body) = response.into_parts();
            let raw = Limited::new(body, MAX_BODY)
                .collect()
                .await
                .map_err(|e| match e.downcast::<http_body_util::LengthLimitError>() {
                    Ok(_) => UpstreamError::TooLarge {
                        route,
                        limit: MAX_BODY,
                    },
                    Err(_) => UpstreamError::Interrupted { route },
                })?
                .to_bytes();
            Ok::<_, UpstreamError>((parts, raw))
        };
        let (parts, raw) = match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(UpstreamError::Timeout {
                    route,
                    after: self.timeout,
                })
            }
        };
        let body = decode_body(route, &parts.headers, raw)?;
        let reply = Reply {
            route,
            status: parts.status,
            content_type: parts.headers.get(header::CONTENT_TYPE).cloned(),
            body,
            session: session_from(&parts.headers),
        };
        tracing::debug!(
            upstream.route = route,
            http.status = reply.status.as_u16(),
            body.len = reply.body.len(),
            "access.md exchange"
        );
        Ok(reply)
    }

    /// Sends one request and returns the response with its body unread,
    /// for lists too long to hold whole (a record's every vitals
    /// measurement). Asks for no compression, so the body is the JSON
    /// itself; the timeout covers the response head only.
    pub async fn open(
        &self,
        request: &ApiRequest,
        session: Option<&SessionCookie>,
    ) -> Result<http::Response<hyper::body::Incoming>, UpstreamError> {
        let route = request.route;
        let mut http_request = self.build(request, session)?;
        http_request.headers_mut().remove(header::ACCEPT_ENCODING);
        match tokio::time::timeout(self.timeout, self.client().request(http_request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(source)) => Err(UpstreamError::Unreachable { route, source }),
            Err(_) => Err(UpstreamError::Timeout {
                route,
                after: self.timeout,
            }),
        }
    }

    /// R1: logs in with no cookie, so a successful answer always carries a
    /// fresh session. 403 is [`UpstreamError::CredentialsRejected`]; the
    /// 500 of a duplicated username is [`UpstreamError::DuplicateUsername`].
    ///
    /// The password is only borrowed for the request body.
    pub async fn login(&self, username: &str, password: &Secret) -> Result<Login, UpstreamError> {
        let body = serde_json::to_vec(&Credentials {
            username,
            password: password.expose(),
        })
        .map_err(|_| UpstreamError::InvalidRequest {
            route: LOGIN_ROUTE,
            what: "the credentials cannot be written as JSON".to_owned(),
        })?;
        let request = ApiRequest::fixed(LOGIN_ROUTE, Method::POST, "/api/login".to_owned())
            .json_body(Bytes::from(body));
        let reply = self.send(&request, None).await?;
        match reply.status {
            StatusCode::OK => {
                let user: User = super::ops::parse_json(&reply)?;
                let session = reply
                    .session
                    .ok_or(UpstreamError::NoSessionCookie { route: LOGIN_ROUTE })?;
                Ok(Login { user, session })
            }
            // Key on the status only: the body is the HTML login page.
            StatusCode::FORBIDDEN => Err(UpstreamError::CredentialsRejected { route: LOGIN_ROUTE }),
            StatusCode::BAD_REQUEST => Err(UpstreamError::BadRequest {
                route: LOGIN_ROUTE,
                detail: describe_body(&reply.body),
            }),
            StatusCode::INTERNAL_SERVER_ERROR
                if reply
                    .body
                    .starts_with(b"query did not return a unique result") =>
            {
                Err(UpstreamError::DuplicateUsername { route: LOGIN_ROUTE })
            }
            _ => Err(reply.failed()),
        }
    }

    fn build(
        &self,
        request: &ApiRequest,
        session: Option<&SessionCookie>,
    ) -> Result<Request<Full<Bytes>>, UpstreamError> {
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(Scheme::HTTP);
        uri.authority = Some(self.authority.clone());
        uri.path_and_query = Some(request.path.clone());
        let uri = Uri::from_parts(uri).map_err(|_| UpstreamError::InvalidRequest {
            route: request.route,
            what: "cannot form the upstream URI".to_owned(),
        })?;
        let body = request.body.clone().unwrap_or_default();
        let mut http_request = Request::new(Full::new(body));
        *http_request.method_mut() = request.method.clone();
        *http_request.uri_mut() = uri;
        let headers = http_request.headers_mut();
        headers.insert(header::USER_AGENT, USER_AGENT.clone());
        if self.gzip {
            headers.insert(header::ACCEPT_ENCODING, GZIP.clone());
        }
        if request.body.is_some() {
            headers.insert(header::CONTENT_TYPE, JSON.clone());
        }
        if let Some(session) = session {
            // Joined by hand: `format!` cost 0.2 µs of every federated read.
            let secret = session.expose().as_bytes();
            let mut value = Vec::with_capacity(COOKIE_NAME.len() + secret.len());
            value.extend_from_slice(COOKIE_NAME);
            value.extend_from_slice(secret);
            let mut cookie = HeaderValue::from_maybe_shared(Bytes::from(value)).map_err(|_| {
                UpstreamError::InvalidRequest {
                    route: request.route,
                    what: "the session cookie cannot be sent".to_owned(),
                }
            })?;
            cookie.set_sensitive(true);
            headers.insert(header::COOKIE, cookie);
        }
        Ok(http_request)
    }
}

impl std::fmt::Debug for AccessMd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessMd")
            .field("authority", &self.authority)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The `JSESSIONID` value of the response's `Set-Cookie` headers.
pub(crate) fn session_from(headers: &HeaderMap) -> Option<SessionCookie> {
    headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|cookie| {
            let (name, rest) = cookie.split_once('=')?;
            if name.trim() != "JSESSIONID" {
                return None;
            }
            let value = rest.split(';').next()?.trim();
            SessionCookie::from_value(value)
        })
}

/// Undoes `Content-Encoding: gzip`, bounded by [`MAX_BODY`]. Any other
/// encoding is refused: mdgate asked for gzip only.
pub(crate) fn decode_body(
    route: &'static str,
    headers: &HeaderMap,
    raw: Bytes,
) -> Result<Bytes, UpstreamError> {
    let encodings: Vec<&str> = headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty() && !e.eq_ignore_ascii_case("identity"))
        .collect();
    match encodings.as_slice() {
        [] => Ok(raw),
        [gzip] if gzip.eq_ignore_ascii_case("gzip") => {
            let mut out = Vec::new();
            // One byte over the limit tells "too large" from "exactly full".
            let limit = u64::try_from(MAX_BODY)
                .unwrap_or(u64::MAX)
                .saturating_add(1);
            flate2::read::GzDecoder::new(&raw[..])
                .take(limit)
                .read_to_end(&mut out)
                .map_err(|_| UpstreamError::Encoding {
                    route,
                    what: "the gzip body does not decode",
                })?;
            if out.len() > MAX_BODY {
                return Err(UpstreamError::TooLarge {
                    route,
                    limit: MAX_BODY,
                });
            }
            Ok(Bytes::from(out))
        }
        _ => Err(UpstreamError::Encoding {
            route,
            what: "a content encoding other than gzip",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn gzip(data: &[u8]) -> Bytes {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        encoder.write_all(data).expect("compress");
        Bytes::from(encoder.finish().expect("compress"))
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                header::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(value).expect("value"),
            );
        }
        map
    }

    #[test]
    fn gzip_bodies_are_decoded() {
        let data = b"[1,2,3]".repeat(1000);
        let h = headers(&[("content-encoding", "gzip")]);
        assert_eq!(
            decode_body("r", &h, gzip(&data)).expect("decoded"),
            &data[..]
        );
        let plain = headers(&[]);
        assert_eq!(
            decode_body("r", &plain, Bytes::from_static(b"x")).expect("as is"),
            "x"
        );
        let identity = headers(&[("content-encoding", "identity")]);
        assert_eq!(
            decode_body("r", &identity, Bytes::from_static(b"x")).expect("as is"),
            "x"
        );
    }

    #[test]
    fn bad_or_unknown_encodings_are_errors() {
        let h = headers(&[("content-encoding", "gzip")]);
        let e = decode_body("r", &h, Bytes::from_static(b"not gzip")).expect_err("bad gzip");
        assert!(matches!(e, UpstreamError::Encoding { .. }), "{e}");
        let h = headers(&[("content-encoding", "br")]);
        let e = decode_body("r", &h, Bytes::from_static(b"x")).expect_err("br");
        assert!(matches!(e, UpstreamError::Encoding { .. }), "{e}");
        let h = headers(&[("content-encoding", "gzip, gzip")]);
        assert!(decode_body("r", &h, gzip(b"x")).is_err());
    }

    #[test]
    fn gzip_bombs_stop_at_the_limit() {
        let data = vec![0u8; MAX_BODY + 1];
        let h = headers(&[("content-encoding", "gzip")]);
        let e = decode_body("r", &h, gzip(&data)).expect_err("too large");
        assert!(matches!(e, UpstreamError::TooLarge { .. }), "{e}");
    }

    #[test]
    fn the_session_comes_from_set_cookie_only() {
        let h = headers(&[
            ("set-cookie", "OTHER=1; Path=/"),
            ("set-cookie", "JSESSIONID=node0abc1.node0; Path=/; HttpOnly"),
        ]);
        assert_eq!(
            session_from(&h).expect("session").expose(),
            "node0abc1.node0"
        );
        assert!(session_from(&headers(&[("cookie", "JSESSIONID=x")])).is_none());
        assert!(session_from(&headers(&[("set-cookie", "JSESSIONID=; Path=/")])).is_none());
    }

    #[test]
    fn the_session_goes_as_the_only_cookie_marked_sensitive() {
        let md = AccessMd::new(&config::Upstream {
            authority: http::uri::Authority::from_static("127.0.0.1:8080"),
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(1),
            pool_idle_timeout: Duration::from_secs(1),
            pool_max_idle: 1,
            request_gzip: false,
            federation_account: None,
            enrolled: Vec::new(),
        });
        let api = ApiRequest::new("r", Method::GET, "/api/x").expect("request");
        let session = SessionCookie::from_value("node0abc1.node0").expect("cookie");
        let built = md.build(&api, Some(&session)).expect("built");
        let cookies: Vec<_> = built.headers().get_all(header::COOKIE).iter().collect();
        assert_eq!(cookies, ["JSESSIONID=node0abc1.node0"]);
        assert!(cookies[0].is_sensitive());
        assert_eq!(built.uri(), "http://127.0.0.1:8080/api/x");
        let anonymous = md.build(&api, None).expect("built");
        assert!(anonymous.headers().get(header::COOKIE).is_none());
    }

    #[test]
    fn request_paths_must_be_plain_origin_form() {
        for bad in ["api/x", "//evil/x", "/api/x;jsessionid=1", "/a#b", "/a b"] {
            assert!(ApiRequest::new("r", Method::GET, bad).is_err(), "{bad}");
        }
        let ok = ApiRequest::new("r", Method::GET, "/api/symptom/codes?language=ar").expect("ok");
        assert_eq!(ok.path(), "/api/symptom/codes?language=ar");
    }

    fn reply(status: u16, body: &'static [u8]) -> Reply {
        Reply::for_test("r", status, None, body)
    }

    #[test]
    fn faults_are_told_apart() {
        assert_eq!(reply(500, b"").fault(), Fault::Empty);
        assert_eq!(
            reply(500, NULL_JSON_MESSAGE.as_bytes()).fault(),
            Fault::NullJson
        );
        assert_eq!(reply(500, b"ARJUNA016053: x").fault(), Fault::Message);
    }

    #[test]
    fn reply_debug_hides_the_session() {
        let mut r = reply(200, b"{}");
        r.session = SessionCookie::from_value("node0secret1.node0");
        let debug = format!("{r:?}");
        assert!(!debug.contains("secret"), "{debug}");
    }
}
