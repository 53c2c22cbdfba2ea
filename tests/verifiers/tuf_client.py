"""An independent TUF client for the tests: python-tuf's ngclient (tests/verifiers/pins).

usage: tuf_client.py BASE_URL CLIENT_DIR TRUSTED_ROOT TARGET...

BASE_URL serves the trust repository (`metadata/` and `targets/` under it). CLIENT_DIR keeps
the client's trusted metadata between runs (as a customer's machine does): the first run
starts from TRUSTED_ROOT. Prints, as JSON, each target's custom metadata, sha256 and the path
it was downloaded to; on any refusal prints the error's class and message on stderr and exits 1.
"""

import hashlib
import json
import os
import shutil
import sys

from tuf.ngclient import Updater


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
