//! `dispatch run` against `xargs -P8 docker run` (issue 3), and the journal's cost (issue 4).
//!
//! 200 trivial units (agent command `true`, no QA, no publish) at total limit 8, against 200
//! `docker run --rm IMAGE true` with 8 in parallel, on the same image, measured in the same
//! process. The forge is seeded and the image built before timing; each dispatch round starts
//! from empty workspaces and an empty journal, with `--no-cache` (the trivial agents would
//! otherwise be answered from the agent-output cache after the warm-up). Each round also runs
//! dispatch with its database on tmpfs (a link into /dev/shm), the rest of the state on disk.
//! The three runs of a round go in a rotating order, and the file system is synced after each
//! cleanup, so that neither side pays for the other's leftovers (deleting 200 clones keeps an
//! ext4 disk busy for a while). Run with `cargo bench --bench run_docker`; prints the times,
//! the ratio and the journal's share.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const UNITS: usize = 200;

fn dispatch(dir: &Path) -> Duration {
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_dispatch"))
        .args([
            "--color",
            "never",
            "run",
            "spec.yaml",
            "--no-cache",
            "--output",
            "json",
        ])
        .current_dir(dir)
        .output()
        .expect("dispatch runs");
    let elapsed = start.elapsed();
    assert!(
        out.status.success(),
        "dispatch run failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    elapsed
}

fn xargs() -> Duration {
    let start = Instant::now();
    let status = Command::new("sh")
        .args([
            "-c",
            "seq 200 | xargs -P8 -I{} docker run --rm --network none dispatch-busybox true",
        ])
        .status()
        .expect("sh runs");
    assert!(status.success());
    start.elapsed()
}

fn reset(dir: &Path) {
    let state = dir.join(".dispatch");
    let _ = std::fs::remove_dir_all(state.join("workspaces"));
    for file in ["dispatch.db", "dispatch.db-wal", "dispatch.db-shm"] {
        let _ = std::fs::remove_file(state.join(file));
    }
    let _ = Command::new("sync").status();
}

fn setup(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    for i in 0..UNITS {
        let repo = dir.join(format!("repos/b/r{i:03}"));
        std::fs::create_dir_all(&repo).unwrap();
        std::fs::write(repo.join("README.md"), format!("repository {i}\n")).unwrap();
    }
    let repos: Vec<String> = (0..UNITS).map(|i| format!("r{i:03}")).collect();
    let spec = format!(
        "version: 1\nname: bench\nforge: {{ kind: local, seed: repos }}\ndefaults: {{ org: b, agent: trivial, image: dispatch-busybox }}\nlimits: {{ total: 8 }}\nagents:\n  trivial: {{ command: [\"true\"], network: none }}\njobs:\n  - {{ id: bench, task: nothing, qa: [], publish: false, repos: [{}] }}\n",
        repos.join(", ")
    );
    std::fs::write(dir.join("spec.yaml"), spec).unwrap();
    // Warm-up: seeds the forge, builds the image, warms the engine.
    dispatch(dir);
}

fn main() {
    // The same run with the journal on disk (as shipped) and with the journal on tmpfs: the
    // state directory stays on disk, its database is a link into /dev/shm.
    let dir = std::env::temp_dir().join(format!("dispatch-bench-run-{}", std::process::id()));
    let shm = Path::new("/dev/shm").join(format!("dispatch-bench-run-{}.db", std::process::id()));
    setup(&dir);
    let on_disk = |dir: &Path| {
        reset(dir);
        dispatch(dir)
    };
    let on_tmpfs = |dir: &Path| {
        reset(dir);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", shm.display()));
        }
        std::os::unix::fs::symlink(&shm, dir.join(".dispatch/dispatch.db")).unwrap();
        dispatch(dir)
    };
    let mut rounds = Vec::new();
    for round in 0..3 {
        let (mut d, mut t, mut x) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
        for step in 0..3 {
            match (round + step) % 3 {
                0 => d = on_disk(&dir),
                1 => t = on_tmpfs(&dir),
                _ => {
                    let _ = Command::new("sync").status();
                    x = xargs();
                }
            }
        }
        rounds.push((d, t, x));
        println!(
            "round: dispatch run {:.2} s (journal on tmpfs {:.2} s), xargs -P8 docker run {:.2} s",
            d.as_secs_f64(),
            t.as_secs_f64(),
            x.as_secs_f64()
        );
    }
    let mean = |f: fn(&(Duration, Duration, Duration)) -> Duration| {
        rounds.iter().map(|r| f(r).as_secs_f64()).sum::<f64>() / rounds.len() as f64
    };
    let (d, t, x) = (mean(|r| r.0), mean(|r| r.1), mean(|r| r.2));
    let mut ratios: Vec<f64> = rounds
        .iter()
        .map(|r| r.0.as_secs_f64() / r.2.as_secs_f64())
        .collect();
    ratios.sort_by(f64::total_cmp);
    println!("{UNITS} trivial units at total 8: dispatch run {d:.2} s, xargs -P8 docker run --rm {x:.2} s, ratio {:.2} (means of {} rounds; per-round ratios {})", d / x, rounds.len(), ratios.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(", "));
    println!(
        "journal on disk vs on tmpfs: {d:.2} s vs {t:.2} s, {:+.1}%",
        (d / t - 1.0) * 100.0
    );
    let _ = std::fs::remove_dir_all(&dir);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", shm.display()));
    }
}
