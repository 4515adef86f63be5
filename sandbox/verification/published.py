"""The published templates: every template version as the API shows it to anyone asking.

The template model, its loader and its SQL are :mod:`policies.templates`; this module only
answers ``GET /v1/templates`` and ``GET /v1/templates/{id}`` from the set loaded at startup, so
that what can be asked is public and the same for every caller.
"""

from __future__ import annotations

from policies.templates.loader import TemplateSet

__all__ = ["TemplateCatalog"]


class TemplateCatalog:
    """The template versions loaded at startup, as public documents."""

    def __init__(self, templates: TemplateSet) -> None:
        self.templates = templates

    def list_templates(self) -> list[dict[str, object]]:
        return [t.public() for t in self.templates]

    def template(self, template_id: str, version: int | None = None) -> dict[str, object]:
        """One template version (default the latest), with the list of its versions."""
        found = self.templates.get(template_id, version)
        doc = found.public()
        doc["versions"] = sorted(v for (tid, v) in self.templates.templates if tid == found.id)
        return doc
