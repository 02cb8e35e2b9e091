//! The libvirt domain XML reader (adapters/src/libvirt/domain_xml/read.rs),
//! compiled from its source alone: the adapters crate would link libvirt and
//! every other adapter into the fuzz build. The modules below rebuild the
//! paths the reader uses (`super::VM_NS`, `super::GUEST_AGENT_CHANNEL`,
//! `crate::libvirt::xml`).
#![no_main]

use libfuzzer_sys::fuzz_target;

/// `super::VM_NS` of the reader (a copy of adapters' `VM_NS`: it only
/// decides which inputs reach past the metadata check).
const VM_NS: &str = "https://vmregistry.io/xmlns/libvirt/vm/1";

/// `super::GUEST_AGENT_CHANNEL` of the reader (a copy of adapters' name of
/// the guest agent's virtio-serial port).
const GUEST_AGENT_CHANNEL: &str = "org.qemu.guest_agent.0";

#[allow(dead_code, unreachable_pub)]
#[path = "../../adapters/src/libvirt/xml.rs"]
mod xml;

#[allow(dead_code, unreachable_pub)]
#[path = "../../adapters/src/libvirt/domain_xml/read.rs"]
mod read;

/// `crate::libvirt::xml` of the reader.
mod libvirt {
    pub(crate) use super::xml;
}

fuzz_target!(|text: &str| {
    // Any XML gives a VM, "not vmr's", or an error; never a panic.
    let _ = read::parse(text);
    let _ = read::attached_networks(text);
});
