//! Which accountant turns a run into (epsilon, delta): RDP or PLD.

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// The accountant that produced (or is to produce) an epsilon.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum AccountantKind {
    /// Rényi DP over Opacus's orders, converted by Balle et al. 2020 (as Opacus).
    Rdp,
    /// The privacy loss distribution, discretized pessimistically (as dp_accounting); tighter.
    Pld,
}

impl AccountantKind {
    /// The name used on the command line and in reports: `rdp` or `pld`.
    pub fn as_str(self) -> &'static str {
        match self {
            AccountantKind::Rdp => "rdp",
            AccountantKind::Pld => "pld",
        }
    }
}

impl fmt::Display for AccountantKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AccountantKind {
    type Err = Error;

    /// `rdp` or `pld`, in any case.
    fn from_str(s: &str) -> Result<Self, Error> {
        if s.eq_ignore_ascii_case("rdp") {
            Ok(AccountantKind::Rdp)
        } else if s.eq_ignore_ascii_case("pld") {
            Ok(AccountantKind::Pld)
        } else {
            Err(Error::UnknownAccountant(s.to_owned()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_both_names() {
        for kind in [AccountantKind::Rdp, AccountantKind::Pld] {
            assert_eq!(kind.to_string().parse::<AccountantKind>(), Ok(kind));
        }
        assert_eq!("PLD".parse::<AccountantKind>(), Ok(AccountantKind::Pld));
        assert_eq!(
            "prv".parse::<AccountantKind>(),
            Err(Error::UnknownAccountant("prv".into()))
        );
    }
}
