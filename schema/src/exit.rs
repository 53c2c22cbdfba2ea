//! Exit codes (README "Exit codes"), owned by this one module: every error of every crate maps
//! to a [`Code`], and only the CLI turns it into a process status.

/// What a command's exit status means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Code {
    /// Success.
    Success = 0,
    /// Refused: bad input, a failed check, a reproducibility mismatch.
    Rejected = 1,
    /// A bug in this tool (a panic, a broken invariant).
    Internal = 2,
    /// The environment failed: I/O, network, a missing tool.
    Environment = 3,
    /// The command line does not parse.
    Usage = 64,
}

impl Code {
    /// The process exit status.
    pub fn status(self) -> i32 {
        self as i32
    }
    /// The code of a child process of ours that exited with `status` (any status we do not
    /// document counts as an environment failure).
    pub fn from_status(status: i32) -> Code {
        match status {
            0 => Code::Success,
            1 => Code::Rejected,
            2 => Code::Internal,
            64 => Code::Usage,
            _ => Code::Environment,
        }
    }
}

/// Refused: bad input, a failed check, a reproducibility mismatch.
pub const REJECTED: Code = Code::Rejected;
/// A bug in this tool.
pub const INTERNAL: Code = Code::Internal;
/// The environment failed: I/O, network, a missing tool.
pub const ENVIRONMENT: Code = Code::Environment;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_the_documented_ones() {
        assert_eq!([Code::Success, Code::Rejected, Code::Internal, Code::Environment, Code::Usage].map(Code::status), [0, 1, 2, 3, 64]);
    }
}
