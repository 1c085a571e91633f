//! A remote patient's record, as the doctor's page shows it: the JSON
//! server1 returned for one part, read into access.md's own shapes and
//! shown as tables (vitals, symptoms, answers, questions) or definition
//! lists (record, profile). A part that does not have the expected shape
//! is shown as indented JSON, and every part has the JSON as received
//! under a `<details>`, so nothing is ever hidden.

use std::fmt::Write as _;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::html::{self, esc};
use crate::policy::RouteId;
use crate::upstream::{
    Answer, MedicalProfile, Patient, Question, QuestionType, Sex, Symptom, VitalsMeasurement,
};

/// The parts a doctor can read, in the order the page lists them.
pub const PARTS: [RouteId; 6] = [
    RouteId::Record,
    RouteId::Profile,
    RouteId::Vitals,
    RouteId::Symptoms,
    RouteId::Answers,
    RouteId::Questions,
];

/// A part's title.
pub fn title(part: RouteId) -> &'static str {
    match part {
        RouteId::Record => "Patient",
        RouteId::Profile => "Medical profile",
        RouteId::Vitals => "Vital signs",
        RouteId::Symptoms => "Symptoms",
        RouteId::Answers => "Answers",
        RouteId::Questions | RouteId::AskQuestion => "Questions",
    }
}

/// Renders `value`, the JSON of `part`, into `out`.
pub fn render(part: RouteId, value: &Value, out: &mut String) {
    let shown = match part {
        RouteId::Record => parse::<Patient>(value).map(|p| patient(&p, out)),
        RouteId::Profile => parse::<MedicalProfile>(value)
            .filter(|_| looks_like_profile(value))
            .map(|p| profile(&p, out)),
        RouteId::Vitals => parse::<Vec<VitalsMeasurement>>(value).map(|v| vitals(&v, out)),
        RouteId::Symptoms => parse::<Vec<Symptom>>(value).map(|v| symptoms(&v, out)),
        RouteId::Answers => parse::<Vec<Answer>>(value).map(|v| answers(&v, out)),
        RouteId::Questions => parse::<Vec<Question>>(value).map(|v| questions(&v, out)),
        RouteId::AskQuestion => None,
    };
    match shown {
        // The read models skip keys they do not know: the whole answer
        // stays one click away.
        Some(()) => {
            out.push_str("<details><summary>All the data as received</summary>");
            raw(value, out);
            out.push_str("</details>");
        }
        None => raw(value, out),
    }
}

/// Every key of a profile is optional in the read model, so any object
/// would parse: ask for at least one key a profile has.
fn looks_like_profile(value: &Value) -> bool {
    const KEYS: [&str; 6] = ["age", "height", "weight", "sex", "medications", "diabetes"];
    value
        .as_object()
        .is_some_and(|o| KEYS.iter().any(|k| o.contains_key(*k)))
}

fn parse<T: DeserializeOwned>(value: &Value) -> Option<T> {
    T::deserialize(value).ok()
}

/// Indented JSON, escaped.
pub fn raw(value: &Value, out: &mut String) {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    let _ = write!(out, "<pre>{}</pre>", esc(&text));
}

/// A measurement without needless decimals.
fn number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

fn date(ms: Option<i64>) -> String {
    ms.map(html::time).unwrap_or_else(|| "—".to_owned())
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn item(out: &mut String, term: &str, value: &str) {
    let _ = write!(out, "<dt>{}</dt><dd>{}</dd>", esc(term), esc(value));
}

fn patient(p: &Patient, out: &mut String) {
    out.push_str("<dl>");
    item(out, "Name", &p.user.display_name());
    if let Some(t) = p.user.telephone_number.as_deref().filter(|t| !t.is_empty()) {
        item(out, "Telephone", t);
    }
    if p.user.creation_date.is_some() {
        item(out, "Account since", &date(p.user.creation_date));
    }
    out.push_str("</dl>");
    if let Some(prof) = &p.profile {
        out.push_str("<h3>Medical profile</h3>");
        profile(prof, out);
    }
}

fn profile(p: &MedicalProfile, out: &mut String) {
    out.push_str("<dl>");
    item(out, "Age", &p.age.to_string());
    item(out, "Height", &format!("{} cm", number(p.height)));
    item(out, "Weight", &format!("{} kg", number(p.weight)));
    let sex = match p.sex {
        Some(Sex::Female) => "female",
        Some(Sex::Male) => "male",
        Some(Sex::Unknown) | None => "not given",
    };
    item(out, "Sex", sex);
    item(out, "G6PD deficiency", yes_no(p.g6pd_deficiency));
    item(out, "Respiratory diseases", yes_no(p.respiratory_diseases));
    item(out, "Diabetes", yes_no(p.diabetes));
    item(
        out,
        "Cardiovascular diseases",
        yes_no(p.cardiovascular_diseases),
    );
    item(out, "Obesity", yes_no(p.obesity));
    let meds = if p.medications.is_empty() {
        "none listed".to_owned()
    } else {
        p.medications.join(", ")
    };
    item(out, "Medications", &meds);
    if p.update_date.is_some() {
        item(out, "Last updated", &date(p.update_date));
    }
    out.push_str("</dl>");
}

/// Opens a table with a caption and column heads.
fn table(out: &mut String, caption: &str, heads: &[&str]) {
    let _ = write!(
        out,
        "<div class=\"scroll\"><table><caption>{}</caption><thead><tr>",
        esc(caption)
    );
    for h in heads {
        let _ = write!(out, "<th scope=\"col\">{}</th>", esc(h));
    }
    out.push_str("</tr></thead><tbody>");
}

fn row(out: &mut String, cells: &[String]) {
    out.push_str("<tr>");
    for c in cells {
        let _ = write!(out, "<td>{}</td>", esc(c));
    }
    out.push_str("</tr>");
}

fn end_table(out: &mut String) {
    out.push_str("</tbody></table></div>");
}

fn nothing(out: &mut String) {
    out.push_str("<p>Nothing recorded.</p>");
}

fn vitals(v: &[VitalsMeasurement], out: &mut String) {
    if v.is_empty() {
        return nothing(out);
    }
    table(
        out,
        "Measurements",
        &[
            "When",
            "Heart rate (/min)",
            "Blood pressure (mmHg)",
            "Oxygen (%)",
            "Breathing (/min)",
        ],
    );
    for m in v {
        row(
            out,
            &[
                date(m.creation_date),
                number(m.heart_beats_per_minute),
                format!(
                    "{}/{}",
                    number(m.systolic_pressure),
                    number(m.diastolic_pressure)
                ),
                number(m.blood_oxygenation),
                number(m.breathing_rate),
            ],
        );
    }
    end_table(out);
}

fn symptoms(v: &[Symptom], out: &mut String) {
    if v.is_empty() {
        return nothing(out);
    }
    table(out, "Reported symptoms", &["When", "Code (ICPC)", "Note"]);
    for s in v {
        row(
            out,
            &[
                date(s.creation_date),
                s.symptom_code.clone().unwrap_or_default(),
                s.note.clone().unwrap_or_default(),
            ],
        );
    }
    end_table(out);
}

fn answers(v: &[Answer], out: &mut String) {
    if v.is_empty() {
        return nothing(out);
    }
    table(
        out,
        "The patient's answers",
        &["When", "Question", "Answer"],
    );
    for a in v {
        row(
            out,
            &[
                date(a.creation_date),
                a.question
                    .as_ref()
                    .and_then(|q| q.question.clone())
                    .unwrap_or_default(),
                a.answer.clone().unwrap_or_default(),
            ],
        );
    }
    end_table(out);
}

fn question_type(t: Option<QuestionType>) -> &'static str {
    match t {
        Some(QuestionType::Text) => "text",
        Some(QuestionType::Binary) => "yes/no",
        Some(QuestionType::Scale) => "scale",
        Some(QuestionType::Vitals) => "vitals",
        Some(QuestionType::Unknown) | None => "—",
    }
}

fn questions(v: &[Question], out: &mut String) {
    if v.is_empty() {
        return nothing(out);
    }
    table(
        out,
        "Questions asked",
        &["Asked", "Question", "Kind", "Answered", "Recurring"],
    );
    for q in v {
        let answered = if q.answered {
            match q.answered_on {
                Some(t) => format!("yes, {}", html::time(t)),
                None => "yes".to_owned(),
            }
        } else {
            "no".to_owned()
        };
        row(
            out,
            &[
                date(q.creation_date),
                q.question.clone().unwrap_or_default(),
                question_type(q.kind).to_owned(),
                answered,
                yes_no(q.recurring).to_owned(),
            ],
        );
    }
    end_table(out);
}
