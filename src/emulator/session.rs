//! Jetty 9.4's default in-memory sessions, as access.md ends up using them.
//!
//! A session is an id mapped to the user snapshot stored at login (or to
//! nothing, for the empty sessions the access manager creates as a side
//! effect of any protected request). Sessions never expire; a restart drops
//! them all. The requested id comes from the first `JSESSIONID` cookie that
//! names a live session, else from a `;jsessionid=` path parameter (Jetty's
//! URL session tracking). New ids look like Jetty's:
//! `node0<base36 random><base36 random><counter>.node0`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};

use http::HeaderMap;
use rand::Rng;

use super::model::Id;
use super::routes::Role;

/// The session cookie's name.
pub(crate) const COOKIE_NAME: &str = "JSESSIONID";

/// The `user` session attribute: the acting identity, fixed at login.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SessionUser {
    pub(crate) id: Id,
    pub(crate) role: Role,
}

/// A live session the request named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Live {
    pub(crate) id: String,
    pub(crate) user: Option<SessionUser>,
}

/// All sessions of one server run.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    map: RwLock<HashMap<String, Option<SessionUser>>>,
    /// Jetty's static id counter; it starts again at 0 after a restart.
    counter: AtomicU64,
}

impl Sessions {
    /// The live session a request names, if any (`checkRequestedSessionId`).
    pub(crate) fn lookup(&self, headers: &HeaderMap, path: &str) -> Option<Live> {
        let map = self.map.read().unwrap_or_else(PoisonError::into_inner);
        if map.is_empty() {
            return None;
        }
        let live = |id: &str| {
            map.get(id).map(|user| Live {
                id: id.to_owned(),
                user: *user,
            })
        };
        cookie_ids(headers)
            .find_map(live)
            .or_else(|| url_session_id(path).and_then(live))
    }

    /// Creates an empty session (`getSession(true)` without a live one).
    pub(crate) fn create(&self) -> String {
        let counter = self.counter.fetch_add(1, Ordering::Relaxed);
        let id = new_session_id(&mut rand::thread_rng(), counter);
        self.map
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.clone(), None);
        id
    }

    /// Stores the login snapshot in a session.
    pub(crate) fn authenticate(&self, id: &str, user: SessionUser) {
        self.map
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.to_owned(), Some(user));
    }

    /// Drops every session, as a server restart does.
    pub(crate) fn clear(&self) {
        self.map
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.counter.store(0, Ordering::Relaxed);
    }

    /// The number of live sessions.
    pub(crate) fn len(&self) -> usize {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// The values of `JSESSIONID` cookies, in header order (quotes removed).
fn cookie_ids(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            (name.trim() == COOKIE_NAME).then(|| {
                let value = value.trim();
                value
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(value)
            })
        })
}

/// A `;jsessionid=` path parameter, ended by `;`, `#`, `?` or `/`.
fn url_session_id(path: &str) -> Option<&str> {
    const PREFIX: &str = ";jsessionid=";
    let start = path.find(PREFIX)? + PREFIX.len();
    let rest = &path[start..];
    let end = rest.find([';', '#', '?', '/']).unwrap_or(rest.len());
    Some(&rest[..end])
}

/// A Jetty 9.4 `DefaultSessionIdManager` id with worker name `node0`, as
/// sent in the cookie (the "extended" id with the `.node0` suffix).
pub(crate) fn new_session_id(rng: &mut impl Rng, counter: u64) -> String {
    // Jetty takes two non-negative random longs.
    let r0 = rng.gen::<u64>() >> 1;
    let r1 = rng.gen::<u64>() >> 1;
    format!("node0{}{}{counter}.node0", base36(r0), base36(r1))
}

/// `Long.toString(n, 36)` for a non-negative value.
fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut buf = Vec::with_capacity(13);
    loop {
        buf.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    buf.reverse();
    String::from_utf8_lossy(&buf).into_owned()
}

/// The `Set-Cookie` value for a new session. `Secure` is never added: the
/// emulator only speaks plain HTTP.
pub(crate) fn set_cookie_value(id: &str) -> String {
    format!("{COOKIE_NAME}={id}; Path=/; HttpOnly")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use rand::SeedableRng;

    #[test]
    fn ids_look_like_jetty() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let id = new_session_id(&mut rng, 17);
        let core = id
            .strip_prefix("node0")
            .unwrap()
            .strip_suffix(".node0")
            .unwrap();
        assert!(core.ends_with("17"));
        assert!(core.len() > 10);
        assert!(core
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()));
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(i64::MAX as u64), "1y2p0ij32e8e7");
    }

    #[test]
    fn first_live_cookie_wins_then_url_parameter() {
        let sessions = Sessions::default();
        let a = sessions.create();
        let b = sessions.create();
        sessions.authenticate(
            &b,
            SessionUser {
                id: 5,
                role: Role::Doctor,
            },
        );
        let mut headers = HeaderMap::new();
        headers.append(
            http::header::COOKIE,
            HeaderValue::from_str(&format!("x=1; JSESSIONID=stale; JSESSIONID=\"{b}\"")).unwrap(),
        );
        let live = sessions.lookup(&headers, "/api/doctor/feed").unwrap();
        assert_eq!(live.id, b);
        assert_eq!(
            live.user,
            Some(SessionUser {
                id: 5,
                role: Role::Doctor
            })
        );

        let path = format!("/api/doctor/patient/3;jsessionid={a}/profile");
        let live = sessions.lookup(&HeaderMap::new(), &path).unwrap();
        assert_eq!((live.id.as_str(), live.user), (a.as_str(), None));

        sessions.clear();
        assert_eq!(sessions.len(), 0);
        assert!(sessions.lookup(&headers, "/").is_none());
        assert!(sessions.create().ends_with("0.node0"), "counter restarts");
    }

    #[test]
    fn cookie_format() {
        assert_eq!(
            set_cookie_value("node0x0.node0"),
            "JSESSIONID=node0x0.node0; Path=/; HttpOnly"
        );
    }
}
