//! The fuzz targets' inputs in the normal test suite (no nightly, deterministic): every
//! committed seed (`fuzz/corpus/<target>/`) and every input that once crashed, hung or
//! exhausted memory (`fuzz/regressions/<target>/`) runs through the same entry points the
//! cargo-fuzz targets call (`fuzz/src/targets.rs`, included here). A panic names the file.
//! The coverage-guided runs themselves are documented in the README ("Fuzzing").

use std::path::{Path, PathBuf};

#[path = "../../fuzz/src/targets.rs"]
#[allow(dead_code)]
mod targets;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

#[test]
fn every_committed_fuzz_input_runs_through_its_target_without_a_panic() {
    for set in ["corpus", "regressions"] {
        let dir = fuzz_dir().join(set);
        match targets::replay(&dir) {
            Ok(n) => assert!(n > 0, "`{}` holds no input", dir.display()),
            Err(failed) => panic!("{} inputs of `{}` fail their target:\n{}", failed.len(), dir.display(), failed.join("\n")),
        }
    }
    // Every target has seeds, and every seed directory a target.
    for (name, _) in targets::TARGETS {
        let d = fuzz_dir().join("corpus").join(name);
        assert!(
            std::fs::read_dir(&d).map(|mut e| e.next().is_some()).unwrap_or(false),
            "no seed for the `{name}` target in `{}`",
            d.display()
        );
        assert!(fuzz_dir().join("fuzz_targets").join(format!("{name}.rs")).is_file(), "no cargo-fuzz target `{name}`");
    }
    for e in std::fs::read_dir(fuzz_dir().join("corpus")).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        assert!(targets::TARGETS.iter().any(|(t, _)| *t == name), "`fuzz/corpus/{name}` is no target's");
    }
}

/// The kit seeds are signed with the key whose public half is committed beside them: the
/// fuzzer's mutations of the entries after `manifest/` then reach the inventory checks rather
/// than stop at the signature.
///
/// `STELLAOPS_FUZZ_WRITE_KIT_SEEDS=1` writes them anew with a new key (its public half beside
/// them, its private half thrown away), for when the kit format changes.
#[test]
fn the_kit_seeds_verify_with_the_committed_key_so_mutations_reach_the_inventory_checks() {
    if std::env::var_os("STELLAOPS_FUZZ_WRITE_KIT_SEEDS").is_some() {
        let key = verifier::keys::SigningKey::generate(verifier::keys::KeyKind::EcdsaP256);
        for (name, bytes) in targets::kit_seeds(&key) {
            std::fs::write(fuzz_dir().join("corpus/kit").join(name), bytes).unwrap();
        }
        std::fs::write(fuzz_dir().join("keys/kit-fuzz.pub"), key.public().pem()).unwrap();
        eprintln!("wrote fuzz/corpus/kit/*.tar and fuzz/keys/kit-fuzz.pub: run the test again without STELLAOPS_FUZZ_WRITE_KIT_SEEDS");
        return;
    }
    let key = verifier::keys::PublicKey::from_pem(std::fs::read_to_string(fuzz_dir().join("keys/kit-fuzz.pub")).unwrap().trim()).unwrap();
    assert_eq!(key.pem().trim(), targets::KIT_PUBLIC_KEY.trim(), "the kit target reads the committed key");
    let dir = tempfile::tempdir().unwrap();
    for name in ["manifest-only.tar", "full.tar", "delta.tar"] {
        let tar = std::fs::read(fuzz_dir().join("corpus/kit").join(name)).unwrap();
        let kit = dir.path().join(format!("{name}.zst"));
        std::fs::write(&kit, zstd::encode_all(tar.as_slice(), 1).unwrap()).unwrap();
        let r = verifier::kit::verify_kit(&kit, &key, None, verifier::keys::Fips::Off, None, &schema::report::Silent);
        if let Err(e) = r {
            let e = e.to_string();
            let at_step_1 = ["does not verify", "no signature verifies", "another release.yaml", "ends before", "where `manifest/"];
            assert!(!at_step_1.iter().any(|s| e.contains(s)), "{name} stops at the signatures: {e}");
        }
    }
}

/// Regression (found while writing the kit target, issue 18): entry sizes of a signed
/// inventory that overflow when summed panicked where arithmetic is checked, instead of being
/// refused. Only the release key could sign such an inventory; it is refused all the same.
#[test]
fn a_signed_kit_inventory_whose_sizes_overflow_when_summed_is_refused() {
    let key = verifier::keys::SigningKey::generate(verifier::keys::KeyKind::EcdsaP256);
    let tar = targets::seed_kit_with(&key, &[("images/index.json", b"{}"), ("images/oci-layout", b"{}")], Vec::new(), |inv| {
        for e in &mut inv.entries {
            e.size = u64::MAX / 2 + 1;
        }
        inv.total_size = 0;
    });
    let dir = tempfile::tempdir().unwrap();
    let kit = dir.path().join("overflow.tar.zst");
    std::fs::write(&kit, zstd::encode_all(tar.as_slice(), 1).unwrap()).unwrap();
    let e = verifier::kit::verify_kit(&kit, key.public(), None, verifier::keys::Fips::Off, None, &schema::report::Silent).unwrap_err();
    assert!(e.to_string().contains("the inventory's total size is not the sum of its entries"), "{e}");
    assert_eq!(e.exit_code(), schema::exit::REJECTED);
}
