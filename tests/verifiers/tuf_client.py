"""An independent TUF client for the tests: python-tuf's ngclient (tests/verifiers/pins).

usage: tuf_client.py BASE_URL CLIENT_DIR TRUSTED_ROOT TARGET...

BASE_URL serves the trust repository (`metadata/` and `targets/` under it), or is
`oci://HOST[:PORT]/NAMESPACE`: the repository as `trust publish` puts it on a registry, one
OCI artifact per file in `NAMESPACE/trust` (read here with plain HTTP calls of the
distribution API, on loopback, independently of the Rust code: metadata `<name>.json` is the
tag `<name>`, a target `<sha256>.<name>` the tag `target.<sha256>`). CLIENT_DIR keeps
the client's trusted metadata between runs (as a customer's machine does): the first run
starts from TRUSTED_ROOT. Prints, as JSON, each target's custom metadata, sha256 and the path
it was downloaded to; on any refusal prints the error's class and message on stderr and exits 1.
"""

import hashlib
import json
import os
import shutil
import sys
import urllib.error
import urllib.request

from tuf.api import exceptions
from tuf.ngclient import FetcherInterface, Updater

ARTIFACT_TYPES = ("application/vnd.stellaops.tuf.metadata.v1+json", "application/vnd.stellaops.tuf.target.v1")


class RegistryFetcher(FetcherInterface):
    """Maps ngclient's file URLs (`oci://HOST/NS/{metadata,targets}/FILE`) to registry artifacts."""

    def _get(self, url, accept=None):
        req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.read()
        except urllib.error.HTTPError as e:
            raise exceptions.DownloadHTTPError(f"{url}: {e.code}", e.code) from e

    def _fetch(self, url):
        rest = url[len("oci://"):]
        host, path = rest.split("/", 1)
        ns, kind, name = path.rsplit("/", 2)
        if kind == "metadata":
            tag = name[: -len(".json")]
        else:
            tag = "target." + name.split(".", 1)[0]
        base = f"http://{host}/v2/{ns}/trust"
        manifest = json.loads(self._get(f"{base}/manifests/{tag}", "application/vnd.oci.image.manifest.v1+json"))
        if manifest.get("artifactType") not in ARTIFACT_TYPES or len(manifest.get("layers", [])) != 1:
            raise exceptions.DownloadError(f"{base}:{tag} is not a file of the trust repository")
        digest = manifest["layers"][0]["digest"]
        blob = self._get(f"{base}/blobs/{digest}")
        if "sha256:" + hashlib.sha256(blob).hexdigest() != digest:
            raise exceptions.DownloadError(f"{base}@{digest}: the blob does not hash to its digest")
        return iter([blob])


def main() -> int:
    base, client, trusted_root, *targets = sys.argv[1:]
    meta_dir = os.path.join(client, "metadata")
    target_dir = os.path.join(client, "targets")
    os.makedirs(meta_dir, exist_ok=True)
    os.makedirs(target_dir, exist_ok=True)
    # The first run starts from the trusted root; later runs from the client's own metadata.
    first = not os.path.exists(os.path.join(meta_dir, "root.json"))
    if first:
        shutil.copyfile(trusted_root, os.path.join(meta_dir, "root.json"))
    try:
        updater = Updater(
            metadata_dir=meta_dir,
            metadata_base_url=base.rstrip("/") + "/metadata/",
            target_base_url=base.rstrip("/") + "/targets/",
            target_dir=target_dir,
            bootstrap=None,  # the root.json of metadata_dir is the trusted root
            fetcher=RegistryFetcher() if base.startswith("oci://") else None,
        )
        updater.refresh()
        out = {}
        for name in targets:
            info = updater.get_targetinfo(name)
            if info is None:
                raise LookupError(f"no target {name}")
            path = updater.download_target(info, os.path.join(target_dir, name.replace("/", "_")))
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            out[name] = {"custom": info.custom, "sha256": digest, "path": path}
    except Exception as e:  # every refusal is reported the same way: class and message
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(out, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
