//! What a create request says about reaching the VM, applied before the
//! VM is prepared: vmr's ssh keys merged into the user-data (so that the
//! seed, its hash and compose's comparison all see the merged document),
//! and the choice between named networks, the default one and none.

use vmr_domain::cloudinit::{merge_ssh_keys, parse_ssh_keys};
use vmr_ports::driving::{CreateVm, UseCaseError};

/// Merges the request's ssh keys into its user-data, emptying the key list.
pub fn add_ssh_keys(request: &mut CreateVm) -> Result<(), UseCaseError> {
    let keys = parse_ssh_keys(&std::mem::take(&mut request.ssh_authorized_keys))?;
    request.user_data = merge_ssh_keys("cloudInit.userData", request.user_data.as_deref(), &keys)?;
    Ok(())
}

/// `no_network` and named networks exclude each other.
pub fn check_network_choice(request: &CreateVm) -> Result<(), UseCaseError> {
    if request.no_network && !request.networks.is_empty() {
        return Err(UseCaseError::invalid(
            "networks",
            "`none` (no network card) cannot be combined with other networks",
        ));
    }
    Ok(())
}
