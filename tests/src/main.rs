use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use prewarm_testapi::{Options, TestApi};

/// A test API server that behaves like kube-apiserver for prewarm's tests.
#[derive(Debug, Parser)]
#[command(name = "prewarm-testapi", version)]
struct Args {
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Where to write a kubeconfig for kubectl and the prewarm binaries.
    #[arg(long)]
    kubeconfig_out: PathBuf,
    /// Serve HTTPS with a generated certificate.
    #[arg(long)]
    tls: bool,
    /// Objects to store at start, from the YAML files of this directory (webhook
    /// configurations, CRDs, …), without admission.
    #[arg(long)]
    admission_config: Option<PathBuf>,
    /// A CA certificate (PEM) to put in every loaded webhook configuration's
    /// empty caBundle, such as the ca.crt `prewarm-webhook serve` generates.
    #[arg(long, requires = "admission_config")]
    webhook_ca: Option<PathBuf>,
    /// Write a kubeconfig that authenticates as a ServiceAccount, authorised by
    /// RBAC: NAMESPACE/NAME=FILE (repeatable).
    #[arg(long = "kubeconfig-for", value_parser = parse_account)]
    kubeconfigs_for: Vec<(String, String, PathBuf)>,
    /// Resolve webhook service references: NAMESPACE/NAME=ADDRESS (repeatable).
    #[arg(long = "service-endpoint", value_parser = parse_endpoint)]
    service_endpoints: Vec<(String, SocketAddr)>,
}

fn parse_account(value: &str) -> Result<(String, String, PathBuf), String> {
    let (account, file) = value.split_once('=').ok_or("expected NAMESPACE/NAME=FILE")?;
    let (namespace, name) = account
        .split_once('/')
        .ok_or_else(|| format!("expected NAMESPACE/NAME before '=', got {account:?}"))?;
    Ok((namespace.to_owned(), name.to_owned(), PathBuf::from(file)))
}

fn parse_endpoint(value: &str) -> Result<(String, SocketAddr), String> {
    let (service, address) = value.split_once('=').ok_or("expected NAMESPACE/NAME=ADDRESS")?;
    if !service.contains('/') {
        return Err(format!("expected NAMESPACE/NAME before '=', got {service:?}"));
    }
    let address = address
        .parse()
        .map_err(|e| format!("invalid address {address:?}: {e}"))?;
    Ok((service.to_owned(), address))
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let options = Options {
        port: args.port,
        tls: args.tls,
        service_endpoints: args.service_endpoints.into_iter().collect::<HashMap<_, _>>(),
        history: 0,
        pod_network_address: None,
    };
    let api = match TestApi::start(options).await {
        Ok(api) => api,
        Err(e) => {
            eprintln!("prewarm-testapi: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(dir) = &args.admission_config {
        match api.load_manifests(dir) {
            Ok(count) => tracing::info!(count, dir = %dir.display(), "loaded manifests"),
            Err(e) => {
                eprintln!("prewarm-testapi: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if let Some(ca) = &args.webhook_ca {
        match std::fs::read_to_string(ca) {
            Ok(pem) => {
                let filled = api.fill_webhook_ca(&pem);
                tracing::info!(filled, ca = %ca.display(), "filled webhook CA bundles");
            }
            Err(e) => {
                eprintln!("prewarm-testapi: --webhook-ca {}: {e}", ca.display());
                return ExitCode::FAILURE;
            }
        }
    }
    if let Err(e) = api.write_kubeconfig(&args.kubeconfig_out) {
        eprintln!("prewarm-testapi: writing {}: {e}", args.kubeconfig_out.display());
        return ExitCode::FAILURE;
    }
    for (namespace, name, file) in &args.kubeconfigs_for {
        if let Err(e) = std::fs::write(file, api.kubeconfig_for(namespace, name)) {
            eprintln!("prewarm-testapi: writing {}: {e}", file.display());
            return ExitCode::FAILURE;
        }
        tracing::info!(account = %format!("{namespace}/{name}"), kubeconfig = %file.display(), "kubeconfig for a ServiceAccount");
    }
    tracing::info!(url = %api.url(), kubeconfig = %args.kubeconfig_out.display(), "serving");
    let _ = tokio::signal::ctrl_c().await;
    ExitCode::SUCCESS
}
