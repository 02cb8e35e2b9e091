//! Import: a VMFile's disk received (a stream or a passed file, its format
//! and size checked as it comes), then the config and manifest blobs, then
//! the tags.

use super::*;

impl ImageService {
    /// Imports a VMFile's disk (see [`ImageUseCases::import`]).
    pub(super) async fn import_image(
        &self,
        request: ImportRequest,
        disk: DiskSource,
    ) -> Result<ImportOutcome, UseCaseError> {
        let vmfile = VmFile::parse(&request.vmfile)?;
        let tags = parse_tags(&request.tags)?;
        let expected = match request.disk_digest.as_deref().filter(|d| !d.is_empty()) {
            Some(raw) => Some(
                raw.parse::<Digest>()
                    .map_err(|e| UseCaseError::invalid("disk_digest", e))?,
            ),
            None => None,
        };
        if request.disk_size == 0 {
            return Err(UseCaseError::invalid("disk_size", "the disk is empty"));
        }
        // Checked before anything is written, with the largest virtual size:
        // a tag whose config could not be read back would break listing.
        let largest = vmfile.image_config(u64::MAX).to_json_bytes().len();
        if largest > MAX_CONFIG_BYTES {
            return Err(UseCaseError::invalid(
                "vmfile",
                format!(
                    "its image config would be {largest} bytes, more than the limit of \
                     {MAX_CONFIG_BYTES}; shorten the description or labels"
                ),
            ));
        }
        let format = vmfile.spec.disk_format;
        // Everything written is leased until the tags are committed.
        let mut lease = self.lease(expected.clone()).await;

        let mut writer = self.store.begin_blob().await?;
        let received = match disk {
            DiskSource::Stream(stream) => {
                receive_disk(&mut writer, stream, request.disk_size, format).await
            }
            DiskSource::File { file, size } => {
                receive_disk_file(&mut writer, file, size, request.disk_size, format).await
            }
        };
        let head = match received {
            Ok(head) => head,
            Err(e) => {
                // Best effort: the writer's temporary is also swept at start.
                let _ = writer.abort().await;
                return Err(e);
            }
        };
        let (disk_digest, disk_len) = self
            .commit_leased(writer, expected.as_ref(), &mut lease)
            .await?;
        let virtual_size = match format {
            DiskFormat::Qcow2 => qcow2_virtual_size(&head).unwrap_or(disk_len),
            DiskFormat::Raw | DiskFormat::Iso => disk_len,
        };

        let config = vmfile.image_config(virtual_size);
        let config_bytes = Bytes::from(config.to_json_bytes());
        self.write_small_blob(config_bytes.clone(), &mut lease)
            .await?;
        let created = jiff::Timestamp::now().to_string();
        let title = request
            .disk_file_name
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| default_title(&vmfile));
        let manifest = Manifest::for_image(
            &config,
            &config_bytes,
            Descriptor::disk(format, disk_digest, disk_len, &title),
            &created,
        );
        let manifest_bytes = Bytes::from(manifest.to_json_bytes());
        let (manifest_digest, _) = self
            .write_small_blob(manifest_bytes.clone(), &mut lease)
            .await?;

        // A shared store: the blobs are confirmed present before any tag.
        self.confirm(&manifest_bytes).await?;
        let repository = vmfile.metadata.name.clone();
        let mut references = Vec::with_capacity(tags.len());
        for tag in &tags {
            self.store
                .put_manifest(&repository, tag, manifest_bytes.clone())
                .await?;
            references.push(format!("{repository}:{tag}"));
        }
        info!(image = %repository, digest = %manifest_digest, "imported");
        self.metrics.image_bytes(ByteFlow::Imported, disk_len);
        for reference in &references {
            self.events.publish(
                NewEvent::new(EventType::Image, "import", reference)
                    .with("digest", manifest_digest.to_string()),
            );
        }
        let (image, _) = self.describe(&repository, tags, &manifest_bytes).await?;
        Ok(ImportOutcome { image, references })
    }
}

fn parse_tags(tags: &[String]) -> Result<Vec<Tag>, UseCaseError> {
    if tags.is_empty() {
        return Ok(vec![Tag::latest()]);
    }
    let mut out: Vec<Tag> = Vec::with_capacity(tags.len());
    for (i, raw) in tags.iter().enumerate() {
        let tag: Tag = raw
            .parse()
            .map_err(|e| UseCaseError::invalid(format!("tags[{i}]"), e))?;
        if !out.contains(&tag) {
            out.push(tag);
        }
    }
    Ok(out)
}

/// Copies a disk file that a local caller handed over into a blob writer,
/// after checking its length and its format's header. Returns the head.
async fn receive_disk_file(
    writer: &mut Box<dyn vmr_ports::blobstore::BlobWriter>,
    file: std::fs::File,
    size: u64,
    expected_len: u64,
    format: DiskFormat,
) -> Result<Bytes, UseCaseError> {
    use std::os::unix::fs::FileExt as _;
    if size != expected_len {
        return Err(UseCaseError::invalid(
            "disk_size",
            format!("{expected_len} bytes announced, but the passed file has {size}"),
        ));
    }
    let head_len = usize::try_from(expected_len.min(DiskFormat::HEADER_LEN as u64))
        .unwrap_or(DiskFormat::HEADER_LEN);
    let (file, head) = tokio::task::spawn_blocking(move || {
        let mut head = vec![0; head_len];
        let mut filled = 0;
        let read = loop {
            if filled == head_len {
                break Ok(());
            }
            match file.read_at(&mut head[filled..], filled as u64) {
                Ok(0) => break Ok(()),
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        head.truncate(filled);
        (file, read.map(|()| head))
    })
    .await
    .map_err(|e| UseCaseError::new(ErrorKind::Internal, format!("reading the passed disk: {e}")))?;
    let head = head.map_err(|e| {
        UseCaseError::new(ErrorKind::Internal, format!("reading the passed disk: {e}"))
    })?;
    let truncated = |actual: u64| {
        UseCaseError::new(
            ErrorKind::Cancelled,
            format!(
                "the passed disk ended after {actual} of {expected_len} bytes \
                 (was it truncated during the import?)"
            ),
        )
    };
    if head.len() < head_len {
        return Err(truncated(head.len() as u64));
    }
    format.check_header(&head)?;
    match writer.write_file(file, expected_len).await {
        Err(StoreError::SizeMismatch { actual, .. }) => Err(truncated(actual)),
        Err(e) => Err(e.into()),
        Ok(()) => Ok(Bytes::from(head)),
    }
}

/// Pumps the client's disk stream into a blob writer, checking the length
/// and the format's header on the way. Returns the head it saw.
async fn receive_disk(
    writer: &mut Box<dyn vmr_ports::blobstore::BlobWriter>,
    mut disk: UploadStream,
    expected_len: u64,
    format: DiskFormat,
) -> Result<Bytes, UseCaseError> {
    let head_len = usize::try_from(expected_len.min(DiskFormat::HEADER_LEN as u64))
        .unwrap_or(DiskFormat::HEADER_LEN);
    let mut head = BytesMut::with_capacity(head_len);
    let mut checked = false;
    let mut received: u64 = 0;
    while let Some(chunk) = disk.next().await {
        let chunk = chunk?;
        received += chunk.len() as u64;
        if received > expected_len {
            return Err(UseCaseError::invalid(
                "disk",
                format!("the client sent more than the announced {expected_len} bytes"),
            ));
        }
        if !checked {
            let take = (head_len - head.len()).min(chunk.len());
            head.extend_from_slice(&chunk[..take]);
            if head.len() == head_len {
                format.check_header(&head)?;
                checked = true;
            }
        }
        writer.write(chunk).await?;
    }
    if received < expected_len {
        return Err(UseCaseError::new(
            ErrorKind::Cancelled,
            format!("the disk stream ended after {received} of {expected_len} bytes"),
        ));
    }
    Ok(head.freeze())
}

fn default_title(vmfile: &VmFile) -> String {
    std::path::Path::new(&vmfile.spec.disk_image)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| format!("disk.{}", vmfile.spec.disk_format))
}
