//! Bounded property test of the loader: random bytes and random mutations of valid YAML and
//! Nickel specs never panic, and each either loads or fails with located problems.

use std::path::{Path, PathBuf};

use dispatch::spec::{load_text, LoadError};

/// xorshift64*: deterministic, so a failure reproduces from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const TOKENS: &[&str] = &[
    ":",
    "-",
    "- ",
    "[",
    "]",
    "{",
    "}",
    ",",
    "\n",
    "  ",
    "\t",
    "&a ",
    "*a",
    "<<: *a",
    "'",
    "\"",
    "#",
    "!!str ",
    "~",
    "null",
    "0",
    "-1",
    "1.5",
    "99999999999999999999",
    "..",
    "/",
    "=",
    "let x = 1 in ",
    "import \"nope.ncl\"",
    "|",
    "fun x => x",
    "%{",
    "jobs",
    "needs",
    "repos",
    "issue",
    "é",
    "\u{0}",
    "\u{202e}",
];

fn mutate(rng: &mut Rng, text: &str) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(bytes.len() + 1);
        match rng.below(6) {
            0 => {
                let end = (at + rng.below(40)).min(bytes.len());
                bytes.drain(at..end);
            }
            1 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                bytes.splice(at..at, token.bytes());
            }
            2 if at < bytes.len() => bytes[at] = (rng.next() & 0x7f) as u8,
            3 => {
                let lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
                let line = lines[rng.below(lines.len())].to_vec();
                bytes.splice(at..at, line.into_iter().chain([b'\n']));
            }
            4 => {
                let random: Vec<u8> = (0..rng.below(8)).map(|_| rng.next() as u8).collect();
                bytes.splice(at..at, random);
            }
            _ => {
                let end = (at + rng.below(200)).min(bytes.len());
                let chunk = bytes[at..end].to_vec();
                bytes.splice(at..at, chunk);
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Loads `text` as `path` and checks the property.
fn check(path: &Path, text: String, case: &str) {
    let result = std::panic::catch_unwind(|| load_text(path, text.clone()));
    let Ok(result) = result else {
        panic!("loader panicked on {case}:\n{text}")
    };
    match result {
        Ok(_) => {}
        Err(LoadError::Invalid(errors)) => {
            assert!(
                !errors.problems.is_empty(),
                "{case}: invalid without a problem"
            );
            for problem in &errors.problems {
                let file = errors.sources.get(problem.span.file);
                assert!(
                    problem.span.start <= problem.span.end && problem.span.end <= file.text.len(),
                    "{case}: span out of its file"
                );
                let location = errors.sources.location(problem.span);
                assert!(
                    location.starts_with(&file.name) && location.matches(':').count() >= 2,
                    "{case}: no location in {location}"
                );
            }
            assert!(!errors.render(false).is_empty());
        }
        Err(LoadError::Io { .. }) => {
            panic!("{case}: the loader read no file, so no I/O error is possible")
        }
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn random_mutations_of_yaml_specs_never_panic_and_always_locate_errors() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let seeds: Vec<String> = ["fix-tests.yaml", "security-audit.yaml", "batch-fanout.yaml"]
        .iter()
        .map(|f| std::fs::read_to_string(root().join("pipelines").join(f)).unwrap())
        .collect();
    let path = root().join("pipelines/fuzz.yaml");
    for i in 0..400 {
        let seed = &seeds[i % seeds.len()];
        check(&path, mutate(&mut rng, seed), &format!("yaml mutation {i}"));
    }
    for i in 0..100 {
        let random: Vec<u8> = (0..rng.below(300)).map(|_| rng.next() as u8).collect();
        check(
            &path,
            String::from_utf8_lossy(&random).into_owned(),
            &format!("yaml random bytes {i}"),
        );
    }
}

#[test]
fn random_mutations_of_nickel_specs_never_panic_and_always_locate_errors() {
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let seed = std::fs::read_to_string(root().join("pipelines/fix-tests.ncl")).unwrap();
    // Beside the real spec so that its imports resolve.
    let path = root().join("pipelines/fuzz.ncl");
    for i in 0..60 {
        check(
            &path,
            mutate(&mut rng, &seed),
            &format!("nickel mutation {i}"),
        );
    }
    for i in 0..20 {
        let random: Vec<u8> = (0..rng.below(200)).map(|_| rng.next() as u8).collect();
        check(
            &path,
            String::from_utf8_lossy(&random).into_owned(),
            &format!("nickel random bytes {i}"),
        );
    }
}
