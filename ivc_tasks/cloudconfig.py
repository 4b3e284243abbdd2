"""A rendered ``#cloud-config`` checked against cloud-init's own JSON schema, before any change.

The schema is cloud-init's, unchanged (``schemas/cloud-init-<version>/``, see its NOTICE):
Debian 12's cloud-init 22.4 by default; ``[defaults] cloud_init_version`` or
``IVC_CLOUD_INIT_VERSION`` chooses (``"none"`` skips the check). Validation follows
``cloud-init schema`` (``jsonschema``'s Draft 4, ``deprecated`` values are warnings, not
errors) with one addition: cloud-init 22.4 leaves the top level open, so a typo such as
``write_file:`` would be "valid" and silently ignored at boot; ivc refuses a top-level key
that is not among the schema's own top-level ``properties`` (those of every module).

An error names the key's YAML path, the line of the rendered user_data it is on, and the
template it came from. A user_data whose first line is ``## template: jinja`` is rendered by
cloud-init at boot from instance data ivc cannot know: it is not checked (a warning says so).

``declared_final_message`` reads the ``final_message`` the ``cloud_init`` check must recognise
(``console_log.final_message_pattern``).
"""

from __future__ import annotations

import functools
import json
import logging
import re
from pathlib import Path
from typing import Any

from ivc_tasks.console_log import FinalMessageError, final_message_pattern
from ivc_tasks.errors import ConfigError, clip_message
from ivc_tasks.hints import did_you_mean

log = logging.getLogger("ivc")

SUPPORTED_VERSIONS = ("22.4",)  # the first is the default
SCHEMA_FOLDER = Path(__file__).parent / "schemas"
JINJA_HEADER = "## template: jinja"


@functools.cache
def load_schema(version: str) -> dict[str, Any]:
    """cloud-init's schema for ``version`` (one of SUPPORTED_VERSIONS)."""
    path = SCHEMA_FOLDER / f"cloud-init-{version}" / "schema-cloud-config-v1.json"
    return json.loads(path.read_text(encoding="utf-8"))


def top_level_keys(schema: dict[str, Any]) -> set[str]:
    """The top-level keys the schema knows: ``properties`` of itself and of every ``$defs``
    entry its top-level ``allOf`` refers to."""
    keys = set(schema.get("properties", {}))
    for part in schema.get("allOf", []):
        ref = part.get("$ref", "")
        target = schema["$defs"].get(ref.rsplit("/", 1)[-1], {}) if ref.startswith("#/$defs/") \
            else part
        keys |= set(target.get("properties", {}))
    return keys


@functools.cache
def _validator(version: str) -> Any:
    """A Draft 4 validator of the schema with cloud-init's ``deprecated`` keyword: a deprecated
    value yields a ``Deprecated`` error, which ``anyOf``/``oneOf`` do not count as failing
    (as ``cloudinit.config.schema.get_jsonschema_validator`` does)."""
    from jsonschema import Draft4Validator, ValidationError
    from jsonschema.validators import extend

    class Deprecated(ValidationError):
        pass

    def deprecated(validator, value, instance, schema):
        if value:
            yield Deprecated(f"DEPRECATED: {schema.get('description', '')}".strip())

    def split(validator, subschemas, instance, one: bool):
        errors, warnings, valid = [], [], 0
        for index, sub in enumerate(subschemas):
            found = list(validator.descend(instance, sub, schema_path=index))
            real = [e for e in found if not isinstance(e, Deprecated)]
            if not real:
                valid += 1
                if not warnings:
                    warnings = [e for e in found if isinstance(e, Deprecated)]
                if not one:
                    break
            else:
                errors.extend(real)
        if valid == 0:
            yield ValidationError(f"{instance!r} is not valid under any of the given schemas",
                                  context=errors)
        elif one and valid > 1:
            yield ValidationError(f"{instance!r} is valid under more than one of the schemas")
        else:
            yield from warnings

    cls = extend(Draft4Validator, validators={
        "deprecated": deprecated,
        "anyOf": lambda v, s, i, _: split(v, s, i, one=False),
        "oneOf": lambda v, s, i, _: split(v, s, i, one=True),
    })
    cls.Deprecated = Deprecated  # type: ignore[attr-defined]
    return cls(load_schema(version))


def line_of(text: str, path: list[Any]) -> int | None:
    """The 1-based line of ``text`` (YAML) where the node at ``path`` (keys and indexes) starts;
    for a mapping key, the key's line. None when the path is not found."""
    import yaml

    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    line = node.start_mark.line if node is not None else None
    for step in path:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == str(step):
                    node, line = value, key.start_mark.line
                    break
            else:
                return line + 1 if line is not None else None
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) \
                and step < len(node.value):
            node = node.value[step]
            line = node.start_mark.line
        else:
            break
    return line + 1 if line is not None else None


def problems(text: str, version: str) -> tuple[list[tuple[str, int | None, str]], list[str]]:
    """Check a rendered ``#cloud-config``.

    :returns: ``(errors, warnings)``; each error is ``(key path, line, problem)``, the best
        match first (jsonschema's ``relevance``); warnings name deprecated values.
    """
    import yaml
    from jsonschema.exceptions import relevance

    config = yaml.safe_load(text)
    if not isinstance(config, dict):
        return [("(top level)", 1, "is not a YAML mapping")], []
    schema = load_schema(version)
    known = top_level_keys(schema)
    errors: list[tuple[str, int | None, str]] = []
    for key in config:
        if str(key) not in known:
            hint = did_you_mean(str(key), sorted(known), otherwise="")
            errors.append((str(key), line_of(text, [key]),
                           f"is not a cloud-init {version} key" + (f" ({hint})" if hint else "")))
    validator = _validator(version)
    warnings = []
    found = sorted(validator.iter_errors(config), key=relevance)
    for error in found:
        path = list(error.absolute_path)
        where = ".".join(str(p) for p in path) or "(top level)"
        if isinstance(error, validator.Deprecated):
            warnings.append(f"{where} (line {line_of(text, path)}): {error.message}")
            continue
        best = error
        if error.context:  # anyOf/oneOf: the branch that came closest says most
            best = min(error.context, key=relevance)
            path = path + list(best.relative_path)
            where = ".".join(str(p) for p in path) or where
        errors.append((where, line_of(text, path), clip_message(best.message, word=80,
                                                                limit=240)))
    return errors, warnings


def check_cloud_config(text: str, *, version: str, spec_path: Path, entry: str,
                       template: Path | None) -> list[str]:
    """Refuse a rendered ``#cloud-config`` that cloud-init's schema refuses.

    :returns: warnings (deprecated values; a jinja template not checked), also logged.
    :raises ConfigError: the first error, naming the key, the rendered line and the template.
    """
    source = f"template {template}" if template is not None else "the declared files"
    if version == "none":
        return []
    if text.split("\n", 1)[0].strip() == JINJA_HEADER:
        message = (f"{entry}: {source} is a '## template: jinja' user_data, rendered by "
                   "cloud-init at boot: not checked against the schema")
        log.warning("%s", message)
        return [message]
    errors, warnings = problems(text, version)
    for warning in warnings:
        log.warning("%s: %s (%s): deprecated: %s", spec_path, entry, source, warning)
    if errors:
        where, line, problem = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        at = f"line {line} of the rendered user_data" if line else "the rendered user_data"
        raise ConfigError(clip_message(re.sub(r"\s*\n\s*", " ",
            f"{spec_path}: {entry}: cloud-config key {where!s} ({at}, from {source}): "
            f"{problem}{more}; fix the template (checked against cloud-init {version}'s "
            "schema; [defaults] cloud_init_version chooses the version)")))
    return [f"{entry}: deprecated: {w}" for w in warnings]


def declared_final_message(text: str) -> str | None:
    """The top-level ``final_message`` of a rendered ``#cloud-config`` as cloud-init reads it
    (``str()`` of the value, as ``util.get_cfg_option_str`` does), None when not set (or the
    text is no YAML mapping: the schema check says so).

    :raises FinalMessageError: the message cannot be recognised on the console (see
        ``console_log.final_message_pattern``), or the user_data is a ``## template: jinja``
        that sets it (rendered at boot from values ivc cannot know).
    """
    import yaml

    if text.split("\n", 1)[0].strip() == JINJA_HEADER:
        if re.search(r"(?m)^final_message\s*:", text):
            raise FinalMessageError("the user_data is a '## template: jinja', rendered by "
                                    "cloud-init at boot from values ivc cannot know")
        return None
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    if not isinstance(config, dict) or "final_message" not in config:
        return None
    value = config["final_message"]
    message = value if isinstance(value, str) else str(value)
    final_message_pattern(message)
    return message
