//! The transfer's pages ([`crate::federation::transfer`]): on the old
//! home, the patient's transfer card (approve with the doctor's code and
//! a key made by the browser) and the list of their moves; on the new
//! home, the doctor's "move a patient here" form, the transfer page with
//! the kept bundle's downloads, and the hand-over page, the only page
//! without a session (the patient has no account there yet).
//!
//! The key never passes through a page of ours in the clear except in the
//! approval form and the hand-over form, both posted to the server that
//! needs it: [`PATIENT_JS`] makes it with WebCrypto, keeps it in
//! `localStorage["mdgate-transfer-<id>"]` and appends it to the fragment
//! of the "Continue" link (a fragment never leaves the browser in a
//! request line); [`HANDOVER_JS`] reads it from the fragment into the
//! form. No page echoes the key or a password back.

use std::fmt::Write as _;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::StatusCode;
use http_body::Body;
use uuid::Uuid;

use super::form::{self, Form};
use super::html::{self, esc, Page};
use super::patient::{wrong_page, Problem, MAX_CODE_LEN};
use super::session::Session;
use super::{Ctx, Reply, Web};
use crate::federation::access::AccessError;
use crate::federation::transfer::{HandOver, HandOverError, TransferView};
use crate::store::AccessRequest;
use crate::transfer::bundle::{BundleError, BundleReader, Item};
use crate::transfer::fhir::FhirWriter;
use crate::transfer::machine::{source, target};
use crate::upstream::Secret;

/// Seconds between reloads of pages that wait for the other server.
pub const WAIT_REFRESH: u32 = 5;
/// Seconds between reloads while an import runs.
pub const IMPORT_REFRESH: u32 = 2;
/// The longest key accepted (43 characters for 32 bytes in base64url).
const MAX_KEY_LEN: usize = 128;
/// The longest approval accepted (a compact JWS of a few hundred bytes).
const MAX_APPROVAL_LEN: usize = 8 * 1024;
/// The longest line of a kept bundle, as the import reads it.
const MAX_LINE: usize = 1024 * 1024;

/// The patient's page script: makes the transfer key on approval, and
/// completes the "Continue" links with it. No `eval`, no inline handlers.
pub const PATIENT_JS: &str = r#"(function () {
  "use strict";
  var PREFIX = "mdgate-transfer-";
  function stored(id) {
    try { return localStorage.getItem(PREFIX + id); } catch (e) { return null; }
  }
  function b64url(buf) {
    var bytes = new Uint8Array(buf), s = "";
    for (var i = 0; i < bytes.length; i++) { s += String.fromCharCode(bytes[i]); }
    return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  Array.prototype.forEach.call(document.querySelectorAll("form[data-transfer]"), function (form) {
    var id = form.getAttribute("data-transfer");
    var field = form.querySelector("input[name=key]");
    var status = form.querySelector(".key-status");
    form.addEventListener("submit", function (ev) {
      // Deny (a button with its own formaction) needs no key.
      if (ev.submitter && ev.submitter.hasAttribute("formaction")) { return; }
      ev.preventDefault();
      // A key kept from an earlier try is reused: the server may have
      // taken it even if its answer never arrived.
      var kept = stored(id);
      if (kept) { field.value = kept; form.submit(); return; }
      if (!window.crypto || !crypto.subtle) {
        status.textContent = "This browser cannot make the key here: open this page over https, in a recent browser. Nothing was sent.";
        return;
      }
      crypto.subtle.generateKey({ name: "AES-GCM", length: 256 }, true, ["encrypt", "decrypt"])
        .then(function (key) { return crypto.subtle.exportKey("raw", key); })
        .then(function (raw) {
          var key = b64url(raw);
          try { localStorage.setItem(PREFIX + id, key); }
          catch (e) {
            status.textContent = "This browser cannot keep the key (private window?). Nothing was sent.";
            return;
          }
          field.value = key;
          form.submit();
        }, function () {
          status.textContent = "This browser could not make the key. Nothing was sent.";
        });
    });
  });
  Array.prototype.forEach.call(document.querySelectorAll("a[data-transfer]"), function (link) {
    var id = link.getAttribute("data-transfer");
    var key = stored(id);
    if (key) {
      link.href = link.href + "&key=" + encodeURIComponent(key);
    } else {
      var note = document.getElementById("nokey-" + id);
      if (note) { note.hidden = false; }
    }
  });
})();"#;

/// The hand-over page script: fills the key and the approval from the
/// link's fragment (or from this tab's earlier visit).
pub const HANDOVER_JS: &str = r#"(function () {
  "use strict";
  var form = document.getElementById("handover");
  if (!form) { return; }
  var id = form.getAttribute("data-transfer");
  var params = new URLSearchParams(location.hash.slice(1));
  ["key", "approval"].forEach(function (name) {
    var field = form.querySelector("[name=" + name + "]");
    if (!field) { return; }
    var value = params.get(name);
    try {
      if (value) { sessionStorage.setItem("mdgate-" + name + "-" + id, value); }
      else { value = sessionStorage.getItem("mdgate-" + name + "-" + id); }
    } catch (e) {}
    if (value && !field.value) { field.value = value; }
  });
})();"#;

impl Web {
    // ------------------------------------------------------ old home

    /// `POST /federation/patient/transfers/{id}/approve`.
    pub(crate) async fn approve_transfer(
        &self,
        ctx: &Ctx,
        session: &Session,
        id: Uuid,
    ) -> Result<Reply, AccessError> {
        if session.user.role != crate::upstream::Role::Patient {
            return Ok(wrong_page(self, ctx, session, "/federation/doctor"));
        }
        let code = ctx.form.non_empty("code").unwrap_or("");
        let key = ctx.form.non_empty("key").unwrap_or("");
        let result = if code.is_empty() {
            Err(AccessError::BadInput("type the code the doctor shows you"))
        } else if code.len() > MAX_CODE_LEN {
            Err(AccessError::BadInput("the code is too long"))
        } else if key.is_empty() || key.len() > MAX_KEY_LEN {
            Err(AccessError::BadInput(
                "your browser did not make an encryption key; enable JavaScript",
            ))
        } else {
            self.backend
                .approve_transfer(&session.user, id, code, key)
                .await
        };
        match result {
            Ok(view) => {
                session.set_notice(format!(
                    "Approved. This server now packs your record, seals it with the key \
                     this browser keeps, and sends it to {}. Come back here to continue.",
                    view.transfer.peer_fqdn
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

    // ------------------------------------------------------ new home

    /// `POST /federation/doctor/transfers`.
    pub(crate) async fn start_transfer(
        &self,
        ctx: &Ctx,
        session: &Session,
    ) -> Result<Reply, AccessError> {
        if !Self::is_doctor(session) {
            return Ok(wrong_page(self, ctx, session, "/federation/patient"));
        }
        let payload = ctx.form.non_empty("payload").unwrap_or("").to_owned();
        let result = if payload.is_empty() {
            Err(AccessError::BadInput("paste or scan the patient's code"))
        } else if payload.len() > super::doctor::MAX_PAYLOAD_LEN {
            Err(AccessError::BadInput("the patient's code is too long"))
        } else {
            self.backend.start_transfer(&session.user, &payload).await
        };
        match result {
            Ok(view) => Ok(Reply::redirect(format!(
                "/federation/doctor/transfers/{}",
                view.transfer.id.hyphenated()
            ))),
            Err(AccessError::SessionEnded) => Err(AccessError::SessionEnded),
            Err(e) => {
                super::log_access_error(&e);
                let problem = Problem {
                    request: None,
                    text: e.message(),
                    status: e.status(),
                };
                let typed = super::doctor::Typed {
                    payload,
                    transfer: true,
                    ..Default::default()
                };
                self.doctor(ctx, session, Some((problem, typed))).await
            }
        }
    }

    /// `GET /federation/doctor/transfers/{id}`.
    pub(crate) async fn doctor_transfer(
        &self,
        ctx: &Ctx,
        session: &Session,
        id: Uuid,
    ) -> Result<Reply, AccessError> {
        if !Self::is_doctor(session) {
            return Ok(wrong_page(self, ctx, session, "/federation/patient"));
        }
        let v = self.backend.doctor_transfer(&session.user, id).await?;
        let mut b = String::with_capacity(4 * 1024);
        let _ = write!(
            b,
            "<h1>Moving {} here</h1><p role=\"status\"><strong>{}</strong></p>",
            esc(&v.data.patient_address),
            esc(&target_sentence(&v))
        );
        if let (target::REQUESTED, Some(code)) = (v.state(), v.data.code.as_deref()) {
            let groups: Vec<&str> = code.split('-').collect();
            let _ = write!(
                b,
                "<p>Show or read this code to the patient. They type it on their page \
                 on {}.</p><p class=\"bigcode\" id=\"code\">{}</p>\
                 <p class=\"muted\">Valid until {}. This page updates itself.</p>",
                esc(&v.transfer.peer_fqdn),
                esc(&groups.join(" ")),
                esc(&html::time(v.data.expires_at))
            );
        }
        let _ = write!(
            b,
            "<dl><dt>From</dt><dd>{}</dd><dt>Started</dt><dd>{}</dd></dl>",
            esc(&v.transfer.peer_fqdn),
            esc(&html::time(v.transfer.created_at))
        );
        if matches!(
            v.state(),
            target::IMPORTING | target::IMPORTED | target::CONFIRMED
        ) {
            bundle_summary(&v, &mut b);
        }
        b.push_str("<p><a href=\"/federation/doctor\">Back to your page</a></p>");
        let mut page = Page::new("Transfer", b);
        if waiting_target(v.state()) {
            page.refresh = Some(WAIT_REFRESH);
        }
        Ok(self.user_page(ctx, session, StatusCode::OK, &page))
    }

    /// `GET /federation/doctor/transfers/{id}/bundle.jsonl`: the kept
    /// bundle as it arrived. Read whole into the answer: the pages'
    /// [`Reply`] holds a complete body (a streamed body is a follow-up).
    pub(crate) async fn bundle_jsonl(
        &self,
        ctx: &Ctx,
        session: &Session,
        id: Uuid,
    ) -> Result<Reply, AccessError> {
        if !Self::is_doctor(session) {
            return Ok(wrong_page(self, ctx, session, "/federation/patient"));
        }
        let path = self.backend.doctor_bundle(&session.user, id).await?;
        let bytes = read_bundle(&path).await?;
        Ok(download(
            bytes,
            "application/x-ndjson",
            &format!("transfer-{}.jsonl", id.hyphenated()),
        ))
    }

    /// `GET /federation/doctor/transfers/{id}/bundle.fhir.json`: the kept
    /// bundle as a FHIR R4 collection Bundle, built in memory (see
    /// [`Web::bundle_jsonl`]).
    pub(crate) async fn bundle_fhir(
        &self,
        ctx: &Ctx,
        session: &Session,
        id: Uuid,
    ) -> Result<Reply, AccessError> {
        if !Self::is_doctor(session) {
            return Ok(wrong_page(self, ctx, session, "/federation/patient"));
        }
        let view = self.backend.doctor_transfer(&session.user, id).await?;
        let path = self.backend.doctor_bundle(&session.user, id).await?;
        let bytes = read_bundle(&path).await?;
        let fhir = fhir_of(&bytes, &view.transfer.peer_fqdn).map_err(|e| {
            tracing::error!(transfer = %id, error = %e, "cannot render the kept bundle as FHIR");
            AccessError::Internal
        })?;
        Ok(download(
            Bytes::from(fhir),
            "application/fhir+json",
            &format!("transfer-{}.fhir.json", id.hyphenated()),
        ))
    }

    /// `GET` and `POST /federation/transfer/{id}`, without a session. A
    /// POST passes the origin, content type and body checks of every form;
    /// there is no CSRF token (no session to bind it to), and none is
    /// needed: the form carries the patient's key and approval, which a
    /// forging site does not have.
    pub(crate) async fn hand_over_route<B>(
        &self,
        tls: bool,
        listener: &'static str,
        id: Uuid,
        parts: &http::request::Parts,
        body: B,
    ) -> Reply
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let mut ctx = Ctx {
            tls,
            listener,
            session_id: None,
            session: None,
            form: Form::default(),
        };
        if parts.method != http::Method::POST {
            return self.hand_over_page(id, None, "").await;
        }
        let scheme = if tls { "https" } else { "http" };
        let checked = async {
            let host =
                crate::proxy::framing::request_host(parts.version, &parts.uri, &parts.headers)
                    .map_err(|_| form::Refusal::WrongOrigin)?;
            form::check_origin(&parts.headers, scheme, host)?;
            form::check_content_type(&parts.headers)?;
            let raw = form::read_body(&parts.headers, body).await?;
            Form::parse(&raw)
        };
        match checked.await {
            Ok(f) => ctx.form = f,
            Err(refusal) => return self.refused(&ctx, refusal),
        }
        self.hand_over(&mut ctx, id).await
    }

    async fn hand_over(&self, ctx: &mut Ctx, id: Uuid) -> Reply {
        let username = ctx.form.non_empty("username").unwrap_or("").to_owned();
        let key = ctx.form.non_empty("key").unwrap_or("").to_owned();
        let approval = ctx.form.non_empty("approval").unwrap_or("").to_owned();
        let password = ctx.form.take("password").unwrap_or_default();
        let again = ctx.form.take("password2");
        let refusal = if username.is_empty() || password.is_empty() {
            Some("Please type a username and a password.")
        } else if username.len() > 256 {
            Some("That username is too long.")
        } else if key.len() > MAX_KEY_LEN || approval.len() > MAX_APPROVAL_LEN {
            Some("The key or the approval is too long: use the link from your old server.")
        } else if again.is_some_and(|a| a != password) {
            Some("The two passwords differ. Please type them again.")
        } else {
            None
        };
        if let Some(text) = refusal {
            let problem = (StatusCode::UNPROCESSABLE_ENTITY, text.to_owned());
            return self.hand_over_page(id, Some(problem), &username).await;
        }
        let form = HandOver {
            key,
            approval,
            username: username.clone(),
            password: Secret::new(password),
        };
        match self.backend.hand_over(id, form).await {
            Ok(()) => {
                tracing::info!(transfer = %id, user = %username, "transfer handed over");
                Reply::redirect(format!("/federation/transfer/{}", id.hyphenated()))
            }
            Err(e) => {
                tracing::info!(transfer = %id, reason = e.reason(), error = %e, "hand-over refused");
                let problem = (handover_status(&e), e.message());
                self.hand_over_page(id, Some(problem), &username).await
            }
        }
    }

    /// The hand-over page in the transfer's state, with `problem` (status
    /// and sentence) after a refused form.
    async fn hand_over_page(
        &self,
        id: Uuid,
        problem: Option<(StatusCode, String)>,
        username: &str,
    ) -> Reply {
        let v = match self.backend.handover_view(id).await {
            Ok(v) => v,
            Err(AccessError::NotFound) => return super::not_found(),
            Err(e) => {
                super::log_access_error(&e);
                let page = super::simple_page(
                    "That did not work",
                    &e.message(),
                    ("/federation/", "Go to the sign-in page"),
                    true,
                );
                return Reply::page(e.status(), &page, None);
            }
        };
        let mut b = String::with_capacity(4 * 1024);
        b.push_str("<h1>Your record's move</h1>");
        if let Some((_, text)) = &problem {
            html::message(&mut b, text, true);
        }
        let mut page_refresh = None;
        let mut script = false;
        match v.state() {
            target::RECEIVED => {
                b.push_str(
                    "<p>Your record has arrived here, sealed with your key. Create your \
                     account on this server to unlock and import it.</p>",
                );
                handover_form(id, username, true, &mut b);
                script = true;
            }
            target::IMPORTING if self.backend.import_running(id) => {
                b.push_str("<p role=\"status\">Importing… <a href=\"\">(refresh)</a></p>");
                page_refresh = Some(IMPORT_REFRESH);
            }
            target::IMPORTING => {
                b.push_str(
                    "<p>The import was interrupted: sign in with the account you created \
                     to continue it.</p>",
                );
                handover_form(id, username, false, &mut b);
                script = true;
            }
            target::IMPORTED | target::CONFIRMED => {
                b.push_str("<p>Your record is here. <a href=\"/federation/\">Sign in</a></p>");
            }
            s if waiting_target(s) => {
                b.push_str(
                    "<p role=\"status\">Your record is on its way from your old server. \
                     This page updates itself.</p>",
                );
                page_refresh = Some(WAIT_REFRESH);
            }
            s => {
                let _ = write!(
                    b,
                    "<p>This move has ended: {}. Nothing was imported.</p>",
                    esc(s)
                );
            }
        }
        let mut page = Page::new("Your record's move", b);
        if problem.is_none() {
            page.refresh = page_refresh;
        }
        if script {
            page.script = Some(HANDOVER_JS);
        }
        let status = problem.map_or(StatusCode::OK, |(s, _)| s);
        Reply::page(status, &page, None)
    }
}

/// The status of a refused hand-over; no `_` arm, so a new error cannot
/// silently become a 500.
fn handover_status(e: &HandOverError) -> StatusCode {
    match e {
        HandOverError::Refused { .. } | HandOverError::State(_) => StatusCode::UNPROCESSABLE_ENTITY,
        HandOverError::NotFound => StatusCode::NOT_FOUND,
        HandOverError::Upstream(_) => StatusCode::BAD_GATEWAY,
        HandOverError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Whether a new-home transfer waits for the other server (the pages
/// reload themselves).
fn waiting_target(state: &str) -> bool {
    matches!(
        state,
        target::REQUESTED | target::APPROVED | target::RECEIVING | target::IMPORTING
    )
}

/// The hand-over form; `first` is the account creation (password twice),
/// else signing in to resume an interrupted import.
fn handover_form(id: Uuid, username: &str, first: bool, b: &mut String) {
    let id = id.hyphenated();
    let _ = write!(
        b,
        "<form method=\"post\" action=\"/federation/transfer/{id}\" id=\"handover\" \
         data-transfer=\"{id}\">\
         <label for=\"key\">Your key (filled in from your old server's link)</label>\
         <textarea id=\"key\" name=\"key\" autocomplete=\"off\" spellcheck=\"false\"{req}></textarea>\
         <label for=\"approval\">Your approval (filled in from the same link)</label>\
         <textarea id=\"approval\" name=\"approval\" autocomplete=\"off\" spellcheck=\"false\"{req}></textarea>\
         <label for=\"username\">{user_label}</label>\
         <input id=\"username\" name=\"username\" autocomplete=\"username\" autocapitalize=\"none\" \
         spellcheck=\"false\" required value=\"{}\">\
         <label for=\"password\">Password</label>\
         <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"{pw}\" required>",
        esc(username),
        req = if first { " required" } else { "" },
        user_label = if first {
            "Choose a username on this server"
        } else {
            "Your username on this server"
        },
        pw = if first {
            "new-password"
        } else {
            "current-password"
        },
    );
    if first {
        b.push_str(
            "<label for=\"password2\">Password again</label>\
             <input id=\"password2\" name=\"password2\" type=\"password\" \
             autocomplete=\"new-password\" required>\
             <button type=\"submit\">Create my account and import</button></form>",
        );
    } else {
        b.push_str("<button type=\"submit\">Sign in and continue</button></form>");
    }
}

/// The card of a pending transfer request on the patient's page.
pub(crate) fn pending_card(r: &AccessRequest, csrf: &str, problem: Option<&str>, b: &mut String) {
    let id = r.id.hyphenated().to_string();
    let _ = write!(
        b,
        "<div class=\"card\" id=\"req-{id}\"><h3>Move your whole record to {} (asked by {})</h3>\
         <p>Your whole record is copied to <strong>{}</strong>, sealed with a key that this \
         browser makes and keeps. You then finish the move there with your key.</p>\
         <p class=\"muted\">Answer before {}.</p>",
        esc(&r.server_fqdn),
        esc(&r.doctor),
        esc(&r.server_fqdn),
        esc(&html::time(r.expires_at)),
    );
    if let Some(p) = problem {
        html::message(b, p, true);
    }
    let _ = write!(
        b,
        "<form method=\"post\" action=\"/federation/patient/transfers/{id}/approve\" \
         data-transfer=\"{id}\">"
    );
    html::csrf_field(b, csrf);
    let _ = write!(
        b,
        "<label for=\"code-{id}\">The code the doctor's page shows</label>\
         <input class=\"code\" id=\"code-{id}\" name=\"code\" type=\"text\" \
         autocomplete=\"off\" inputmode=\"text\" autocapitalize=\"characters\" \
         spellcheck=\"false\" required maxlength=\"{MAX_CODE_LEN}\"{}>\
         <input type=\"hidden\" name=\"key\" value=\"\">\
         <p class=\"muted key-status\" role=\"status\"></p>\
         <button type=\"submit\">Approve the move</button>\
         <button class=\"danger\" type=\"submit\" formnovalidate \
         formaction=\"/federation/patient/requests/{id}/deny\">Deny</button></form></div>",
        if problem.is_some() { " autofocus" } else { "" }
    );
}

/// "Your moves" on the patient's page.
pub(crate) fn moves(transfers: &[TransferView], b: &mut String) {
    if transfers.is_empty() {
        return;
    }
    b.push_str("<section aria-labelledby=\"moves\"><h2 id=\"moves\">Your moves</h2>");
    for v in transfers {
        let id = v.transfer.id.hyphenated().to_string();
        let server = &v.transfer.peer_fqdn;
        let _ = write!(
            b,
            "<div class=\"card\" id=\"move-{id}\"><h3>To {}</h3><p>{}</p>",
            esc(server),
            esc(&source_sentence(v))
        );
        if v.state() == source::DELIVERED {
            match &v.data.approval {
                Some(approval) => {
                    let _ = write!(
                        b,
                        "<p><a data-transfer=\"{id}\" \
                         href=\"https://{}/federation/transfer/{id}#approval={}\">Continue on {}</a></p>\
                         <p class=\"error\" id=\"nokey-{id}\" hidden>The key is not in this \
                         browser: open this page in the browser where you approved the move.</p>",
                        esc(server),
                        esc(approval),
                        esc(server)
                    );
                }
                None => {
                    let _ = write!(
                        b,
                        "<p>Continue on https://{}/federation/transfer/{id}</p>",
                        esc(server)
                    );
                }
            }
        }
        b.push_str("</div>");
    }
    b.push_str("</section>");
}

/// Where an old-home transfer stands, for the patient.
fn source_sentence(v: &TransferView) -> String {
    let server = &v.transfer.peer_fqdn;
    match v.state() {
        source::APPROVED => "Approved: this server is packing your record.".to_owned(),
        source::EXPORTED => format!("Packed and sealed with your key; sending it to {server}."),
        source::DELIVERED => {
            format!("Your sealed record has arrived at {server}. Continue there to unlock it.")
        }
        source::MOVED => format!(
            "Your record now lives at {}",
            v.data.new_address.as_deref().unwrap_or(server)
        ),
        source::FAILED => "The move did not complete. Your record stays here.".to_owned(),
        other => format!("State: {other}."),
    }
}

/// Where a new-home transfer stands, for the doctor.
pub fn target_sentence(v: &TransferView) -> String {
    let server = &v.transfer.peer_fqdn;
    match v.state() {
        target::REQUESTED => "Waiting for the patient to approve the move.".to_owned(),
        target::APPROVED => format!("Approved. Waiting for {server} to send the record."),
        target::RECEIVING => format!("Receiving the sealed record from {server}…"),
        target::RECEIVED => {
            "Received, still sealed. Waiting for the patient to unlock it here.".to_owned()
        }
        target::IMPORTING => "Importing the record…".to_owned(),
        target::IMPORTED => "Imported.".to_owned(),
        target::CONFIRMED => "Imported, and the old server has been told.".to_owned(),
        target::DENIED => "The patient denied the move.".to_owned(),
        target::VOIDED => {
            "Too many wrong codes were typed: the request is void. Start a new one.".to_owned()
        }
        target::EXPIRED => "The request expired before the patient answered.".to_owned(),
        target::CANCELLED => "The request was withdrawn.".to_owned(),
        target::FAILED => "The move failed.".to_owned(),
        other => format!("State: {other}."),
    }
}

/// The kept bundle's counts and downloads on the doctor's transfer page.
fn bundle_summary(v: &TransferView, b: &mut String) {
    let id = v.transfer.id.hyphenated();
    b.push_str(
        "<h2>The record received</h2><div class=\"scroll\"><table><thead><tr>\
         <th scope=\"col\">Part</th><th scope=\"col\">Records</th></tr></thead><tbody>",
    );
    for (part, count) in &v.data.counts {
        let _ = write!(b, "<tr><td>{}</td><td>{count}</td></tr>", esc(part));
    }
    let i = &v.data.imported;
    let _ = write!(
        b,
        "</tbody></table></div><p>Imported into this server: {} profile, {} vital signs, \
         {} symptoms.</p><ul class=\"plain\">\
         <li><a href=\"/federation/doctor/transfers/{id}/bundle.jsonl\">Download the bundle \
         (JSON lines)</a></li>\
         <li><a href=\"/federation/doctor/transfers/{id}/bundle.fhir.json\">Download as FHIR R4 \
         (JSON)</a></li></ul>",
        i.profile, i.vitals, i.symptoms
    );
}

/// The "move a patient here" form on the doctor's page.
pub(crate) fn start_form(csrf: &str, payload: &str, b: &mut String) {
    b.push_str(
        "<h2 id=\"move\">Move a patient to this server</h2>\
         <p>For a patient who changes to this server for good: paste the text under their \
         QR code. You then get a code to show them; their whole record comes here once \
         they approve.</p><form method=\"post\" action=\"/federation/doctor/transfers\">",
    );
    html::csrf_field(b, csrf);
    let _ = write!(
        b,
        "<label for=\"transfer-payload\">The patient's code (the text under their QR code)</label>\
         <input id=\"transfer-payload\" name=\"payload\" type=\"text\" required autocomplete=\"off\" \
         autocapitalize=\"none\" spellcheck=\"false\" maxlength=\"{}\" placeholder=\"mdgate:…\" \
         value=\"{}\"><button type=\"submit\">Start the move</button></form>",
        super::doctor::MAX_PAYLOAD_LEN,
        esc(payload)
    );
}

/// The doctor's transfers on their page.
pub(crate) fn transfers_table(transfers: &[TransferView], b: &mut String) {
    b.push_str("<h2 id=\"transfers\">Your moves</h2>");
    if transfers.is_empty() {
        b.push_str("<p>None yet.</p>");
        return;
    }
    b.push_str(
        "<div class=\"scroll\"><table><thead><tr><th scope=\"col\">Patient</th>\
         <th scope=\"col\">From</th><th scope=\"col\">State</th><th scope=\"col\">Started</th>\
         </tr></thead><tbody>",
    );
    for v in transfers {
        let _ = write!(
            b,
            "<tr><td><a href=\"/federation/doctor/transfers/{}\">{}</a></td><td>{}</td>\
             <td>{}</td><td>{}</td></tr>",
            v.transfer.id.hyphenated(),
            esc(&v.data.patient_address),
            esc(&v.transfer.peer_fqdn),
            esc(v.state()),
            esc(&html::time(v.transfer.created_at))
        );
    }
    b.push_str("</tbody></table></div>");
}

/// Reads a kept bundle whole.
async fn read_bundle(path: &std::path::Path) -> Result<Bytes, AccessError> {
    tokio::fs::read(path).await.map(Bytes::from).map_err(|e| {
        tracing::error!(error = %e, "cannot read a kept transfer bundle");
        AccessError::Internal
    })
}

/// A file to download.
fn download(body: Bytes, content_type: &'static str, filename: &str) -> Reply {
    let disposition = HeaderValue::try_from(format!("attachment; filename=\"{filename}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment"));
    Reply {
        status: StatusCode::OK,
        body,
        content_type,
        location: None,
        cookies: Vec::new(),
        csp: Some("default-src 'none'; sandbox".to_owned()),
        extra: Vec::new(),
    }
    .header(header::CONTENT_DISPOSITION, disposition)
}

/// A kept bundle (JSON lines) as a FHIR R4 collection Bundle; `server`
/// is the old home the record was read from.
pub(crate) fn fhir_of(bundle: &[u8], server: &str) -> Result<Vec<u8>, BundleError> {
    let mut out = Vec::with_capacity(bundle.len() + bundle.len() / 2);
    let mut writer: Option<FhirWriter> = None;
    let mut reader = BundleReader::new(MAX_LINE);
    reader.feed(bundle, &mut |item| {
        match item {
            Item::Header(h) => writer = Some(FhirWriter::new(&h, server, &mut out)),
            Item::Record { part, data } => {
                let element = |detail: String| BundleError::Element { part, detail };
                // The reader refuses a record before the header.
                let w = writer
                    .as_mut()
                    .ok_or_else(|| element("before the header".to_owned()))?;
                let value: serde_json::Value =
                    serde_json::from_str(data.get()).map_err(|e| element(e.to_string()))?;
                w.push(part, &value, &mut out)
                    .map_err(|e| element(e.to_string()))?;
            }
        }
        Ok(())
    })?;
    reader.finish()?;
    let writer = writer.ok_or(BundleError::MissingHeader { line: 1 })?;
    writer.finish(&mut out).map_err(|e| BundleError::Element {
        part: crate::transfer::bundle::Part::Patient,
        detail: e.to_string(),
    })?;
    Ok(out)
}
