"""Verifies DSSE envelopes with securesystemslib, trusting one public key (PEM), and checks
each payload with in-toto-attestation's Statement.validate().
Usage: dsse_verify.py PUBLIC_KEY.pem ENVELOPE.json...

securesystemslib tries only a key whose keyid equals the signature's keyid (VERIFIERS.md):
the trusted key is bound to the envelope's keyid here; the signature itself is what is checked."""
import json
import sys

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from google.protobuf import json_format
from in_toto_attestation.v1 import statement_pb2
from in_toto_attestation.v1.statement import Statement
from securesystemslib.dsse import Envelope
from securesystemslib.signer import SSlibKey

pem = open(sys.argv[1], encoding="ascii").read()
is_ec = isinstance(load_pem_public_key(pem.encode()), ec.EllipticCurvePublicKey)
keytype, scheme = ("ecdsa", "ecdsa-sha2-nistp256") if is_ec else ("ed25519", "ed25519")
bad = 0
for path in sys.argv[2:]:
    try:
        with open(path, encoding="utf-8") as f:
            env = Envelope.from_dict(json.load(f))
        keys = [SSlibKey(s.keyid, keytype, scheme, {"public": pem}) for s in env.signatures.values()]
        env.verify(keys, 1)
        if env.payload_type != "application/vnd.in-toto+json":
            raise ValueError(f"payloadType {env.payload_type}")
        st = json_format.ParseDict(json.loads(env.payload), statement_pb2.Statement())
        Statement.copy_from_pb(st).validate()
    except Exception as e:  # noqa: BLE001 - report every failure, then fail once
        bad += 1
        print(f"{path}: {type(e).__name__}: {e}")
print(f"{len(sys.argv) - 2 - bad} verified, {bad} failed")
sys.exit(1 if bad else 0)
