use vmr_domain::vmfile::VmFile;
#[test]
fn show() {
    let base = "apiVersion: v1\nmetadata:\n  name: ns/vm\nspec:\n  diskImage: d\n  diskFormat: qcow2\n  resources: {}\n";
    for (a, b) in [("resources: {}", "resources:\n    cpus: 2"), ("resources: {}", "resources: {cpu: two}"), ("resources: {}", "resources: {memory: 4gb}"), ("name: ns/vm", "name: NS"), ("diskFormat: qcow2", "diskFormat: vmdk"), ("name: ns/vm", "name: [1]"), ("resources: {}", "resources: {bootloader: {type: grub}}"), ("name: ns/vm", "name: a\n  labels: {\"a b\": 1}"), ("name: ns/vm", "name: a\n  labels: {\"a\": [1]}")] {
        eprintln!("{}", VmFile::parse(&base.replace(a, b)).unwrap_err());
    }
    eprintln!("{}", VmFile::parse("a: [").unwrap_err());
    eprintln!("{}", VmFile::parse("- 1").unwrap_err());
    eprintln!("{}", VmFile::parse("a: 1\n---\nb: 2").unwrap_err());
}
