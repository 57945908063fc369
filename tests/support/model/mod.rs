//! Scripted model servers for the real agent CLIs: the OpenAI Responses API as codex 0.163
//! expects it ([`openai`]) and the Anthropic Messages API as Claude Code 2.1.332 expects it
//! ([`anthropic`]), both streamed as server-sent events, both checking credentials like the
//! real APIs. Each listens on the gateway of a Docker network of its own created `--internal`
//! ([`ModelNetwork`]): containers on it reach the server and nothing else.
//!
//! The images the CLIs run in are built once per test binary by `scripts/agent-images`
//! ([`agent_image`]).

pub mod anthropic;
pub mod openai;
pub mod preset;

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::sync::OnceLock;

/// A Docker network created `--internal` for one test, removed when dropped: its containers
/// reach the host at [`ModelNetwork::gateway`] and nothing beyond.
pub struct ModelNetwork {
    /// The network's name (what a spec's `network:` names).
    pub name: String,
    /// The host's address on it.
    pub gateway: IpAddr,
}

impl ModelNetwork {
    /// Creates the network `dispatch-model-TEST-PID`.
    pub fn create(test: &str) -> Self {
        let name = format!("dispatch-model-{test}-{}", std::process::id());
        let _ = Command::new("docker")
            .args(["network", "rm", &name])
            .output();
        let created = Command::new("docker")
            .args(["network", "create", "--internal", &name])
            .output()
            .expect("docker runs");
        assert!(
            created.status.success(),
            "docker network create: {}",
            String::from_utf8_lossy(&created.stderr)
        );
        let inspected = Command::new("docker")
            .args([
                "network",
                "inspect",
                "--format",
                "{{(index .IPAM.Config 0).Gateway}}",
                &name,
            ])
            .output()
            .expect("docker runs");
        let gateway = String::from_utf8_lossy(&inspected.stdout)
            .trim()
            .parse()
            .expect("the network has a gateway address");
        Self { name, gateway }
    }

    /// A listening address on the gateway with a port the system chose.
    pub fn listener(&self) -> std::net::TcpListener {
        std::net::TcpListener::bind(SocketAddr::new(self.gateway, 0)).expect("bind on the gateway")
    }
}

impl Drop for ModelNetwork {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["network", "rm", &self.name])
            .output();
    }
}

/// The tag of the agent image `cli` (`codex` or `claude`), built once per test binary by
/// `scripts/agent-images` (which downloads the wheel once per machine).
pub fn agent_image(cli: &str) -> String {
    static BUILT: OnceLock<Result<Vec<String>, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/agent-images");
        let out = Command::new(script)
            .output()
            .map_err(|e| format!("{script}: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect())
    });
    match built {
        Ok(tags) => tags
            .iter()
            .find(|tag| tag.starts_with(&format!("dispatch-{cli}:")))
            .unwrap_or_else(|| panic!("scripts/agent-images built no `{cli}` image: {tags:?}"))
            .clone(),
        Err(error) => panic!("scripts/agent-images failed: {error}"),
    }
}
