//! What vmr knows of libvirt that needs no libvirt: the domain and network
//! XML it writes and reads back (vmr's own facts ride in each object's
//! `<metadata>`). The adapter that talks to libvirt is the `vmr-libvirt`
//! crate, kept apart so that only the binary running VMs on libvirt links
//! it; the fake hypervisor renders the same XML from here.

pub mod domain_xml;
pub mod network_xml;
mod xml;

use std::path::Path;

use vmr_ports::{HypervisorError, NetworkDefinition, VmDefinition};

pub use domain_xml::VM_NS;
pub use network_xml::NETWORK_NS;

async fn missing_file(path: &Path) -> Option<HypervisorError> {
    match tokio::fs::try_exists(path).await {
        Ok(true) => None,
        _ => Some(HypervisorError::NotFound {
            kind: "file",
            name: path.display().to_string(),
        }),
    }
}

/// Files a definition refers to that do not exist.
pub async fn check_definition_files(def: &VmDefinition) -> Result<(), HypervisorError> {
    let disk = def.disk.iter().map(|d| d.path.as_path());
    for path in disk.chain(def.cdroms.iter().map(|p| p.as_path())) {
        if let Some(e) = missing_file(path).await {
            return Err(e);
        }
    }
    Ok(())
}

/// Re-exported so the fake can render the same XML for `inspect`.
pub(crate) fn render_domain_xml(
    def: &VmDefinition,
    virt_type: &str,
) -> Result<String, HypervisorError> {
    domain_xml::render(def, virt_type)
}

/// Re-exported so the fake can render the same XML for `inspect`.
pub(crate) fn render_network_xml(def: &NetworkDefinition) -> Result<String, HypervisorError> {
    network_xml::render(def)
}
