//! The federation route table: the only (method, path) pairs a grant can
//! ever open, what each becomes upstream, and the least role it needs.
//!
//! Everything in this file is static data. [`RULES`] is the single source
//! of truth: the target parser matches against its federation suffixes,
//! `decide` copies the upstream method and suffix out of it, and the config
//! loader names routes by its [`RouteId`]s. The upstream path is therefore
//! always one of seven fixed templates with the grant's numeric patient id
//! filled in; no byte of the client's path is ever copied upstream.

use std::fmt;
use std::str::FromStr;

use http::Method;

use super::{BodyRule, Role};

/// The fixed prefix of every federation data route, up to the patient's
/// federation id.
pub const RECORDS_PREFIX: &str = "/federation/v1/records/";

/// The upstream prefix of every doctor-side patient route (§2.4 of the
/// upstream document), up to the numeric patient id.
pub const UPSTREAM_PREFIX: &str = "/api/doctor/patient/";

/// A federation data route, by the name the `[policy]` table uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RouteId {
    /// `GET /federation/v1/records/{fid}` → R20, the patient with profile.
    Record,
    /// `GET …/{fid}/profile` → R21.
    Profile,
    /// `GET …/{fid}/vitals` → R22.
    Vitals,
    /// `GET …/{fid}/symptoms` → R23 (unarchived symptoms).
    Symptoms,
    /// `GET …/{fid}/answers` → R25 (unarchived answers).
    Answers,
    /// `GET …/{fid}/questions` → R27 (all questions).
    Questions,
    /// `POST …/{fid}/questions` → R28 (ask the patient a question).
    AskQuestion,
}

/// One row of the route table.
#[derive(Debug)]
pub struct Rule {
    pub id: RouteId,
    /// The method the peer must use (HEAD is not GET).
    pub method: Method,
    /// What follows `/federation/v1/records/{fid}`: empty or `/name`.
    pub federation_suffix: &'static str,
    pub upstream_method: Method,
    /// What follows `/api/doctor/patient/{id}` upstream.
    pub upstream_suffix: &'static str,
    /// The route's number in the upstream document's route table.
    pub upstream_ref: &'static str,
    /// The least grant role that may use the route by default; a
    /// configuration can narrow a role but never lower this.
    pub min_role: Role,
    /// What may travel in the request body.
    pub body: BodyRule,
}

/// The route table. Adding a row here is the only way to open a route.
pub static RULES: [Rule; 7] = [
    Rule {
        id: RouteId::Record,
        method: Method::GET,
        federation_suffix: "",
        upstream_method: Method::GET,
        upstream_suffix: "",
        upstream_ref: "R20",
        min_role: Role::Viewer,
        body: BodyRule::None,
    },
    Rule {
        id: RouteId::Profile,
        method: Method::GET,
        federation_suffix: "/profile",
        upstream_method: Method::GET,
        upstream_suffix: "/profile",
        upstream_ref: "R21",
        min_role: Role::Viewer,
        body: BodyRule::None,
    },
    Rule {
        id: RouteId::Vitals,
        method: Method::GET,
        federation_suffix: "/vitals",
        upstream_method: Method::GET,
        upstream_suffix: "/vitals",
        upstream_ref: "R22",
        min_role: Role::Viewer,
        body: BodyRule::None,
    },
    Rule {
        id: RouteId::Symptoms,
        method: Method::GET,
        federation_suffix: "/symptoms",
        upstream_method: Method::GET,
        upstream_suffix: "/symptom",
        upstream_ref: "R23",
        min_role: Role::Viewer,
        body: BodyRule::None,
    },
    Rule {
        id: RouteId::Answers,
        method: Method::GET,
        federation_suffix: "/answers",
        upstream_method: Method::GET,
        upstream_suffix: "/answer",
        upstream_ref: "R25",
        min_role: Role::Viewer,
        body: BodyRule::None,
    },
    Rule {
        id: RouteId::Questions,
        method: Method::GET,
        federation_suffix: "/questions",
        upstream_method: Method::GET,
        upstream_suffix: "/question",
        upstream_ref: "R27",
        min_role: Role::Viewer,
        body: BodyRule::None,
    },
    Rule {
        id: RouteId::AskQuestion,
        method: Method::POST,
        federation_suffix: "/questions",
        upstream_method: Method::POST,
        upstream_suffix: "/question",
        upstream_ref: "R28",
        min_role: Role::Contributor,
        body: BodyRule::QuestionWhitelist,
    },
];

impl RouteId {
    /// Every route, in table order.
    pub const ALL: [RouteId; 7] = [
        RouteId::Record,
        RouteId::Profile,
        RouteId::Vitals,
        RouteId::Symptoms,
        RouteId::Answers,
        RouteId::Questions,
        RouteId::AskQuestion,
    ];

    /// The name used in `[policy]` and in logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            RouteId::Record => "record",
            RouteId::Profile => "profile",
            RouteId::Vitals => "vitals",
            RouteId::Symptoms => "symptoms",
            RouteId::Answers => "answers",
            RouteId::Questions => "questions",
            RouteId::AskQuestion => "ask_question",
        }
    }

    /// This route's row of [`RULES`].
    pub fn rule(self) -> &'static Rule {
        // RULES lists the routes in `ALL` order, one row each (a test
        // checks this), so the discriminant is the row index.
        &RULES[self as usize]
    }

    /// The canonical federation path of this route for one patient: the
    /// only bytes `decide` accepts for it.
    pub fn federation_path(self, fid: &uuid::Uuid) -> String {
        format!(
            "{RECORDS_PREFIX}{}{}",
            fid.hyphenated(),
            self.rule().federation_suffix
        )
    }

    /// The upstream path and query this route is forwarded to.
    pub fn upstream_path(self, upstream_patient_id: i64) -> String {
        format!(
            "{UPSTREAM_PREFIX}{upstream_patient_id}{}",
            self.rule().upstream_suffix
        )
    }

    const fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl fmt::Display for RouteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not a route of the table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown route `{name}`; the routes are {}", route_names())]
pub struct UnknownRoute {
    /// The name as given (at most 64 characters of it).
    pub name: String,
}

fn route_names() -> String {
    RouteId::ALL
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

impl FromStr for RouteId {
    type Err = UnknownRoute;

    /// Exact, case-sensitive names only.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RouteId::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRoute {
                name: s.chars().take(64).collect(),
            })
    }
}

/// A set of routes (a bit set over [`RouteId`]).
#[derive(Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct RouteSet(u8);

impl RouteSet {
    /// No route.
    pub const fn empty() -> Self {
        RouteSet(0)
    }

    /// The routes whose least role is at most `role`: the default set of
    /// `role`, and the widest one it may be configured to.
    pub fn up_to(role: Role) -> Self {
        RULES
            .iter()
            .filter(|rule| rule.min_role <= role)
            .map(|rule| rule.id)
            .collect()
    }

    pub fn insert(&mut self, route: RouteId) {
        self.0 |= route.bit();
    }

    pub const fn contains(self, route: RouteId) -> bool {
        self.0 & route.bit() != 0
    }

    pub const fn is_subset(self, other: RouteSet) -> bool {
        self.0 & !other.0 == 0
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The routes in table order.
    pub fn iter(self) -> impl Iterator<Item = RouteId> {
        RouteId::ALL.into_iter().filter(move |r| self.contains(*r))
    }
}

impl FromIterator<RouteId> for RouteSet {
    fn from_iter<I: IntoIterator<Item = RouteId>>(iter: I) -> Self {
        let mut set = RouteSet::empty();
        for route in iter {
            set.insert(route);
        }
        set
    }
}

impl fmt::Debug for RouteSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.iter().map(RouteId::as_str))
            .finish()
    }
}
