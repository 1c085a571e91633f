//! The doctor's pages: start a request from the patient's QR payload
//! (pasted, or scanned with the camera where the browser can), follow it
//! with the code to show the patient, and once approved read the remote
//! record and, as a contributor, ask the patient a question.
//!
//! The only script of the pages is [`SCAN_JS`], inline and allowed by its
//! hash: it shows the "Scan with camera" button only when the browser has
//! `BarcodeDetector` and a camera API, and fills the payload field.

use std::fmt::Write as _;
use std::time::Duration;

use http::StatusCode;
use uuid::Uuid;

use super::html::{self, esc, Page};
use super::patient::{duration_choices, wrong_page, Problem};
use super::record;
use super::session::Session;
use super::{Ctx, Reply, Web};
use crate::federation::access::{AccessError, DoctorRequest};
use crate::policy::{Role, RouteId, MAX_QUESTION_CHARS};
use crate::upstream::{NewQuestion, QuestionType};

/// Seconds between reloads of a request page while it is open.
pub const OPEN_REFRESH: u32 = 5;
/// The longest payload accepted (a QR payload is about 100 characters).
pub(crate) const MAX_PAYLOAD_LEN: usize = 1024;
/// The duration preselected on the request form (or the limit, if lower).
const DEFAULT_DURATION: Duration = Duration::from_secs(7 * 86_400);

/// The camera scan. No `eval`, no inline handlers: listeners only.
pub const SCAN_JS: &str = r#"(function () {
  "use strict";
  var button = document.getElementById("scan");
  var field = document.getElementById("payload");
  var video = document.getElementById("scan-video");
  var status = document.getElementById("scan-status");
  if (!button || !field || !video || !("BarcodeDetector" in window) ||
      !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    return;
  }
  button.hidden = false;
  var stream = null;
  function stop() {
    if (stream) { stream.getTracks().forEach(function (t) { t.stop(); }); }
    stream = null;
    video.hidden = true;
    button.textContent = "Scan with camera";
  }
  function look(detector) {
    if (!stream) { return; }
    detector.detect(video).then(function (codes) {
      for (var i = 0; i < codes.length; i++) {
        var text = codes[i].rawValue || "";
        if (text.indexOf("mdgate:") === 0) {
          field.value = text;
          stop();
          status.textContent = "Code read. Check the role and duration, then send.";
          field.focus();
          return;
        }
      }
      setTimeout(function () { look(detector); }, 250);
    }, function () { setTimeout(function () { look(detector); }, 500); });
  }
  button.addEventListener("click", function () {
    if (stream) { stop(); return; }
    var detector;
    try { detector = new BarcodeDetector({ formats: ["qr_code"] }); }
    catch (e) { status.textContent = "This browser cannot read QR codes: paste the text."; return; }
    navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" }, audio: false })
      .then(function (s) {
        stream = s;
        video.srcObject = s;
        video.hidden = false;
        button.textContent = "Stop the camera";
        status.textContent = "Point the camera at the patient's QR code.";
        return video.play().then(function () { look(detector); });
      })
      .catch(function () {
        stop();
        status.textContent = "The camera could not be used: paste the text instead.";
      });
  });
})();"#;

/// What the doctor typed, kept when the form comes back with an error.
#[derive(Default)]
pub(crate) struct Typed {
    pub payload: String,
    pub role: Option<Role>,
    pub duration: Option<Duration>,
    /// Whether `payload` was typed in the transfer form.
    pub transfer: bool,
}

impl Web {
    pub(crate) fn is_doctor(session: &Session) -> bool {
        session.user.role == crate::upstream::Role::Doctor
    }

    /// `GET /federation/doctor`, or the form again with `problem`.
    pub(crate) async fn doctor(
        &self,
        ctx: &Ctx,
        session: &Session,
        problem: Option<(Problem, Typed)>,
    ) -> Result<Reply, AccessError> {
        if !Self::is_doctor(session) {
            return Ok(wrong_page(self, ctx, session, "/federation/patient"));
        }
        let requests = self.backend.doctor_requests(&session.user).await?;
        let transfers = self.backend.doctor_transfers(&session.user).await?;
        let (problem, typed) = match problem {
            Some((p, t)) => (Some(p), t),
            None => (None, Typed::default()),
        };
        let mut b = String::with_capacity(8 * 1024);
        b.push_str("<h1>Ask to read a patient's record</h1>");
        if let Some(n) = session.take_notice() {
            html::message(&mut b, &n, false);
        }
        if let Some(p) = &problem {
            html::message(&mut b, &p.text, true);
        }
        b.push_str(
            "<p>The patient shows you a QR code on their page. Scan it, or paste the text \
             under it. You then get a code to show the patient, who types it to approve.</p>\
             <form method=\"post\" action=\"/federation/doctor/requests\">",
        );
        html::csrf_field(&mut b, &self.token(ctx));
        let _ = write!(
            b,
            "<label for=\"payload\">The patient's code (the text under their QR code)</label>\
             <input id=\"payload\" name=\"payload\" type=\"text\" required autocomplete=\"off\" \
             autocapitalize=\"none\" spellcheck=\"false\" maxlength=\"{MAX_PAYLOAD_LEN}\" \
             placeholder=\"mdgate:…\" value=\"{}\">\
             <button class=\"secondary\" type=\"button\" id=\"scan\" hidden>Scan with camera</button>\
             <video id=\"scan-video\" hidden playsinline muted></video>\
             <p id=\"scan-status\" class=\"muted\" role=\"status\"></p>\
             <label for=\"role\">Role</label><select id=\"role\" name=\"role\">",
            esc(if typed.transfer { "" } else { &typed.payload })
        );
        let role = typed.role.unwrap_or(Role::Viewer);
        for r in Role::ALL {
            let _ = write!(
                b,
                "<option value=\"{}\"{}>{}</option>",
                r.as_str(),
                if r == role { " selected" } else { "" },
                esc(html::role_name(r))
            );
        }
        b.push_str("</select><label for=\"duration\">For</label><select id=\"duration\" name=\"duration\">");
        let choices = duration_choices(self.max_grant);
        let chosen = typed
            .duration
            .filter(|d| choices.contains(d))
            .unwrap_or_else(|| {
                choices
                    .iter()
                    .copied()
                    .find(|d| *d <= DEFAULT_DURATION)
                    .unwrap_or(self.max_grant)
            });
        for d in choices {
            let _ = write!(
                b,
                "<option value=\"{}\"{}>{}</option>",
                d.as_secs(),
                if d == chosen { " selected" } else { "" },
                esc(&html::duration(d))
            );
        }
        b.push_str("</select><button type=\"submit\">Send the request</button></form>");
        requests_table(&requests, &mut b);
        let transfer_payload = if typed.transfer {
            typed.payload.as_str()
        } else {
            ""
        };
        super::transfer::start_form(&self.token(ctx), transfer_payload, &mut b);
        super::transfer::transfers_table(&transfers, &mut b);
        let mut page = Page::new("Ask to read a record", b);
        page.script = Some(SCAN_JS);
        let status = problem.map_or(StatusCode::OK, |p| p.status);
        Ok(self.user_page(ctx, session, status, &page))
    }

    /// `POST /federation/doctor/requests`.
    pub(crate) async fn start_request(
        &self,
        ctx: &Ctx,
        session: &Session,
    ) -> Result<Reply, AccessError> {
        if !Self::is_doctor(session) {
            return Ok(wrong_page(self, ctx, session, "/federation/patient"));
        }
        let form = &ctx.form;
        let typed = Typed {
            payload: form.non_empty("payload").unwrap_or("").to_owned(),
            role: form.non_empty("role").and_then(|r| r.parse().ok()),
            duration: form
                .non_empty("duration")
                .and_then(|d| d.parse::<u64>().ok())
                .filter(|s| *s > 0)
                .map(Duration::from_secs),
            transfer: false,
        };
        let checked = if typed.payload.is_empty() {
            Err(AccessError::BadInput("paste or scan the patient's code"))
        } else if typed.payload.len() > MAX_PAYLOAD_LEN {
            Err(AccessError::BadInput("the patient's code is too long"))
        } else {
            match (typed.role, typed.duration) {
                (Some(role), Some(d)) => Ok((role, d)),
                (None, _) => Err(AccessError::BadInput("choose a role from the list")),
                (_, None) => Err(AccessError::BadInput("choose a duration from the list")),
            }
        };
        let result = match checked {
            Ok((role, duration)) => {
                self.backend
                    .start_request(&session.user, &typed.payload, role, duration)
                    .await
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(r) => Ok(Reply::redirect(format!(
                "/federation/doctor/requests/{}",
                r.id.hyphenated()
            ))),
            Err(AccessError::SessionEnded) => Err(AccessError::SessionEnded),
            Err(e) => {
                super::log_access_error(&e);
                let problem = Problem {
                    request: None,
                    text: e.message(),
                    status: e.status(),
                };
                self.doctor(ctx, session, Some((problem, typed))).await
            }
        }
    }

    /// `GET /federation/doctor/requests/{id}`.
    pub(crate) async fn doctor_request(
        &self,
        ctx: &Ctx,
        session: &Session,
        id: Uuid,
    ) -> Result<Reply, AccessError> {
        self.request_page(ctx, session, id, None).await
    }

    async fn request_page(
        &self,
        ctx: &Ctx,
        session: &Session,
        id: Uuid,
        problem: Option<Problem>,
    ) -> Result<Reply, AccessError> {
        if !Self::is_doctor(session) {
            return Ok(wrong_page(self, ctx, session, "/federation/patient"));
        }
        let r = self.backend.doctor_request(&session.user, id).await?;
        let mut b = String::with_capacity(4 * 1024);
        let _ = write!(b, "<h1>Request for {}</h1>", esc(&r.patient_address));
        if let Some(n) = session.take_notice() {
            html::message(&mut b, &n, false);
        }
        if let Some(p) = &problem {
            html::message(&mut b, &p.text, true);
        }
        let open = matches!(r.state, "sending" | "pending");
        let _ = write!(
            b,
            "<p role=\"status\"><strong>{}</strong></p>",
            esc(&state_sentence(&r))
        );
        if let (true, Some(code)) = (open, r.code.as_deref()) {
            let groups: Vec<&str> = code.split('-').collect();
            let spelled: Vec<String> = groups
                .iter()
                .map(|g| g.chars().map(String::from).collect::<Vec<_>>().join(" "))
                .collect();
            let _ = write!(
                b,
                "<p>Show or read this code to the patient. They type it on their page.</p>\
                 <p class=\"bigcode\" id=\"code\" aria-label=\"The code: {}\">{}</p>\
                 <p class=\"muted\">Valid until {}. This page updates itself.</p>",
                esc(&spelled.join(", ")),
                esc(&groups.join(" ")),
                esc(&html::time(r.expires_at))
            );
        }
        let _ = write!(
            b,
            "<dl><dt>Server</dt><dd>{}</dd><dt>Role asked</dt><dd>{}</dd>\
             <dt>For</dt><dd>{}</dd><dt>Sent</dt><dd>{}</dd></dl>",
            esc(&r.server),
            esc(html::role_name(r.role)),
            esc(&html::duration(r.duration)),
            esc(&html::time(r.created_at))
        );
        if r.readable {
            self.record_links(&r, None, &mut b);
            if r.granted_role == Some(Role::Contributor) {
                ask_form(&r, &self.token(ctx), &mut b);
            }
        }
        b.push_str("<p><a href=\"/federation/doctor\">All your requests</a></p>");
        let mut page = Page::new("Request", b);
        if open && problem.is_none() {
            page.refresh = Some(OPEN_REFRESH);
        }
        let status = problem.map_or(StatusCode::OK, |p| p.status);
        Ok(self.user_page(ctx, session, status, &page))
    }

    fn record_links(&self, r: &DoctorRequest, current: Option<RouteId>, b: &mut String) {
        let _ = write!(
            b,
            "<nav aria-label=\"The record\"><h2>The record</h2><p>You may {} until {}.</p><ul class=\"plain\">",
            esc(r.granted_role.map_or("read the record", |g| match g {
                Role::Viewer => "read the record",
                Role::Contributor => "read the record and ask questions",
            })),
            esc(&r.grant_expires_at.map(html::time).unwrap_or_default())
        );
        for part in record::PARTS {
            let here = current == Some(part);
            let _ = write!(
                b,
                "<li><a href=\"/federation/doctor/requests/{}/record/{}\"{}>{}</a></li>",
                r.id.hyphenated(),
                part.as_str(),
                if here { " aria-current=\"page\"" } else { "" },
                esc(record::title(part))
            );
        }
        b.push_str("</ul></nav>");
    }

    /// `GET /federation/doctor/requests/{id}/record/{part}`.
    pub(crate) async fn record(
        &self,
        ctx: &Ctx,
        session: &Session,
        id: Uuid,
        part: RouteId,
    ) -> Result<Reply, AccessError> {
        if !Self::is_doctor(session) {
            return Ok(wrong_page(self, ctx, session, "/federation/patient"));
        }
        let r = self.backend.doctor_request(&session.user, id).await?;
        let value = self.backend.remote_read(&session.user, id, part).await?;
        let mut b = String::with_capacity(16 * 1024);
        let _ = write!(
            b,
            "<h1>{}</h1><p class=\"muted\">{}</p>",
            esc(record::title(part)),
            esc(&r.patient_address)
        );
        if let Some(n) = session.take_notice() {
            html::message(&mut b, &n, false);
        }
        record::render(part, &value, &mut b);
        if part == RouteId::Questions && r.granted_role == Some(Role::Contributor) {
            ask_form(&r, &self.token(ctx), &mut b);
        }
        self.record_links(&r, Some(part), &mut b);
        let _ = write!(
            b,
            "<p><a href=\"/federation/doctor/requests/{}\">Back to the request</a></p>",
            r.id.hyphenated()
        );
        let page = Page::new(record::title(part), b);
        Ok(self.user_page(ctx, session, StatusCode::OK, &page))
    }

    /// `POST /federation/doctor/requests/{id}/questions`.
    pub(crate) async fn ask(
        &self,
        ctx: &Ctx,
        session: &Session,
        id: Uuid,
    ) -> Result<Reply, AccessError> {
        if !Self::is_doctor(session) {
            return Ok(wrong_page(self, ctx, session, "/federation/patient"));
        }
        let result = match parse_question(ctx.form.get("question"), ctx.form.get("type")) {
            Ok(q) => self.backend.remote_ask(&session.user, id, &q).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                session.set_notice("Your question was sent to the patient.");
                Ok(Reply::redirect(format!(
                    "/federation/doctor/requests/{}/record/questions",
                    id.hyphenated()
                )))
            }
            Err(AccessError::SessionEnded) => Err(AccessError::SessionEnded),
            Err(e) => {
                super::log_access_error(&e);
                let problem = Problem {
                    request: Some(id),
                    text: e.message(),
                    status: e.status(),
                };
                self.request_page(ctx, session, id, Some(problem)).await
            }
        }
    }
}

/// The question of the ask form: 1 to 255 characters (counted as
/// access.md counts them, in UTF-16 units) and one of the three kinds a
/// doctor asks (the `Vitals` kind is the app's own).
pub(crate) fn parse_question(
    text: Option<&str>,
    kind: Option<&str>,
) -> Result<NewQuestion, AccessError> {
    let text = text.map(str::trim).unwrap_or("");
    if text.is_empty() {
        return Err(AccessError::BadInput("type the question"));
    }
    if text.encode_utf16().count() > MAX_QUESTION_CHARS {
        return Err(AccessError::BadInput(
            "the question is longer than 255 characters",
        ));
    }
    let kind = match kind {
        Some("Text") => QuestionType::Text,
        Some("Binary") => QuestionType::Binary,
        Some("Scale") => QuestionType::Scale,
        _ => return Err(AccessError::BadInput("choose the kind of answer")),
    };
    Ok(NewQuestion {
        question: text.to_owned(),
        kind: Some(kind),
        recurring: false,
        start_date: None,
        end_date: None,
        recurrence: Vec::new(),
    })
}

fn ask_form(r: &DoctorRequest, csrf: &str, b: &mut String) {
    let _ = write!(
        b,
        "<h2 id=\"ask\">Ask the patient a question</h2>\
         <form method=\"post\" action=\"/federation/doctor/requests/{}/questions\">",
        r.id.hyphenated()
    );
    html::csrf_field(b, csrf);
    let _ = write!(
        b,
        "<label for=\"question\">Question (at most {MAX_QUESTION_CHARS} characters)</label>\
         <textarea id=\"question\" name=\"question\" required maxlength=\"{MAX_QUESTION_CHARS}\"></textarea>\
         <label for=\"type\">Kind of answer</label><select id=\"type\" name=\"type\">\
         <option value=\"Text\" selected>Text</option>\
         <option value=\"Binary\">Yes or no</option>\
         <option value=\"Scale\">Scale</option></select>\
         <button type=\"submit\">Send the question</button></form>"
    );
}

/// Where a request stands, in a sentence for the doctor.
pub fn state_sentence(r: &DoctorRequest) -> String {
    match r.state {
        "sending" => format!("Sending the request to {}…", r.server),
        "pending" => "Waiting for the patient to approve.".to_owned(),
        "approved" if r.readable => "Approved.".to_owned(),
        "approved" => "Approved, but the access has ended.".to_owned(),
        "denied" => "The patient denied the request.".to_owned(),
        "voided" => {
            "Too many wrong codes were typed: the request is void. Start a new one.".to_owned()
        }
        "expired" => "The request expired before the patient answered.".to_owned(),
        "cancelled" => "The request was withdrawn.".to_owned(),
        "revoked" => "The patient revoked the access.".to_owned(),
        "failed" => match r.reason.as_deref() {
            Some("invitation_invalid") => "The patient's QR code was already used or has \
                 expired. Ask the patient to press New code, then start again."
                .to_owned(),
            Some("unknown_patient") => "The patient's server does not know this patient. \
                 Check the code you pasted."
                .to_owned(),
            Some("patient_moved") => "This patient has moved to another server.".to_owned(),
            Some("peer_blocked") => {
                "The patient's server does not accept requests from this server.".to_owned()
            }
            Some(reason) => format!("The patient's server refused the request ({reason})."),
            None => "The request could not be delivered.".to_owned(),
        },
        other => format!("State: {other}."),
    }
}

fn requests_table(requests: &[DoctorRequest], b: &mut String) {
    b.push_str("<h2 id=\"requests\">Your requests</h2>");
    if requests.is_empty() {
        b.push_str("<p>None yet.</p>");
        return;
    }
    b.push_str(
        "<div class=\"scroll\"><table><thead><tr><th scope=\"col\">Patient</th>\
         <th scope=\"col\">Role</th><th scope=\"col\">State</th><th scope=\"col\">Sent</th>\
         </tr></thead><tbody>",
    );
    for r in requests {
        let _ = write!(
            b,
            "<tr><td><a href=\"/federation/doctor/requests/{}\">{}</a></td><td>{}</td>\
             <td>{}</td><td>{}</td></tr>",
            r.id.hyphenated(),
            esc(&r.patient_address),
            esc(r.granted_role.unwrap_or(r.role).as_str()),
            esc(r.state),
            esc(&html::time(r.created_at))
        );
    }
    b.push_str("</tbody></table></div>");
}
