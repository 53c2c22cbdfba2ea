"""Checks in-toto Statement v1 documents carrying SLSA Provenance v1 with the in-toto
attestation library: Statement.validate(), then the predicate parsed into the SLSA v1
Provenance message, which refuses unknown field names. Usage: intoto_check.py FILE..."""
import json
import sys

from google.protobuf import json_format
from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
from in_toto_attestation.v1 import statement_pb2
from in_toto_attestation.v1.statement import Statement

bad = 0
for path in sys.argv[1:]:
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    try:
        pb = json_format.ParseDict(doc, statement_pb2.Statement())
        Statement.copy_from_pb(pb).validate()
        if pb.predicate_type != "https://slsa.dev/provenance/v1":
            raise ValueError(f"predicateType is {pb.predicate_type}")
        json_format.ParseDict(doc["predicate"], provenance_pb2.Provenance())
    except Exception as e:  # noqa: BLE001 - report every failure, then fail once
        bad += 1
        print(f"{path}: {e}")
print(f"{len(sys.argv) - 1 - bad} valid, {bad} invalid")
sys.exit(1 if bad else 0)
