"""Render an alert from the templates in the repository (``templates/<kind>/``) with ``string.Template``.

Every ``${name}`` must have a value (a missing one is an error, not an empty gap); values are escaped for the HTML
body. SES v2 templates are not used: the templates live and are tested with the code, and are sent as content.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from functools import cache
from importlib import resources
from string import Template

from kilo_alerts.model import Rendered

PARTS = ("subject.txt", "body.txt", "body.html", "sms.txt")
SMS_LIMIT = 160  # one SMS segment (GSM-7); the common alerts stay within it (a test holds this)


class TemplateMissingError(LookupError):
    pass


@cache
def _template(kind: str, part: str) -> Template:
    path = resources.files("kilo_alerts").joinpath("templates", kind, part)
    if not path.is_file():
        raise TemplateMissingError(f"alert kind {kind!r} has no template {part}")
    return Template(path.read_text(encoding="utf-8"))


def render(kind: str, values: Mapping[str, str]) -> Rendered:
    escaped = {name: html.escape(value, quote=True) for name, value in values.items()}
    subject = _template(kind, "subject.txt").substitute(values).strip()
    return Rendered(
        subject=" ".join(subject.split()),  # one line: a header never carries a newline
        html=_template(kind, "body.html").substitute(escaped),
        text=_template(kind, "body.txt").substitute(values),
        sms=" ".join(_template(kind, "sms.txt").substitute(values).split()),
    )
