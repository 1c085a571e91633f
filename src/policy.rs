//! Policy: may this federation request, under this grant, reach the
//! upstream, and as what exactly?
//!
//! mdgate forwards a remote doctor's request through an upstream doctor
//! account that reaches *all* of that account's patients, so the upstream
//! enforces nothing per patient; this module does. It is pure decision
//! code: [`Policy::decide`] takes the request as received ([`RequestFacts`])
//! and the verified grant ([`GrantFacts`]) and returns a [`Permit`] saying
//! what to send upstream, or a [`Deny`] with a stable machine-readable
//! reason. No I/O, no clock, no async.
//!
//! # The federation data routes
//!
//! `{fid}` is the patient's federation id (a lower-case hyphenated UUID);
//! `{id}` is the upstream numeric patient id the grant maps to. The route
//! names are the ones `[policy]` in the configuration uses.
//!
//! | route | method | federation path | upstream | least role |
//! |---|---|---|---|---|
//! | `record` | GET | `/federation/v1/records/{fid}` | `GET /api/doctor/patient/{id}` (R20) | viewer |
//! | `profile` | GET | `/federation/v1/records/{fid}/profile` | `GET /api/doctor/patient/{id}/profile` (R21) | viewer |
//! | `vitals` | GET | `/federation/v1/records/{fid}/vitals` | `GET /api/doctor/patient/{id}/vitals` (R22) | viewer |
//! | `symptoms` | GET | `/federation/v1/records/{fid}/symptoms` | `GET /api/doctor/patient/{id}/symptom` (R23) | viewer |
//! | `answers` | GET | `/federation/v1/records/{fid}/answers` | `GET /api/doctor/patient/{id}/answer` (R25) | viewer |
//! | `questions` | GET | `/federation/v1/records/{fid}/questions` | `GET /api/doctor/patient/{id}/question` (R27) | viewer |
//! | `ask_question` | POST | `/federation/v1/records/{fid}/questions` | `POST /api/doctor/patient/{id}/question` (R28), body whitelisted | contributor |
//!
//! `contributor` has everything `viewer` has. Everything else is denied: no
//! federation route leads to the destructive or lying routes (R29, R30), to
//! link changes (R19), notifications (R3), the cross-patient aggregates
//! (R14–R18), admin or patient routes, or HTML pages. The upstream path is
//! built from the table and the grant alone, never from the client's path.
//!
//! # How a request is decided
//!
//! The checks run in this order; the first failure is the reason:
//!
//! 1. method-override headers (`X-HTTP-Method-Override`, `X-HTTP-Method`,
//!    `X-Method-Override`) and path-override headers (`X-Original-URL`,
//!    `X-Rewrite-URL`, `X-Original-URI`), in any case, `_` read as `-`;
//! 2. the raw target, which must already be canonical (see `target`): no
//!    escapes, dot segments, `//`, trailing `/`, `;`, `\`, control or
//!    non-ASCII bytes, case variants, non-canonical UUIDs, or query;
//! 3. the federation id must be the grant's patient;
//! 4. the method must be the route's (HEAD is not GET);
//! 5. the grant's role must reach the route under the configured policy;
//! 6. a GET must carry no body;
//! 7. the grant must name a usable upstream id (a positive number).
//!
//! The configured policy can only narrow the table: a role is given a
//! subset of the routes whose least role it meets, and `contributor`
//! always keeps every route `viewer` has ([`Policy::new`]).
//!
//! The permit's body rule tells the caller what to do with the body: for
//! `ask_question`, run it through [`filter_question`] and forward only the
//! rebuilt bytes.

use std::fmt;
use std::str::FromStr;

use http::{HeaderMap, Method, StatusCode};
use uuid::Uuid;

mod body;
mod route;
mod target;

#[cfg(test)]
mod tests;

pub use body::{
    filter_question, BodyError, MAX_EPOCH_MILLIS, MAX_QUESTION_BODY, MAX_QUESTION_CHARS,
    MAX_RECURRENCES, QUESTION_TYPES,
};
pub use route::{RouteId, RouteSet, Rule, UnknownRoute, RECORDS_PREFIX, RULES, UPSTREAM_PREFIX};
pub use target::MAX_TARGET_BYTES;

/// Headers that ask a server to treat the request as another method.
const METHOD_OVERRIDE_HEADERS: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Headers that ask a server to route by another path than the target.
const PATH_OVERRIDE_HEADERS: [&str; 3] = ["x-original-url", "x-rewrite-url", "x-original-uri"];

/// The role a grant gives its doctor. `Contributor > Viewer`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads the patient's record.
    Viewer,
    /// Reads the record and asks the patient questions.
    Contributor,
}

impl Role {
    /// Every role, lowest first.
    pub const ALL: [Role; 2] = [Role::Viewer, Role::Contributor];

    /// The name used in grants and in `[policy]`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Contributor => "contributor",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not a role.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role; the roles are viewer and contributor")]
pub struct UnknownRole;

impl FromStr for Role {
    type Err = UnknownRole;

    /// Exact, case-sensitive names only.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or(UnknownRole)
    }
}

/// The request as received on the federation listener.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub method: &'a Method,
    /// The request target exactly as received: path and query, no
    /// decoding (`uri.path_and_query()` bytes, or `:path` on HTTP/2).
    pub target: &'a [u8],
    /// The request headers; only their names are read, and the values of
    /// `Content-Length` (to tell an empty body from a body).
    pub headers: &'a HeaderMap,
    /// Whether the request carries, or may carry, a body: `false` only
    /// when the body is known to be empty (e.g. `http_body::Body::
    /// is_end_stream`). Framing headers are checked as well.
    pub has_body: bool,
}

/// What a verified, unexpired, unrevoked grant says (checking that is the
/// caller's job).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantFacts {
    /// The patient the grant names, by federation id.
    pub patient_fid: Uuid,
    /// The upstream (access.md) id of that patient.
    pub upstream_patient_id: i64,
    pub role: Role,
}

/// What may be done with a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyRule {
    /// No body: none was sent, and none is forwarded.
    None,
    /// Forward only what [`filter_question`] rebuilds from the body.
    QuestionWhitelist,
}

/// A permitted request: exactly what to send upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permit {
    /// The route that matched (for logs, metrics and the audit log).
    pub route: RouteId,
    pub upstream_method: Method,
    /// One of the table's templates with the grant's upstream id filled in.
    pub upstream_path_and_query: String,
    pub body: BodyRule,
}

/// A refused request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("federation request denied: {reason}")]
pub struct Deny {
    pub reason: DenyReason,
    /// The route, when the path named one (for logs).
    pub route: Option<RouteId>,
}

/// What made a path ambiguous (all reported as `ambiguous_path`; the
/// detail goes to the log only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathFlaw {
    #[error("percent escape")]
    PercentEscape,
    #[error("backslash")]
    Backslash,
    #[error("`;` path parameter")]
    PathParameter,
    #[error("fragment")]
    Fragment,
    #[error("control byte")]
    ControlByte,
    #[error("non-ASCII byte")]
    NonAscii,
    #[error("character not allowed in a request target")]
    InvalidCharacter,
    #[error("not an origin-form target")]
    NotOriginForm,
    #[error("empty segment (`//`)")]
    EmptySegment,
    #[error("trailing slash")]
    TrailingSlash,
    #[error("dot segment")]
    DotSegment,
    #[error("case variant of a route segment")]
    CaseVariant,
    #[error("federation id not in lower-case hyphenated form")]
    NonCanonicalId,
}

/// Why a request was refused. [`DenyReason::label`] is the stable
/// machine-readable form; `Display` is for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DenyReason {
    #[error("no federation route has this path")]
    NotARoute,
    #[error("the route does not take this method")]
    MethodNotAllowed,
    #[error("the grant's role does not reach this route")]
    RoleTooLow,
    #[error("the path names another patient than the grant")]
    WrongPatient,
    #[error("ambiguous path: {0}")]
    AmbiguousPath(PathFlaw),
    #[error("request target longer than {MAX_TARGET_BYTES} bytes")]
    PathTooLong,
    #[error("the route takes no query")]
    QueryNotAllowed,
    #[error("method-override header present")]
    MethodOverride,
    #[error("path-override header present")]
    PathOverride,
    #[error("the route takes no request body")]
    BodyNotAllowed,
    #[error("the grant's upstream patient id is not a positive number")]
    GrantInvalid,
}

impl DenyReason {
    /// The stable machine-readable label (response bodies, metrics).
    pub const fn label(&self) -> &'static str {
        match self {
            DenyReason::NotARoute => "not_a_route",
            DenyReason::MethodNotAllowed => "method_not_allowed",
            DenyReason::RoleTooLow => "role_too_low",
            DenyReason::WrongPatient => "wrong_patient",
            DenyReason::AmbiguousPath(_) => "ambiguous_path",
            DenyReason::PathTooLong => "path_too_long",
            DenyReason::QueryNotAllowed => "query_not_allowed",
            DenyReason::MethodOverride => "method_override",
            DenyReason::PathOverride => "path_override",
            DenyReason::BodyNotAllowed => "body_not_allowed",
            DenyReason::GrantInvalid => "grant_invalid",
        }
    }

    /// The HTTP status to answer with.
    pub const fn status(&self) -> StatusCode {
        match self {
            DenyReason::NotARoute => StatusCode::NOT_FOUND,
            DenyReason::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            DenyReason::RoleTooLow | DenyReason::WrongPatient => StatusCode::FORBIDDEN,
            DenyReason::AmbiguousPath(_)
            | DenyReason::QueryNotAllowed
            | DenyReason::MethodOverride
            | DenyReason::PathOverride
            | DenyReason::BodyNotAllowed => StatusCode::BAD_REQUEST,
            DenyReason::PathTooLong => StatusCode::URI_TOO_LONG,
            // A stored grant with no usable upstream id is mdgate's fault.
            DenyReason::GrantInvalid => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// A configured policy that would widen the route table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("route `{route}` needs role {needs}; it cannot be given to {role}")]
    AboveRole {
        route: RouteId,
        role: Role,
        needs: Role,
    },
    #[error("contributor must keep every route viewer has; add `{route}`")]
    ContributorBelowViewer { route: RouteId },
}

/// Which routes each role reaches: the table's defaults, or a narrowing of
/// them from `[policy]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    viewer: RouteSet,
    contributor: RouteSet,
}

impl Default for Policy {
    /// The route table as it stands.
    fn default() -> Self {
        Policy {
            viewer: RouteSet::up_to(Role::Viewer),
            contributor: RouteSet::up_to(Role::Contributor),
        }
    }
}

impl Policy {
    /// A policy giving each role the routes listed. Refused if a role gets
    /// a route above it, or `contributor` lacks a route `viewer` has.
    pub fn new(viewer: RouteSet, contributor: RouteSet) -> Result<Policy, PolicyError> {
        for (role, routes) in [(Role::Viewer, viewer), (Role::Contributor, contributor)] {
            if let Some(route) = routes.iter().find(|r| r.rule().min_role > role) {
                return Err(PolicyError::AboveRole {
                    route,
                    role,
                    needs: route.rule().min_role,
                });
            }
        }
        if let Some(route) = viewer.iter().find(|r| !contributor.contains(*r)) {
            return Err(PolicyError::ContributorBelowViewer { route });
        }
        Ok(Policy {
            viewer,
            contributor,
        })
    }

    /// The routes `role` reaches.
    pub fn routes(&self, role: Role) -> RouteSet {
        match role {
            Role::Viewer => self.viewer,
            Role::Contributor => self.contributor,
        }
    }

    /// Decides one request under one grant.
    pub fn decide(&self, req: &RequestFacts<'_>, grant: &GrantFacts) -> Result<Permit, Deny> {
        let deny = |reason, route| Err(Deny { reason, route });
        if has_header(req.headers, &METHOD_OVERRIDE_HEADERS) {
            return deny(DenyReason::MethodOverride, None);
        }
        if has_header(req.headers, &PATH_OVERRIDE_HEADERS) {
            return deny(DenyReason::PathOverride, None);
        }
        let target = match target::parse(req.target) {
            Ok(target) => target,
            Err(reason) => return deny(reason, None),
        };
        if target.fid != grant.patient_fid {
            return deny(DenyReason::WrongPatient, None);
        }
        // The parser only returns suffixes some rule has, so `None` here
        // means the method is wrong for an existing path.
        let Some(rule) = RULES
            .iter()
            .find(|r| r.federation_suffix == target.suffix && r.method == req.method)
        else {
            return deny(DenyReason::MethodNotAllowed, None);
        };
        let route = Some(rule.id);
        if !self.routes(grant.role).contains(rule.id) {
            return deny(DenyReason::RoleTooLow, route);
        }
        if rule.body == BodyRule::None && declares_body(req) {
            return deny(DenyReason::BodyNotAllowed, route);
        }
        if grant.upstream_patient_id <= 0 {
            return deny(DenyReason::GrantInvalid, route);
        }
        Ok(Permit {
            route: rule.id,
            upstream_method: rule.upstream_method.clone(),
            upstream_path_and_query: rule.id.upstream_path(grant.upstream_patient_id),
            body: rule.body,
        })
    }
}

/// Whether any header name equals one of `names` (lower case, `-`), read
/// case-insensitively and with `_` as `-`.
fn has_header(headers: &HeaderMap, names: &[&str]) -> bool {
    headers.keys().any(|name| {
        let name = name.as_str().as_bytes();
        names.iter().any(|wanted| {
            name.len() == wanted.len()
                && name.iter().zip(wanted.bytes()).all(|(&a, b)| {
                    let a = if a == b'_' { b'-' } else { a };
                    a.eq_ignore_ascii_case(&b)
                })
        })
    })
}

/// Whether the request carries a body, by the caller's knowledge or by its
/// framing headers (any `Transfer-Encoding`, a `Content-Length` other than
/// a single `0`).
fn declares_body(req: &RequestFacts<'_>) -> bool {
    if req.has_body || req.headers.contains_key(http::header::TRANSFER_ENCODING) {
        return true;
    }
    let mut lengths = req.headers.get_all(http::header::CONTENT_LENGTH).iter();
    match (lengths.next(), lengths.next()) {
        (None, _) => false,
        (Some(length), None) => length.as_bytes() != b"0",
        (Some(_), Some(_)) => true,
    }
}
