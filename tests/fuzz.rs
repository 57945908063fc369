//! Bounded property test of the loader: random bytes and random mutations of valid YAML and
//! Nickel specs, and the hostile specs found in review, never panic, and each either loads or
//! fails with located problems that quote no file outside the spec's tree.
//!
//! Every case runs under a budget: each test re-runs itself as a child process of this test
//! binary with its address space capped at [`MEMORY_BUDGET`] (an alias bomb aborts it instead
//! of taking the machine), and a case that takes longer than [`CASE_TIME_BUDGET`] aborts it
//! naming the case.

use std::path::{Path, PathBuf};
use std::time::Duration;

use dispatch::spec::{load_text, LoadError};

/// Address space of the child that runs the cases (the allocator reserves 1 GiB up front).
const MEMORY_BUDGET: u64 = 3 << 30;

/// Longest one case may take (Nickel's own budget is 10 s; debug builds are slow).
const CASE_TIME_BUDGET: Duration = Duration::from_secs(60);

/// Set in the child that runs the cases.
const CHILD: &str = "DISPATCH_FUZZ_CHILD";

/// Runs `cases` in a child process of this test binary under the budgets, and fails when the
/// child does (an abort on exhausted memory, a case over its time, a failed assertion).
fn under_budget(test: &str, cases: impl FnOnce()) {
    if std::env::var_os(CHILD).is_some() {
        let limit = libc::rlimit {
            rlim_cur: MEMORY_BUDGET,
            rlim_max: MEMORY_BUDGET,
        };
        // SAFETY: setrlimit reads the struct, which lives for the call.
        unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) };
        dispatch::spec::nickel::set_evaluator(PathBuf::from(env!("CARGO_BIN_EXE_dispatch")));
        cases();
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .expect("the test binary runs itself");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "{test} failed under its budget ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

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
    "import \"/proc/self/environ\" as 'Text",
    "import \"../../../outside.ncl\"",
    "import \"dispatch.ncl\"",
    "&b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]",
    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
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

/// Loads `text` as `path` and checks the property, within [`CASE_TIME_BUDGET`]; whether the
/// spec was invalid.
fn check(path: &Path, text: String, case: &str) -> bool {
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let name = case.to_owned();
    let watchdog = std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
            finished.recv_timeout(CASE_TIME_BUDGET)
        {
            eprintln!("{name} took longer than {CASE_TIME_BUDGET:?}");
            std::process::abort();
        }
    });
    let invalid = check_now(path, text, case);
    let _ = done.send(());
    let _ = watchdog.join();
    invalid
}

fn check_now(path: &Path, text: String, case: &str) -> bool {
    let result = std::panic::catch_unwind(|| load_text(path, text.clone()));
    let Ok(result) = result else {
        panic!("loader panicked on {case}:\n{text}")
    };
    match result {
        Ok(_) => false,
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
            let rendered = errors.render(false);
            assert!(!rendered.is_empty());
            assert!(
                rendered.len() < 64 * 1024 + 2048 * errors.problems.len().min(100),
                "{case}: {} bytes of diagnostics",
                rendered.len()
            );
            // Every file a problem can quote is inside the repository (the spec's tree here),
            // built into dispatch, or Nickel's standard library.
            for file in errors.sources.files() {
                assert!(
                    file.name.starts_with(root().to_str().unwrap())
                        || file.name.starts_with("pipelines/")
                        || file.name.contains("(built into dispatch)")
                        || file.name.starts_with('<'),
                    "{case}: a problem quotes {}",
                    file.name
                );
            }
            true
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
    under_budget(
        "fuzz::random_mutations_of_yaml_specs_never_panic_and_always_locate_errors",
        yaml_cases,
    );
}

fn yaml_cases() {
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
    under_budget(
        "fuzz::random_mutations_of_nickel_specs_never_panic_and_always_locate_errors",
        nickel_cases,
    );
}

fn nickel_cases() {
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

/// The hostile specs of the review, each a case of its own under the same budgets: today each
/// of them took gigabytes, the machine's CPU for good, or printed files from outside the tree.
#[test]
fn hostile_specs_fail_within_budget_with_located_problems() {
    under_budget(
        "fuzz::hostile_specs_fail_within_budget_with_located_problems",
        hostile_cases,
    );
}

fn hostile_cases() {
    let mut bomb = String::from("version: 1\nname: bomb\na0: &a0 [x,x,x,x,x,x,x,x,x,x]\n");
    for level in 1..9 {
        let items = vec![format!("*a{}", level - 1); 10].join(",");
        bomb.push_str(&format!("a{level}: &a{level} [{items}]\n"));
    }
    let repos: Vec<String> = (0..10_000).map(|i| format!("r{i}")).collect();
    let no_org = format!(
        "version: 1\nname: big\njobs:\n  - id: a\n    task: t\n    repos: [{}]\n",
        repos.join(",")
    );
    let yaml = root().join("pipelines/hostile.yaml");
    assert!(check(&yaml, bomb, "alias bomb"));
    assert!(check(&yaml, no_org, "10,000 targets without an org"));
    let nickel = root().join("pipelines/hostile.ncl");
    for (case, text) in [
        ("endless recursion", "let rec f = fun x => f x in\nf 1\n"),
        (
            "growing string",
            "let rec f = fun s n => if n == 0 then s else f (s ++ s) (n - 1) in f \"x\" 40\n",
        ),
        (
            "deep value",
            "let rec f = fun n => if n == 0 then [] else [f (n - 1)] in f 100000\n",
        ),
        ("long list", "std.array.generate (fun i => i) 2000000\n"),
        ("/proc", "import \"/proc/self/environ\" as 'Text\n"),
        (
            "escape",
            "import \"../../../../../../../../etc/passwd\" as 'Text\n",
        ),
    ] {
        assert!(check(&nickel, text.to_owned(), case), "{case} loaded");
    }
}
