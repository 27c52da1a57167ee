//! Hostfiles: one `host:port` per line, in process order.

use std::path::Path;

use crate::error::{Error, Result};

/// Reads a hostfile (blank lines and `#` comments ignored).
pub fn read_hostfile(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("{}: cannot read hostfile: {e}", path.display())))?;
    parse_hostfile(&text).map_err(|m| Error::Config(format!("{}: {m}", path.display())))
}

/// Parses hostfile text.
pub fn parse_hostfile(text: &str) -> Result<Vec<String>, String> {
    let hosts: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    for (i, h) in hosts.iter().enumerate() {
        if h.rsplit_once(':')
            .is_none_or(|(host, p)| host.is_empty() || p.parse::<u16>().is_err())
        {
            return Err(format!("entry {} ('{h}') is not host:port", i + 1));
        }
    }
    if hosts.is_empty() {
        return Err("hostfile lists no hosts".into());
    }
    Ok(hosts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        assert_eq!(
            parse_hostfile("# nodes\na:1\n\n b:2 \n").unwrap(),
            ["a:1", "b:2"]
        );
        assert!(parse_hostfile("a\n").is_err());
        assert!(parse_hostfile("a:x\n").is_err());
        assert!(parse_hostfile(":1\n").is_err());
        assert!(parse_hostfile("\n#\n").is_err());
    }
}
