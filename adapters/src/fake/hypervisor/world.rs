//! The fake host: VMs and networks with libvirt's rules. Every method is
//! synchronous and runs under the fake's lock, so each call is atomic.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use vmr_domain::network::{
    MacAddr, NetworkMode, NetworkName, SubnetOverlap, bridge_device_name, check_no_overlap,
};
use vmr_domain::vm::{VmName, VmState};
use vmr_ports::{
    HypervisorError, NetworkDefinition, NetworkRecord, VmDefinition, VmInterface, VmRecord,
};

pub(super) struct FakeVm {
    pub def: VmDefinition,
    pub state: VmState,
    /// The guest ignores ACPI shutdown requests.
    pub ignores_acpi: bool,
    pub leases: HashMap<MacAddr, Ipv4Addr>,
}

pub(super) struct FakeNetwork {
    pub def: NetworkDefinition,
    pub active: bool,
}

#[derive(Default)]
pub(super) struct World {
    pub vms: BTreeMap<VmName, FakeVm>,
    pub networks: BTreeMap<NetworkName, FakeNetwork>,
}

impl World {
    pub fn vm(&self, name: &VmName) -> Result<&FakeVm, HypervisorError> {
        self.vms
            .get(name)
            .ok_or_else(|| HypervisorError::vm_not_found(name))
    }

    pub fn vm_mut(&mut self, name: &VmName) -> Result<&mut FakeVm, HypervisorError> {
        self.vms
            .get_mut(name)
            .ok_or_else(|| HypervisorError::vm_not_found(name))
    }

    pub fn network(&self, name: &NetworkName) -> Result<&FakeNetwork, HypervisorError> {
        self.networks
            .get(name)
            .ok_or_else(|| HypervisorError::network_not_found(name))
    }

    pub fn define_vm(&mut self, def: &VmDefinition) -> Result<VmRecord, HypervisorError> {
        let name = &def.spec.name;
        if self.vms.contains_key(name) {
            return Err(HypervisorError::AlreadyExists {
                kind: "VM",
                name: name.to_string(),
            });
        }
        for nic in &def.spec.networks {
            self.network(&nic.network)?;
        }
        let vm = FakeVm {
            def: def.clone(),
            state: VmState::Created,
            ignores_acpi: false,
            leases: HashMap::new(),
        };
        let record = vm.record();
        self.vms.insert(name.clone(), vm);
        Ok(record)
    }

    /// Starts a VM that is not active, once its networks are up, and gives
    /// its DHCP NICs a lease.
    pub fn start_vm(&mut self, name: &VmName) -> Result<(), HypervisorError> {
        let vm = self.vm(name)?;
        if vm.state.is_active() {
            return Err(invalid_vm_state(name, vm.state, "stopped"));
        }
        let mut leases = HashMap::new();
        for nic in &vm.def.spec.networks {
            if !self.network(&nic.network)?.active {
                return Err(network_state(&nic.network, "inactive", "active"));
            }
            if nic.static_ip.is_none()
                && let Some(ip) = self.free_lease(&nic.network, &leases)
            {
                leases.insert(nic.mac, ip);
            }
        }
        let vm = self.vm_mut(name)?;
        vm.state = VmState::Running;
        vm.leases = leases;
        Ok(())
    }

    /// Marks an active VM as down (`state`: `Stopped` or `Crashed`).
    pub fn power_off(&mut self, name: &VmName, state: VmState) -> Result<(), HypervisorError> {
        let vm = self.vm_mut(name)?;
        if !vm.state.is_active() {
            return Err(invalid_vm_state(name, vm.state, "running"));
        }
        vm.state = state;
        vm.leases.clear();
        Ok(())
    }

    pub fn undefine_vm(&mut self, name: &VmName) -> Result<(), HypervisorError> {
        let vm = self.vm(name)?;
        if vm.state.is_active() {
            return Err(invalid_vm_state(name, vm.state, "stopped"));
        }
        self.vms.remove(name);
        Ok(())
    }

    /// `host_interfaces`: the host's bridges and interfaces, `None` to
    /// accept any name.
    pub fn define_network(
        &mut self,
        def: &NetworkDefinition,
        host_interfaces: Option<&BTreeSet<String>>,
    ) -> Result<NetworkRecord, HypervisorError> {
        let spec = &def.spec;
        if self.networks.contains_key(&spec.name) {
            return Err(HypervisorError::AlreadyExists {
                kind: "network",
                name: spec.name.to_string(),
            });
        }
        check_no_overlap(spec, self.networks.values().map(|n| &n.def.spec))
            .map_err(|e| HypervisorError::invalid(SubnetOverlap::FIELD, e.to_string()))?;
        if let Some(host) = host_interfaces {
            let (kind, device) = match spec.mode {
                NetworkMode::Bridged => ("host bridge", spec.bridge.as_deref()),
                NetworkMode::Macvtap => ("host interface", spec.interface.as_deref()),
                _ => ("", None),
            };
            if let Some(device) = device
                && !host.contains(device)
            {
                return Err(HypervisorError::NotFound {
                    kind,
                    name: device.to_owned(),
                });
            }
        }
        let net = FakeNetwork {
            def: def.clone(),
            active: false,
        };
        let record = net.record();
        self.networks.insert(spec.name.clone(), net);
        Ok(record)
    }

    pub fn set_network_active(
        &mut self,
        name: &NetworkName,
        active: bool,
    ) -> Result<(), HypervisorError> {
        let net = self
            .networks
            .get_mut(name)
            .ok_or_else(|| HypervisorError::network_not_found(name))?;
        if net.active == active {
            return Err(if active {
                network_state(name, "active", "inactive")
            } else {
                network_state(name, "inactive", "active")
            });
        }
        net.active = active;
        Ok(())
    }

    pub fn remove_network(&mut self, name: &NetworkName) -> Result<(), HypervisorError> {
        if self.network(name)?.active {
            return Err(network_state(name, "active", "inactive"));
        }
        let users: Vec<String> = self
            .vms
            .values()
            .filter(|vm| vm.def.spec.networks.iter().any(|n| &n.network == name))
            .map(|vm| vm.def.spec.name.to_string())
            .collect();
        if !users.is_empty() {
            return Err(network_state(
                name,
                &format!("used by VM {}", users.join(", ")),
                "unused (remove those VMs first)",
            ));
        }
        self.networks.remove(name);
        Ok(())
    }

    /// The first address of the network's DHCP range no running VM holds.
    fn free_lease(
        &self,
        network: &NetworkName,
        pending: &HashMap<MacAddr, Ipv4Addr>,
    ) -> Option<Ipv4Addr> {
        let range = self.networks.get(network)?.def.spec.ipv4?.dhcp?;
        let taken: BTreeSet<Ipv4Addr> = self
            .vms
            .values()
            .flat_map(|vm| vm.leases.values().copied())
            .chain(pending.values().copied())
            .collect();
        (u32::from(range.start)..=u32::from(range.end))
            .map(Ipv4Addr::from)
            .find(|ip| !taken.contains(ip))
    }
}

impl FakeVm {
    pub fn record(&self) -> VmRecord {
        let interfaces = self
            .def
            .spec
            .networks
            .iter()
            .map(|nic| VmInterface::of(nic, self.leases.get(&nic.mac).copied(), None))
            .collect();
        VmRecord {
            spec: self.def.spec.clone(),
            state: self.state,
            interfaces,
            disk: self.def.disk.clone(),
            cdroms: self.def.cdroms.clone(),
            console_log: Some(self.def.console_log.clone()),
            spec_hash: Some(self.def.spec_hash.clone()),
        }
    }
}

impl FakeNetwork {
    pub fn record(&self) -> NetworkRecord {
        let spec = &self.def.spec;
        let bridge = match spec.mode {
            NetworkMode::Bridged => spec.bridge.clone(),
            NetworkMode::Macvtap => None,
            _ => Some(bridge_device_name(spec.name.as_str())),
        };
        NetworkRecord {
            spec: spec.clone(),
            project: self.def.project.clone(),
            active: self.active,
            bridge,
            managed: true,
        }
    }
}

pub(super) fn invalid_vm_state(name: &VmName, state: VmState, wanted: &str) -> HypervisorError {
    HypervisorError::InvalidState {
        kind: "VM",
        name: name.to_string(),
        state: state.to_string(),
        wanted: wanted.to_owned(),
    }
}

fn network_state(name: &NetworkName, state: &str, wanted: &str) -> HypervisorError {
    HypervisorError::InvalidState {
        kind: "network",
        name: name.to_string(),
        state: state.to_owned(),
        wanted: wanted.to_owned(),
    }
}
