//! The flags several binaries share: each binary's `--help` lists every flag of its groups
//! (the values they parse to are checked in each binary's unit tests, against
//! `fastdp_tests::flags`), and the same bad cluster flags are refused alike.

use fastdp_tests::{bin, flags, run};

#[test]
fn help_lists_the_shared_flags() {
    for (binary, sub, groups) in flags::IN_HELP {
        let args = [*sub, &["--help"][..]].concat();
        let out = run(bin(binary), &args, &[], b"");
        assert!(out.status.success(), "{binary} {args:?}");
        let help = String::from_utf8(out.stdout).unwrap();
        for name in groups.iter().flat_map(|g| flags::names(g)) {
            assert!(
                help.contains(&name),
                "{binary} {args:?} lacks {name}:\n{help}"
            );
        }
    }
}

#[test]
fn bad_cluster_flags_are_refused_alike() {
    for (args, said) in [
        (&["--process", "1"][..], "--process needs --hostfile"),
        (&["--threads", "0"][..], "--threads 0 is out of range"),
        (&["--workers", "0"][..], "--workers 0 is out of range"),
        (&["--peer-timeout", "0"][..], "--peer-timeout"),
    ] {
        for binary in ["pipeline", "trainer"] {
            let out = run(bin(binary), args, &[], b"");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                !out.status.success() && err.contains(said),
                "{binary} {args:?}: {err}"
            );
        }
    }
}
