//! The admin listener: liveness, readiness and metrics.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::fake;
use crate::gate::{self, Gate, GateOptions};
use crate::support::Upstream;

async fn ready(gate: &Gate) -> (StatusCode, Value) {
    let r = reqwest::get(format!("http://{}/ready", gate.admin))
        .await
        .unwrap();
    (r.status(), r.json().await.unwrap())
}

#[tokio::test]
async fn ready_once_the_store_is_open_and_the_upstream_answers() {
    let up = Upstream::start().await;
    let gate = Gate::start(GateOptions::new(up.base())).await;
    let live = reqwest::get(format!("http://{}/live", gate.admin))
        .await
        .unwrap();
    assert_eq!(live.status(), StatusCode::OK);
    let mut last = None;
    for _ in 0..100 {
        let (status, body) = ready(&gate).await;
        if status == StatusCode::OK {
            assert_eq!(body["store_open"], true);
            assert_eq!(body["upstream_ok"], true);
            last = Some(body);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(last.is_some(), "never ready");
    gate.stop().await;
}

#[tokio::test]
async fn not_ready_while_the_upstream_is_down() {
    let port = fake::closed_port().await;
    let gate = Gate::start(GateOptions::new(&port.to_string())).await;
    // Give the first probe time to run.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = ready(&gate).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["store_open"], true);
    assert_eq!(body["upstream_ok"], false);
    gate.stop().await;
}

#[tokio::test]
async fn metrics_count_connections_and_requests_by_class() {
    let up = Upstream::start().await;
    let gate = Gate::start(GateOptions::new(up.base())).await;
    let http = gate.http1();
    for _ in 0..3 {
        let r = http
            .get(format!("{}/api/symptom/codes", gate.base()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    let r = http.get(format!("{}/", gate.base())).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let m = gate.metrics().await;
    assert_eq!(
        gate::metric(
            &m,
            "mdgate_requests_total{listener=\"public\",route_class=\"api\",status=\"200\"}"
        ),
        3.0,
        "{m}"
    );
    assert_eq!(
        gate::metric(
            &m,
            "mdgate_requests_total{listener=\"public\",route_class=\"page\",status=\"200\"}"
        ),
        1.0
    );
    assert_eq!(
        gate::metric(&m, "mdgate_connections_open{listener=\"public\"}"),
        1.0,
        "one keep-alive connection"
    );
    assert_eq!(
        gate::metric(
            &m,
            "mdgate_request_duration_seconds_count{listener=\"public\",route_class=\"api\"}"
        ),
        3.0,
        "{m}"
    );
    let unknown = reqwest::get(format!("http://{}/nope", gate.admin))
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    gate.stop().await;
}
