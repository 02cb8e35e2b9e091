//! WatchEvents: the request's filters and resume point checked and turned
//! into an `EventFilter`, the events into messages.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use tonic::{Request, Response, Status};
use vmr_ports::driving::events::{Event, EventFilter, EventType, Since, Watched};
use vmr_proto::v1 as pb;

use super::service::{Core, ServerStream};
use super::status::to_status;

/// More filters than anyone types; a request with more is refused whole.
pub const MAX_FILTERS: usize = 64;
/// The longest filter value (a name or a reference).
const MAX_VALUE: usize = 512;

fn filter(request: pb::WatchEventsRequest) -> Result<EventFilter, Status> {
    if request.filters.len() > MAX_FILTERS {
        return Err(Status::resource_exhausted(format!(
            "filters: {} given, at most {MAX_FILTERS}",
            request.filters.len()
        )));
    }
    let mut filter = EventFilter::default();
    for (i, f) in request.filters.into_iter().enumerate() {
        if f.value.len() > MAX_VALUE {
            return Err(Status::resource_exhausted(format!(
                "filters[{i}].value: {} bytes, at most {MAX_VALUE}",
                f.value.len()
            )));
        }
        match f.key.as_str() {
            "type" => filter.types.push(EventType::parse(&f.value).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "filters[{i}].value: unknown event type '{}' (vm, image, network, compose)",
                    f.value
                ))
            })?),
            "name" if !f.value.is_empty() => filter.names.push(f.value),
            "name" => {
                return Err(Status::invalid_argument(format!(
                    "filters[{i}].value: a name filter needs a name"
                )));
            }
            key => {
                return Err(Status::invalid_argument(format!(
                    "filters[{i}].key: unknown filter '{key}' (type, name)"
                )));
            }
        }
    }
    filter.since = match (request.since_sequence, request.since_unix_nanos) {
        (0, 0) => Since::Now,
        (sequence, 0) => Since::Sequence(sequence),
        (0, nanos) => {
            let nanos = u64::try_from(nanos).map_err(|_| {
                Status::invalid_argument("since_unix_nanos: must be after 1970-01-01")
            })?;
            Since::Time(UNIX_EPOCH + Duration::from_nanos(nanos))
        }
        _ => {
            return Err(Status::invalid_argument(
                "since_sequence: give a sequence or a time (since_unix_nanos), not both",
            ));
        }
    };
    Ok(filter)
}

fn nanos(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn message(watched: Watched) -> pb::Event {
    match watched {
        Watched::Event(Event {
            sequence,
            time,
            kind,
            action,
            name,
            attributes,
        }) => pb::Event {
            sequence,
            timestamp_unix_nanos: nanos(time),
            r#type: kind.as_str().to_string(),
            action,
            name,
            attributes: attributes.into_iter().collect(),
            dropped: 0,
        },
        Watched::Dropped { count } => pb::Event {
            sequence: 0,
            timestamp_unix_nanos: nanos(SystemTime::now()),
            r#type: "events".to_string(),
            action: "dropped".to_string(),
            name: String::new(),
            attributes: Default::default(),
            dropped: count,
        },
    }
}

pub fn watch_events(
    core: &Core,
    request: Request<pb::WatchEventsRequest>,
) -> Result<Response<ServerStream<pb::Event>>, Status> {
    let filter = filter(request.into_inner())?;
    let events = core.events.watch(filter).map_err(to_status)?;
    Ok(Response::new(events.map(|w| Ok(message(w))).boxed()))
}
