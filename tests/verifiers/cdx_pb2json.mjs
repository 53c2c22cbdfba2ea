// Decodes a CycloneDX 1.6 protobuf SBOM with @appthreat/cdx-proto (CycloneDX's bom-1.6.proto,
// compiled by its authors, with the JSON names of the CycloneDX JSON format) and prints it as
// CycloneDX JSON, so that it can be compared with the JSON SBOM field by field. Two things
// differ by design between the encodings and are normalized here: `$schema` exists in JSON
// only, and the protobuf nests dependencies where JSON lists `dependsOn` references.
// Usage: node cdx_pb2json.mjs FILE.cdx.pb
import { readFileSync } from "node:fs";
import { decodeBomBinary, encodeBomJson } from "@appthreat/cdx-proto";

const bom = encodeBomJson(decodeBomBinary("1.6", readFileSync(process.argv[2])));
bom.$schema = "http://cyclonedx.org/schema/bom-1.6.schema.json";
bom.dependencies = (bom.dependencies ?? []).map((d) => ({
  ref: d.ref,
  dependsOn: d.dependsOn ?? (d.dependencies ?? []).map((x) => x.ref),
}));
process.stdout.write(JSON.stringify(bom));
