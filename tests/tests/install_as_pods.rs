//! The shipped install running as Pods: the image built from the checkout by
//! scripts/build-images.sh, pushed to the cluster's registry (containerd
//! knows it as `localhost`, the chart's default repository), the chart
//! installed with the real Helm library as the seed installs it, and every
//! Pod run by the test kubelets through containerd's CRI.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Kubectl, repo};
use prewarm_testapi::installed::node_labels;
use prewarm_testapi::pod_cluster::{PodCluster, chart_pods};
use serde_json::Value;

/// Builds the image (incrementally after the first time) and pushes it to
/// the cluster's registry.
fn build_and_push(cluster: &PodCluster) {
    cluster.push_from_buildah(&common::build_image().image).unwrap();
}

/// `helm ARGS --kubeconfig <the cluster's>` through the real Helm library.
fn helm(cluster: &PodCluster, args: &[&str]) -> String {
    cluster.helm(&common::manifests::helm_python(), args).unwrap()
}

fn wait_ready(kubectl: &Kubectl, cluster: &PodCluster, expected: &[(&str, &str, usize)]) {
    let started = Instant::now();
    while !cluster.not_ready(expected).is_empty() {
        if started.elapsed() > Duration::from_secs(180) {
            panic!(
                "not Ready within 180 s: {:?}\n{}{}",
                cluster.not_ready(expected),
                kubectl.ok(&["get", "pods", "-A"]),
                cluster.report()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_chart_comes_up_ready_as_pods() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = PodCluster::start(dir.path(), 3, "10.216.0.0/16", "prewarm-i0", node_labels).await;
    let kubectl = Kubectl::new(&cluster.api);
    tokio::task::block_in_place(|| {
        build_and_push(&cluster);
        let chart = repo("charts/prewarm");
        helm(
            &cluster,
            &[
                "install",
                "kruise",
                chart.to_str().unwrap(),
                "--set",
                "featureGates=ImagePullJobGate=true",
            ],
        );
        wait_ready(&kubectl, &cluster, &chart_pods(3));
        the_webhook_service_has_its_endpoint_slice(&kubectl);
        every_seed_example_as_written(&kubectl, &cluster);
        a_killed_webhook_restarts_and_admission_goes_on(&kubectl, &cluster);
        deleting_the_leader_hands_the_lease_over(&kubectl, &cluster);
        a_recreated_agent_resumes(&kubectl, &cluster);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_kustomize_base_comes_up_ready_as_pods() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = PodCluster::start(dir.path(), 2, "10.217.0.0/16", "prewarm-i1", node_labels).await;
    let kubectl = Kubectl::new(&cluster.api);
    tokio::task::block_in_place(|| {
        build_and_push(&cluster);
        kubectl.ok(&[
            "apply",
            "-k",
            repo("manifests/overlays/image-pull-job-gate").to_str().unwrap(),
        ]);
        wait_ready(
            &kubectl,
            &cluster,
            &[
                ("prewarm-system", "prewarm-webhook-", 2),
                ("prewarm-system", "prewarm-controller-", 2),
                ("prewarm-nodeagent", "prewarm-nodeagent-", 2),
            ],
        );
        seed_job_completes(&kubectl, &cluster, "job-with-always");
    });
}

fn get(kubectl: &Kubectl, args: &[&str]) -> Value {
    serde_json::from_str(&kubectl.ok(&[args, &["-o", "json"]].concat())).unwrap()
}

fn wait(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < within, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The seed's node-names job, applied as written (the mutating webhook
/// defaults it through the Service), pulls on node-1 and node-2.
fn seed_job_completes(kubectl: &Kubectl, cluster: &PodCluster, name: &str) {
    let seed = repo("api/tests/fixtures/seed/02-imagepulljob-names.yaml");
    let manifest = std::fs::read_to_string(seed).unwrap().replace("job-with-always", name);
    let file = cluster.dir.join(format!("{name}.yaml"));
    std::fs::write(&file, manifest).unwrap();
    kubectl.ok(&["apply", "-f", file.to_str().unwrap()]);
    wait("the seed job to complete", Duration::from_secs(120), || {
        let job = get(kubectl, &["get", "imagepulljob", name]);
        job["status"]["completionTime"].is_string()
    });
    let job = get(kubectl, &["get", "imagepulljob", name]);
    assert_eq!(job["status"]["succeeded"], 2, "{:#}", job["status"]);
}

/// Every example of the seed as written (image names too: containerd pulls
/// Docker Hub names from the cluster's registry), each job under a name of
/// its own since several share one: the two with both selectors are refused
/// by the webhook naming `spec.selector`, every job completes without failures.
fn every_seed_example_as_written(kubectl: &Kubectl, cluster: &PodCluster) {
    let seeds = repo("api/tests/fixtures/seed");
    let mut files: Vec<String> = std::fs::read_dir(&seeds)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|f| f.ends_with(".yaml"))
        .collect();
    files.sort();
    let mut jobs = Vec::new();
    for file in &files {
        let name = file.trim_end_matches(".yaml").to_lowercase();
        let manifest = std::fs::read_to_string(seeds.join(file))
            .unwrap()
            .replace("name: job-with-always", &format!("name: {name}"));
        let path = cluster.dir.join(file);
        std::fs::write(&path, &manifest).unwrap();
        let mut applied = kubectl.run(&["apply", "-f", path.to_str().unwrap()]);
        // The seed's NodeImage `node-xxx` names no Node: the controller deletes
        // it, and an apply that read it just before is answered NotFound.
        if !applied.ok && manifest.contains("kind: NodeImage") && applied.stderr.contains("(NotFound)") {
            applied = kubectl.run(&["apply", "-f", path.to_str().unwrap()]);
        }
        if file.starts_with("01-") || file.starts_with("09-") {
            assert!(!applied.ok, "{file} was accepted");
            assert!(applied.stderr.contains("spec.selector"), "{file}: {}", applied.stderr);
            continue;
        }
        assert!(applied.ok, "{file}: {}", applied.stderr);
        let kind = manifest
            .lines()
            .find_map(|l| l.strip_prefix("kind: "))
            .unwrap()
            .trim()
            .to_lowercase();
        if kind.ends_with("pulljob") {
            let name = applied
                .stdout
                .split_whitespace()
                .next()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_owned();
            jobs.push((kind, name));
        }
    }
    assert_eq!(jobs.len(), 10, "{jobs:?}");
    for (kind, name) in &jobs {
        wait(&format!("{kind} {name} to complete"), Duration::from_secs(120), || {
            get(kubectl, &["get", kind, name])["status"]["completionTime"].is_string()
        });
        let status = get(kubectl, &["get", kind, name])["status"].clone();
        assert_eq!(status["failed"].as_i64().unwrap_or(0), 0, "{kind} {name}: {status:#}");
    }
}

/// The Service's EndpointSlice, as the EndpointSlice controller keeps it:
/// both webhook Pods, ready, at the container port the Service's named
/// target port resolves to.
fn the_webhook_service_has_its_endpoint_slice(kubectl: &Kubectl) {
    let selector = "kubernetes.io/service-name=prewarm-webhook";
    let wanted = |slices: &Value| {
        let items = slices["items"].as_array().cloned().unwrap_or_default();
        items.len() == 1
            && items[0]["ports"][0]["port"] == 9443
            && items[0]["endpoints"].as_array().is_some_and(|e| {
                e.len() == 2
                    && e.iter()
                        .all(|e| e["conditions"]["ready"] == true && e["targetRef"]["kind"] == "Pod")
            })
    };
    wait("the webhook's EndpointSlice", Duration::from_secs(30), || {
        wanted(&get(
            kubectl,
            &["get", "endpointslices", "-n", "kruise-system", "-l", selector],
        ))
    });
}

fn pod_names(kubectl: &Kubectl, namespace: &str, prefix: &str) -> Vec<String> {
    let listed = get(kubectl, &["get", "pods", "-n", namespace]);
    listed["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["metadata"]["name"].as_str())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

/// SIGKILL to one webhook container's process (its pid from containerd): kubelet restarts it, the
/// Endpoints drop it while it is not Ready, and every admission meanwhile is
/// served by the other replica.
fn a_killed_webhook_restarts_and_admission_goes_on(kubectl: &Kubectl, cluster: &PodCluster) {
    let webhook = pod_names(kubectl, "kruise-system", "prewarm-webhook-")[0].clone();
    let runtime = tokio::runtime::Handle::current();
    let pid = runtime
        .block_on(cluster.container_pid("kruise-system", &webhook))
        .unwrap();
    let killed = Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap();
    assert!(killed.success());
    let restarted = || {
        let pod = get(kubectl, &["get", "pod", "-n", "kruise-system", &webhook]);
        pod["status"]["containerStatuses"][0]["restartCount"] == 1
    };
    wait("the killed webhook to restart", Duration::from_secs(30), restarted);
    // Admission right away, while the restarted replica may not be Ready yet:
    // the other one answers (the dry run goes through both webhooks).
    // Without completionPolicy, which the schema requires: only the mutating
    // webhook's default lets it in.
    let file = cluster.dir.join("dry-run.yaml");
    std::fs::write(
        &file,
        "apiVersion: apps.kruise.io/v1alpha1\nkind: ImagePullJob\nmetadata:\n  name: dry-run\nspec:\n  image: nginx:1.9.1\n",
    )
    .unwrap();
    for _ in 0..5 {
        let created = kubectl.ok(&["create", "--dry-run=server", "-o", "json", "-f", file.to_str().unwrap()]);
        let job: Value = serde_json::from_str(&created).unwrap();
        assert_eq!(
            job["spec"]["completionPolicy"]["type"], "Always",
            "defaulted by the webhook"
        );
    }
}

fn deleting_the_leader_hands_the_lease_over(kubectl: &Kubectl, cluster: &PodCluster) {
    let holder = || {
        let lease = get(kubectl, &["get", "lease", "-n", "kruise-system", "prewarm-controller"]);
        lease["spec"]["holderIdentity"].as_str().unwrap_or_default().to_owned()
    };
    wait("a leader", Duration::from_secs(30), || !holder().is_empty());
    let leader = holder();
    let pods = pod_names(kubectl, "kruise-system", "prewarm-controller-");
    assert!(
        pods.contains(&leader),
        "the lease names a controller Pod: {leader} of {pods:?}"
    );
    kubectl.ok(&["delete", "pod", "-n", "kruise-system", &leader]);
    wait("another controller Pod to lead", Duration::from_secs(60), || {
        let now = holder();
        !now.is_empty() && now != leader
    });
    seed_job_completes(kubectl, cluster, "after-handover");
}

fn a_recreated_agent_resumes(kubectl: &Kubectl, cluster: &PodCluster) {
    let agents = pod_names(kubectl, "prewarm-nodeagent", "prewarm-nodeagent-");
    let on_node_1 = agents
        .iter()
        .find(|name| {
            let pod = get(kubectl, &["get", "pod", "-n", "prewarm-nodeagent", name]);
            pod["spec"]["nodeName"] == "node-1"
        })
        .unwrap()
        .clone();
    kubectl.ok(&["delete", "pod", "-n", "prewarm-nodeagent", &on_node_1]);
    wait_ready(kubectl, cluster, &[("prewarm-nodeagent", "prewarm-nodeagent-", 3)]);
    assert!(!pod_names(kubectl, "prewarm-nodeagent", "prewarm-nodeagent-").contains(&on_node_1));
    seed_job_completes(kubectl, cluster, "after-agent");
}

/// A TLS server at `address` with a certificate from `authority`, answering
/// every request with `body` (JSON); counts the requests it served.
async fn https_server(
    address: std::net::SocketAddr,
    authority: &prewarm_certs::Authority,
    body: String,
) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
    use rustls::pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let serving = authority
        .issue_serving(&[], &[address.ip()], Duration::from_secs(3600))
        .unwrap();
    let chain = rustls::pki_types::CertificateDer::pem_slice_iter(serving.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(serving.key_pem.as_bytes()).unwrap();
    let config =
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind(address).await.unwrap();
    let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = served.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, body, counter) = (acceptor.clone(), body.clone(), counter.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut request = [0u8; 4096];
                let _ = tls.read(&mut request).await;
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    served
}

/// Debian's curl with the libraries it links and their loader, copied into
/// `dir` (a node's plugin directory), so a plugin can run it in the
/// agent's `FROM scratch` container; returns the command line prefix that
/// runs it from where the directory is mounted, `mounted`.
fn copy_curl(dir: &Path, mounted: &str) -> String {
    let libs = dir.join("lib");
    std::fs::create_dir_all(&libs).unwrap();
    let ldd = Command::new("ldd").arg("/usr/bin/curl").output().unwrap();
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let path = line
            .split_whitespace()
            .find(|word| word.starts_with('/'))
            .unwrap_or_default();
        if path.is_empty() {
            continue;
        }
        let name = Path::new(path).file_name().unwrap();
        std::fs::copy(path, libs.join(name)).unwrap();
    }
    std::fs::copy("/usr/bin/curl", dir.join("curl")).unwrap();
    format!("{mounted}/lib/ld-linux-x86-64.so.2 --library-path {mounted}/lib {mounted}/curl")
}

/// The seed's credential-provider install, with a plugin that gets the
/// private registry's credentials from an HTTPS endpoint: the plugin runs in
/// the agent container, verifies the endpoint against the CA bundle at the
/// standard path (the node's, mounted by `caBundleHostPath`), and the agent
/// pulls the private image with what it returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_credential_plugin_calls_https_with_the_ca_bundle() {
    use prewarm_testapi::infra::{free_port, push, registry};
    use prewarm_testapi::registries::{PRIVATE_IMAGE, PRIVATE_USER};
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().unwrap();
    let cluster = PodCluster::start(dir.path(), 1, "10.219.0.0/16", "prewarm-i2", node_labels).await;
    let kubectl = Kubectl::new(&cluster.api);
    let registry_dir = dir.path().join("private");
    std::fs::create_dir_all(&registry_dir).unwrap();
    let htpasswd = registry_dir.join("htpasswd");
    let hashed = Command::new("htpasswd")
        .args(["-Bbn", PRIVATE_USER.0, PRIVATE_USER.1])
        .output()
        .unwrap();
    std::fs::write(&htpasswd, hashed.stdout).unwrap();
    let (_private, private_port, _) = registry(&registry_dir, "private", Some(&htpasswd));
    let (repository, tag) = PRIVATE_IMAGE.split_once(':').unwrap();
    let user = format!("{}:{}", PRIVATE_USER.0, PRIVATE_USER.1);
    push(private_port, repository, tag, Some(&user), &registry_dir);
    let registry_host = format!("127.0.0.1:{private_port}");

    let authority = prewarm_certs::Authority::generate("credentials-ca", Duration::from_secs(3600)).unwrap();
    let endpoint = std::net::SocketAddr::new(cluster.network.gateway().into(), free_port());
    let response = serde_json::json!({"apiVersion": "credentialprovider.kubelet.k8s.io/v1", "kind": "CredentialProviderResponse",
        "cacheKeyType": "Registry", "cacheDuration": "1m",
        "auth": {registry_host.clone(): {"username": PRIVATE_USER.0, "password": PRIVATE_USER.1}}});
    let served = https_server(endpoint, &authority, response.to_string()).await;

    // The node's files: the plugins, its CA bundle (holding the endpoint's CA), AWS credentials.
    let node_root = &cluster.nodes[0].root;
    let plugins = node_root.join("etc/eks/image-credential-provider");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy("/bin/busybox", plugins.join("busybox")).unwrap();
    let mounted = "/etc/prewarm/credential-provider-plugins";
    let curl = copy_curl(&plugins, mounted);
    let plugin = plugins.join("ecr-credential-provider");
    std::fs::write(
        &plugin,
        format!("#!{mounted}/busybox sh\n{mounted}/busybox cat >/dev/null\nexec {curl} --silent --show-error --fail https://{endpoint}/credentials\n"),
    )
    .unwrap();
    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bundle = node_root.join("etc/ssl/certs/ca-certificates.crt");
    std::fs::create_dir_all(bundle.parent().unwrap()).unwrap();
    std::fs::write(&bundle, authority.cert_pem()).unwrap();
    std::fs::create_dir_all(node_root.join("root/.aws")).unwrap();
    // The plugin's curl does verify: against Debian's bundle alone, the endpoint is refused.
    let unverified = Command::new("/usr/bin/curl")
        .args(["--silent", "--fail", "--cacert", "/etc/ssl/certs/ca-certificates.crt"])
        .arg(format!("https://{endpoint}/credentials"))
        .status()
        .unwrap();
    assert!(!unverified.success(), "the endpoint's CA is not Debian's");

    tokio::task::block_in_place(|| {
        build_and_push(&cluster);
        kubectl.ok(&["create", "namespace", "kruise-system"]);
        let seed =
            std::fs::read_to_string(repo("api/tests/fixtures/seed/06-configmap-credential-provider.yaml")).unwrap();
        let config = seed.replace(
            "          - \"*.dkr.ecr.*.amazonaws.com\"\n",
            &format!("          - \"{registry_host}\"\n"),
        );
        let file = dir.path().join("credential-provider-config.yaml");
        std::fs::write(&file, config).unwrap();
        kubectl.ok(&["apply", "-f", file.to_str().unwrap()]);
        let chart = repo("charts/prewarm");
        helm(
            &cluster,
            &[
                "install",
                "kruise",
                chart.to_str().unwrap(),
                "--set",
                "featureGates=ImagePullJobGate=true",
                "--set",
                "installation.createNamespace=false",
                "--set",
                "daemon.credentialProvider.enable=true",
                "--set",
                "daemon.credentialProvider.hostPath=/etc/eks/image-credential-provider",
                "--set",
                "daemon.credentialProvider.configmap=credential-provider-config",
                "--set",
                "daemon.credentialProvider.awsCredentialsDir=/root/.aws",
                "--set",
                "daemon.credentialProvider.caBundleHostPath=/etc/ssl/certs/ca-certificates.crt",
            ],
        );
        wait_ready(&kubectl, &cluster, &chart_pods(1));
        let job = dir.path().join("private-job.yaml");
        std::fs::write(
            &job,
            format!(
                "apiVersion: apps.kruise.io/v1alpha1\nkind: ImagePullJob\nmetadata:\n  name: private\nspec:\n  image: {registry_host}/{PRIVATE_IMAGE}\n  completionPolicy:\n    type: Always\n"
            ),
        )
        .unwrap();
        kubectl.ok(&["apply", "-f", job.to_str().unwrap()]);
        wait("the private image job to end", Duration::from_secs(120), || {
            get(&kubectl, &["get", "imagepulljob", "private"])["status"]["completionTime"].is_string()
        });
        let status = get(&kubectl, &["get", "imagepulljob", "private"])["status"].clone();
        assert_eq!(status["succeeded"], 1, "{status:#}");
    });
    assert!(
        served.load(std::sync::atomic::Ordering::SeqCst) >= 1,
        "the plugin called the endpoint"
    );
}
