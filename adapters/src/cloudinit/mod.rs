//! The NoCloud seed medium: an ISO9660 image labelled `cidata` holding
//! `user-data`, `meta-data` and, when there is one, `network-config`, the
//! layout cloud-init's NoCloud datasource looks for on a CD-ROM. The image is
//! built in memory with hadris-iso (Joliet and Rock Ridge, so the lowercase,
//! dashed names survive) and written to the VM's runtime directory: the
//! seed media port ([`SeedMedia`]) for every hypervisor backend.

use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use hadris_iso::read::PathSeparator;
use hadris_iso::write::options::{CreationFeatures, IsoFormatOptions};
use hadris_iso::write::{File as IsoFile, InputFiles, IsoImageWriter};
use vmr_domain::cloudinit::CloudInitSeed;
use vmr_ports::{SeedError, SeedMedia};

/// The volume label cloud-init's NoCloud datasource searches for.
pub const CIDATA_VOLUME_ID: &str = "cidata";

/// Largest document accepted on the seed medium (cloud-init's own bound on
/// user-data is well below this).
pub const MAX_SEED_FILE_BYTES: usize = 16 * 1024 * 1024;

/// The seed media port as NoCloud `cidata` ISOs.
#[derive(Debug, Clone, Copy, Default)]
pub struct CidataIso;

#[async_trait]
impl SeedMedia for CidataIso {
    async fn write_seed(&self, seed: &CloudInitSeed, path: &Path) -> Result<(), SeedError> {
        write_cidata_iso(seed, path).await
    }
}

/// Builds the `cidata` ISO image for a seed. An empty network-config is
/// left out, so the image's own default (DHCP) applies.
pub fn build_cidata_iso(seed: &CloudInitSeed) -> Result<Vec<u8>, SeedError> {
    let mut files = vec![
        seed_file("user-data", &seed.user_data)?,
        seed_file("meta-data", seed.meta_data.as_bytes())?,
    ];
    if !seed.network_config.trim().is_empty() {
        files.push(seed_file("network-config", seed.network_config.as_bytes())?);
    }
    let input = InputFiles {
        path_separator: PathSeparator::ForwardSlash,
        files,
    };
    let options = IsoFormatOptions {
        volume_name: CIDATA_VOLUME_ID.to_owned(),
        system_id: None,
        volume_set_id: None,
        publisher_id: None,
        preparer_id: None,
        application_id: Some("vmr".to_owned()),
        sector_size: 2048,
        path_separator: PathSeparator::ForwardSlash,
        // Rock Ridge and Joliet keep `user-data` readable as such; without
        // them the names become `USER_DAT;1`, which NoCloud does not find.
        features: CreationFeatures::extensions(),
        // The label must stay lowercase: NoCloud matches `cidata` exactly
        // (it also accepts `CIDATA`, but blkid reports what is written).
        strict_charset: false,
    };
    let mut out = Cursor::new(Vec::new());
    IsoImageWriter::create(&mut out, input, options).map_err(|e| SeedError::Build {
        source: Box::new(e),
    })?;
    Ok(out.into_inner())
}

/// Builds the ISO and writes it to `path` (replacing an older seed), off the
/// async runtime's worker threads.
pub async fn write_cidata_iso(seed: &CloudInitSeed, path: &Path) -> Result<(), SeedError> {
    let bytes = build_cidata_iso(seed)?;
    let write_err = |source| SeedError::Write {
        path: path.display().to_string(),
        source,
    };
    // A temporary name and a rename, so a VM never sees half an ISO.
    let tmp = path.with_extension("iso.tmp");
    tokio::fs::write(&tmp, &bytes).await.map_err(write_err)?;
    tokio::fs::rename(&tmp, path).await.map_err(write_err)
}

fn seed_file(name: &'static str, contents: &[u8]) -> Result<IsoFile, SeedError> {
    if contents.len() > MAX_SEED_FILE_BYTES {
        return Err(SeedError::TooLarge {
            file: name,
            size: contents.len(),
            max: MAX_SEED_FILE_BYTES,
        });
    }
    Ok(IsoFile::File {
        name: Arc::new(name.to_owned()),
        contents: contents.to_vec(),
    })
}
