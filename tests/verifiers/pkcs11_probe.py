"""Asks a PKCS#11 token, through PyKCS11 (Debian's python3-pykcs11; not the code under test),
whether a private key can be read out.

usage: pkcs11_probe.py MODULE TOKEN-LABEL KEY-LABEL   (user PIN in STELLAOPS_PKCS11_PIN)

Logs in, finds the one private key of that label, asks for CKA_VALUE (the key itself) and
prints one line per finding:
  value: withheld        (the token returned no CKA_VALUE; `value: READ <n> bytes` if it did)
  sensitive: True / extractable: False / always-sensitive: True / never-extractable: True
Exit 0 when it could ask; 1 when the key or token is not found.
"""
import os
import sys

import PyKCS11

module, token, label = sys.argv[1:4]
lib = PyKCS11.PyKCS11Lib()
lib.load(module)
slots = [s for s in lib.getSlotList(tokenPresent=True) if lib.getTokenInfo(s).label.strip() == token]
if len(slots) != 1:
    print(f"token {token!r}: {len(slots)} found", file=sys.stderr)
    sys.exit(1)
session = lib.openSession(slots[0])
session.login(os.environ["STELLAOPS_PKCS11_PIN"])
keys = session.findObjects([(PyKCS11.CKA_CLASS, PyKCS11.CKO_PRIVATE_KEY), (PyKCS11.CKA_LABEL, label)])
if len(keys) != 1:
    print(f"private key {label!r}: {len(keys)} found", file=sys.stderr)
    sys.exit(1)
try:
    value = session.getAttributeValue(keys[0], [PyKCS11.CKA_VALUE], allAsBinary=True)[0]
    # PyKCS11 answers None for an attribute the token withholds (CKR_ATTRIBUTE_SENSITIVE).
    print("value: withheld" if value is None else f"value: READ {len(value)} bytes")
except PyKCS11.PyKCS11Error as e:
    print(f"value: withheld ({PyKCS11.CKR[e.value]})")
names = [("sensitive", PyKCS11.CKA_SENSITIVE), ("extractable", PyKCS11.CKA_EXTRACTABLE),
         ("always-sensitive", PyKCS11.CKA_ALWAYS_SENSITIVE), ("never-extractable", PyKCS11.CKA_NEVER_EXTRACTABLE)]
values = session.getAttributeValue(keys[0], [a for _, a in names])
for (name, _), v in zip(names, values):
    print(f"{name}: {bool(v)}")
session.logout()
