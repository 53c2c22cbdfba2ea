// Verifies a sigstore bundle (v0.3, public-key hint, message signature) over an artifact with
// npm @sigstore/verify, offline: the trust material holds only the given public key (no CA,
// no timestamp authority), and, when a log key is given, one transparency log named
// `rekor.test` with that key: then the bundle must carry one log entry whose body, inclusion
// proof, signed checkpoint and (Rekor v1) signed entry timestamp verify (thresholds 1).
// Usage: node sigstore_verify.mjs BUNDLE.json ARTIFACT PUBLIC_KEY.pem [REKOR_KEY.pem]
import { createHash, createPublicKey } from "node:crypto";
import { readFileSync } from "node:fs";
import { bundleFromJSON } from "@sigstore/bundle";
import { Verifier, toSignedEntity } from "@sigstore/verify";

const [bundlePath, artifactPath, keyPath, rekorPath] = process.argv.slice(2);
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
let threshold = 0;
if (rekorPath) {
  const rekor = createPublicKey(readFileSync(rekorPath));
  const logID = createHash("sha256").update(rekor.export({ type: "spki", format: "der" })).digest();
  trust.tlogs.push({ logID, baseURL: "https://rekor.test", publicKey: rekor, validFor: { start: new Date(0), end: new Date(8.64e15) } });
  threshold = 1;
}
// A Rekor v2 entry carries no signed entry time (no inclusion promise): no timestamp to count.
const promised = bundle.verificationMaterial.tlogEntries.some((e) => e.inclusionPromise);
const verifier = new Verifier(trust, { tlogThreshold: threshold, ctlogThreshold: 0, timestampThreshold: promised ? threshold : 0 });
verifier.verify(toSignedEntity(bundle, readFileSync(artifactPath)));
process.stdout.write("bundle verified\n");
