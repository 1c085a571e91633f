//! The HTML pages: what JavalinVue renders for H1–H8 and for every 401/403.
//!
//! The real pages are access.md's Vue layout with the route component and
//! its dependencies inlined, a `Vue.prototype.$javalin` state script, and the
//! route component tag inside `<main id="main-vue" v-cloak>`. The markup here
//! is the emulator's own, with the same structure: it starts with
//! `<!DOCTYPE html>\n<html>\n    <head>`, has a `<template id="…">` and a
//! `Vue.component(…)` script per component, carries the route component tag
//! (`<login></login>` on auth failures), and is several KB long, so it is
//! gzip-compressed whenever the client allows it.

use std::fmt::Write as _;

use super::jackson::{write_array, write_str, Obj};

/// The Vue route components the server renders.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum View {
    Login,
    DoctorHome,
    PatientList,
    PatientProfile,
    PatientQuestions,
    AddPatientQuestion,
    EditPatientQuestion,
    AdminHome,
}

impl View {
    /// The component's tag name.
    pub(crate) fn tag(self) -> &'static str {
        match self {
            View::Login => "login",
            View::DoctorHome => "doctor-home",
            View::PatientList => "patient-list",
            View::PatientProfile => "patient-profile",
            View::PatientQuestions => "patient-questions",
            View::AddPatientQuestion => "add-patient-question",
            View::EditPatientQuestion => "edit-patient-question",
            View::AdminHome => "admin-home",
        }
    }

    /// The components this view pulls in, the view itself first.
    fn components(self) -> &'static [(&'static str, &'static str)] {
        match self {
            View::Login => &[LOGIN, LOGIN_FORM],
            View::DoctorHome => &[
                ("doctor-home", "<doctor-layout><doctor-feed></doctor-feed></doctor-layout>"),
                DOCTOR_LAYOUT,
                DOCTOR_FEED,
            ],
            View::PatientList => &[
                ("patient-list", "<doctor-layout><patients-table></patients-table></doctor-layout>"),
                DOCTOR_LAYOUT,
                PATIENTS_TABLE,
            ],
            View::PatientProfile => &[
                (
                    "patient-profile",
                    "<doctor-layout><patient-card :patient-id=\"$javalin.pathParams.patientId\"></patient-card></doctor-layout>",
                ),
                DOCTOR_LAYOUT,
                PATIENT_CARD,
            ],
            View::PatientQuestions => &[
                (
                    "patient-questions",
                    "<doctor-layout><question-table :patient-id=\"$javalin.pathParams.patientId\"></question-table></doctor-layout>",
                ),
                DOCTOR_LAYOUT,
                QUESTION_TABLE,
            ],
            View::AddPatientQuestion => &[
                (
                    "add-patient-question",
                    "<doctor-layout><question-editor :patient-id=\"$javalin.pathParams.patientId\"></question-editor></doctor-layout>",
                ),
                DOCTOR_LAYOUT,
                QUESTION_EDITOR,
            ],
            View::EditPatientQuestion => &[
                (
                    "edit-patient-question",
                    "<doctor-layout><question-editor :patient-id=\"$javalin.pathParams.patientId\" :question-id=\"$javalin.pathParams.questionId\"></question-editor></doctor-layout>",
                ),
                DOCTOR_LAYOUT,
                QUESTION_EDITOR,
            ],
            View::AdminHome => &[
                ("admin-home", "<div class=\"admin\"><doctor-form></doctor-form></div>"),
                DOCTOR_FORM,
            ],
        }
    }
}

const LOGIN: (&str, &str) = (
    "login",
    r#"<div class="login-page">
            <aside class="brand">
                <h1>access.md</h1>
                <p>Remote follow-up for patients and their doctors.</p>
            </aside>
            <login-form></login-form>
        </div>"#,
);

const LOGIN_FORM: (&str, &str) = (
    "login-form",
    r#"<section class="login-form">
            <form @submit.prevent="submit">
                <div class="form-group">
                    <label for="username">Username</label>
                    <input id="username" v-model="username" type="text" class="form-control" placeholder="Username" autocomplete="username">
                </div>
                <div class="form-group">
                    <label for="password">Password</label>
                    <input id="password" v-model="password" type="password" class="form-control" placeholder="Password" autocomplete="current-password">
                </div>
                <p class="error" v-if="failed">The username or password is not correct.</p>
                <button type="submit" class="btn btn-dark">Sign in</button>
            </form>
        </section>"#,
);

const DOCTOR_LAYOUT: (&str, &str) = (
    "doctor-layout",
    r#"<div class="doctor-layout">
            <nav class="sidebar">
                <a href="/dashboard">Dashboard</a>
                <a href="/patient">Patients</a>
            </nav>
            <section class="content"><slot></slot></section>
        </div>"#,
);

const DOCTOR_FEED: (&str, &str) = (
    "doctor-feed",
    r#"<ul class="feed">
            <li v-for="item in items" :key="item.type + item.entityId">
                <a :href="'/patient/' + item.patientId">{{ item.patientName }}</a>
                <span class="kind">{{ item.type }}</span>
                <span class="value">{{ item.value }}</span>
                <time>{{ new Date(item.time).toLocaleString() }}</time>
            </li>
        </ul>"#,
);

const PATIENTS_TABLE: (&str, &str) = (
    "patients-table",
    r#"<table class="table">
            <thead><tr><th>Name</th><th>Telephone</th><th>Age</th></tr></thead>
            <tbody>
                <tr v-for="p in patients" :key="p.id">
                    <td><a :href="'/patient/' + p.id">{{ p.firstName }} {{ p.lastName }}</a></td>
                    <td>{{ p.telephoneNumber }}</td>
                    <td>{{ p.profile && p.profile.age }}</td>
                </tr>
            </tbody>
        </table>"#,
);

const PATIENT_CARD: (&str, &str) = (
    "patient-card",
    r#"<article class="patient-card" v-if="patient">
            <h2>{{ patient.firstName }} {{ patient.lastName }}</h2>
            <dl>
                <dt>Age</dt><dd>{{ patient.profile.age }}</dd>
                <dt>Height</dt><dd>{{ patient.profile.height }}</dd>
                <dt>Weight</dt><dd>{{ patient.profile.weight }}</dd>
                <dt>Medications</dt><dd>{{ patient.profile.medications.join(", ") }}</dd>
            </dl>
            <a :href="'/patient/' + patientId + '/question'">Questions</a>
        </article>"#,
);

const QUESTION_TABLE: (&str, &str) = (
    "question-table",
    r#"<table class="table">
            <thead><tr><th>Question</th><th>Type</th><th>Answered</th></tr></thead>
            <tbody>
                <tr v-for="q in questions" :key="q.id">
                    <td><a :href="'/patient/' + patientId + '/question/' + q.id">{{ q.question }}</a></td>
                    <td>{{ q.type }}</td>
                    <td>{{ q.answered ? "yes" : "no" }}</td>
                </tr>
            </tbody>
        </table>"#,
);

const QUESTION_EDITOR: (&str, &str) = (
    "question-editor",
    r#"<form class="question-editor" @submit.prevent="save">
            <label>Question <input v-model="question.question" class="form-control"></label>
            <label>Type
                <select v-model="question.type" class="form-control">
                    <option>Scale</option><option>Binary</option><option>Text</option><option>Vitals</option>
                </select>
            </label>
            <label><input type="checkbox" v-model="question.recurring"> Recurring</label>
            <button type="submit" class="btn btn-dark">Save</button>
        </form>"#,
);

const DOCTOR_FORM: (&str, &str) = (
    "doctor-form",
    r#"<form class="doctor-form" @submit.prevent="create">
            <input v-model="doctor.username" class="form-control" placeholder="Username">
            <input v-model="doctor.password" type="password" class="form-control" placeholder="Password">
            <input v-model="doctor.firstName" class="form-control" placeholder="First name">
            <input v-model="doctor.lastName" class="form-control" placeholder="Last name">
            <button type="submit" class="btn btn-dark">Add doctor</button>
        </form>"#,
);

const HEAD: &str = r#"<!DOCTYPE html>
<html>
    <head>
        <meta charset="utf8"/>
        <title>access.md</title>
        <script src="/webjars/vue/2.6.10/dist/vue.min.js"></script>
        <script src="/webjars/chartjs/2.8.0/Chart.bundle.min.js"></script>
        <script src="/static/js/utils/api.js"></script>
        <script src="/static/js/utils/icpc.js"></script>
        <link rel="stylesheet" href="/static/css/lib/bootstrap.min.css">
        <link rel="stylesheet" href="/webjars/font-awesome/5.14.0/css/all.min.css">
        <link rel="stylesheet" href="/static/css/app.css">
"#;

const TAIL: &str = r##"
        </main>
        <script>
            new Vue({el: "#main-vue"});
        </script>
    </body>
</html>"##;

/// Escapes text for HTML, as JavalinVue does to path and query parameters.
fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            _ => out.push(c),
        }
    }
    out
}

/// Renders a page for `view`. `path_params` and `query` feed the
/// `$javalin` state script, as JavalinVue does for every page it renders.
pub(crate) fn render(
    view: View,
    path_params: &[(&str, String)],
    query: &[(String, Vec<String>)],
) -> String {
    let mut out = String::with_capacity(6 * 1024);
    out.push_str(HEAD);
    for (tag, body) in view.components() {
        let _ = write!(
            out,
            "\n<!-- {tag}.vue -->\n<template id=\"{tag}\">\n    <div>\n        {body}\n    </div>\n</template>\n<script>\n    Vue.component(\"{tag}\", {{\n        template: \"#{tag}\",\n        props: [\"patientId\", \"questionId\"],\n        data: () => ({{ items: [], patients: [], questions: [], patient: null, question: {{}}, doctor: {{}}, username: \"\", password: \"\", failed: false }}),\n        methods: {{\n            submit() {{ window.apiService.login(this.username, this.password).catch(() => {{ this.failed = true; }}); }},\n            save() {{}},\n            create() {{}}\n        }}\n    }});\n</script>\n"
        );
    }
    out.push_str("\n<script>\n    Vue.prototype.$javalin = {\n        pathParams: ");
    let mut o = Obj::open(&mut out);
    for (name, value) in path_params {
        o.with(&escape_html(name), |out| {
            write_str(out, &escape_html(value))
        });
    }
    o.close();
    out.push_str(",\n        queryParams: ");
    let mut o = Obj::open(&mut out);
    for (name, values) in query {
        o.with(&escape_html(name), |out| {
            write_array(out, values, |out, v| write_str(out, &escape_html(v)))
        });
    }
    o.close();
    out.push_str(",\n        state: {}\n    }\n</script>\n");
    let tag = view.tag();
    let _ = write!(
        out,
        "    <body>\n        <main id=\"main-vue\" v-cloak>\n            <{tag}></{tag}>"
    );
    out.push_str(TAIL);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_page_shape() {
        let page = render(
            View::Login,
            &[("id", "5<".to_owned())],
            &[("a".to_owned(), vec!["b".to_owned()])],
        );
        assert!(page.starts_with("<!DOCTYPE html>\n<html>\n    <head>"));
        assert!(page.contains("<login></login>"));
        assert!(page.contains("<template id=\"login-form\">"));
        assert!(page.contains("pathParams: {\"id\":\"5&lt;\"}"));
        assert!(page.contains("queryParams: {\"a\":[\"b\"]}"));
        assert!(
            page.len() > 3000,
            "several KB, so it is gzipped: {}",
            page.len()
        );
    }

    #[test]
    fn every_view_is_large_enough_to_compress() {
        for view in [
            View::Login,
            View::DoctorHome,
            View::PatientList,
            View::PatientProfile,
            View::PatientQuestions,
            View::AddPatientQuestion,
            View::EditPatientQuestion,
            View::AdminHome,
        ] {
            let page = render(view, &[], &[]);
            assert!(page.len() >= 1500, "{view:?}");
            assert!(page.contains(&format!("<{0}></{0}>", view.tag())));
        }
    }
}
