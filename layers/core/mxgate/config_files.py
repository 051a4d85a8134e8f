"""Configuration files (the routes file, the local override): read as YAML (or JSON: the routes
file's checked form, which the Lambda functions read without importing PyYAML), validated by their
pydantic models, and every problem reported at once, each with its place in the file:
`destinations.m365.routng_domain: unknown field 'routng_domain' (did you mean
'routing_domain'?)`. The Mail Manager checks of the template word their problems the same way.
"""

from __future__ import annotations

import difflib
import json
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from mxgate.errors import ConfigError

if TYPE_CHECKING:
    import yaml

# Types whose errors are clearer with the value that was given.
_SHOW_INPUT = frozenset(
    {
        "enum",
        "literal_error",
        "string_pattern_mismatch",
        "string_type",
        "int_parsing",
        "int_type",
        "float_parsing",
        "float_type",
        "bool_parsing",
        "bool_type",
    }
)


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a configuration, and where."""

    place: str  # "RuleSet.Rules[2] (archive).Actions[0].Archive.TargetArchive", "delivery.oversize"
    message: str

    def __str__(self) -> str:
        return f"{self.place}: {self.message}"


class ConfigFileError(ConfigError):
    """A configuration file that cannot be used; `problems` says why, each with its place."""

    def __init__(self, path: Path, problems: Sequence[Problem]) -> None:
        self.path = path
        self.problems = list(problems)
        if len(self.problems) == 1:
            text = f"{path}: {self.problems[0]}"
        else:
            lines = "".join(f"\n  {problem}" for problem in self.problems)
            text = f"{path}: {len(self.problems)} problems:{lines}"
        super().__init__(text)


def safe_loader() -> type[yaml.SafeLoader]:
    """libyaml's safe loader when PyYAML has it (its wheels do): about 9 times faster on
    template.yaml (0.06 s against 0.54 s here), which every command that reads the template
    pays, and on the routes file (1 ms against 8 to 12). PyYAML is imported here, not with the
    module: the Lambda functions read the routes file's JSON form (19 ms of their cold start)."""
    import yaml  # noqa: PLC0415 -- see above

    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(path: Path, what: str) -> Any:
    """The file's YAML document; ConfigError (naming the file) when unreadable or not YAML."""
    import yaml  # noqa: PLC0415 -- see safe_loader()

    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=safe_loader())  # noqa: S506 -- a safe loader
    except OSError as error:
        raise ConfigError(f"{path}: cannot read {what}: {error.strerror}") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from error


def read_document(path: Path, what: str) -> Any:
    """The file's document: JSON for a `.json` file (the routes file's checked form, written by
    `mxgate routes check --write-json`), YAML otherwise; ConfigError naming the file."""
    if path.suffix != ".json":
        return read_yaml(path, what)
    try:
        return json.loads(path.read_bytes())
    except OSError as error:
        raise ConfigError(f"{path}: cannot read {what}: {error.strerror}") from error
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
        raise ConfigError(f"{path}: not valid JSON: {error}") from error


def json_form(path: Path, what: str) -> str:
    """The file's document as JSON text (read_document reads it back)."""
    return json.dumps(read_document(path, what), indent=1, ensure_ascii=False) + "\n"


def suggestion(name: str, known: Iterable[str]) -> str:
    """` (did you mean 'x'?)` when a known name is close to `name`, else nothing."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


def field_names(*models: type[BaseModel]) -> list[str]:
    """Every field name of these models and of the models their fields hold, for suggestions."""
    names: set[str] = set()
    seen: set[type[BaseModel]] = set()
    pending = list(models)
    while pending:
        model = pending.pop()
        if model in seen:
            continue
        seen.add(model)
        for name, info in model.model_fields.items():
            names.add(name)
            pending += _models_in(info.annotation)
    return sorted(names)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The models in an annotation: itself, or inside `X | None`, `list[X]`, `dict[str, X]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def error_message(error: ErrorDetails, names: Iterable[str]) -> str:
    """pydantic's message, in the file's words: unknown fields with a suggestion from `names`,
    a validator's own message without pydantic's "Value error, " prefix, the value given."""
    kind, message = error["type"], str(error["msg"])
    if kind == "extra_forbidden":
        name = str(error["loc"][-1])
        return f"unknown field {name!r}" + suggestion(name, names)
    if kind == "missing":
        return "required field is missing"
    message = message.removeprefix("Value error, ")
    if kind in _SHOW_INPUT:
        message += f" (got {error['input']!r})"
    return message


def place_of(loc: Sequence[int | str], document: Any, root: str = "") -> str:
    """`quarantine[2] (spf-fail).when.spf`: indexes in brackets, beside a list item its name.
    Parts that are not in the document on the way (pydantic names the member of a union it
    tried) are left out; a dict key that is itself wrong is marked `(the name)`."""
    text = root
    node = document
    for position, part in enumerate(loc):
        last = position == len(loc) - 1
        if isinstance(part, int):
            text += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            name = node.get("Name", node.get("name")) if isinstance(node, dict) else None
            if isinstance(name, str):
                text += f" ({name})"
        elif part == "[key]":
            text += " (the name)"
        elif isinstance(node, dict) and (part in node or last):
            text += f".{part}" if text else part
            node = node.get(part)
        elif last:
            text += f".{part}" if text else part
    return text or "top level"


def validation_problems(
    error: ValidationError, document: Any, names: Iterable[str], root: str = ""
) -> list[Problem]:
    known = list(names)
    return [
        Problem(place_of(tuple(e["loc"]), document, root), error_message(e, known))
        for e in error.errors()
    ]


Model = TypeVar("Model", bound=BaseModel)


def load_model(
    path: Path,
    model: type[Model],
    what: str,
    references: Callable[[Any], list[Problem]] | None = None,
    prepare: Callable[[Any], tuple[Any, list[Problem]]] | None = None,
) -> Model:
    """Read `path` and validate it with `model`. `prepare` rewrites the document first (and
    says what was wrong on the way); `references` checks the names one part of the document
    gives another on the document as written, so that a dangling name is reported together
    with the field errors, not only once they are all fixed."""
    document = read_document(path, what)
    if document is None:
        document = {}
    prepared: list[Problem] = []
    if prepare is not None:
        document, prepared = prepare(document)
    dangling = references(document) if references is not None and isinstance(document, dict) else []
    dangling = prepared + dangling
    try:
        value = model.model_validate(document)
    except ValidationError as error:
        problems = [
            problem
            for problem, detail in zip(
                validation_problems(error, document, field_names(model)),
                error.errors(),
                strict=True,
            )
            # the model's own check of the names, which `references` has worded with places
            if not (dangling and detail["loc"] == ())
        ]
        raise ConfigFileError(path, problems + dangling) from error
    if dangling:
        raise ConfigFileError(path, dangling)
    return value
