use std::collections::BTreeMap;

use super::*;

fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    text.lines().find(|l| l.starts_with(prefix))
}

#[test]
fn calls_and_bytes_are_counted_and_the_snapshot_shown() {
    let metrics = PrometheusMetrics::new();
    let list = "/vmregistry.v1.VMService/ListImages";
    metrics.call_finished(list, 0, Duration::from_millis(3));
    metrics.call_finished(list, 0, Duration::from_millis(5));
    metrics.call_finished(list, 5, Duration::from_millis(1));
    metrics.image_bytes(ByteFlow::Imported, 4096);
    metrics.image_bytes(ByteFlow::Imported, 1);
    let snapshot = MetricsSnapshot {
        vms_by_state: BTreeMap::from([("running".into(), 2), ("stopped".into(), 0)]),
        images: Some(3),
        store_bytes: Some(12345),
        reachable: BTreeMap::from([("hypervisor".into(), true), ("registry".into(), false)]),
    };
    let text = metrics.render(&snapshot);
    let ok = r#"vmr_grpc_requests_total{service="vmregistry.v1.VMService",method="ListImages",code="OK"} 2"#;
    assert!(text.contains(ok), "{text}");
    assert!(text.contains(r#"code="NOT_FOUND"} 1"#), "{text}");
    assert_eq!(
        line(&text, r#"vmr_grpc_request_duration_seconds_count{service="vmregistry.v1.VMService",method="ListImages"}"#)
            .and_then(|l| l.rsplit(' ').next()),
        Some("3"),
        "{text}"
    );
    assert!(
        text.contains(r#"vmr_image_bytes_total{flow="imported"} 4097"#),
        "{text}"
    );
    assert!(
        text.contains(r#"vmr_image_bytes_total{flow="pushed"} 0"#),
        "{text}"
    );
    assert!(text.contains(r#"vmr_vms{state="running"} 2"#), "{text}");
    assert!(text.contains(r#"vmr_vms{state="stopped"} 0"#), "{text}");
    assert!(text.contains("vmr_images 3\n"), "{text}");
    assert!(text.contains("vmr_store_bytes 12345\n"), "{text}");
    assert!(
        text.contains(r#"vmr_component_up{component="registry"} 0"#),
        "{text}"
    );
    assert!(
        text.contains(r#"vmr_component_up{component="hypervisor"} 1"#),
        "{text}"
    );
}

#[test]
fn a_store_that_did_not_answer_shows_no_store_gauges() {
    let text = PrometheusMetrics::new().render(&MetricsSnapshot::default());
    assert!(!text.contains("vmr_images "), "{text}");
    assert!(!text.contains("vmr_store_bytes "), "{text}");
}

#[test]
fn methods_past_the_bound_count_as_other() {
    let metrics = PrometheusMetrics::new();
    for i in 0..MAX_METHODS + 10 {
        metrics.call_finished(&format!("/junk.S/M{i}"), 12, Duration::ZERO);
    }
    let text = metrics.render(&MetricsSnapshot::default());
    let named = text
        .lines()
        .filter(|l| l.starts_with("vmr_grpc_requests_total{service=\"junk.S\""))
        .count();
    assert_eq!(named, MAX_METHODS);
    assert!(
        text.contains(
            r#"vmr_grpc_requests_total{service="other",method="other",code="UNIMPLEMENTED"} 10"#
        ),
        "{text}"
    );
}

#[test]
fn codes_have_their_canonical_names() {
    assert_eq!(code_name(0), "OK");
    assert_eq!(code_name(3), "INVALID_ARGUMENT");
    assert_eq!(code_name(8), "RESOURCE_EXHAUSTED");
    assert_eq!(code_name(16), "UNAUTHENTICATED");
    assert_eq!(code_name(99), "UNKNOWN");
    assert_eq!(code_name(-1), "UNKNOWN");
}
