//! Replays every input in `fuzz/seeds/<target>/` (each target's seed
//! corpus, committed) and `fuzz/regressions/<target>/` (crashes the
//! fuzzers found, kept after the fix) through the same harnesses the
//! cargo-fuzz targets run, plus a few thousand pseudo-random inputs each,
//! so the harnesses' invariants are checked on every test run even where
//! no fuzzer is installed. A target without seeds, or a seed that reaches
//! nothing, fails. Longer runs: `fuzz/run.sh`.

use std::path::Path;

use sealgate::fuzzing;

/// A harness: checks its invariants on one input, returns how much it
/// exercised.
type Harness = fn(&[u8]) -> usize;

const TARGETS: [(&str, Harness); 4] = [
    ("command_parser", fuzzing::command_parser::run),
    ("data_reader", fuzzing::data_reader::run),
    ("server_session", fuzzing::server_session::run),
    ("client_session", fuzzing::client_session::run),
];

/// The inputs in `dir` (hidden files and notes left out).
fn inputs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        panic!("{} is missing", dir.display());
    };
    let mut found: Vec<(String, Vec<u8>)> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            !name.starts_with('.') && !name.ends_with(".md")
        })
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    found.sort();
    found
}

#[test]
fn every_seed_and_recorded_crash_input_passes() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for (target, run) in TARGETS {
        let seeds = inputs(&fuzz.join("seeds").join(target));
        assert!(!seeds.is_empty(), "{target} has no seed corpus");
        for (path, input) in &seeds {
            let work = run(input);
            println!("{target}: {path}: {work} units of work");
            assert!(work > 0, "{path} reaches nothing in {target}");
        }
        // Crash inputs: none may be recorded for a target yet.
        for (path, input) in inputs(&fuzz.join("regressions").join(target)) {
            println!("{target}: {path}");
            run(&input);
        }
    }
}

/// xorshift64*: deterministic, so a failure here reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn harnesses_hold_on_pseudo_random_inputs() {
    let mut rng = Rng(0x5ea1_9a7e);
    for (target, run) in TARGETS {
        let mut work = 0;
        let mut idle = 0;
        for case in 0..3000 {
            let len = (rng.next() % 600) as usize;
            // Bias towards SMTP-ish octets so the sessions get somewhere.
            const ALPHABET: &[u8] = b"EHLOMAIFRCPTDSQU:<>@. \r\n0123456789-";
            let input: Vec<u8> = (0..len)
                .map(|_| {
                    let r = rng.next();
                    if r.is_multiple_of(4) {
                        (r >> 8) as u8
                    } else {
                        ALPHABET[(r >> 8) as usize % ALPHABET.len()]
                    }
                })
                .collect();
            let outcome = std::panic::catch_unwind(|| run(&input));
            let Ok(done) = outcome else {
                panic!(
                    "{target} case {case} failed on {:?}",
                    String::from_utf8_lossy(&input)
                );
            };
            work += done;
            idle += usize::from(done == 0);
        }
        // The inputs must reach the code under test: a harness that
        // decoded nothing would pass without checking anything.
        println!("{target}: {work} units of work, {idle} of 3000 inputs did nothing");
        assert!(
            idle < 1500 && work > 3000,
            "{target}: {work} work, {idle} idle"
        );
    }
}
