"""Write the JSON Schema of every public message into ``schemas/json/``.

Run ``python -m schemas.generate`` (or ``make schemas``) after changing a model; a test fails
while the committed files are stale.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from schemas.alerts import AlertEvent
from schemas.audit import AuditRecord
from schemas.control import ControlCommand
from schemas.jobs import JobRequest
from schemas.results import JobResult, UsageEvent

SCHEMA_DIR = Path(__file__).parent / "json"
MODELS: dict[str, type[BaseModel]] = {
    "JobRequest": JobRequest,
    "JobResult": JobResult,
    "UsageEvent": UsageEvent,
    "ControlCommand": ControlCommand,
    "AlertEvent": AlertEvent,
    "AuditRecord": AuditRecord,
}


def render(model: type[BaseModel]) -> str:
    schema = model.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def expected_files() -> dict[Path, str]:
    return {SCHEMA_DIR / f"{name}.json": render(model) for name, model in MODELS.items()}


def main() -> None:
    SCHEMA_DIR.mkdir(exist_ok=True)
    for path, text in expected_files().items():
        path.write_text(text)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
