//! What a failed load reports: every problem at once, each with the file,
//! line and column, and what to change.

use std::fmt;

/// One problem in a topology file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologyError {
    pub file: String,
    /// 1-based; 0 when unknown.
    pub line: usize,
    pub column: usize,
    pub message: String,
    pub fix: String,
}

impl fmt::Display for TopologyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}; fix: {}",
            self.file, self.line, self.column, self.message, self.fix
        )
    }
}

/// All problems found in a topology file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologyErrors {
    pub errors: Vec<TopologyError>,
}

impl fmt::Display for TopologyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for TopologyErrors {}

pub(super) fn strip_location(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

pub(super) fn serde_fix(msg: &str) -> String {
    if msg.contains("unknown field") {
        "remove the key or correct its spelling to one of the expected keys".into()
    } else if msg.contains("missing field") {
        "add the missing key".into()
    } else if msg.contains("unknown variant") {
        "use one of the expected values".into()
    } else {
        "correct the value's type or the YAML syntax".into()
    }
}
