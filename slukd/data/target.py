"""The SLU decoder target: serialise {scenario, action, entities, transcript} into one string and parse it back.

Format (paper style, whitespace separated)::

    <scenario>_<action> _SEP <type> _FILL <filler> _SEP ... _SEP <transcript>
    <scenario>_<action> _SEP <transcript>                      (no entities)

Parsing works on whitespace tokens, so it is insensitive to the spacing a tokenizer's decode produces, and it never
raises: malformed text gives the best reading available with ``ok=False`` and is counted in a :class:`ParseStats`.

The SLURP label inventory (18 scenarios, their actions, the entity types) is written below as constants. It was read
from SLURP's devel and test annotations; SLURP's train split may carry a few rare labels beyond it, which
:func:`is_known_intent` reports as unknown (prepare code accepts unknown actions/entity types, not unknown scenarios).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

SEP = "_SEP"
FILL = "_FILL"

#: scenario -> its actions (SLURP's label inventory; scenario names contain no "_", actions may).
SLURP_SCENARIO_ACTIONS: dict[str, tuple[str, ...]] = {
    "alarm": ("query", "remove", "set"),
    "audio": ("volume_down", "volume_mute", "volume_other", "volume_up"),
    "calendar": ("query", "remove", "set"),
    "cooking": ("query", "recipe"),
    "datetime": ("convert", "query"),
    "email": ("addcontact", "query", "querycontact", "sendemail"),
    "general": ("greet", "joke", "quirky"),
    "iot": (
        "cleaning",
        "coffee",
        "hue_lightchange",
        "hue_lightdim",
        "hue_lightoff",
        "hue_lighton",
        "hue_lightup",
        "wemo_off",
        "wemo_on",
    ),
    "lists": ("createoradd", "query", "remove"),
    "music": ("dislikeness", "likeness", "query", "settings"),
    "news": ("query",),
    "play": ("audiobook", "game", "music", "podcasts", "radio"),
    "qa": ("currency", "definition", "factoid", "maths", "stock"),
    "recommendation": ("events", "locations", "movies"),
    "social": ("post", "query"),
    "takeaway": ("order", "query"),
    "transport": ("query", "taxi", "ticket", "traffic"),
    "weather": ("query",),
}

#: The 18 SLURP scenarios, alphabetical.
SLURP_SCENARIOS: tuple[str, ...] = tuple(sorted(SLURP_SCENARIO_ACTIONS))

#: Every intent ``scenario_action`` (60), alphabetical.
SLURP_INTENTS: tuple[str, ...] = tuple(sorted(f"{s}_{a}" for s, acts in SLURP_SCENARIO_ACTIONS.items() for a in acts))

#: The entity (slot) types of SLURP (55), alphabetical.
SLURP_ENTITY_TYPES: tuple[str, ...] = (
    "alarm_type",
    "app_name",
    "artist_name",
    "audiobook_author",
    "audiobook_name",
    "business_name",
    "business_type",
    "change_amount",
    "coffee_type",
    "color_type",
    "cooking_type",
    "currency_name",
    "date",
    "definition_word",
    "device_type",
    "drink_type",
    "email_address",
    "email_folder",
    "event_name",
    "food_type",
    "game_name",
    "game_type",
    "general_frequency",
    "house_place",
    "ingredient",
    "joke_type",
    "list_name",
    "meal_type",
    "media_type",
    "movie_name",
    "movie_type",
    "music_album",
    "music_descriptor",
    "music_genre",
    "news_topic",
    "order_type",
    "person",
    "personal_info",
    "place_name",
    "player_setting",
    "playlist_name",
    "podcast_descriptor",
    "podcast_name",
    "radio_name",
    "relation",
    "song_name",
    "sport_type",
    "time",
    "time_zone",
    "timeofday",
    "transport_agency",
    "transport_descriptor",
    "transport_name",
    "transport_type",
    "weather_descriptor",
)


def is_known_intent(intent: str) -> bool:
    """True when ``intent`` is in :data:`SLURP_INTENTS`."""
    return intent in _INTENT_SET


_INTENT_SET = frozenset(SLURP_INTENTS)


def split_intent(intent: str) -> tuple[str, str]:
    """``"iot_hue_lightoff" -> ("iot", "hue_lightoff")``: split at the first "_" (scenarios contain none).

    Without a "_" the whole string is the scenario and the action is "".
    """
    scenario, _, action = intent.partition("_")
    return scenario, action


def special_tokens(intents: list[str] | tuple[str, ...], entity_types: list[str] | tuple[str, ...]) -> list[str]:
    """Symbols the tokenizer keeps whole: ``["_SEP", "_FILL", *intents, *entity_types]`` (deduplicated, in order)."""
    out: list[str] = []
    for tok in (SEP, FILL, *intents, *entity_types):
        if tok not in out:
            out.append(tok)
    return out


def normalise_text(text: str) -> str:
    """Collapse runs of whitespace to one space and strip the ends (the form targets are built from)."""
    return " ".join(text.split())


def serialise(scenario: str, action: str, entities: list[dict], transcript: str) -> str:
    """Build the decoder target ``"<scenario>_<action> _SEP <type> _FILL <filler> _SEP ... _SEP <transcript>"``.

    ``entities`` is a list of ``{"type": str, "filler": str}`` in span order. Fillers and the transcript are
    whitespace-normalised (see :func:`normalise_text`); they must not contain the separator words, and the
    scenario, action and types must be single words. Raises ValueError otherwise.
    """
    if not scenario or "_" in scenario or len(scenario.split()) != 1:
        raise ValueError(f"scenario must be one word without '_': {scenario!r}")
    if not action or len(action.split()) != 1:
        raise ValueError(f"action must be one non-empty word: {action!r}")
    parts = [f"{scenario}_{action}"]
    for i, ent in enumerate(entities):
        try:
            etype, filler = ent["type"], ent["filler"]
        except (KeyError, TypeError) as err:
            raise ValueError(f"entity {i} must be a dict with 'type' and 'filler': {ent!r}") from err
        if not etype or len(etype.split()) != 1 or etype in (SEP, FILL):
            raise ValueError(f"entity {i}: type must be one word: {etype!r}")
        filler = normalise_text(filler)
        _check_free_of_markers(filler, f"entity {i} filler")
        parts.append(f"{etype} {FILL} {filler}" if filler else f"{etype} {FILL}")
    transcript = normalise_text(transcript)
    _check_free_of_markers(transcript, "transcript")
    parts.append(transcript)
    return f" {SEP} ".join(parts).rstrip()


def _check_free_of_markers(text: str, what: str) -> None:
    words = text.split()
    if SEP in words or FILL in words:
        raise ValueError(f"{what} contains a separator word ({SEP} / {FILL}): {text!r}")


@dataclass
class ParsedTarget:
    """A parsed decoder output. ``ok`` is False when the text did not follow the format (best reading kept)."""

    scenario: str
    action: str
    intent: str
    entities: list[dict] = field(default_factory=list)
    transcript: str = ""
    ok: bool = True
    problems: list[str] = field(default_factory=list)


@dataclass
class ParseStats:
    """Counts parses and their failures by kind; pass one to :func:`parse` to accumulate."""

    total: int = 0
    failed: int = 0
    problems: Counter = field(default_factory=Counter)

    def add(self, parsed: ParsedTarget) -> None:
        self.total += 1
        if not parsed.ok:
            self.failed += 1
            self.problems.update(parsed.problems)

    def as_dict(self) -> dict:
        return {"total": self.total, "failed": self.failed, "problems": dict(self.problems)}


def parse(text: str, stats: ParseStats | None = None) -> ParsedTarget:
    """Parse a (possibly malformed) decoder output; never raises.

    Reading: split the whitespace tokens at every ``_SEP``. The first group is the intent (its first word), the last
    group the transcript (when there are at least two groups), and each middle group ``<type> _FILL <filler...>``
    an entity. Problems (counted in ``stats`` when given, and listed in ``problems``):
    ``empty``, ``no_sep`` (one group: read as intent + transcript of its remaining words), ``intent_words`` (more than
    one word before the first ``_SEP``), ``intent_no_action`` (no "_" in the intent), ``entity_no_fill``,
    ``entity_no_type``, ``fill_in_transcript`` (dropped entities or stray ``_FILL`` in the transcript: kept as words
    removed) — the reading keeps what it can and drops broken entities.
    """
    problems: list[str] = []
    try:
        words = text.split() if isinstance(text, str) else []
        if not words:
            parsed = ParsedTarget("", "", "", [], "", ok=False, problems=["empty"])
            if stats is not None:
                stats.add(parsed)
            return parsed
        groups: list[list[str]] = [[]]
        for w in words:
            if w == SEP:
                groups.append([])
            else:
                groups[-1].append(w)
        head = groups[0]
        if len(groups) == 1:
            problems.append("no_sep")
            intent = head[0] if head else ""
            transcript_words = head[1:]
            middle: list[list[str]] = []
        else:
            if len(head) != 1:
                problems.append("intent_words")
            intent = head[0] if head else ""
            middle = groups[1:-1]
            transcript_words = groups[-1]
        if FILL in transcript_words:
            problems.append("fill_in_transcript")
            transcript_words = [w for w in transcript_words if w != FILL]
        entities: list[dict] = []
        for grp in middle:
            if FILL not in grp:
                problems.append("entity_no_fill")
                continue
            k = grp.index(FILL)
            if k != 1:
                problems.append("entity_no_type")
                continue
            filler_words = [w for w in grp[k + 1 :] if w != FILL]
            entities.append({"type": grp[0], "filler": " ".join(filler_words)})
        if intent in (FILL,):
            intent = ""
        scenario, action = split_intent(intent)
        if intent and not action:
            problems.append("intent_no_action")
        if not intent:
            problems.append("no_intent")
        parsed = ParsedTarget(scenario, action, intent, entities, " ".join(transcript_words), not problems, problems)
    except Exception as err:  # pragma: no cover - defensive: parse must never raise
        logger.debug("parse failed on %r: %s", text, err)
        parsed = ParsedTarget("", "", "", [], "", ok=False, problems=["exception"])
    if stats is not None:
        stats.add(parsed)
    return parsed
