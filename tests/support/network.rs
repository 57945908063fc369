//! The Docker network of the Kubernetes tests' pods: `dispatch-test-kube`, created
//! `--internal` once per test binary (and reused when it exists, by later binaries too).
//!
//! What a container on it reaches, as measured on Docker 20.10 (`tests/githttp.rs` proves the
//! first two on every run):
//!
//! - a server the test binds on the network's [`Network::gateway`], the host's address on the
//!   network's bridge: containers reach it directly on the bridge's subnet (they even get a
//!   default route through it);
//! - nothing beyond the host: the engine drops whatever the host would forward off the bridge
//!   (`DOCKER-ISOLATION-STAGE-1: -i br-… ! -d SUBNET -j DROP`), so other networks' containers,
//!   published ports, the internet and the registries are out of reach, and the embedded DNS
//!   resolves no outside name;
//! - but the host's own addresses are not forwarded, they are delivered (the `INPUT` chain,
//!   which an internal network leaves alone): a container reaches every address of the host,
//!   the gateway as well as `docker0`'s or `eth0`'s. So a host server bound on `0.0.0.0` or on
//!   any host address is reachable too; one bound on `127.0.0.1` is not. Servers that pods must
//!   not reach bind on `127.0.0.1` (as the fake forge does); the ones they must reach bind on
//!   the gateway.

use std::net::IpAddr;
use std::process::Command;
use std::sync::OnceLock;

/// The network's name.
const NAME: &str = "dispatch-test-kube";

/// The tests' pod network (see the module doc for what its containers reach).
pub struct Network {
    /// `dispatch-test-kube` (what `docker run --network` and a pod's runtime name).
    pub name: String,
    /// The host's address on it: where a test binds the servers its containers must reach.
    pub gateway: IpAddr,
}

/// The network, created on first use (the engine must answer: check
/// [`super::docker::available`] first).
pub fn network() -> &'static Network {
    static NETWORK: OnceLock<Network> = OnceLock::new();
    NETWORK.get_or_init(|| {
        let gateway = inspect().unwrap_or_else(|| {
            let created = docker(&["network", "create", "--internal", NAME]);
            // Another test binary may have created it meanwhile.
            inspect().unwrap_or_else(|| {
                panic!(
                    "docker network create --internal {NAME} failed: {}",
                    String::from_utf8_lossy(&created.stderr)
                )
            })
        });
        Network {
            name: NAME.to_owned(),
            gateway,
        }
    })
}

/// The gateway of the existing network, `None` when there is none; panics when the network
/// exists but is not internal (it would let containers out).
fn inspect() -> Option<IpAddr> {
    let out = docker(&[
        "network",
        "inspect",
        "--format",
        "{{.Internal}} {{(index .IPAM.Config 0).Gateway}}",
        NAME,
    ]);
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let (internal, gateway) = text
        .trim()
        .split_once(' ')
        .unwrap_or_else(|| panic!("docker network inspect {NAME} printed {text:?}"));
    assert_eq!(
        internal, "true",
        "the network {NAME} exists but is not internal: remove it (docker network rm {NAME})"
    );
    Some(
        gateway.parse().unwrap_or_else(|e| {
            panic!("the network {NAME} has no IPv4 gateway ({gateway:?}: {e})")
        }),
    )
}

fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("docker {args:?}: {e}"))
}
