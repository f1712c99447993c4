"""Render throughput of a compiled 10-shortcode URL template against Jinja2 and python-liquid.

All three engines render the same template (same fields, same functions, same PHP-compatible URL
encoding) for the same contacts; Jinja2 and liquid get custom filters that call the very functions
our steps call, so the comparison measures the engines, not the string functions. The outputs are
checked to be identical before timing; many short interleaved rounds with the garbage collector
off keep the best-of figure stable on a shared machine. Prints renders/s per engine and the ratios
``render_vs_jinja2`` and ``render_vs_liquid`` (ours / theirs: higher is better).

Run: ``python bench/shortcodes.py [--contacts 500] [--rounds 40]``.
"""

from __future__ import annotations

import argparse
import gc
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime

import jinja2
import liquid

from contactsync.shortcodes import compile, php_rawurlencode, php_urlencode, select_word
from contactsync.shortcodes.functions import FUNCTIONS, Options
from contactsync.shortcodes.textops import proper

OURS = (
    "https://crm.example.com/api/v1/contacts/[#ID#]?email=[#LOWER EMAIL#]&first=[#PROPER FIRST_NAME#]"
    "&last=[#PROPER LAST_NAME#]&domain=[#PROPER EMAIL/2#]&phone=[#PHONE_E164 PHONE#]"
    '&city=[#DEFAULT:"unknown" CITY#]&code=[#UPPER LEFT:3 COMPANY#]&score=[#NUMBER:2 LEAD_SCORE#]'
    "&status=[#LEAD_STATUS#]"
)
JINJA = (
    "https://crm.example.com/api/v1/contacts/{{ ID|rawu }}?email={{ EMAIL|lower|u }}"
    "&first={{ FIRST_NAME|proper|u }}&last={{ LAST_NAME|proper|u }}&domain={{ EMAIL|word(2)|proper|u }}"
    "&phone={{ PHONE|phone_e164|u }}&city={{ CITY|default('unknown', true)|u }}"
    "&code={{ COMPANY|left(3)|upper|u }}&score={{ LEAD_SCORE|number2|u }}&status={{ LEAD_STATUS|u }}"
)
LIQUID = (
    "https://crm.example.com/api/v1/contacts/{{ ID | rawu }}?email={{ EMAIL | downcase | u }}"
    "&first={{ FIRST_NAME | proper | u }}&last={{ LAST_NAME | proper | u }}"
    "&domain={{ EMAIL | word: 2 | proper | u }}&phone={{ PHONE | phone_e164 | u }}"
    "&city={{ CITY | default: 'unknown' | u }}&code={{ COMPANY | left: 3 | upcase | u }}"
    "&score={{ LEAD_SCORE | number2 | u }}&status={{ LEAD_STATUS | u }}"
)

_OPTIONS = Options()
_PHONE = FUNCTIONS["PHONE_E164"].make([""], _OPTIONS)
_NUMBER2 = FUNCTIONS["NUMBER"].make([2], _OPTIONS)


def _filters() -> dict[str, Callable[..., str]]:
    return {
        "u": php_urlencode,
        "rawu": php_rawurlencode,
        "proper": lambda v: proper(v) if v else "",
        "word": lambda v, n: select_word(v, int(n)),
        "phone_e164": _PHONE,
        "left": lambda v, n: v[: int(n)],
        "number2": _NUMBER2,
    }


def contacts(count: int, seed: int = 7) -> list[dict[str, str]]:
    """Deterministic, varied contacts (accents, spaces, empty cities, `&` in company names)."""
    rng = random.Random(seed)
    firsts = ["jean-luc", "ZOË", "ann marie", "o'neil", "María José", "li", "Åsa"]
    lasts = ["picard", "DE LA CRUZ", "smith-jones", "o'brien", "Nguyễn", "müller"]
    companies = ["Acme & Co", "globex", "Initech", "Umbrella Corp", "Ünïcode GmbH"]
    out = []
    for i in range(count):
        first, last = rng.choice(firsts), rng.choice(lasts)
        out.append(
            {
                "ID": str(100_000 + i),
                "EMAIL": f"{first.replace(' ', '.')}.{i}@{rng.choice(companies).split()[0]}.COM",
                "FIRST_NAME": first,
                "LAST_NAME": last,
                "PHONE": f"({rng.randint(200, 999)}) 555-{rng.randint(0, 9999):04d}",
                "CITY": rng.choice(["", "New York", "São Paulo", "Zürich"]),
                "COMPANY": rng.choice(companies),
                "LEAD_SCORE": f"{rng.uniform(0, 100):.3f}",
                "LEAD_STATUS": rng.choice(["new", "hot lead", "customer"]),
            }
        )
    return out


def best_rates(
    engines: dict[str, Callable[[dict[str, str]], str]], people: list[dict[str, str]], rounds: int
) -> dict[str, float]:
    """Best renders/second of each engine; rounds interleave the engines so load drift hits all alike."""
    best = dict.fromkeys(engines, float("inf"))
    for _ in range(rounds):
        for name, render in engines.items():
            gc.collect()
            gc.disable()  # as timeit does: a collection triggered by one engine must not bill another
            try:
                start = time.perf_counter()
                for person in people:
                    render(person)
                best[name] = min(best[name], time.perf_counter() - start)
            finally:
                gc.enable()
    return {name: len(people) / seconds for name, seconds in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--contacts", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    people = contacts(args.contacts)
    now = datetime(2026, 1, 1, tzinfo=UTC)

    ours = compile(OURS)
    jenv = jinja2.Environment(autoescape=False)
    jenv.filters.update(_filters())
    jtpl = jenv.from_string(JINJA)
    lenv = liquid.Environment()
    lenv.filters.update(_filters())
    ltpl = lenv.from_string(LIQUID)

    for person in people[:200]:
        expected = ours.render(person, now=now)
        if jtpl.render(person) != expected or ltpl.render(**person) != expected:
            raise SystemExit(f"engines disagree for {person}:\n{expected}\n{jtpl.render(person)}")

    rates = best_rates(
        {
            "ours": lambda p: ours.render(p, now=now),
            "jinja2": jtpl.render,
            "liquid": lambda p: ltpl.render(**p),
        },
        people,
        args.rounds,
    )
    rate_ours, rate_jinja, rate_liquid = rates["ours"], rates["jinja2"], rates["liquid"]
    print(f"template: 10 shortcodes, {len(people)} contacts, best of {args.rounds} rounds")
    print(f"ours_renders_per_s={rate_ours:,.0f}")
    print(f"jinja2_renders_per_s={rate_jinja:,.0f}")
    print(f"liquid_renders_per_s={rate_liquid:,.0f}")
    print(f"render_vs_jinja2={rate_ours / rate_jinja:.2f}")
    print(f"render_vs_liquid={rate_ours / rate_liquid:.2f}")


if __name__ == "__main__":
    main()
