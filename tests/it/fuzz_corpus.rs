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

/// The short fuzzing run of CI (stable, no libFuzzer): each target gets its committed seeds
/// mutated at random (bit flips, boundary bytes, cuts, repeats, inserts, splices of two
/// seeds) for a fixed budget, `STELLAOPS_FUZZ_MILLIS` per target (default 2000). Not
/// coverage-guided (that is the documented `cargo fuzz` run), but the same entry points and
/// the same rule: no panic, no input that takes over 10 s. A finding is written to
/// `target/fuzz-findings/<target>-<sha256>` and named with the seed that replays the run
/// (`STELLAOPS_FUZZ_SEED`).
#[test]
fn the_fuzz_targets_survive_mutated_seeds_for_a_short_budget() {
    let budget = std::time::Duration::from_millis(std::env::var("STELLAOPS_FUZZ_MILLIS").ok().and_then(|v| v.parse().ok()).unwrap_or(2000));
    let seed: u64 = std::env::var("STELLAOPS_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1) | 1
    });
    let mut state = seed;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let findings = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/fuzz-findings");
    let mut failed = Vec::new();
    let mut total = 0usize;
    for (name, target) in targets::TARGETS {
        let dir = fuzz_dir().join("corpus").join(name);
        let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir).unwrap().map(|e| std::fs::read(e.unwrap().path()).unwrap()).collect();
        seeds.sort();
        let started = std::time::Instant::now();
        let mut runs = 0usize;
        while started.elapsed() < budget {
            let mut input = seeds[(next() % seeds.len() as u64) as usize].clone();
            for _ in 0..1 + next() % 4 {
                mutate(&mut input, &seeds, &mut next);
            }
            let t = std::time::Instant::now();
            let outcome = std::panic::catch_unwind(|| target(&input));
            let took = t.elapsed();
            runs += 1;
            let why = match outcome {
                Err(p) => Some(
                    p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned())).unwrap_or_default(),
                ),
                Ok(()) if took > std::time::Duration::from_secs(10) => Some(format!("took {took:?}")),
                Ok(()) => None,
            };
            if let Some(why) = why {
                std::fs::create_dir_all(&findings).unwrap();
                let file = findings.join(format!("{name}-{}", schema::model::Digest::of(&input).hex()));
                std::fs::write(&file, &input).unwrap();
                failed.push(format!("`{name}`: {why} (input: {})", file.display()));
                break;
            }
        }
        eprintln!("fuzz `{name}`: {runs} mutated inputs in {:?}", started.elapsed());
        total += runs;
    }
    assert!(failed.is_empty(), "findings (replay with STELLAOPS_FUZZ_SEED={seed}):\n{}", failed.join("\n"));
    assert!(total >= targets::TARGETS.len(), "every target ran");
}

/// One random change to `input`.
fn mutate(input: &mut Vec<u8>, seeds: &[Vec<u8>], next: &mut impl FnMut() -> u64) {
    let len = input.len();
    let at = |n: u64| if len == 0 { 0 } else { (n % len as u64) as usize };
    match next() % 8 {
        0 if len > 0 => {
            let i = at(next());
            input[i] ^= 1 << (next() % 8);
        }
        1 if len > 0 => {
            let i = at(next());
            input[i] = [0x00, 0xff, 0x7f, 0x80, b'\n', b'"', b'-', b'9'][(next() % 8) as usize];
        }
        2 if len > 0 => {
            let (a, b) = (at(next()), at(next()));
            input.drain(a.min(b)..a.max(b));
        }
        3 if len > 0 => {
            let (a, b) = (at(next()), at(next()));
            let piece: Vec<u8> = input[a.min(b)..a.max(b)].iter().copied().take(4096).collect();
            let i = at(next());
            input.splice(i..i, piece);
        }
        4 => {
            let i = at(next());
            let piece: Vec<u8> = (0..1 + next() % 16).map(|_| next() as u8).collect();
            input.splice(i..i, piece);
        }
        5 => {
            let other = &seeds[(next() % seeds.len() as u64) as usize];
            if !other.is_empty() {
                let from = (next() % other.len() as u64) as usize;
                let i = at(next());
                input.truncate(i);
                input.extend_from_slice(&other[from..]);
            }
        }
        6 if len > 0 => input.truncate(at(next())),
        _ => {
            // A number where a digit was: sizes, counts and offsets at their limits.
            if let Some(i) = input.iter().position(|b| b.is_ascii_digit()) {
                let n = ["0", "-1", "18446744073709551615", "4294967296", "99999999999999999999"][(next() % 5) as usize];
                input.splice(i..i + 1, n.bytes());
            }
        }
    }
}
