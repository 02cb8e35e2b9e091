//! `vmr events`: follows the daemon's events as `docker events` does, one
//! line each (`-o json`: one JSON object a line), until interrupted.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use serde_json::{Value, json};
use vmr_proto::v1 as pb;

use super::Session;
use super::connect::{Reply, RpcError};
use super::json::print_json_line;

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Only matching events: `type=vm|image|network|compose`, `name=NAME`
    /// (a VM, network or project name, or an image reference); repeated
    /// filters of one key are alternatives
    #[arg(short, long = "filter", value_name = "KEY=VALUE")]
    pub filters: Vec<String>,
    /// Replay the events from this time on, still remembered by the daemon:
    /// RFC 3339 (`2026-12-07T05:00:00Z`) or a duration ago (`10m`, `1h30m`)
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Resume after this event's sequence number (the `sequence` of an
    /// event seen before)
    #[arg(long, value_name = "SEQUENCE", conflicts_with = "since")]
    pub after: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum EventsArgsError {
    #[error("--filter {0}: expected KEY=VALUE (type=vm, name=web)")]
    Filter(String),
    #[error("--since {0}: not an RFC 3339 time nor a duration like 10m")]
    Since(String),
}

fn request(args: &EventsArgs, now: SystemTime) -> Result<pb::WatchEventsRequest, EventsArgsError> {
    let filters = args
        .filters
        .iter()
        .map(|f| match f.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok(pb::EventFilter {
                key: key.to_string(),
                value: value.to_string(),
            }),
            _ => Err(EventsArgsError::Filter(f.clone())),
        })
        .collect::<Result<_, _>>()?;
    let since_unix_nanos = match &args.since {
        None => 0,
        Some(since) => {
            let at = since_time(since, now).ok_or_else(|| EventsArgsError::Since(since.clone()))?;
            let nanos = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
            i64::try_from(nanos).unwrap_or(i64::MAX)
        }
    };
    Ok(pb::WatchEventsRequest {
        filters,
        since_sequence: args.after.unwrap_or(0),
        since_unix_nanos,
    })
}

fn since_time(since: &str, now: SystemTime) -> Option<SystemTime> {
    if let Ok(at) = since.parse::<jiff::Timestamp>() {
        return Some(UNIX_EPOCH + Duration::from_nanos(u64::try_from(at.as_nanosecond()).ok()?));
    }
    let ago = since.parse::<jiff::SignedDuration>().ok()?;
    now.checked_sub(Duration::try_from(ago).ok()?)
}

fn timestamp(nanos: i64) -> String {
    jiff::Timestamp::from_nanosecond(i128::from(nanos))
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// `2026-12-07T05:59:00.1Z vm die web (cause=crashed)`, as docker prints.
fn line(event: &pb::Event) -> String {
    let time = timestamp(event.timestamp_unix_nanos);
    if event.dropped > 0 {
        return format!(
            "{time} events dropped {} events went past unseen (this client was too slow)",
            event.dropped
        );
    }
    let mut attributes: Vec<_> = event.attributes.iter().collect();
    attributes.sort();
    let attributes: Vec<String> = attributes.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut line = format!("{time} {} {} {}", event.r#type, event.action, event.name);
    if !attributes.is_empty() {
        line.push_str(&format!(" ({})", attributes.join(", ")));
    }
    line
}

fn to_json(event: &pb::Event) -> Value {
    let mut value = json!({
        "sequence": event.sequence,
        "time": timestamp(event.timestamp_unix_nanos),
        "type": event.r#type,
        "action": event.action,
        "name": event.name,
        "attributes": event.attributes.iter().collect::<std::collections::BTreeMap<_, _>>(),
    });
    if event.dropped > 0 {
        value["dropped"] = json!(event.dropped);
    }
    value
}

pub async fn run(session: &Session, args: EventsArgs) -> anyhow::Result<()> {
    let request = request(&args, SystemTime::now())?;
    let mut client = session.client().await?;
    let mut stream = client.watch_events(request).await.reply()?;
    let json = session.output.is_json();
    while let Some(event) = stream.message().await.map_err(RpcError)? {
        if json {
            print_json_line(&to_json(&event));
        } else {
            println!("{}", line(&event));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(filters: &[&str], since: Option<&str>) -> EventsArgs {
        EventsArgs {
            filters: filters.iter().map(|f| f.to_string()).collect(),
            since: since.map(str::to_string),
            after: None,
        }
    }

    #[test]
    fn filters_and_since_become_the_request() {
        let now = UNIX_EPOCH + Duration::from_secs(10_000);
        let request = request(&args(&["type=vm", "name=a=b"], Some("10m")), now).unwrap();
        assert_eq!(request.filters[0].key, "type");
        assert_eq!(request.filters[1].value, "a=b");
        assert_eq!(request.since_unix_nanos, 9_400 * 1_000_000_000);
        let at = request_since("2026-12-07T05:00:00Z");
        assert_eq!(at, 1_796_619_600 * 1_000_000_000);
    }

    fn request_since(since: &str) -> i64 {
        request(&args(&[], Some(since)), SystemTime::now())
            .unwrap()
            .since_unix_nanos
    }

    #[test]
    fn a_bad_filter_or_time_names_the_flag() {
        let err = request(&args(&["vm"], None), SystemTime::now()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--filter vm: expected KEY=VALUE (type=vm, name=web)"
        );
        let err = request(&args(&[], Some("yesterday")), SystemTime::now()).unwrap_err();
        assert!(err.to_string().starts_with("--since yesterday:"), "{err}");
    }

    #[test]
    fn lines_read_like_docker_events() {
        let event = pb::Event {
            sequence: 7,
            timestamp_unix_nanos: 1_000_000_000,
            r#type: "vm".into(),
            action: "die".into(),
            name: "web".into(),
            attributes: [("cause".to_string(), "crashed".to_string())].into(),
            dropped: 0,
        };
        assert_eq!(
            line(&event),
            "1970-01-01T00:00:01Z vm die web (cause=crashed)"
        );
        assert_eq!(to_json(&event)["sequence"], 7);
    }
}
