"""An aggregation configuration (a rule, its parameters, the options every rule shares) and
its two written forms.

Genesis carries ``aggregation`` (the rule name) and ``aggregation_params`` (a map of ints
and strings; floats as decimal strings such as ``"0.2"``); people and scripts write rule
text, ``rule[:arg[:arg]][,key=value...]``. Both forms are read and written here from the
declarations in the rule classes and in ``Options``, so they cannot drift apart from the
checks, and a new rule needs nothing here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fl.fixedpoint import MAX_WEIGHT
from fl.rules.base import AggregationError, Parameters, ParamSpec, Rule, Value, param
from fl.rules.registry import rule_class, rule_names

__all__ = [
    "DEFAULT_RULE",
    "AggregationConfig",
    "Options",
    "default_aggregation",
    "parse_rule",
    "rules_help",
]


@dataclass(frozen=True)
class Options(Parameters):
    """The steps ``fl.aggregate`` runs around every rule."""

    weight_cap: int | str = param(
        MAX_WEIGHT,
        ge=1,
        le=MAX_WEIGHT,
        words=("median",),
        alias="cap",
        doc="an update's weight is min(samples, cap) (median: the median claimed sample count)",
    )
    norm_bound: float | str | None = param(
        None,
        gt=0,
        le=1e6,
        words=("median",),
        alias="clip",
        doc="scale updates down to this L2 norm first (median: the median update norm)",
    )
    server_momentum: float = param(
        0.0, ge=0, lt=1, alias="momentum", doc="step = momentum * previous step + aggregate"
    )


_BY_ALIAS = {s.alias: s.name for s in Options.specs() if s.alias}


def _spec_for(rule: type[Rule], key: str) -> ParamSpec:
    spec = Options.spec(key) or rule.spec(key)
    if spec is None:
        own = ", ".join(s.name for s in rule.specs()) or "none"
        shared = ", ".join(s.name for s in Options.specs())
        raise AggregationError(
            f"unknown aggregation parameter {key!r} for rule {rule.name!r} "
            f"(its parameters: {own}; any rule: {shared})",
            key,
        )
    return spec


@dataclass(frozen=True, init=False)
class AggregationConfig:
    """A rule with its parameter values plus the shared options, as genesis fixes them.

    Built from keywords, ``AggregationConfig("trimmed_mean", trim_beta=0.2, norm_bound=
    "median")``; every value is checked by its declaration and an error names it.
    """

    strategy: Rule
    options: Options

    def __init__(self, rule: str = "fedavg", **values: Value) -> None:
        cls = rule_class(rule)
        for key in values:
            _spec_for(cls, key)  # an unknown name is an error that names it
        shared = {k: v for k, v in values.items() if Options.spec(k) is not None}
        own = {k: v for k, v in values.items() if k not in shared}
        object.__setattr__(self, "strategy", cls.of(own))
        object.__setattr__(self, "options", Options.of(shared))

    @property
    def rule(self) -> str:
        return self.strategy.name

    @property
    def weight_cap(self) -> int | str:
        return self.options.weight_cap

    @property
    def norm_bound(self) -> float | str | None:
        return self.options.norm_bound

    @property
    def server_momentum(self) -> float:
        return self.options.server_momentum

    def __getattr__(self, name: str) -> Value:
        # Reached only when ordinary lookup fails: a rule parameter (``cfg.trim_beta``).
        if name.startswith("__") or name in ("strategy", "options"):
            raise AttributeError(name)
        if self.strategy.spec(name) is None:
            raise AttributeError(f"rule {self.rule!r} has no parameter {name!r}")
        value: Value = getattr(self.strategy, name)
        return value

    # ----------------------------------------------------------------- genesis form

    @classmethod
    def from_genesis(cls, rule: str, params: Mapping[str, int | str]) -> AggregationConfig:
        """The configuration genesis ``aggregation`` / ``aggregation_params`` describe."""
        rc = rule_class(rule)
        return cls(rule, **{k: _spec_for(rc, k).parse(v) for k, v in params.items()})

    def genesis_params(self) -> dict[str, int | str]:
        """``aggregation_params`` for genesis: the values that differ from the defaults."""
        changed = self.strategy.changed() + self.options.changed()
        return dict(sorted((s.name, s.encode(v)) for s, v in changed))

    # ----------------------------------------------------------------- text form

    def to_text(self) -> str:
        """Rule text that ``parse_rule`` reads back to this configuration."""
        changed = self.strategy.changed()
        specs = self.strategy.specs()
        last = max((specs.index(s) for s, _ in changed), default=-1)
        positional = [(s, getattr(self.strategy, s.name)) for s in specs[: last + 1]]
        if all(v is not None for _, v in positional):
            parts = [":".join([self.rule, *(s.text(v) for s, v in positional)])]
        else:  # an unset parameter before a set one: name them instead
            parts = [self.rule, *(f"{s.name}={s.text(v)}" for s, v in changed)]
        parts += [f"{s.alias or s.name}={s.text(v)}" for s, v in self.options.changed()]
        return ",".join(parts)


def parse_rule(text: str) -> AggregationConfig:
    """Parse ``rule[:arg[:arg]][,clip=median|<float>][,momentum=<m>][,cap=<n>]``.

    Positional arguments are the rule's parameters in declaration order; any parameter
    may also be given as ``name=value``. Examples: ``fedavg``, ``median``,
    ``trimmed_mean:0.2``, ``krum:2``, ``multi_krum:3:5,clip=median``,
    ``fedavg,cap=600,momentum=0.9``. ``rules_help()`` lists the rules.
    """
    head, *opts = [p.strip() for p in text.split(",")]
    name, *args = head.split(":")
    rc = rule_class(name)
    specs = rc.specs()
    if len(args) > len(specs):
        names = ", ".join(s.name for s in specs)
        takes = f"at most {len(specs)} argument(s) ({names})" if specs else "no arguments"
        raise AggregationError(f"rule {name!r} takes {takes}: {text!r}")
    raw = {s.name: a for s, a in zip(specs, args, strict=False)}
    for opt in opts:
        key, _, value = opt.partition("=")
        key = _BY_ALIAS.get(key, key)
        if key in raw or not (Options.spec(key) or rc.spec(key)):
            aliases = ", ".join([*_BY_ALIAS, *(s.name for s in specs)])
            raise AggregationError(
                f"unknown or repeated option {key!r} in {text!r} (options: {aliases})", key
            )
        raw[key] = value
    return AggregationConfig(name, **{k: _spec_for(rc, k).parse(v) for k, v in raw.items()})


# What new genesis files (``fedchain init``, ``testnet init``, docker-compose) and
# ``fl.simulation`` use unless told otherwise. Trainers may be hostile and every claim in an
# update is theirs: plain FedAvg lets one trainer of ten who adds +100 to every coordinate
# and claims 4M samples move the model by ~100 per weight. Clipping every update to the
# median update norm bounds how far any one update can pull, and capping each weight at the
# median claimed sample count bounds how much it counts, so a single trainer, whatever it
# sends and claims, pulls no harder than a typical honest one. With honest, equally sized
# shards neither step changes a weight, so FedAvg's behaviour on clean data is kept.
DEFAULT_RULE = "fedavg,cap=median,clip=median"


def default_aggregation() -> AggregationConfig:
    """The configuration ``DEFAULT_RULE`` describes."""
    return parse_rule(DEFAULT_RULE)


def rules_help() -> str:
    """The rule-text syntax with every registered rule and option, for help and errors."""
    lines = ["rule[:arg[:arg]][,option=value...]; rules:"]
    for name in rule_names():
        rc = rule_class(name)
        specs = rc.specs()
        usage = name + "".join(f"[:{s.name}" for s in specs) + "]" * len(specs)
        lines.append(f"  {usage:<36} {rc.summary()}")
        lines.extend(f"      {_describe(s)}" for s in specs)
    lines.append("options (any rule):")
    lines.extend(f"  {_describe(s)}" for s in Options.specs())
    return "\n".join(lines)


def _describe(s: ParamSpec) -> str:
    name = f"{s.alias} ({s.name})" if s.alias else s.name
    default = "unset" if s.default is None else s.text(s.default)
    return f"{name}: {s.describe()}, default {default}" + (f"; {s.doc}" if s.doc else "")
