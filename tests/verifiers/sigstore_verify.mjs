// Verifies a sigstore bundle (v0.3, public-key hint, message signature) over an artifact with
// npm @sigstore/verify, offline: the trust material holds only the given public key (no CA,
// no transparency log, no timestamp authority, thresholds 0).
// Usage: node sigstore_verify.mjs BUNDLE.json ARTIFACT PUBLIC_KEY.pem
import { createPublicKey } from "node:crypto";
import { readFileSync } from "node:fs";
import { bundleFromJSON } from "@sigstore/bundle";
import { Verifier, toSignedEntity } from "@sigstore/verify";

const [bundlePath, artifactPath, keyPath] = process.argv.slice(2);
const bundle = bundleFromJSON(JSON.parse(readFileSync(bundlePath, "utf8")));
const key = createPublicKey(readFileSync(keyPath));
const trust = {
  certificateAuthorities: [],
  timestampAuthorities: [],
  tlogs: [],
  ctlogs: [],
  publicKey: (hint) => {
    if (hint !== bundle.verificationMaterial.content.publicKey.hint) throw new Error(`unknown key hint ${hint}`);
    return { publicKey: key, validFor: () => true };
  },
};
const verifier = new Verifier(trust, { tlogThreshold: 0, ctlogThreshold: 0, timestampThreshold: 0 });
verifier.verify(toSignedEntity(bundle, readFileSync(artifactPath)));
process.stdout.write("bundle verified\n");
