//! `vmr health`, `vmr version` and `vmr system check`: what the daemon says
//! about itself and the services it depends on.

use vmr_proto::v1 as pb;

use super::Session;
use super::connect::Reply;
use super::json::{ToJson, enum_word, print_json, serving_status_word};
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

/// Checks the daemon's store (every blob re-hashed, every tag's manifest and
/// its blobs, leftover temporaries) and fails when anything is wrong, so
/// that scripts and monitoring can rely on the exit code.
pub async fn check(session: &Session) -> anyhow::Result<()> {
    let response = session
        .client()
        .await?
        .system_check(pb::SystemCheckRequest {})
        .await
        .reply()?;
    if session.output.is_json() {
        print_json(&check_json(&response));
    } else if response.problems.is_empty() {
        println!(
            "Store is clean: {} blobs and {} manifests checked.",
            response.blobs_checked, response.manifests_checked
        );
    } else {
        print_table(&problem_table(&response.problems));
    }
    if response.problems.is_empty() {
        return Ok(());
    }
    anyhow::bail!(
        "the store has {} problem(s) in {} blobs and {} manifests checked",
        response.problems.len(),
        response.blobs_checked,
        response.manifests_checked
    )
}

fn problem_kind_word(kind: i32) -> String {
    pb::StoreProblemKind::try_from(kind).map_or_else(
        |_| format!("unknown ({kind})"),
        |kind| enum_word(kind.as_str_name(), "STORE_PROBLEM_KIND_"),
    )
}

fn problem_table(problems: &[pb::StoreProblem]) -> comfy_table::Table {
    let mut rows = table(["PROBLEM", "SUBJECT", "MESSAGE"]);
    for problem in problems {
        rows.add_row([
            problem_kind_word(problem.kind),
            problem.subject.clone(),
            problem.message.clone(),
        ]);
    }
    rows
}

fn check_json(response: &pb::SystemCheckResponse) -> serde_json::Value {
    let problems: Vec<serde_json::Value> = response
        .problems
        .iter()
        .map(|problem| {
            serde_json::json!({
                "kind": problem_kind_word(problem.kind),
                "subject": problem.subject,
                "message": problem.message,
            })
        })
        .collect();
    serde_json::json!({
        "clean": problems.is_empty(),
        "problems": problems,
        "blobsChecked": response.blobs_checked,
        "manifestsChecked": response.manifests_checked,
    })
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
    fn problems_print_as_words_in_table_and_json() {
        let problems = [pb::StoreProblem {
            kind: pb::StoreProblemKind::DanglingManifestBlob as i32,
            subject: "a/b:v1".into(),
            message: "blob sha256:00 is missing".into(),
        }];
        let lines: Vec<String> = problem_table(&problems)
            .lines()
            .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        assert_eq!(
            lines,
            [
                "PROBLEM SUBJECT MESSAGE",
                "dangling-manifest-blob a/b:v1 blob sha256:00 is missing"
            ]
        );
        let json = check_json(&pb::SystemCheckResponse {
            problems: problems.to_vec(),
            blobs_checked: 3,
            manifests_checked: 1,
        });
        assert_eq!(json["clean"], false);
        assert_eq!(json["problems"][0]["kind"], "dangling-manifest-blob");
        assert_eq!(json["blobsChecked"], 3);
    }

    #[test]
    fn an_expired_lease_prints_as_its_own_kind() {
        let kind = pb::StoreProblemKind::ExpiredLease as i32;
        assert_eq!(problem_kind_word(kind), "expired-lease");
        // A kind this client does not know (a newer daemon's) still prints.
        assert_eq!(problem_kind_word(99), "unknown (99)");
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
