//! `vmr import`: read and check the VMFile, find its disk (`spec.diskImage`,
//! absolute or relative to the VMFile's directory), and hand both to the
//! daemon. The disk goes as an open file over the socket's descriptor side
//! channel when the daemon offers it (it then reads at the durable-copy
//! limit); otherwise, or with `VMR_IMPORT_STREAM=1`, it is streamed: one
//! header, then the disk in 1 MiB chunks read on a blocking thread, with a
//! byte bar when someone watches.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::ProgressBar;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use vmr_domain::vmfile::VmFile;
use vmr_proto::v1 as pb;
use vmr_proto::v1::import_image_request::Part;

use super::Session;
use super::args::ImportArgs;
use super::connect::Reply;
use super::fdpass::{self, Passed};
use super::json::{ToJson, print_json};
use super::progress::import_bar;

/// Chunk size on the wire: well under the daemon's 4 MiB per chunk, large
/// enough that per-message overhead does not matter.
const CHUNK_BYTES: u64 = 1024 * 1024;

/// Chunks read ahead of the network: bounds the client's memory.
const CHUNKS_IN_FLIGHT: usize = 4;

/// Set to `1` to always stream the disk instead of passing the open file.
pub const FORCE_STREAM_ENV: &str = "VMR_IMPORT_STREAM";

/// How long a failed import waits for the disk reader to notice.
const READER_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read VMFile {}: {source}", path.display())]
    ReadVmFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("VMFile {}: {source}", path.display())]
    InvalidVmFile {
        path: PathBuf,
        #[source]
        source: vmr_domain::ValidationError,
    },
    #[error("cannot read the disk image {} (spec.diskImage): {source}", path.display())]
    ReadDisk {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the disk image {} (spec.diskImage) is not a regular file", path.display())]
    DiskNotAFile { path: PathBuf },
}

/// What the client read before talking to the daemon.
#[derive(Debug)]
pub struct ImportSource {
    pub vmfile_text: String,
    pub disk_path: PathBuf,
    pub disk_size: u64,
}

impl ImportSource {
    /// Reads the VMFile, validates it with the domain's parser (so that an
    /// error names the field before any byte is sent) and measures the disk.
    pub async fn load(vmfile_path: &Path) -> Result<Self, ImportError> {
        let vmfile_text = tokio::fs::read_to_string(vmfile_path)
            .await
            .map_err(|source| ImportError::ReadVmFile {
                path: vmfile_path.to_path_buf(),
                source,
            })?;
        let vmfile = VmFile::parse(&vmfile_text).map_err(|source| ImportError::InvalidVmFile {
            path: vmfile_path.to_path_buf(),
            source,
        })?;
        let disk_path = resolve_disk_path(vmfile_path, &vmfile.spec.disk_image);
        let metadata =
            tokio::fs::metadata(&disk_path)
                .await
                .map_err(|source| ImportError::ReadDisk {
                    path: disk_path.clone(),
                    source,
                })?;
        if !metadata.is_file() {
            return Err(ImportError::DiskNotAFile { path: disk_path });
        }
        Ok(Self {
            vmfile_text,
            disk_path,
            disk_size: metadata.len(),
        })
    }

    /// The disk's file name, for the layer's title annotation.
    pub fn disk_file_name(&self) -> String {
        self.disk_path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    pub fn header(&self, tags: Vec<String>) -> pb::ImportHeader {
        pb::ImportHeader {
            vmfile: self.vmfile_text.clone(),
            tags,
            disk_size: self.disk_size,
            disk_digest: String::new(),
            disk_file_name: self.disk_file_name(),
            disk_token: String::new(),
        }
    }
}

/// `spec.diskImage` is absolute, or relative to the VMFile's directory (not
/// to the current directory, so a VMFile and its disk move together).
pub fn resolve_disk_path(vmfile_path: &Path, disk_image: &str) -> PathBuf {
    let disk = Path::new(disk_image);
    if disk.is_absolute() {
        return disk.to_path_buf();
    }
    vmfile_path
        .parent()
        .map_or_else(|| disk.to_path_buf(), |dir| dir.join(disk))
}

pub async fn run(session: &Session, args: ImportArgs) -> anyhow::Result<()> {
    let source = ImportSource::load(&args.file).await?;
    let response = match pass_disk(session, &source).await? {
        Some(token) => import_passed(session, &source, args.tags, token).await?,
        None => import_streamed(session, &source, args.tags).await?,
    };

    if session.output.is_json() {
        print_json(&response.to_json());
        return Ok(());
    }
    for reference in &response.references {
        println!("Imported {reference}");
    }
    if let Some(image) = &response.image {
        println!("Digest: {}", image.digest);
    }
    Ok(())
}

/// Offers the open disk file to the daemon's side channel: `Some(token)`
/// when it took it, `None` when the disk must be streamed.
async fn pass_disk(
    session: &Session,
    source: &ImportSource,
) -> Result<Option<String>, ImportError> {
    if std::env::var(FORCE_STREAM_ENV).is_ok_and(|v| v == "1") {
        return Ok(None);
    }
    let path = source.disk_path.clone();
    let socket = session.socket.clone();
    let passed = tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&path).map_err(|source| ImportError::ReadDisk {
            path: path.clone(),
            source,
        })?;
        Ok::<_, ImportError>(fdpass::pass_file(&socket, &file))
    })
    .await
    .unwrap_or_else(|e| Ok(Passed::Unavailable(e.to_string())))?;
    match passed {
        Passed::Token(token) => Ok(Some(token)),
        Passed::Refused(reason) | Passed::Unavailable(reason) => {
            tracing::debug!(%reason, "no descriptor side channel, streaming the disk");
            Ok(None)
        }
    }
}

/// The daemon reads the passed file: only the header goes over gRPC.
async fn import_passed(
    session: &Session,
    source: &ImportSource,
    tags: Vec<String>,
    token: String,
) -> anyhow::Result<pb::ImportImageResponse> {
    let mut client = session.client().await?;
    let header = pb::ImportHeader {
        disk_token: token,
        ..source.header(tags)
    };
    let request = pb::ImportImageRequest {
        part: Some(Part::Header(header)),
    };
    Ok(client
        .import_image(tokio_stream::once(request))
        .await
        .reply()?)
}

async fn import_streamed(
    session: &Session,
    source: &ImportSource,
    tags: Vec<String>,
) -> anyhow::Result<pb::ImportImageResponse> {
    let mut client = session.client().await?;

    let (sender, receiver) = mpsc::channel(CHUNKS_IN_FLIGHT);
    let header = pb::ImportImageRequest {
        part: Some(Part::Header(source.header(tags))),
    };
    // The channel is empty and has room: this cannot wait.
    sender.send(header).await?;

    let bar = import_bar(
        session.output.shows_progress(),
        source.disk_size,
        &source.disk_file_name(),
    );
    let reader = {
        let path = source.disk_path.clone();
        let size = source.disk_size;
        let bar = bar.clone();
        tokio::task::spawn_blocking(move || send_disk(&path, size, &sender, &bar))
    };
    let answer = client
        .import_image(ReceiverStream::new(receiver))
        .await
        .reply();
    let read = if answer.is_ok() {
        reader.await?
    } else {
        // The reader stops at its next send once the finished call drops
        // the stream; a failed call is not held up if it takes longer.
        tokio::time::timeout(READER_GRACE, reader)
            .await
            .unwrap_or(Ok(Ok(())))?
    };
    bar.finish_and_clear();
    // A local read error explains a failed call better than the daemon's
    // "disk shorter than declared", so it is reported first.
    read?;
    Ok(answer?)
}

/// Reads the disk on a blocking thread and feeds the request stream. Stops
/// quietly when the call ended early (the daemon refused the import): that
/// error is the call's to report.
fn send_disk(
    path: &Path,
    size: u64,
    sender: &mpsc::Sender<pb::ImportImageRequest>,
    bar: &ProgressBar,
) -> Result<(), ImportError> {
    let read_error = |source| ImportError::ReadDisk {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    // Exactly the declared length, even if the file grows meanwhile.
    let mut disk = file.take(size);
    loop {
        let mut chunk = Vec::with_capacity(usize::try_from(CHUNK_BYTES).unwrap_or(1 << 20));
        let read = (&mut disk)
            .take(CHUNK_BYTES)
            .read_to_end(&mut chunk)
            .map_err(read_error)?;
        if read == 0 {
            return Ok(());
        }
        let request = pb::ImportImageRequest {
            part: Some(Part::Chunk(chunk.into())),
        };
        if sender.blocking_send(request).is_err() {
            return Ok(());
        }
        bar.inc(read as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_disk_is_next_to_the_vmfile() {
        assert_eq!(
            resolve_disk_path(Path::new("/images/nixos/VMFile.yaml"), "disk.qcow2"),
            Path::new("/images/nixos/disk.qcow2")
        );
        assert_eq!(
            resolve_disk_path(Path::new("images/VMFile"), "../disks/d.raw"),
            Path::new("images/../disks/d.raw")
        );
        // A VMFile in the current directory: the disk is too.
        assert_eq!(
            resolve_disk_path(Path::new("VMFile"), "d.iso"),
            Path::new("d.iso")
        );
    }

    #[test]
    fn absolute_disk_is_taken_as_is() {
        assert_eq!(
            resolve_disk_path(Path::new("/images/nixos/VMFile.yaml"), "/var/disks/d.qcow2"),
            Path::new("/var/disks/d.qcow2")
        );
    }

    const VMFILE: &str = "apiVersion: vmregistry.io/v1alpha1
metadata:
  name: demo/base
spec:
  diskImage: disk.raw
  diskFormat: raw
  resources:
    cpu: 1
    memory: 1GiB
";

    #[tokio::test]
    async fn load_reads_the_vmfile_and_measures_the_disk() {
        let dir = tempfile::tempdir().expect("temp dir");
        let vmfile = dir.path().join("VMFile.yaml");
        std::fs::write(&vmfile, VMFILE).expect("write VMFile");
        std::fs::write(dir.path().join("disk.raw"), vec![7u8; 3000]).expect("write disk");

        let source = ImportSource::load(&vmfile).await.expect("load");
        assert_eq!(source.disk_path, dir.path().join("disk.raw"));
        assert_eq!(source.disk_size, 3000);
        let header = source.header(vec!["v1".to_owned()]);
        assert_eq!(header.vmfile, VMFILE);
        assert_eq!(header.disk_size, 3000);
        assert_eq!(header.disk_file_name, "disk.raw");
        assert_eq!(header.tags, ["v1"]);
    }

    #[tokio::test]
    async fn a_missing_disk_names_the_field_and_the_path() {
        let dir = tempfile::tempdir().expect("temp dir");
        let vmfile = dir.path().join("VMFile.yaml");
        std::fs::write(&vmfile, VMFILE).expect("write VMFile");
        let err = ImportSource::load(&vmfile).await.expect_err("no disk");
        let text = err.to_string();
        assert!(text.contains("spec.diskImage"), "{text}");
        assert!(
            text.contains(&dir.path().join("disk.raw").display().to_string()),
            "{text}"
        );
    }

    #[tokio::test]
    async fn an_invalid_vmfile_is_refused_before_connecting() {
        let dir = tempfile::tempdir().expect("temp dir");
        let vmfile = dir.path().join("VMFile.yaml");
        std::fs::write(
            &vmfile,
            VMFILE.replace("diskFormat: raw", "diskFormat: vhd"),
        )
        .expect("write VMFile");
        let err = ImportSource::load(&vmfile).await.expect_err("bad format");
        assert!(err.to_string().contains("diskFormat"), "{err}");
    }

    #[tokio::test]
    async fn the_disk_is_sent_in_bounded_chunks() {
        let dir = tempfile::tempdir().expect("temp dir");
        let disk = dir.path().join("disk.raw");
        let size = 2 * CHUNK_BYTES + 5;
        let bytes: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        std::fs::write(&disk, &bytes).expect("write disk");

        let (sender, mut receiver) = mpsc::channel(CHUNKS_IN_FLIGHT);
        let reader = tokio::task::spawn_blocking(move || {
            send_disk(&disk, size, &sender, &ProgressBar::hidden())
        });
        let mut received = Vec::new();
        let mut chunks = 0;
        while let Some(request) = receiver.recv().await {
            let Some(Part::Chunk(chunk)) = request.part else {
                panic!("only chunks follow the header");
            };
            assert!(chunk.len() as u64 <= CHUNK_BYTES);
            received.extend_from_slice(&chunk);
            chunks += 1;
        }
        reader.await.expect("join").expect("read");
        assert_eq!(chunks, 3);
        assert_eq!(received, bytes);
    }
}
