#!/usr/bin/env bash
# The test command of the README. On a fresh Debian 12 machine it:
#   1. installs what the tests need (Debian packages: Docker's engine, a registry, skopeo, umoci);
#   2. starts dockerd (its embedded BuildKit) and a registry on loopback, each with its own
#      socket, data directory and pid, and stops them on exit;
#   3. runs the checks of CI: rustfmt, clippy -D warnings, the pinned deflate backend, and
#      every test with --locked.
# Under CI=true a test whose service or tool is missing fails; it never skips.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
say() { printf '== %s\n' "$*" >&2; }

# 1. Packages. (root here; sudo for a developer who is not)
sudo=""
[ "$(id -u)" = 0 ] || sudo=sudo
# apache2-utils: htpasswd -B (bcrypt) for the publish tests' password-protected registry;
# strace: the kit test that checks an import into a directory opens no socket;
# libprotobuf-dev: google/protobuf/timestamp.proto, which CycloneDX's .proto imports (protoc --decode);
# qemu-user-static, binfmt-support: arm64 RUN steps and containers under emulation (tests/it/arm64.rs);
# python3-packaging: PyPA's PEP 440 ordering, the reference the audit's version order is tested against;
# debootstrap: a third-party Debian base, packed by umoci (tests/it/thirdparty.rs);
# softhsm2, opensc, python3-pykcs11: a PKCS#11 token without hardware to sign releases through,
# OpenSC's pkcs11-tool and PyKCS11 to ask it, independently of our code, whether the private
# key can be read (tests/it/hsm.rs).
# openssl and zstd: tests/it/tool.rs does what the README's air-gapped steps do on the host
# (`tar --zstd -xf KIT tools/`, the tool's signature checked with `openssl`); its container is
# made of Debian's libc6 and libgcc-s1, fetched with apt-get download (no extra package).
packages=(openssl zstd docker.io docker-compose docker-registry skopeo umoci strace git curl ca-certificates python3 python3-venv python3-packaging protobuf-compiler libprotobuf-dev apache2-utils qemu-user-static binfmt-support debootstrap softhsm2 opensc python3-pykcs11)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# Node.js: Debian's, unless the machine already has one (e.g. from NodeSource, with its npm).
command -v npm >/dev/null || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# arm64 binaries run through QEMU (flags F: the interpreter is loaded now, so it works inside
# BuildKit's containers too).
[ -e /proc/sys/fs/binfmt_misc/register ] || $sudo mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
$sudo update-binfmts --enable qemu-aarch64 2>/dev/null || true
grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 || { say "qemu-aarch64 could not be registered with binfmt_misc"; exit 1; }
# The toolchain is pinned by rust-toolchain.toml; where the machine's stable toolchain is that
# version under another name, link it rather than download it.
want=$(sed -n 's/^channel = "\(.*\)"/\1/p' rust-toolchain.toml)
if command -v rustup >/dev/null && ! rustup toolchain list | grep -q "^$want-"; then
  if rustc +stable --version 2>/dev/null | grep -q " $want "; then
    rustup toolchain link "$want" "$(rustc +stable --print sysroot)"
  fi
fi

# Independent checkers (shared/VERIFIERS.md), pinned, in target/verifiers (reused when present).
verifiers=$root/target/verifiers
if [ ! -x "$verifiers/venv/bin/syft" ] || [ ! -f "$verifiers/pins" ] || ! cmp -s "$verifiers/pins" tests/verifiers/pins; then
  say "installing the verifiers (Python venv, npm package)"
  # (the cosign-rs build beside them is cargo's to keep up to date: spared, it takes minutes)
  mkdir -p "$verifiers" && find "$verifiers" -mindepth 1 -maxdepth 1 ! -name cosign-rs -exec rm -rf {} +
  python3 -m venv "$verifiers/venv"
  grep '^pip ' tests/verifiers/pins | cut -d' ' -f2- | xargs "$verifiers/venv/bin/pip" install -q
  grep '^npm ' tests/verifiers/pins | cut -d' ' -f2- | (cd "$verifiers" && xargs npm install --silent --no-audit --no-fund >/dev/null)
  cp tests/verifiers/pins "$verifiers/pins"
fi
export STELLAOPS_VERIFY_PYTHON=$verifiers/venv/bin/python
export STELLAOPS_VERIFY_SYFT=$verifiers/venv/bin/syft
# GitHub Actions checkers (zizmor; actionlint as built by kjanat's fork, a binary wheel): tests/it/ops.rs.
export STELLAOPS_VERIFY_ZIZMOR=$verifiers/venv/bin/zizmor
export STELLAOPS_VERIFY_ACTIONLINT=$verifiers/venv/bin/actionlint
# ES modules resolve packages from the script's own directory: run it from beside node_modules.
cp tests/verifiers/cdx_pb2json.mjs tests/verifiers/sigstore_verify.mjs "$verifiers/"
export STELLAOPS_VERIFY_PB2JSON=$verifiers/cdx_pb2json.mjs
export STELLAOPS_VERIFY_SIGSTORE=$verifiers/sigstore_verify.mjs
export STELLAOPS_VERIFY_SCRIPTS=$root/tests/verifiers
export STELLAOPS_VERIFY_CDX_PROTO=$verifiers/node_modules/@appthreat/cdx-proto/specification
export SYFT_CHECK_FOR_APP_UPDATE=false
# The sigstore crate's cosign verifier (tests/verifiers/cosign-rs): its own workspace and
# Cargo.lock, built once into target/verifiers/cosign-rs (cargo rebuilds only what changed).
say "building the sigstore-crate cosign verifier"
cargo build --release --locked --quiet --manifest-path tests/verifiers/cosign-rs/Cargo.toml \
  --target-dir "$verifiers/cosign-rs"
export STELLAOPS_VERIFY_COSIGN_RS=$verifiers/cosign-rs/release/cosign-rs-verify
# The same crate writing a cosign key pair (cosign.key, cosign.pub) that our release signs with.
export STELLAOPS_VERIFY_COSIGN_KEYGEN=$verifiers/cosign-rs/release/cosign-rs-keygen

# 2. Services, private to this run.
run_dir=$(mktemp -d /tmp/stellaops-test-XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$run_dir" 2>/dev/null || true
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { # what, command...
  local what=$1; shift
  for _ in $(seq 1 150); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  say "$what did not start; its log:"; cat "$run_dir"/*.log >&2 || true; return 1
}

say "starting dockerd (vfs, no bridge) in $run_dir"
dockerd --iptables=false --ip-masq=false --bridge=none --storage-driver=vfs \
  --data-root "$run_dir/docker-data" --exec-root "$run_dir/docker-exec" \
  --pidfile "$run_dir/docker.pid" --host "unix://$run_dir/docker.sock" >"$run_dir/dockerd.log" 2>&1 &
pids+=($!)
export DOCKER_HOST="unix://$run_dir/docker.sock"
wait_for dockerd docker version

port=$(free_port)
say "starting a registry on 127.0.0.1:$port"
mkdir -p "$run_dir/registry"
cat >"$run_dir/registry.yml" <<YAML
version: 0.1
storage:
  filesystem:
    rootdirectory: $run_dir/registry
http:
  addr: 127.0.0.1:$port
YAML
docker-registry serve "$run_dir/registry.yml" >"$run_dir/registry.log" 2>&1 &
pids+=($!)
export STELLAOPS_TEST_REGISTRY="127.0.0.1:$port"
wait_for registry curl -fsS "http://$STELLAOPS_TEST_REGISTRY/v2/"

# 3. Checks and tests.
say "rustfmt"
cargo fmt --all -- --check
say "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
say "deflate backend pinned (layer digests depend on it)"
tree=$(cargo tree --locked -e features -i flate2 2>/dev/null)
grep -q 'flate2 feature "zlib-rs"' <<<"$tree" || { say "flate2 is not on its zlib-rs backend"; exit 1; }
if grep -q 'miniz_oxide' <<<"$(cargo tree --locked -e normal -p pipeline 2>/dev/null)"; then
  say "miniz_oxide is linked: another deflate backend would change layer bytes"; exit 1
fi
# Layer gzip formats 2 and 3 are libdeflate 1.26.1's output (oci::layer::COMPRESSOR_V2, _V3).
grep -q 'libdeflate-sys v1.26.1' <<<"$(cargo tree --locked -e normal -p oci 2>/dev/null)" || {
  say "libdeflate-sys is not 1.26.1: layer gzip formats 2 and 3 would change their bytes"; exit 1; }
say "crate boundaries (docs/architecture.md): verifier has no build side; schema depends on nothing of ours"
boundary() { # crate, forbidden dependencies...
  local crate=$1; shift
  local deps; deps=$(cargo tree --locked -p "$crate" -e normal,build --prefix none --format '{p}' | cut -d' ' -f1 | sort -u)
  for banned in "$@"; do
    if grep -qx "$banned" <<<"$deps"; then say "$crate depends on $banned: see docs/architecture.md"; exit 1; fi
  done
}
boundary verifier bollard git2 pipeline tonic
boundary stellaops bollard git2 pipeline tonic
boundary oci bollard git2 pipeline verifier
boundary schema oci verifier pipeline bollard git2 ureq oci-client
python3 tests/module_cycles.py || { say "modules import each other: see docs/architecture.md"; exit 1; }
say "tests"
cargo test --workspace --locked "$@"
