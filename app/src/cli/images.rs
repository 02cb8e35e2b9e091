//! Image commands on the daemon's local store: `images`, `tag`, `rmi`,
//! `image prune`, `image inspect`. (`import` and `push`/`pull` stream, and
//! live in their own modules.)

use vmr_proto::v1 as pb;

use super::args::{ImagesArgs, PruneArgs, RmiArgs, TagArgs};
use super::connect::{Client, Reply, RpcError};
use super::json::{ToJson, print_json};
use super::output::{age, human_size, or_dash, print_table, short_digest, table};
use super::{Batch, Session};

pub async fn list(session: &Session, args: ImagesArgs) -> anyhow::Result<()> {
    let request = pb::ListImagesRequest {
        repository: args.repository.unwrap_or_default(),
    };
    let response = session.client().await?.list_images(request).await.reply()?;
    if session.output.is_json() {
        print_json(&response.to_json());
    } else {
        print_table(&images_table(&response.images, jiff::Timestamp::now()));
    }
    Ok(())
}

/// One row per tag, like docker; an untagged image shows `<none>`.
fn images_table(images: &[pb::ImageSummary], now: jiff::Timestamp) -> comfy_table::Table {
    let mut rows = table(["REPOSITORY", "TAG", "DIGEST", "FORMAT", "SIZE", "CREATED"]);
    for image in images {
        let untagged = [String::from("<none>")];
        let tags = if image.tags.is_empty() {
            &untagged[..]
        } else {
            &image.tags[..]
        };
        for tag in tags {
            rows.add_row([
                image.repository.clone(),
                tag.clone(),
                short_digest(&image.digest),
                or_dash(&image.disk_format).to_owned(),
                human_size(image.size),
                age(&image.created, now),
            ]);
        }
    }
    rows
}

pub async fn tag(session: &Session, args: TagArgs) -> anyhow::Result<()> {
    let request = pb::TagImageRequest {
        source: args.source,
        target: args.target,
    };
    let response = session.client().await?.tag_image(request).await.reply()?;
    if session.output.is_json() {
        print_json(&response.to_json());
    }
    // Like docker, a successful tag prints nothing for people.
    Ok(())
}

pub async fn remove(session: &Session, args: RmiArgs) -> anyhow::Result<()> {
    let mut client = session.client().await?;
    let mut batch = Batch::new(args.references.len());
    let mut removed = Vec::new();
    for reference in args.references {
        let request = pb::RemoveImageRequest {
            reference: reference.clone(),
            force: args.force,
        };
        match client.remove_image(request).await.reply() {
            Ok(response) => {
                if !session.output.is_json() {
                    print_removal(&response.untagged, &response.deleted);
                }
                removed.push(serde_json::json!({
                    "reference": reference,
                    "untagged": response.untagged,
                    "deleted": response.deleted,
                }));
            }
            Err(err) => batch.fail(err),
        }
    }
    if session.output.is_json() {
        print_json(&serde_json::Value::Array(removed));
    }
    batch.finish("images")
}

/// docker's `Untagged: ...` / `Deleted: ...` lines.
fn print_removal(untagged: &[String], deleted: &[String]) {
    for reference in untagged {
        println!("Untagged: {reference}");
    }
    for digest in deleted {
        println!("Deleted: {digest}");
    }
}

pub async fn prune(session: &Session, args: PruneArgs) -> anyhow::Result<()> {
    let request = pb::PruneImagesRequest { all: args.all };
    let response = session
        .client()
        .await?
        .prune_images(request)
        .await
        .reply()?;
    if session.output.is_json() {
        print_json(&response.to_json());
        return Ok(());
    }
    print_removal(&response.untagged, &response.deleted);
    println!(
        "Total reclaimed space: {}",
        human_size(response.reclaimed_bytes)
    );
    Ok(())
}

pub async fn inspect(session: &Session, reference: String) -> anyhow::Result<()> {
    let mut client = session.client().await?;
    let response = inspect_image(&mut client, reference).await?;
    // inspect prints JSON whatever `-o` says, like docker inspect.
    print_json(&response.to_json());
    Ok(())
}

pub async fn inspect_image(
    client: &mut Client,
    reference: String,
) -> Result<pb::InspectImageResponse, RpcError> {
    client
        .inspect_image(pb::InspectImageRequest { reference })
        .await
        .reply()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_table_has_one_row_per_tag() {
        let now: jiff::Timestamp = "2025-01-02T00:00:00Z".parse().expect("timestamp");
        let image = pb::ImageSummary {
            repository: "nixos/base".to_owned(),
            tags: vec!["1".to_owned(), "latest".to_owned()],
            digest: format!("sha256:{}", "ab".repeat(32)),
            size: 2_254_857_830,
            disk_format: "qcow2".to_owned(),
            created: "2024-12-30T00:00:00Z".to_owned(),
            ..pb::ImageSummary::default()
        };
        let untagged = pb::ImageSummary {
            tags: Vec::new(),
            ..image.clone()
        };
        let lines: Vec<String> = images_table(&[image, untagged], now)
            .lines()
            .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        assert_eq!(
            lines,
            [
                "REPOSITORY TAG DIGEST FORMAT SIZE CREATED",
                "nixos/base 1 abababababab qcow2 2.1 GiB 3 days ago",
                "nixos/base latest abababababab qcow2 2.1 GiB 3 days ago",
                "nixos/base <none> abababababab qcow2 2.1 GiB 3 days ago",
            ]
        );
    }
}
