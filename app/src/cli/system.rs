//! `vmr health`, `vmr version` and `vmr system check`: what the daemon says
//! about itself and the services it depends on.

use vmr_proto::v1 as pb;

use super::Session;
use super::connect::Reply;
use super::json::{ToJson, print_json, serving_status_word};
use super::output::{or_dash, print_table, table};

const CLIENT_VERSION: &str = env!("CARGO_PKG_VERSION");

async fn health_check(session: &Session) -> anyhow::Result<pb::HealthCheckResponse> {
    Ok(session
        .client()
        .await?
        .health_check(pb::HealthCheckRequest {})
        .await
        .reply()?)
}

pub async fn health(session: &Session) -> anyhow::Result<()> {
    let response = health_check(session).await?;
    if session.output.is_json() {
        print_json(&response.to_json());
    } else {
        print_table(&health_table(&response.components));
    }
    Ok(())
}

fn health_table(components: &[pb::ComponentHealth]) -> comfy_table::Table {
    let mut rows = table(["COMPONENT", "STATUS", "MESSAGE"]);
    for component in components {
        rows.add_row([
            component.name.clone(),
            serving_status_word(component.status).replace('-', " "),
            or_dash(&component.message).to_owned(),
        ]);
    }
    rows
}

/// Prints the client's version first, so that it shows even when the daemon
/// cannot be reached.
pub async fn version(session: &Session) -> anyhow::Result<()> {
    if session.output.is_json() {
        let daemon = health_check(session).await?;
        print_json(&serde_json::json!({
            "client": { "version": CLIENT_VERSION },
            "daemon": { "version": daemon.version },
        }));
        return Ok(());
    }
    println!("Client: {CLIENT_VERSION}");
    let daemon = health_check(session).await?;
    println!("Daemon: {}", daemon.version);
    Ok(())
}

/// Fails unless every configured component serves: a check for scripts and
/// monitoring. (It reads the daemon's health check; a deeper store check
/// can replace it without changing the command.)
pub async fn check(session: &Session) -> anyhow::Result<()> {
    let response = health_check(session).await?;
    if session.output.is_json() {
        print_json(&response.to_json());
    } else {
        print_table(&health_table(&response.components));
    }
    let failing = not_serving(&response.components);
    if failing.is_empty() {
        return Ok(());
    }
    anyhow::bail!("not serving: {}", failing.join(", "))
}

/// Components that are configured but not serving; `not configured` is a
/// choice, not a failure.
fn not_serving(components: &[pb::ComponentHealth]) -> Vec<&str> {
    components
        .iter()
        .filter(|component| {
            !matches!(
                pb::ServingStatus::try_from(component.status),
                Ok(pb::ServingStatus::Serving | pb::ServingStatus::NotConfigured)
            )
        })
        .map(|component| component.name.as_str())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn component(name: &str, status: pb::ServingStatus) -> pb::ComponentHealth {
        pb::ComponentHealth {
            name: name.to_owned(),
            status: status as i32,
            message: String::new(),
        }
    }

    #[test]
    fn check_fails_only_on_configured_components_that_do_not_serve() {
        let components = [
            component("daemon", pb::ServingStatus::Serving),
            component("auth", pb::ServingStatus::NotConfigured),
            component("store", pb::ServingStatus::NotServing),
            component("registry", pb::ServingStatus::Unspecified),
        ];
        assert_eq!(not_serving(&components), ["store", "registry"]);
        assert!(not_serving(&components[..2]).is_empty());
    }

    #[test]
    fn health_table_uses_words() {
        let lines: Vec<String> = health_table(&[component("store", pb::ServingStatus::NotServing)])
            .lines()
            .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        assert_eq!(lines, ["COMPONENT STATUS MESSAGE", "store not serving -"]);
    }
}
