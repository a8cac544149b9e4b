"""The sample rows themselves, without a database: deterministic, consistent, plausible."""

from __future__ import annotations

from collections import Counter

import pytest

from worker.emulator.seed import sample_user
from worker.sample import data, locales
from worker.sample.defaults import SALESPERSON_CODE_RULE


def test_same_arguments_give_the_same_rows() -> None:
    assert data.build_sample_data(40, 5) == data.build_sample_data(40, 5)


def test_more_customers_extend_the_same_list() -> None:
    small, large = data.build_sample_data(30, 5), data.build_sample_data(90, 5)
    assert large.customers[:30] == small.customers
    assert large.contacts[:len(small.contacts)] == small.contacts


def test_salespeople_are_the_emulators_first_users() -> None:
    people = data.sample_salespeople(7)
    for index, person in enumerate(people):
        user = sample_user(index)
        assert person.email == user["internalemailaddress"]
        assert person.name == f"{user['firstname']} {user['lastname']}"
        assert person.job_title == user["title"]
    assert len({p.code for p in people}) == 7


def test_salesperson_code_follows_the_mappings_rule() -> None:
    # The SALESPEOPLE mapping derives a new salesperson's code with this rule; the sample
    # must give the same code, or a sync would rename every sample salesperson.
    assert SALESPERSON_CODE_RULE == {"before": "@", "case": "upper", "max_length": 20}
    assert data.salesperson_code("alex.schmidt@contoso.example") == "ALEX.SCHMIDT"
    assert data.salesperson_code("a.very.long.local.part.indeed@x.example") == \
        "A.VERY.LONG.LOCAL.PA"


def test_customers_name_their_salesperson_and_their_countrys_currency() -> None:
    sample = data.build_sample_data(300, 3)
    codes = {p.code for p in sample.salespeople}
    currency_of = {c.code: c.currency for c in locales.COUNTRIES}
    assert {c.salesperson_code for c in sample.customers} == codes
    for customer in sample.customers:
        assert customer.currency_code == currency_of[customer.country_region_code]
    assert {c.code for c in sample.currencies} >= {c.currency_code for c in sample.customers}


def test_customers_are_spread_over_several_countries() -> None:
    countries = Counter(c.country_region_code for c in data.build_sample_data(500, 5).customers)
    assert len(countries) >= 6
    assert countries.most_common(1)[0][0] == "DE"


def test_names_and_emails_are_unique_so_matching_is_unambiguous() -> None:
    sample = data.build_sample_data(3000, 5)
    assert len({c.name for c in sample.customers}) == 3000
    assert len({c.home_page for c in sample.customers}) == 3000
    assert len({c.email for c in sample.contacts}) == len(sample.contacts)
    assert all(c.email.endswith(".example") for c in sample.contacts)


def test_about_two_contacts_per_customer_numbered_in_order() -> None:
    sample = data.build_sample_data(400, 5)
    per_customer = Counter(c.customer_no for c in sample.contacts)
    assert set(per_customer.values()) <= {1, 2, 3}
    assert 1.7 < len(sample.contacts) / 400 < 2.3
    assert [c.no for c in sample.contacts] == [f"CT{n:06d}" for n in
                                                range(1, len(sample.contacts) + 1)]


def test_resources_and_items_use_known_units() -> None:
    units = {u.code for u in data.UNITS}
    assert len(data.RESOURCES) == 10 and len(data.ITEMS) == 30
    assert {r.base_unit_of_measure for r in data.RESOURCES} <= {"HOUR", "DAY"}
    assert {i.base_unit_of_measure for i in data.ITEMS} <= units
    assert all(i.unit_price > i.unit_cost for i in data.ITEMS)
    assert all(r.unit_price > r.unit_cost for r in data.RESOURCES)


@pytest.mark.parametrize(("text", "slug"), [
    ("Müller & Söhne", "mueller-soehne"),
    ("Jørgensen Byg", "joergensen-byg"),
    ("Élodie", "elodie"),
    ("van den Berg", "van-den-berg"),
])
def test_ascii_slug(text: str, slug: str) -> None:
    assert locales.ascii_slug(text) == slug


def test_bad_counts_are_refused() -> None:
    with pytest.raises(ValueError):
        data.build_sample_data(-1, 5)
    with pytest.raises(ValueError):
        data.build_sample_data(10, 0)
