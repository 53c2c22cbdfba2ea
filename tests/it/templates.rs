//! The repository's real `templates/`, rendered for made-up digests, checked by other people's
//! tools: Debian's `docker-compose config` on the compose file, `tar` on the chart archive
//! (Helm itself is not packaged by Debian; Chart.yaml and values.yaml are parsed as YAML).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use pipeline::templates::{render, Rendered, TemplateImage};
use schema::model::{Channel, Digest};

use crate::support::{run_ok, tool, workspace, EPOCH};

const COMPONENTS: [&str; 8] = ["authority", "signer", "attestor", "scanner-web", "scanner-worker", "concelier", "excititor", "web-ui"];

fn images() -> Vec<TemplateImage> {
    COMPONENTS
        .iter()
        .map(|c| TemplateImage {
            component: (*c).to_owned(),
            repository: format!("registry.stella-ops.org/stellaops/{c}"),
            digest: Digest::of(format!("made-up index of {c}").as_bytes()),
        })
        .collect()
}

fn render_real(out: &Path) -> Rendered {
    render(&workspace(), "2.4.1", Channel::Stable, EPOCH, &images(), out)
        .unwrap_or_else(|e| panic!("the repository's templates must render:\n{e}"))
}

#[test]
fn templates_compose_passes_docker_compose_config_with_release_images_only() {
    let Some(compose) = tool("docker-compose") else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let r = render_real(out.path());
    let text = run_ok(
        Command::new(compose).arg("--env-file").arg(&r.env_template).arg("--file").arg(&r.compose).arg("config").current_dir(out.path()),
    );
    let doc: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    let services = doc["services"].as_mapping().expect("services");
    let wanted: BTreeSet<String> = images().iter().map(TemplateImage::reference).collect();
    let mut seen = BTreeSet::new();
    for (name, service) in services {
        let image = service["image"].as_str().unwrap_or_else(|| panic!("{name:?} has no image"));
        assert!(image.contains("@sha256:"), "{name:?}: `{image}` is not pinned by digest");
        assert!(wanted.contains(image), "{name:?}: `{image}` is not one of the release's images");
        seen.insert(image.to_owned());
    }
    assert_eq!(seen, wanted, "every component of the bundle runs in the compose file");
    // The settings come from the rendered .env.template; the channel is filled in.
    assert!(text.contains("STELLAOPS_CHANNEL: stable"), "{text}");
    assert!(text.contains("SCANNER__MONGO__URI: mongodb://mongo/scanner"), "{text}");
}

#[test]
fn templates_chart_tgz_lists_like_helm_package_and_parses() {
    let Some(tar) = tool("tar") else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let r = render_real(out.path());
    assert_eq!(r.chart, out.path().join("charts/platform-2.4.1.tgz"));
    assert_eq!(r.chart_digest, Digest::of(&std::fs::read(&r.chart).unwrap()));
    let listing = run_ok(Command::new(&tar).arg("-tzf").arg(&r.chart));
    let names: Vec<&str> = listing.lines().collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted, "entries in sorted order");
    for want in ["platform/Chart.yaml", "platform/values.yaml"]
        .into_iter()
        .map(str::to_owned)
        .chain(COMPONENTS.iter().map(|c| format!("platform/templates/{c}.yaml")))
    {
        assert!(names.contains(&want.as_str()), "`{want}` missing:\n{listing}");
    }
    // Owners and dates as the determinism contract says (GNU tar's verbose listing).
    let verbose = run_ok(Command::new(&tar).args(["-tvzf"]).arg(&r.chart).arg("--numeric-owner").env("TZ", "UTC"));
    for line in verbose.lines() {
        assert!(line.contains(" 0/0 "), "not owned by 0/0: {line}");
        assert!(line.contains("2027-06-20 12:00"), "mtime is not the epoch: {line}");
    }

    let x = tempfile::tempdir().unwrap();
    run_ok(Command::new(&tar).arg("-xzf").arg(&r.chart).arg("-C").arg(x.path()));
    let chart: serde_norway::Value =
        serde_norway::from_str(&std::fs::read_to_string(x.path().join("platform/Chart.yaml")).unwrap()).unwrap();
    assert_eq!(chart["apiVersion"].as_str(), Some("v2"));
    assert_eq!(chart["name"].as_str(), Some("platform"));
    assert_eq!(chart["version"].as_str(), Some("2.4.1"));
    assert_eq!(chart["appVersion"].as_str(), Some("2.4.1"));
    let values: serde_norway::Value =
        serde_norway::from_str(&std::fs::read_to_string(x.path().join("platform/values.yaml")).unwrap()).unwrap();
    assert_eq!(values["global"]["channel"].as_str(), Some("stable"));
    assert_eq!(values["global"]["version"].as_str(), Some("2.4.1"));
    for (c, image) in COMPONENTS.iter().zip(images()) {
        let t = std::fs::read_to_string(x.path().join(format!("platform/templates/{c}.yaml"))).unwrap();
        assert!(t.contains(&format!("image: \"{}\"", image.reference())), "{c}: image not pinned:\n{t}");
    }
}
