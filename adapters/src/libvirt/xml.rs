//! Small pieces shared by the domain and network XML modules: the writer
//! set-up and libvirt's size units.

use quick_xml::Writer;
use vmr_ports::HypervisorError;

pub(crate) type XmlResult = std::io::Result<()>;

pub(crate) fn new_writer() -> Writer<Vec<u8>> {
    Writer::new_with_indent(Vec::new(), b' ', 2)
}

pub(crate) fn finish(w: Writer<Vec<u8>>) -> Result<String, HypervisorError> {
    String::from_utf8(w.into_inner())
        .map_err(|e| HypervisorError::backend(format!("generated XML is not UTF-8: {e}"), e))
}

pub(crate) fn xml_error(e: std::io::Error) -> HypervisorError {
    HypervisorError::backend(format!("cannot write XML: {e}"), e)
}

/// A libvirt scaled integer (`<memory unit='KiB'>`) in bytes. libvirt's
/// units: `b`/`bytes`, `KB`/`MB`/... powers of 1000, `k`/`KiB`/`M`/`MiB`/...
/// powers of 1024; the default is KiB.
pub(crate) fn memory_bytes(unit: Option<&str>, value: &str) -> Result<u64, String> {
    let n: u64 = value
        .trim()
        .parse()
        .map_err(|_| format!("`{}` is not a number", value.escape_debug()))?;
    let factor: u64 = match unit.unwrap_or("KiB") {
        "b" | "bytes" => 1,
        "KB" => 1000,
        "k" | "K" | "KiB" => 1 << 10,
        "MB" => 1000_u64.pow(2),
        "M" | "MiB" => 1 << 20,
        "GB" => 1000_u64.pow(3),
        "G" | "GiB" => 1 << 30,
        "TB" => 1000_u64.pow(4),
        "T" | "TiB" => 1 << 40,
        other => return Err(format!("unknown unit `{}`", other.escape_debug())),
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("{n} {} overflows", unit.unwrap_or("KiB")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(memory_bytes(Some("KiB"), "131072"), Ok(128 << 20));
        assert_eq!(memory_bytes(None, "1"), Ok(1024));
        assert_eq!(memory_bytes(Some("GiB"), "2"), Ok(2 << 30));
        assert_eq!(memory_bytes(Some("MB"), "1"), Ok(1_000_000));
        assert_eq!(memory_bytes(Some("b"), " 7 "), Ok(7));
        assert!(memory_bytes(Some("parsec"), "1").is_err());
        assert!(memory_bytes(Some("TiB"), &u64::MAX.to_string()).is_err());
    }
}
