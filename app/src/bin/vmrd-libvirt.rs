//! vmrd-libvirt: vmrd with the libvirt hypervisor linked in. `vmrd` runs it
//! in its own place for `--hypervisor libvirt`; it takes the same flags.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use futures::FutureExt;
use futures::future::BoxFuture;
use vmr_app::assemble::OpenedHypervisor;
use vmr_app::config::DaemonConfig;
use vmr_app::daemon::Libvirt;
use vmr_libvirt::{LibvirtConfig, LibvirtHypervisor, VirtType};

fn main() -> ExitCode {
    vmr_app::daemon::main(Libvirt::Linked(open_libvirt))
}

fn open_libvirt(config: &DaemonConfig) -> BoxFuture<'_, anyhow::Result<OpenedHypervisor>> {
    async move {
        let mut settings = LibvirtConfig::new(config.libvirt_uri.clone());
        settings.virt_type = config
            .virt_type
            .as_deref()
            .map(str::parse::<VirtType>)
            .transpose()
            .map_err(|e| anyhow::anyhow!("--{e}"))?;
        let libvirt = LibvirtHypervisor::connect(settings)
            .await
            .with_context(|| format!("--libvirt-uri {}", config.libvirt_uri))?;
        let description = format!("libvirt {} ({})", config.libvirt_uri, libvirt.virt_type());
        // The domain's agent channel and console stream are libvirt's too.
        Ok(OpenedHypervisor::of(Arc::new(libvirt), description))
    }
    .boxed()
}
