"""Deterministic sample data for schema ``erp``: currencies, units, salespeople, customers
with their contacts, resources and items.

Everything is drawn from seeded random generators, so the same arguments give the same rows
on every machine, and the first N customers are the same whatever the total asked for
(``--customers 100`` after ``--customers 50`` adds 50). Loading is idempotent: rows are
inserted with ``ON CONFLICT DO NOTHING`` on their natural key, so a second run changes
nothing and a row a user edited is left as it is.

The salespeople are the CRM's users: salesperson i is the emulator's sample user i (same
name, e-mail and title), so the SALESPEOPLE mapping couples them by e-mail instead of
creating a second salesperson for each user.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from worker.db.engine import translate_errors
from worker.emulator.seed import sample_user
from worker.sample import locales
from worker.sample.erp_schema import catch_up_number_series, create_erp_schema_in

DEFAULT_CUSTOMERS = 50
DEFAULT_SALESPEOPLE = 5
SEED = "crmsync-sample-1"
_CHUNK = 2000  # rows per INSERT ... SELECT


@dataclass(frozen=True, slots=True)
class Currency:
    """A row of ``erp.currency``."""

    code: str
    description: str
    symbol: str
    iso_numeric_code: str
    exchange_rate: Decimal


@dataclass(frozen=True, slots=True)
class UnitOfMeasure:
    """A row of ``erp.unit_of_measure``."""

    code: str
    description: str
    international_standard_code: str


@dataclass(frozen=True, slots=True)
class Salesperson:
    """A row of ``erp.salesperson``."""

    code: str
    name: str
    email: str
    phone_no: str | None
    job_title: str | None


@dataclass(frozen=True, slots=True)
class Customer:
    """A row of ``erp.customer``."""

    no: str
    name: str
    address: str
    address_2: str | None
    city: str
    post_code: str
    county: str | None
    country_region_code: str
    phone_no: str
    email: str
    home_page: str
    vat_registration_no: str | None
    currency_code: str
    salesperson_code: str
    payment_terms_code: str
    credit_limit_lcy: Decimal
    blocked: str


@dataclass(frozen=True, slots=True)
class Contact:
    """A row of ``erp.contact``: a person working for a customer."""

    no: str
    first_name: str
    middle_name: str | None
    surname: str
    job_title: str
    email: str
    phone_no: str
    mobile_phone_no: str
    customer_no: str


@dataclass(frozen=True, slots=True)
class Resource:
    """A row of ``erp.resource``."""

    no: str
    name: str
    type: str
    job_title: str | None
    base_unit_of_measure: str
    unit_price: Decimal
    unit_cost: Decimal


@dataclass(frozen=True, slots=True)
class Item:
    """A row of ``erp.item``."""

    no: str
    description: str
    base_unit_of_measure: str
    item_category_code: str
    unit_price: Decimal
    unit_cost: Decimal


@dataclass(frozen=True)
class SampleData:
    """All sample rows, in load order."""

    currencies: tuple[Currency, ...]
    units: tuple[UnitOfMeasure, ...]
    salespeople: tuple[Salesperson, ...]
    customers: tuple[Customer, ...]
    contacts: tuple[Contact, ...]
    resources: tuple[Resource, ...]
    items: tuple[Item, ...]


@dataclass(frozen=True)
class TableCount:
    """Rows a load inserted into one table, and the rows the table holds afterwards."""

    table: str
    inserted: int
    total: int


@dataclass(frozen=True)
class SampleDataSummary:
    """What ``load_sample_data`` did, table by table in load order."""

    tables: tuple[TableCount, ...]

    def inserted(self, table: str) -> int:
        return self._count(table).inserted

    def total(self, table: str) -> int:
        return self._count(table).total

    def _count(self, table: str) -> TableCount:
        for count in self.tables:
            if count.table == table:
                return count
        raise KeyError(table)


_D = Decimal

# Exchange rates per 1 EUR, the sample company's local currency. Unlike NAV, where a blank
# currency code means LCY, EUR has its own row: every customer names its currency, and the
# CRM's base currency couples to it by ISO code.
CURRENCIES: tuple[Currency, ...] = (
    Currency("EUR", "Euro", "€", "978", _D("1.000000")),
    Currency("USD", "US dollar", "$", "840", _D("1.085000")),
    Currency("GBP", "Pound sterling", "£", "826", _D("0.845000")),
    Currency("DKK", "Danish krone", "kr.", "208", _D("7.460000")),
    Currency("CHF", "Swiss franc", "CHF", "756", _D("0.940000")),
    Currency("SEK", "Swedish krona", "kr", "752", _D("11.250000")),
    Currency("NOK", "Norwegian krone", "kr", "578", _D("11.600000")),
    Currency("PLN", "Polish zloty", "zł", "985", _D("4.300000")),
    Currency("JPY", "Japanese yen", "¥", "392", _D("162.000000")),
    Currency("CAD", "Canadian dollar", "CA$", "124", _D("1.470000")),
)

# International standard codes from UN/ECE Recommendation 20, as NAV's demo data has them.
UNITS: tuple[UnitOfMeasure, ...] = (
    UnitOfMeasure("PCS", "Piece", "H87"),
    UnitOfMeasure("BOX", "Box", "BX"),
    UnitOfMeasure("PACK", "Pack", "PK"),
    UnitOfMeasure("SET", "Set", "SET"),
    UnitOfMeasure("KG", "Kilogram", "KGM"),
    UnitOfMeasure("L", "Litre", "LTR"),
    UnitOfMeasure("M", "Metre", "MTR"),
    UnitOfMeasure("HOUR", "Hour", "HUR"),
    UnitOfMeasure("DAY", "Day", "DAY"),
)

RESOURCES: tuple[Resource, ...] = tuple(
    Resource(f"R{n:04d}", name, kind, title, unit, _D(price), _D(cost))
    for n, (name, kind, title, unit, price, cost) in enumerate((
        ("Lina Hoffmann", "Person", "Senior Consultant", "HOUR", "145.00", "85.00"),
        ("Marc Dubois", "Person", "Project Manager", "HOUR", "160.00", "95.00"),
        ("Sanne de Vries", "Person", "Solution Architect", "HOUR", "175.00", "105.00"),
        ("Oliver Wright", "Person", "Installer", "HOUR", "85.00", "48.00"),
        ("Mette Sørensen", "Person", "Trainer", "DAY", "980.00", "560.00"),
        ("Tobias Krüger", "Person", "Service Technician", "HOUR", "95.00", "52.00"),
        ("Emily Clark", "Person", "Interior Designer", "HOUR", "120.00", "70.00"),
        ("Erik Lindberg", "Person", "Developer", "DAY", "1100.00", "640.00"),
        ("Lift Truck 2.5 t", "Machine", None, "DAY", "240.00", "90.00"),
        ("Projector Set, conference", "Machine", None, "DAY", "75.00", "20.00"),
    ), start=1))

ITEMS: tuple[Item, ...] = tuple(
    Item(str(1000 + n), description, unit, category, _D(price), _D(cost))
    for n, (description, unit, category, price, cost) in enumerate((
        ("Oslo Desk, oak 160x80", "PCS", "FURNITURE", "649.00", "389.00"),
        ("Oslo Desk, white 140x70", "PCS", "FURNITURE", "549.00", "329.00"),
        ("Bergen Office Chair, black", "PCS", "FURNITURE", "329.00", "185.00"),
        ("Bergen Office Chair, grey", "PCS", "FURNITURE", "329.00", "185.00"),
        ("Malmö Conference Table 240x110", "PCS", "FURNITURE", "1290.00", "760.00"),
        ("Malmö Conference Chair, stackable", "PCS", "FURNITURE", "119.00", "64.00"),
        ("Aarhus Shelf Unit, 5 shelves", "PCS", "FURNITURE", "259.00", "142.00"),
        ("Aarhus Filing Cabinet, 3 drawers", "PCS", "FURNITURE", "289.00", "158.00"),
        ("Geneva Standing Desk, electric", "PCS", "FURNITURE", "899.00", "540.00"),
        ("Monitor Arm, dual", "PCS", "FURNITURE", "149.00", "78.00"),
        ("Desk Lamp, LED", "PCS", "FURNITURE", "69.00", "31.00"),
        ("Whiteboard 180x120", "PCS", "FURNITURE", "219.00", "118.00"),
        ("Acoustic Panel 120x60, blue", "PCS", "FURNITURE", "189.00", "96.00"),
        ("Footrest, adjustable", "PCS", "FURNITURE", "45.00", "19.00"),
        ("Ergonomic Keyboard", "PCS", "IT", "89.00", "46.00"),
        ("Wireless Mouse", "PCS", "IT", "39.00", "17.00"),
        ("USB-C Docking Station", "PCS", "IT", "229.00", "131.00"),
        ("27-inch Monitor", "PCS", "IT", "329.00", "214.00"),
        ("Headset, noise-cancelling", "PCS", "IT", "179.00", "98.00"),
        ("A4 Copy Paper, 80 g, 5 reams", "BOX", "SUPPLIES", "29.90", "17.20"),
        ("Toner Cartridge, black", "PCS", "SUPPLIES", "119.00", "62.00"),
        ("Ballpoint Pens, blue, 50 pcs", "PACK", "SUPPLIES", "8.90", "3.10"),
        ("Sticky Notes 76x76, 12 pads", "PACK", "SUPPLIES", "12.50", "4.80"),
        ("Lever Arch Files A4, 10 pcs", "BOX", "SUPPLIES", "34.00", "15.50"),
        ("Cable Ties, 200 pcs", "PACK", "SUPPLIES", "9.90", "3.40"),
        ("Coffee Beans, espresso", "KG", "CONSUMABLE", "24.50", "13.90"),
        ("Microfibre Cleaning Cloths, 10 pcs", "PACK", "CONSUMABLE", "14.90", "6.20"),
        ("Hand Sanitiser", "L", "CONSUMABLE", "11.90", "5.30"),
        ("Network Cable Cat 6", "M", "IT", "1.20", "0.45"),
        ("Office Starter Set", "SET", "SUPPLIES", "149.00", "82.00"),
    )))


def salesperson_code(email: str) -> str:
    """The code of the salesperson for a CRM user: the e-mail's local part, upper case, cut
    to 20 characters. The SALESPEOPLE mapping derives it with the same rule, so a
    salesperson created from a user gets the code the sample gives it."""
    return email.split("@", 1)[0].upper()[:20]


def sample_salespeople(count: int = DEFAULT_SALESPEOPLE) -> tuple[Salesperson, ...]:
    """One salesperson for each of the emulator's first ``count`` sample users."""
    people = []
    for index in range(count):
        user = sample_user(index)
        email = user["internalemailaddress"]
        name = " ".join(p for p in (user.get("firstname"), user.get("lastname")) if p)
        # phone_no follows the user's mobilephone (SALESPEOPLE maps it from the CRM).
        people.append(Salesperson(salesperson_code(email), name[:50], email[:80],
                                  user.get("mobilephone") or None,
                                  (user.get("title") or "")[:30] or None))
    return tuple(people)


def sample_customers(count: int, salesperson_codes: Sequence[str]
                     ) -> tuple[tuple[Customer, ...], tuple[Contact, ...]]:
    """``count`` customers, each with one to three contacts (two on average).

    Customer i depends only on the customers before it, and its contacts only on itself, so
    a larger ``count`` extends the same list."""
    if count and not salesperson_codes:
        raise ValueError("customers need at least one salesperson code")
    rng = random.Random(f"{SEED}/customers")
    taken_names: set[str] = set()
    taken_domains: set[str] = set()
    customers: list[Customer] = []
    contacts: list[Contact] = []
    for n in range(1, count + 1):
        country = locales.pick_country(rng)
        city = rng.choice(country.cities)
        base, legal_form = _company_name(rng, country, city, taken_names)
        domain = _domain(base, legal_form, taken_domains)
        customer = _customer(rng, n, country, city, f"{base} {legal_form}", domain,
                             salesperson_codes)
        customers.append(customer)
        contacts.extend(_contacts(customer, country, domain, first_no=len(contacts) + 1))
    return tuple(customers), tuple(contacts)


def build_sample_data(customers: int = DEFAULT_CUSTOMERS,
                      salespeople: int = DEFAULT_SALESPEOPLE) -> SampleData:
    """Every sample row for ``customers`` customers and ``salespeople`` salespeople."""
    if customers < 0 or salespeople < 1:
        raise ValueError("customers must not be negative and salespeople must be at least 1")
    people = sample_salespeople(salespeople)
    custs, contacts = sample_customers(customers, [p.code for p in people])
    return SampleData(CURRENCIES, UNITS, people, custs, contacts, RESOURCES, ITEMS)


def load_sample_data(engine: Engine, *, customers: int = DEFAULT_CUSTOMERS,
                     salespeople: int = DEFAULT_SALESPEOPLE) -> SampleDataSummary:
    """Create schema ``erp`` if missing and insert the sample rows that are not there yet,
    in one transaction. Returns per table the rows inserted and the rows it now holds."""
    data = build_sample_data(customers, salespeople)
    plan: tuple[tuple[str, str, Sequence[Any]], ...] = (
        ("erp.currency", "code", data.currencies),
        ("erp.unit_of_measure", "code", data.units),
        ("erp.salesperson", "code", data.salespeople),
        ("erp.customer", "no", data.customers),
        ("erp.contact", "no", data.contacts),
        ("erp.resource", "no", data.resources),
        ("erp.item", "no", data.items),
    )
    counts = []
    with translate_errors(), engine.begin() as conn:
        create_erp_schema_in(conn)
        for table, key, rows in plan:
            inserted = insert_rows(conn, table, key, rows)
            counts.append((table, inserted))
        catch_up_number_series(conn)
        totals = {table: conn.scalar(sa.text(f"SELECT count(*) FROM {table}"))
                  for table, _, _ in plan}
        if any(inserted for _, inserted in counts):
            # The planner's statistics of the tables just filled, as a database in use has
            # them (autovacuum takes a minute to come by, and may be off).
            for table, _, _ in plan:
                conn.execute(sa.text(f"ANALYZE {table}"))
    return SampleDataSummary(tuple(TableCount(t, n, totals[t]) for t, n in counts))


def insert_rows(conn: Connection, table: str, key: str, rows: Sequence[Any]) -> int:
    """Insert dataclass rows whose fields are columns of ``table``, skipping rows whose
    ``key`` exists; one statement per chunk, with the table's own row type converting the
    JSON values (so lengths and types are checked exactly as for any INSERT)."""
    if not rows:
        return 0
    columns = [f.name for f in fields(rows[0])]
    column_list = ", ".join(columns)
    statement = sa.text(
        f"INSERT INTO {table} ({column_list}) "
        f"SELECT {column_list} FROM jsonb_populate_recordset(NULL::{table}, CAST(:rows AS jsonb)) "
        f"ON CONFLICT ({key}) DO NOTHING")
    inserted = 0
    for start in range(0, len(rows), _CHUNK):
        payload = json.dumps([_as_dict(r, columns) for r in rows[start:start + _CHUNK]],
                             default=str, ensure_ascii=False)
        inserted += conn.execute(statement, {"rows": payload}).rowcount
    return inserted


def _as_dict(row: Any, columns: Iterable[str]) -> dict[str, Any]:
    return {c: getattr(row, c) for c in columns}


def _company_name(rng: random.Random, country: locales.Country, city: locales.City,
                  taken: set[str]) -> tuple[str, str]:
    """A company name not used before, as (name without legal form, legal form)."""
    for attempt in range(12):
        industry = rng.choice(country.industries)
        pattern = rng.randrange(4)
        if pattern == 0:
            base = f"{rng.choice(locales.BRANDS)} {industry}"
        elif pattern == 1:
            base = f"{rng.choice(country.surnames)} {industry}"
        elif pattern == 2:
            first, second = rng.sample(country.surnames, 2)
            base = f"{first} & {second}"
        else:
            base = f"{city.short_name} {industry}"
        if attempt >= 6:
            base = f"{base} {rng.choice(locales.QUALIFIERS)}"
        legal_form = rng.choice(country.legal_forms)
        if f"{base} {legal_form}" not in taken:
            break
    name, number = base, 2
    while f"{name} {legal_form}" in taken:  # only after many draws: number the name
        name, number = f"{base} {number}", number + 1
    taken.add(f"{name} {legal_form}")
    return name, legal_form


def _domain(base: str, legal_form: str, taken: set[str]) -> str:
    """A web domain under the reserved TLD ``.example`` (RFC 2606), so sample e-mail can
    never reach anyone."""
    stem = locales.ascii_slug(base)[:40].strip("-")
    candidates = itertools.chain((stem, f"{stem}-{locales.ascii_slug(legal_form)}"),
                                 (f"{stem}-{n}" for n in itertools.count(2)))
    domain = next(f"{c}.example" for c in candidates if f"{c}.example" not in taken)
    taken.add(domain)
    return domain


def _customer(rng: random.Random, n: int, country: locales.Country, city: locales.City,
              name: str, domain: str, salesperson_codes: Sequence[str]) -> Customer:
    address_2 = rng.choice(country.address_2) if country.address_2 and rng.random() < 0.2 \
        else None
    blocked = "Ship" if rng.random() < 0.02 else ""
    return Customer(
        no=f"C{n:05d}", name=name[:100], address=country.street_address(rng)[:100],
        address_2=address_2, city=city.name, post_code=country.post_code(rng, city),
        county=city.county, country_region_code=country.code,
        phone_no=country.phone(rng, city),
        email=f"{rng.choice(('info', 'sales', 'office', 'contact', 'orders'))}@{domain}",
        home_page=f"www.{domain}", vat_registration_no=country.vat_no(rng),
        currency_code=country.currency, salesperson_code=rng.choice(salesperson_codes),
        payment_terms_code=rng.choice(locales.PAYMENT_TERMS),
        credit_limit_lcy=Decimal(rng.choice(locales.CREDIT_LIMITS)).quantize(Decimal("0.01")),
        blocked=blocked,
    )


def _contacts(customer: Customer, country: locales.Country, domain: str,
              first_no: int) -> list[Contact]:
    # Its own generator: the number of contacts of one customer never shifts the next one.
    rng = random.Random(f"{SEED}/contacts/{customer.no}")
    people = []
    emails: set[str] = set()
    titles = rng.sample(locales.JOB_TITLES, 3)
    for i in range(rng.choice((1, 2, 2, 2, 3))):
        first, surname = rng.choice(country.first_names), rng.choice(country.surnames)
        middle = f"{rng.choice('ABCDEFGHJKLMPRSTW')}." if country.code == "US" \
            and rng.random() < 0.3 else None
        local = f"{locales.ascii_slug(first, '')}.{locales.ascii_slug(surname, '')}"
        email, n = f"{local}@{domain}", 2
        while email in emails:
            email, n = f"{local}{n}@{domain}", n + 1
        emails.add(email)
        office = customer.phone_no
        people.append(Contact(
            no=f"CT{first_no + i:06d}", first_name=first, middle_name=middle, surname=surname,
            job_title=titles[i], email=email[:80],
            phone_no=f"{office[:-2]}{rng.randint(10, 99)}", mobile_phone_no=country.mobile(rng),
            customer_no=customer.no,
        ))
    return people
