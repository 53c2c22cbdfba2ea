// Verifies a keyless sigstore bundle (v0.3, leaf certificate, message signature) over an
// artifact with npm @sigstore/verify, offline, under an identity policy: the trust material is
// the given sigstore trusted root (its Fulcio CA and transparency log); the bundle must carry
// one log entry (body, inclusion proof, signed checkpoint, signed entry time) and the leaf must
// chain to the CA at that time, name IDENTITY exactly (as its subject alternative name) and
// ISSUER as its OIDC issuer extension. When the trusted root names CT logs (`ctlogs`), one
// embedded SCT from them must verify; with none, no certificate transparency is required.
// A bundle holding a DSSE envelope (an attestation) carries what was signed: ARTIFACT is `-`.
// Usage: node sigstore_verify_keyless.mjs BUNDLE.json ARTIFACT|- TRUSTED_ROOT.json IDENTITY ISSUER
// ES modules resolve packages from the script's own directory: run it from beside
// node_modules (tests/run.sh's verifiers directory, or a directory linking to it).
import { readFileSync } from "node:fs";
import { bundleFromJSON } from "@sigstore/bundle";
import { TrustedRoot } from "@sigstore/protobuf-specs";
import { Verifier, toSignedEntity, toTrustMaterial } from "@sigstore/verify";

const [bundlePath, artifactPath, rootPath, identity, issuer] = process.argv.slice(2);
const bundle = bundleFromJSON(JSON.parse(readFileSync(bundlePath, "utf8")));
const root = TrustedRoot.fromJSON(JSON.parse(readFileSync(rootPath, "utf8")));
const trust = toTrustMaterial(root);
const ctlogThreshold = root.ctlogs.length > 0 ? 1 : 0;
const verifier = new Verifier(trust, { tlogThreshold: 1, ctlogThreshold, timestampThreshold: 1 });
// The policy's subject alternative name is a regular expression here: anchored and escaped,
// it is an exact match.
const exact = "^" + identity.replace(/[.*+?^${}()|[\]\\]/g, "\\$&") + "$";
const artifact = artifactPath === "-" ? undefined : readFileSync(artifactPath);
verifier.verify(toSignedEntity(bundle, artifact), { subjectAlternativeName: exact, extensions: { issuer } });
process.stdout.write("bundle verified\n");
