"""Validates CycloneDX 1.6 JSON documents with cyclonedx-python-lib's strict validator (the
official schema). Usage: cdx_validate.py FILE...; exit 1 listing every invalid file."""
import sys

from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

validator = JsonStrictValidator(SchemaVersion.V1_6)
bad = 0
for path in sys.argv[1:]:
    with open(path, encoding="utf-8") as f:
        errors = validator.validate_str(f.read(), all_errors=True)
    if errors is not None:
        bad += 1
        print(f"{path}: {errors}")
print(f"{len(sys.argv) - 1 - bad} valid, {bad} invalid")
sys.exit(1 if bad else 0)
