"""Checks in-toto Statement v1 documents carrying SLSA Provenance v1 or a SLSA Verification
Summary v1 with the in-toto attestation library: Statement.validate(), then the predicate
parsed into the SLSA v1 Provenance or VerificationSummary message, which refuses unknown field
names. Usage: intoto_check.py FILE..."""
import json
import sys

from google.protobuf import json_format
from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
from in_toto_attestation.predicates.vsa.v1 import vsa_pb2
from in_toto_attestation.v1 import statement_pb2
from in_toto_attestation.v1.statement import Statement

bad = 0
for path in sys.argv[1:]:
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    try:
        pb = json_format.ParseDict(doc, statement_pb2.Statement())
        Statement.copy_from_pb(pb).validate()
        if pb.predicate_type == "https://slsa.dev/provenance/v1":
            json_format.ParseDict(doc["predicate"], provenance_pb2.Provenance())
        elif pb.predicate_type == "https://slsa.dev/verification_summary/v1":
            # The library's vsa.proto (0.9.3) declares verifiedLevels a single string, while
            # the VSA v1 specification (authoritative) makes it an array of strings:
            # in-toto/attestation issue 425, fix pending. The array is checked here, the rest
            # of the predicate by the library.
            predicate = dict(doc["predicate"])
            levels = predicate.pop("verifiedLevels", None)
            if not isinstance(levels, list) or not all(isinstance(x, str) for x in levels):
                raise ValueError(f"verifiedLevels must be an array of strings, not {levels!r}")
            vsa = json_format.ParseDict(predicate, vsa_pb2.VerificationSummary())
            if not vsa.verifier.id or not vsa.resource_uri or vsa.verification_result not in ("PASSED", "FAILED"):
                raise ValueError("a VSA needs verifier.id, resourceUri and verificationResult PASSED or FAILED")
        else:
            raise ValueError(f"predicateType is {pb.predicate_type}")
    except Exception as e:  # noqa: BLE001 - report every failure, then fail once
        bad += 1
        print(f"{path}: {e}")
print(f"{len(sys.argv) - 1 - bad} valid, {bad} invalid")
sys.exit(1 if bad else 0)
