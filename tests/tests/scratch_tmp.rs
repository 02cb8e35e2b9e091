#![allow(clippy::unwrap_used)]
#[test]
fn scratch() {
    let n = 50_000;
    let deep_seq = format!("metadata: {}{}\n", "[".repeat(n), "]".repeat(n));
    let t = std::time::Instant::now();
    let r = vmr_domain::vmfile::VmFile::parse(&deep_seq);
    eprintln!("{n}: {:?} {:?}", t.elapsed(), r.err());
    let deep_seq = deep_seq.replace("metadata:", "services:");
    let files = Default::default();
    let input = vmr_domain::compose::ComposeInput { yaml: &deep_seq, project_flag: Some("bomb"), directory_name: "x", files: &files };
    let t = std::time::Instant::now();
    let r = vmr_domain::compose::ComposePlan::parse(&input);
    eprintln!("{n}: {:?} {:?}", t.elapsed(), r.err());
}
