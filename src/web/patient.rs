//! The patient's page (`/federation/patient`) and its actions: a QR code
//! to show the doctor, pending requests approved with the doctor's code
//! (or denied), the grants with revoke buttons, and the access log. A
//! pending request of kind transfer gets its own card (see
//! [`super::transfer`]), and the patient's moves away are listed.
//!
//! The page reloads itself every [`WAIT_REFRESH`] seconds only while
//! nothing is pending and the QR code shown is live (the patient is
//! waiting for the doctor's request to arrive); once a request is shown it
//! stops, so typing a code is never interrupted. A Refresh link is always
//! there.

use std::fmt::Write as _;
use std::time::Duration;

use http::StatusCode;
use uuid::Uuid;

use super::html::{self, esc, Page};
use super::session::{Session, ShownInvitation};
use super::{now_ms, Ctx, Reply, Web};
use crate::federation::access::{AccessError, NewInvitation, PatientOverview};
use crate::federation::transfer::TransferView;
use crate::policy::Role;
use crate::store::{AuditEntry, Grant, RequestKind};

/// Seconds between reloads while the patient waits for a request.
pub const WAIT_REFRESH: u32 = 15;
/// An invitation this close to its end is replaced before it is shown.
const INVITATION_MARGIN_MS: i64 = 60_000;
/// The longest code accepted in the form (codes are 10 symbols, typed
/// with spaces or dashes).
pub(crate) const MAX_CODE_LEN: usize = 64;

/// Grant lengths offered, shortest first; a list is cut at the limit and
/// ends with the limit itself.
pub const DURATION_CHOICES: [Duration; 10] = [
    Duration::from_secs(3_600),
    Duration::from_secs(4 * 3_600),
    Duration::from_secs(86_400),
    Duration::from_secs(3 * 86_400),
    Duration::from_secs(7 * 86_400),
    Duration::from_secs(14 * 86_400),
    Duration::from_secs(30 * 86_400),
    Duration::from_secs(90 * 86_400),
    Duration::from_secs(180 * 86_400),
    Duration::from_secs(365 * 86_400),
];

/// The choices up to `limit`, longest first, `limit` itself included.
pub fn duration_choices(limit: Duration) -> Vec<Duration> {
    let mut v: Vec<Duration> = DURATION_CHOICES
        .iter()
        .copied()
        .filter(|d| *d < limit)
        .collect();
    if !limit.is_zero() {
        v.push(limit);
    }
    v.reverse();
    v
}

/// An error to show on the page, next to one request when it is about one.
pub(crate) struct Problem {
    pub request: Option<Uuid>,
    pub text: String,
    pub status: StatusCode,
}

impl Web {
    /// `GET /federation/patient`, or the page again with `problem`.
    pub(crate) async fn patient(
        &self,
        ctx: &Ctx,
        session: &Session,
        problem: Option<Problem>,
    ) -> Result<Reply, AccessError> {
        if session.user.role != crate::upstream::Role::Patient {
            return Ok(wrong_page(self, ctx, session, "/federation/doctor"));
        }
        let overview = self.backend.patient_overview(&session.user).await?;
        let transfers = self.backend.patient_transfers(&session.user).await?;
        let now = now_ms();
        // The first visit of a session gets a code at once; an expired one
        // is not replaced behind the patient's back (an open tab would
        // otherwise mint codes all day): the page offers "New code".
        let shown = lock(&session.invitation).clone();
        let (invitation, invitation_error) = match shown {
            // Single use: once a request came in after it was shown, the
            // code is spent (the doctor who scanned it has asked).
            Some(s) if used_since(&overview, s.minted_at) => (
                None,
                Some(
                    "Your code was used by a doctor's request. Each code works once: \
                     press New code for another doctor."
                        .to_owned(),
                ),
            ),
            Some(s) if s.invitation.expires_at > now + INVITATION_MARGIN_MS => {
                (Some(s.invitation), None)
            }
            Some(_) => (
                None,
                Some(
                    "Your code has expired. Press New code to show a doctor a fresh one."
                        .to_owned(),
                ),
            ),
            None => match self.backend.new_invitation(&session.user).await {
                Ok(i) => {
                    *lock(&session.invitation) = Some(ShownInvitation {
                        invitation: i.clone(),
                        minted_at: now,
                    });
                    (Some(i), None)
                }
                Err(AccessError::SessionEnded) => return Err(AccessError::SessionEnded),
                Err(e) => {
                    super::log_access_error(&e);
                    (None, Some(e.message()))
                }
            },
        };
        let notice = session.take_notice();
        let view = View {
            overview: &overview,
            transfers: &transfers,
            invitation: invitation.as_ref(),
            invitation_error: invitation_error.as_deref(),
            csrf: &self.token(ctx),
            notice: notice.as_deref(),
            problem: problem.as_ref(),
            now,
        };
        let page = view.render();
        let status = problem.map_or(StatusCode::OK, |p| p.status);
        Ok(self.user_page(ctx, session, status, &page))
    }

    /// `POST /federation/patient/invitation`: a new QR code.
    pub(crate) async fn new_invitation(
        &self,
        _ctx: &Ctx,
        session: &Session,
    ) -> Result<Reply, AccessError> {
        let invitation = self.backend.new_invitation(&session.user).await?;
        *lock(&session.invitation) = Some(ShownInvitation {
            invitation,
            minted_at: now_ms(),
        });
        session.set_notice("Here is a new code. The previous one no longer matters.");
        Ok(Reply::redirect("/federation/patient"))
    }

    /// `POST /federation/patient/requests/{id}/approve`.
    pub(crate) async fn approve(
        &self,
        ctx: &Ctx,
        session: &Session,
        id: Uuid,
    ) -> Result<Reply, AccessError> {
        let form = &ctx.form;
        let code = form.non_empty("code").unwrap_or("");
        let checked = if code.is_empty() {
            Err(AccessError::BadInput("type the code the doctor shows you"))
        } else if code.len() > MAX_CODE_LEN {
            Err(AccessError::BadInput("the code is too long"))
        } else {
            parse_choices(form.non_empty("role"), form.non_empty("duration"))
        };
        let result = match checked {
            Ok((role, duration)) => {
                self.backend
                    .approve(&session.user, id, code, role, duration)
                    .await
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(grant) => {
                let role = grant
                    .role
                    .parse::<Role>()
                    .map(html::role)
                    .unwrap_or("use your record");
                session.set_notice(format!(
                    "Approved. {} can now {role} until {}. You can revoke this at any time below.",
                    grant.doctor,
                    html::time(grant.expires_at)
                ));
                Ok(Reply::redirect("/federation/patient"))
            }
            Err(AccessError::SessionEnded) => Err(AccessError::SessionEnded),
            Err(e) => {
                super::log_access_error(&e);
                let problem = Problem {
                    request: Some(id),
                    text: e.message(),
                    status: e.status(),
                };
                self.patient(ctx, session, Some(problem)).await
            }
        }
    }

    /// `POST /federation/patient/requests/{id}/deny`.
    pub(crate) async fn deny(
        &self,
        ctx: &Ctx,
        session: &Session,
        id: Uuid,
    ) -> Result<Reply, AccessError> {
        match self.backend.deny(&session.user, id).await {
            Ok(()) => {
                session.set_notice("Denied. The doctor's server is told; nothing was shared.");
                Ok(Reply::redirect("/federation/patient"))
            }
            Err(AccessError::SessionEnded) => Err(AccessError::SessionEnded),
            Err(e) => {
                super::log_access_error(&e);
                let problem = Problem {
                    request: Some(id),
                    text: e.message(),
                    status: e.status(),
                };
                self.patient(ctx, session, Some(problem)).await
            }
        }
    }

    /// `POST /federation/patient/grants/{id}/revoke`.
    pub(crate) async fn revoke(
        &self,
        ctx: &Ctx,
        session: &Session,
        id: Uuid,
    ) -> Result<Reply, AccessError> {
        match self.backend.revoke(&session.user, id).await {
            Ok(()) => {
                session.set_notice("Revoked. From now on that doctor cannot read your record.");
                Ok(Reply::redirect("/federation/patient"))
            }
            Err(AccessError::SessionEnded) => Err(AccessError::SessionEnded),
            Err(e) => {
                super::log_access_error(&e);
                let problem = Problem {
                    request: None,
                    text: e.message(),
                    status: e.status(),
                };
                self.patient(ctx, session, Some(problem)).await
            }
        }
    }
}

/// The QR code of `payload` as inline SVG (the `qrcode` crate's renderer,
/// without its XML declaration, which has no place inside HTML). `None`
/// if the payload is too long for a QR code.
pub fn qr_svg(payload: &str) -> Option<String> {
    let code =
        qrcode::QrCode::with_error_correction_level(payload.as_bytes(), qrcode::EcLevel::M).ok()?;
    let svg = code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(256, 256)
        .quiet_zone(true)
        .build();
    let start = svg.find("<svg")?;
    Some(svg[start..].to_owned())
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain replace-only values: a poisoned lock still holds a usable one.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether a request reached the patient after `since` (a pending one,
/// or one the access log shows received).
fn used_since(ov: &PatientOverview, since: i64) -> bool {
    ov.pending.iter().any(|r| r.created_at >= since)
        || ov
            .log
            .iter()
            .any(|e| e.kind == "access.requested" && e.at >= since)
}

/// The optional lower role and shorter duration of an approval form.
/// Empty means "as asked"; the access flow checks they are not more than
/// asked.
pub(crate) fn parse_choices(
    role: Option<&str>,
    duration: Option<&str>,
) -> Result<(Option<Role>, Option<Duration>), AccessError> {
    let role = match role {
        None => None,
        Some(r) => Some(
            r.parse::<Role>()
                .map_err(|_| AccessError::BadInput("choose a role from the list"))?,
        ),
    };
    let duration = match duration {
        None => None,
        Some(d) => match d.parse::<u64>() {
            Ok(s) if s > 0 => Some(Duration::from_secs(s)),
            _ => return Err(AccessError::BadInput("choose a duration from the list")),
        },
    };
    Ok((role, duration))
}

/// The page for a signed-in user of the other role.
pub(crate) fn wrong_page(web: &Web, ctx: &Ctx, session: &Session, home: &str) -> Reply {
    let page = super::simple_page(
        "Not your page",
        &AccessError::WrongRole.message(),
        (home, "Go to your page"),
        true,
    );
    web.user_page(ctx, session, StatusCode::FORBIDDEN, &page)
}

/// Everything the patient's page shows.
pub(crate) struct View<'a> {
    pub overview: &'a PatientOverview,
    /// The patient's moves away from this server, newest first.
    pub transfers: &'a [TransferView],
    pub invitation: Option<&'a NewInvitation>,
    pub invitation_error: Option<&'a str>,
    pub csrf: &'a str,
    pub notice: Option<&'a str>,
    pub problem: Option<&'a Problem>,
    pub now: i64,
}

impl View<'_> {
    pub fn render(&self) -> Page {
        let ov = self.overview;
        let mut b = String::with_capacity(16 * 1024);
        b.push_str("<h1>Sharing your record</h1>");
        if let Some(n) = self.notice {
            html::message(&mut b, n, false);
        }
        if let Some(p) = self
            .problem
            .filter(|p| p.request.is_none() || !ov.pending.iter().any(|r| Some(r.id) == p.request))
        {
            html::message(&mut b, &p.text, true);
        }
        // What the patient came for first: a request to decide, else the
        // QR code to show.
        if ov.pending.is_empty() {
            self.share(&mut b);
            self.pending(&mut b);
        } else {
            self.pending(&mut b);
            self.share(&mut b);
        }
        super::transfer::moves(self.transfers, &mut b);
        self.grants(&mut b);
        self.log(&mut b);
        let mut page = Page::new("Sharing your record", b);
        let moving = !self.transfers.is_empty()
            || ov.pending.iter().any(|r| r.kind == RequestKind::Transfer);
        if moving {
            page.script = Some(super::transfer::PATIENT_JS);
        }
        let waiting = ov.pending.is_empty()
            && self.invitation.is_some_and(|i| i.expires_at > self.now)
            && self.problem.is_none();
        if waiting {
            page.refresh = Some(WAIT_REFRESH);
        }
        page
    }

    fn share(&self, b: &mut String) {
        b.push_str(
            "<section aria-labelledby=\"share\"><h2 id=\"share\">Let a doctor on another server ask</h2>",
        );
        match (self.invitation, self.invitation_error) {
            (Some(inv), _) => {
                b.push_str(
                    "<p>Show this QR code to the doctor. Their page will then show them a \
                     code: you type it below to approve.</p><figure class=\"qr\">",
                );
                if let Some(svg) = qr_svg(&inv.payload) {
                    let _ = write!(
                        b,
                        "<div role=\"img\" aria-label=\"QR code for the doctor to scan\">{svg}</div>"
                    );
                }
                let _ = write!(
                    b,
                    "<figcaption>Or send the doctor this text: \
                     <span class=\"payload\" id=\"payload\">{}</span></figcaption></figure>\
                     <p class=\"muted\">It works for one request, until {}.</p>",
                    esc(&inv.payload),
                    esc(&html::time(inv.expires_at))
                );
            }
            (None, Some(e)) => html::message(b, e, true),
            (None, None) => {}
        }
        b.push_str("<form method=\"post\" action=\"/federation/patient/invitation\">");
        html::csrf_field(b, self.csrf);
        b.push_str(
            "<button class=\"secondary\" type=\"submit\">New code</button></form></section>",
        );
    }

    fn pending(&self, b: &mut String) {
        let ov = self.overview;
        let _ = write!(
            b,
            "<section aria-labelledby=\"pending\"><h2 id=\"pending\">Requests waiting for you ({})</h2>",
            ov.pending.len()
        );
        if ov.pending.is_empty() {
            let _ = write!(
                b,
                "<p>No doctor is asking right now.{}</p>",
                if self.invitation.is_some() {
                    " This page looks again every 15 seconds."
                } else {
                    ""
                }
            );
        }
        for r in &ov.pending {
            if r.kind == RequestKind::Transfer {
                let problem = self
                    .problem
                    .filter(|p| p.request == Some(r.id))
                    .map(|p| p.text.as_str());
                super::transfer::pending_card(r, self.csrf, problem, b);
                continue;
            }
            let id = r.id.hyphenated().to_string();
            let asked_role = r.role.parse::<Role>().ok();
            let asked = Duration::from_millis(u64::try_from(r.duration_ms).unwrap_or(0));
            let _ = write!(
                b,
                "<div class=\"card\" id=\"req-{id}\"><h3>{}</h3>\
                 <p>on the server <strong>{}</strong> asks to <strong>{}</strong> \
                 for <strong>{}</strong>.</p>\
                 <p class=\"muted\">Answer before {}.</p>",
                esc(&r.doctor),
                esc(&r.server_fqdn),
                esc(asked_role.map(html::role).unwrap_or(&r.role)),
                esc(&html::duration(asked)),
                esc(&html::time(r.expires_at)),
            );
            if let Some(p) = self.problem.filter(|p| p.request == Some(r.id)) {
                html::message(b, &p.text, true);
            }
            let _ = write!(
                b,
                "<form method=\"post\" action=\"/federation/patient/requests/{id}/approve\">"
            );
            html::csrf_field(b, self.csrf);
            let focus = if self.problem.is_some_and(|p| p.request == Some(r.id)) {
                " autofocus"
            } else {
                ""
            };
            let _ = write!(
                b,
                "<label for=\"code-{id}\">The code the doctor's page shows</label>\
                 <input class=\"code\" id=\"code-{id}\" name=\"code\" type=\"text\" \
                 autocomplete=\"off\" inputmode=\"text\" autocapitalize=\"characters\" \
                 spellcheck=\"false\" required maxlength=\"{MAX_CODE_LEN}\"{focus}>"
            );
            if let Some(asked_role) = asked_role {
                let _ = write!(
                    b,
                    "<label for=\"role-{id}\">Let them</label><select id=\"role-{id}\" name=\"role\">"
                );
                for role in Role::ALL.iter().rev().filter(|x| **x <= asked_role) {
                    let _ = write!(
                        b,
                        "<option value=\"{}\"{}>{}{}</option>",
                        role.as_str(),
                        if *role == asked_role { " selected" } else { "" },
                        esc(html::role(*role)),
                        if *role == asked_role {
                            " (as asked)"
                        } else {
                            ""
                        }
                    );
                }
                b.push_str("</select>");
            }
            let _ = write!(
                b,
                "<label for=\"duration-{id}\">For</label><select id=\"duration-{id}\" name=\"duration\">"
            );
            for d in duration_choices(asked) {
                let _ = write!(
                    b,
                    "<option value=\"{}\"{}>{}{}</option>",
                    d.as_secs(),
                    if d == asked { " selected" } else { "" },
                    esc(&html::duration(d)),
                    if d == asked { " (as asked)" } else { "" }
                );
            }
            let _ = write!(
                b,
                "</select><button type=\"submit\">Approve</button>\
                 <button class=\"danger\" type=\"submit\" formnovalidate \
                 formaction=\"/federation/patient/requests/{id}/deny\">Deny</button></form></div>"
            );
        }
        b.push_str("<p><a href=\"/federation/patient\">Refresh</a></p></section>");
    }

    fn grants(&self, b: &mut String) {
        let ov = self.overview;
        let now = self.now;
        let (live, ended): (Vec<&Grant>, Vec<&Grant>) =
            ov.grants.iter().partition(|g| g.is_live(now));
        b.push_str(
            "<section aria-labelledby=\"grants\"><h2 id=\"grants\">Who can read your record</h2>",
        );
        if live.is_empty() {
            b.push_str("<p>Nobody on another server can read your record now.</p>");
        }
        for g in &live {
            let id = g.id.hyphenated().to_string();
            let _ = write!(
                b,
                "<div class=\"card\" id=\"grant-{id}\"><h3>{}</h3>\
                 <p>on <strong>{}</strong> may <strong>{}</strong> until <strong>{}</strong>.</p>\
                 <form method=\"post\" action=\"/federation/patient/grants/{id}/revoke\">",
                esc(&g.doctor),
                esc(&g.server_fqdn),
                esc(g.role.parse::<Role>().map(html::role).unwrap_or(&g.role)),
                esc(&html::time(g.expires_at)),
            );
            html::csrf_field(b, self.csrf);
            let _ = write!(
                b,
                "<button class=\"danger\" type=\"submit\" aria-label=\"Revoke the access of {}\">\
                 Revoke</button></form></div>",
                esc(&g.doctor)
            );
        }
        if !ended.is_empty() {
            b.push_str(
                "<h3>Ended</h3><div class=\"scroll\"><table><thead><tr><th scope=\"col\">Doctor</th>\
                 <th scope=\"col\">Server</th><th scope=\"col\">Could</th><th scope=\"col\">Ended</th>\
                 </tr></thead><tbody>",
            );
            for g in ended {
                let how = match g.revoked_at {
                    Some(at) => format!("revoked {}", html::time(at)),
                    None if g.expires_at <= now => format!("expired {}", html::time(g.expires_at)),
                    None => format!("starts {}", html::time(g.not_before)),
                };
                let _ = write!(
                    b,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&g.doctor),
                    esc(&g.server_fqdn),
                    esc(g.role.parse::<Role>().map(html::role).unwrap_or(&g.role)),
                    esc(&how)
                );
            }
            b.push_str("</tbody></table></div>");
        }
        b.push_str("</section>");
    }

    fn log(&self, b: &mut String) {
        let ov = self.overview;
        b.push_str(
            "<section aria-labelledby=\"log\"><h2 id=\"log\">Access log</h2>\
             <p class=\"muted\">Who asked for, read or changed access to your record, newest first.</p>",
        );
        if ov.log.is_empty() {
            b.push_str("<p>Nothing yet.</p></section>");
            return;
        }
        b.push_str(
            "<div class=\"scroll\"><table><thead><tr><th scope=\"col\">When</th>\
             <th scope=\"col\">Who</th><th scope=\"col\">What</th></tr></thead><tbody>",
        );
        for e in &ov.log {
            let (who, what) = describe(e, &ov.address);
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&html::time(e.at)),
                esc(&who),
                esc(&what)
            );
        }
        b.push_str("</tbody></table></div></section>");
    }
}

/// A record part's name in a sentence.
fn part_name(route: &str) -> &str {
    match route {
        "record" => "record",
        "profile" => "medical profile",
        "vitals" => "vital signs",
        "symptoms" => "symptoms",
        "answers" => "answers",
        "questions" => "questions",
        "ask_question" => "questions",
        other => other,
    }
}

/// One audit entry in plain words: (who, what). `own` is the patient's
/// address (shown as "You"). Kinds this version does not know are shown
/// as they are.
pub fn describe(e: &AuditEntry, own: &str) -> (String, String) {
    let field = |k: &str| e.detail.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    let doctor = field("doctor").unwrap_or_else(|| "a doctor".to_owned());
    let role = field("role")
        .and_then(|r| r.parse::<Role>().ok())
        .map(html::role)
        .unwrap_or("use your record");
    let who = if e.actor == own || e.actor == "patient" {
        "You".to_owned()
    } else if e.actor == "system" {
        "This server".to_owned()
    } else {
        e.actor.clone()
    };
    let what = match e.kind.as_str() {
        "access.requested" => {
            let how_long = e
                .detail
                .get("duration_s")
                .and_then(|v| v.as_u64())
                .map(|s| format!(" for {}", html::duration(Duration::from_secs(s))))
                .unwrap_or_default();
            format!("asked to {role}{how_long}")
        }
        "access.approved" => {
            let until = e
                .detail
                .get("expires_at")
                .and_then(|v| v.as_i64())
                .map(|t| format!(" until {}", html::time(t)))
                .unwrap_or_default();
            format!("approved: {doctor} may {role}{until}")
        }
        "access.denied" => format!("denied the request of {doctor}"),
        "access.voided" => {
            format!("the request of {doctor} was voided after too many wrong codes")
        }
        "access.expired" => format!("the request of {doctor} expired unanswered"),
        "access.cancelled" => format!("the request of {doctor} was withdrawn"),
        "access.wrong_code" => match e.detail.get("attempt").and_then(|v| v.as_u64()) {
            Some(n) => format!("a wrong code was typed (try {n})"),
            None => "a wrong code was typed".to_owned(),
        },
        "access.revoked" => format!("revoked the access of {doctor}"),
        "record.read" => format!(
            "read your {}",
            part_name(field("route").as_deref().unwrap_or("record"))
        ),
        "record.question" => "asked you a question".to_owned(),
        other => other.to_owned(),
    };
    (who, what)
}
