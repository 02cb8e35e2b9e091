//! Test inputs made with real tools: qcow2 disks from `qemu-img`, ISO images
//! from `genisoimage`, raw disks of pseudo-random bytes, and VMFiles.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest as _, Sha256};

/// `sha256:<hex>` of a file.
pub fn sha256_file(path: &Path) -> String {
    let bytes = std::fs::read(path).expect("read file to hash");
    sha256_bytes(&bytes)
}

pub fn sha256_bytes(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A qcow2 disk of `virtual_size` made by qemu-img.
pub fn qcow2(dir: &Path, name: &str, virtual_size: &str) -> PathBuf {
    let path = dir.join(name);
    let status = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&path)
        .arg(virtual_size)
        .status()
        .expect("qemu-img is installed");
    assert!(status.success(), "qemu-img create failed");
    path
}

/// A raw disk of `len` pseudo-random bytes (deterministic per seed).
pub fn raw(dir: &Path, name: &str, len: usize, seed: u64) -> PathBuf {
    let path = dir.join(name);
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut bytes = Vec::with_capacity(len);
    while bytes.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(len);
    std::fs::write(&path, bytes).expect("write raw disk");
    path
}

/// An ISO9660 image made by genisoimage.
pub fn iso(dir: &Path, name: &str) -> PathBuf {
    let content = dir.join(format!("{name}.d"));
    std::fs::create_dir_all(&content).expect("iso content dir");
    std::fs::write(content.join("hello.txt"), b"hello from an iso\n").expect("iso file");
    let path = dir.join(name);
    let status = Command::new("genisoimage")
        .args(["-quiet", "-V", "VMRTEST", "-o"])
        .arg(&path)
        .arg(&content)
        .status()
        .expect("genisoimage is installed");
    assert!(status.success(), "genisoimage failed");
    path
}

/// Writes a VMFile next to the disk and returns its path.
pub fn vmfile(dir: &Path, name: &str, disk: &str, format: &str) -> PathBuf {
    let path = dir.join(format!("{}.vmfile.yaml", name.replace('/', "_")));
    let text = format!(
        "apiVersion: vmregistry.io/v1alpha1\n\
         metadata:\n  name: \"{name}\"\n  description: \"test image\"\n  author: \"vmr tests\"\n  labels: {{os: test}}\n\
         spec:\n  diskImage: \"{disk}\"\n  diskFormat: \"{format}\"\n  resources:\n    cpu: 2\n    memory: \"512MiB\"\n    bootloader:\n      type: \"BIOS\"\n"
    );
    std::fs::write(&path, text).expect("write VMFile");
    path
}

/// A file of a cloud-init ISO, as genisoimage's isoinfo reads it (Joliet).
pub fn iso_file(iso: &Path, name: &str) -> String {
    let out = Command::new("isoinfo")
        .args(["-J", "-x", &format!("/{name}"), "-i"])
        .arg(iso)
        .output()
        .expect("isoinfo (genisoimage) is installed");
    assert!(out.status.success(), "isoinfo failed on {}", iso.display());
    String::from_utf8(out.stdout).expect("the seed's files are UTF-8")
}
